namespace GpuIntLab.Core.Formats;

/// <summary>
/// FP8 E4M3 codec, OCP 8-bit floating point "E4M3FN" as implemented by NVIDIA's <c>__nv_fp8_e4m3</c>.
/// <para>
/// Layout: bit 7 sign, bits 6..3 exponent (bias 7), bits 2..0 mantissa. Exponent field 0 encodes
/// subnormals <c>(-1)^s * 2^-6 * m/8</c> (smallest 2^-9); other fields encode normals
/// <c>(-1)^s * 2^(e-7) * (1 + m/8)</c>. There are no infinities; only 0x7F and 0xFF are NaN, so
/// exponent 15 with mantissa 0..6 are ordinary normals and the largest finite value is
/// 0x7E = 1.75 * 2^8 = 448. Codes 0x00..0x7E decode to strictly increasing values.
/// </para>
/// <para>
/// Encoding (identical to <c>__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)</c> and to the
/// PTX <c>cvt.rn.satfinite.e4m3x2.f32</c> instruction, checked against the host path of NVIDIA's
/// <c>cuda_fp8.hpp</c>: overflow threshold "maxnorm + 1/2 ulp" = 464, underflow "mindenorm/2" = 2^-10):
/// <list type="bullet">
/// <item>Round to nearest, ties to even mantissa (the even code), in the normal and the subnormal range.</item>
/// <item>Saturation: any finite value whose magnitude rounds above 448 (magnitude &gt; 464; 464 itself
/// is the midpoint 448|480 and ties to the even 448) encodes as +-448 (0x7E / 0xFE).
/// +-Infinity also saturates to +-448.</item>
/// <item>NaN (any sign, any payload) encodes as 0x7F. (NVIDIA's float entry point canonicalises NaN
/// to a positive NaN first and returns 0x7F; its double entry point would keep the sign and return
/// 0xFF for a negative NaN. This codec always returns 0x7F.)</item>
/// <item>Magnitudes at or below 2^-10 (half the smallest subnormal: a tie, and 0 is even) encode as
/// a zero carrying the input's sign: -0.0 and tiny negatives give 0x80.</item>
/// </list>
/// The float overload is exact with respect to the real value of its argument (float -> double is
/// exact), so <c>Encode(f) == Encode((double)f)</c> for every non-NaN float.
/// </para>
/// </summary>
public static class E4M3
{
    /// <summary>Largest finite magnitude, 1.75 * 2^8.</summary>
    public const float MaxValue = 448f;
    /// <summary>Code of +448.</summary>
    public const byte MaxCode = 0x7E;
    /// <summary>Canonical NaN code produced by <see cref="Encode(double)"/>.</summary>
    public const byte NaNCode = 0x7F;
    /// <summary>Smallest positive subnormal, 2^-9.</summary>
    public const float MinSubnormal = 1f / 512f;
    /// <summary>Smallest positive normal, 2^-6.</summary>
    public const float MinNormal = 1f / 64f;

    private static readonly float[] s_decode = BuildDecodeTable();

    /// <summary>
    /// The 256-entry decode table, indexed by code: exact float values, NaN at 0x7F and 0xFF,
    /// -0.0 at 0x80. Backends may upload it as a lookup table; do not mutate (a fresh copy is
    /// returned by <see cref="CopyDecodeTable"/>).
    /// </summary>
    public static ReadOnlySpan<float> DecodeTable => s_decode;

    /// <summary>A fresh copy of <see cref="DecodeTable"/> (for uploading to a device buffer).</summary>
    public static float[] CopyDecodeTable() => (float[])s_decode.Clone();

    private static float[] BuildDecodeTable()
    {
        var t = new float[256];
        for (int code = 0; code < 256; code++)
        {
            bool negative = (code & 0x80) != 0;
            int e = (code >> 3) & 0xF;
            int m = code & 0x7;
            float magnitude;
            if (e == 0xF && m == 0x7) { t[code] = float.NaN; continue; }
            if (e == 0) magnitude = MathF.ScaleB(m, -9);           // 2^-6 * m/8
            else magnitude = MathF.ScaleB(8 + m, e - 7 - 3);        // 2^(e-7) * (8+m)/8
            t[code] = negative ? -magnitude : magnitude;
        }
        return t;
    }

    /// <summary>Exact value of an E4M3 code (NaN for 0x7F / 0xFF).</summary>
    public static float Decode(byte code) => s_decode[code];

    /// <summary>True for the two NaN codes 0x7F and 0xFF.</summary>
    public static bool IsNaN(byte code) => (code & 0x7F) == 0x7F;

    /// <summary>Encodes a float with round-to-nearest-even and SATFINITE saturation (see the type docs).</summary>
    public static byte Encode(float value) => float.IsNaN(value) ? NaNCode : Encode((double)value);

    /// <summary>Encodes a double with round-to-nearest-even and SATFINITE saturation (see the type docs).
    /// The double is rounded once, directly to E4M3 (no intermediate float rounding).</summary>
    public static byte Encode(double value)
    {
        if (double.IsNaN(value)) return NaNCode;
        int sign = double.IsNegative(value) ? 0x80 : 0;
        double a = Math.Abs(value);
        if (a >= 464.0) return (byte)(sign | MaxCode); // includes +Inf; 464 ties to even (448)

        int magnitudeCode;
        if (a < 1.0 / 64.0)
        {
            // Subnormal range: multiples of 2^-9. a * 2^9 is exact; Math.Round(ToEven) is exact.
            // A result of 8 is code 0x08 = 2^-6, the smallest normal, which is correct.
            magnitudeCode = (int)Math.Round(Math.ScaleB(a, 9), MidpointRounding.ToEven);
        }
        else
        {
            int e = Math.ILogB(a);                                   // a in [2^e, 2^(e+1)), -6 <= e <= 8
            double q = Math.Round(Math.ScaleB(a, 3 - e), MidpointRounding.ToEven); // in [8, 16]
            // q == 16 carries into the next exponent: ((e+7) << 3) + 8 == ((e+8) << 3).
            magnitudeCode = ((e + 7) << 3) + ((int)q - 8);
            if (magnitudeCode > MaxCode) magnitudeCode = MaxCode; // cannot happen below 464; kept as a guard
        }
        return (byte)(sign | magnitudeCode);
    }

    /// <summary>Encodes a span (element-wise <see cref="Encode(float)"/>).</summary>
    public static void Encode(ReadOnlySpan<float> values, Span<byte> codes)
    {
        if (codes.Length < values.Length) throw new ArgumentException("destination too short", nameof(codes));
        for (int i = 0; i < values.Length; i++) codes[i] = Encode(values[i]);
    }

    /// <summary>Decodes a span (element-wise <see cref="Decode(byte)"/>).</summary>
    public static void Decode(ReadOnlySpan<byte> codes, Span<float> values)
    {
        if (values.Length < codes.Length) throw new ArgumentException("destination too short", nameof(values));
        for (int i = 0; i < codes.Length; i++) values[i] = s_decode[codes[i]];
    }
}
