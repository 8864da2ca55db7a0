using GpuIntLab.Core.Inference;

namespace GpuIntLab.Backends;

/// <summary>
/// The raw Q16.48 logits of the exact engines (the oracle and the INT64 backends), one way for all: these engines
/// are bit-identical to the oracle, so hashing these integers (not their float64 widening) is how bit-exactness is
/// checked from the command line and by the determinism gate.
/// </summary>
public static class ExactRawLogits
{
    /// <summary>The engine's raw logits of its last step that computed logits, or null when it is not an exact Q16.48 engine.</summary>
    public static long[]? Last(IInferenceEngine engine) => (engine as IRawLogitsEngine)?.LastRawLogits;
}
