using System.Diagnostics;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Formats.LowBit;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Quantization;

/// <summary>
/// Element encoders (E4M3, E5M2, E3M2, E2M3, E2M1, BF16) against <see cref="ReferenceFloatFormat"/>, a model built
/// from each format's definition: every code decoded by formula; in every float32 binade, every kept-mantissa prefix
/// with the dropped bits that decide rounding (every boundary and tie, both signs); the top binade exhaustively.
/// Set GPUINTLAB_EXHAUSTIVE=1 to sweep every pattern within each format's range as well (minutes).
/// </summary>
public class LowBitElementTests(ITestOutputHelper output)
{
    internal static ReferenceFloatFormat ReferenceOf(MiniFloatFormat format) => format.Name switch
    {
        "E4M3" => new(4, 3, 7, nanAtAllOnes: true, ieeeSpecials: false, overflowToInfinity: false),
        "E5M2" => new(5, 2, 15, nanAtAllOnes: false, ieeeSpecials: true, overflowToInfinity: false),
        "E3M2" => new(3, 2, 3, false, false, false),
        "E2M3" => new(2, 3, 1, false, false, false),
        "E2M1" => new(2, 1, 1, false, false, false),
        _ => throw new ArgumentException(format.Name),
    };

    private static readonly ReferenceFloatFormat Bf16Reference = new(8, 7, 127, false, ieeeSpecials: true, overflowToInfinity: true);

    public static TheoryData<string> Formats() => new() { "E4M3", "E5M2", "E3M2", "E2M3", "E2M1" };

    private static MiniFloatFormat Format(string name) => MiniFloatFormat.All.Single(f => f.Name == name);

    [Theory]
    [MemberData(nameof(Formats))]
    public void Quantization_LowBit_EveryCodeDecodesAsDefined(string name)
    {
        var format = Format(name);
        int e = format.ExponentBits, m = format.MantissaBits;
        int allOnes = (1 << e) - 1;
        for (int code = 0; code < format.CodeCount; code++)
        {
            int magnitude = code & (format.SignBit - 1);
            int exponentField = magnitude >> m, mantissa = magnitude & ((1 << m) - 1);
            double expected = ReferenceFloatFormat.Value(exponentField, mantissa, format.Bias, m);
            if (name == "E4M3" && magnitude == format.SignBit - 1) expected = double.NaN;
            if (name == "E5M2" && exponentField == allOnes) expected = mantissa == 0 ? double.PositiveInfinity : double.NaN;
            if ((code & format.SignBit) != 0) expected = -expected;
            float got = format.Decode(code);
            if (double.IsNaN(expected)) Assert.True(float.IsNaN(got), $"{name} 0x{code:X2}");
            else Assert.Equal(expected, (double)got);
            Assert.Equal(double.IsNegative(expected) && !double.IsNaN(expected), float.IsNegative(got) && !float.IsNaN(got));
        }
        Assert.Equal(ReferenceOf(format).MaxValue, (double)format.MaxNormal);
        Assert.Equal(ReferenceOf(format).MinSubnormal, (double)format.MinSubnormal);
    }

    [Fact]
    public void Quantization_LowBit_PublishedConstants()
    {
        // The values tabulated by torchao constants.py / microxcaling formats.py (schemes.md §1.1).
        Assert.Equal([448f, 57344f, 28f, 7.5f, 6f], MiniFloatFormat.All.Select(f => f.MaxNormal));
        Assert.Equal([8, 15, 4, 2, 2], MiniFloatFormat.All.Select(f => f.EmaxElement));
        Assert.Equal([1f / 512, 1f / 65536, 0.0625f, 0.125f, 0.5f], MiniFloatFormat.All.Select(f => f.MinSubnormal));
        Assert.Equal([0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f], Enumerable.Range(0, 8).Select(c => MiniFloatFormat.E2M1.Decode(c)));
        // E2M1 RNE tie table (golden, schemes.md §1.4): 0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4, 7->6.
        float[] inputs = [0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5f, 7f, 1e30f, float.PositiveInfinity];
        float[] expected = [0f, 1f, 1f, 2f, 2f, 4f, 4f, 6f, 6f, 6f];
        for (int i = 0; i < inputs.Length; i++)
        {
            Assert.Equal(expected[i], MiniFloatFormat.E2M1.Decode(MiniFloatFormat.E2M1.Encode(inputs[i])));
            Assert.Equal(-expected[i], MiniFloatFormat.E2M1.Decode(MiniFloatFormat.E2M1.Encode(-inputs[i])));
        }
        Assert.Equal(0x8, MiniFloatFormat.E2M1.Encode(-0f));
        Assert.Equal(0x7F, MiniFloatFormat.E5M2.Encode(float.NaN));
        Assert.Equal(0x7B, MiniFloatFormat.E5M2.Encode(float.PositiveInfinity));
        Assert.Equal(0xFB, MiniFloatFormat.E5M2.Encode(-1e6f));
        Assert.Equal(0x7C, MiniFloatFormat.E5M2.EncodeOverflowToInfinity(61440f)); // midpoint 57344|65536 ties to the even code: infinity
        Assert.Equal(0x7B, MiniFloatFormat.E5M2.EncodeOverflowToInfinity(61439.996f));
        Assert.Equal(0x7F, MiniFloatFormat.E4M3.Encode(float.NaN));
        foreach (var format in new[] { MiniFloatFormat.E3M2, MiniFloatFormat.E2M3, MiniFloatFormat.E2M1 })
        {
            var error = Assert.Throws<ArgumentException>(() => format.Encode(float.NaN));
            Assert.Contains("NaN", error.Message);
            Assert.Throws<InvalidOperationException>(() => format.EncodeOverflowToInfinity(1f));
        }
        Assert.Equal((ushort)0x7FC0, Bf16.FromFloat(BitConverter.UInt32BitsToSingle(0x7FC0_0000)));
        Assert.Equal((ushort)0xFFC0, Bf16.FromFloat(BitConverter.UInt32BitsToSingle(0xFFA0_0000))); // sign kept, payload canonical
        Assert.Equal((ushort)0x7F80, Bf16.FromFloat(float.MaxValue));
        Assert.Equal((ushort)0x3F80, Bf16.FromFloat(BitConverter.UInt32BitsToSingle(0x3F80_8000))); // tie to even
        Assert.Equal((ushort)0x3F82, Bf16.FromFloat(BitConverter.UInt32BitsToSingle(0x3F81_8000))); // tie to even (up)
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void Quantization_LowBit_EncoderMatchesDefinitionAtEveryRoundingBoundary(string name)
    {
        var format = Format(name);
        var reference = ReferenceOf(format);
        var watch = Stopwatch.StartNew();
        long boundary = CheckRoundingBoundaries(x => format.Encode(x), reference, format.MantissaBits, format.Bias, format.SignBit);
        // The upper half of the top binade exhaustively: every format's largest value, the midpoint above it and the
        // saturation boundary lie in [1.5, 2) * 2^emax.
        uint topField = (uint)(127 + format.EmaxElement);
        var (swept, mismatch) = FloatPatternSweep.Run((topField << 23) | 0x40_0000, (topField << 23) | 0x7F_FFFF, x => format.Encode(x), reference, format.SignBit);
        Assert.Null(mismatch);
        output.WriteLine($"{name}: {boundary} boundary patterns, {swept} patterns of the top half binade, {watch.ElapsedMilliseconds} ms");

        Assert.Equal(format.MaxMagnitudeCode, format.Encode(float.PositiveInfinity));
        Assert.Equal(format.MaxMagnitudeCode | format.SignBit, format.Encode(float.NegativeInfinity));
        if (name == "E4M3")
            foreach (float x in new[] { 0f, 1e-3f, 0.0107421875f, 17f, 463.9f, 464f, 464.1f, -300f, float.Epsilon })
                Assert.Equal(E4M3.Encode(x), format.Encode(x));
    }

    [Fact]
    public void Quantization_LowBit_E5M2OverflowToInfinityMatchesDefinition()
    {
        var format = MiniFloatFormat.E5M2;
        var reference = new ReferenceFloatFormat(5, 2, 15, false, ieeeSpecials: true, overflowToInfinity: true);
        CheckRoundingBoundaries(x => format.EncodeOverflowToInfinity(x), reference, 2, 15, format.SignBit);
        uint topField = 127 + 15;
        var (_, mismatch) = FloatPatternSweep.Run((topField << 23) | 0x40_0000, (topField << 23) | 0x7F_FFFF,
            x => format.EncodeOverflowToInfinity(x), reference, format.SignBit);
        Assert.Null(mismatch);
        Assert.Equal(0x7C, format.EncodeOverflowToInfinity(float.PositiveInfinity));
        Assert.Equal(0xFC, format.EncodeOverflowToInfinity(float.NegativeInfinity));
    }

    [Fact]
    public void Quantization_LowBit_Bf16MatchesDefinition()
    {
        var watch = Stopwatch.StartNew();
        var reference = Bf16Reference;
        long boundary = CheckRoundingBoundaries(x => Bf16.FromFloat(x), reference, 7, 127, 0x8000);
        Assert.Equal((ushort)0x7F80, Bf16.FromFloat(float.PositiveInfinity));
        Assert.Equal((ushort)0xFF80, Bf16.FromFloat(float.NegativeInfinity));
        Assert.Equal((ushort)0xFFC0, Bf16.FromFloat(BitConverter.UInt32BitsToSingle(0xFFC0_0001)));
        for (int bits = 0; bits < 65536; bits++)
        {
            float value = Bf16.ToFloat((ushort)bits);
            Assert.Equal((uint)bits << 16, BitConverter.SingleToUInt32Bits(value));
            if (!float.IsNaN(value)) Assert.Equal((ushort)bits, Bf16.FromFloat(value));
        }
        output.WriteLine($"BF16: {boundary} boundary patterns, {watch.ElapsedMilliseconds} ms");
    }

    [SkippableFact]
    public void Quantization_LowBit_EveryPatternInRange()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("GPUINTLAB_EXHAUSTIVE") == "1",
            "set GPUINTLAB_EXHAUSTIVE=1 to sweep every float32 pattern within each format's range (about 1.5e9 patterns, minutes on 2 cores)");
        foreach (var format in MiniFloatFormat.All)
        {
            // Every exponent field from 2 binades below the smallest subnormal's to 2 above the largest normal's;
            // everything further out rounds to zero or saturates, which the boundary test covers.
            var reference = ReferenceOf(format);
            uint lowField = (uint)(127 + Math.ILogB(reference.MinSubnormal) - 2);
            uint highField = (uint)(127 + Math.ILogB(reference.MaxValue) + 2);
            var watch = Stopwatch.StartNew();
            var (count, mismatch) = FloatPatternSweep.Run(lowField << 23, (highField << 23) | 0x7F_FFFF, x => format.Encode(x), reference, format.SignBit);
            Assert.Null(mismatch);
            output.WriteLine($"{format.Name}: {count} patterns (fields {lowField}..{highField}, both signs) in {watch.ElapsedMilliseconds} ms");
        }
    }

    /// <summary>
    /// Every float32 exponent field 0..254, every combination of the mantissa bits the format keeps in that binade,
    /// and for the dropped bits the patterns that decide rounding (0, 1, 2, just below / at / just above the tie, the
    /// top two) plus 16 fixed random ones; both signs. This visits every rounding boundary and every tie of the
    /// format, in its subnormal range too. Returns the number of patterns checked.
    /// </summary>
    internal static long CheckRoundingBoundaries(Func<float, int> actual, ReferenceFloatFormat reference,
        int mantissaBits, int bias, int signCode)
    {
        long count = 0;
        var random = new Random(15);
        for (int field = 0; field <= 254; field++)
        {
            int exponent = Math.Max(field, 1) - 127;
            int dropped = Math.Min(23, 23 - mantissaBits + Math.Max(0, 1 - bias - exponent));
            uint lowMask = (1u << dropped) - 1, half = 1u << (dropped - 1);
            var lows = new HashSet<uint> { 0, 1, 2, half - 1, half, half + 1, lowMask - 1, lowMask };
            for (int i = 0; i < 16; i++) lows.Add((uint)random.NextInt64(0, (long)lowMask + 1));
            for (uint kept = 0; kept < (1u << (23 - dropped)); kept++)
                foreach (uint low in lows)
                {
                    uint bits = ((uint)field << 23) | (kept << dropped) | (low & lowMask);
                    float x = BitConverter.UInt32BitsToSingle(bits);
                    int expected = reference.ExpectedMagnitude(x);
                    int got = actual(x), gotNegative = actual(-x);
                    if (got != expected || gotNegative != (expected | signCode))
                        Assert.Fail($"pattern 0x{bits:X8} ({x:R}): expected 0x{expected:X}, got 0x{got:X}; negated got 0x{gotNegative:X}");
                    count += 2;
                }
        }
        return count;
    }
}
