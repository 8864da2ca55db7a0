using GpuIntLab.Core.Models;

namespace GpuIntLab.Core.Inference;

/// <summary>Whether a backend can run here, and why not.</summary>
public sealed record Availability(bool IsAvailable, string Reason)
{
    public static Availability Yes(string detail) => new(true, detail);
    public static Availability No(string reason) => new(false, reason);
}

/// <summary>How to build an engine: the quantization scheme, the accelerator, and the calibration data schemes may need.</summary>
/// <param name="Scheme">One of the provider's <see cref="IEngineProvider.Schemes"/>.</param>
/// <param name="Accelerator">"auto" (CUDA if present, else CPU), "cuda" or "cpu".</param>
/// <param name="Threads">CPU threads; 0 means all cores.</param>
/// <param name="CalibrationPrompts">Token-id prompts for schemes that calibrate (SmoothQuant).</param>
/// <param name="SmoothQuantAlpha">Migration strength of SmoothQuant.</param>
public sealed record EngineOptions(string Scheme, string Accelerator = "auto", int Threads = 0,
    IReadOnlyList<int[]>? CalibrationPrompts = null, double SmoothQuantAlpha = 0.5, string KvCache = "float32")
{
    public int EffectiveThreads => Threads > 0 ? Threads : Environment.ProcessorCount;
}

/// <summary>
/// A named family of engines (e.g. "oracle", "ilgpu-int8", "cuda-fp16"). The experiment runner knows
/// backends only through this interface and the catalog that lists them, so a new backend needs no
/// change to the runner.
/// </summary>
public interface IEngineProvider
{
    string Name { get; }
    string Description { get; }
    IReadOnlyList<string> Schemes { get; }
    Availability CheckAvailability(string accelerator);
    IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options);
}
