namespace GpuIntLab.Core.FixedPoint;

/// <summary>
/// Rotary position embedding table: cos and sin (Q16.48) of angle(pos, i) = pos * theta^(-2i/headDim) for
/// i in [0, headDim/2). Integer only:
/// <list type="bullet">
/// <item>ln(theta) from theta's exact binary decomposition m * 2^e (ln m + e ln2, Q.120, ~2^-80 absolute);</item>
/// <item>inverse frequency exp(-(2i/headDim) ln theta) in Q1.127 (relative error ~2^-80);</item>
/// <item>the angle pos * inv_freq is the exact product, truncated to Q.100, reduced modulo pi/2 with a
/// 100-bit pi/2, and fed to the sin/cos series; each entry is rounded once (RNE).</item>
/// </list>
/// Derived angle error at position 2047: ~2^-69 (~2e-21 rad); measured: &lt; 5e-24 rad. Every entry is the
/// correctly rounded cos/sin of the exact real angle except at near-ties (measured in the tests).
/// With a llama3 <c>rope_scaling</c> the Q1.127 frequencies are rewritten exactly (<see cref="Llama3FrequencyRule"/>).
/// Rows are computed on first use and cached in blocks (<see cref="RopeRowCache{T}"/>): construction costs
/// headDim/2 frequencies, memory follows the positions used, readers may be concurrent; every entry is the same
/// value an eager build gives.
/// </summary>
public sealed partial class RopeTable
{
    private readonly UInt128[] _invFreqQ127;
    private readonly RopeFrequencyBand[] _bands;
    private readonly RopeRowCache<long> _rows;

    /// <summary>
    /// Builds the table for theta = thetaMantissa * 2^thetaExponent (theta &gt; 1, theta &lt; 2^63), the frequencies
    /// rewritten by <paramref name="llama3"/> when given.
    /// </summary>
    internal RopeTable(int headDim, int maxPositions, ulong thetaMantissa, int thetaExponent, Llama3FrequencyRule? llama3)
    {
        if (headDim <= 0 || (headDim & 1) != 0 || headDim > 1024)
        {
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "headDim must be even, in [2, 1024]");
        }

        // 2^24 keeps pos * inv_freq (inv_freq <= 1) inside SinCosCore's |t| < 2^24 range
        if (maxPositions <= 0 || maxPositions > (1 << 24))
        {
            throw new ArgumentOutOfRangeException(nameof(maxPositions), maxPositions, "maxPositions must be in [1, 2^24]");
        }

        int bits = Wide.BitLength(thetaMantissa);
        if (thetaMantissa == 0 || bits + thetaExponent > 63 || (bits + thetaExponent <= 1 && !IsAbovePowerOfTwo(thetaMantissa, thetaExponent)))
        {
            throw new ArgumentOutOfRangeException(nameof(thetaMantissa), "rope theta must be in (1, 2^63)");
        }

        HeadDim = headDim;
        MaxPositions = maxPositions;
        int half = headDim / 2;
        _invFreqQ127 = new UInt128[half];
        _bands = new RopeFrequencyBand[half];
        Int128 lnThetaQ110 = (Q48.LogCore(thetaMantissa, thetaExponent) + 512) >> 10;
        for (int i = 0; i < half; i++)
        {
            // v = (2i / headDim) * ln(theta) in Q.110; inv = exp(-v) = m * 2^(e - 126), e <= 0
            Int128 v = lnThetaQ110 * (2 * i) / headDim;
            UInt128 m = Q48.ExpCore(-v, out int e);
            _invFreqQ127[i] = e == 0 ? m << 1 : m >> (-e - 1);
            if (llama3 != null)
            {
                _invFreqQ127[i] = llama3.Apply(_invFreqQ127[i], out _bands[i]);
            }
        }

        _rows = new RopeRowCache<long>(half, maxPositions, FillRows);
    }

    public int HeadDim { get; }

    public int MaxPositions { get; }

    /// <summary>cos(angle(position, i)) for i in [0, HeadDim/2), Q16.48 (computed on first use, then cached).</summary>
    public ReadOnlySpan<long> Cos(int position) => _rows.Cos(position);

    /// <summary>sin(angle(position, i)) for i in [0, HeadDim/2), Q16.48 (computed on first use, then cached).</summary>
    public ReadOnlySpan<long> Sin(int position) => _rows.Sin(position);

    /// <summary>
    /// Rows [firstPosition, firstPosition + count) into <paramref name="cos"/> and <paramref name="sin"/>
    /// (row-major, HeadDim/2 entries per row), computed directly and not cached: for uploading a whole table.
    /// </summary>
    public void CopyRows(int firstPosition, int count, Span<long> cos, Span<long> sin) => _rows.CopyRows(firstPosition, count, cos, sin);

    /// <summary>The effective (rewritten when scaled) inverse frequency theta^(-2i/headDim) in Q1.127 (for tests).</summary>
    internal UInt128 InverseFrequencyQ127(int i) => _invFreqQ127[i];

    /// <summary>Which llama3 branch pair i took (<see cref="RopeFrequencyBand.Kept"/> without scaling).</summary>
    internal RopeFrequencyBand Band(int i) => _bands[i];

    /// <summary>Row blocks computed so far (for tests).</summary>
    internal int FilledBlocks => _rows.FilledBlocks;

    /// <summary>pos * inv_freq(i) in Q.100: the exact product of the Q1.127 frequency, truncated (for tests).</summary>
    internal Int128 AngleQ100(int pos, int i) => (Int128)Wide.Mul64x128Shr((ulong)pos, _invFreqQ127[i], 27);

    // each entry: the Q.126 sin/cos of the Q.100 angle, rounded once (RNE) to Q16.48
    private void FillRows(int firstPosition, int count, Span<long> cos, Span<long> sin)
    {
        int half = HeadDim / 2;
        for (int row = 0; row < count; row++)
        {
            int pos = firstPosition + row;
            for (int i = 0; i < half; i++)
            {
                Q48.SinCosCore(AngleQ100(pos, i), out Int128 s, out Int128 c);
                cos[(row * half) + i] = Q48.RoundShift(c, 126 - Q48.FracBits);
                sin[(row * half) + i] = Q48.RoundShift(s, 126 - Q48.FracBits);
            }
        }
    }

    // true when m * 2^e > 1, for bitlength(m) + e in {.., 1}: only m * 2^e in (1, 2) with bitlength + e == 1
    private static bool IsAbovePowerOfTwo(ulong m, int e)
    {
        int bits = Wide.BitLength(m);
        return bits + e == 1 && (m & (m - 1)) != 0;
    }
}
