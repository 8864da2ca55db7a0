using GpuIntLab.Experiments;
using Xunit;

namespace GpuIntLab.Tests.Experiments;

/// <summary>Each metric against hand-computed cases.</summary>
public class TokenMetricsTests
{
    [Fact]
    public void FreeRunningCountsEqualPositionsAndFindsTheFirstDivergence()
    {
        Assert.Equal((4, (int?)null), TokenMetrics.FreeRunning([1, 2, 3, 4], [1, 2, 3, 4]));
        Assert.Equal((3, (int?)2), TokenMetrics.FreeRunning([1, 2, 3, 4], [1, 2, 9, 4]));
        Assert.Equal((0, (int?)0), TokenMetrics.FreeRunning([1, 2], [5, 6]));
        // A shorter run (stopped early) diverges where it ends.
        Assert.Equal((2, (int?)2), TokenMetrics.FreeRunning([1, 2, 3], [1, 2]));
    }

    [Fact]
    public void KlDivergenceOfKnownDistributions()
    {
        // P = softmax(log [0.5, 0.5]), Q = softmax(log [0.9, 0.1]): KL = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1).
        double expected = 0.5 * Math.Log(0.5 / 0.9) + 0.5 * Math.Log(0.5 / 0.1);
        Assert.Equal(expected, TokenMetrics.KlDivergence([Math.Log(0.5), Math.Log(0.5)], [Math.Log(0.9), Math.Log(0.1)]), 12);
        // Shifting all logits changes nothing; identical distributions give 0.
        Assert.Equal(0, TokenMetrics.KlDivergence([1.0, 2.0, 3.0], [11.0, 12.0, 13.0]), 12);
        // Large logits stay finite (stable log-softmax).
        Assert.True(double.IsFinite(TokenMetrics.KlDivergence([1000.0, 0.0], [0.0, 1000.0])));
        Assert.Equal(1000, TokenMetrics.KlDivergence([1000.0, 0.0], [0.0, 1000.0]), 6);
    }

    [Fact]
    public void TopKAndMaxError()
    {
        Assert.Equal([3, 1, 0], TokenMetrics.TopK([2.0, 5.0, -1.0, 7.0, 1.0], 3));
        Assert.Equal([0, 1], TokenMetrics.TopK([4.0, 4.0, 4.0], 2)); // ties: lower index first
        Assert.Equal(2.5, TokenMetrics.MaxAbsDifference([1.0, -2.0, 3.0], [1.5, 0.5, 3.0]));
    }

    [Fact]
    public void NearTieRule()
    {
        double[] oracle = [5.0, 4.9, 1.0, 0.5, 0.2, 0.1, 0.0];
        double[] backend = [4.8, 5.0, 1.0, 0.5, 0.2, 0.1, 0.0];
        var tie = NearTie.At(3, oracle, backend, oracleToken: 0, backendToken: 1);
        Assert.True(tie.IsNearTie);
        Assert.Equal(0.1, tie.OracleMargin, 12);
        // A backend token far down the oracle's list is no near tie.
        double[] far = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 9.0];
        Assert.False(NearTie.At(0, oracle, far, 0, 6).IsNearTie);
    }

    [Fact]
    public void RateStatsMedianAndSpread()
    {
        Assert.Equal(new RateStats(2, 1, 10, 3), RateStats.Of([10, 1, 2]));
        Assert.Equal(new RateStats(2.5, 1, 4, 4), RateStats.Of([4, 1, 3, 2]));
        Assert.Null(RateStats.Of([]));
    }
}
