using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Engines;

/// <summary>The Q16.48 oracle against the outside float64 reference, its own float64 engine, and itself across dtypes and threads.</summary>
public class OracleConformanceTests(ITestOutputHelper output)
{
    // The design target: the oracle's logits within ~1e-9 of float64 math.
    private const double LogitBound = 1e-9;

    public static TheoryData<string> UntiedCases() => new(ConformanceReference.Untied.Select(c => c.Name));

    [Theory]
    [MemberData(nameof(UntiedCases))]
    public void LogitsAndGreedyIdsMatchTheOutsideReference(string caseName)
    {
        var c = ConformanceReference.Case(caseName);
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var engine = new OracleEngine(checkpoint, threads: 2);
        var deviations = ConformanceReference.Run(engine, c);
        output.WriteLine($"{caseName}: max |logit error| {deviations.Max(d => d.Dev.MaxLogitError):E2}, max logsumexp error {deviations.Max(d => d.Dev.LogSumExpError):E2}, max |sum error| {deviations.Max(d => d.Dev.SumError):E2}");
        foreach (var (r, d) in deviations)
        {
            Assert.Equal(r.Argmax, d.Argmax);
            Assert.True(d.MaxLogitError <= LogitBound, $"{caseName} pos {r.Pos}: |logit error| {d.MaxLogitError:E3} > {LogitBound:E0}");
            Assert.True(d.LogSumExpError <= LogitBound, $"{caseName} pos {r.Pos}: logsumexp error {d.LogSumExpError:E3}");
        }
        if (c.GeneratedIds.Length > 0)
        {
            engine.Reset();
            Assert.Equal(c.GeneratedIds, Greedy.Generate(engine, c.InputIds.AsSpan(0, c.PromptLength), c.GeneratedIds.Length));
        }
    }

    [Fact]
    public void TiedCheckpointMatches()
    {
        var c = ConformanceReference.Tied.Single();
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceTiedBf16);
        using var engine = new OracleEngine(checkpoint);
        foreach (var (r, d) in ConformanceReference.Run(engine, c))
            Assert.True(d.MaxLogitError <= LogitBound && d.Argmax == r.Argmax, $"pos {r.Pos}: {d.MaxLogitError:E3}");
        engine.Reset();
        Assert.Equal(c.GeneratedIds, Greedy.Generate(engine, c.InputIds.AsSpan(0, c.PromptLength), c.GeneratedIds.Length));
    }

    [Fact]
    public void OracleAgreesWithTheFloat64EngineOnEveryLogit()
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var oracle = new OracleEngine(checkpoint);
        using var reference = new ReferenceEngine(checkpoint);
        double worst = 0;
        foreach (int token in ConformanceReference.Case("greedy-0").InputIds)
        {
            var a = oracle.Decode(token); var b = reference.Decode(token);
            for (int i = 0; i < a.Length; i++) worst = Math.Max(worst, Math.Abs(a[i] - b[i]));
        }
        output.WriteLine($"oracle vs float64 engine, all 32000 logits x 25 positions: max |diff| {worst:E2}");
        Assert.True(worst <= LogitBound, $"max |diff| {worst:E3}");
    }
}

/// <summary>Batched prefill reads each weight row once per chunk; exact sums make it bit-identical to token-by-token decode.</summary>
public class OraclePrefillTests
{
    [Fact]
    public void PrefillInChunksEqualsDecodingTokenByToken()
    {
        var ids = ConformanceReference.Case("teacher-forced-1024").InputIds.Take(OracleEngine.PrefillChunk + 7).ToArray();
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var batched = new OracleEngine(checkpoint, threads: 2);
        using var stepwise = new OracleEngine(checkpoint, threads: 1);
        batched.Prefill(ids);
        long[] expected = [];
        foreach (int id in ids) expected = stepwise.DecodeRaw(id);
        Assert.Equal(expected, batched.LastRawLogits);
        // And the caches agree: the next step is identical too.
        Assert.Equal(stepwise.DecodeRaw(42), batched.DecodeRaw(42));
    }
}
