using System.Numerics;

namespace GpuIntLab.Core.Formats.LowBit;

/// <summary>
/// An exact binary rational Significand * 2^Exponent (or NaN), the result type of the exact block dot products.
/// Every MX / NVFP4 element and scale is a dyadic rational, so block dot products have an exact value of this form;
/// <see cref="ToDouble"/> rounds it once (to nearest, ties to even).
/// </summary>
public readonly record struct ExactDyadic(BigInteger Significand, int Exponent, bool IsNaN)
{
    /// <summary>The NaN value (a block with a NaN scale took part).</summary>
    public static ExactDyadic NaN => new(BigInteger.Zero, 0, true);

    /// <summary>The value rounded once to the nearest double, ties to even (exact when it fits in 53 bits).</summary>
    public double ToDouble()
    {
        if (IsNaN) return double.NaN;
        if (Significand.IsZero) return 0.0;
        BigInteger magnitude = BigInteger.Abs(Significand);
        long bitLength = (long)magnitude.GetBitLength();
        long exponent = Exponent;
        if (bitLength > 53)
        {
            int shift = (int)(bitLength - 53);
            BigInteger kept = magnitude >> shift;
            BigInteger dropped = magnitude - (kept << shift);
            BigInteger half = BigInteger.One << (shift - 1);
            if (dropped > half || (dropped == half && !kept.IsEven)) kept += 1;
            magnitude = kept;
            exponent += shift;
        }
        double value = Math.ScaleB((double)magnitude, (int)Math.Clamp(exponent, int.MinValue / 2, int.MaxValue / 2));
        return Significand.Sign < 0 ? -value : value;
    }

    /// <summary>Exact equality of values (different significand/exponent pairs of one value compare equal).</summary>
    public bool ValueEquals(ExactDyadic other)
    {
        if (IsNaN || other.IsNaN) return false;
        int common = Math.Min(Exponent, other.Exponent);
        return (Significand << (Exponent - common)) == (other.Significand << (other.Exponent - common));
    }
}
