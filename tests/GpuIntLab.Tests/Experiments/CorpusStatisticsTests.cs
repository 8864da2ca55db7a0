using GpuIntLab.Experiments;
using Xunit;

namespace GpuIntLab.Tests.Experiments;

/// <summary>The corpus statistics against figures worked out by hand on a tiny two-token vocabulary.</summary>
public class CorpusStatisticsTests
{
    // Base distribution at every position: p = (0.8, 0.2); the actual next token is always 0.
    private static readonly double[] s_base = [Math.Log(0.8), Math.Log(0.2)];

    // Backend distributions: B0 = base, B1 = (0.6, 0.4), B2 = (0.4, 0.6) (top-1 flips). Logits shifted by +3 to
    // show only the distribution matters.
    private static double[] Logits(double q0) => [Math.Log(q0) + 3, Math.Log(1 - q0) + 3];

    // KL(p||q) worked out by hand: sum p_i ln(p_i / q_i).
    private static readonly double s_kl1 = 0.8 * Math.Log(4.0 / 3) + 0.2 * Math.Log(0.5);
    private static readonly double s_kl2 = 0.8 * Math.Log(2.0) + 0.2 * Math.Log(1.0 / 3);

    /// <summary>Chunks: (B0, B0), (B0, B1), (B1, B2), (B2, B2).</summary>
    private static List<ChunkScore> Chunks()
    {
        double[][] backends = [Logits(0.8), Logits(0.6), Logits(0.4)];
        int[][] layout = [[0, 0], [0, 1], [1, 2], [2, 2]];
        return layout.Select((l, k) => ChunkScore.Of(k, [s_base, s_base], [backends[l[0]], backends[l[1]]], [0, 0])).ToList();
    }

    private static double SampleSd(double[] v)
    {
        double m = v.Average();
        return Math.Sqrt(v.Sum(x => (x - m) * (x - m)) / (v.Length - 1));
    }

    [Fact]
    public void KlSameTop1PerplexityAndDeltaPMatchHandComputedValues()
    {
        var s = CorpusStatistics.Summarize(Chunks());
        Assert.Equal(4, s.Chunks);
        Assert.Equal(8, s.TokensScored);

        // Mean KL: 2 x KL1 + 3 x KL2 over 8 positions; SE: sample sd of the 4 chunk means / sqrt(4).
        Assert.Equal((2 * s_kl1 + 3 * s_kl2) / 8, s.Kl.Mean, 14);
        double[] klChunkMeans = [0, s_kl1 / 2, (s_kl1 + s_kl2) / 2, s_kl2];
        Assert.Equal(SampleSd(klChunkMeans) / 2, s.Kl.Se, 14);
        // llama.cpp's naive SE over the 8 positions.
        double[] kls = [0, 0, 0, s_kl1, s_kl1, s_kl2, s_kl2, s_kl2];
        double mean = kls.Average(), meanSq = kls.Average(x => x * x);
        Assert.Equal(Math.Sqrt((meanSq - mean * mean) / 7), s.Kl.NaiveSe, 14);
        Assert.Equal(s_kl2, s.KlMax, 14);
        // Sorted KL: 0 0 0 KL1 KL1 KL2 KL2 KL2; p50 at h = 3.5 lies between KL1 and KL1, p90 at h = 6.3 between KL2 and KL2.
        Assert.Equal(s_kl1, s.KlP50, 14);
        Assert.Equal(s_kl2, s.KlP90, 14);

        // Same top-1: B0 and B1 agree with the base, B2 does not: 5/8; chunk means 1, 1, 1/2, 0.
        Assert.Equal(5.0 / 8, s.SameTop1.Mean, 14);
        Assert.Equal(SampleSd([1, 1, 0.5, 0]) / 2, s.SameTop1.Se, 14);
        Assert.Equal(Math.Sqrt(5.0 / 8 * 3.0 / 8 / 7), s.SameTop1.NaiveSe, 14);

        // Perplexities: base 1 / 0.8; backend (0.8^3 0.6^2 0.4^3)^(-1/8).
        Assert.Equal(1.25, s.PplBase, 13);
        Assert.Equal(Math.Pow(Math.Pow(0.8, 3) * Math.Pow(0.6, 2) * Math.Pow(0.4, 3), -1.0 / 8), s.Ppl, 13);
        Assert.Equal(s.Ppl / s.PplBase, s.PplRatio, 13);
        // Ratio CI: per-position log ratios 0, ln(4/3), ln 2; chunk means; t(0.975, 3 df) = 3.182.
        double[] logRatioMeans = [0, Math.Log(4.0 / 3) / 2, (Math.Log(4.0 / 3) + Math.Log(2)) / 2, Math.Log(2)];
        double lr = (2 * Math.Log(4.0 / 3) + 3 * Math.Log(2)) / 8, lrSe = SampleSd(logRatioMeans) / 2;
        Assert.Equal(Math.Exp(lr - 3.182 * lrSe), s.PplRatioCi95.Low, 12);
        Assert.Equal(Math.Exp(lr + 3.182 * lrSe), s.PplRatioCi95.High, 12);

        // Delta p of the actual token (token 0): 0, -0.2, -0.4 at B0, B1, B2.
        Assert.Equal(-0.2, s.Dp.Mean, 14);
        Assert.Equal(SampleSd([0, -0.1, -0.3, -0.4]) / 2, s.Dp.Se, 14);
        Assert.Equal(Math.Sqrt(0.07), s.DpRms, 14);
    }

    [Fact]
    public void PercentilesInterpolateBetweenOrderStatistics()
    {
        double[] v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        // h = 9p: p50 -> 4.5 -> 5.5; p90 -> 8.1 -> 9.1; p99 -> 8.91 -> 9.91; p99.9 -> 8.991 -> 9.991.
        Assert.Equal(5.5, CorpusStatistics.Percentile(v, 0.5), 12);
        Assert.Equal(9.1, CorpusStatistics.Percentile(v, 0.9), 12);
        Assert.Equal(9.91, CorpusStatistics.Percentile(v, 0.99), 12);
        Assert.Equal(9.991, CorpusStatistics.Percentile(v, 0.999), 12);
        Assert.Equal(1, CorpusStatistics.Percentile(v, 0));
        Assert.Equal(10, CorpusStatistics.Percentile(v, 1));
    }

    [Fact]
    public void ExactBackendHasZeroKlAndRatioOne()
    {
        // Base log-probabilities as the runner makes them: log-softmax of the exact logits.
        var lp = TokenMetrics.LogSoftmax(s_base);
        var s = CorpusStatistics.Summarize([ChunkScore.Of(0, [lp, lp], [s_base, s_base], [0, 1]), ChunkScore.Of(1, [lp], [s_base], [1])]);
        Assert.Equal(0, s.Kl.Mean);
        Assert.Equal(0, s.KlMax);
        Assert.Equal(1, s.SameTop1.Mean);
        Assert.Equal(1, s.PplRatio);
        Assert.Equal(0, s.Dp.Mean);
    }

    private static List<ChunkScore> KlChunks(params double[] chunkMeans) =>
        chunkMeans.Select((m, k) => new ChunkScore { Chunk = k, Positions = 10, KlSum = 10 * m }).ToList();

    [Fact]
    public void PairedIntervalIsTheTIntervalOfChunkDifferences()
    {
        var a = KlChunks(1.0, 1.2, 0.9, 1.1);
        var b = KlChunks(1.1, 1.32, 0.99, 1.21);
        var d = CorpusStatistics.Paired(a, b, c => c.KlSum)!;
        // Differences -0.1, -0.12, -0.09, -0.11: mean -0.105, sample sd sqrt(5e-4 / 3), SE sd / 2, t(3) = 3.182.
        double se = Math.Sqrt(5e-4 / 3) / 2;
        Assert.Equal(-0.105, d.Difference, 12);
        Assert.Equal(se, d.Se, 12);
        Assert.Equal(-0.105 - 3.182 * se, d.Low, 12);
        Assert.Equal(-0.105 + 3.182 * se, d.High, 12);
        Assert.True(d.Significant);
        Assert.Equal("A lower than B", CorpusStatistics.Verdict(d, "A", "B"));
        Assert.Equal("B higher than A", CorpusStatistics.Verdict(CorpusStatistics.Paired(b, a, c => c.KlSum), "B", "A"));

        // Differences that change sign: the interval covers zero.
        var noisy = CorpusStatistics.Paired(KlChunks(1.0, 1.2, 0.9, 1.1), KlChunks(0.9, 1.3, 0.85, 1.14), c => c.KlSum)!;
        Assert.False(noisy.Significant);
        Assert.Equal("no difference at this corpus size", CorpusStatistics.Verdict(noisy, "A", "B"));

        // Pairing is by chunk index: chunks only one side has are left out.
        var partial = CorpusStatistics.Paired(KlChunks(1.0, 1.2, 0.9), KlChunks(1.1, 1.32, 0.99, 1.21), c => c.KlSum)!;
        Assert.Equal(3, partial.Chunks);
        Assert.Null(CorpusStatistics.Paired(KlChunks(1.0), KlChunks(1.1), c => c.KlSum));
    }

    /// <summary>The t quantile against the t distribution's CDF integrated numerically (Simpson, closed-form normaliser).</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    [InlineData(30)]
    [InlineData(31)]
    [InlineData(60)]
    [InlineData(500)]
    public void StudentTQuantileMatchesTheIntegratedDensity(int df)
    {
        double q = StudentT.Quantile975(df);
        double cdf = 0.5 + StudentTDensity.IntegralFromZero(df, q);
        // The table has 4 significant figures: a quantile off by 5e-4 moves the CDF by at most density x 5e-4 < 3e-5.
        Assert.InRange(cdf, 0.975 - 1e-4, 0.975 + 1e-4);
    }
}
