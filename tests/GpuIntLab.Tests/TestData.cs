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
        string root = Path.Combine(RunRoot, "conformance");
        if (Directory.Exists(root)) Directory.Delete(root, true);
        var config = SeededCheckpointWriter.ConformanceConfig();
        SeededCheckpointWriter.Write(Path.Combine(root, "tiny-gqa-bf16"), config, new(TensorDtype.BF16), tokenizerModelPath: Llama2TokenizerPath);
        SeededCheckpointWriter.Write(Path.Combine(root, "tiny-gqa-f16-sharded"), config, new(TensorDtype.F16, Shards: 2), tokenizerModelPath: Llama2TokenizerPath);
        SeededCheckpointWriter.Write(Path.Combine(root, "tiny-gqa-f32"), config, new(TensorDtype.F32), tokenizerModelPath: Llama2TokenizerPath);
        SeededCheckpointWriter.Write(Path.Combine(root, "tiny-gqa-tied-bf16"), config, new(TensorDtype.BF16, Tied: true), tokenizerModelPath: Llama2TokenizerPath);
        return root;
    }

    /// <summary>Test runs leave their checkpoints in the temp folder; a later run removes those of runs that have ended.</summary>
    private static void RemoveLeftoversOfFinishedRuns(string parent)
    {
        if (!Directory.Exists(parent)) return;
        foreach (var dir in Directory.GetDirectories(parent))
        {
            string name = Path.GetFileName(dir);
            if (!name.StartsWith("run-", StringComparison.Ordinal) || !int.TryParse(name["run-".Length..], out int pid) || pid == Environment.ProcessId) continue;
            bool alive;
            try { using var p = System.Diagnostics.Process.GetProcessById(pid); alive = !p.HasExited; }
            catch (ArgumentException) { alive = false; }
            if (alive) continue;
            try { Directory.Delete(dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    public static string Sha256(string path)
    {
        using var f = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(f));
    }

    private static readonly Lazy<string> s_runRoot = new(() =>
    {
        string parent = Path.Combine(Path.GetTempPath(), "gpuintlab-tests");
        RemoveLeftoversOfFinishedRuns(parent);
        return Path.Combine(parent, "run-" + Environment.ProcessId);
    }, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>This test run's scratch folder (removed by a later run once this process has ended).</summary>
    public static string RunRoot => s_runRoot.Value;

    public static string TempDir(string name)
    {
        string dir = Path.Combine(RunRoot, name + "-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }
}
