using System.Numerics;
using GpuIntLab.Core.FixedPoint;
using Xunit;

namespace GpuIntLab.Tests.FixedPoint;

/// <summary>Q48.DivideRound against an exact BigInteger round-half-to-even division.</summary>
public class DivideRoundTests
{
    private static BigInteger Reference(BigInteger n, BigInteger d)
    {
        var q = BigInteger.Divide(n, d);
        var r = n - q * d;
        if (r < 0) { q -= 1; r += d; }
        if (2 * r > d || (2 * r == d && !q.IsEven)) q += 1;
        return q;
    }

    [Fact]
    public void MatchesBigIntegerIncludingTiesAndNegatives()
    {
        Assert.Equal(2, Q48.DivideRound(5, 2));   // 2.5 -> 2 (even)
        Assert.Equal(4, Q48.DivideRound(7, 2));   // 3.5 -> 4
        Assert.Equal(-2, Q48.DivideRound(-5, 2)); // -2.5 -> -2
        Assert.Equal(-4, Q48.DivideRound(-7, 2));
        var rng = new Random(96);
        for (int i = 0; i < 20_000; i++)
        {
            Int128 n = ((Int128)rng.NextInt64() << rng.Next(0, 50)) * (rng.Next(2) == 0 ? 1 : -1);
            Int128 d = (Int128)rng.NextInt64(1, long.MaxValue) << rng.Next(0, 50);
            var expected = Reference((BigInteger)n, (BigInteger)d);
            if (expected > long.MaxValue || expected < long.MinValue)
                Assert.Throws<Q48OverflowException>(() => Q48.DivideRound(n, d));
            else
                Assert.Equal((long)expected, Q48.DivideRound(n, d));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => Q48.DivideRound(1, 0));
    }
}
