namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>
/// The integer rounding and root primitives every integer-only op is built from, on int64 only. Plain static methods
/// with scalar arguments and no library calls, so ILGPU compiles the same code into the device kernels and the CPU
/// reference engine and the device compute one function. No floating point (a test scans this folder's sources).
/// </summary>
public static class IntegerArithmetic
{
    /// <summary>
    /// v / 2^shift rounded to nearest, ties to even (RNE), for any shift: shift &lt;= 0 is an exact left shift (the caller
    /// keeps |v| * 2^-shift below 2^63). Why RNE: it is unbiased, so a long sum of requantised terms does not drift,
    /// and it is the rounding the lab uses everywhere (Q16.48, the float formats). Source: the rounding right shift of
    /// integer-only requantisation (I-BERT's dyadic requantisation, Kim et al. 2021; gemmlowp's
    /// RoundingDivideByPOT, which rounds half away from zero instead).
    /// </summary>
    public static long RoundShift(long v, int shift)
    {
        if (shift <= 0) return v << -shift;
        if (shift >= 64) return 0; // |v| <= 2^63: |v / 2^64| <= 1/2, and the tie -1/2 rounds to the even 0
        if (shift == 63) return v > (1L << 62) ? 1 : v < -(1L << 62) ? -1 : 0; // ties at +-2^62 go to the even 0
        long q = v >> shift;                 // floor
        long remainder = v - (q << shift);   // in [0, 2^shift)
        long half = 1L << (shift - 1);
        if (remainder > half || (remainder == half && (q & 1) != 0)) q++;
        return q;
    }

    /// <summary>
    /// n / d rounded to nearest, ties to even, for d &gt; 0 and d &lt; 2^62 (so 2·remainder cannot overflow). The integer
    /// division of I-BERT's IntSoftmax factor and I-LLM's DI-Norm, here correctly rounded instead of floored, so the
    /// error is at most half a unit of the result.
    /// </summary>
    public static long RoundDiv(long n, long d)
    {
        long q = n / d;               // toward zero
        long r = n - q * d;
        if (r < 0) { q--; r += d; }   // floor, remainder in [0, d)
        long twice = 2 * r;
        if (twice > d || (twice == d && (q & 1) != 0)) q++;
        return q;
    }

    /// <summary>ceil(n / d) for n &gt;= 0, d &gt; 0.</summary>
    public static long CeilDiv(long n, long d) => (n + d - 1) / d;

    /// <summary>Bits needed for a non-negative value: 0 for 0, 1 for 1, 2 for 2..3, ... (binary search, no intrinsic, so ILGPU compiles it).</summary>
    public static int BitLength(long v)
    {
        int bits = 0;
        if (v >= 1L << 32) { v >>= 32; bits += 32; }
        if (v >= 1L << 16) { v >>= 16; bits += 16; }
        if (v >= 1L << 8) { v >>= 8; bits += 8; }
        if (v >= 1L << 4) { v >>= 4; bits += 4; }
        if (v >= 1L << 2) { v >>= 2; bits += 2; }
        if (v >= 1L << 1) { v >>= 1; bits += 1; }
        return bits + (int)v;
    }

    /// <summary>|v| for v &gt; long.MinValue.</summary>
    public static long Abs(long v) => v < 0 ? -v : v;

    /// <summary>Clamps to the int32 range: the saturation of int32 hardware registers (residual stream, requantised outputs).</summary>
    public static int SaturateInt32(long v) => v > int.MaxValue ? int.MaxValue : v < int.MinValue ? int.MinValue : (int)v;

    /// <summary>
    /// floor(sqrt(n)) for n &gt;= 0, exact. Source: I-BERT (Kim et al., ICML 2021) Algorithm 4, integer Newton:
    /// x0 = 2^ceil(bits(n)/2) &gt;= sqrt(n), then x_{i+1} = floor((x_i + floor(n / x_i)) / 2) while it decreases; from an
    /// over-estimate Newton's integer iterates decrease monotonically to floor(sqrt(n)) and the first non-decrease
    /// stops there. At most ~6 iterations for 63-bit inputs because the start is within a factor 2 (quadratic
    /// convergence). Why: RMSNorm needs the root of an integer mean of squares with no floating point.
    /// </summary>
    public static long Isqrt(long n)
    {
        if (n <= 0) return 0;
        long x = 1L << ((BitLength(n) + 1) / 2);
        while (true)
        {
            long next = (x + n / x) >> 1;
            if (next >= x) return x;
            x = next;
        }
    }
}
