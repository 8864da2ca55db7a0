namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>
/// Integer exp, softmax, sigmoid and SiLU: the nonlinear functions of the integer-only path, int64 only.
/// </summary>
public static class IntegerExp
{
    /// <summary>Fraction bits of <see cref="Exp"/>'s result: e^x in [0, 1] as an integer in [0, 2^30].</summary>
    public const int ExpFracBits = 30;

    /// <summary>Fraction bits of the attention probabilities (16-bit, where I-LLM's DI-ClippedSoftmax keeps 8).</summary>
    public const int ProbabilityFracBits = 16;

    /// <summary>
    /// The clipping constant c of DI-ClippedSoftmax, in real units: inputs below max - c are raised to max - c.
    /// e^-20 = 2.1e-9 is 2.2 units of the 2^-30 result, so the clip changes an output by at most that; it bounds
    /// the final shift at 28 (20 / ln 2 = 28.9). I-LLM clips so that an 8-bit grid covers [max - c, max]; here the
    /// scores keep their 2^-16 int32 resolution, so the clip only bounds the range.
    /// </summary>
    public const int ClipMagnitude = 20;

    /// <summary>Internal fraction bits of the exponent argument (the ln 2 step is resolved to 2^-32).</summary>
    private const int ArgumentFracBits = 32;

    /// <summary>round(ln 2 * 2^62) (from a 60-digit decimal evaluation of ln 2).</summary>
    private const long Ln2Q62 = 3196577161300663915;

    /// <summary>ln 2 at 2^-32: the integer step of one power of two in the exponent.</summary>
    private const long Ln2Q32 = (Ln2Q62 + (1L << 29)) >> 30;

    // 2^-u on [0, 1] as 1 + a1 u + a2 u^2 + a3 u^3 + a4 u^4 at 2^-30: relative-weighted least squares with p(1) = 1/2
    // exact (so adjacent powers of two join without a step); max relative error 3.83e-6 over a 10^5-point sweep.
    private const long A1 = -744155434, A2 = 257035562, A3 = -57024501, A4 = 7273461;

    /// <summary>
    /// e^x for x &lt;= 0 given as an integer at scale 2^-<paramref name="fracBits"/> (fracBits &lt;= 32), returned at
    /// 2^-30. Source: the base-2 decomposition of I-BERT's i-exp (Kim et al. 2021; HF transformers' IntSoftmax, schemes.md §5.1) and I-LLM's DI-Exp
    /// (Hu et al. 2024, Algorithm 1): x = -z ln2 + r, e^x = 2^-z * 2^(r / ln2), the 2^-z a right shift. Two changes
    /// against DI-Exp, both for accuracy, measured: DI-Exp's log2(e) = 1.4375 (shifts only) becomes an exact 2^-32
    /// ln 2 step, and its linear 2^f = 1 + f/2 (6% worst error) becomes a quartic in Q30 Horner form (I-BERT uses a
    /// quadratic i-poly for the same purpose), worst relative error 3.9e-6 plus half a unit of 2^-30. Inputs below
    /// -<see cref="ClipMagnitude"/> are clipped there (DI-ClippedSoftmax). Integer only: one division, four
    /// multiply-shift steps, one rounding shift.
    /// </summary>
    public static long Exp(long x, int fracBits)
    {
        long magnitude = x >= 0 ? 0 : -x;
        long clip = (long)ClipMagnitude << fracBits;
        if (magnitude > clip) magnitude = clip;
        long scaled = magnitude << (ArgumentFracBits - fracBits);   // -x at 2^-32, <= 20 * 2^32 < 2^37
        long z = scaled / Ln2Q32;                                    // whole powers of two, <= 28
        long r = scaled - z * Ln2Q32;                                // in [0, ln2 * 2^32)
        long u = IntegerArithmetic.RoundDiv(r << ExpFracBits, Ln2Q32); // r / ln2 at 2^-30, in [0, 2^30]
        long p = A4;
        p = A3 + IntegerArithmetic.RoundShift(p * u, ExpFracBits);
        p = A2 + IntegerArithmetic.RoundShift(p * u, ExpFracBits);
        p = A1 + IntegerArithmetic.RoundShift(p * u, ExpFracBits);
        p = (1L << ExpFracBits) + IntegerArithmetic.RoundShift(p * u, ExpFracBits); // 2^-u at 2^-30, in [2^29, 2^30]
        return IntegerArithmetic.RoundShift(p, (int)z);
    }

    /// <summary>
    /// One softmax probability at 2^-16: RNE(e * 2^16 / sum) for an exp e of the row and the row's sum of exps
    /// (I-BERT's IntSoftmax normalisation, with a correctly rounded division instead of a floored reciprocal).
    /// </summary>
    public static int Probability(long exp, long sum) => (int)IntegerArithmetic.RoundDiv(exp << ProbabilityFracBits, sum);

    /// <summary>
    /// Integer softmax of one row (DI-ClippedSoftmax shape: subtract the row max, clip, integer exp, integer sum,
    /// integer division): scores at 2^-<paramref name="fracBits"/>, probabilities at 2^-16 into
    /// <paramref name="probabilities"/>; <paramref name="exps"/> is scratch of the row's length. The max element's exp
    /// is exactly 2^30, so the sum is never 0.
    /// </summary>
    public static void Softmax(ReadOnlySpan<long> scores, int fracBits, Span<long> exps, Span<int> probabilities)
    {
        long max = scores[0];
        for (int i = 1; i < scores.Length; i++) if (scores[i] > max) max = scores[i];
        long sum = 0;
        for (int i = 0; i < scores.Length; i++) { exps[i] = Exp(scores[i] - max, fracBits); sum += exps[i]; }
        for (int i = 0; i < scores.Length; i++) probabilities[i] = Probability(exps[i], sum);
    }

    /// <summary>
    /// sigma(x) at 2^-30 for x at 2^-16. Source: I-LLM's DI-Sigmoid as reimplemented (schemes.md §5.3):
    /// e0 / (e0 + e(-x)) for x &gt;= 0, e(x) / (e0 + e(x)) otherwise, with e = <see cref="Exp"/> and e0 = e(0) = 2^30, one
    /// rounded integer division; both branches only ever take exps of non-positive arguments.
    /// </summary>
    public static long Sigmoid(long x)
    {
        const long one = 1L << ExpFracBits;
        if (x >= 0) return IntegerArithmetic.RoundDiv(one << ExpFracBits, one + Exp(-x, DyadicQuantization.ActivationFracBits));
        long e = Exp(x, DyadicQuantization.ActivationFracBits);
        return IntegerArithmetic.RoundDiv(e << ExpFracBits, one + e);
    }

    /// <summary>silu(x) = x * sigma(x), x and result at 2^-16 (one RNE shift of the exact product).</summary>
    public static long Silu(long x) => IntegerArithmetic.RoundShift(x * Sigmoid(x), ExpFracBits);

    /// <summary>SwiGLU's element silu(gate) * up, all int32 at 2^-16, saturated (I-LLM's DI-SwiGLU shape: integer sigmoid, two integer products).</summary>
    public static int SwiGlu(int gate, int up) =>
        IntegerArithmetic.SaturateInt32(IntegerArithmetic.RoundShift(Silu(gate) * up, DyadicQuantization.ActivationFracBits));
}
