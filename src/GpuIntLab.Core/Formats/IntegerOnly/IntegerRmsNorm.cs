namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>
/// Integer RMSNorm: y = gamma * x / sqrt(mean(x^2) + eps) on int32 rows at 2^-16, int64 arithmetic only.
/// Source: I-BERT's IntLayerNorm (Kim et al. 2021, schemes.md §5.1: integer sum of squares, Algorithm 4 i-sqrt, integer division)
/// ported to RMSNorm (no mean subtraction, as schemes.md §5.2 proposes), and I-LLM's DI-Norm (integer mean of squares,
/// integer sqrt, integer division). Changes, for accuracy: the row is first scaled by a power of two so its largest
/// |x| lies in [2^22, 2^23) (I-BERT shifts down by a fixed amount; shifting up too keeps small rows precise), the
/// root carries up to 8 extra bits, and each output is one correctly rounded division x * 2^16 / root instead of
/// I-BERT's floored reciprocal floor(2^31 / std) (which leaves 7 bits when std is large). gamma is an int16 code per
/// channel with one shift per vector. Split into per-row statistics and a per-element apply so a device runs the
/// same helpers: <see cref="PrescaleShift"/>, <see cref="Prescale"/>, <see cref="Root"/>, <see cref="Normalize"/>,
/// <see cref="ApplyWeight"/>.
/// </summary>
public static class IntegerRmsNorm
{
    /// <summary>The prescaled row's largest magnitude lies in [2^(PrescaleBits-1), 2^PrescaleBits).</summary>
    public const int PrescaleBits = 23;

    /// <summary>
    /// Widest row: the sum of squares of prescaled values (each &lt; 2^46) must stay below 2^62.
    /// </summary>
    public const int MaxRowLength = 1 << 16;

    /// <summary>Most extra bits of precision carried by the root.</summary>
    private const int MaxExtraBits = 8;

    /// <summary>The right shift (negative: left) that brings a row of largest magnitude amax into [2^22, 2^23).</summary>
    public static int PrescaleShift(long amax) => IntegerArithmetic.BitLength(amax) - PrescaleBits;

    /// <summary>x / 2^shift with RNE (shift &gt; 0) or x * 2^-shift exactly (shift &lt;= 0).</summary>
    public static long Prescale(long x, int shift) => IntegerArithmetic.RoundShift(x, shift);

    /// <summary>
    /// eps in the units of the prescaled squares: eps * 2^(2 (16 - shift)), from eps = m / 2^e (a dyadic fixed at
    /// load), RNE, saturated at 2^60 (where eps would dominate every row anyway).
    /// </summary>
    public static long Epsilon(int epsilonMultiplier, int epsilonExponent, int shift)
    {
        int up = 2 * (DyadicQuantization.ActivationFracBits - shift) - epsilonExponent;
        if (up > 60 - IntegerArithmetic.BitLength(epsilonMultiplier)) return 1L << 60;
        return IntegerArithmetic.RoundShift(epsilonMultiplier, -up);
    }

    /// <summary>
    /// The row's root: with m2 = RNE(sum / n) + eps (prescaled units), h = min(8, floor((62 - bits(m2)) / 2)) extra
    /// bits and root = isqrt(m2 * 4^h) = floor(sqrt(m2) * 2^h).
    /// </summary>
    public static long Root(long sumSquares, int n, long epsilon, out int extraBits)
    {
        long m2 = IntegerArithmetic.RoundDiv(sumSquares, n) + epsilon;
        int h = (62 - IntegerArithmetic.BitLength(m2)) / 2;
        if (h > MaxExtraBits) h = MaxExtraBits;
        extraBits = h;
        return IntegerArithmetic.Isqrt(m2 << (2 * h));
    }

    /// <summary>x' / sqrt(m2) at 2^-16: RNE(x' * 2^(16 + h) / root); 0 for a zero root (an all-zero row with eps lost).</summary>
    public static long Normalize(long prescaled, long root, int extraBits) =>
        root == 0 ? 0 : IntegerArithmetic.RoundDiv(prescaled << (DyadicQuantization.ActivationFracBits + extraBits), root);

    /// <summary>gamma * y: RNE(y * code / 2^shift), saturated to int32 at 2^-16.</summary>
    public static int ApplyWeight(long normalized, int weightCode, int weightShift) =>
        IntegerArithmetic.SaturateInt32(IntegerArithmetic.RoundShift(normalized * weightCode, weightShift));

    /// <summary>One row, all steps (the CPU engine's RMSNorm; the device splits it at the same helpers). Output may be x itself: element i is written after its last read.</summary>
    public static void Row(ReadOnlySpan<int> x, ReadOnlySpan<int> weightCodes, int weightShift, int epsilonMultiplier, int epsilonExponent, Span<int> output)
    {
        if (x.Length > MaxRowLength) throw new ArgumentOutOfRangeException(nameof(x), x.Length, $"integer RMSNorm rows hold at most {MaxRowLength} elements");
        long amax = 0;
        for (int i = 0; i < x.Length; i++) { long a = IntegerArithmetic.Abs(x[i]); if (a > amax) amax = a; }
        int shift = PrescaleShift(amax);
        long sumSquares = 0;
        for (int i = 0; i < x.Length; i++) { long p = Prescale(x[i], shift); sumSquares += p * p; }
        long root = Root(sumSquares, x.Length, Epsilon(epsilonMultiplier, epsilonExponent, shift), out int extraBits);
        for (int i = 0; i < x.Length; i++) output[i] = ApplyWeight(Normalize(Prescale(x[i], shift), root, extraBits), weightCodes[i], weightShift);
    }
}
