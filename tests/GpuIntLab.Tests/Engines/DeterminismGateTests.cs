using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using Xunit;

namespace GpuIntLab.Tests.Engines;

/// <summary>
/// The determinism gate: SHA-256 over the oracle's raw int64 logits for a fixed prompt set equals a
/// committed golden value, with 1 thread and with all cores, and for BF16, sharded F16 and F32
/// folders holding the same values.
/// </summary>
public class DeterminismGateTests
{
    /// <summary>Golden hash of <see cref="GateHash"/> on the conformance model (recorded once, from the oracle as committed).</summary>
    public const string ConformanceGolden = "PENDING";

    /// <summary>Feeds each gate prompt (the four C-lab prompts and BOS alone) plus 4 fixed continuation ids, hashing every step's raw logits.</summary>
    public static string GateHash(string folder, int threads)
    {
        using var checkpoint = LlamaCheckpoint.Open(folder);
        using var oracle = new OracleEngine(checkpoint, threads);
        using var hash = new LogitsHash();
        foreach (var c in ConformanceReference.Untied.Where(c => c.Name.StartsWith("greedy-") || c.Name == "bos-only"))
        {
            oracle.Reset();
            foreach (int token in c.InputIds.Take(c.PromptLength + 4)) hash.Append(oracle.DecodeRaw(token));
        }
        return hash.Finish();
    }

    [Fact]
    public void OneThreadMatchesGolden() => Assert.Equal(ConformanceGolden, GateHash(TestData.ConformanceBf16, threads: 1));

    [Fact]
    public void AllCoresMatchGolden() => Assert.Equal(ConformanceGolden, GateHash(TestData.ConformanceBf16, threads: Math.Max(2, Environment.ProcessorCount)));

    [Fact]
    public void ShardedF16AndF32FoldersGiveTheSameHash()
    {
        Assert.Equal(ConformanceGolden, GateHash(TestData.ConformanceF16Sharded, threads: 2));
        Assert.Equal(ConformanceGolden, GateHash(TestData.ConformanceF32, threads: 1));
    }
}
