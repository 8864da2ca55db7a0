using System.Text;

namespace GpuIntLab.Core.FixedPoint;

/// <summary>
/// Q16.48 fixed point: a value is <c>raw / 2^48</c> with <c>raw</c> a <see cref="long"/>, so the range is
/// [-32768, 32768) and one ulp is 2^-48 (~3.55e-15).
/// <para>
/// Every operation rounds once, to nearest with ties to even (RNE). Results outside the range throw
/// <see cref="Q48OverflowException"/>; nothing wraps. The compute core is integer only
/// (<see cref="long"/>, <see cref="ulong"/>, <see cref="Int128"/>, <see cref="UInt128"/>, shifts,
/// <c>Math.BigMul</c>); floating point appears only in <c>Q48Boundary.cs</c> (display/test conversions
/// and the exact bit decomposition of RoPE's theta).
/// </para>
/// </summary>
public static partial class Q48
{
    public const int FracBits = 48;
    public const long One = 1L << 48;

    /// <summary>The integer <paramref name="v"/> as Q16.48; throws for |v| outside [-32768, 32767].</summary>
    public static long FromInt(int v)
    {
        if (v < -32768 || v > 32767)
        {
            throw Errors.FromIntOverflow(v);
        }

        return (long)v << FracBits;
    }

    /// <summary>a*b, rounded to nearest even once from the exact 128-bit product.</summary>
    public static long Mul(long a, long b)
    {
        long hi = Math.BigMul(a, b, out long lo);
        if (!TryRoundShift(hi, (ulong)lo, FracBits, out long r))
        {
            throw Errors.Overflow2("Mul", a, "*", b);
        }

        return r;
    }

    /// <summary>a/b, rounded to nearest even once from the exact quotient and remainder.</summary>
    public static long Div(long a, long b)
    {
        if (b == 0)
        {
            throw Errors.DivideByZero(a);
        }

        bool negative = (a < 0) ^ (b < 0);
        UInt128 n = (UInt128)Wide.UAbs(a) << FracBits;
        UInt128 d = Wide.UAbs(b);
        UInt128 q = n / d;
        UInt128 r2 = (n - (q * d)) << 1;
        if (r2 > d || (r2 == d && (q & 1) != 0))
        {
            q++;
        }

        if (!TryApplySign(q, negative, out long result))
        {
            throw Errors.Overflow2("Div", a, "/", b);
        }

        return result;
    }

    /// <summary>
    /// RNE of v / 2^shift as a raw Q16.48 value (0 &lt;= shift &lt;= 127). Matmul uses it with shift 48 on the
    /// exact sum of Q32.96 products.
    /// </summary>
    public static long RoundShift(Int128 v, int shift)
    {
        if ((uint)shift > 127)
        {
            throw new ArgumentOutOfRangeException(nameof(shift), shift, "shift must be in [0, 127]");
        }

        if (!TryRoundShift(v, shift, out long r))
        {
            throw Errors.RoundShiftOverflow(v, shift);
        }

        return r;
    }

    /// <summary>
    /// numerator / denominator (denominator &gt; 0) rounded once to nearest, ties to even, as a raw Q16.48 value:
    /// RMSNorm divides its exact 128-bit sum of squares by n * 2^48 with it.
    /// </summary>
    public static long DivideRound(Int128 numerator, Int128 denominator)
    {
        if (denominator <= 0) throw new ArgumentOutOfRangeException(nameof(denominator), "denominator must be positive");
        var (q, r) = Int128.DivRem(numerator, denominator);
        if (r < 0) { q -= 1; r += denominator; } // floor division
        Int128 twice = r << 1;
        if (twice > denominator || (twice == denominator && (q & 1) != 0)) q += 1;
        if (q > long.MaxValue || q < long.MinValue) throw new Q48OverflowException($"division result {q} exceeds the Q16.48 range");
        return (long)q;
    }

    /// <summary>sqrt(x), correctly rounded (RNE; ties cannot occur). Throws for x &lt; 0.</summary>
    public static long Sqrt(long x)
    {
        if (x < 0)
        {
            throw Errors.Domain("Sqrt", "a negative", x);
        }

        // sqrt(x / 2^48) * 2^48 = sqrt(x * 2^48)
        UInt128 n = (UInt128)(ulong)x << FracBits;
        ulong s = Wide.ISqrt(n);
        // round up iff n > (s + 1/2)^2 = s^2 + s + 1/4, i.e. n - s^2 > s (integers)
        if (n - Math.BigMul(s, s) > s)
        {
            s++;
        }

        return (long)s;
    }

    /// <summary>
    /// 1/sqrt(x), correctly rounded (RNE; ties cannot occur). Throws ArgumentOutOfRange for x &lt;= 0 and
    /// <see cref="Q48OverflowException"/> when the result reaches 32768 (raw x &lt;= 2^18, x &lt;= 2^-30).
    /// </summary>
    public static long Rsqrt(long x)
    {
        if (x <= 0)
        {
            throw Errors.Domain("Rsqrt", "a non-positive", x);
        }

        // result = round(2^48 / sqrt(x / 2^48)) = round(2^72 / sqrt(x)) = round(sqrt(2^144 / x))
        if (x <= (1L << 18))
        {
            throw Errors.Overflow1("Rsqrt", "1/sqrt", x);
        }

        ulong ux = (ulong)x;
        // floor(2^144 / x) = floor(2^128 / x) * 2^16 + floor(((2^128 mod x) * 2^16) / x)
        UInt128 q1 = UInt128.MaxValue / ux;
        UInt128 r1 = UInt128.MaxValue - (q1 * ux) + 1; // 2^128 = q1 * x + r1, 1 <= r1 <= x
        if (r1 == ux)
        {
            q1++;
            r1 = 0;
        }

        UInt128 q = (q1 << 16) + ((r1 << 16) / ux);
        ulong s = Wide.ISqrt(q); // floor(sqrt(2^144 / x)) = floor(2^72 / sqrt(x)), < 2^63

        // round up iff 2^72/sqrt(x) > s + 1/2  <=>  x * (2s + 1)^2 < 2^146 (equality impossible)
        ulong c = (2 * s) + 1;
        UInt128 sq = Math.BigMul(c, c);
        if (Wide.MulHi64(sq, ux) < (UInt128.One << 82))
        {
            s++;
        }

        return (long)s;
    }

    /// <summary>RNE of (hi * 2^64 + lo) / 2^shift into a long; false when it does not fit.</summary>
    internal static bool TryRoundShift(long hi, ulong lo, int shift, out long result)
    {
        if (shift is >= 1 and <= 63)
        {
            // floor(v / 2^shift) fits a long iff hi is in [-2^(shift-1), 2^(shift-1)); otherwise (rare) take
            // the general path, which also handles floor = long.MinValue - 1 rounding up into range
            if ((ulong)(hi + (1L << (shift - 1))) >= (1UL << shift))
            {
                return TryRoundShiftGeneral(((Int128)hi << 64) | lo, shift, out result);
            }

            long q = (hi << (64 - shift)) | (long)(lo >> shift);
            ulong rem = lo & ((1UL << shift) - 1);
            ulong half = 1UL << (shift - 1);
            if (rem > half || (rem == half && (q & 1) != 0))
            {
                if (q == long.MaxValue)
                {
                    result = 0;
                    return false;
                }

                q++;
            }

            result = q;
            return true;
        }

        return TryRoundShiftGeneral(((Int128)hi << 64) | lo, shift, out result);
    }

    internal static bool TryRoundShift(Int128 v, int shift, out long result) =>
        shift is >= 1 and <= 63
            ? TryRoundShift((long)(v >> 64), (ulong)v, shift, out result)
            : TryRoundShiftGeneral(v, shift, out result);

    private static bool TryRoundShiftGeneral(Int128 v, int shift, out long result)
    {
        Int128 q = v;
        if (shift > 0)
        {
            q = v >> shift;
            UInt128 rem = (UInt128)v & ((UInt128.One << shift) - 1);
            UInt128 half = UInt128.One << (shift - 1);
            if (rem > half || (rem == half && (q & 1) != 0))
            {
                q++;
            }
        }

        if (q > long.MaxValue || q < long.MinValue)
        {
            result = 0;
            return false;
        }

        result = (long)q;
        return true;
    }

    internal static bool TryApplySign(UInt128 magnitude, bool negative, out long result)
    {
        if (negative)
        {
            if (magnitude > (UInt128.One << 63))
            {
                result = 0;
                return false;
            }

            result = (long)(0UL - (ulong)magnitude);
            return true;
        }

        if (magnitude > long.MaxValue)
        {
            result = 0;
            return false;
        }

        result = (long)magnitude;
        return true;
    }

    /// <summary>Integer-only decimal rendering of a raw Q16.48 value for messages, e.g. "-1.5 (raw -422212465065984)".</summary>
    internal static string Describe(long raw)
    {
        var sb = new StringBuilder();
        ulong mag = Wide.UAbs(raw);
        if (raw < 0)
        {
            sb.Append('-');
        }

        sb.Append(mag >> FracBits);
        ulong frac = mag & (ulong)(One - 1);
        if (frac != 0)
        {
            sb.Append('.');
            // 16 decimals, truncated (2^-48 ~ 3.6e-15)
            for (int i = 0; i < 16 && frac != 0; i++)
            {
                frac *= 10;
                sb.Append((char)('0' + (int)(frac >> FracBits)));
                frac &= (ulong)(One - 1);
            }
        }

        sb.Append(" (raw ").Append(raw).Append(')');
        return sb.ToString();
    }
}
