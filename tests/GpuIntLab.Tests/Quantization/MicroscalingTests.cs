using System.Numerics;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Formats.LowBit;
using Xunit;

namespace GpuIntLab.Tests.Quantization;

/// <summary>
/// E8M0 and the MX scale rules over all 65,536 BF16 amax patterns against the rules' definitions; MX and NVFP4 block
/// quantization against references written here from the definitions; exact block dot products against BigInteger sums.
/// </summary>
public class MicroscalingTests
{
    /// <summary>Largest k with 2^k &lt;= a (a finite, > 0), by search: the definition of floor(log2 a).</summary>
    private static int FloorLog2BySearch(double a)
    {
        int low = -1100, high = 1100; // invariant: 2^low <= a < 2^high
        while (high - low > 1)
        {
            int middle = (low + high) / 2;
            if (Math.ScaleB(1.0, middle) <= a) low = middle; else high = middle;
        }
        return low;
    }

    private static int ReferenceScaleExponent(double amax, MiniFloatFormat element, MxScaleRule rule) =>
        ReferenceScaleExponent(amax, ReferenceFloatFormatMax(element), rule);

    private static int ReferenceScaleExponent(double amax, double vmax, MxScaleRule rule)
    {
        // Returns the unbiased exponent, or int.MaxValue for the NaN byte and int.MaxValue - 1 for rceil's 0xFE of infinity.
        if (double.IsNaN(amax)) return int.MaxValue;
        if (double.IsInfinity(amax)) return rule == MxScaleRule.OcpFloor ? int.MaxValue : int.MaxValue - 1;
        if (rule == MxScaleRule.OcpFloor)
        {
            // Spec: floor(log2 amax) - emax_elem, clamped to [-127, 127]; amax = 0 has floor -infinity.
            int emax = FloorLog2BySearch(vmax);
            return amax == 0 ? -127 : Math.Clamp(FloorLog2BySearch(amax) - emax, -127, 127);
        }
        // Rceil: the smallest power of two 2^k >= amax / vmax, k clamped to [-127, 127] (exact: vmax * 2^k is exact).
        if (vmax * Math.ScaleB(1.0, -127) >= amax) return -127;
        int below = -127, atOrAbove = 128; // invariant: vmax 2^below < amax <= vmax 2^atOrAbove
        while (atOrAbove - below > 1)
        {
            int middle = (below + atOrAbove) / 2;
            if (vmax * Math.ScaleB(1.0, middle) >= amax) atOrAbove = middle; else below = middle;
        }
        return Math.Min(atOrAbove, 127);
    }

    private static double ReferenceFloatFormatMax(MiniFloatFormat element) => LowBitElementTests.ReferenceOf(element).MaxValue;

    [Fact]
    public void Quantization_Mx_E8M0DecodesAsDefined()
    {
        for (int code = 0; code < 255; code++)
            Assert.Equal(Math.Pow(2, code - 127), (double)E8M0.Decode((byte)code));
        Assert.True(float.IsNaN(E8M0.Decode(0xFF)));
        Assert.Equal(0x0040_0000u, BitConverter.SingleToUInt32Bits(E8M0.Decode(0))); // 2^-127 is a subnormal, not zero
        Assert.Equal("ocp-floor", MxScaleRule.OcpFloor.Name());
        Assert.Equal(MxScaleRule.Rceil, MxScaleRuleNames.Parse("rceil"));
        Assert.Contains("ocp-floor", Assert.Throws<ArgumentException>(() => MxScaleRuleNames.Parse("floor")).Message);
    }

    [Fact]
    public void Quantization_Mx_ScaleRulesOverAllBf16Amax()
    {
        foreach (var element in MiniFloatFormat.All)
            foreach (var rule in new[] { MxScaleRule.OcpFloor, MxScaleRule.Rceil })
            {
                double vmax = ReferenceFloatFormatMax(element); // the definition model's largest value, not the codec's
                for (int pattern = 0; pattern < 65536; pattern++)
                {
                    float amax = BitConverter.UInt32BitsToSingle((uint)pattern << 16);
                    if (float.IsNegative(amax) && !float.IsNaN(amax)) amax = -amax; // the rule takes a magnitude; -0 -> 0 etc.
                    int expected = ReferenceScaleExponent(amax, vmax, rule);
                    byte got = E8M0.ScaleFor(amax, element, rule);
                    byte expectedByte = expected switch { int.MaxValue => 0xFF, int.MaxValue - 1 => 0xFE, _ => (byte)(expected + 127) };
                    if (got != expectedByte)
                        Assert.Fail($"{element} {rule.Name()} amax {amax:R} (0x{pattern:X4}): expected 0x{expectedByte:X2}, got 0x{got:X2}");
                    if (float.IsFinite(amax) && amax > 0 && got != 0xFF)
                    {
                        double x = Math.ScaleB(1.0, got - 127), ratio = amax / x;
                        if (rule == MxScaleRule.Rceil && got > 0) Assert.True(ratio <= element.MaxNormal, "rceil never saturates");
                        if (rule == MxScaleRule.OcpFloor && got > 0) Assert.True(ratio >= Math.ScaleB(1.0, element.EmaxElement) && ratio < Math.ScaleB(1.0, element.EmaxElement + 1));
                    }
                }
            }
        // The float-log2 pitfall: amax = 2^k (1 - 2^-24) has floor(log2) = k - 1.
        float justBelowOne = BitConverter.UInt32BitsToSingle(0x3F7F_FFFF);
        Assert.Equal(127 - 1 - 2, E8M0.ScaleFor(justBelowOne, MiniFloatFormat.E2M1, MxScaleRule.OcpFloor));
        Assert.Throws<ArgumentOutOfRangeException>(() => E8M0.ScaleFor(-1f, MiniFloatFormat.E2M1, MxScaleRule.Rceil));
    }

    private static float[] TestVector(int length, int seed)
    {
        var random = new Random(seed);
        var v = new float[length];
        for (int i = 0; i < length; i++) v[i] = (float)(random.NextDouble() * 2 - 1) * MathF.Pow(2, random.Next(-6, 6));
        // Blocks with special structure: an outlier, all zeros, an exact power of two as amax, a tiny block.
        if (length >= 128)
        {
            v[5] = 300f;
            for (int i = 32; i < 64; i++) v[i] = 0f;
            for (int i = 64; i < 96; i++) v[i] = i % 2 == 0 ? 0.25f : -0.125f;
            for (int i = 96; i < 128; i++) v[i] *= 1e-38f;
        }
        return v;
    }

    [Fact]
    public void Quantization_Mx_BlocksMatchTheDefinition()
    {
        foreach (var format in MxFormat.All)
            foreach (var rule in new[] { MxScaleRule.OcpFloor, MxScaleRule.Rceil })
                for (int seed = 0; seed < 4; seed++)
                {
                    float[] values = TestVector(32 * 6 + 7, seed); // a short last block as well
                    var q = MxCodec.Quantize(values, format, rule);
                    var reference = LowBitElementTests.ReferenceOf(format.Element);
                    Assert.Equal(7, q.BlockCount);
                    var decoded = new float[values.Length];
                    q.Dequantize(decoded);
                    for (int i = 0; i < values.Length; i++)
                    {
                        int block = i / 32;
                        double amax = 0;
                        for (int j = block * 32; j < Math.Min(values.Length, block * 32 + 32); j++) amax = Math.Max(amax, Math.Abs(values[j]));
                        int k = ReferenceScaleExponent(amax, format.Element, rule);
                        Assert.Equal(k + 127, q.Scales[block]);
                        // Element: nearest-even of v / 2^k in exact arithmetic (TransformerEngine's rceil byte-0 multiplier is 1).
                        double scaled = rule == MxScaleRule.Rceil && k == -127 ? values[i] : Math.ScaleB((double)values[i], -k);
                        int expected = reference.ExpectedMagnitude(Math.Abs(scaled)) | (double.IsNegative(scaled) ? format.Element.SignBit : 0);
                        Assert.True(expected == q.Codes[i], $"{format.Name} {rule.Name()} seed {seed} element {i}: expected 0x{expected:X2}, got 0x{q.Codes[i]:X2}");
                        double exact = q.ValueAt(i);
                        Assert.Equal(exact, (double)decoded[i]);
                        Assert.Equal(format.Element.Decode(q.Codes[i]) * Math.Pow(2, k), exact);
                    }
                }
        // A NaN makes the block's scale NaN and the block decodes as NaN; infinity: NaN under the spec's floor, 0xFE under rceil.
        float[] special = new float[64];
        special[3] = float.NaN;
        special[40] = float.PositiveInfinity;
        special[41] = 1f;
        var floor = MxCodec.Quantize(special, MxFormat.Mxfp4, MxScaleRule.OcpFloor);
        Assert.Equal([0xFF, 0xFF], floor.Scales);
        Assert.True(double.IsNaN(floor.ValueAt(0)) && double.IsNaN(floor.ValueAt(63)));
        var rceil = MxCodec.Quantize(special, MxFormat.Mxfp4, MxScaleRule.Rceil);
        Assert.Equal([0xFF, 0xFE], rceil.Scales);
        Assert.Equal(6.0 * Math.Pow(2, 127), rceil.ValueAt(40));
    }

    /// <summary>Exact value of a double as (BigInteger significand, exponent).</summary>
    private static (BigInteger Significand, int Exponent) Decompose(double value)
    {
        long bits = BitConverter.DoubleToInt64Bits(value);
        int field = (int)((bits >> 52) & 0x7FF);
        long mantissa = bits & 0xF_FFFF_FFFF_FFFF;
        if (field != 0) mantissa |= 1L << 52; else field = 1;
        BigInteger significand = value < 0 ? -mantissa : mantissa;
        return (significand, field - 1075);
    }

    /// <summary>Σ a_i b_i of doubles exactly, at exponent -2200.</summary>
    private static ExactDyadic ExactSum(IEnumerable<(double A, double B)> products)
    {
        BigInteger total = 0;
        foreach (var (a, b) in products)
        {
            var (sa, ea) = Decompose(a);
            var (sb, eb) = Decompose(b);
            total += (sa * sb) << (ea + eb + 2200);
        }
        return new ExactDyadic(total, -2200, false);
    }

    [Fact]
    public void Quantization_Mx_ExactDotMatchesBigIntegerSum()
    {
        var pairs = new[] {
            (MxFormat.Mxfp4, MxFormat.Mxfp4), (MxFormat.Mxfp6E2M3, MxFormat.Mxfp6E3M2), (MxFormat.Mxfp8E4M3, MxFormat.Mxfp8E5M2),
            (MxFormat.Mxfp8E5M2, MxFormat.Mxfp8E5M2), (MxFormat.Mxfp8E4M3, MxFormat.Mxfp4) };
        int seed = 100;
        foreach (var (fa, fb) in pairs)
            foreach (var rule in new[] { MxScaleRule.OcpFloor, MxScaleRule.Rceil })
            {
                float[] x = TestVector(32 * 8 + 5, seed++), y = TestVector(32 * 8 + 5, seed++);
                y[200] = 3e38f; // a large scale: products far outside float range stay exact
                var a = MxCodec.Quantize(x, fa, rule);
                var b = MxCodec.Quantize(y, fb, rule);
                ExactDyadic got = MxCodec.ExactDot(a, b);
                ExactDyadic expected = ExactSum(Enumerable.Range(0, x.Length).Select(i => (a.ValueAt(i), b.ValueAt(i))));
                Assert.True(got.ValueEquals(expected), $"{fa.Name} x {fb.Name} {rule.Name()}");
                Assert.Equal(expected.ToDouble(), got.ToDouble());
            }
        var nan = MxCodec.Quantize([float.NaN, 1f], MxFormat.Mxfp4, MxScaleRule.Rceil);
        Assert.True(MxCodec.ExactDot(nan, nan).IsNaN);
        Assert.Throws<ArgumentException>(() => MxCodec.ExactDot(nan, MxCodec.Quantize([1f], MxFormat.Mxfp4, MxScaleRule.Rceil)));
    }

    [Fact]
    public void Quantization_Mx_ExactDyadicRoundsOnceToNearestEven()
    {
        BigInteger two53 = BigInteger.One << 53;
        Assert.Equal(9007199254740992.0, new ExactDyadic(two53 + 1, 0, false).ToDouble());   // tie -> even
        Assert.Equal(9007199254740996.0, new ExactDyadic(two53 + 3, 0, false).ToDouble());   // tie -> even (up)
        Assert.Equal(-9007199254740994.0, new ExactDyadic(-(two53 * 4 + 5), -2, false).ToDouble()); // 2^53 + 1.25 -> 2^53 + 2
        Assert.Equal(0.75, new ExactDyadic(3, -2, false).ToDouble());
        Assert.True(new ExactDyadic(6, -1, false).ValueEquals(new ExactDyadic(3, 0, false)));
    }

    // ---- NVFP4 (TransformerEngine), reference in float32 arithmetic written as correctly rounded double operations ----

    private static float F(double value) => (float)value; // float32 op == double op then one rounding (53 >= 2*24+2)

    private static (byte[] Codes, byte[] Scales, float GlobalEncode) ReferenceNvfp4(float[] values, float tensorAmax)
    {
        var e4m3 = LowBitElementTests.ReferenceOf(MiniFloatFormat.E4M3);
        var e2m1 = LowBitElementTests.ReferenceOf(MiniFloatFormat.E2M1);
        float globalEncode = F(2688.0 / tensorAmax);
        if (float.IsInfinity(globalEncode)) globalEncode = float.MaxValue;
        if (tensorAmax == 0 || globalEncode == 0) globalEncode = 1f;
        float sixth = F(1.0 / 6.0), factor = F((double)globalEncode * sixth), globalDecode = F(1.0 / globalEncode);
        var codes = new byte[values.Length];
        var scales = new byte[(values.Length + 15) / 16];
        for (int b = 0; b < scales.Length; b++)
        {
            float amax = 0;
            for (int i = b * 16; i < Math.Min(values.Length, b * 16 + 16); i++) amax = Math.Max(amax, Math.Abs(values[i]));
            float decodeScale = F((double)amax * factor);
            scales[b] = (byte)e4m3.ExpectedMagnitude(decodeScale);
            double scaleValue = ReferenceFloatFormat.Value(scales[b] >> 3, scales[b] & 7, 7, 3);
            float multiplier = F(1.0 / F(scaleValue * globalDecode));
            if (float.IsInfinity(multiplier)) multiplier = float.MaxValue;
            for (int i = b * 16; i < Math.Min(values.Length, b * 16 + 16); i++)
            {
                float scaled = F((double)values[i] * multiplier);
                codes[i] = (byte)(e2m1.ExpectedMagnitude(Math.Abs((double)scaled)) | (float.IsNegative(scaled) ? 8 : 0));
            }
        }
        return (codes, scales, globalEncode);
    }

    [Fact]
    public void Quantization_Nvfp4_MatchesTransformerEngineDefinition()
    {
        for (int seed = 0; seed < 6; seed++)
        {
            float[] values = TestVector(16 * 12 + 3, 200 + seed);
            if (seed == 1) for (int i = 16; i < 32; i++) values[i] = 5e-4f * (i - 20); // block amax * S_enc / 6 < 2^-6: a subnormal E4M3 scale
            if (seed == 2) for (int i = 0; i < values.Length; i++) values[i] *= 1e-30f;
            float tensorAmax = Nvfp4Codec.Amax(values);
            var q = Nvfp4Codec.Quantize(values, Nvfp4Codec.GlobalEncodeScale(tensorAmax));
            var (codes, scales, globalEncode) = ReferenceNvfp4(values, tensorAmax);
            Assert.Equal(globalEncode, q.GlobalEncodeScale);
            Assert.Equal(scales, q.BlockScales);
            Assert.Equal(codes, q.Codes);
            if (seed == 1) Assert.Contains(q.BlockScales, s => s is > 0 and < 8); // a subnormal E4M3 scale was exercised

            // Decoded error, for blocks with a normal E4M3 scale: at most half the widest E2M1 step (2, between 4 and 6)
            // at the block's decode scale; the E4M3 rounding of the scale (2^-4 relative) only moves the top element
            // up to 6.375 steps, which saturates within that bound.
            var decoded = new float[values.Length];
            q.Dequantize(decoded);
            for (int i = 0; i < values.Length; i++)
            {
                if (q.BlockScales[i / 16] < 8) continue;
                double decodeScale = q.BlockDecodeScale(i / 16);
                Assert.True(Math.Abs(decoded[i] - (double)values[i]) <= decodeScale * (1 + 1e-6), $"seed {seed} element {i}: {values[i]} -> {decoded[i]}");
            }
        }
        // All-zero tensor: global scale 1, zero scales, zero codes.
        var zeros = Nvfp4Codec.Quantize(new float[32], Nvfp4Codec.GlobalEncodeScale(0f));
        Assert.Equal(1f, zeros.GlobalEncodeScale);
        Assert.All(zeros.BlockScales, s => Assert.Equal(0, s));
        Assert.All(zeros.Codes, c => Assert.Equal(0, c));
        Assert.Contains("NaN", Assert.Throws<ArgumentException>(() => Nvfp4Codec.Amax([1f, float.NaN])).Message);
    }

    [Fact]
    public void Quantization_Nvfp4_ExactBlockDotMatchesBigIntegerSum()
    {
        float[] x = TestVector(16 * 10 + 9, 300), y = TestVector(16 * 10 + 9, 301);
        var a = Nvfp4Codec.Quantize(x, Nvfp4Codec.GlobalEncodeScale(Nvfp4Codec.Amax(x)));
        var b = Nvfp4Codec.Quantize(y, Nvfp4Codec.GlobalEncodeScale(Nvfp4Codec.Amax(y)));
        ExactDyadic got = Nvfp4Codec.ExactBlockDot(a, b);
        ExactDyadic expected = ExactSum(Enumerable.Range(0, x.Length).Select(i =>
            ((double)MiniFloatFormat.E2M1.Decode(a.Codes[i]) * E4M3.Decode(a.BlockScales[i / 16]),
             (double)MiniFloatFormat.E2M1.Decode(b.Codes[i]) * E4M3.Decode(b.BlockScales[i / 16]))));
        Assert.True(got.ValueEquals(expected));
    }
}
