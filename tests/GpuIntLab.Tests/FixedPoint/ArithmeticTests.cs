using System.Numerics;
using GpuIntLab.Core.FixedPoint;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.FixedPoint;

public class ArithmeticTests(ITestOutputHelper output)
{
    private const long One = Q48.One;

    private static BigInteger RefMul(long a, long b) => BigRef.RoundShift((BigInteger)a * b, 48);

    private static BigInteger RefDiv(long a, long b) => BigRef.RoundDiv((BigInteger)a << 48, b);

    private static bool InRange(BigInteger v) => v >= long.MinValue && v <= long.MaxValue;

    private static IEnumerable<long> EdgeValues()
    {
        long[] e =
        [
            0, 1, -1, 2, -2, 3, -3, One, -One, One + 1, One - 1, -One + 1, -One - 1, One / 2, -One / 2,
            1L << 47, -(1L << 47), 3L << 47, -(3L << 47), (1L << 24), -(1L << 24), (1L << 24) + 1,
            long.MaxValue, long.MinValue, long.MaxValue - 1, long.MinValue + 1, 181L << 48, -(181L << 48),
            (long)(1.4142135623730951 * One), (long)(-2.718281828459045 * One), 12345678901234567,
        ];
        return e;
    }

    private static IEnumerable<(long A, long B)> Pairs(int seed, int count)
    {
        var rng = new Random(seed);
        foreach (long a in EdgeValues())
        {
            foreach (long b in EdgeValues())
            {
                yield return (a, b);
            }
        }

        for (int i = 0; i < count; i++)
        {
            // magnitudes log-uniform so products span underflow .. overflow
            long a = RandomRaw(rng), b = RandomRaw(rng);
            yield return (a, b);
        }
    }

    private static long RandomRaw(Random rng)
    {
        int bits = rng.Next(0, 64);
        long v = bits == 0 ? 0 : (long)((ulong)rng.NextInt64() >> (64 - bits));
        return rng.Next(2) == 0 ? v : -v;
    }

    [Fact]
    public void FromInt_ScalesAndChecksRange()
    {
        Assert.Equal(One, Q48.FromInt(1));
        Assert.Equal(-32768L << 48, Q48.FromInt(-32768));
        Assert.Equal(long.MinValue, Q48.FromInt(-32768));
        Assert.Equal(32767L << 48, Q48.FromInt(32767));
        Assert.Throws<Q48OverflowException>(() => Q48.FromInt(32768));
        Assert.Throws<Q48OverflowException>(() => Q48.FromInt(-32769));
    }

    [Fact]
    public void Mul_MatchesExactRne_AndThrowsOnOverflow()
    {
        int n = 0, overflows = 0;
        foreach (var (a, b) in Pairs(1, 200_000))
        {
            BigInteger expected = RefMul(a, b);
            if (InRange(expected))
            {
                Assert.Equal((long)expected, Q48.Mul(a, b));
            }
            else
            {
                var ex = Assert.Throws<Q48OverflowException>(() => Q48.Mul(a, b));
                Assert.Contains("Mul", ex.Message);
                overflows++;
            }

            n++;
        }

        output.WriteLine($"Mul: {n} pairs exact vs BigInteger RNE ({overflows} overflow throws)");
        Assert.True(overflows > 1000);
    }

    [Theory]
    [InlineData(1, 1L << 47, 0)]             // 0.5 ulp -> 0 (even)
    [InlineData(3, 1L << 47, 2)]             // 1.5 ulp -> 2 (even)
    [InlineData(5, 1L << 47, 2)]             // 2.5 ulp -> 2 (even)
    [InlineData(7, 1L << 47, 4)]             // 3.5 ulp -> 4
    [InlineData(-1, 1L << 47, 0)]            // -0.5 -> 0
    [InlineData(-3, 1L << 47, -2)]           // -1.5 -> -2
    [InlineData(-5, 1L << 47, -2)]           // -2.5 -> -2
    [InlineData(1, (1L << 47) + 1, 1)]       // just above half
    [InlineData(1, (1L << 47) - 1, 0)]       // just below half
    [InlineData(-1, (1L << 47) + 1, -1)]
    public void Mul_TiesToEven(long a, long b, long expected)
    {
        Assert.Equal(expected, Q48.Mul(a, b));
        Assert.Equal(expected, Q48.Mul(b, a));
    }

    [Fact]
    public void Mul_OverflowMessageNamesOperands()
    {
        var ex = Assert.Throws<Q48OverflowException>(() => Q48.Mul(200L << 48, 200L << 48));
        Assert.Contains("Q48.Mul", ex.Message);
        Assert.Contains("200 (raw", ex.Message);
        Assert.IsAssignableFrom<OverflowException>(ex);
        Assert.Throws<Q48OverflowException>(() => Q48.Mul(long.MinValue, -One)); // +32768
        Assert.Equal(long.MinValue, Q48.Mul(long.MinValue, One));                // -32768 fits
        // a*b = -(2^64 + 1) * 2^47 (2^64 + 1 = 274177 * 67280421310721): the floor of a*b/2^48 is
        // long.MinValue - 1, but the value is a tie halfway to long.MinValue (even), so it fits
        Assert.Equal(long.MinValue, Q48.Mul(-(274177L << 30), 67280421310721L << 17));
        Assert.Equal(long.MinValue, Q48.Mul(274177L << 30, -(67280421310721L << 17)));
        Assert.Throws<Q48OverflowException>(() => Q48.Mul(-(274177L << 30), (67280421310721L << 17) + 1));
    }

    [Fact]
    public void Div_MatchesExactRne_AndThrowsOnOverflow()
    {
        int n = 0, overflows = 0;
        foreach (var (a, b) in Pairs(2, 200_000))
        {
            if (b == 0)
            {
                Assert.Throws<DivideByZeroException>(() => Q48.Div(a, b));
                continue;
            }

            BigInteger expected = RefDiv(a, b);
            if (InRange(expected))
            {
                Assert.Equal((long)expected, Q48.Div(a, b));
            }
            else
            {
                var ex = Assert.Throws<Q48OverflowException>(() => Q48.Div(a, b));
                Assert.Contains("Div", ex.Message);
                overflows++;
            }

            n++;
        }

        output.WriteLine($"Div: {n} pairs exact vs BigInteger RNE ({overflows} overflow throws)");
        Assert.True(overflows > 1000);
    }

    [Theory]
    [InlineData(1, 1L << 49, 0)]       // 0.5 -> 0
    [InlineData(3, 1L << 49, 2)]       // 1.5 -> 2
    [InlineData(5, 1L << 49, 2)]       // 2.5 -> 2
    [InlineData(-3, 1L << 49, -2)]
    [InlineData(3, -(1L << 49), -2)]
    [InlineData(-5, -(1L << 49), 2)]
    [InlineData(1L << 48, 3L << 48, 93824992236885)] // 1/3 = 0x5555...5.55 -> rounds down
    [InlineData(2L << 48, 3L << 48, 187649984473771)] // 2/3 -> ...AAB
    public void Div_TiesToEven(long a, long b, long expected) => Assert.Equal(expected, Q48.Div(a, b));

    [Fact]
    public void Div_ByZeroThrows() => Assert.Throws<DivideByZeroException>(() => Q48.Div(One, 0));

    [Fact]
    public void RoundShift_MatchesExactRne()
    {
        var rng = new Random(3);
        int n = 0;
        for (int i = 0; i < 100_000; i++)
        {
            // sums of a few Q32.96 products, as matmul produces
            Int128 v = 0;
            int terms = rng.Next(1, 5);
            for (int t = 0; t < terms; t++)
            {
                v += Math.BigMul(RandomRaw(rng), RandomRaw(rng));
            }

            int shift = i % 10 == 0 ? rng.Next(0, 128) : 48;
            BigInteger expected = BigRef.RoundShift((BigInteger)v, shift);
            if (InRange(expected))
            {
                Assert.Equal((long)expected, Q48.RoundShift(v, shift));
            }
            else
            {
                Assert.Throws<Q48OverflowException>(() => Q48.RoundShift(v, shift));
            }

            n++;
        }

        // exact ties at shift 48
        Assert.Equal(0, Q48.RoundShift((Int128)1 << 47, 48));
        Assert.Equal(2, Q48.RoundShift((Int128)3 << 47, 48));
        Assert.Equal(-2, Q48.RoundShift(-((Int128)3 << 47), 48));
        Assert.Equal(-2, Q48.RoundShift(-((Int128)5 << 47), 48));
        Assert.Equal(long.MaxValue, Q48.RoundShift(((Int128)long.MaxValue << 48) + ((Int128)1 << 47) - 1, 48));
        Assert.Throws<Q48OverflowException>(() => Q48.RoundShift(((Int128)long.MaxValue << 48) + ((Int128)1 << 47), 48));
        Assert.Equal(long.MinValue, Q48.RoundShift((Int128)long.MinValue << 48, 48));
        Assert.Equal(long.MinValue, Q48.RoundShift(((Int128)long.MinValue << 48) - ((Int128)1 << 47), 48)); // tie to even
        Assert.Throws<Q48OverflowException>(() => Q48.RoundShift(((Int128)long.MinValue << 48) - ((Int128)1 << 47) - 1, 48));
        Assert.Equal(5, Q48.RoundShift(5, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Q48.RoundShift(5, 128));
        output.WriteLine($"RoundShift: {n} values exact vs BigInteger RNE");
    }

    private static IEnumerable<long> SqrtInputs()
    {
        long[] edges = [0, 1, 2, 3, 4, One - 1, One, One + 1, 2 * One, 4 * One, long.MaxValue, long.MaxValue - 1, 1L << 18, (1L << 18) + 1, 1L << 62];
        return edges.Concat(Sweep.LogUniformPositive(0, 63, 30_000, 4)).Concat(Sweep.Points(0, 16, 5_000, 0, 5));
    }

    [Fact]
    public void Sqrt_IsCorrectlyRounded()
    {
        var stats = new UlpStats("Sqrt");
        foreach (long x in SqrtInputs())
        {
            long r = Q48.Sqrt(x);
            // definitional check: (r - 1/2)^2 < x * 2^48 < (r + 1/2)^2, i.e. (2r-1)^2 < 4N < (2r+1)^2
            BigInteger n4 = (BigInteger)x << 50;
            BigInteger lo = (2 * (BigInteger)r) - 1, hi = (2 * (BigInteger)r) + 1;
            Assert.True((r == 0 || lo * lo < n4) && n4 < hi * hi, $"Sqrt({x}) = {r} is not correctly rounded");
            BigInteger s = BigRef.ISqrt((BigInteger)x << 48);
            stats.Add(x, r, ((BigInteger)x << 48) - (s * s) > s ? s + 1 : s);
        }

        stats.Report(output);
        stats.AssertMax(0);
        Assert.Throws<ArgumentOutOfRangeException>(() => Q48.Sqrt(-1));
        Assert.Equal(2 * One, Q48.Sqrt(4 * One));
        Assert.Equal(1L << 24, Q48.Sqrt(1)); // sqrt(2^-48) = 2^-24
    }

    [Fact]
    public void Sqrt_Float64CrossCheck()
    {
        // float64 sqrt is correctly rounded to 53 bits; for |value| < 16 its ulp (<= 2^-49) is below ours.
        foreach (long x in Sweep.Points(0, 256, 20_000, 20_000, 6))
        {
            double d = Math.Sqrt(Q48.ToDouble(x)) * One;
            Assert.True(Math.Abs(Q48.Sqrt(x) - d) <= 0.5 + (d * (1.0 / (1L << 52))) + 1e-9, $"sqrt {x}");
        }
    }

    private static IEnumerable<long> RsqrtInputs()
    {
        long[] edges = [(1L << 18) + 1, (1L << 18) + 2, 1L << 20, One - 1, One, One + 1, 4 * One, long.MaxValue, long.MaxValue - 1, 1L << 62];
        return edges.Concat(Sweep.LogUniformPositive(19, 63, 30_000, 7)).Concat(Sweep.Points(0.001, 64, 5_000, 0, 8));
    }

    [Fact]
    public void Rsqrt_IsCorrectlyRounded()
    {
        var stats = new UlpStats("Rsqrt");
        BigInteger two146 = BigInteger.One << 146;
        foreach (long x in RsqrtInputs())
        {
            long r = Q48.Rsqrt(x);
            // r = round(2^72 / sqrt(x)) <=> (2r-1)^2 x < 2^146 < (2r+1)^2 x (equality impossible)
            BigInteger lo = (2 * (BigInteger)r) - 1, hi = (2 * (BigInteger)r) + 1;
            bool ok = lo * lo * x < two146 && two146 < hi * hi * x;
            BigInteger expected = r;
            if (!ok)
            {
                // find the correctly rounded value to report the distance
                BigInteger c = BigRef.ISqrt(two146 / x / 4);
                while ((2 * c + 1) * (2 * c + 1) * x < two146)
                {
                    c++;
                }

                expected = c;
            }

            stats.Add(x, r, expected);
        }

        stats.Report(output);
        stats.AssertMax(0);
        Assert.Equal(One, Q48.Rsqrt(One));
        Assert.Equal(One / 2, Q48.Rsqrt(4 * One));
        Assert.Throws<Q48OverflowException>(() => Q48.Rsqrt(1L << 18)); // exactly 32768
        Assert.Throws<Q48OverflowException>(() => Q48.Rsqrt(1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Q48.Rsqrt(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Q48.Rsqrt(-One));
    }

    [Fact]
    public void Rsqrt_Float64CrossCheck()
    {
        // for x >= 1/256 the result is <= 16, where float64's 1/sqrt (two roundings, <= 1.5 double ulp) is finer
        foreach (long x in Sweep.Points(1.0 / 256, 1024, 20_000, 20_000, 9))
        {
            double d = One / Math.Sqrt(Q48.ToDouble(x));
            Assert.True(Math.Abs(Q48.Rsqrt(x) - d) <= 0.5 + (1.5 * d * (1.0 / (1L << 52))) + 1e-9, $"rsqrt {x}");
        }
    }
}
