using GpuIntLab.Backends;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Cli.Commands;

/// <summary>Any backend of the catalog by name, for <c>generate</c>: scheme and accelerator checked with one clear error each.</summary>
public static class EngineFactory
{
    public static IEnumerable<string> Names => BackendCatalog.All.Select(p => p.Name);

    public static IInferenceEngine Create(string name, LlamaCheckpoint checkpoint, int threads, string? scheme = null, string accelerator = "auto",
        IReadOnlyList<int[]>? calibration = null)
    {
        var provider = BackendCatalog.Find(name)
            ?? throw new UserInputException($"--engine: unknown engine '{name}' (known: {string.Join(", ", Names)})");
        string chosen = scheme ?? provider.Schemes[0];
        if (!provider.Schemes.Contains(chosen))
            throw new UserInputException($"--scheme: {name} has no scheme '{chosen}' (its schemes: {string.Join(", ", provider.Schemes)})");
        if (accelerator is not ("auto" or "cpu" or "cuda"))
            throw new UserInputException($"--accelerator: expected auto, cpu or cuda (got '{accelerator}')");
        var availability = provider.CheckAvailability(accelerator);
        if (!availability.IsAvailable) throw new UserInputException($"--engine: {name} cannot run here: {availability.Reason}");
        return provider.Create(checkpoint, new EngineOptions(chosen, accelerator, threads, calibration));
    }
}
