using GpuIntLab.Core.Inference;

namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>The boundary of the CPU integer-only engine: the float64 views of its int32 buffers and the output logits.</summary>
public sealed partial class IntegerOnlyEngine
{
    protected override double[] ReadLogits() => Array.ConvertAll(LastRawLogits, FixedVector.ToDouble);

    void ILlamaOps.Read(StepBuffer buffer, Span<double> destination)
    {
        var raw = new int[destination.Length];
        ReadRaw(buffer, raw);
        for (int i = 0; i < raw.Length; i++) destination[i] = FixedVector.ToDouble(raw[i]);
    }

    void ILlamaOps.Write(StepBuffer buffer, ReadOnlySpan<double> values)
    {
        var raw = new int[values.Length];
        for (int i = 0; i < raw.Length; i++) raw[i] = FixedVector.ToActivation(values[i]);
        WriteRaw(buffer, raw);
    }
}
