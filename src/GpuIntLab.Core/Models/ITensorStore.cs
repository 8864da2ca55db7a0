namespace GpuIntLab.Core.Models;

/// <summary>A memory-mapped container of tensors (a safetensors file or a native .q48 file).</summary>
public unsafe interface ITensorStore : IDisposable
{
    string Path { get; }
    IReadOnlyDictionary<string, TensorInfo> Tensors { get; }
    ReadOnlySpan<byte> GetBytes(TensorInfo tensor);
    byte* GetPointer(TensorInfo tensor);

    /// <summary>
    /// Copies bytes [offset, offset + destination.Length) of the tensor with a positional file read, not
    /// through the mapping: a consumer that transcodes the weights into its own layout then never faults the
    /// mapped pages into the process, so the checkpoint does not count twice in its memory.
    /// </summary>
    void Read(TensorInfo tensor, long offset, Span<byte> destination);
}
