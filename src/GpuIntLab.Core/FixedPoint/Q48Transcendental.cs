using System.Numerics;
using static GpuIntLab.Core.FixedPoint.Q48Constants;

namespace GpuIntLab.Core.FixedPoint;

public static partial class Q48
{
    /// <summary>Exp overflows (result &gt;= 32768) for inputs above ln(32768) ~ 10.397; 11 is a safe early cut.</summary>
    private const long ExpEarlyOverflow = 11L << FracBits;

    /// <summary>exp(x) &lt; 2^-49 for x &lt; -33.97, so such results round to 0; below -40 we skip the work.</summary>
    private const long ExpEarlyZero = -(40L << FracBits);

    /// <summary>
    /// e^x, rounded once (RNE) from an internal value accurate to ~2^-87 relative (&lt;= ~2^-24 ulp even at
    /// 32767), so the result is the correctly rounded one except within that distance of a tie. Returns 0 where the result rounds to 0
    /// (x &lt;= ~-33.97); throws <see cref="Q48OverflowException"/> for x &gt; ln(32768).
    /// </summary>
    public static long Exp(long x)
    {
        if (x > ExpEarlyOverflow)
        {
            throw Errors.Overflow1("Exp", "exp", x);
        }

        if (x < ExpEarlyZero)
        {
            return 0;
        }

        UInt128 m = ExpCore((Int128)x << 62, out int e);
        UInt128 raw = Wide.RoundShiftU(m, 126 - FracBits - e);
        if (raw > long.MaxValue)
        {
            throw Errors.Overflow1("Exp", "exp", x);
        }

        return (long)raw;
    }

    /// <summary>
    /// exp(x) for x in Q.110 with |x| &lt;= 2^10: returns m and e with exp(x) ~ m * 2^(e - 126), m in
    /// [2^126, 2^127) (relative error ~2^-87: 1 + r + r^2/2 to ~2^-125, the 64-bit r^3 tail to ~2^-87).
    /// </summary>
    internal static UInt128 ExpCore(Int128 xQ110, out int e)
    {
        // x = n * ln2/256 + r, 0 <= r < ln2/256, with n guessed from a 64-bit product and fixed exactly.
        long xa = (long)(xQ110 >> 62);
        long n = (long)(Math.BigMul(xa, ExpInvStepQ54) >> 102);
        Int128 r = xQ110 - (n * ExpStepQ110);
        while (r < 0)
        {
            n--;
            r += ExpStepQ110;
        }

        while (r >= ExpStepQ110)
        {
            n++;
            r -= ExpStepQ110;
        }

        // exp(r) = 1 + r + r^2/2 + r^3 * (1/3! + r/4! + ... + r^5/8!)  (truncation r^9/9! < 2^-95):
        // the first three terms exactly in Q.126, the small tail (< 2^-28) in 64-bit fixed point.
        UInt128 ru = (UInt128)r;                    // Q.110, < 2^101.5
        ulong rh = (ulong)(ru >> 38);               // Q.72, top 64 bits
        ulong rl = (ulong)ru & ((1UL << 38) - 1);   // the remaining 38 bits (Q.110)
        // r^2 = (rh 2^38 + rl)^2 / 2^220 -> Q.126: rh^2 / 2^18 + rh rl / 2^55 (rl^2 term < 1 unit)
        UInt128 r2 = (Math.BigMul(rh, rh) >> 18) + (Math.BigMul(rh, rl) >> 55);
        ulong[] c = ExpTail;
        ulong q = c[5];
        for (int k = 4; k >= 0; k--)
        {
            q = c[k] + (ulong)(Math.BigMul(q, rh) >> 72); // Q.64
        }

        ulong r2h = (ulong)(r2 >> 46);                     // r^2 in Q.80
        ulong r3 = (ulong)(Math.BigMul(r2h, rh) >> 64);    // r^3 in Q.88
        ulong tail = (ulong)(Math.BigMul(r3, q) >> 64);    // r^3 q in Q.88
        UInt128 p = (UInt128.One << 126) + (ru << 16) + (r2 >> 1) + ((UInt128)tail << 38);

        e = (int)(n >> ExpTableBits);
        return Wide.MulShr(Pow2Frac[(int)(n & ((1 << ExpTableBits) - 1))], p, 126);
    }

    /// <summary>
    /// ln(x) for x &gt; 0, rounded once (RNE) from an internal value accurate to ~2^-80 absolute
    /// (~2^-32 ulp), i.e. correctly rounded except within that distance of a tie.
    /// </summary>
    public static long Log(long x)
    {
        if (x <= 0)
        {
            throw Errors.Domain("Log", "a non-positive", x);
        }

        return RoundShift(LogCore((ulong)x, -FracBits), 120 - FracBits);
    }

    /// <summary>ln(v * 2^e2) in Q.120 for v &gt; 0 and |bitlength(v) + e2| &lt;= 64; absolute error ~2^-80.</summary>
    internal static Int128 LogCore(ulong v, int e2)
    {
        int b = 63 - BitOperations.LeadingZeroCount(v);
        ulong m = v << (63 - b); // mantissa in [1, 2), Q.63
        int j = (int)(m >> 55) & 0xFF;

        // m * R_j = 1 + z exactly, 0 <= z < 2^-7.9 (Q.79); ln m = -ln R_j + ln(1 + z)
        UInt128 z = Math.BigMul(m, LogRecip[j]) - (UInt128.One << 79);
        ulong zh = (ulong)(z >> 8);   // Q.71, top bits of z
        ulong zl = (ulong)z & 0xFF;   // remaining 8 bits (Q.79)

        // ln(1+z) = z - z^2/2 + z^3 * (1/3 - z/4 + ... + z^8/11)  (truncation z^12/12 < 2^-98):
        // z and z^2/2 exactly in Q.126, the small tail (< 2^-23) in signed 64-bit fixed point.
        UInt128 z2 = (Math.BigMul(zh, zh) >> 16) + (Math.BigMul(zh, zl) >> 23); // z^2 in Q.126
        long zs = (long)(z >> 9);     // Q.70, < 2^62.1 (z can slightly exceed 2^-8), for the signed tail
        long[] c = LogTail;
        long q = c[8];
        for (int k = 7; k >= 0; k--)
        {
            q = c[k] + (long)(Math.BigMul(q, zs) >> 70); // Q.63
        }

        ulong z2h = (ulong)(z2 >> 48);                              // z^2 in Q.78
        ulong z3 = (ulong)(Math.BigMul(z2h, zh) >> 64);             // z^3 in Q.85
        Int128 tail = Math.BigMul((long)z3, q) >> 63;               // z^3 q in Q.85
        UInt128 l = (UInt128)((Int128)(z << 47) - (Int128)(z2 >> 1) + (tail << 41));
        Int128 frac = (Int128)(LogNegLnRecip[j] + l); // Q.126, < 0.7
        return ((b + e2) * Ln2Q120) + ((frac + 32) >> 6);
    }

    /// <summary>
    /// sin(x) and cos(x) for any Q16.48 x: reduced modulo pi/2 with a 100-bit pi/2 (|x| &lt;= 32768 keeps
    /// the reduced angle within ~2^-86 of exact), then Taylor series in Q.126 (~2^-70 or better); each output
    /// is rounded once (RNE).
    /// </summary>
    public static void SinCos(long x, out long sin, out long cos)
    {
        SinCosCore((Int128)x << 52, out Int128 s, out Int128 c);
        sin = RoundShift(s, 126 - FracBits);
        cos = RoundShift(c, 126 - FracBits);
    }

    /// <summary>sin and cos of an angle t in Q.100 (|t| &lt; 2^24) as Q.126 values.</summary>
    internal static void SinCosCore(Int128 tQ100, out Int128 sinQ126, out Int128 cosQ126)
    {
        // k = round(t / (pi/2)) from 64-bit products (a guess: |r| may exceed pi/4 by ~2^-30, which the
        // series tolerates); r = t - k pi/2 exactly in Q.100.
        long ta = (long)(tQ100 >> 64);
        long k = (long)((Math.BigMul(ta, TwoOverPiQ62) + (Int128.One << 97)) >> 98);
        Int128 r = tQ100 - (k * PiOver2Q100);
        bool negative = r < 0;
        UInt128 a = (UInt128)(negative ? -r : r) << 26; // |r| in Q.126
        UInt128 y = Wide.MulShr(a, a, 126);             // r^2 in Q.126
        ulong yh = (ulong)(y >> 62);                     // r^2 in Q.64 for the inner Horner steps

        Int128[] sc = SinCoef;
        Int128 ps = sc[13];
        for (int i = 12; i >= 1; i--)
        {
            ps = sc[i] + Wide.MulS64(ps, yh, 64);
        }

        UInt128 sinPoly = (UInt128)(sc[0] + Wide.MulS128(ps, y, 126)); // sin(r)/r, in (0.89, 1]
        Int128 sinR = (Int128)Wide.MulShr(a, sinPoly, 126);

        Int128[] cc = CosCoef;
        Int128 pc = cc[14];
        for (int i = 13; i >= 1; i--)
        {
            pc = cc[i] + Wide.MulS64(pc, yh, 64);
        }

        Int128 cosR = cc[0] + Wide.MulS128(pc, y, 126);
        if (negative)
        {
            sinR = -sinR;
        }

        switch ((int)(k & 3))
        {
            case 0:
                sinQ126 = sinR;
                cosQ126 = cosR;
                break;
            case 1:
                sinQ126 = cosR;
                cosQ126 = -sinR;
                break;
            case 2:
                sinQ126 = -sinR;
                cosQ126 = -cosR;
                break;
            default:
                sinQ126 = -cosR;
                cosQ126 = sinR;
                break;
        }
    }

    /// <summary>
    /// 1/(1 + e^-x), rounded once (RNE) from an internal value within ~2^-86 absolute. Stable for any |x|: for x &lt; 0 it
    /// is computed as e^x/(1 + e^x), so tiny outputs keep full absolute accuracy.
    /// </summary>
    public static long Sigmoid(long x)
    {
        if (x >= -ExpEarlyZero)
        {
            return One; // 1 - sigmoid(x) < e^-40 < 2^-49
        }

        if (x <= ExpEarlyZero)
        {
            return 0;
        }

        return (long)Wide.RoundShiftU(SigmoidQ126(x), 126 - FracBits);
    }

    /// <summary>
    /// x * sigmoid(x), rounded once (RNE) from the exact product of x and a sigmoid within ~2^-86: error
    /// within 0.5 ulp + |x| * 2^-86 (i.e. &lt;= 0.5 + 2^-33 ulp for |x| &lt; 40; correctly rounded except at near-ties).
    /// </summary>
    public static long Silu(long x)
    {
        if (x >= -ExpEarlyZero)
        {
            return x; // x * e^-x / (1 + e^-x) < 40 e^-40 < 2^-49
        }

        if (x <= ExpEarlyZero)
        {
            return 0; // |x| e^x < 2^-49 for x <= -40
        }

        UInt128 s = SigmoidQ126(x);
        ulong ax = Wide.UAbs(x);
        // |x| * s / 2^126 with one RNE: 192-bit product = hi * 2^64 + lo
        UInt128 lo = Math.BigMul(ax, (ulong)s);
        UInt128 hi = Math.BigMul(ax, (ulong)(s >> 64)) + (lo >> 64);
        ulong low = (ulong)lo;
        // shift by 126 = 62 bits of hi, then all 64 bits of low
        UInt128 q = hi >> 62;
        UInt128 remHi = hi & ((UInt128.One << 62) - 1);
        UInt128 halfHi = UInt128.One << 61;
        if (remHi > halfHi || (remHi == halfHi && (low != 0 || (q & 1) != 0)))
        {
            q++;
        }

        return x < 0 ? -(long)q : (long)q;
    }

    /// <summary>sigmoid(x) in Q.126 for |x| &lt; 40.</summary>
    private static UInt128 SigmoidQ126(long x)
    {
        long ax = x < 0 ? -x : x;
        UInt128 m = ExpCore(-(Int128)ax << 62, out int e); // e^-|x| = m * 2^(e - 126), e <= 0
        UInt128 em = m >> -e;                               // e^-|x| in Q.126
        UInt128 inv = Reciprocal126((UInt128.One << 126) + em); // 1 / (1 + e^-|x|)
        return x >= 0 ? inv : Wide.MulShr(em, inv, 126);
    }

    /// <summary>2^252 / d for d in [2^126, 2^127] (i.e. 1/v in Q.126 for v in [1, 2]), ~2^-122 relative.</summary>
    private static UInt128 Reciprocal126(UInt128 d)
    {
        ulong dh = (ulong)(d >> 64);                                   // in [2^62, 2^63]
        UInt128 y = ((UInt128.One << 127) / dh) << 61;                 // ~2^-62 relative
        UInt128 t = (UInt128.One << 127) - Wide.MulShr(d, y, 126);     // 2 - d*y
        return Wide.MulShr(y, t, 126);                                 // one Newton step: ~2^-122
    }

    /// <summary>
    /// Softmax: subtract the max, exponentiate each element to Q2.62 (an RNE-rounded long, error
    /// &lt;= 2^-63), sum exactly in <see cref="Int128"/>, and divide each element by the sum with one RNE
    /// into Q16.48. Per element |p_i - exact| &lt;= 0.5 ulp + (n + 1) * 2^-15 ulp (&lt;= 1 ulp for
    /// n &lt;= 16383). <paramref name="x"/> and <paramref name="p"/> may be the same span.
    /// </summary>
    public static void Softmax(ReadOnlySpan<long> x, Span<long> p)
    {
        if (p.Length != x.Length)
        {
            throw Errors.SoftmaxLength(p.Length, x.Length);
        }

        if (x.Length == 0)
        {
            return;
        }

        long max = x[0];
        for (int i = 1; i < x.Length; i++)
        {
            if (x[i] > max)
            {
                max = x[i];
            }
        }

        UInt128 sum = 0;
        for (int i = 0; i < x.Length; i++)
        {
            Int128 d = (Int128)x[i] - max; // <= 0
            ulong e = 0;
            if (d >= ExpEarlyZero)
            {
                // exp(d) * 2^62 with one RNE (d >= -40 keeps the shift <= 122)
                UInt128 m = ExpCore(d << 62, out int ex);
                e = (ulong)Wide.RoundShiftU(m, 64 - ex);
            }

            p[i] = (long)e; // stash the Q.62 exponential in the output
            sum += e;
        }

        for (int i = 0; i < p.Length; i++)
        {
            UInt128 n = (UInt128)(ulong)p[i] << FracBits;
            UInt128 q = n / sum;
            UInt128 r2 = (n - (q * sum)) << 1;
            if (r2 > sum || (r2 == sum && (q & 1) != 0))
            {
                q++;
            }

            p[i] = (long)q;
        }
    }
}
