using GpuIntLab.Core.Inference;

namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>The boundary of the CPU integer-only engine: the float64 views of its int32 buffers and the output logits.</summary>
public sealed partial class IntegerOnlyEngine
{
    protected override double[] ReadLogits() => Array.ConvertAll(LastRawLogits, FixedVector.ToDouble);

    void ILlamaOps.Read(StepBuffer buffer, Span<double> destination) => IIntegerOnlyOps.ReadAsDoubles(this, buffer, destination);

    void ILlamaOps.Write(StepBuffer buffer, ReadOnlySpan<double> values) => IIntegerOnlyOps.WriteFromDoubles(this, buffer, values);
}

/// <summary>Ops of an integer-only engine (CPU and ILGPU): its int32 buffers read and written raw, so the two compare bit for bit.</summary>
public interface IIntegerOnlyOps : ILlamaOps
{
    void ReadRaw(StepBuffer buffer, Span<int> destination);
    void WriteRaw(StepBuffer buffer, ReadOnlySpan<int> values);

    /// <summary>The float64 view of a raw buffer (observers, op checks): the boundary, outside the step.</summary>
    static void ReadAsDoubles(IIntegerOnlyOps ops, StepBuffer buffer, Span<double> destination)
    {
        var raw = new int[destination.Length];
        ops.ReadRaw(buffer, raw);
        for (int i = 0; i < raw.Length; i++) destination[i] = FixedVector.ToDouble(raw[i]);
    }

    /// <summary>Float64 values converted to the engine's activations (op checks).</summary>
    static void WriteFromDoubles(IIntegerOnlyOps ops, StepBuffer buffer, ReadOnlySpan<double> values)
    {
        var raw = new int[values.Length];
        for (int i = 0; i < raw.Length; i++) raw[i] = FixedVector.ToActivation(values[i]);
        ops.WriteRaw(buffer, raw);
    }
}
