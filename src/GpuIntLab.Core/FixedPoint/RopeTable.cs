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
/// </summary>
public sealed partial class RopeTable
{
    private readonly long[] _cos;
    private readonly long[] _sin;
    private readonly UInt128[] _invFreqQ127;

    /// <summary>Builds the table for theta = thetaMantissa * 2^thetaExponent (theta &gt; 1, theta &lt; 2^63).</summary>
    internal RopeTable(int headDim, int maxPositions, ulong thetaMantissa, int thetaExponent)
    {
        if (headDim <= 0 || (headDim & 1) != 0 || headDim > 1024)
        {
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "headDim must be even, in [2, 1024]");
        }

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
        Int128 lnThetaQ110 = (Q48.LogCore(thetaMantissa, thetaExponent) + 512) >> 10;
        for (int i = 0; i < half; i++)
        {
            // v = (2i / headDim) * ln(theta) in Q.110; inv = exp(-v) = m * 2^(e - 126), e <= 0
            Int128 v = lnThetaQ110 * (2 * i) / headDim;
            UInt128 m = Q48.ExpCore(-v, out int e);
            _invFreqQ127[i] = e == 0 ? m << 1 : m >> (-e - 1);
        }

        _cos = new long[maxPositions * half];
        _sin = new long[maxPositions * half];
        for (int pos = 0; pos < maxPositions; pos++)
        {
            for (int i = 0; i < half; i++)
            {
                Q48.SinCosCore(AngleQ100(pos, i), out Int128 s, out Int128 c);
                _cos[(pos * half) + i] = Q48.RoundShift(c, 126 - Q48.FracBits);
                _sin[(pos * half) + i] = Q48.RoundShift(s, 126 - Q48.FracBits);
            }
        }
    }

    public int HeadDim { get; }

    public int MaxPositions { get; }

    /// <summary>cos(angle(position, i)) for i in [0, HeadDim/2), Q16.48.</summary>
    public ReadOnlySpan<long> Cos(int position) => Row(_cos, position);

    /// <summary>sin(angle(position, i)) for i in [0, HeadDim/2), Q16.48.</summary>
    public ReadOnlySpan<long> Sin(int position) => Row(_sin, position);

    /// <summary>theta^(-2i/headDim) in Q1.127 (for tests).</summary>
    internal UInt128 InverseFrequencyQ127(int i) => _invFreqQ127[i];

    /// <summary>pos * inv_freq(i) in Q.100: the exact product of the Q1.127 frequency, truncated (for tests).</summary>
    internal Int128 AngleQ100(int pos, int i) => (Int128)Wide.Mul64x128Shr((ulong)pos, _invFreqQ127[i], 27);

    private ReadOnlySpan<long> Row(long[] table, int position)
    {
        if ((uint)position >= (uint)MaxPositions)
        {
            throw new ArgumentOutOfRangeException(nameof(position), position, $"position must be in [0, {MaxPositions})");
        }

        int half = HeadDim / 2;
        return new ReadOnlySpan<long>(table, position * half, half);
    }

    // true when m * 2^e > 1, for bitlength(m) + e in {.., 1}: only m * 2^e in (1, 2) with bitlength + e == 1
    private static bool IsAbovePowerOfTwo(ulong m, int e)
    {
        int bits = Wide.BitLength(m);
        return bits + e == 1 && (m & (m - 1)) != 0;
    }
}
