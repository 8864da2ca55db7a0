namespace GpuIntLab.Core.Models;

/// <summary>A memory-mapped container of tensors (a safetensors file or a native .q48 file).</summary>
public unsafe interface ITensorStore : IDisposable
{
    string Path { get; }
    IReadOnlyDictionary<string, TensorInfo> Tensors { get; }
    ReadOnlySpan<byte> GetBytes(TensorInfo tensor);
    byte* GetPointer(TensorInfo tensor);
}
