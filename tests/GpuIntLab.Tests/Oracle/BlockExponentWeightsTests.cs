using System.Numerics;
using GpuIntLab.Oracle;
using Xunit;

namespace GpuIntLab.Tests.Oracle;

/// <summary>
/// The oracle's block-exponent vector layout against independent BigInteger references: every weight it holds,
/// every dot product (vector path, its scalar fallback, 1 and 2 build threads), exception and padding cases, range
/// validation, and the branchless 128-bit accumulate. The weight tables here are built from the IEEE definition of
/// bf16 and the documented M8E8 definition, not from the library's conversion code.
/// </summary>
public unsafe class BlockExponentWeightsTests
{
    private const long Unrepresentable = long.MinValue;

    /// <summary>Q16.48 raw of a bf16 pattern (RNE below 2^-48), or the sentinel if not finite or |x| &gt;= 2^15.</summary>
    private static long Bf16Reference(ushort bits)
    {
        int sign = bits >> 15, e = (bits >> 7) & 0xFF, m = bits & 0x7F;
        if (e == 255) return Unrepresentable;
        BigInteger significand = e == 0 ? m : 128 + m;
        int shift = (e == 0 ? 1 : e) - 127 - 7 + 48; // value·2^48 = significand·2^shift
        BigInteger raw;
        if (shift >= 0) raw = significand << shift;
        else
        {
            BigInteger q = significand >> -shift, r = significand - (q << -shift), half = BigInteger.One << (-shift - 1);
            raw = r > half || (r == half && !q.IsEven) ? q + 1 : q;
        }
        if (raw >= BigInteger.One << 63) return Unrepresentable;
        return sign == 1 ? -(long)raw : (long)raw;
    }

    /// <summary>The README's M8E8: 0x0000 = 0, else ±(128+m)·2^(e-86) for e in [86, 141]; anything else invalid.</summary>
    private static long M8E8Reference(ushort code)
    {
        if (code == 0) return 0;
        int e = (code >> 7) & 0xFF;
        if (e < 86 || e > 141) return Unrepresentable;
        long magnitude = (long)(BigInteger.Pow(2, e - 86) * (128 + (code & 0x7F)));
        return (code & 0x8000) != 0 ? -magnitude : magnitude;
    }

    /// <summary>Q16.48 raw of an IEEE half pattern (always a whole number of ulps), or the sentinel if not finite or |x| &gt;= 2^15.</summary>
    private static long F16Reference(ushort bits)
    {
        int sign = bits >> 15, e = (bits >> 10) & 0x1F, m = bits & 0x3FF;
        if (e == 31) return Unrepresentable;
        BigInteger raw = (BigInteger)(e == 0 ? m : 1024 + m) << ((e == 0 ? 1 : e) - 15 - 10 + 48);
        if (raw >= BigInteger.One << 63) return Unrepresentable;
        return sign == 1 ? -(long)raw : (long)raw;
    }

    private static readonly Lazy<long[]> F16Table = new(() => Enumerable.Range(0, 65536).Select(b => F16Reference((ushort)b)).ToArray());
    private static readonly Lazy<long[]> Bf16Table = new(() => Enumerable.Range(0, 65536).Select(b => Bf16Reference((ushort)b)).ToArray());
    private static readonly Lazy<long[]> M8E8Table = new(() => Enumerable.Range(0, 65536).Select(b => M8E8Reference((ushort)b)).ToArray());

    private static BlockExponentWeights Build(ushort[] data, int rows, int cols, long[] table, int threads = 1)
    {
        var format = table == F16Table.Value ? BlockExponentWeights.Format.F16 : BlockExponentWeights.Format.Bf16;
        var weights = BlockExponentWeights.Build((first, count, destination) => data.AsSpan(first * cols, count * cols).CopyTo(destination),
            format, rows, cols, table, Unrepresentable, threads, out var invalid);
        Assert.Null(invalid);
        return weights!;
    }

    /// <summary>The layout's dot product of one row: the vector kernel, or the scalar fallback when x cannot be split.</summary>
    private static Int128 Dot(BlockExponentWeights w, int row, long[] x, out bool vector)
    {
        var prepared = GC.AllocateArray<long>(w.PreparedLength, pinned: true);
        var totals = stackalloc Int128[BlockExponentWeights.RowsPerQuad];
        fixed (long* px = x, pp = prepared)
        {
            vector = w.PrepareActivation(px, pp);
            if (!vector) return w.ScalarDot(row, px);
            w.Dot4(row / BlockExponentWeights.RowsPerQuad, pp, px, totals);
            return totals[row % BlockExponentWeights.RowsPerQuad];
        }
    }

    private static Int128 ScalarDot(BlockExponentWeights w, int row, long[] x)
    {
        fixed (long* px = x) return w.ScalarDot(row, px);
    }

    private static BigInteger Reference(ushort[] data, int row, int cols, long[] table, long[] x)
    {
        BigInteger sum = 0;
        for (int c = 0; c < cols; c++) sum += (BigInteger)table[data[row * cols + c]] * x[c];
        return sum;
    }

    private static long[] TableOf(string dtype) => dtype switch { "bf16" => Bf16Table.Value, "m8e8" => M8E8Table.Value, _ => F16Table.Value };

    /// <summary>Every row's vector-path and scalar-path dot products equal the BigInteger reference.</summary>
    private static void AssertEveryRowMatches(BlockExponentWeights w, ushort[] data, int cols, long[] table, long[] x)
    {
        for (int r = 0; r < w.Rows; r++)
        {
            var expected = Reference(data, r, cols, table, x);
            Assert.Equal(expected, (BigInteger)Dot(w, r, x, out bool vector));
            Assert.True(vector);
            Assert.Equal(expected, (BigInteger)ScalarDot(w, r, x));
        }
    }

    private static ushort Bf16Bits(int sign, int exponent, int mantissa) => (ushort)((sign << 15) | (exponent << 7) | mantissa);

    /// <summary>
    /// Rows of bf16 weights of many kinds: ordinary ones at a per-block scale, some far below their block's largest
    /// (exceptions), subnormals, tiny values that round to a few ulps or to 0, ±0, and the largest in range.
    /// </summary>
    private static ushort[] MixedBf16(Random rng, int rows, int cols)
    {
        var data = new ushort[rows * cols];
        for (int r = 0; r < rows; r++)
        {
            int rowScale = rng.Next(100, 138);
            for (int c = 0; c < cols; c++)
            {
                int sign = rng.Next(2), kind = rng.Next(100);
                int exponent = kind switch
                {
                    < 70 => Math.Clamp(rowScale - rng.Next(0, 12), 1, 141),   // ordinary
                    < 78 => rng.Next(60, 100),                                // far below the block: exceptions
                    < 82 => 0,                                                // subnormal or ±0
                    < 86 => rng.Next(80, 90),                                 // around one ulp
                    < 88 => 141,                                              // the largest in range
                    _ => rowScale - rng.Next(12, 20),                         // near the block's window edge
                };
                data[r * cols + c] = Bf16Bits(sign, Math.Clamp(exponent, 0, 141), kind is >= 78 and < 82 && rng.Next(4) == 0 ? 0 : rng.Next(128));
            }
        }
        return data;
    }

    private static long[] RandomX(Random rng, int cols, int bits) =>
        Enumerable.Range(0, cols).Select(_ => rng.NextInt64(-(1L << bits), 1L << bits)).ToArray();

    [Theory]
    [InlineData(1, 8, 1)]
    [InlineData(4, 512, 1)]
    [InlineData(7, 1037, 2)]   // rows not a multiple of 4, columns not a multiple of 8, three blocks
    [InlineData(13, 1536, 2)]  // exactly three blocks
    [InlineData(3, 5, 1)]      // narrower than one vector step
    public void DotMatchesBigInteger(int rows, int cols, int threads)
    {
        var rng = new Random(rows * 1000 + cols);
        var data = MixedBf16(rng, rows, cols);
        var w = Build(data, rows, cols, Bf16Table.Value, threads);
        Assert.True(cols < 64 || w.ExceptionCount > 0, "the mixed rows must exercise the exception lists");
        // Weights up to 2^63 raw with x below 2^50, and weights below 2^42 raw with x up to 2^62: both keep the
        // exact sums inside 128 bits, as the oracle's contract requires.
        foreach (var (x, smallWeights) in new[] { (RandomX(rng, cols, 50), false), (RandomX(rng, cols, 62), true) })
        {
            var d = smallWeights ? data.Select(b => ((b >> 7) & 0xFF) > 120 ? (ushort)(b & 0x807F | (120 << 7)) : b).ToArray() : data;
            var ws = smallWeights ? Build(d, rows, cols, Bf16Table.Value, threads) : w;
            AssertEveryRowMatches(ws, d, cols, Bf16Table.Value, x);
        }
    }

    /// <summary>F16 rows: ordinary weights, weights 10-20 binades down (exceptions past the 12-binade window), subnormals, ±0, the largest.</summary>
    [Theory]
    [InlineData(5, 1037, 1)]
    [InlineData(8, 2048, 2)]
    public void F16DotMatchesBigInteger(int rows, int cols, int threads)
    {
        var rng = new Random(rows + cols);
        var data = new ushort[rows * cols];
        for (int i = 0; i < data.Length; i++)
        {
            int kind = rng.Next(100), sign = rng.Next(2);
            int exponent = kind switch { < 70 => rng.Next(8, 15), < 85 => rng.Next(1, 6), < 92 => 0, < 94 => 29, _ => rng.Next(1, 29) };
            data[i] = (ushort)((sign << 15) | (exponent << 10) | (kind is >= 85 and < 88 ? 0 : rng.Next(1024)));
        }
        var w = Build(data, rows, cols, F16Table.Value, threads);
        Assert.True(w.ExceptionCount > 0);
        var x = RandomX(rng, cols, 50);
        AssertEveryRowMatches(w, data, cols, F16Table.Value, x);
    }

    [Fact]
    public void ActivationsNearTheInt64LimitTakeTheScalarFallback()
    {
        var rng = new Random(3);
        int rows = 5, cols = 300;
        var data = MixedBf16(rng, rows, cols).Select(b => ((b >> 7) & 0xFF) > 110 ? (ushort)(b & 0x807F | (110 << 7)) : b).ToArray();
        var w = Build(data, rows, cols, Bf16Table.Value);
        var x = RandomX(rng, cols, 40);
        x[17] = long.MaxValue;                 // xh would be 2^31: no 32-bit split
        x[200] = long.MaxValue - (1L << 30);
        x[201] = long.MinValue;                // the most negative value still splits
        for (int r = 0; r < rows; r++)
        {
            Assert.Equal(Reference(data, r, cols, Bf16Table.Value, x), (BigInteger)Dot(w, r, x, out bool vector));
            Assert.False(vector);
        }
        x[17] = long.MaxValue - (1L << 31); x[200] = 0; // largest value whose high limb fits
        for (int r = 0; r < rows; r++)
        {
            Assert.Equal(Reference(data, r, cols, Bf16Table.Value, x), (BigInteger)Dot(w, r, x, out bool vector));
            Assert.True(vector);
        }
    }

    /// <summary>Every finite in-range bf16 pattern and every valid M8E8 code, in shuffled and in sorted rows.</summary>
    [Theory]
    [InlineData("bf16", false)]
    [InlineData("bf16", true)]
    [InlineData("m8e8", false)]
    [InlineData("m8e8", true)]
    [InlineData("f16", false)]
    [InlineData("f16", true)]
    public void EveryCodeIsHeldExactly(string dtype, bool shuffled)
    {
        var table = TableOf(dtype);
        var codes = Enumerable.Range(0, 65536).Where(b => table[b] != Unrepresentable).Select(b => (ushort)b).ToArray();
        if (shuffled) new Random(11).Shuffle(codes);
        int cols = 2048, rows = (codes.Length + cols - 1) / cols;
        var data = new ushort[rows * cols];
        codes.CopyTo(data, 0);
        var w = Build(data, rows, cols, table, threads: 2);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                if (table[data[r * cols + c]] != w.Weight(r, c))
                    Assert.Fail($"{dtype} 0x{data[r * cols + c]:X4} at ({r}, {c}): layout holds {w.Weight(r, c)}, reference {table[data[r * cols + c]]}");
        var x = RandomX(new Random(5), cols, 40);
        for (int r = 0; r < rows; r++) Assert.Equal(Reference(data, r, cols, table, x), (BigInteger)Dot(w, r, x, out _));
    }

    [Theory]
    [InlineData("bf16", 0x7F80)] // +inf
    [InlineData("bf16", 0xFFC1)] // NaN
    [InlineData("bf16", 0x4700)] // 32768: just out of range
    [InlineData("m8e8", 0x8000)] // not a valid M8E8 code
    [InlineData("m8e8", 0x2A80)] // exponent 85
    [InlineData("m8e8", 0x4700)] // exponent 142
    [InlineData("f16", 0x7C00)]  // +inf
    [InlineData("f16", 0x7800)]  // 32768
    [InlineData("f16", 0xFE01)]  // NaN
    public void InvalidWeightsAreReportedAtTheirFirstElement(string dtype, int bad)
    {
        var table = TableOf(dtype);
        int rows = 9, cols = 700;
        var data = Enumerable.Repeat(dtype == "f16" ? (ushort)0x3C05 : Bf16Bits(0, 120, 5), rows * cols).ToArray();
        data[6 * cols + 650] = (ushort)bad;    // the first in row-major order: in the second build thread's rows
        data[8 * cols + 3] = (ushort)bad;
        var w = BlockExponentWeights.Build((first, count, destination) => data.AsSpan(first * cols, count * cols).CopyTo(destination),
            dtype == "f16" ? BlockExponentWeights.Format.F16 : BlockExponentWeights.Format.Bf16, rows, cols, table, Unrepresentable, threads: 2, out var invalid);
        Assert.Null(w);
        Assert.Equal(new BlockExponentWeights.InvalidWeight(6L * cols + 650, (ushort)bad), invalid);
    }

    [Fact]
    public void AddScaledIsExactModulo2To128()
    {
        var rng = new Random(9);
        var modulus = BigInteger.One << 128;
        long[] edges = [0, 1, -1, long.MaxValue, long.MinValue, 1L << 62, -(1L << 62), int.MaxValue, int.MinValue];
        for (int i = 0; i < 200_000; i++)
        {
            long sumLow = i < 81 ? edges[i % 9] : rng.NextInt64(long.MinValue, long.MaxValue) >> rng.Next(0, 40);
            long sumHigh = i < 81 ? edges[i / 9] : rng.NextInt64(long.MinValue, long.MaxValue) >> rng.Next(0, 40);
            int unit = rng.Next(0, 64);
            long hi = rng.NextInt64(long.MinValue, long.MaxValue);
            ulong lo = (ulong)rng.NextInt64(long.MinValue, long.MaxValue);
            var start = (BigInteger)new Int128((ulong)hi, lo);
            BlockExponentWeights.AddScaled(ref hi, ref lo, sumLow, sumHigh, unit);
            var expected = (((start + (((BigInteger)sumHigh << 32) + sumLow << unit)) % modulus) + modulus) % modulus;
            var actual = (BigInteger)new UInt128((ulong)hi, lo);
            if (expected != actual) Assert.Fail($"AddScaled(start {start}, low {sumLow}, high {sumHigh}, unit {unit}) = {actual}, expected {expected}");
        }
    }
}
