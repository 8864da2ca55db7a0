namespace GpuIntLab.Core.Formats.LowBit;

/// <summary>
/// bfloat16 (1 sign, 8 exponent bits with bias 127, 7 mantissa bits: the top half of a float32), stored as
/// <c>ushort</c> bit patterns. It is what the Llama checkpoints are trained and shipped in, so it is the lab's
/// baseline row beside FP16.
/// <para>
/// Conversion from float32 is the IEEE default, identical to PyTorch's <c>.to(torch.bfloat16)</c>, CUDA's
/// <c>__float2bfloat16_rn</c> and PTX <c>cvt.rn.bf16.f32</c>: round to nearest, ties to even, with gradual underflow
/// (float32 subnormals round into bfloat16 subnormals), overflow to infinity of the input's sign (magnitudes at or
/// above 0x7F7F_8000, the midpoint between the largest finite bfloat16 and 2^128), infinities kept, and every NaN
/// mapped to the canonical quiet NaN 0x7FC0 with the input's sign bit (PyTorch's rule).
/// Conversion to float32 is exact (the bits shifted left by 16).
/// </para>
/// </summary>
public static class Bf16
{
    /// <summary>Largest finite bfloat16, (2 - 2^-7) * 2^127.</summary>
    public const float MaxValue = 3.3895314e38f;
    /// <summary>Positive canonical NaN bits.</summary>
    public const ushort CanonicalNaN = 0x7FC0;

    /// <summary>float -> bfloat16 bits, round to nearest even (see the type's docs).</summary>
    public static ushort FromFloat(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        ushort sign = (ushort)((bits >> 16) & 0x8000);
        uint magnitudeBits = bits & 0x7FFF_FFFFu;
        if (magnitudeBits > 0x7F80_0000u) return (ushort)(sign | CanonicalNaN);
        if (magnitudeBits == 0x7F80_0000u) return (ushort)(sign | 0x7F80);
        // Same rounding core as the element formats, with bfloat16's exponent range. A result above the largest
        // finite code (0x7F7F) is exactly the infinity code 0x7F80, because the carry lands in the exponent field.
        int code = MiniFloatFormat.RoundMagnitude(magnitudeBits, 7, 127);
        return (ushort)(sign | code);
    }

    /// <summary>bfloat16 bits -> float32 (exact).</summary>
    public static float ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Rounds a float to the nearest bfloat16 value and returns it as float ("bf16 emulation").</summary>
    public static float RoundToBf16(float value) => ToFloat(FromFloat(value));

    /// <summary>Element-wise <see cref="FromFloat"/>.</summary>
    public static void FromFloat(ReadOnlySpan<float> values, Span<ushort> bits)
    {
        if (bits.Length < values.Length) throw new ArgumentException("destination too short", nameof(bits));
        for (int i = 0; i < values.Length; i++) bits[i] = FromFloat(values[i]);
    }

    /// <summary>Element-wise <see cref="ToFloat(ushort)"/>.</summary>
    public static void ToFloat(ReadOnlySpan<ushort> bits, Span<float> values)
    {
        if (values.Length < bits.Length) throw new ArgumentException("destination too short", nameof(values));
        for (int i = 0; i < bits.Length; i++) values[i] = ToFloat(bits[i]);
    }
}
