using System.Diagnostics;
using System.Numerics;
using GpuIntLab.Core.FixedPoint;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.FixedPoint;

public class RopeTableTests(ITestOutputHelper output)
{
    private const long One = Q48.One;
    private static readonly int[] Positions = [0, 1, 2, 255, 1023, 2047];

    [Theory]
    [InlineData(16, 10000)]
    [InlineData(64, 10000)]
    [InlineData(16, 500000)]
    [InlineData(64, 500000)]
    [InlineData(64, 1000000)]
    public void Table_MatchesBigIntegerReference(int headDim, int theta)
    {
        var table = new RopeTable(headDim, 2048, theta);
        Assert.Equal(headDim, table.HeadDim);
        Assert.Equal(2048, table.MaxPositions);
        int half = headDim / 2;
        int p = BigRef.P;
        BigInteger lnTheta = BigRef.Ln(theta, 0);
        double maxAngleErr = 0, maxFreqRel = 0;
        var cs = new UlpStats($"RoPE cos d={headDim} theta={theta}");
        var ss = new UlpStats($"RoPE sin d={headDim} theta={theta}");
        for (int i = 0; i < half; i++)
        {
            // exact inverse frequency theta^(-2i/d) = exp(-(2i/d) ln theta)
            BigInteger inv = BigRef.Exp(-(lnTheta * (2 * i)) / headDim);
            BigInteger ours = (BigInteger)table.InverseFrequencyQ127(i) << (p - 127);
            maxFreqRel = Math.Max(maxFreqRel, Math.Abs((double)(ours - inv) / (double)inv));
            foreach (int pos in Positions)
            {
                BigInteger angle = inv * pos;
                BigInteger ourAngle = (BigInteger)table.AngleQ100(pos, i) << (p - 100);
                maxAngleErr = Math.Max(maxAngleErr, Math.Abs((double)(ourAngle - angle) / (double)BigRef.OneP));
                var (s, c) = BigRef.SinCos(angle);
                cs.Add(pos, table.Cos(pos)[i], BigRef.ToQ48(c));
                ss.Add(pos, table.Sin(pos)[i], BigRef.ToQ48(s));
            }
        }

        output.WriteLine($"d={headDim} theta={theta}: max inv_freq relative error {maxFreqRel:E2}, max angle error {maxAngleErr:E2} rad (positions up to 2047)");
        cs.Report(output);
        ss.Report(output);
        // derived bound: inv_freq relative error ~2^-80 (log ~2^-80 abs, exp ~2^-120) times angle <= 2047,
        // plus the Q.100 truncation of the angle: far below 2^-60 ~ 8.7e-19 rad.
        Assert.True(maxFreqRel < Math.Pow(2, -75), $"inv_freq relative error {maxFreqRel}");
        Assert.True(maxAngleErr < Math.Pow(2, -60), $"angle error {maxAngleErr}");
        cs.AssertMax(1);
        ss.AssertMax(1);
    }

    [Fact]
    public void AllPositions_AgreeWithFloat64AtSmallAngles_AndBuildFast()
    {
        // rows are computed on first use: time the table together with a pass over every 7th row (all blocks)
        var sw = Stopwatch.StartNew();
        var table = new RopeTable(64, 2048, 10000.0);
        for (int pos = 0; pos < 2048; pos += 7)
        {
            _ = table.Cos(pos);
        }

        sw.Stop();
        output.WriteLine($"RopeTable(64, 2048, 10000) built and every row computed in {sw.Elapsed.TotalMilliseconds:F1} ms");
        Assert.True(sw.Elapsed.TotalSeconds < 10, "table build too slow");

        // float64 reference: angle = pos * 10000^(-2i/64) in double has relative error ~1e-16, so compare
        // with tolerance 0.5 ulp + |angle| * 2^-50 in value (angle error carried into cos/sin).
        for (int pos = 0; pos < 2048; pos += 7)
        {
            var c = table.Cos(pos);
            var s = table.Sin(pos);
            Assert.Equal(32, c.Length);
            for (int i = 0; i < 32; i++)
            {
                double angle = pos * Math.Pow(10000.0, -2.0 * i / 64);
                double tol = 0.5 + (angle * 4 / 16) + 1; // angle * 2^-50 in Q48 ulps = angle / 4; generous
                Assert.True(Math.Abs(c[i] - (Math.Cos(angle) * One)) <= tol, $"cos pos {pos} i {i}");
                Assert.True(Math.Abs(s[i] - (Math.Sin(angle) * One)) <= tol, $"sin pos {pos} i {i}");
            }
        }

        Assert.Equal(One, table.Cos(0)[5]);
        Assert.Equal(0, table.Sin(0)[5]);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Cos(2048).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Sin(-1).Length);
    }

    [Fact]
    public void NonIntegerTheta_AndValidation()
    {
        // theta with a fractional part goes through the same exact decomposition
        var t = new RopeTable(8, 4, 10000.5);
        BigInteger lnTheta = BigRef.Ln(20001, 1);
        BigInteger inv = BigRef.Exp(-(lnTheta * 2) / 8);
        var (s, c) = BigRef.SinCos(inv * 3);
        Assert.InRange((long)(t.Cos(3)[1] - BigRef.ToQ48(c)), -1, 1);
        Assert.InRange((long)(t.Sin(3)[1] - BigRef.ToQ48(s)), -1, 1);

        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(7, 4, 10000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(0, 4, 10000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(8, 0, 10000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(8, 4, 1.0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(8, 4, 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(8, 4, -10000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(8, 4, double.NaN));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(8, 4, double.PositiveInfinity));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RopeTable(8, 4, 1e30));
        _ = new RopeTable(8, 4, 1.5);
    }
}
