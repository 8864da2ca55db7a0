namespace GpuIntLab.Core.Formats.LowBit;

/// <summary>
/// A small binary floating-point element format (sign, <see cref="ExponentBits"/> exponent bits with bias
/// <see cref="Bias"/>, <see cref="MantissaBits"/> mantissa bits, IEEE-style subnormals at exponent field 0),
/// used as the element of the OCP microscaling formats and of NVFP4. Instances: <see cref="E4M3"/>,
/// <see cref="E5M2"/> (OCP FP8), <see cref="E3M2"/>, <see cref="E2M3"/> (FP6), <see cref="E2M1"/> (FP4).
/// <para>
/// Codes are the format's bits in the low bits of a byte (bit <c>ExponentBits + MantissaBits</c> is the sign).
/// Value of a finite code: exponent field e, mantissa m: e = 0 gives (-1)^s * 2^(1-bias) * m/2^M,
/// otherwise (-1)^s * 2^(e-bias) * (1 + m/2^M).
/// Specials (OCP 8-bit FP spec v1.0, OCP MX spec v1.0 as torchao / microxcaling encode them):
/// E4M3 has no infinity and one NaN pattern S.1111.111 (largest finite 448); E5M2 is IEEE-like (exponent
/// field 31: mantissa 0 is infinity, otherwise NaN; largest finite 57344); the FP6 and FP4 formats have
/// neither infinity nor NaN (every code is finite).
/// </para>
/// <para>
/// <see cref="Encode(float)"/> is the conversion of PTX <c>cvt.rn.satfinite.{e4m3,e5m2,e3m2,e2m3,e2m1}</c>, of
/// torchao's <c>_f32_to_floatx_unpacked</c> (FP6/FP4) and of the MX spec's element conversion: round to nearest
/// with ties to the even code, in the normal and the subnormal range; any magnitude that rounds above the
/// largest finite value (including infinity) becomes the largest finite value with the input's sign
/// ("satfinite"); magnitudes at or below half the smallest subnormal become a zero of the input's sign.
/// NaN becomes the canonical NaN code (0x7F) in the two FP8 formats and is refused (ArgumentException) by
/// the FP6/FP4 formats, which cannot represent it (torchao's bit trick silently produces garbage there).
/// <see cref="EncodeOverflowToInfinity"/> (E5M2 only) is the IEEE non-saturating conversion of PyTorch's
/// <c>tensor.to(torch.float8_e5m2)</c>: overflow rounds to infinity.
/// </para>
/// <para>
/// The encoder works on the float's bits with integer arithmetic only (no float rounding can intervene),
/// so a device kernel can port it line by line.
/// </para>
/// </summary>
public sealed class MiniFloatFormat
{
    /// <summary>OCP FP8 E4M3 ("E4M3FN"): bias 7, max 448, NaN S.1111.111, no infinity. Same codes as <see cref="Formats.E4M3"/>.</summary>
    public static readonly MiniFloatFormat E4M3 = new("E4M3", 4, 3, 7, FormatSpecials.E4M3NaNOnly);
    /// <summary>OCP FP8 E5M2: bias 15, max 57344, IEEE infinity (S.11111.00) and NaNs (S.11111.xx, xx != 0).</summary>
    public static readonly MiniFloatFormat E5M2 = new("E5M2", 5, 2, 15, FormatSpecials.Ieee);
    /// <summary>OCP FP6 E3M2: bias 3, max 28, min subnormal 0.0625, no specials.</summary>
    public static readonly MiniFloatFormat E3M2 = new("E3M2", 3, 2, 3, FormatSpecials.None);
    /// <summary>OCP FP6 E2M3: bias 1, max 7.5, min subnormal 0.125, no specials.</summary>
    public static readonly MiniFloatFormat E2M3 = new("E2M3", 2, 3, 1, FormatSpecials.None);
    /// <summary>OCP FP4 E2M1: bias 1, codes 0..7 are 0, 0.5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign.</summary>
    public static readonly MiniFloatFormat E2M1 = new("E2M1", 2, 1, 1, FormatSpecials.None);

    /// <summary>All five element formats, for enumeration in tests and tables.</summary>
    public static IReadOnlyList<MiniFloatFormat> All { get; } = [E4M3, E5M2, E3M2, E2M3, E2M1];

    private readonly float[] _decode;

    private MiniFloatFormat(string name, int exponentBits, int mantissaBits, int bias, FormatSpecials specials)
    {
        Name = name;
        ExponentBits = exponentBits;
        MantissaBits = mantissaBits;
        Bias = bias;
        Specials = specials;
        BitWidth = 1 + exponentBits + mantissaBits;
        SignBit = 1 << (exponentBits + mantissaBits);
        int allOnesExponent = (1 << exponentBits) - 1;
        MaxMagnitudeCode = specials switch
        {
            FormatSpecials.E4M3NaNOnly => SignBit - 2,                                   // S.1111.110
            FormatSpecials.Ieee => ((allOnesExponent - 1) << mantissaBits) | ((1 << mantissaBits) - 1), // S.11110.11
            _ => SignBit - 1,                                                            // every bit pattern finite
        };
        NaNCode = specials == FormatSpecials.None ? -1 : SignBit - 1;
        _decode = BuildDecodeTable();
        MaxNormal = _decode[MaxMagnitudeCode];
        MinSubnormal = _decode[1];
        EmaxElement = Math.ILogB(MaxNormal);
    }

    /// <summary>The format's name, e.g. "E2M1".</summary>
    public string Name { get; }
    /// <summary>Exponent field width.</summary>
    public int ExponentBits { get; }
    /// <summary>Mantissa field width.</summary>
    public int MantissaBits { get; }
    /// <summary>Exponent bias.</summary>
    public int Bias { get; }
    /// <summary>Which special values exist.</summary>
    public FormatSpecials Specials { get; }
    /// <summary>Total bits per element (sign included).</summary>
    public int BitWidth { get; }
    /// <summary>The sign bit of a code.</summary>
    public int SignBit { get; }
    /// <summary>Code of the largest finite positive value.</summary>
    public int MaxMagnitudeCode { get; }
    /// <summary>Canonical NaN code the encoder produces (0x7F for both FP8 formats), or -1 when there is no NaN.</summary>
    public int NaNCode { get; }
    /// <summary>Largest finite value (448, 57344, 28, 7.5, 6).</summary>
    public float MaxNormal { get; }
    /// <summary>Smallest positive value (a subnormal).</summary>
    public float MinSubnormal { get; }
    /// <summary>floor(log2(MaxNormal)): the "emax_elem" of the MX spec's shared-exponent rule (8, 15, 4, 2, 2).</summary>
    public int EmaxElement { get; }
    /// <summary>Number of codes, 2^BitWidth.</summary>
    public int CodeCount => 1 << BitWidth;

    /// <summary>Exact value of every code (index = code); NaN codes decode to NaN, the negative zero code to -0.0.</summary>
    public ReadOnlySpan<float> DecodeTable => _decode;

    /// <inheritdoc/>
    public override string ToString() => Name;

    private float[] BuildDecodeTable()
    {
        var table = new float[CodeCount];
        int mantissaMask = (1 << MantissaBits) - 1;
        int allOnesExponent = (1 << ExponentBits) - 1;
        for (int code = 0; code < table.Length; code++)
        {
            int exponentField = (code >> MantissaBits) & allOnesExponent;
            int mantissa = code & mantissaMask;
            bool negative = (code & SignBit) != 0;
            float magnitude;
            if (Specials == FormatSpecials.Ieee && exponentField == allOnesExponent)
                magnitude = mantissa == 0 ? float.PositiveInfinity : float.NaN;
            else if (Specials == FormatSpecials.E4M3NaNOnly && (code & (SignBit - 1)) == SignBit - 1)
                magnitude = float.NaN;
            else if (exponentField == 0)
                magnitude = MathF.ScaleB(mantissa, 1 - Bias - MantissaBits);
            else
                magnitude = MathF.ScaleB(mantissa | (1 << MantissaBits), exponentField - Bias - MantissaBits);
            table[code] = negative ? -magnitude : magnitude;
        }
        return table;
    }

    /// <summary>Exact float value of a code. Throws for a code outside [0, CodeCount).</summary>
    public float Decode(int code)
    {
        if ((uint)code >= (uint)_decode.Length)
            throw new ArgumentOutOfRangeException(nameof(code), code, $"an {Name} code is in [0, {_decode.Length - 1}]");
        return _decode[code];
    }

    /// <summary>True when the code is a NaN of this format.</summary>
    public bool IsNaN(int code) => float.IsNaN(Decode(code));

    /// <summary>Round to nearest even with satfinite saturation (see the type's docs).</summary>
    public byte Encode(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        uint sign = (bits >> 31) != 0 ? (uint)SignBit : 0u;
        uint magnitudeBits = bits & 0x7FFF_FFFFu;
        if (magnitudeBits > 0x7F80_0000u) return NaNCodeOrThrow(value);
        if (magnitudeBits == 0x7F80_0000u) return (byte)(sign | (uint)MaxMagnitudeCode);
        int code = RoundMagnitude(magnitudeBits, MantissaBits, Bias);
        if (code > MaxMagnitudeCode) code = MaxMagnitudeCode;
        return (byte)(sign | (uint)code);
    }

    /// <summary>
    /// IEEE non-saturating conversion (PyTorch's <c>.to(torch.float8_e5m2)</c>): like <see cref="Encode(float)"/>
    /// but a magnitude that rounds above the largest finite value, and infinity, become infinity. Only for formats
    /// with an infinity (E5M2).
    /// </summary>
    public byte EncodeOverflowToInfinity(float value)
    {
        if (Specials != FormatSpecials.Ieee)
            throw new InvalidOperationException($"{Name} has no infinity; use Encode (satfinite)");
        uint bits = BitConverter.SingleToUInt32Bits(value);
        uint sign = (bits >> 31) != 0 ? (uint)SignBit : 0u;
        uint magnitudeBits = bits & 0x7FFF_FFFFu;
        if (magnitudeBits > 0x7F80_0000u) return (byte)NaNCode;
        uint infinityCode = (uint)(MaxMagnitudeCode + 1);
        if (magnitudeBits == 0x7F80_0000u) return (byte)(sign | infinityCode);
        int code = RoundMagnitude(magnitudeBits, MantissaBits, Bias);
        return (byte)(sign | (code > MaxMagnitudeCode ? infinityCode : (uint)code));
    }

    /// <summary>Element-wise <see cref="Encode(float)"/>.</summary>
    public void Encode(ReadOnlySpan<float> values, Span<byte> codes)
    {
        if (codes.Length < values.Length) throw new ArgumentException("destination too short", nameof(codes));
        for (int i = 0; i < values.Length; i++) codes[i] = Encode(values[i]);
    }

    private byte NaNCodeOrThrow(float value)
    {
        if (NaNCode < 0)
            throw new ArgumentException($"NaN has no {Name} encoding (the format has no NaN); reject NaN inputs before encoding", nameof(value));
        return (byte)NaNCode;
    }

    /// <summary>
    /// Rounds a finite non-negative float (given by its bits) to the nearest value of a binary format with
    /// <paramref name="mantissaBits"/> mantissa bits and exponent bias <paramref name="bias"/>, unbounded above,
    /// ties to the even code. Returns the magnitude code ((biased exponent) &lt;&lt; mantissaBits | mantissa),
    /// which may exceed the format's largest code; the caller saturates or overflows.
    /// </summary>
    internal static int RoundMagnitude(uint magnitudeBits, int mantissaBits, int bias)
    {
        int floatExponentField = (int)(magnitudeBits >> 23);
        uint significand = magnitudeBits & 0x7F_FFFFu;
        if (floatExponentField != 0) significand |= 0x80_0000u;
        else floatExponentField = 1; // float subnormal: same scale as exponent field 1, no implicit bit
        int unbiasedExponent = floatExponentField - 127;
        // The result's exponent is the input's, or the format's minimum normal exponent in its subnormal range.
        int targetExponent = Math.Max(unbiasedExponent, 1 - bias);
        // Bits to drop: the input's last significand bit weighs 2^(unbiasedExponent-23), the result's 2^(targetExponent-mantissaBits).
        int shift = targetExponent - unbiasedExponent + 23 - mantissaBits;
        uint rounded;
        if (shift >= 25) rounded = 0; // significand < 2^24 <= half of 2^shift: below half the smallest step
        else
        {
            rounded = significand >> shift;
            uint remainder = significand & ((1u << shift) - 1);
            uint half = 1u << (shift - 1);
            if (remainder > half || (remainder == half && (rounded & 1) != 0)) rounded++;
        }
        // Normal: rounded in [2^M, 2^(M+1)] and the code is ((e+bias) << M) + rounded - 2^M; subnormal: targetExponent
        // = 1-bias and the code is rounded. Both are ((targetExponent + bias - 1) << M) + rounded; a carry to 2^(M+1)
        // moves into the next exponent by itself.
        return ((targetExponent + bias - 1) << mantissaBits) + (int)rounded;
    }
}

/// <summary>Which special values a <see cref="MiniFloatFormat"/> has.</summary>
public enum FormatSpecials
{
    /// <summary>Every code is a finite number (FP6, FP4).</summary>
    None,
    /// <summary>E4M3FN: no infinity, NaN only at S.1111.111.</summary>
    E4M3NaNOnly,
    /// <summary>IEEE-like: the all-ones exponent holds infinity (mantissa 0) and NaNs (E5M2).</summary>
    Ieee,
}
