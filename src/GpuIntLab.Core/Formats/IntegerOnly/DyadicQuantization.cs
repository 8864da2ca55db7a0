namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>
/// The number formats of the integer-only W8A8 path and its dyadic (integer multiplier, shift) scales. A dyadic scale
/// is the pair (m, e) meaning the real value m / 2^e; a code q at that scale stands for q * m / 2^e.
/// <list type="bullet">
/// <item>Wide activations (residual stream, every linear's output, q/k/v, attention output, SwiGLU, logits): int32
/// fixed point with <see cref="ActivationFracBits"/> = 16 fraction bits, one fixed scale for the whole model, so adds
/// need no rescale (range +-32768, step 1.5e-5).</item>
/// <item>Linear inputs, q, k and v in the KV cache: int8 codes with a dynamic dyadic scale per token (per token and
/// head for q, k, v), multiplier in [128, 256) (I-LLM's 8-bit m).</item>
/// <item>Weights: int8 codes per output channel (amax/127, RNE, at load) with a dyadic scale whose multiplier has
/// <see cref="WeightMultiplierBits"/> bits.</item>
/// </list>
/// Source: I-LLM (Hu et al., arXiv 2405.17849) DI-MatMul — dynamic per-token activation scales, per-channel weight
/// scales, the int32 accumulator requantised by an integer multiply and a shift — reimplemented from the public
/// reimplementations summarised in shared/research/schemes.md §5.3, symmetric (no zero point) like the lab's W8A8.
/// </summary>
public static class DyadicQuantization
{
    /// <summary>Fraction bits of every wide (int32) activation.</summary>
    public const int ActivationFracBits = 16;

    /// <summary>Bits of a weight scale's multiplier: [2^15, 2^16), a relative scale error below 2^-15, far under the int8 step.</summary>
    public const int WeightMultiplierBits = 16;

    /// <summary>Largest int8 code magnitude (symmetric: -128 is never used).</summary>
    public const int MaxCode = 127;

    /// <summary>
    /// The dynamic scale of a row whose largest |value| is <paramref name="amax"/> &gt; 0 (int32 at 2^-16): the dyadic
    /// m / 2^e with m in [128, 256) and the smallest such m with 127 * m / 2^e &gt;= amax * 2^-16, so every code of the
    /// row fits in +-127 without clipping while the grid is at most 1/128 coarser than amax/127. Integer only (a
    /// ceiling division by 127), so it runs inside the step. For amax = 0 the scale is (0, 0) and every code 0.
    /// </summary>
    public static void ActivationScale(long amax, out int multiplier, out int exponent)
    {
        if (amax <= 0) { multiplier = 0; exponent = 0; return; }
        // amax in [2^(b-1), 2^b): at 2^(15-b) the ratio amax * 2^shift / 127 lies in [129.0, 258.0); one step down if >= 256.
        int shift = 15 - IntegerArithmetic.BitLength(amax);
        long m = ScaledCeil(amax, shift);
        if (m >= 256) { shift--; m = ScaledCeil(amax, shift); }
        multiplier = (int)m;
        exponent = shift + ActivationFracBits;
    }

    /// <summary>ceil(amax * 2^shift / 127) for either sign of shift.</summary>
    private static long ScaledCeil(long amax, int shift) =>
        shift >= 0 ? IntegerArithmetic.CeilDiv(amax << shift, MaxCode) : IntegerArithmetic.CeilDiv(amax, (long)MaxCode << -shift);

    /// <summary>
    /// The int8 code of x (int32 at 2^-16) at the dyadic scale m / 2^e: RNE(x * 2^(e-16) / m), one correctly rounded
    /// integer division. The clamp to +-127 never binds for a scale from <see cref="ActivationScale"/> (kept for scales
    /// from elsewhere).
    /// </summary>
    public static int Quantize(long x, int multiplier, int exponent)
    {
        if (multiplier == 0) return 0;
        int shift = exponent - ActivationFracBits;
        long q = shift >= 0 ? IntegerArithmetic.RoundDiv(x << shift, multiplier) : IntegerArithmetic.RoundDiv(x, (long)multiplier << -shift);
        return q > MaxCode ? MaxCode : q < -MaxCode ? -MaxCode : (int)q;
    }

    /// <summary>
    /// A code at scale m / 2^e back to int32 at 2^-16: RNE(q * m / 2^(e-16)), saturated (the embedding lookup and the
    /// dequantised views of the KV cache).
    /// </summary>
    public static int Dequantize(long code, int multiplier, int exponent) =>
        IntegerArithmetic.SaturateInt32(IntegerArithmetic.RoundShift(code * multiplier, exponent - ActivationFracBits));

    /// <summary>
    /// DI-MatMul requantisation: the int32 accumulator of int8 x int8 products at scale s_x * s_w =
    /// (m_x m_w) / 2^(e_x + e_w), to int32 at 2^-16 with one RNE shift: RNE(acc * m_x * m_w / 2^(e_x + e_w - 16)),
    /// saturated. The product fits int64: |acc| &lt;= 127^2 K &lt; 2^29 for K &lt;= 32768, m_x &lt; 2^8, m_w &lt; 2^16.
    /// </summary>
    public static int Requantize(long accumulator, int activationMultiplier, int activationExponent, int weightMultiplier, int weightExponent) =>
        IntegerArithmetic.SaturateInt32(IntegerArithmetic.RoundShift(accumulator * activationMultiplier * weightMultiplier,
            activationExponent + weightExponent - ActivationFracBits));

    /// <summary>
    /// A row's int8 codes and dynamic scale (per token for a linear input, per token and head for q, k, v): the
    /// largest |x|, <see cref="ActivationScale"/>, then <see cref="Quantize"/> of every element.
    /// </summary>
    public static void QuantizeRow(ReadOnlySpan<int> x, Span<sbyte> codes, out int multiplier, out int exponent)
    {
        long amax = 0;
        for (int i = 0; i < x.Length; i++) { long a = IntegerArithmetic.Abs(x[i]); if (a > amax) amax = a; }
        ActivationScale(amax, out multiplier, out exponent);
        for (int i = 0; i < x.Length; i++) codes[i] = (sbyte)Quantize(x[i], multiplier, exponent);
    }

    /// <summary>a + b saturated to int32: the residual add and the bias add of the int32 stream.</summary>
    public static int SaturatingAdd(int a, int b) => IntegerArithmetic.SaturateInt32((long)a + b);
}
