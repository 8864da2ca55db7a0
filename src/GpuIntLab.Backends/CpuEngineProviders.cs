using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

namespace GpuIntLab.Backends;

/// <summary>The Q16.48 CPU oracle as a backend, so the runner can time it like any other.</summary>
public sealed class OracleProvider : IEngineProvider
{
    public string Name => "oracle";
    public string Description => "CPU Q16.48 fixed point, exact integer math (ground truth)";
    public IReadOnlyList<string> Schemes { get; } = ["exact"];
    public Availability CheckAvailability(string accelerator) => accelerator is "auto" or "cpu"
        ? Availability.Yes("cpu")
        : Availability.No($"runs on the CPU only (accelerator '{accelerator}' requested)");
    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options) => new OracleEngine(checkpoint, options.EffectiveThreads);
}

/// <summary>The float64 reference engine as a backend.</summary>
public sealed class ReferenceProvider : IEngineProvider
{
    public string Name => "reference";
    public string Description => "CPU IEEE float64 (independent check of the oracle)";
    public IReadOnlyList<string> Schemes { get; } = ["exact"];
    public Availability CheckAvailability(string accelerator) => accelerator is "auto" or "cpu"
        ? Availability.Yes("cpu")
        : Availability.No($"runs on the CPU only (accelerator '{accelerator}' requested)");
    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options) => new ReferenceEngine(checkpoint, options.EffectiveThreads);
}
