namespace GpuIntLab.Tests.Quantization;

/// <summary>
/// Independent model of a small binary float format, written from the format's definition (OCP 8-bit FP v1.0,
/// OCP MX v1.0 element tables, bfloat16), not from the codecs: every code's value by the textbook formula
/// (-1)^s 2^(e-bias)(1 + m/2^M) or (-1)^s 2^(1-bias) m/2^M, the positive finite values sorted, and the
/// nearest value with ties to the even code found by walking that sorted list.
/// </summary>
internal sealed class ReferenceFloatFormat
{
    private readonly double[] _values; // ascending, non-negative, finite (plus the virtual 2^(emax+1) when overflowing to infinity)
    private readonly int[] _codes;

    /// <param name="nanAtAllOnes">E4M3: S.1111.111 is NaN. <paramref name="ieeeSpecials"/>: the all-ones exponent is Inf/NaN.</param>
    /// <param name="overflowToInfinity">Round past the top to the infinity code (IEEE) instead of saturating.</param>
    public ReferenceFloatFormat(int exponentBits, int mantissaBits, int bias, bool nanAtAllOnes, bool ieeeSpecials, bool overflowToInfinity)
    {
        ExponentBits = exponentBits;
        MantissaBits = mantissaBits;
        SignBit = 1 << (exponentBits + mantissaBits);
        var values = new List<double>();
        var codes = new List<int>();
        int allOnes = (1 << exponentBits) - 1;
        for (int code = 0; code < SignBit; code++)
        {
            int e = code >> mantissaBits, m = code & ((1 << mantissaBits) - 1);
            if (ieeeSpecials && e == allOnes) continue;
            if (nanAtAllOnes && code == SignBit - 1) continue;
            values.Add(Value(e, m, bias, mantissaBits));
            codes.Add(code);
        }
        MaxCode = codes[^1];
        if (overflowToInfinity)
        {
            // The value the next code would have if the exponent were unbounded: 2^(emax+1), whose code is infinity.
            values.Add(Math.Pow(2, Math.ILogB(values[^1]) + 1));
            codes.Add(MaxCode + 1);
        }
        OverflowToInfinity = overflowToInfinity;
        _values = values.ToArray();
        _codes = codes.ToArray();
    }

    public int ExponentBits { get; }
    public int MantissaBits { get; }
    public int SignBit { get; }
    public int MaxCode { get; }
    public bool OverflowToInfinity { get; }
    public double MaxValue => _values[OverflowToInfinity ? _values.Length - 2 : _values.Length - 1];
    public double MinSubnormal => _values[1];

    /// <summary>Value of a finite (exponent, mantissa) pair by the definition.</summary>
    public static double Value(int e, int m, int bias, int mantissaBits) =>
        e == 0 ? Math.Pow(2, 1 - bias) * m / (1 << mantissaBits) : Math.Pow(2, e - bias) * (1 + (double)m / (1 << mantissaBits));

    /// <summary>Index k with values[k] &lt;= x &lt; values[k+1] (or the last), for starting a walk.</summary>
    public int StartIndex(double x)
    {
        int k = Array.BinarySearch(_values, x);
        return k >= 0 ? k : Math.Max(0, ~k - 1);
    }

    /// <summary>
    /// The expected magnitude code of a finite x >= 0, advancing the walk position <paramref name="k"/> (x must not
    /// decrease between calls that share k).
    /// </summary>
    public int ExpectedMagnitude(double x, ref int k)
    {
        while (k + 1 < _values.Length && _values[k + 1] <= x) k++;
        if (k == _values.Length - 1) return _codes[k]; // at or beyond the top: saturated max, or infinity
        double below = x - _values[k], above = _values[k + 1] - x;
        if (below < above) return _codes[k];
        if (above < below) return _codes[k + 1];
        return (_codes[k] & 1) == 0 ? _codes[k] : _codes[k + 1];
    }

    public int ExpectedMagnitude(double x)
    {
        int k = StartIndex(x);
        return ExpectedMagnitude(x, ref k);
    }
}

/// <summary>Helpers to run an element encoder over float32 bit patterns against a reference.</summary>
internal static class FloatPatternSweep
{
    /// <summary>
    /// Checks expected(pattern) == actual(pattern) for every positive pattern in [first, last] and for its negation
    /// (sign bit set), in parallel chunks; returns the number of patterns checked (both signs) and the first mismatch.
    /// <paramref name="expectedMagnitude"/> is called with increasing x within a chunk and a per-chunk walk state.
    /// </summary>
    public static (long Checked, string? Mismatch) Run(uint first, uint last, Func<float, int> actual,
        ReferenceFloatFormat reference, int negativeSignCode)
    {
        const uint chunk = 1u << 20;
        long chunks = ((long)last - first + chunk) / chunk;
        string? mismatch = null;
        Parallel.For(0L, chunks, c =>
        {
            uint lo = (uint)(first + c * chunk);
            uint hi = (uint)Math.Min((long)last, (long)lo + chunk - 1);
            int k = reference.StartIndex(BitConverter.UInt32BitsToSingle(lo));
            for (uint bits = lo; ; bits++)
            {
                float x = BitConverter.UInt32BitsToSingle(bits);
                int expected = reference.ExpectedMagnitude(x, ref k);
                int got = actual(x);
                int gotNegative = actual(-x);
                if (got != expected || gotNegative != (expected | negativeSignCode))
                {
                    Interlocked.CompareExchange(ref mismatch,
                        $"pattern 0x{bits:X8} ({x:R}): expected 0x{expected:X}, got 0x{got:X}; negated got 0x{gotNegative:X}", null);
                    return;
                }
                if (bits == hi) break;
            }
        });
        return (2 * ((long)last - first + 1), mismatch);
    }
}
