using System.Numerics;

namespace GpuIntLab.Core.FixedPoint;

/// <summary>Which branch of the llama3 rewrite a frequency pair took.</summary>
internal enum RopeFrequencyBand
{
    /// <summary>No rope_scaling, or wavelength &lt; original / high_freq_factor: frequency kept.</summary>
    Kept,

    /// <summary>Wavelength in [original / high, original / low]: (1 - s) f / factor + s f.</summary>
    Smooth,

    /// <summary>Wavelength &gt; original / low_freq_factor: frequency divided by factor.</summary>
    Divided,
}

/// <summary>
/// The llama3 inverse-frequency rewrite (transformers' <c>_compute_llama3_parameters</c>) applied to a Q1.127
/// frequency f = F / 2^127, in exact rational arithmetic. factor, low and high are the doubles of the config,
/// i.e. exact dyadic rationals, taken as A / 2^k, L / 2^k, H / 2^k over one common k; original is the integer
/// O; pi is the 128-bit constant pi' = P / 2^125 (|pi' - pi| &lt;= 2^-126). With x = O / wavelength =
/// O f / (2 pi') = O F / (8 P):
/// <list type="bullet">
/// <item>kept when x &gt; high, divided when x &lt; low: both decided exactly (integer comparisons of O F 2^k
/// with 8 P H and 8 P L);</item>
/// <item>smooth otherwise: s = (x - low) / (high - low) and g = f (1 + s (a - 1)) / a, one exact fraction
/// F (2^k D + N (A - 2^k)) / (A D) with N = O F 2^k - 8 P L, D = 8 P (H - L);</item>
/// <item>every result is that exact fraction rounded once (RNE) to Q1.127.</item>
/// </list>
/// Error bound, for the stored F: |g' - g| &lt;= 2^-128 (the rounding) + f * high / (high - low) * 2^-127.6
/// (pi' for pi: |dg/dpi| = f (1 - 1/a) x / (pi (high - low))). A branch decided against pi' instead of pi can
/// only differ when x is within 2^-127 (relative) of low or high, where the branches meet continuously, so
/// the bound holds there too. Against the true theta^(-2i/d), the stored F's relative error (~2^-80) is
/// amplified in the smooth band by at most 1 + (a - 1) high / (high - low) (43 for factor 32, low 1, high 4).
/// </summary>
internal sealed class Llama3FrequencyRule
{
    private static readonly BigInteger Pi = (BigInteger)Q48Constants.PiQ125;

    private readonly BigInteger _factor;
    private readonly BigInteger _low;
    private readonly BigInteger _high;
    private readonly int _scaleBits;
    private readonly int _original;

    /// <summary>factor = fm 2^fe, low = lm 2^le, high = hm 2^he (validated: factor &gt;= 1, 0 &lt; low &lt; high), original &gt; 0.</summary>
    public Llama3FrequencyRule(ulong factorMantissa, int factorExponent, ulong lowMantissa, int lowExponent, ulong highMantissa, int highExponent, int original)
    {
        // common denominator 2^k: the most negative exponent (0 when all three are integers)
        int k = -factorExponent > 0 ? -factorExponent : 0;
        k = -lowExponent > k ? -lowExponent : k;
        k = -highExponent > k ? -highExponent : k;
        _scaleBits = k;
        _factor = (BigInteger)factorMantissa << (factorExponent + k);
        _low = (BigInteger)lowMantissa << (lowExponent + k);
        _high = (BigInteger)highMantissa << (highExponent + k);
        _original = original;
        if (_factor < BigInteger.One << k || _low.Sign <= 0 || _high <= _low || original <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(factorMantissa), "llama3 rope scaling needs factor >= 1, 0 < low < high, original > 0");
        }
    }

    /// <summary>The rewritten frequency in Q1.127 for the unscaled Q1.127 frequency <paramref name="baseQ127"/>.</summary>
    public UInt128 Apply(UInt128 baseQ127, out RopeFrequencyBand band)
    {
        var f = (BigInteger)baseQ127;
        BigInteger x = (_original * f) << _scaleBits; // x * 8 P 2^k
        BigInteger eightPi = 8 * Pi;
        if (x > eightPi * _high)
        {
            band = RopeFrequencyBand.Kept;
            return baseQ127;
        }

        BigInteger one = BigInteger.One << _scaleBits;
        if (x < eightPi * _low)
        {
            band = RopeFrequencyBand.Divided;
            return (UInt128)RoundHalfEven(f << _scaleBits, _factor);
        }

        band = RopeFrequencyBand.Smooth;
        BigInteger smoothNumerator = x - (eightPi * _low);
        BigInteger smoothDenominator = eightPi * (_high - _low);
        return (UInt128)RoundHalfEven(f * ((one * smoothDenominator) + (smoothNumerator * (_factor - one))), _factor * smoothDenominator);
    }

    // n / d rounded to nearest, ties to even (n >= 0, d > 0)
    private static BigInteger RoundHalfEven(BigInteger n, BigInteger d)
    {
        BigInteger q = BigInteger.DivRem(n, d, out BigInteger r);
        int c = (2 * r).CompareTo(d);
        return c > 0 || (c == 0 && !q.IsEven) ? q + 1 : q;
    }
}
