// BOUNDARY FILE: the only place in FixedPoint/ where floating point may appear (the source-scan test
// excludes this file by name). Nothing here is used by the integer compute core except the exact bit
// decomposition of a double (no floating-point arithmetic).
namespace GpuIntLab.Core.FixedPoint;

public static partial class Q48
{
    /// <summary>Boundary only (display, metrics, tests): raw / 2^48 rounded to the nearest double.</summary>
    public static double ToDouble(long raw) => raw * (1.0 / One); // (double)raw rounds once; 2^-48 scaling is exact

    /// <summary>
    /// Boundary only: the double <paramref name="v"/> rounded once (RNE) to Q16.48 by bit manipulation.
    /// Throws <see cref="Q48OverflowException"/> for |v| beyond the range (and infinities), ArgumentException for NaN.
    /// </summary>
    public static long FromDouble(double v)
    {
        if (double.IsNaN(v))
        {
            throw new ArgumentException("Q48.FromDouble: NaN", nameof(v));
        }

        DecomposeDouble(v, out bool negative, out ulong mantissa, out int exponent, out bool infinite);
        if (infinite)
        {
            throw new Q48OverflowException($"Q48.FromDouble overflow: {v:R}");
        }

        if (mantissa == 0)
        {
            return 0;
        }

        int s = exponent + FracBits; // raw = mantissa * 2^s
        UInt128 magnitude;
        if (s >= 0)
        {
            if (s > 63)
            {
                throw new Q48OverflowException($"Q48.FromDouble overflow: {v:R}");
            }

            magnitude = (UInt128)mantissa << s;
        }
        else
        {
            magnitude = Wide.RoundShiftU(mantissa, -s);
        }

        if (!TryApplySign(magnitude, negative, out long raw))
        {
            throw new Q48OverflowException($"Q48.FromDouble overflow: {v:R}");
        }

        return raw;
    }

    /// <summary>Exact decomposition |v| = mantissa * 2^exponent from the IEEE-754 bits (no float arithmetic).</summary>
    internal static void DecomposeDouble(double v, out bool negative, out ulong mantissa, out int exponent, out bool infinite)
    {
        long bits = BitConverter.DoubleToInt64Bits(v);
        negative = bits < 0;
        int biased = (int)((bits >> 52) & 0x7FF);
        ulong fraction = (ulong)bits & ((1UL << 52) - 1);
        infinite = biased == 0x7FF;
        if (biased == 0)
        {
            mantissa = fraction;
            exponent = -1074;
        }
        else
        {
            mantissa = fraction | (1UL << 52);
            exponent = biased - 1075;
        }
    }
}

public sealed partial class RopeTable
{
    /// <summary>
    /// Builds the table; <paramref name="ropeTheta"/> (boundary) is decomposed exactly from its bits into
    /// m * 2^e, and everything after that is integer arithmetic. theta must be finite, in (1, 2^63).
    /// </summary>
    public RopeTable(int headDim, int maxPositions, double ropeTheta)
        : this(headDim, maxPositions, ropeTheta, null)
    {
    }

    /// <summary>
    /// As above, with the frequencies rewritten by a llama3 <paramref name="scaling"/> (validated here:
    /// ArgumentException naming the rope_scaling field); its doubles are taken exactly from their bits.
    /// </summary>
    public RopeTable(int headDim, int maxPositions, double ropeTheta, GpuIntLab.Core.Models.RopeScaling? scaling)
        : this(headDim, maxPositions, ThetaBits(ropeTheta).Mantissa, ThetaBits(ropeTheta).Exponent, ScalingRule(scaling))
    {
        Scaling = scaling;
    }

    /// <summary>The rope_scaling the frequencies were rewritten with, or null.</summary>
    public GpuIntLab.Core.Models.RopeScaling? Scaling { get; }

    private static Llama3FrequencyRule? ScalingRule(GpuIntLab.Core.Models.RopeScaling? scaling)
    {
        if (scaling == null)
        {
            return null;
        }

        scaling.Validate();
        Q48.DecomposeDouble(scaling.Factor, out _, out ulong factorMantissa, out int factorExponent, out _);
        Q48.DecomposeDouble(scaling.LowFreqFactor, out _, out ulong lowMantissa, out int lowExponent, out _);
        Q48.DecomposeDouble(scaling.HighFreqFactor, out _, out ulong highMantissa, out int highExponent, out _);
        return new Llama3FrequencyRule(
            factorMantissa, factorExponent, lowMantissa, lowExponent, highMantissa, highExponent, scaling.OriginalMaxPositionEmbeddings);
    }

    private static (ulong Mantissa, int Exponent) ThetaBits(double theta)
    {
        Q48.DecomposeDouble(theta, out bool negative, out ulong m, out int e, out bool infinite);
        if (negative || infinite || double.IsNaN(theta) || m == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(theta), theta, "rope theta must be finite and > 1");
        }

        // strip trailing zero bits so the integer constructor sees a canonical mantissa
        int tz = System.Numerics.BitOperations.TrailingZeroCount(m);
        return (m >> tz, e + tz);
    }
}
