using System.Numerics;

namespace GpuIntLab.Tests.FixedPoint;

/// <summary>
/// Independent reference math in exact BigInteger fixed point with P = 224 fractional bits: constants from
/// series (atanh for ln2, Machin for pi), exp/log/sin/cos from plain Taylor/atanh series with simple
/// range reduction. Written without looking at (or sharing code with) the integer library; its own
/// truncation errors are ~2^-210, far below anything that can change a Q16.48 rounding.
/// </summary>
internal static class BigRef
{
    public const int P = 224;
    public static readonly BigInteger OneP = BigInteger.One << P;
    public static readonly BigInteger Ln2 = 2 * AtanhInv(3);
    public static readonly BigInteger Pi = (16 * AtanInv(5)) - (4 * AtanInv(239));

    /// <summary>atanh(1/n) in Q.P.</summary>
    public static BigInteger AtanhInv(int n)
    {
        BigInteger sum = 0, t = OneP / n, n2 = (BigInteger)n * n;
        for (int k = 1; !t.IsZero; k += 2)
        {
            sum += t / k;
            t /= n2;
        }

        return sum;
    }

    /// <summary>atan(1/n) in Q.P.</summary>
    public static BigInteger AtanInv(int n)
    {
        BigInteger sum = 0, t = OneP / n, n2 = (BigInteger)n * n;
        int sign = 1;
        for (int k = 1; !t.IsZero; k += 2)
        {
            sum += sign * (t / k);
            t /= n2;
            sign = -sign;
        }

        return sum;
    }

    /// <summary>floor(a / b) for b &gt; 0.</summary>
    public static BigInteger FloorDiv(BigInteger a, BigInteger b)
    {
        BigInteger q = BigInteger.DivRem(a, b, out BigInteger r);
        return r.Sign < 0 ? q - 1 : q;
    }

    /// <summary>Round to nearest, ties to even, of n / d (any signs, d != 0).</summary>
    public static BigInteger RoundDiv(BigInteger n, BigInteger d)
    {
        if (d.Sign < 0)
        {
            n = -n;
            d = -d;
        }

        BigInteger q = FloorDiv(n, d);
        BigInteger twiceRem = 2 * (n - (q * d)); // in [0, 2d)
        int c = twiceRem.CompareTo(d);
        if (c > 0 || (c == 0 && !q.IsEven))
        {
            q += 1;
        }

        return q;
    }

    /// <summary>RNE of v / 2^s.</summary>
    public static BigInteger RoundShift(BigInteger v, int s) => s <= 0 ? v << -s : RoundDiv(v, BigInteger.One << s);

    /// <summary>Value of a Q.P number rounded (RNE) to Q16.48 raw units (may exceed the long range).</summary>
    public static BigInteger ToQ48(BigInteger vP) => RoundShift(vP, P - 48);

    public static BigInteger FromRaw(long raw) => (BigInteger)raw << (P - 48);

    /// <summary>e^x for x in Q.P, result in Q.P.</summary>
    public static BigInteger Exp(BigInteger x)
    {
        BigInteger k = FloorDiv(x + (Ln2 >> 1), Ln2);
        BigInteger r = x - (k * Ln2); // |r| <= ln2/2
        BigInteger sum = OneP, term = OneP;
        for (int n = 1; !term.IsZero; n++)
        {
            term = ((term * r) >> P) / n;
            sum += term;
        }

        return k.Sign >= 0 ? sum << (int)k : sum >> (int)-k;
    }

    /// <summary>ln(v / 2^vFrac) in Q.P, v &gt; 0.</summary>
    public static BigInteger Ln(BigInteger v, int vFrac)
    {
        int b = (int)(v.GetBitLength() - 1);
        BigInteger m = b <= P ? v << (P - b) : v >> (b - P); // [1, 2) in Q.P
        BigInteger w = ((m - OneP) << P) / (m + OneP);     // [0, 1/3]
        BigInteger w2 = (w * w) >> P;
        BigInteger sum = 0, t = w;
        for (int k = 1; !t.IsZero; k += 2)
        {
            sum += t / k;
            t = (t * w2) >> P;
        }

        return (2 * sum) + ((b - vFrac) * Ln2);
    }

    /// <summary>sin and cos of x (Q.P), in Q.P.</summary>
    public static (BigInteger Sin, BigInteger Cos) SinCos(BigInteger x)
    {
        BigInteger halfPi = Pi >> 1;
        BigInteger k = FloorDiv(x + (halfPi >> 1), halfPi);
        BigInteger r = x - (k * halfPi); // |r| <= pi/4
        BigInteger r2 = (r * r) >> P;
        BigInteger s = r, c = OneP, ts = r, tc = OneP;
        for (int n = 1; !ts.IsZero || !tc.IsZero; n++)
        {
            ts = -((ts * r2) >> P) / ((2 * n) * ((2 * n) + 1));
            tc = -((tc * r2) >> P) / (((2 * n) - 1) * (2 * n));
            s += ts;
            c += tc;
        }

        return (int)(((k % 4) + 4) % 4) switch
        {
            0 => (s, c),
            1 => (c, -s),
            2 => (-s, -c),
            _ => (-c, s),
        };
    }

    public static BigInteger Exp48(long raw) => ToQ48(Exp(FromRaw(raw)));

    public static BigInteger Log48(long raw) => ToQ48(Ln(raw, 48));

    public static (BigInteger Sin, BigInteger Cos) SinCos48(long raw)
    {
        var (s, c) = SinCos(FromRaw(raw));
        return (ToQ48(s), ToQ48(c));
    }

    /// <summary>sigmoid(raw) correctly rounded to Q16.48: 2^48 / (1 + e^-x).</summary>
    public static BigInteger Sigmoid48(long raw) => RoundDiv(OneP << 48, OneP + Exp(-FromRaw(raw)));

    /// <summary>silu(raw) correctly rounded: raw / (1 + e^-x).</summary>
    public static BigInteger Silu48(long raw) => RoundDiv((BigInteger)raw * OneP, OneP + Exp(-FromRaw(raw)));

    /// <summary>floor(sqrt(n)) by Newton.</summary>
    public static BigInteger ISqrt(BigInteger n)
    {
        if (n.IsZero)
        {
            return 0;
        }

        BigInteger x = BigInteger.One << (int)((n.GetBitLength() + 1) / 2);
        while (true)
        {
            BigInteger y = (x + (n / x)) >> 1;
            if (y >= x)
            {
                return x;
            }

            x = y;
        }
    }
}
