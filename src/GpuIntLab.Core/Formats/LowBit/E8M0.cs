namespace GpuIntLab.Core.Formats.LowBit;

/// <summary>
/// E8M0, the OCP MX shared scale: an unsigned 8-bit biased exponent. Byte e (0..254) encodes 2^(e - 127); byte 0 is
/// 2^-127 (a float32 subnormal, not zero); 0xFF is NaN. There is no zero and no infinity (OCP MX spec v1.0 §5.4.1 as
/// torchao cites it; CUDA <c>__nv_fp8_e8m0</c>).
/// <para>
/// An amax becomes a scale byte through a <see cref="MxScaleRule"/>; see <see cref="ScaleFor"/>.
/// </para>
/// </summary>
public static class E8M0
{
    /// <summary>The NaN byte.</summary>
    public const byte NaNCode = 0xFF;
    /// <summary>Exponent bias.</summary>
    public const int Bias = 127;

    /// <summary>2^(code - 127) as a float (exact; 2^-127 is the float subnormal 0x0040_0000), NaN for 0xFF.</summary>
    public static float Decode(byte code) => code == NaNCode ? float.NaN : MathF.ScaleB(1f, code - Bias);

    /// <summary>The unbiased exponent code - 127 of a non-NaN byte.</summary>
    public static int UnbiasedExponent(byte code)
    {
        if (code == NaNCode) throw new ArgumentException("the E8M0 NaN byte 0xFF has no exponent", nameof(code));
        return code - Bias;
    }

    /// <summary>
    /// The E8M0 scale byte for a block whose largest magnitude is <paramref name="amax"/> (a non-negative float or
    /// NaN), for element format <paramref name="element"/> under <paramref name="rule"/>:
    /// <list type="bullet">
    /// <item><see cref="MxScaleRule.OcpFloor"/> (OCP MX spec v1.0 §6.3, microxcaling, torchao FLOOR, llama.cpp):
    /// shared exponent = floor(log2 amax) - emax_elem, taken from the float's exponent bits (never a float log2,
    /// which rounds 2^k(1-2^-24) up to k); a zero or float-subnormal amax has exponent field 0 and gives the
    /// floor -127; the result is clamped below at -127 (it cannot exceed 127 for a finite amax). A NaN or
    /// infinite amax gives the NaN byte (the spec: an exponent above 127 is NaN; torchao instead gives an
    /// infinite amax the finite byte 128 - emax_elem + 127).</item>
    /// <item><see cref="MxScaleRule.Rceil"/> (cuBLAS 1D block scaling, cuDNN "quantize_round_up(amax / vmax)",
    /// TransformerEngine <c>float_to_e8m0(amax * max_norm_rcp)</c>, torchao RCEIL): the float32 product
    /// amax * fl32(1 / max_elem) is rounded up to a power of two through its bits: NaN gives 0xFF, infinity
    /// 0xFE, zero 0x00; otherwise the exponent field goes up by one when a mantissa bit is set, except at
    /// field 0xFE (satfinite) and for subnormal products at most 2^-127 (which are already covered by byte 0).</item>
    /// </list>
    /// </summary>
    public static byte ScaleFor(float amax, MiniFloatFormat element, MxScaleRule rule)
    {
        ArgumentNullException.ThrowIfNull(element);
        if (!float.IsNaN(amax) && amax < 0)
            throw new ArgumentOutOfRangeException(nameof(amax), amax, "a block's amax is a magnitude (>= 0)");
        switch (rule)
        {
            case MxScaleRule.OcpFloor:
            {
                if (!float.IsFinite(amax)) return NaNCode;
                int floorLog2 = (int)((BitConverter.SingleToUInt32Bits(amax) >> 23) & 0xFF) - 127;
                int sharedExponent = Math.Max(floorLog2 - element.EmaxElement, -Bias);
                return (byte)(sharedExponent + Bias);
            }
            case MxScaleRule.Rceil:
            {
                float reciprocalOfMax = 1f / element.MaxNormal;
                return RoundUpToE8M0(amax * reciprocalOfMax);
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(rule), rule, "unknown MX scale rule");
        }
    }

    /// <summary>TransformerEngine's <c>float_to_e8m0</c> (software path of <c>cvt.rp.satfinite.ue8m0x2.f32</c>).</summary>
    internal static byte RoundUpToE8M0(float value)
    {
        if (float.IsNaN(value)) return NaNCode;
        if (float.IsInfinity(value)) return 0xFE;
        uint bits = BitConverter.SingleToUInt32Bits(value);
        uint exponentField = (bits >> 23) & 0xFF;
        uint mantissa = bits & 0x7F_FFFF;
        if (mantissa > 0 && exponentField != 0xFE && !(exponentField == 0 && mantissa <= 0x40_0000)) exponentField++;
        return (byte)exponentField;
    }

    /// <summary>
    /// The float multiplier that maps a block's values onto the element grid for scale byte <paramref name="code"/>:
    /// exactly 2^(127 - code). Under <see cref="MxScaleRule.Rceil"/> byte 0 maps to 1.0 instead of 2^127, as
    /// TransformerEngine's <c>exp2f_rcp</c> does (only blocks with amax below about 2^-118 are affected).
    /// </summary>
    internal static float EncodeMultiplier(byte code, MxScaleRule rule)
    {
        if (code == NaNCode) return float.NaN;
        if (rule == MxScaleRule.Rceil && code == 0) return 1f;
        return MathF.ScaleB(1f, Bias - code);
    }
}

/// <summary>How an MX block's amax becomes its E8M0 scale; named after the library each one matches.</summary>
public enum MxScaleRule
{
    /// <summary>"ocp-floor": the OCP MX v1.0 spec's floor(log2 amax) - emax_elem (microxcaling, torchao FLOOR).</summary>
    OcpFloor,
    /// <summary>"rceil": round amax / max_elem up to a power of two (cuBLAS, cuDNN, TransformerEngine, torchao RCEIL).</summary>
    Rceil,
}

/// <summary>Stable text names of the scale rules (result identity, JSON).</summary>
public static class MxScaleRuleNames
{
    /// <summary>"ocp-floor" or "rceil".</summary>
    public static string Name(this MxScaleRule rule) => rule switch
    {
        MxScaleRule.OcpFloor => "ocp-floor",
        MxScaleRule.Rceil => "rceil",
        _ => throw new ArgumentOutOfRangeException(nameof(rule), rule, "unknown MX scale rule"),
    };

    /// <summary>Parses "ocp-floor" / "rceil"; anything else is an ArgumentException naming the accepted names.</summary>
    public static MxScaleRule Parse(string name) => name switch
    {
        "ocp-floor" => MxScaleRule.OcpFloor,
        "rceil" => MxScaleRule.Rceil,
        _ => throw new ArgumentException($"unknown MX scale rule '{name}'; expected 'ocp-floor' or 'rceil'", nameof(name)),
    };
}
