using System.Numerics;
using GpuIntLab.Core.FixedPoint;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.FixedPoint;

public class SoftmaxTests(ITestOutputHelper output)
{
    private const long One = Q48.One;

    /// <summary>Correctly rounded softmax from the BigInteger reference.</summary>
    private static BigInteger[] Reference(long[] x)
    {
        long max = x.Max();
        var e = x.Select(v => BigRef.Exp(((BigInteger)v - max) << (BigRef.P - 48))).ToArray();
        BigInteger sum = e.Aggregate(BigInteger.Zero, (a, b) => a + b);
        return e.Select(v => BigRef.RoundDiv(v << 48, sum)).ToArray();
    }

    private static IEnumerable<(string Name, long[] X)> Cases()
    {
        var rng = new Random(31);
        long[] Random(int n, double range) => Enumerable.Range(0, n).Select(_ => (long)((rng.NextDouble() * 2 - 1) * range * One)).ToArray();
        yield return ("single", [123L << 40]);
        yield return ("pair equal", [One, One]);
        yield return ("pair", [0, One]);
        yield return ("7 in [-3,3]", Random(7, 3));
        yield return ("64 in [-20,20]", Random(64, 20));
        yield return ("1000 in [-10,10]", Random(1000, 10));
        yield return ("4096 in [-8,8] (attention row)", Random(4096, 8));
        yield return ("500 in [-100,100] (many underflow)", Random(500, 100));
        yield return ("all equal 256", Enumerable.Repeat(-(5L << 48), 256).ToArray());
        yield return ("dominant", [0, 0, 50L << 48, 0, 0]);
        yield return ("extremes", [long.MinValue, long.MaxValue, 0, long.MaxValue - 1, -1]);
        yield return ("near cut", [0, -(40L << 48), -(40L << 48) + 1, -(33L << 48), -(36L << 48)]);
    }

    [Fact]
    public void Softmax_WithinOneUlp_SumsToOne()
    {
        long maxErr = 0, maxSumErr = 0;
        foreach (var (name, x) in Cases())
        {
            var p = new long[x.Length];
            Q48.Softmax(x, p);
            BigInteger[] r = Reference(x);
            long sum = 0;
            for (int i = 0; i < x.Length; i++)
            {
                long err = (long)BigInteger.Abs(p[i] - r[i]);
                maxErr = Math.Max(maxErr, err);
                Assert.True(err <= 1, $"{name}: element {i}: {p[i]} vs {r[i]}");
                Assert.InRange(p[i], 0, One);
                sum += p[i];
            }

            // each element is within 1 ulp of the exact value, so the sum is within n ulp of One
            long sumErr = Math.Abs(sum - One);
            maxSumErr = Math.Max(maxSumErr, sumErr);
            Assert.True(sumErr <= x.Length, $"{name}: sum {sum} is {sumErr} ulp from One");
            output.WriteLine($"{name}: n = {x.Length}, sum - One = {sum - One} ulp");
        }

        output.WriteLine($"Softmax: max element error vs correctly rounded = {maxErr} ulp, max |sum - One| = {maxSumErr} ulp");
    }

    [Fact]
    public void Softmax_InvariantToAddingAConstant()
    {
        var rng = new Random(32);
        for (int t = 0; t < 50; t++)
        {
            var x = Enumerable.Range(0, 200).Select(_ => (long)((rng.NextDouble() * 2 - 1) * 30 * One)).ToArray();
            long c = (long)((rng.NextDouble() * 2 - 1) * 1000 * One);
            var p1 = new long[x.Length];
            var p2 = new long[x.Length];
            Q48.Softmax(x, p1);
            Q48.Softmax(x.Select(v => v + c).ToArray(), p2);
            Assert.Equal(p1, p2); // bit-identical: only differences x_i - max enter
        }
    }

    [Fact]
    public void Softmax_Float64CrossCheck_AndInPlace()
    {
        var rng = new Random(33);
        var x = Enumerable.Range(0, 300).Select(_ => (long)((rng.NextDouble() * 2 - 1) * 12 * One)).ToArray();
        var p = new long[x.Length];
        Q48.Softmax(x, p);
        double max = x.Max(Q48.ToDouble);
        double[] e = x.Select(v => Math.Exp(Q48.ToDouble(v) - max)).ToArray();
        double s = e.Sum();
        for (int i = 0; i < x.Length; i++)
        {
            // float64: a few double ulps of p <= 1, i.e. < 0.1 Q48 ulp
            Assert.True(Math.Abs(p[i] - (e[i] / s * One)) <= 1.1, $"element {i}");
        }

        var inPlace = (long[])x.Clone();
        Q48.Softmax(inPlace, inPlace);
        Assert.Equal(p, inPlace);
        Assert.Throws<ArgumentException>(() => Q48.Softmax(x, new long[3]));
        Q48.Softmax(ReadOnlySpan<long>.Empty, Span<long>.Empty);
    }
}
