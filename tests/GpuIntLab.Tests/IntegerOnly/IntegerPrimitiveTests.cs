using System.Numerics;
using GpuIntLab.Core.Formats.IntegerOnly;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.IntegerOnly;

/// <summary>
/// Each integer-only primitive against an independent evaluation: BigInteger for the exact roundings and roots,
/// float64 (libm) for the nonlinear functions, with the error bound derived in each test's comment.
/// </summary>
public class IntegerPrimitiveTests(ITestOutputHelper output)
{
    private const double Unit = 1.0 / 65536; // one step of the int32 activations (2^-16)

    /// <summary>n / d rounded half to even, from BigInteger floor division and an exact remainder comparison.</summary>
    private static BigInteger RoundHalfEven(BigInteger n, BigInteger d)
    {
        var q = BigInteger.DivRem(n, d, out var r);
        if (r.Sign < 0) { q -= 1; r += d; }
        int c = (2 * r).CompareTo(d);
        if (c > 0 || (c == 0 && !q.IsEven)) q += 1;
        return q;
    }

    private static long RandomLong(Random rng) => rng.NextInt64(long.MinValue, long.MaxValue) >> rng.Next(0, 63);

    [Fact]
    public void RoundShiftIsRoundHalfEvenForEveryShift()
    {
        var rng = new Random(15);
        var values = new List<long> { 0, 1, -1, 2, -2, 3, -3, long.MaxValue, long.MinValue, 1L << 62, -(1L << 62), (1L << 62) + 1, -(1L << 62) - 1 };
        for (int i = 0; i < 4000; i++) values.Add(RandomLong(rng));
        for (int k = 1; k < 40; k++) { values.Add(3L << (k - 1)); values.Add(-(3L << (k - 1))); values.Add(1L << k); values.Add((1L << k) + (1L << (k - 1))); } // ties
        foreach (long v in values)
            for (int shift = 1; shift <= 70; shift++)
                Assert.Equal(RoundHalfEven(v, BigInteger.One << shift), (BigInteger)IntegerArithmetic.RoundShift(v, shift));
        // shift <= 0 is an exact left shift
        Assert.Equal(-12L << 20, IntegerArithmetic.RoundShift(-12, -20));
        Assert.Equal(7L, IntegerArithmetic.RoundShift(7, 0));
        // hand-computed ties: 5/2 -> 2, 7/2 -> 4, -5/2 -> -2, -7/2 -> -4
        Assert.Equal(2, IntegerArithmetic.RoundShift(5, 1));
        Assert.Equal(4, IntegerArithmetic.RoundShift(7, 1));
        Assert.Equal(-2, IntegerArithmetic.RoundShift(-5, 1));
        Assert.Equal(-4, IntegerArithmetic.RoundShift(-7, 1));
    }

    [Fact]
    public void RoundDivIsRoundHalfEven()
    {
        var rng = new Random(16);
        for (int i = 0; i < 100000; i++)
        {
            long n = RandomLong(rng) >> 1;
            long d = 1 + (rng.NextInt64(long.MaxValue >> 2) >> rng.Next(0, 61));
            Assert.Equal(RoundHalfEven(n, d), (BigInteger)IntegerArithmetic.RoundDiv(n, d));
        }
        Assert.Equal(2, IntegerArithmetic.RoundDiv(5, 2));
        Assert.Equal(-2, IntegerArithmetic.RoundDiv(-5, 2));
        Assert.Equal(-4, IntegerArithmetic.RoundDiv(-7, 2));
        Assert.Equal(-3, IntegerArithmetic.RoundDiv(-8, 3)); // -2.67
    }

    /// <summary>Exact: r = isqrt(n) iff r^2 &lt;= n &lt; (r+1)^2, checked in BigInteger, over random, square and near-square inputs.</summary>
    [Fact]
    public void IsqrtIsTheExactFloorSquareRoot()
    {
        var rng = new Random(17);
        var inputs = new List<long> { 0, 1, 2, 3, 4, 5, 8, 9, 15, 16, 17, long.MaxValue, long.MaxValue - 1, (1L << 62) - 1, 1L << 62 };
        for (int i = 0; i < 100000; i++) inputs.Add(rng.NextInt64(long.MaxValue) >> rng.Next(0, 63));
        for (long r = 1; r < 3037000499; r = r * 3 + 1) { inputs.Add(r * r); inputs.Add(r * r - 1); inputs.Add(r * r + 1); }
        inputs.Add(3037000499L * 3037000499L); // the largest square below 2^63
        foreach (long n in inputs)
        {
            BigInteger r = IntegerArithmetic.Isqrt(n);
            Assert.True(r * r <= n && (r + 1) * (r + 1) > n, $"isqrt({n}) = {r}");
        }
    }

    [Fact]
    public void BitLengthMatchesLeadingZeroCount()
    {
        var rng = new Random(18);
        for (int i = 0; i < 100000; i++)
        {
            long v = rng.NextInt64(long.MaxValue) >> rng.Next(0, 63);
            Assert.Equal(64 - BitOperations.LeadingZeroCount((ulong)v), IntegerArithmetic.BitLength(v));
        }
        Assert.Equal(0, IntegerArithmetic.BitLength(0));
        Assert.Equal(63, IntegerArithmetic.BitLength(long.MaxValue));
    }

    /// <summary>
    /// The dynamic scale: m in [128, 256), 127 m / 2^e covers amax * 2^-16 (no code clips), and m - 1 would not (the
    /// tightest 8-bit multiplier at that exponent); codes are RNE(x / s) exactly (BigInteger rational rounding).
    /// </summary>
    [Fact]
    public void ActivationScaleIsTheTightestCoveringDyadicAndCodesAreExactRne()
    {
        var rng = new Random(19);
        for (int i = 0; i < 20000; i++)
        {
            long amax = i < 64 ? 1 + i : 1 + (rng.NextInt64(int.MaxValue) >> rng.Next(0, 31));
            DyadicQuantization.ActivationScale(amax, out int m, out int e);
            Assert.InRange(m, 128, 255);
            // 127 m / 2^e >= amax / 2^16  <=>  127 m 2^16 >= amax 2^e (exponents may be negative: compare scaled by 2^64)
            BigInteger Scaled(BigInteger v, int power) => v << (power + 64);
            Assert.True(Scaled(127 * (BigInteger)m, 16) >= Scaled(amax, e), $"amax {amax}: scale {m}/2^{e} clips");
            Assert.True(Scaled(127 * (BigInteger)(m - 1), 16) < Scaled(amax, e), $"amax {amax}: {m - 1}/2^{e} would also cover");
            long x = rng.NextInt64(-amax, amax + 1);
            // code = RNE(x / (m / 2^e) * 2^-16) = RNE(x 2^e / (m 2^16)), both scaled by 2^64 to keep exponents whole
            var expected = RoundHalfEven((BigInteger)x << (e + 64), (BigInteger)m << (16 + 64));
            Assert.Equal(expected, (BigInteger)DyadicQuantization.Quantize(x, m, e));
        }
        DyadicQuantization.ActivationScale(0, out int zm, out _);
        Assert.Equal(0, zm);
        Assert.Equal(0, DyadicQuantization.Quantize(12345, 0, 0));
    }

    /// <summary>The DI-MatMul requantisation is the exactly rounded acc * m_x * m_w / 2^(e_x + e_w - 16), saturated.</summary>
    [Fact]
    public void RequantizeIsTheExactlyRoundedProduct()
    {
        var rng = new Random(20);
        for (int i = 0; i < 50000; i++)
        {
            long acc = rng.NextInt64(-(1L << 28), 1L << 28);
            int mx = rng.Next(128, 256), ex = rng.Next(0, 40), mw = rng.Next(1 << 15, 1 << 16), ew = rng.Next(5, 40);
            var exact = RoundHalfEven((BigInteger)acc * mx * mw << 64, BigInteger.One << (ex + ew - 16 + 64));
            var saturated = BigInteger.Max(int.MinValue, BigInteger.Min(int.MaxValue, exact));
            Assert.Equal(saturated, (BigInteger)DyadicQuantization.Requantize(acc, mx, ex, mw, ew));
        }
    }

    /// <summary>
    /// Integer exp vs Math.Exp over [-20, 0] at 2^-16 (every 2^-16 step of [-1, 0] and random points elsewhere).
    /// Bound: |E - 2^30 e^x| &lt;= 2^30 e^x * 3.9e-6 + 3, where 3.9e-6 covers the quartic's relative error (3.83e-6 on a
    /// 10^5-point sweep of [0, 1]) plus the 2^-31 rounding of u (relative ln2 * 2^-31 = 3e-10) and the ln2 step error
    /// (2^-33 / ln2 per power of two, 28 at most: 4e-9); 3 units = four Horner roundings of half a unit (times u &lt;= 1,
    /// on a p &gt;= 2^29, shifted down with the result) plus the final shift's half unit. Below -20 the clip holds e^-20.
    /// </summary>
    [Fact]
    public void ExpIsWithinItsBound()
    {
        var rng = new Random(21);
        var inputs = Enumerable.Range(0, 65537).Select(i => (long)-i).ToList();
        for (int i = 0; i < 200000; i++) inputs.Add(-rng.NextInt64(20L << 16));
        inputs.Add(-(20L << 16));
        double worstRelative = 0;
        foreach (long x in inputs)
        {
            double exact = Math.Exp(x * Unit) * (1 << 30);
            long e = IntegerExp.Exp(x, 16);
            Assert.True(Math.Abs(e - exact) <= exact * 3.9e-6 + 3, $"exp({x * Unit}) = {e} vs {exact}");
            if (exact > 1 << 24) worstRelative = Math.Max(worstRelative, Math.Abs(e - exact) / exact);
        }
        output.WriteLine($"integer exp: worst relative error {worstRelative:E2} (values above 2^24 units, where the 3-unit term is below 2e-7)");
        Assert.Equal(1L << 30, IntegerExp.Exp(0, 16));
        Assert.Equal(IntegerExp.Exp(-(20L << 16), 16), IntegerExp.Exp(-(1000L << 16), 16));
        Assert.Equal(IntegerExp.Exp(-(20L << 16), 16), IntegerExp.Exp(long.MinValue / 2, 16));
        // the input scale is a parameter: the same real x at 2^-24 and 2^-16 agree within the bound
        Assert.InRange(IntegerExp.Exp(-(3L << 24), 24) - IntegerExp.Exp(-(3L << 16), 16), -3, 3);
    }

    /// <summary>
    /// Softmax rows vs float64: each probability within 0.5 + 2^16 * 1e-5 units of 2^16 softmax (0.5 for the final
    /// rounding; each exp within 3.9e-6 relative, the ratio e_i / sum within twice that, plus the clip's e^-20 share),
    /// and the sum within n/2 of 2^16 (n roundings of half a unit each of an exact partition of 2^16).
    /// </summary>
    [Fact]
    public void SoftmaxRowsAreWithinBoundAndSumToOne()
    {
        var rng = new Random(22);
        foreach (int n in new[] { 1, 2, 7, 64, 300, 2048 })
            for (int trial = 0; trial < 20; trial++)
            {
                double spread = trial % 4 switch { 0 => 0.5, 1 => 4, 2 => 30, _ => 200 };
                var scores = new long[n];
                for (int i = 0; i < n; i++) scores[i] = (long)((rng.NextDouble() - 0.5) * spread * 65536);
                var probabilities = new int[n];
                IntegerExp.Softmax(scores, 16, new long[n], probabilities);
                double max = scores.Max() * Unit;
                double sum = scores.Sum(s => Math.Exp(s * Unit - max));
                for (int i = 0; i < n; i++)
                {
                    double exact = Math.Exp(scores[i] * Unit - max) / sum * 65536;
                    Assert.True(Math.Abs(probabilities[i] - exact) <= 0.5 + 65536 * 1e-5, $"n {n} spread {spread}: p[{i}] = {probabilities[i]} vs {exact}");
                }
                Assert.InRange(probabilities.Sum(), 65536 - n / 2.0, 65536 + n / 2.0);
            }
    }

    /// <summary>
    /// Sigmoid and SiLU vs float64 over [-40, 40]: sigma within 1.1e-6 (the exp's 3.9e-6 relative error scaled by
    /// sigma(1 - sigma) &lt;= 1/4, the division's half unit of 2^-30, and e^-20 = 2.1e-9 from the clip beyond |x| = 20);
    /// silu within |x| 1.1e-6 + 2^-16 (sigma's error times |x|, and the two roundings to 2^-30 and 2^-16).
    /// SwiGLU: silu(g) * up within |up| (|g| 1.1e-6 + 2^-16) + 2^-16.
    /// </summary>
    [Fact]
    public void SigmoidSiluAndSwiGluAreWithinTheirBounds()
    {
        var rng = new Random(23);
        for (int i = 0; i < 200000; i++)
        {
            long x = rng.NextInt64(-(40L << 16), 40L << 16) >> rng.Next(0, 8);
            double real = x * Unit;
            double sigma = 1 / (1 + Math.Exp(-real));
            Assert.True(Math.Abs(IntegerExp.Sigmoid(x) / (double)(1 << 30) - sigma) <= 1.1e-6, $"sigmoid({real})");
            Assert.True(Math.Abs(IntegerExp.Silu(x) * Unit - real * sigma) <= Math.Abs(real) * 1.1e-6 + Unit, $"silu({real})");
            int up = rng.Next(-(8 << 16), 8 << 16);
            double swiglu = real * sigma * up * Unit;
            Assert.True(Math.Abs(IntegerExp.SwiGlu((int)x, up) * Unit - swiglu) <= Math.Abs(up * Unit) * (Math.Abs(real) * 1.1e-6 + Unit) + Unit, $"swiglu({real}, {up * Unit})");
        }
        Assert.Equal(1L << 29, IntegerExp.Sigmoid(0));
        Assert.Equal(0, IntegerExp.Silu(0));
    }

    /// <summary>
    /// Integer RMSNorm rows vs float64 gamma * x / sqrt(mean(x^2) + eps), rows of every magnitude (tiny rows where eps
    /// dominates, huge rows near the int32 limit, one-hot rows, zero rows). Bound per element, from the steps:
    /// y = x/rms has error &lt;= |y| 2^-20 + 2^-17 (prescale RNE at 2^-23 of the row max, the root floored with 8+
    /// extra bits, one RNE division to 2^-16); gamma's int16 code is off by at most max|gamma| 2^-15; the final RNE
    /// adds 2^-17. So |err| &lt;= |gamma| (|y| 2^-20 + 2^-17) + |y| max|gamma| 2^-15 + 2^-17.
    /// </summary>
    [Fact]
    public void RmsNormRowsAreWithinTheirBound()
    {
        var rng = new Random(24);
        var eps = DyadicScale.FromReal(1e-5, 30);
        foreach (int n in new[] { 1, 16, 64, 192, 4096 })
            for (int trial = 0; trial < 24; trial++)
            {
                double magnitude = trial % 6 switch { 0 => 1e-4, 1 => 0.01, 2 => 1, 3 => 100, 4 => 20000, _ => 0 };
                var x = new int[n];
                for (int i = 0; i < n; i++) x[i] = (int)Math.Clamp((rng.NextDouble() * 2 - 1) * magnitude * 65536, int.MinValue + 1, int.MaxValue);
                if (trial % 12 == 5) x[rng.Next(n)] = 65536 * 3; // one-hot
                double gammaScale = trial % 3 == 0 ? 0.05 : trial % 3 == 1 ? 1 : 30;
                var gammaReal = Enumerable.Range(0, n).Select(_ => (rng.NextDouble() * 2 - 1) * gammaScale).ToArray();
                var gamma = FixedVector.NormWeight(gammaReal);
                var output = new int[n];
                IntegerRmsNorm.Row(x, gamma.Codes, gamma.FracBits, eps.Multiplier, eps.Exponent, output);
                double ms = x.Sum(v => v * Unit * (v * Unit)) / n;
                double inv = 1 / Math.Sqrt(ms + eps.ToDouble());
                double maxGamma = gammaReal.Max(Math.Abs);
                for (int i = 0; i < n; i++)
                {
                    double y = x[i] * Unit * inv;
                    double exact = gammaReal[i] * y;
                    double bound = Math.Abs(gammaReal[i]) * (Math.Abs(y) * Math.ScaleB(1, -20) + Math.ScaleB(1, -17)) + Math.Abs(y) * maxGamma * Math.ScaleB(1, -15) + Math.ScaleB(1, -17);
                    double expected = Math.Clamp(exact, int.MinValue * Unit, int.MaxValue * Unit);
                    Assert.True(Math.Abs(output[i] * Unit - expected) <= bound, $"n {n} magnitude {magnitude}: y[{i}] = {output[i] * Unit} vs {exact} (bound {bound})");
                }
            }
    }

    /// <summary>
    /// RoPE rotation vs float64 with the table entry: the exact int64 sums rounded once, so within half a unit of
    /// 2^-16 of (a cos - b sin, b cos + a sin) computed from the same integer cos/sin.
    /// </summary>
    [Fact]
    public void RotateIsTheOnceRoundedExactSum()
    {
        var rng = new Random(25);
        for (int i = 0; i < 100000; i++)
        {
            long a = rng.Next(int.MinValue / 4, int.MaxValue / 4), b = rng.Next(int.MinValue / 4, int.MaxValue / 4);
            double angle = rng.NextDouble() * 2 * Math.PI;
            long cos = (long)Math.Round(Math.Cos(angle) * (1 << 30)), sin = (long)Math.Round(Math.Sin(angle) * (1 << 30));
            IntegerAttention.Rotate(a, b, cos, sin, out int ra, out int rb);
            Assert.Equal(RoundHalfEven((BigInteger)a * cos - (BigInteger)b * sin, BigInteger.One << 30), (BigInteger)ra);
            Assert.Equal(RoundHalfEven((BigInteger)b * cos + (BigInteger)a * sin, BigInteger.One << 30), (BigInteger)rb);
        }
    }

    /// <summary>The load-time dyadic: m has exactly the asked bits and m / 2^e is within 2^-bits (relative) of the value.</summary>
    [Fact]
    public void DyadicFromRealIsWithinItsBits()
    {
        var rng = new Random(26);
        for (int i = 0; i < 100000; i++)
        {
            double value = Math.Exp(rng.NextDouble() * 60 - 40);
            var d = DyadicScale.FromReal(value, 16);
            Assert.InRange(d.Multiplier, 1 << 15, (1 << 16) - 1);
            Assert.True(Math.Abs(d.ToDouble() - value) <= value * Math.ScaleB(1, -16), $"{value}");
        }
        Assert.Equal(new DyadicScale(1 << 15, 15), DyadicScale.FromReal(1, 16));
        Assert.Equal(new DyadicScale(0, 0), DyadicScale.FromReal(0, 16));
        Assert.Throws<ArgumentOutOfRangeException>(() => DyadicScale.FromReal(double.NaN, 16));
    }
}
