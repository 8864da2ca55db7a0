using System.Security.Cryptography;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Tests;

/// <summary>Paths of the test data and the conformance checkpoints, rebuilt once per test run from the seeded rule.</summary>
public static class TestData
{
    public static string DataDir => Path.Combine(AppContext.BaseDirectory, "Data");
    public static string ConformanceDir => Path.Combine(DataDir, "conformance");
    public static string Llama2TokenizerPath => Path.Combine(ConformanceDir, "tokenizer.model");
    public static string ReferenceJsonPath => Path.Combine(ConformanceDir, "reference.json");

    private static readonly Lazy<string> s_conformanceRoot = new(BuildConformanceCheckpoints, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>Folder holding tiny-gqa-bf16, tiny-gqa-f16-sharded, tiny-gqa-f32 and tiny-gqa-tied-bf16.</summary>
    public static string ConformanceRoot => s_conformanceRoot.Value;
    public static string ConformanceBf16 => Path.Combine(ConformanceRoot, "tiny-gqa-bf16");
    public static string ConformanceF16Sharded => Path.Combine(ConformanceRoot, "tiny-gqa-f16-sharded");
    public static string ConformanceF32 => Path.Combine(ConformanceRoot, "tiny-gqa-f32");
    public static string ConformanceTiedBf16 => Path.Combine(ConformanceRoot, "tiny-gqa-tied-bf16");

    private static string BuildConformanceCheckpoints()
    {
        string root = Path.Combine(Path.GetTempPath(), "gpuintlab-tests", "conformance-" + Environment.ProcessId);
        if (Directory.Exists(root)) Directory.Delete(root, true);
        var config = SeededCheckpointWriter.ConformanceConfig();
        SeededCheckpointWriter.Write(Path.Combine(root, "tiny-gqa-bf16"), config, new(TensorDtype.BF16), tokenizerModelPath: Llama2TokenizerPath);
        SeededCheckpointWriter.Write(Path.Combine(root, "tiny-gqa-f16-sharded"), config, new(TensorDtype.F16, Shards: 2), tokenizerModelPath: Llama2TokenizerPath);
        SeededCheckpointWriter.Write(Path.Combine(root, "tiny-gqa-f32"), config, new(TensorDtype.F32), tokenizerModelPath: Llama2TokenizerPath);
        SeededCheckpointWriter.Write(Path.Combine(root, "tiny-gqa-tied-bf16"), config, new(TensorDtype.BF16, Tied: true), tokenizerModelPath: Llama2TokenizerPath);
        return root;
    }

    public static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }

    public static string TempDir(string name)
    {
        string dir = Path.Combine(Path.GetTempPath(), "gpuintlab-tests", name + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }
}
