using System.Numerics;
using GpuIntLab.Core.Formats;
using Xunit;

namespace GpuIntLab.Tests.Models;

/// <summary>bf16/f16/f32 -> Q16.48 against an independent BigInteger reference over every 16-bit pattern and many f32 ones.</summary>
public class ExactConversionTests
{
    /// <summary>Correctly rounded (ties to even) value * 2^48 of a finite double, computed with BigInteger; null when out of range.</summary>
    private static long? Reference(double value)
    {
        if (!double.IsFinite(value)) return null;
        long bits = BitConverter.DoubleToInt64Bits(value);
        bool negative = bits < 0;
        int exponent = (int)((bits >> 52) & 0x7FF);
        long mantissa = bits & ((1L << 52) - 1);
        if (exponent == 0) exponent = 1; else mantissa |= 1L << 52;
        int shift = exponent - 1075 + 48; // value * 2^48 = mantissa * 2^shift
        BigInteger scaled;
        if (shift >= 0) scaled = new BigInteger(mantissa) << shift;
        else
        {
            var m = new BigInteger(mantissa);
            var q = m >> -shift;
            var r = m - (q << -shift);
            var half = BigInteger.One << (-shift - 1);
            if (r > half || (r == half && !q.IsEven)) q += 1;
            scaled = q;
        }
        if (negative) scaled = -scaled;
        if (scaled > long.MaxValue || scaled < -long.MaxValue) return null;
        return (long)scaled;
    }

    [Fact]
    public void EveryBf16PatternConvertsExactly()
    {
        for (int bits = 0; bits < 65536; bits++)
        {
            long? expected = Reference(ExactConversion.Bf16ToDouble((ushort)bits));
            if (expected is null) Assert.Throws<WeightRangeException>(() => ExactConversion.Bf16ToQ48((ushort)bits));
            else Assert.Equal(expected.Value, ExactConversion.Bf16ToQ48((ushort)bits));
        }
    }

    [Fact]
    public void EveryF16PatternConvertsExactly()
    {
        for (int bits = 0; bits < 65536; bits++)
        {
            long? expected = Reference(ExactConversion.F16ToDouble((ushort)bits));
            if (expected is null) Assert.Throws<WeightRangeException>(() => ExactConversion.F16ToQ48((ushort)bits));
            else Assert.Equal(expected.Value, ExactConversion.F16ToQ48((ushort)bits));
        }
    }

    [Fact]
    public void F32PatternsConvertExactly()
    {
        var rng = new Random(48);
        var samples = new List<uint> { 0, 0x80000000, 1, 0x00800000, 0x33800000, 0x33C00000, 0x34000000, 0x46FFFFFF, 0x47000000, 0xC7000000, 0x7F800000, 0x7FC00000 };
        for (int i = 0; i < 200_000; i++) samples.Add((uint)rng.NextInt64(0, 1L << 32));
        // Dense around the rounding boundary 2^-49 .. 2^-47 where ties occur.
        for (uint b = 0x33000000; b < 0x34800000; b += 997) samples.Add(b);
        foreach (uint bits in samples)
        {
            long? expected = Reference(ExactConversion.F32ToDouble(bits));
            if (expected is null) Assert.Throws<WeightRangeException>(() => ExactConversion.F32ToQ48(bits));
            else Assert.Equal(expected.Value, ExactConversion.F32ToQ48(bits));
        }
    }

    [Fact]
    public void TiesRoundToEven()
    {
        // 2^-49 is half an ulp: rounds to 0 (even); 3 * 2^-49 is 1.5 ulp: rounds to 2 ulp.
        Assert.Equal(0, ExactConversion.F32ToQ48(BitConverter.SingleToUInt32Bits(MathF.ScaleB(1, -49))));
        Assert.Equal(2, ExactConversion.F32ToQ48(BitConverter.SingleToUInt32Bits(MathF.ScaleB(3, -49))));
        Assert.Equal(-2, ExactConversion.F32ToQ48(BitConverter.SingleToUInt32Bits(MathF.ScaleB(-3, -49))));
    }

    [Fact]
    public void Bf16RoundTripThroughDouble()
    {
        for (int bits = 0; bits < 65536; bits++)
        {
            double v = ExactConversion.Bf16ToDouble((ushort)bits);
            if (double.IsNaN(v)) continue;
            Assert.Equal((ushort)bits, ExactConversion.DoubleToBf16(v));
        }
        // Rounding of values between bf16 neighbours: 1 + 2^-8 is a tie -> 1.0 (even); 1 + 3*2^-8 -> 1 + 2^-6.
        Assert.Equal(0x3F80, ExactConversion.DoubleToBf16(1 + Math.ScaleB(1, -8)));
        Assert.Equal(0x3F82, ExactConversion.DoubleToBf16(1 + 3 * Math.ScaleB(1, -8)));
        // A value just above a tie that float32 would round onto the tie must still round up.
        Assert.Equal(0x3F81, ExactConversion.DoubleToBf16(1 + Math.ScaleB(1, -8) + Math.ScaleB(1, -40)));
    }
}
