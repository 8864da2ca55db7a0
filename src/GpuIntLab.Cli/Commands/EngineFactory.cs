using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

namespace GpuIntLab.Cli.Commands;

/// <summary>The CPU engines the CLI can run by name.</summary>
public static class EngineFactory
{
    public static readonly string[] Names = ["oracle", "reference"];

    public static IInferenceEngine Create(string name, LlamaCheckpoint checkpoint, int threads) => name switch
    {
        "oracle" => new OracleEngine(checkpoint, threads),
        "reference" => new ReferenceEngine(checkpoint, threads),
        _ => throw new UserInputException($"--engine: unknown engine '{name}' (known: {string.Join(", ", Names)})"),
    };
}
