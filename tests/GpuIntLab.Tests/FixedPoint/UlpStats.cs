using System.Numerics;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.FixedPoint;

/// <summary>Collects |result - correctly rounded reference| in Q16.48 ulps over a sweep.</summary>
internal sealed class UlpStats(string name)
{
    public int Count { get; private set; }

    public int NotCorrectlyRounded { get; private set; }

    public BigInteger MaxUlp { get; private set; }

    public string Worst { get; private set; } = "";

    public void Add(long input, long actual, BigInteger expected)
    {
        Count++;
        BigInteger d = BigInteger.Abs(actual - expected);
        if (!d.IsZero)
        {
            NotCorrectlyRounded++;
        }

        if (d > MaxUlp || Worst.Length == 0)
        {
            MaxUlp = d;
            Worst = $"input raw {input} ({input / (double)(1L << 48):R}): got {actual}, expected {expected}";
        }
    }

    public void Report(ITestOutputHelper output) =>
        output.WriteLine($"{name}: {Count} points, max |error| = {MaxUlp} ulp vs correctly rounded, {NotCorrectlyRounded} not correctly rounded; worst: {Worst}");

    public void AssertMax(int ulps) =>
        Xunit.Assert.True(MaxUlp <= ulps, $"{name}: max error {MaxUlp} ulp > {ulps}; worst {Worst}");
}

internal static class Sweep
{
    /// <summary>count evenly spaced raw values over [lo, hi] plus count random raw values (fixed seed).</summary>
    public static IEnumerable<long> Points(double lo, double hi, int evenCount, int randomCount, int seed)
    {
        long a = (long)(lo * (1L << 48)), b = (long)(hi * (1L << 48));
        for (int i = 0; i < evenCount; i++)
        {
            yield return a + (long)((((Int128)b - a) * i) / (evenCount - 1));
        }

        var rng = new Random(seed);
        for (int i = 0; i < randomCount; i++)
        {
            yield return a + (long)((b - (double)a) * rng.NextDouble());
        }
    }

    /// <summary>Random raw values whose magnitude is log-uniform over [2^lo, 2^hi) bits.</summary>
    public static IEnumerable<long> LogUniformPositive(int loBits, int hiBits, int count, int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            int bits = rng.Next(loBits, hiBits);
            long v = (1L << bits) | (rng.NextInt64() & ((1L << bits) - 1));
            yield return v;
        }
    }
}
