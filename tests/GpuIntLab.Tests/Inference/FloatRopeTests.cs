using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Inference;

/// <summary>The float RoPE builder against a direct float64 computation of the conformance math and the exact table.</summary>
public class FloatRopeTests(ITestOutputHelper output)
{
    private static readonly RopeScaling Llama3 = RopeScaling.Create("llama3", 32, 1, 4, 8192);

    [Theory]
    [InlineData(16, 500000.0, 32.0, 1.0, 4.0, 8192)]
    [InlineData(64, 500000.0, 32.0, 1.0, 4.0, 8192)]
    [InlineData(128, 500000.0, 8.0, 1.0, 4.0, 8192)]
    [InlineData(64, 10000.0, 3.0, 1.1, 2.9, 1000)]
    public void InverseFrequencies_MatchTheConformanceMath(int headDim, double theta, double factor, double low, double high, int original)
    {
        var rope = new FloatRope(headDim, 1, theta, RopeScaling.Create("llama3", factor, low, high, original));
        for (int i = 0; i < headDim / 2; i++)
        {
            // conformance README: inv_freq = theta^(-2i/d); wavelength 2 pi / f below original/high: kept; above
            // original/low: f / factor; between: (1 - s) f / factor + s f, s = (original / wavelength - low) / (high - low)
            double f = Math.Pow(theta, -2.0 * i / headDim);
            double wavelength = 2 * Math.PI / f;
            double expected;
            if (wavelength < original / high)
            {
                expected = f;
            }
            else if (wavelength > original / low)
            {
                expected = f / factor;
            }
            else
            {
                double s = (original / wavelength - low) / (high - low);
                expected = ((1 - s) * f / factor) + (s * f);
            }

            // theta^(-x) here and 1 / theta^x there differ by an ulp or two, which the smooth band amplifies by
            // 1 + (factor - 1) low / (high - low) <= 11.4 (relative): 1e-14 covers that; a slip in the formula
            // (order, factor, s) moves a smooth pair by far more (its two ends differ by the factor)
            Assert.True(Math.Abs(rope.InverseFrequency(i) - expected) <= 1e-14 * expected, $"pair {i}: {rope.InverseFrequency(i):R} vs {expected:R}");
        }
    }

    [Fact]
    public void Llama32_WorkedValues()
    {
        // model-families.md 1.3: pair 15 2.1311195e-3 -> 1.2905479e-3, pair 31 3.0138582e-6 -> 9.4183067e-8 (8 digits)
        var plain = new FloatRope(64, 1, 500000);
        var scaled = new FloatRope(64, 1, 500000, Llama3);
        Assert.Equal(2.1311195e-3, plain.InverseFrequency(15), 1e-10);
        Assert.Equal(1.2905479e-3, scaled.InverseFrequency(15), 1e-10);
        Assert.Equal(3.0138582e-6, plain.InverseFrequency(31), 1e-13);
        Assert.Equal(9.4183067e-8, scaled.InverseFrequency(31), 1e-15);
        for (int i = 0; i < 15; i++)
        {
            Assert.Equal(plain.InverseFrequency(i), scaled.InverseFrequency(i));
        }

        for (int i = 18; i < 32; i++)
        {
            Assert.Equal(plain.InverseFrequency(i) / 32, scaled.InverseFrequency(i));
        }
    }

    [Fact]
    public void Rows_AreLibmOfTheFloat64Angle_AndFloat32IsThatRoundedOnce()
    {
        var rope = new FloatRope(16, 4096, 500000, Llama3);
        var cos32 = new float[4096 * 8];
        var sin32 = new float[4096 * 8];
        var cos64 = new double[4096 * 8];
        var sin64 = new double[4096 * 8];
        rope.CopyRows(0, 4096, cos32, sin32);
        rope.CopyRows(0, 4096, cos64, sin64);
        foreach (int pos in (int[])[0, 1, 63, 64, 299, 599, 4095])
        {
            for (int i = 0; i < 8; i++)
            {
                double angle = pos * rope.InverseFrequency(i);
                Assert.Equal(Math.Cos(angle), rope.Cos(pos)[i]);
                Assert.Equal(Math.Sin(angle), rope.Sin(pos)[i]);
                Assert.Equal((float)Math.Cos(angle), rope.CosF32(pos)[i]);
                Assert.Equal((float)Math.Sin(angle), rope.SinF32(pos)[i]);
                Assert.Equal(rope.Cos(pos)[i], cos64[(pos * 8) + i]);
                Assert.Equal(rope.Sin(pos)[i], sin64[(pos * 8) + i]);
                Assert.Equal(rope.CosF32(pos)[i], cos32[(pos * 8) + i]);
                Assert.Equal(rope.SinF32(pos)[i], sin32[(pos * 8) + i]);
            }
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => rope.Cos(4096).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => new FloatRope(15, 4, 10000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new FloatRope(16, 0, 10000));
        Assert.Throws<ArgumentOutOfRangeException>(() => new FloatRope(16, 4, 1.0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new FloatRope(16, 4, double.NaN));
        Assert.Throws<ArgumentException>(() => new FloatRope(16, 4, 10000, new RopeScaling("llama3", 32, 4, 1, 8192)));
    }

    [Theory]
    [InlineData(16)]
    [InlineData(64)]
    public void ExactTableAndFloatTable_AgreeWithin1e12(int headDim)
    {
        // the exact Q16.48 table and the float64 table of the conformance llama3 config at the reference's positions
        var exact = new RopeTable(headDim, 8192, 500000, Llama3);
        var rope = new FloatRope(headDim, 8192, 500000, Llama3);
        double max = 0;
        foreach (int pos in (int[])[0, 1, 299, 599, 8191])
        {
            for (int i = 0; i < headDim / 2; i++)
            {
                max = Math.Max(max, Math.Abs(Q48.ToDouble(exact.Cos(pos)[i]) - rope.Cos(pos)[i]));
                max = Math.Max(max, Math.Abs(Q48.ToDouble(exact.Sin(pos)[i]) - rope.Sin(pos)[i]));
            }
        }

        output.WriteLine($"head_dim {headDim}: max |exact - float64| over positions 0, 1, 299, 599, 8191 = {max:E2}");
        Assert.True(max <= 1e-12, $"exact and float tables differ by {max}");
    }
}
