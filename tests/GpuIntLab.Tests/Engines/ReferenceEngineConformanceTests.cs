using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Engines;

/// <summary>The float64 engine against the outside float64 reference (shared/conformance).</summary>
public class ReferenceEngineConformanceTests(ITestOutputHelper output)
{
    // Both sides are float64 with different summation orders (the reference sums exactly with fsum):
    // logits of magnitude ~10 agree to 1.3e-14 (measured); 1e-12 leaves headroom without hiding any convention error
    // (a wrong RoPE pairing or GQA mapping moves logits by ~1e-1).
    private const double LogitBound = 1e-12;

    public static TheoryData<string> UntiedCases() => new(ConformanceReference.Untied.Select(c => c.Name));

    [Theory]
    [MemberData(nameof(UntiedCases))]
    public void LogitsAndGreedyIdsMatchTheOutsideReference(string caseName)
    {
        var c = ConformanceReference.Case(caseName);
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var engine = new ReferenceEngine(checkpoint);
        var deviations = ConformanceReference.Run(engine, c);
        double worst = deviations.Max(d => d.Dev.MaxLogitError);
        output.WriteLine($"{caseName}: max |logit error| {worst:E2}, max logsumexp error {deviations.Max(d => d.Dev.LogSumExpError):E2}");
        foreach (var (r, d) in deviations)
        {
            Assert.Equal(r.Argmax, d.Argmax);
            Assert.True(d.MaxLogitError <= LogitBound, $"{caseName} pos {r.Pos}: |logit error| {d.MaxLogitError:E3} > {LogitBound:E0}");
            Assert.True(d.LogSumExpError <= LogitBound, $"{caseName} pos {r.Pos}: logsumexp error {d.LogSumExpError:E3}");
            Assert.True(d.SumSqRelativeError <= 1e-12, $"{caseName} pos {r.Pos}: sum_sq relative error {d.SumSqRelativeError:E3}");
        }
        if (c.GeneratedIds.Length > 0)
        {
            engine.Reset();
            var generated = Greedy.Generate(engine, c.InputIds.AsSpan(0, c.PromptLength), c.GeneratedIds.Length);
            Assert.Equal(c.GeneratedIds, generated);
        }
    }

    [Fact]
    public void TiedCheckpointMatches()
    {
        var c = ConformanceReference.Tied.Single();
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceTiedBf16);
        using var engine = new ReferenceEngine(checkpoint, threads: 2);
        foreach (var (r, d) in ConformanceReference.Run(engine, c))
        {
            Assert.Equal(r.Argmax, d.Argmax);
            Assert.True(d.MaxLogitError <= LogitBound, $"pos {r.Pos}: {d.MaxLogitError:E3}");
        }
        engine.Reset();
        Assert.Equal(c.GeneratedIds, Greedy.Generate(engine, c.InputIds.AsSpan(0, c.PromptLength), c.GeneratedIds.Length));
    }
}
