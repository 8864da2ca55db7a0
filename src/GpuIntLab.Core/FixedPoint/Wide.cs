using System.Numerics;

namespace GpuIntLab.Core.FixedPoint;

/// <summary>
/// Exact wide-integer helpers (128x128 -> 256-bit products, shifts, integer square root).
/// Integer only: these are the building blocks of every Q16.48 function.
/// </summary>
internal static class Wide
{
    /// <summary>Full 256-bit product a*b; returns the high 128 bits, <paramref name="lo"/> the low 128.</summary>
    public static UInt128 MulFull(UInt128 a, UInt128 b, out UInt128 lo)
    {
        ulong a0 = (ulong)a, a1 = (ulong)(a >> 64), b0 = (ulong)b, b1 = (ulong)(b >> 64);
        UInt128 p00 = Math.BigMul(a0, b0);
        UInt128 p01 = Math.BigMul(a0, b1);
        UInt128 p10 = Math.BigMul(a1, b0);
        UInt128 p11 = Math.BigMul(a1, b1);
        UInt128 mid = (p00 >> 64) + (ulong)p01 + (ulong)p10; // < 3 * 2^64
        lo = (mid << 64) | (ulong)p00;
        return p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    }

    /// <summary>floor(a*b / 2^s) for 1 &lt;= s &lt;= 128; the caller guarantees the result fits 128 bits.</summary>
    public static UInt128 MulShr(UInt128 a, UInt128 b, int s)
    {
        UInt128 hi = MulFull(a, b, out UInt128 lo);
        return s == 128 ? hi : (hi << (128 - s)) | (lo >> s);
    }

    /// <summary>floor(a*b / 2^64) for a 128-bit a and 64-bit b (exact).</summary>
    public static UInt128 MulHi64(UInt128 a, ulong b)
    {
        UInt128 lo = Math.BigMul((ulong)a, b);
        UInt128 hi = Math.BigMul((ulong)(a >> 64), b);
        return hi + (lo >> 64);
    }

    /// <summary>floor(a*b / 2^s) for 0 &lt;= s &lt;= 64, 64-bit a, 128-bit b; the result must fit 128 bits.</summary>
    public static UInt128 Mul64x128Shr(ulong a, UInt128 b, int s)
    {
        UInt128 lo = Math.BigMul(a, (ulong)b);
        UInt128 hi = Math.BigMul(a, (ulong)(b >> 64));
        return s == 0 ? (hi << 64) + lo : (hi << (64 - s)) + (lo >> s);
    }

    /// <summary>Signed p times unsigned y, divided by 2^s (s &gt;= 64), truncated toward zero.</summary>
    public static Int128 MulS64(Int128 p, ulong y, int s)
    {
        if (p >= 0)
        {
            return (Int128)(MulHi64((UInt128)p, y) >> (s - 64));
        }

        return -(Int128)(MulHi64((UInt128)(-p), y) >> (s - 64));
    }

    /// <summary>Signed p times unsigned y, divided by 2^s, truncated toward zero.</summary>
    public static Int128 MulS128(Int128 p, UInt128 y, int s)
    {
        if (p >= 0)
        {
            return (Int128)MulShr((UInt128)p, y, s);
        }

        return -(Int128)MulShr((UInt128)(-p), y, s);
    }

    /// <summary>Round-to-nearest-even of v / 2^s for s &gt;= 1 (any s; s &gt;= 129 gives 0).</summary>
    public static UInt128 RoundShiftU(UInt128 v, int s)
    {
        if (s >= 129)
        {
            return UInt128.Zero;
        }

        UInt128 halfBit = UInt128.One << 127;
        if (s == 128)
        {
            return v > halfBit ? UInt128.One : UInt128.Zero;
        }

        UInt128 q = v >> s;
        UInt128 rem = v & ((UInt128.One << s) - 1);
        UInt128 half = UInt128.One << (s - 1);
        if (rem > half || (rem == half && (q & 1) != 0))
        {
            q++;
        }

        return q;
    }

    /// <summary>floor(sqrt(n)) for any 128-bit n (Newton from above, exact).</summary>
    public static ulong ISqrt(UInt128 n)
    {
        if (n == 0)
        {
            return 0;
        }

        int bits = 128 - (int)UInt128.LeadingZeroCount(n);
        UInt128 x = UInt128.One << ((bits + 1) / 2); // >= sqrt(n)
        while (true)
        {
            UInt128 y = (x + (n / x)) >> 1;
            if (y >= x)
            {
                return (ulong)x;
            }

            x = y;
        }
    }

    /// <summary>|v| as an unsigned magnitude (exact for long.MinValue).</summary>
    public static ulong UAbs(long v) => v >= 0 ? (ulong)v : 0UL - (ulong)v;

    /// <summary>Number of significant bits of v (0 for 0).</summary>
    public static int BitLength(ulong v) => 64 - BitOperations.LeadingZeroCount(v);
}
