using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Engines;

/// <summary>
/// The determinism gate: SHA-256 over the oracle's raw int64 logits for a fixed prompt set equals a
/// committed golden value, with 1 thread and with all cores, and for BF16, sharded F16 and F32
/// folders holding the same values.
/// </summary>
public class DeterminismGateTests(ITestOutputHelper output)
{
    /// <summary>Golden hash of the gate (the C lab's 4 prompts + BOS, 4 greedy tokens each) on the conformance model.</summary>
    public const string ConformanceGolden = "cfc97be6d9ef9eaf7d96c8669cc809105db79aaf1397b7c5c5d386d2e65102f0";

    private string GateHash(string folder, int threads)
    {
        using var checkpoint = LlamaCheckpoint.Open(folder);
        string hash = DeterminismGate.Hash(checkpoint, DeterminismGate.Llama2Prompts, newTokens: 4, threads);
        output.WriteLine($"{Path.GetFileName(folder)}, {threads} thread(s): {hash}");
        return hash;
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
