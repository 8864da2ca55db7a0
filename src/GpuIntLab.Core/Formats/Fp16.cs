namespace GpuIntLab.Core.Formats;

/// <summary>
/// IEEE 754 binary16 ("half") helpers. Backends store half weights and activations as
/// <c>ushort</c> bit patterns (the layout of CUDA's <c>__half</c> and of <see cref="Half"/>).
/// <para>
/// Rules (the IEEE default, identical to CUDA's <c>__float2half_rn</c> / <c>cvt.rn.f16.f32</c>):
/// round to nearest, ties to even, with gradual underflow (subnormals down to 2^-24; magnitudes at
/// or below 2^-25 round to a zero of the input's sign); magnitudes at or above 65520 (the midpoint
/// between the largest finite half 65504 and 2^16) round to infinity of the input's sign;
/// infinities map to infinities; NaN maps to a NaN (quiet, payload not specified).
/// Implemented with <see cref="Half"/>'s explicit conversions, which are correctly rounded; the
/// tests check them against an independent float64 rounding at every midpoint of the format.
/// </para>
/// </summary>
public static class Fp16
{
    /// <summary>Largest finite half, 65504.</summary>
    public const float MaxValue = 65504f;

    /// <summary>float -> half bits, round to nearest even.</summary>
    public static ushort FromFloat(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>double -> half bits, rounded once (round to nearest even), not via float.</summary>
    public static ushort FromDouble(double value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>half bits -> float (exact).</summary>
    public static float ToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>half bits -> double (exact).</summary>
    public static double ToDouble(ushort bits) => (double)BitConverter.UInt16BitsToHalf(bits);

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

    /// <summary>Rounds a float to the nearest half value, returned as float ("half emulation").</summary>
    public static float RoundToHalf(float value) => (float)(Half)value;
}
