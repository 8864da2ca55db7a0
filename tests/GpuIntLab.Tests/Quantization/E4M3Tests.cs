using GpuIntLab.Core.Formats;
using Xunit;

namespace GpuIntLab.Tests.Quantization;

/// <summary>
/// FP8 E4M3 codec against an independent float64 model of the format written here from its
/// definition (not from the codec's code).
/// </summary>
public class E4M3Tests
{
    /// <summary>Independent decoding: sign * 2^(e-7) * (1 + m/8), subnormal sign * 2^-6 * m/8, NaN at S.1111.111.</summary>
    internal static double RefDecode(int code)
    {
        int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
        if (e == 15 && m == 7) return double.NaN;
        double mag = e == 0 ? Math.Pow(2, -6) * (m / 8.0) : Math.Pow(2, e - 7) * (1 + m / 8.0);
        return s == 1 ? -mag : mag;
    }

    /// <summary>Independent encoder by exhaustive nearest search over the 127 non-negative finite values.</summary>
    private static byte RefEncode(double v)
    {
        if (double.IsNaN(v)) return 0x7F;
        int sign = double.IsNegative(v) ? 0x80 : 0;
        double a = Math.Abs(v);
        if (a > 448) return (byte)(sign | 0x7E); // SATFINITE: every finite or infinite overflow -> max
        int best = 0; double bestErr = double.PositiveInfinity;
        for (int c = 0; c <= 0x7E; c++)
        {
            double err = Math.Abs(RefDecode(c) - a);
            if (err < bestErr || (err == bestErr && (c & 1) == 0)) { best = c; bestErr = err; }
        }
        return (byte)(sign | best);
    }

    [Fact]
    public void Quantization_E4M3_AllCodesDecodeAsDefined()
    {
        for (int c = 0; c < 256; c++)
        {
            double expected = RefDecode(c);
            float got = E4M3.Decode((byte)c);
            if (double.IsNaN(expected))
            {
                Assert.True(float.IsNaN(got), $"code 0x{c:X2}");
                Assert.True(E4M3.IsNaN((byte)c));
            }
            else
            {
                Assert.Equal(expected, (double)got);
                Assert.False(E4M3.IsNaN((byte)c));
            }
            Assert.Equal(BitConverter.SingleToInt32Bits(got), BitConverter.SingleToInt32Bits(E4M3.DecodeTable[c]));
        }
        Assert.Equal(2, Enumerable.Range(0, 256).Count(c => float.IsNaN(E4M3.Decode((byte)c))));
        Assert.Equal(448.0, RefDecode(0x7E));
        Assert.Equal(-448.0, RefDecode(0xFE));
        Assert.True(float.IsNegative(E4M3.Decode(0x80)) && E4M3.Decode(0x80) == 0f);
        Assert.Equal(Math.Pow(2, -9), (double)E4M3.Decode(0x01));
        Assert.Equal(Math.Pow(2, -6), (double)E4M3.Decode(0x08));
    }

    [Fact]
    public void Quantization_E4M3_EveryFiniteCodeRoundTrips()
    {
        for (int c = 0; c < 256; c++)
        {
            if (c == 0x7F || c == 0xFF) continue;
            Assert.Equal((byte)c, E4M3.Encode(E4M3.Decode((byte)c)));
            Assert.Equal((byte)c, E4M3.Encode((double)E4M3.Decode((byte)c)));
        }
    }

    [Fact]
    public void Quantization_E4M3_EveryMidpointTiesToEvenAndNeighboursGoToNearer()
    {
        int checkedPairs = 0;
        for (int c = 0; c < 0x7E; c++)
        {
            double lo = RefDecode(c), hi = RefDecode(c + 1);
            Assert.True(hi > lo);
            double mid = (lo + hi) / 2;            // exact: 5 significant bits
            float midF = (float)mid;
            Assert.Equal(mid, (double)midF);       // representable in float too
            int even = (c & 1) == 0 ? c : c + 1;
            foreach (int sign in new[] { 0, 0x80 })
            {
                double sgn = sign == 0 ? 1 : -1;
                Assert.Equal((byte)(sign | even), E4M3.Encode(sgn * mid));
                Assert.Equal((byte)(sign | even), E4M3.Encode((float)(sgn * mid)));
                // +- 1 float ulp around the midpoint (magnitudes)
                Assert.Equal((byte)(sign | c), E4M3.Encode((float)sgn * MathF.BitDecrement(midF)));
                Assert.Equal((byte)(sign | (c + 1)), E4M3.Encode((float)sgn * MathF.BitIncrement(midF)));
                // +- 1 double ulp
                Assert.Equal((byte)(sign | c), E4M3.Encode(sgn * Math.BitDecrement(mid)));
                Assert.Equal((byte)(sign | (c + 1)), E4M3.Encode(sgn * Math.BitIncrement(mid)));
            }
            checkedPairs++;
        }
        Assert.Equal(126, checkedPairs);
    }

    [Fact]
    public void Quantization_E4M3_SaturatesLikeSatfinite()
    {
        // 448 + half ulp (ulp 32 at the top binade) = 464 is the midpoint 448|480; 448 is even.
        foreach (double v in new[] { 448.0, 449.0, 463.99, 464.0, Math.BitIncrement(464.0), 480.0, 1e9, 3.4e38, double.MaxValue, double.PositiveInfinity })
        {
            Assert.Equal(0x7E, E4M3.Encode(v));
            Assert.Equal(0xFE, E4M3.Encode(-v));
            float f = (float)v;
            Assert.Equal(0x7E, E4M3.Encode(f));
            Assert.Equal(0xFE, E4M3.Encode(-f));
        }
        Assert.Equal(0x7E, E4M3.Encode(float.PositiveInfinity));
        Assert.Equal(0xFE, E4M3.Encode(float.NegativeInfinity));
        Assert.Equal(0x7E, E4M3.Encode(float.MaxValue));
        // below the top: 432 = midpoint of 416 (0x7D) and 448 (0x7E) -> even 0x7E (m=6)
        Assert.Equal(0x7E, E4M3.Encode(432f));
        Assert.Equal(0x7D, E4M3.Encode(MathF.BitDecrement(432f)));
    }

    [Fact]
    public void Quantization_E4M3_NaNZeroAndSubnormalEdges()
    {
        Assert.Equal(0x7F, E4M3.Encode(float.NaN));
        Assert.Equal(0x7F, E4M3.Encode(-float.NaN));
        Assert.Equal(0x7F, E4M3.Encode(BitConverter.Int32BitsToSingle(unchecked((int)0xFFC00001))));
        Assert.Equal(0x7F, E4M3.Encode(double.NaN));
        Assert.Equal(0x7F, E4M3.Encode(-double.NaN));

        Assert.Equal(0x00, E4M3.Encode(0f));
        Assert.Equal(0x80, E4M3.Encode(-0f));
        Assert.Equal(0x80, E4M3.Encode(-0.0));

        float minSub = MathF.ScaleB(1f, -9);
        Assert.Equal(0x01, E4M3.Encode(minSub));
        Assert.Equal(0x81, E4M3.Encode(-minSub));
        Assert.Equal(0x00, E4M3.Encode(minSub / 2));            // tie between 0 and 2^-9 -> even (0)
        Assert.Equal(0x80, E4M3.Encode(-minSub / 2));
        Assert.Equal(0x01, E4M3.Encode(MathF.BitIncrement(minSub / 2)));
        Assert.Equal(0x00, E4M3.Encode(MathF.BitDecrement(minSub / 2)));
        Assert.Equal(0x00, E4M3.Encode(float.Epsilon));
        Assert.Equal(0x80, E4M3.Encode(-float.Epsilon));
        Assert.Equal(0x02, E4M3.Encode(3 * minSub / 2));        // tie 1|2 -> even 2
        Assert.Equal(0x08, E4M3.Encode(MathF.ScaleB(15f, -10))); // 7.5 * 2^-9: tie 7|8 -> 8 = min normal
    }

    [Fact]
    public void Quantization_E4M3_RandomFloatsMatchExhaustiveNearestSearch()
    {
        var rng = new Random(1234);
        for (int i = 0; i < 200_000; i++)
        {
            // Random bit patterns restricted to the interesting exponent range plus some outside it.
            int exp = rng.Next(127 - 14, 127 + 11);
            int bits = (rng.Next(2) << 31) | (exp << 23) | rng.Next(1 << 23);
            float f = BitConverter.Int32BitsToSingle(bits);
            Assert.Equal(RefEncode(f), E4M3.Encode(f));
        }
    }

    [Fact]
    public void Quantization_E4M3_SpanOverloadsMatchScalar()
    {
        float[] v = [0f, -0f, 1.1f, -3.3f, 500f, float.NaN, 0.001f];
        var codes = new byte[v.Length];
        E4M3.Encode(v, codes);
        var back = new float[v.Length];
        E4M3.Decode(codes, back);
        for (int i = 0; i < v.Length; i++)
        {
            Assert.Equal(E4M3.Encode(v[i]), codes[i]);
            Assert.Equal(BitConverter.SingleToInt32Bits(E4M3.Decode(codes[i])), BitConverter.SingleToInt32Bits(back[i]));
        }
    }
}
