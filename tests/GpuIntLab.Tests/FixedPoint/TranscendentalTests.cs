using System.Numerics;
using GpuIntLab.Core.FixedPoint;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.FixedPoint;

/// <summary>
/// Exp, Log, SinCos, Sigmoid, Silu versus the BigInteger reference (correctly rounded Q16.48), over dense
/// sweeps of each function's domain plus edge values; float64 cross-checks where float64 is finer.
/// Bounds asserted: 1 ulp (the design target is "a few"; measured maxima are printed).
/// </summary>
public class TranscendentalTests(ITestOutputHelper output)
{
    private const long One = Q48.One;
    private const double Ulp = 1.0 / One;

    /// <summary>Largest raw x with exp(x) not overflowing, from the reference (binary search).</summary>
    private static long ExpLimit()
    {
        long lo = 10L << 48, hi = 11L << 48; // exp(lo) fits, exp(hi) does not
        while (hi - lo > 1)
        {
            long mid = lo + ((hi - lo) / 2);
            if (BigRef.Exp48(mid) <= long.MaxValue)
            {
                lo = mid;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }

    [Fact]
    public void Exp_WithinOneUlpOfCorrectlyRounded()
    {
        long limit = ExpLimit();
        long[] edges = [0, 1, -1, 2, -2, One, -One, One / 2, -One / 2, -(34L << 48), -(33L << 48), -(35L << 48), limit, limit - 1, limit - 1000, 10L << 48, -(40L << 48) + 1, -(40L << 48)];
        var stats = new UlpStats("Exp");
        foreach (long x in edges.Concat(Sweep.Points(-36, 10.39, 12_000, 6_000, 11)).Concat(Sweep.Points(-1, 1, 2_000, 0, 0)))
        {
            stats.Add(x, Q48.Exp(x), BigRef.Exp48(x));
        }

        stats.Report(output);
        output.WriteLine($"Exp overflow limit: raw {limit} ({limit * Ulp:R}); ln(32768) = {Math.Log(32768):R}");
        stats.AssertMax(1);

        Assert.Equal(One, Q48.Exp(0));
        Assert.Equal(0, Q48.Exp(-(40L << 48)));
        Assert.Equal(0, Q48.Exp(long.MinValue));
        Assert.Equal(0, Q48.Exp(-(34L << 48))); // e^-34 = 1.7e-15 < 2^-49
        Assert.Equal(1, Q48.Exp(-(33L << 48))); // e^-33 = 4.7e-15 ~ 1.3 ulp
        Assert.True(Q48.Exp(limit) > long.MaxValue - (long)(32768.0 * One * 1e-12));
        var ex = Assert.Throws<Q48OverflowException>(() => Q48.Exp(limit + 1));
        Assert.Contains("Exp", ex.Message);
        Assert.Throws<Q48OverflowException>(() => Q48.Exp(11L << 48));
        Assert.Throws<Q48OverflowException>(() => Q48.Exp(long.MaxValue));
    }

    [Fact]
    public void Exp_Float64CrossCheck()
    {
        // Where e^x < 16 float64's Math.Exp (<= 1 double ulp, ~2^-49 at 16) is finer than 2^-48:
        // allowed |q - double| <= 0.5 (our rounding) + 1 ulp margin for float64 and its conversion.
        double max = 0;
        foreach (long x in Sweep.Points(-34, 2.77, 50_000, 50_000, 12))
        {
            double d = Math.Exp(Q48.ToDouble(x)) * One;
            double err = Math.Abs(Q48.Exp(x) - d);
            max = Math.Max(max, err);
            Assert.True(err <= 1.5, $"exp {x}: {Q48.Exp(x)} vs {d}");
        }

        output.WriteLine($"Exp vs float64 (e^x < 16): max |diff| = {max:F3} Q48 ulp");
    }

    [Fact]
    public void Log_WithinOneUlpOfCorrectlyRounded()
    {
        long[] edges = [1, 2, 3, One - 1, One, One + 1, 2 * One, One / 2, long.MaxValue, long.MaxValue - 1, 1L << 62, (1L << 62) - 1, 1L << 47, (1L << 56) + 1, 0x1234567890ABCDL];
        var stats = new UlpStats("Log");
        var points = edges
            .Concat(Sweep.LogUniformPositive(0, 63, 10_000, 13))
            .Concat(Sweep.Points(0.001, 4, 5_000, 2_000, 14))
            .Concat(Sweep.Points(0.999, 1.001, 1_000, 0, 0))
            .Concat(Sweep.Points(4, 32767.99, 2_000, 0, 0));
        foreach (long x in points)
        {
            if (x <= 0)
            {
                continue;
            }

            stats.Add(x, Q48.Log(x), BigRef.Log48(x));
        }

        stats.Report(output);
        stats.AssertMax(1);
        Assert.Equal(0, Q48.Log(One));
        Assert.Throws<ArgumentOutOfRangeException>(() => Q48.Log(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Q48.Log(-One));
        Assert.Throws<ArgumentOutOfRangeException>(() => Q48.Log(long.MinValue));
    }

    [Fact]
    public void Log_Float64CrossCheck()
    {
        // |ln x| <= 33.3 in range; Math.Log is within ~1 double ulp = |ln x| * 2^-52, i.e. |ln x| / 16 Q48 ulp.
        double max = 0;
        foreach (long x in Sweep.LogUniformPositive(0, 63, 50_000, 15).Concat(Sweep.Points(0.01, 100, 50_000, 0, 0)))
        {
            double d = Math.Log(Q48.ToDouble(x)) * One;
            double err = Math.Abs(Q48.Log(x) - d);
            max = Math.Max(max, err);
            Assert.True(err <= 0.5 + (Math.Abs(d) * Ulp / 16) + 1e-6, $"log {x}: {Q48.Log(x)} vs {d}");
        }

        output.WriteLine($"Log vs float64: max |diff| = {max:F3} Q48 ulp");
    }

    [Fact]
    public void Exp_Log_RoundTrip()
    {
        foreach (long x in Sweep.Points(0.01, 30000, 2_000, 2_000, 16))
        {
            long y = Q48.Exp(Q48.Log(x));
            // exp(log x) differs from x by exp's rounding + x * (log's rounding 0.5 ulp)
            Assert.True(Math.Abs(y - x) <= 1 + (x * Ulp * 0.51), $"exp(log({x})) = {y}");
        }
    }

    [Fact]
    public void SinCos_WithinOneUlpOfCorrectlyRounded()
    {
        var halfPi = (double)Math.PI / 2;
        var edges = new List<long> { 0, 1, -1, One, -One, long.MaxValue, long.MinValue, long.MaxValue - 1, long.MinValue + 1 };
        // raw values nearest k*pi/2 (sin or cos near 0: absolute-error stress), small and huge k
        foreach (int k in new[] { 1, 2, 3, 4, 5, 100, 1001, 10000, 20000, 20860 })
        {
            BigInteger c = BigRef.ToQ48((BigRef.Pi >> 1) * k);
            for (int d = -2; d <= 2; d++)
            {
                edges.Add((long)c + d);
                edges.Add(-(long)c - d);
            }
        }

        var ss = new UlpStats("Sin");
        var cs = new UlpStats("Cos");
        var points = edges
            .Concat(Sweep.Points(-8 * halfPi * 2, 8 * halfPi * 2, 10_000, 0, 0))
            .Concat(Sweep.Points(-32768, 32767.99, 3_000, 3_000, 17))
            .Concat(Sweep.Points(-1e-6, 1e-6, 500, 0, 0));
        foreach (long x in points)
        {
            Q48.SinCos(x, out long s, out long c);
            var (rs, rc) = BigRef.SinCos48(x);
            ss.Add(x, s, rs);
            cs.Add(x, c, rc);
        }

        ss.Report(output);
        cs.Report(output);
        ss.AssertMax(1);
        cs.AssertMax(1);
        Q48.SinCos(0, out long s0, out long c0);
        Assert.Equal(0, s0);
        Assert.Equal(One, c0);
    }

    [Fact]
    public void SinCos_Float64CrossCheck()
    {
        // |x| <= 16: float64 sin/cos of the (exactly converted) argument is within ~1 double ulp (<= 2^-53 of 1).
        double max = 0;
        foreach (long x in Sweep.Points(-16, 16, 50_000, 50_000, 18))
        {
            Q48.SinCos(x, out long s, out long c);
            double xd = Q48.ToDouble(x);
            double es = Math.Abs(s - (Math.Sin(xd) * One)), ec = Math.Abs(c - (Math.Cos(xd) * One));
            max = Math.Max(max, Math.Max(es, ec));
            Assert.True(es <= 0.6 && ec <= 0.6, $"sincos {x}");
        }

        output.WriteLine($"SinCos vs float64 (|x| <= 16): max |diff| = {max:F3} Q48 ulp");
    }

    [Fact]
    public void Sigmoid_WithinOneUlpOfCorrectlyRounded()
    {
        long[] edges = [0, 1, -1, One, -One, 40L << 48, -(40L << 48), (40L << 48) - 1, -(40L << 48) + 1, 34L << 48, -(34L << 48), long.MaxValue, long.MinValue, 32767L << 48, -(32767L << 48)];
        var stats = new UlpStats("Sigmoid");
        foreach (long x in edges.Concat(Sweep.Points(-45, 45, 10_000, 5_000, 19)))
        {
            stats.Add(x, Q48.Sigmoid(x), BigRef.Sigmoid48(x));
        }

        stats.Report(output);
        stats.AssertMax(1);
        Assert.Equal(One / 2, Q48.Sigmoid(0));
        Assert.Equal(One, Q48.Sigmoid(long.MaxValue));
        Assert.Equal(0, Q48.Sigmoid(long.MinValue));
        // symmetry sigmoid(-x) = 1 - sigmoid(x) holds up to the two roundings
        foreach (long x in Sweep.Points(-30, 30, 2_000, 0, 0))
        {
            Assert.InRange(Q48.Sigmoid(x) + Q48.Sigmoid(-x) - One, -1, 1);
        }
    }

    [Fact]
    public void Sigmoid_Float64CrossCheck()
    {
        double max = 0;
        foreach (long x in Sweep.Points(-40, 40, 50_000, 50_000, 20))
        {
            double xd = Q48.ToDouble(x);
            double d = (xd >= 0 ? 1 / (1 + Math.Exp(-xd)) : Math.Exp(xd) / (1 + Math.Exp(xd))) * One;
            double err = Math.Abs(Q48.Sigmoid(x) - d);
            max = Math.Max(max, err);
            Assert.True(err <= 1.0, $"sigmoid {x}"); // float64 formula error <= ~3 double ulp of 1 = 2^-51
        }

        output.WriteLine($"Sigmoid vs float64: max |diff| = {max:F3} Q48 ulp");
    }

    [Fact]
    public void Silu_WithinOneUlpOfCorrectlyRounded()
    {
        long[] edges = [0, 1, -1, 2, -2, One, -One, 40L << 48, -(40L << 48), (40L << 48) - 1, -(40L << 48) + 1, long.MaxValue, long.MinValue, 32767L << 48, -(32767L << 48), -(1278L << 40)];
        var stats = new UlpStats("Silu");
        foreach (long x in edges.Concat(Sweep.Points(-45, 45, 10_000, 5_000, 21)))
        {
            stats.Add(x, Q48.Silu(x), BigRef.Silu48(x));
        }

        stats.Report(output);
        stats.AssertMax(1);
        Assert.Equal(long.MaxValue, Q48.Silu(long.MaxValue));
        Assert.Equal(0, Q48.Silu(long.MinValue));
        Assert.Equal(0, Q48.Silu(0));
    }
}
