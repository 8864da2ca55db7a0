namespace GpuIntLab.Core.FixedPoint;

/// <summary>
/// High-precision constants and tables (integer only). The two hard-coded constants are verified in
/// the tests against BigInteger series (atanh series for ln2, Machin's formula for pi); every table
/// is computed here at type initialisation from them with integer series.
/// </summary>
internal static class Q48Constants
{
    /// <summary>ln 2 in Q0.128, correctly rounded: 0.B17217F7D1CF79ABC9E3B39803F2F6AF(40...)h.</summary>
    public static readonly UInt128 Ln2Q128 = new(0xB17217F7D1CF79ABUL, 0xC9E3B39803F2F6AFUL);

    /// <summary>pi in Q3.125, correctly rounded (pi * 2^125).</summary>
    public static readonly UInt128 PiQ125 = new(0x6487ED5110B4611AUL, 0x62633145C06E0E69UL);

    /// <summary>ln 2 in Q.120 (RNE from Q.128).</summary>
    public static readonly Int128 Ln2Q120 = (Int128)Wide.RoundShiftU(Ln2Q128, 8);

    // ---- exp ----------------------------------------------------------------------------------

    /// <summary>Exp splits x = n * ln2/256 + r with 0 &lt;= r &lt; ln2/256.</summary>
    public const int ExpTableBits = 8;

    /// <summary>ln2 / 256 in Q.110 (= ln2 * 2^102, RNE).</summary>
    public static readonly Int128 ExpStepQ110 = (Int128)Wide.RoundShiftU(Ln2Q128, 26);

    /// <summary>256 / ln2 in Q.54 (approximate; only used to guess n, which is then corrected exactly).</summary>
    public static readonly long ExpInvStepQ54 = (long)((UInt128.MaxValue / (ulong)(Ln2Q128 >> 64)) >> 2);

    /// <summary>2^(j/256) in Q1.126 for j in [0, 256).</summary>
    public static readonly UInt128[] Pow2Frac = BuildPow2Frac();

    /// <summary>1/(k+3)! in Q.64, k = 0..5: the tail of the degree-8 Taylor series of exp(r), r &lt; ln2/256.</summary>
    public static readonly ulong[] ExpTail = BuildExpTail();

    // ---- log ----------------------------------------------------------------------------------

    /// <summary>a_j = ceil(2^24 / (256 + j)): R_j = a_j / 2^16 &gt;= 1/(1 + j/256), so m * R_j is in [1, 1 + 2^-7.9).</summary>
    public static readonly ulong[] LogRecip = BuildLogRecip();

    /// <summary>-ln(R_j) = ln(2^16 / a_j) in Q.126 (atanh series).</summary>
    public static readonly UInt128[] LogNegLnRecip = BuildLogNegLnRecip();

    /// <summary>Tail of ln(1+z): (-1)^(k+4)/(k+3) in Q.63, k = 0..8 (terms z^3 .. z^11).</summary>
    public static readonly long[] LogTail = BuildLogTail();

    // ---- sin / cos ----------------------------------------------------------------------------

    /// <summary>pi/2 in Q.100 (RNE).</summary>
    public static readonly Int128 PiOver2Q100 = (Int128)Wide.RoundShiftU(PiQ125, 26);

    /// <summary>2/pi in Q.62 (approximate; only used to guess the quadrant count).</summary>
    public static readonly long TwoOverPiQ62 = (long)((UInt128.MaxValue / (ulong)(PiQ125 >> 64)) >> 4);

    /// <summary>sin(r)/r = sum (-1)^k y^k/(2k+1)!, y = r^2 &lt;= 0.62: coefficients in Q.126, k = 0..13.</summary>
    public static readonly Int128[] SinCoef = BuildTrigCoef(13, odd: true);

    /// <summary>cos(r) = sum (-1)^k y^k/(2k)!: coefficients in Q.126, k = 0..14.</summary>
    public static readonly Int128[] CosCoef = BuildTrigCoef(14, odd: false);

    private static UInt128 Factorial(int k)
    {
        UInt128 f = 1;
        for (int i = 2; i <= k; i++)
        {
            f *= (uint)i;
        }

        return f;
    }

    private static UInt128 RoundDiv(UInt128 n, UInt128 d) => (n + (d >> 1)) / d;

    private static ulong[] BuildExpTail()
    {
        var c = new ulong[6];
        for (int k = 0; k < c.Length; k++)
        {
            c[k] = (ulong)RoundDiv(UInt128.One << 64, Factorial(k + 3));
        }

        return c;
    }

    private static Int128[] BuildTrigCoef(int maxK, bool odd)
    {
        var c = new Int128[maxK + 1];
        for (int k = 0; k <= maxK; k++)
        {
            Int128 v = (Int128)RoundDiv(UInt128.One << 126, Factorial(odd ? (2 * k) + 1 : 2 * k));
            c[k] = (k & 1) == 0 ? v : -v;
        }

        return c;
    }

    private static long[] BuildLogTail()
    {
        var c = new long[9];
        for (int k = 0; k < c.Length; k++)
        {
            long v = (long)RoundDiv(UInt128.One << 63, (uint)(k + 3));
            c[k] = (k & 1) == 0 ? v : -v;
        }

        return c;
    }

    private static UInt128[] BuildPow2Frac()
    {
        var t = new UInt128[1 << ExpTableBits];
        for (int j = 0; j < t.Length; j++)
        {
            // r = j * ln2 / 256 in Q.128 (exact floor), then exp(r) by Taylor in Q.126.
            UInt128 r = ((Ln2Q128 >> 8) * (uint)j) + (((Ln2Q128 & 0xFF) * (uint)j) >> 8);
            UInt128 term = UInt128.One << 126;
            UInt128 sum = term;
            for (uint k = 1; term != 0; k++)
            {
                term = Wide.MulShr(term, r, 128) / k;
                sum += term;
            }

            t[j] = sum;
        }

        return t;
    }

    private static ulong[] BuildLogRecip()
    {
        var a = new ulong[256];
        for (int j = 0; j < 256; j++)
        {
            ulong d = 256 + (ulong)j;
            a[j] = ((1UL << 24) + d - 1) / d;
        }

        return a;
    }

    private static UInt128[] BuildLogNegLnRecip()
    {
        var t = new UInt128[256];
        for (int j = 0; j < 256; j++)
        {
            // ln(p/q) = 2 atanh((p - q)/(p + q)), p = 2^16 >= q = a_j
            ulong p = 1UL << 16, q = LogRecip[j];
            UInt128 num = (UInt128)(p - q) << 110;
            ulong den = p + q;
            UInt128 w = ((num / den) << 16) + (((num % den) << 16) / den); // Q.126, <= 1/3
            UInt128 w2 = Wide.MulShr(w, w, 126);
            UInt128 sum = 0;
            UInt128 pw = w;
            for (uint k = 1; pw != 0; k += 2)
            {
                sum += pw / k;
                pw = Wide.MulShr(pw, w2, 126);
            }

            t[j] = sum << 1;
        }

        return t;
    }
}
