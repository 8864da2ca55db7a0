using GpuIntLab.Backends;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Cli.Commands;

/// <summary>The CPU engines <c>generate</c> can run by name (the exact ones; backends run through experiments).</summary>
public static class EngineFactory
{
    public static readonly string[] Names = ["oracle", "reference"];

    public static IInferenceEngine Create(string name, LlamaCheckpoint checkpoint, int threads) =>
        Names.Contains(name) && BackendCatalog.Find(name) is { } provider
            ? provider.Create(checkpoint, new EngineOptions("exact", "cpu", threads))
            : throw new UserInputException($"--engine: unknown engine '{name}' (known: {string.Join(", ", Names)})");
}
