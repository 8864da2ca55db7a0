using GpuIntLab.Core.Formats;
using Xunit;

namespace GpuIntLab.Tests.Quantization;

/// <summary>FP16 helpers against an independent float64 model of IEEE binary16.</summary>
public class Fp16Tests
{
    /// <summary>Independent decoding of a half bit pattern from the format definition.</summary>
    private static double RefDecode(int bits)
    {
        int s = bits >> 15, e = (bits >> 10) & 31, m = bits & 1023;
        double mag;
        if (e == 31) mag = m == 0 ? double.PositiveInfinity : double.NaN;
        else if (e == 0) mag = Math.Pow(2, -14) * (m / 1024.0);
        else mag = Math.Pow(2, e - 15) * (1 + m / 1024.0);
        return s == 1 ? -mag : mag;
    }

    [Fact]
    public void Quantization_Fp16_All65536CodesDecodeAsDefined()
    {
        for (int b = 0; b < 65536; b++)
        {
            double expected = RefDecode(b);
            float f = Fp16.ToFloat((ushort)b);
            double d = Fp16.ToDouble((ushort)b);
            if (double.IsNaN(expected))
            {
                Assert.True(float.IsNaN(f) && double.IsNaN(d), $"0x{b:X4}");
                Assert.True(float.IsNaN(Fp16.ToFloat(Fp16.FromFloat(f))));
                continue;
            }
            Assert.Equal(expected, (double)f);
            Assert.Equal(expected, d);
            Assert.Equal(double.IsNegative(expected), float.IsNegative(f));
            // round trip from float and from double
            Assert.Equal((ushort)b, Fp16.FromFloat(f));
            Assert.Equal((ushort)b, Fp16.FromDouble(d));
        }
    }

    [Fact]
    public void Quantization_Fp16_EveryMidpointTiesToEvenAndNeighboursGoToNearer()
    {
        int pairs = 0;
        for (int c = 0; c < 0x7BFF; c++) // adjacent finite positive pairs (c, c+1); 0x7BFF = 65504
        {
            double lo = RefDecode(c), hi = RefDecode(c + 1);
            double mid = (lo + hi) / 2;               // 12 significant bits: exact in float and double
            float midF = (float)mid;
            Assert.Equal(mid, (double)midF);
            int even = (c & 1) == 0 ? c : c + 1;
            foreach (int sign in new[] { 0, 0x8000 })
            {
                float sg = sign == 0 ? 1f : -1f;
                Assert.Equal((ushort)(sign | even), Fp16.FromFloat(sg * midF));
                Assert.Equal((ushort)(sign | c), Fp16.FromFloat(sg * MathF.BitDecrement(midF)));
                Assert.Equal((ushort)(sign | (c + 1)), Fp16.FromFloat(sg * MathF.BitIncrement(midF)));
                Assert.Equal((ushort)(sign | even), Fp16.FromDouble(sg * mid));
                Assert.Equal((ushort)(sign | c), Fp16.FromDouble(sg * Math.BitDecrement(mid)));
                Assert.Equal((ushort)(sign | (c + 1)), Fp16.FromDouble(sg * Math.BitIncrement(mid)));
            }
            pairs++;
        }
        Assert.Equal(0x7BFF, pairs);
    }

    [Fact]
    public void Quantization_Fp16_OverflowUnderflowAndSpecials()
    {
        // 65520 = midpoint of 65504 and 2^16: ties to even -> overflow to infinity (IEEE RNE).
        Assert.Equal((ushort)0x7BFF, Fp16.FromFloat(MathF.BitDecrement(65520f)));
        Assert.Equal((ushort)0x7C00, Fp16.FromFloat(65520f));
        Assert.Equal((ushort)0xFC00, Fp16.FromFloat(-65520f));
        Assert.Equal((ushort)0x7C00, Fp16.FromFloat(float.PositiveInfinity));
        Assert.Equal((ushort)0xFC00, Fp16.FromFloat(float.NegativeInfinity));
        Assert.Equal((ushort)0x7BFF, Fp16.FromDouble(Math.BitDecrement(65520.0)));
        Assert.Equal((ushort)0x7C00, Fp16.FromDouble(65520.0));
        // 2^-25 = half the smallest subnormal: tie -> 0 (even); just above -> smallest subnormal
        float tiny = MathF.ScaleB(1f, -25);
        Assert.Equal((ushort)0x0000, Fp16.FromFloat(tiny));
        Assert.Equal((ushort)0x8000, Fp16.FromFloat(-tiny));
        Assert.Equal((ushort)0x0001, Fp16.FromFloat(MathF.BitIncrement(tiny)));
        Assert.Equal((ushort)0x8000, Fp16.FromFloat(-0f));
        Assert.True(float.IsNaN(Fp16.ToFloat(Fp16.FromFloat(float.NaN))));
        Assert.Equal(1f, Fp16.RoundToHalf(1f + MathF.ScaleB(1f, -11)));          // tie -> even (1.0)
        Assert.Equal(1f + MathF.ScaleB(1f, -9), Fp16.RoundToHalf(1f + 3 * MathF.ScaleB(1f, -11))); // tie -> even
    }

    [Fact]
    public void Quantization_Fp16_SpanOverloadsMatchScalar()
    {
        float[] v = [0f, -0f, 1.1f, -3.3f, 70000f, 1e-6f];
        var bits = new ushort[v.Length];
        Fp16.FromFloat(v, bits);
        var back = new float[v.Length];
        Fp16.ToFloat(bits, back);
        for (int i = 0; i < v.Length; i++)
        {
            Assert.Equal(Fp16.FromFloat(v[i]), bits[i]);
            Assert.Equal(Fp16.ToFloat(bits[i]), back[i]);
        }
    }
}
