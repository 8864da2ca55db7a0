using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace GpuIntLab.Oracle;

/// <summary>
/// The oracle's fast exact matrix layout for 16-bit floating weights: BF16 and native M8E8 (sign | e8 | m7, nonzero
/// values ±(128+m)·2^(e-86) Q16.48 ulps when e &gt;= 86) and F16 (sign | e5 | m10, ±(1024+m)·2^(e+23) ulps). A dot
/// product through it is the same exact 128-bit sum as the scalar path, bit for bit; only the way of adding it up
/// changes.
///
/// <para><b>Encoding.</b> A weight has 8 (BF16) or 11 (F16) significant bits. Within a block of
/// <see cref="BlockColumns"/> columns of one row, every weight whose exponent is within the format's MaxShift (15 for
/// BF16, 12 for F16) of the block's largest is an integer M = ±(2^mb + m)·2^s (|M| &lt; 2^23) times the block's
/// common scale 2^unit ulps. Each such weight is stored as the 16-bit code (±(2^mb + m))·16 + s, decoded by three
/// vector operations (sign-extend, arithmetic shift right 4, shift left by the low 4 bits). Zeros are code 0; a
/// nonzero weight below its block's window, a BF16 weight below 2^-41 or an F16 subnormal (52 per million for
/// Gaussian bf16 weights) is also code 0 and is added exactly from a per-row exception list.</para>
///
/// <para><b>Layout.</b> Rows are taken four at a time ("quads", the last padded with zero rows) and columns eight
/// at a time (padded with zero columns): the 32 codes of a quad's 8 columns are one 64-byte cache line, so the
/// kernel reads the weights as one sequential stream and each activation load serves four rows.</para>
///
/// <para><b>Arithmetic.</b> The activation x (int64) is split into signed 32-bit limbs x = xh·2^32 + xl, so M·xl and
/// M·xh are 32x32-&gt;64-bit products (AVX2 vpmuldq, four per instruction) summed in 64-bit lanes. Overflow bound:
/// |M| &lt; 2^23 (255·2^15 for BF16, 2047·2^12 for F16) and |xl|, |xh| &lt;= 2^31, so a product's magnitude is below 2^54; a lane takes
/// 2 products per 8 columns, 128 per block of 512, so a lane sum stays below 2^61 and a 4-lane sum below 2^63. The block's two sums are then shifted into a 128-bit total once per block.</para>
///
/// The transcoded weights live in a pinned array owned by this object; the checkpoint is read once through file
/// reads (not the mapping), so the process holds the weights once, not twice.
/// </summary>
internal sealed unsafe class BlockExponentWeights
{
    public const int BlockColumns = 512;

    /// <summary>
    /// A 16-bit floating weight format as the layout sees it: nonzero weights (2^MantissaBits + m)·2^(e + UnitOffset)
    /// Q16.48 ulps, placed in a block when e is at least MinPlacedExponent (below it a value is not a whole number of
    /// ulps, or is subnormal) and at most MaxExponentInRange, and at most MaxShift binades below the block's largest.
    /// MaxShift keeps every M = ±(2^MantissaBits + m)·2^s below 2^23, which the overflow bound needs.
    /// </summary>
    public readonly record struct Format(int MantissaBits, int MaxShift, int MinPlacedExponent, int MaxExponentInRange, int UnitOffset)
    {
        /// <summary>BF16 (sign | e8 | m7) and native M8E8 (same layout): (128+m)·2^(e-86) ulps; 255·2^(141-86) &lt; 2^63.</summary>
        public static readonly Format Bf16 = new(7, 15, 86, 141, -86);

        /// <summary>F16 (sign | e5 | m10): (1024+m)·2^(e+23) ulps for e &gt;= 1; e = 29 is the last below 32768.</summary>
        public static readonly Format F16 = new(10, 12, 1, 29, 23);
    }
    public const int RowsPerQuad = 4;
    private const int Group = 8;                  // columns per vector step
    private const int QuadGroupCodes = RowsPerQuad * Group;
    private const int GroupsPerBlock = BlockColumns / Group;
    // Software prefetch distance (2 KiB, one line per step): the hardware prefetcher alone leaves the kernel waiting
    // on the first load of each line when both cores stream (measured on the lab machine: 8.6 -> 10.4 Gw/s, 2 threads).
    private const int PrefetchCodes = 1024;

    private readonly short[] _codeArray;         // pinned; _codes points at its first 64-byte-aligned element
    private readonly short* _codes;              // [quad, group, row in quad, column in group]
    private readonly byte[] _units;              // [quad, block, row in quad]: the block's scale, 2^unit Q16.48 ulps
    private readonly int[] _exceptionStart;      // CSR over rows
    private readonly int[] _exceptionColumn;
    private readonly long[] _exceptionRaw;

    public int Rows { get; }
    public int Cols { get; }
    public int Quads { get; }
    private int Groups { get; }
    private int Blocks { get; }

    /// <summary>Weights added from the exception lists.</summary>
    public int ExceptionCount => _exceptionRaw.Length;

    /// <summary>Whether this machine runs the vector path (AVX2).</summary>
    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>Reads <c>count</c> whole rows starting at <c>firstRow</c> as raw 16-bit codes.</summary>
    public delegate void RowReader(int firstRow, int count, Span<ushort> destination);

    /// <summary>The first weight outside the Q16.48 range found by <see cref="Build"/>.</summary>
    public readonly record struct InvalidWeight(long Element, ushort Code);

    private BlockExponentWeights(int rows, int cols, short[] codeArray, short* codes, byte[] units, int[] start, int[] column, long[] raw)
    {
        Rows = rows; Cols = cols;
        Quads = (rows + RowsPerQuad - 1) / RowsPerQuad;
        Groups = (cols + Group - 1) / Group;
        Blocks = (Groups + GroupsPerBlock - 1) / GroupsPerBlock;
        _codeArray = codeArray; _codes = codes; _units = units;
        _exceptionStart = start; _exceptionColumn = column; _exceptionRaw = raw;
    }

    /// <summary>
    /// Transcodes a [rows, cols] matrix read through <paramref name="read"/>: per block, the largest exponent and from
    /// it the base; per weight, its code or an exception. <paramref name="table"/> is the exact Q16.48 value of every
    /// 16-bit pattern (<paramref name="unrepresentable"/> marks those outside the range); it decides the exceptions and
    /// validates every weight not placed in a block. Returns null with <paramref name="invalid"/> set if some weight is
    /// outside the Q16.48 range (the first in row-major order).
    /// </summary>
    public static BlockExponentWeights? Build(RowReader read, Format format, int rows, int cols, long[] table, long unrepresentable, int threads, out InvalidWeight? invalid)
    {
        int quads = (rows + RowsPerQuad - 1) / RowsPerQuad;
        int groups = (cols + Group - 1) / Group;
        int blocks = (groups + GroupsPerBlock - 1) / GroupsPerBlock;
        long codeCount = (long)quads * groups * QuadGroupCodes;
        // 32 spare codes let the start move up to a 64-byte boundary.
        var codeArray = GC.AllocateUninitializedArray<short>(checked((int)(codeCount + 32)), pinned: true);
        short* codes = (short*)(((nint)Unsafe.AsPointer(ref codeArray[0]) + 63) & ~(nint)63);
        HugePages.Advise(codes, codeCount * sizeof(short));
        var units = new byte[(long)quads * blocks * RowsPerQuad];
        var rowExceptions = new List<(int Column, long Raw)>?[rows];
        long firstInvalid = long.MaxValue;
        object gate = new();

        void Scan(int quadStart, int quadEnd)
        {
            int chunkQuads = Math.Max(1, (1 << 20) / Math.Max(1, cols * 2 * RowsPerQuad)); // about 1 MB of rows per read
            var buffer = new ushort[(long)chunkQuads * RowsPerQuad * cols];
            long localInvalid = long.MaxValue;
            // A weight not placed in its block: invalid, an exception, or a zero.
            void Classify(int bits, int r, int c)
            {
                if (table[bits] == unrepresentable) localInvalid = Math.Min(localInvalid, (long)r * cols + c);
                else if (table[bits] != 0) (rowExceptions[r] ??= []).Add((c, table[bits]));
            }
            for (int q0 = quadStart; q0 < quadEnd; q0 += chunkQuads)
            {
                int q1 = Math.Min(quadEnd, q0 + chunkQuads);
                int firstRow = q0 * RowsPerQuad, rowCount = Math.Min(rows, q1 * RowsPerQuad) - firstRow;
                read(firstRow, rowCount, buffer.AsSpan(0, rowCount * cols));
                new Span<short>(codes + (long)q0 * groups * QuadGroupCodes, (q1 - q0) * groups * QuadGroupCodes).Clear();
                fixed (ushort* chunk = buffer)
                    for (int i = 0; i < rowCount; i++)
                    {
                        int r = firstRow + i, q = r / RowsPerQuad, k = r % RowsPerQuad;
                        ushort* row = chunk + (long)i * cols;
                        for (int b = 0; b < blocks; b++)
                        {
                            int c0 = b * BlockColumns, c1 = Math.Min(cols, c0 + BlockColumns);
                            int blockMax = MaxMagnitude(row + c0, c1 - c0) >> format.MantissaBits;
                            int baseExponent = Math.Max(blockMax - format.MaxShift, format.MinPlacedExponent);
                            units[((long)q * blocks + b) * RowsPerQuad + k] = (byte)(baseExponent + format.UnitOffset);
                            // Eight columns (one code group) at a time, the last group of a row zero-padded; lanes
                            // not placed in the block and not +0 go through the scalar check (zeros of other kinds,
                            // exceptions, invalid codes).
                            for (int c = c0; c < c1; c += Group)
                            {
                                int width = Math.Min(Group, c1 - c);
                                var bits = width == Group ? Vector128.Load(row + c).AsInt16() : PaddedGroup(row + c, width);
                                int outside = EncodeGroup(bits, format, baseExponent, codes + CodeIndex(groups, q, k, c));
                                for (; outside != 0; outside &= outside - 1)
                                {
                                    int column = c + BitOperations.TrailingZeroCount(outside);
                                    Classify(row[column], r, column);
                                }
                            }
                        }
                    }
            }
            if (localInvalid != long.MaxValue) lock (gate) firstInvalid = Math.Min(firstInvalid, localInvalid);
        }
        int parts = Math.Max(1, Math.Min(threads, quads));
        if (parts == 1) Scan(0, quads);
        else Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, p =>
            Scan((int)((long)quads * p / parts), (int)((long)quads * (p + 1) / parts)));

        if (firstInvalid != long.MaxValue)
        {
            int invalidRow = (int)(firstInvalid / cols);
            var rowBits = new ushort[cols];
            read(invalidRow, 1, rowBits);
            invalid = new InvalidWeight(firstInvalid, rowBits[firstInvalid % cols]);
            return null;
        }
        invalid = null;
        var start = new int[rows + 1];
        for (int r = 0; r < rows; r++) start[r + 1] = start[r] + (rowExceptions[r]?.Count ?? 0);
        var column = new int[start[rows]];
        var raw = new long[start[rows]];
        for (int r = 0; r < rows; r++)
            if (rowExceptions[r] is { } list)
                for (int i = 0; i < list.Count; i++) { column[start[r] + i] = list[i].Column; raw[start[r] + i] = list[i].Raw; }
        return new BlockExponentWeights(rows, cols, codeArray, codes, units, start, column, raw);
    }

    /// <summary>
    /// Writes the codes of eight weights whose block base is <paramref name="baseExponent"/> (0 for those not placed
    /// in the block) and returns a bit mask of the lanes that are not placed and not +0, for the scalar check.
    /// </summary>
    private static int EncodeGroup(Vector128<short> bits, Format format, int baseExponent, short* destination)
    {
        var magnitude = bits & Vector128.Create((short)0x7FFF);
        var exponent = Vector128.ShiftRightLogical(magnitude, format.MantissaBits);
        var placed = Vector128.GreaterThanOrEqual(exponent, Vector128.Create((short)baseExponent))
                   & Vector128.LessThanOrEqual(exponent, Vector128.Create((short)format.MaxExponentInRange));
        var significand = (bits & Vector128.Create((short)((1 << format.MantissaBits) - 1))) | Vector128.Create((short)(1 << format.MantissaBits));
        var mantissa16 = Vector128.ShiftLeft(significand, 4);
        var negative = Vector128.ShiftRightArithmetic(bits, 15);                  // 0 or -1
        var code = ((mantissa16 ^ negative) - negative) + (exponent - Vector128.Create((short)baseExponent));
        (code & placed).Store(destination);
        var unplaced = ~placed & ~Vector128.Equals(bits, Vector128<short>.Zero);
        return (int)Vector128.ExtractMostSignificantBits(unplaced);
    }

    /// <summary>The last, partial group of a row: its weights, then zeros (which encode as code 0 and are not checked).</summary>
    private static Vector128<short> PaddedGroup(ushort* row, int width)
    {
        var lanes = stackalloc ushort[Group];
        for (int i = 0; i < Group; i++) lanes[i] = i < width ? row[i] : (ushort)0;
        return Vector128.Load(lanes).AsInt16();
    }

    private static long CodeIndex(int groups, int quad, int rowInQuad, int column) =>
        ((long)quad * groups + column / Group) * QuadGroupCodes + rowInQuad * Group + column % Group;

    private static int MaxMagnitude(ushort* p, int n)
    {
        var mask = Vector256.Create((ushort)0x7FFF);
        var max = Vector256<ushort>.Zero;
        int i = 0;
        for (; i + 16 <= n; i += 16) max = Vector256.Max(max, Vector256.Load(p + i) & mask);
        int result = 0;
        for (int k = 0; k < 16; k++) result = Math.Max(result, max.GetElement(k));
        for (; i < n; i++) result = Math.Max(result, p[i] & 0x7FFF);
        return result;
    }

    /// <summary>The exact Q16.48 raw of weight (row, column) as this layout holds it (tests and the scalar path).</summary>
    public long Weight(int row, int column)
    {
        for (int i = _exceptionStart[row]; i < _exceptionStart[row + 1]; i++)
            if (_exceptionColumn[i] == column) return _exceptionRaw[i];
        return BlockWeight(row, column);
    }

    /// <summary>The weight the block code at (row, column) stands for: M·2^unit (0 for zeros and exceptions).</summary>
    private long BlockWeight(int row, int column)
    {
        int q = row / RowsPerQuad, k = row % RowsPerQuad;
        int code = _codes[CodeIndex(Groups, q, k, column)];
        int unit = _units[((long)q * Blocks + column / BlockColumns) * RowsPerQuad + k];
        return ((long)(code >> 4) << (code & 15)) << unit;
    }

    /// <summary>
    /// Exact dot product of one row with x by plain scalar 128-bit arithmetic over this layout: the path for an x the
    /// vector split cannot take (see <see cref="PrepareActivation"/>).
    /// </summary>
    public Int128 ScalarDot(int row, long* x)
    {
        long hi = 0; ulong lo = 0;
        for (int c = 0; c < Cols; c++) ExactMatrix.Accumulate(ref hi, ref lo, BlockWeight(row, c), x[c]);
        AddExceptions(row, x, ref hi, ref lo);
        return new Int128((ulong)hi, lo);
    }

    /// <summary>Int64 slots <see cref="PrepareActivation"/> writes for one activation vector.</summary>
    public int PreparedLength => Groups * Group;

    /// <summary>
    /// Splits x into signed 32-bit limbs (x = xh·2^32 + xl) laid out per 8 columns as eight int32 xl then eight
    /// int32 xh (64 bytes; the padding columns get 0). Returns false if some x is within 2^31 of the int64 maximum
    /// (xh would not fit 32 bits): the caller then takes <see cref="ScalarDot"/>.
    /// </summary>
    public bool PrepareActivation(long* x, long* prepared)
    {
        int* limbs = (int*)prepared;
        for (int c = 0; c < Groups * Group; c++)
        {
            long value = c < Cols ? x[c] : 0;
            int low = (int)value;
            long high = (value >> 32) + (low < 0 ? 1 : 0); // value = high·2^32 + low, computed without overflow
            if (high > int.MaxValue) return false;
            int* slot = limbs + c / Group * 2 * Group + c % Group;
            slot[0] = low;
            slot[Group] = (int)high;
        }
        return true;
    }

    /// <summary>
    /// Exact sums of weight·x over the rows of quad <paramref name="quad"/> (x prepared by <see cref="PrepareActivation"/>),
    /// written to totals[0..3] (rows past the matrix's end give 0).
    /// </summary>
    [SkipLocalsInit, MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Dot4(int quad, long* prepared, long* x, Int128* totals)
    {
        // Four 128-bit totals as (hi, lo) pairs: Int128's general shift branches on the count; these do not.
        ulong lo0 = 0, lo1 = 0, lo2 = 0, lo3 = 0;
        long hi0 = 0, hi1 = 0, hi2 = 0, hi3 = 0;
        int groups = Groups, blocks = Blocks;
        short* p = _codes + (long)quad * groups * QuadGroupCodes;
        fixed (byte* quadUnits = &_units[(long)quad * blocks * RowsPerQuad])
        {
            int* xp = (int*)prepared;
            var low4 = Vector256.Create(15);
            for (int b = 0; b < blocks; b++)
            {
                var l0 = Vector256<long>.Zero; var h0 = Vector256<long>.Zero;
                var l1 = Vector256<long>.Zero; var h1 = Vector256<long>.Zero;
                var l2 = Vector256<long>.Zero; var h2 = Vector256<long>.Zero;
                var l3 = Vector256<long>.Zero; var h3 = Vector256<long>.Zero;
                short* blockEnd = p + Math.Min(GroupsPerBlock, groups - b * GroupsPerBlock) * QuadGroupCodes;
                for (; p < blockEnd; p += QuadGroupCodes, xp += 2 * Group)
                {
                    Sse.Prefetch0(p + PrefetchCodes);
                    var xl = Avx.LoadVector256(xp);
                    var xh = Avx.LoadVector256(xp + Group);
                    var xlOdd = Avx2.ShiftRightLogical(xl.AsInt64(), 32).AsInt32();
                    var xhOdd = Avx2.ShiftRightLogical(xh.AsInt64(), 32).AsInt32();
                    Accumulate(p, low4, xl, xh, xlOdd, xhOdd, ref l0, ref h0);
                    Accumulate(p + Group, low4, xl, xh, xlOdd, xhOdd, ref l1, ref h1);
                    Accumulate(p + 2 * Group, low4, xl, xh, xlOdd, xhOdd, ref l2, ref h2);
                    Accumulate(p + 3 * Group, low4, xl, xh, xlOdd, xhOdd, ref l3, ref h3);
                }
                byte* blockUnits = quadUnits + b * RowsPerQuad;
                AddScaled(ref hi0, ref lo0, Vector256.Sum(l0), Vector256.Sum(h0), blockUnits[0]);
                AddScaled(ref hi1, ref lo1, Vector256.Sum(l1), Vector256.Sum(h1), blockUnits[1]);
                AddScaled(ref hi2, ref lo2, Vector256.Sum(l2), Vector256.Sum(h2), blockUnits[2]);
                AddScaled(ref hi3, ref lo3, Vector256.Sum(l3), Vector256.Sum(h3), blockUnits[3]);
            }
        }
        if (_exceptionRaw.Length != 0)
        {
            int row = quad * RowsPerQuad;
            AddExceptions(row, x, ref hi0, ref lo0);
            AddExceptions(row + 1, x, ref hi1, ref lo1);
            AddExceptions(row + 2, x, ref hi2, ref lo2);
            AddExceptions(row + 3, x, ref hi3, ref lo3);
        }
        totals[0] = new Int128((ulong)hi0, lo0);
        totals[1] = new Int128((ulong)hi1, lo1);
        totals[2] = new Int128((ulong)hi2, lo2);
        totals[3] = new Int128((ulong)hi3, lo3);
    }

    /// <summary>(hi:lo) += (sumHigh·2^32 + sumLow)·2^unit exactly, for 0 &lt;= unit &lt;= 63, without branches.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void AddScaled(ref long hi, ref ulong lo, long sumLow, long sumHigh, int unit)
    {
        // v = sumHigh·2^32 + sumLow as a 128-bit (vh:vl); sumLow enters sign-extended.
        ulong shifted = (ulong)sumHigh << 32;
        ulong vl = shifted + (ulong)sumLow;
        long vh = (sumHigh >> 32) + (sumLow >> 63) + (vl < shifted ? 1 : 0);
        // v << unit; the low word's top bits reach the high word by two shifts (one shift by 64 would be by 0).
        long sh = (vh << unit) | (long)((vl >> 1) >> (63 - unit));
        ulong sl = vl << unit;
        ulong sum = lo + sl;
        hi += sh + (sum < lo ? 1 : 0);
        lo = sum;
    }

    /// <summary>
    /// One row's 8 columns: decode the codes to M = ±(128+m)·2^s (sign-extend, shift right 4, shift left by the low
    /// 4 bits) and add M·xl into the low sums and M·xh into the high sums, even columns then odd.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Accumulate(short* codes, Vector256<int> low4, Vector256<int> xl, Vector256<int> xh,
        Vector256<int> xlOdd, Vector256<int> xhOdd, ref Vector256<long> sumLow, ref Vector256<long> sumHigh)
    {
        var code = Avx2.ConvertToVector256Int32(codes);
        var m = Avx2.ShiftLeftLogicalVariable(Avx2.ShiftRightArithmetic(code, 4), Avx2.And(code, low4).AsUInt32());
        var mOdd = Avx2.ShiftRightLogical(m.AsInt64(), 32).AsInt32();
        sumLow = Avx2.Add(Avx2.Add(sumLow, Avx2.Multiply(m, xl)), Avx2.Multiply(mOdd, xlOdd));
        sumHigh = Avx2.Add(Avx2.Add(sumHigh, Avx2.Multiply(m, xh)), Avx2.Multiply(mOdd, xhOdd));
    }

    /// <summary>(hi:lo) += the row's exception weights times their x, exactly.</summary>
    private void AddExceptions(int row, long* x, ref long hi, ref ulong lo)
    {
        if (row >= Rows) return;
        for (int i = _exceptionStart[row]; i < _exceptionStart[row + 1]; i++)
            ExactMatrix.Accumulate(ref hi, ref lo, _exceptionRaw[i], x[_exceptionColumn[i]]);
    }
}
