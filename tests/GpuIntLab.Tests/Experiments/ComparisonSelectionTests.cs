using GpuIntLab.Backends;
using GpuIntLab.Core.Formats;
using GpuIntLab.Experiments;
using Xunit;

namespace GpuIntLab.Tests.Experiments;

/// <summary>
/// Which corpus comparisons a table reports, their p-values and Holm's correction, the KV cache as part of a row's
/// identity, and the weight scheme every backend x scheme stores.
/// </summary>
public class ComparisonSelectionTests
{
    /// <summary>
    /// The two-sided t p-value against the t density integrated numerically (Simpson), an evaluation independent of the
    /// incomplete beta function; and df = 1 against its closed form 1 - 2 atan(t) / pi.
    /// </summary>
    [Theory]
    [InlineData(1, 0.7)]
    [InlineData(2, 1.3)]
    [InlineData(5, 2.571)]
    [InlineData(5, 0.4)]
    [InlineData(9, 3.5)]
    [InlineData(40, 2.1)]
    public void StudentPValueMatchesTheIntegratedDensity(int df, double t)
    {
        double expected = 1 - 2 * StudentTDensity.IntegralFromZero(df, t); // P(|T| >= t) = 1 - 2 * integral_0^t
        // Simpson's error at 20000 steps is far below 1e-9 for these smooth densities.
        Assert.Equal(expected, StudentT.TwoSidedP(t, df), 9);
        Assert.Equal(StudentT.TwoSidedP(t, df), StudentT.TwoSidedP(-t, df), 15);
        if (df == 1) Assert.Equal(1 - 2 * Math.Atan(t) / Math.PI, StudentT.TwoSidedP(t, 1), 12);
    }

    [Fact]
    public void StudentPValueAtTheTabulatedQuantileIsFivePercent()
    {
        foreach (int df in new[] { 1, 2, 5, 10, 30 })
            Assert.InRange(StudentT.TwoSidedP(StudentT.Quantile975(df), df), 0.05 - 2e-4, 0.05 + 2e-4);
        Assert.Equal(1.0, StudentT.TwoSidedP(0, 5), 12);
    }

    [Fact]
    public void HolmFollowsTheHandWorkedExample()
    {
        // m = 4 at alpha 0.05: sorted p 0.01 <= 0.05/4 = 0.0125 rejects; 0.02 <= 0.05/3 = 0.0167 fails, and stops:
        // 0.03 (<= 0.025) is not rejected although it would pass its own threshold alone.
        Assert.Equal([true, false, false, false], Holm.Rejects([0.01, 0.02, 0.03, 0.5]));
        // 0.001 <= 0.0125, 0.01 <= 0.0167, 0.02 <= 0.025, 0.04 <= 0.05: all rejected.
        Assert.Equal([true, true, true, true], Holm.Rejects([0.04, 0.001, 0.02, 0.01]));
        Assert.Empty(Holm.Rejects([]));
    }

    private static CorpusRecord Row(string backend, string scheme, double klPerPosition, string? kv = null, int chunks = 4)
    {
        var r = new CorpusRecord { Backend = backend, Scheme = scheme, KvCache = kv, CorpusHash = "h", Context = 8, Experiment = "e" };
        // Per-chunk KL varies around the mean so paired differences have a spread.
        r.Fill(Enumerable.Range(0, chunks).Select(k => new ChunkScore
        {
            Chunk = k, Positions = 3, KlSum = 3 * klPerPosition * (1 + 0.1 * (k % 2 == 0 ? 1 : -1) * (1 + k)), KlSquareSum = 0,
            SameTop1 = 3, NllBaseSum = 1, NllSum = 1, Kl = [klPerPosition, klPerPosition, klPerPosition],
        }).ToList());
        return r;
    }

    [Fact]
    public void FewRowsCompareEveryPair_ManyRowsCompareRankNeighboursAndPlannedPairs()
    {
        var few = new[] { Row("a", "x", 1e-3), Row("b", "x", 2e-3), Row("c", "x", 4e-3), Row("exact", "x", 0) };
        var all = PairedRecord.Selected(few, []);
        Assert.Equal(3, all.Count); // 3 rows with KL: 3 pairs; the exact row is no comparison
        Assert.DoesNotContain(all, p => p.A.StartsWith("exact") || p.B.StartsWith("exact"));

        var many = Enumerable.Range(0, 10).Select(i => Row($"b{i}", "s", (10 - i) * 1e-4)).ToList();
        var pairs = PairedRecord.Selected(many, [("b9/s", "b0/s")]);
        // Ranked by KL: b9 < b8 < ... < b0, 9 neighbour pairs, plus the planned b9 vs b0 kept in the spec's order.
        Assert.Equal(10, pairs.Count);
        var planned = Assert.Single(pairs, p => p.Planned);
        Assert.Equal(("b9/s", "b0/s"), (planned.A, planned.B));
        Assert.True(planned.KlDiff < 0);
        Assert.Contains(pairs, p => (p.A, p.B) == ("b9/s", "b8/s") && !p.Planned);
        Assert.DoesNotContain(pairs, p => (p.A, p.B) == ("b9/s", "b7/s"));
        Assert.All(pairs, p => Assert.InRange(p.KlPValue, 0, 1));
        // A planned pair that is also a neighbour pair appears once, marked planned, in the spec's order.
        var again = PairedRecord.Selected(many, [("b8/s", "b9/s")]);
        Assert.Equal(9, again.Count);
        Assert.Contains(again, p => p.Planned && (p.A, p.B) == ("b8/s", "b9/s"));
    }

    [Fact]
    public void KvCacheIsPartOfARowsIdentity()
    {
        var plain = Row("ilgpu-fp16", "fp16", 1e-8, "float32");
        var fp8 = Row("ilgpu-fp16", "fp16", 1e-5, "fp8-e4m3");
        Assert.Equal("ilgpu-fp16/fp16", plain.Key);
        Assert.Equal("ilgpu-fp16/fp16+kv-fp8-e4m3", fp8.Key);
        var merged = CorpusResults.Merge([plain, fp8]);
        Assert.Equal(2, merged.Count);
        Assert.Contains(merged, m => m.KvCache == "fp8-e4m3" && m.KlMean > 1e-6);
        Assert.EndsWith(".kv-fp8-e4m3.png", CorpusPlots.HeatmapFile("e", fp8));
    }

    [Fact]
    public void EveryBackendSchemeStoresAKnownWeightScheme()
    {
        foreach (var provider in BackendCatalog.All)
            foreach (var scheme in provider.Schemes)
                Assert.True(BackendWeightSchemes.Of(provider.Name, scheme) != null, $"{provider.Name}/{scheme} has no weight scheme in WeightSchemeCatalog");
        Assert.Equal("mxfp4-rceil", BackendWeightSchemes.Of("ilgpu-mx", "mxfp4-rceil-w4a4")!.Name);
        Assert.Equal("mxfp6-e3m2-ocp-floor", BackendWeightSchemes.Of("ilgpu-mx", "mxfp6-e3m2-ocp-floor-weight-only")!.Name);
        Assert.Equal("int8-smoothquant", BackendWeightSchemes.Of("cuda-int8", "smoothquant")!.Name);
        Assert.Equal("fp8-e4m3-per-channel", BackendWeightSchemes.Of("ilgpu-fp8", "per-channel")!.Name);
        Assert.Equal("q16.48", BackendWeightSchemes.Of("oracle", "exact")!.Name);
        Assert.Null(BackendWeightSchemes.Of("ilgpu-unknown", "x"));
        var id = WeightSchemeIdentity.For("ilgpu-int4", "int4-g128-awq-asym")!;
        Assert.Equal(("uint4", "128", "fp16", "awq"), (id.Element, id.Block, id.ScaleEncoding, id.ScaleRule));
        Assert.Equal(4 + 20.0 / 128, id.NominalBitsPerWeight);
    }
}
