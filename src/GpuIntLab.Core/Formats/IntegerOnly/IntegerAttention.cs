namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>
/// The attention-side integer steps: RoPE from an integer cos/sin table, int8 q.k scores requantised to a common
/// fixed point, and the probability-weighted sum of int8 values.
/// </summary>
public static class IntegerAttention
{
    /// <summary>Fraction bits of the integer cos/sin table (int32 values in [-2^30, 2^30]).</summary>
    public const int RopeFracBits = 30;

    /// <summary>Fraction bits of the attention scores fed to the softmax.</summary>
    public const int ScoreFracBits = 16;

    /// <summary>Fraction bits of the attention value accumulator (16 below the output, so per-term roundings stay below 2^-33).</summary>
    private const int ValueAccumulatorFracBits = 32;

    /// <summary>
    /// HF rotate-half RoPE of the pair (a, b) = (x_i, x_{i + d/2}) at 2^-16 with cos, sin at 2^-30:
    /// (a cos - b sin, b cos + a sin), each one exact int64 sum (|products| &lt; 2^61) rounded once (RNE) to 2^-16.
    /// Source: schemes.md §5.4 step 3 (an integer table and int32 products rounded by shifts); the table is the
    /// oracle's exact Q16.48 <c>RopeTable</c> rounded to 2^-30 at load, in integers.
    /// </summary>
    public static void Rotate(long a, long b, long cos, long sin, out int rotatedA, out int rotatedB)
    {
        rotatedA = IntegerArithmetic.SaturateInt32(IntegerArithmetic.RoundShift(a * cos - b * sin, RopeFracBits));
        rotatedB = IntegerArithmetic.SaturateInt32(IntegerArithmetic.RoundShift(b * cos + a * sin, RopeFracBits));
    }

    /// <summary>
    /// A score q.k / sqrt(d) at 2^-16 from the exact int32 dot of int8 codes, the query and key dyadic scales and the
    /// dyadic 1/sqrt(d): RNE(dot * m_q * m_k * m_d / 2^(e_q + e_k + e_d - 16)). |dot| &lt;= 127^2 d &lt; 2^23 for d &lt;= 512,
    /// so the product stays below 2^55. (DI-MatMul's requantisation with per-row and per-column dyadic scales.)
    /// </summary>
    public static long Score(long dot, int queryMultiplier, int queryExponent, int keyMultiplier, int keyExponent, int scaleMultiplier, int scaleExponent) =>
        IntegerArithmetic.RoundShift(dot * queryMultiplier * keyMultiplier * scaleMultiplier,
            queryExponent + keyExponent + scaleExponent - ScoreFracBits);

    /// <summary>
    /// One term p_t * v_t of an attention output at 2^-32: the exact p (2^-16) * code * m_v (&lt; 2^31) shifted by its
    /// value scale's exponent. Each cached token has its own dyadic value scale, so the terms are aligned to one
    /// fixed point before the sum (the sum is int64: |term| &lt; 2^48, a context of 2^14 positions stays below 2^62).
    /// </summary>
    public static long ValueTerm(long probability, long valueCode, int valueMultiplier, int valueExponent) =>
        IntegerArithmetic.RoundShift(probability * valueCode * valueMultiplier,
            IntegerExp.ProbabilityFracBits + valueExponent - ValueAccumulatorFracBits);

    /// <summary>The summed value terms (2^-32) as the int32 attention output at 2^-16 (RNE, saturated).</summary>
    public static int Output(long accumulator) =>
        IntegerArithmetic.SaturateInt32(IntegerArithmetic.RoundShift(accumulator, ValueAccumulatorFracBits - DyadicQuantization.ActivationFracBits));
}
