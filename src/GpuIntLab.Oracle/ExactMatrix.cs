using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Oracle;

/// <summary>
/// A weight matrix [rows, cols] read straight from the checkpoint's memory mapping. BF16 and F16 entries
/// are converted exactly to Q16.48 as they are used, through a 65536-entry table of the exact conversion
/// (so the oracle reads 2 bytes a weight, not 8), and so are native M8E8 codes (an integer decoding);
/// F32 and native Q48 tensors are converted once at load.
/// A row's dot product accumulates the exact 128-bit products and rounds once (RNE) at the end, so the
/// result depends on no order, thread count or machine.
/// </summary>
internal sealed unsafe class ExactMatrix
{
    private readonly byte* _data;          // BF16/F16 payload in the mapping
    private readonly long[]? _converted;   // F32 (or 1-D) tensors converted at load
    private readonly long[]? _table;       // exact Q16.48 of every 16-bit pattern

    public int Rows { get; }
    public int Cols { get; }
    public string Name { get; }

    private ExactMatrix(string name, int rows, int cols, byte* data, long[]? table, long[]? converted)
    {
        Name = name; Rows = rows; Cols = cols; _data = data; _table = table; _converted = converted;
    }

    /// <summary>Sentinel in the conversion tables for bit patterns outside the Q16.48 range (-32768 itself is out of range, so it never collides).</summary>
    internal const long Unrepresentable = long.MinValue;

    private static readonly Lazy<long[]> s_bf16Table = new(() => BuildTable(ExactConversion.Bf16ToQ48));
    private static readonly Lazy<long[]> s_f16Table = new(() => BuildTable(ExactConversion.F16ToQ48));
    private static readonly Lazy<long[]> s_m8e8Table = new(() => BuildTable(ExactConversion.M8E8ToQ48));

    private static long[] BuildTable(Func<ushort, long> convert)
    {
        var table = new long[65536];
        for (int bits = 0; bits < 65536; bits++)
        {
            try { table[bits] = convert((ushort)bits); }
            catch (WeightRangeException) { table[bits] = Unrepresentable; }
        }
        return table;
    }

    public static ExactMatrix Load(LlamaCheckpoint checkpoint, TensorInfo tensor)
    {
        int rows = tensor.Shape[0];
        int cols = tensor.Shape.Length > 1 ? tensor.Shape[1] : 1;
        if (tensor.Dtype is TensorDtype.F32 or TensorDtype.Q48)
            return new ExactMatrix(tensor.Name, rows, cols, null, null, checkpoint.ReadQ48(tensor));
        var table = tensor.Dtype switch
        {
            TensorDtype.BF16 => s_bf16Table.Value,
            TensorDtype.F16 => s_f16Table.Value,
            _ => s_m8e8Table.Value,
        };
        var matrix = new ExactMatrix(tensor.Name, rows, cols, checkpoint.Pointer(tensor), table, null);
        matrix.CheckRange(tensor);
        return matrix;
    }

    /// <summary>Fails at load, naming the tensor and element, if any weight is outside the Q16.48 range.</summary>
    private void CheckRange(TensorInfo tensor)
    {
        var bits = new ReadOnlySpan<ushort>(_data, checked(Rows * Cols));
        for (int i = 0; i < bits.Length; i++)
            if (_table![bits[i]] == Unrepresentable)
                throw new ModelLoadException($"{tensor.FilePath}: tensor '{tensor.Name}' element {i} ({tensor.Dtype} 0x{bits[i]:X4}) is outside the Q16.48 range (|x| < 32768) or not finite");
    }

    /// <summary>Row <paramref name="row"/> as Q16.48 raws.</summary>
    public void ReadRow(int row, Span<long> destination)
    {
        if (_converted != null) { _converted.AsSpan(row * Cols, Cols).CopyTo(destination); return; }
        var bits = new ReadOnlySpan<ushort>(_data + (long)row * Cols * 2, Cols);
        var table = _table!;
        for (int i = 0; i < bits.Length; i++) destination[i] = table[bits[i]];
    }

    /// <summary>Exact sum over the row of weight * x, as a Q32.96 128-bit integer.</summary>
    public Int128 DotRow(int row, ReadOnlySpan<long> x)
    {
        if (x.Length != Cols) throw new ArgumentException($"{Name}: dot of a {Cols}-column row with {x.Length} values");
        fixed (long* px = x) return DotRow(row, px);
    }

    /// <summary>
    /// The hot loop: two independent (hi, lo) accumulator pairs so the add-with-carry chains overlap;
    /// integer addition is associative, so the split changes no bit of the result.
    /// </summary>
    private Int128 DotRow(int row, long* x)
    {
        ulong lo0 = 0, lo1 = 0; long hi0 = 0, hi1 = 0;
        int n = Cols, i = 0;
        if (_converted != null)
        {
            fixed (long* w0 = _converted)
            {
                long* w = w0 + (long)row * n;
                for (; i + 2 <= n; i += 2) { Accumulate(ref hi0, ref lo0, w[i], x[i]); Accumulate(ref hi1, ref lo1, w[i + 1], x[i + 1]); }
                for (; i < n; i++) Accumulate(ref hi0, ref lo0, w[i], x[i]);
            }
        }
        else
        {
            ushort* bits = (ushort*)_data + (long)row * n;
            fixed (long* table = _table)
            {
                for (; i + 2 <= n; i += 2)
                {
                    Accumulate(ref hi0, ref lo0, table[bits[i]], x[i]);
                    Accumulate(ref hi1, ref lo1, table[bits[i + 1]], x[i + 1]);
                }
                for (; i < n; i++) Accumulate(ref hi0, ref lo0, table[bits[i]], x[i]);
            }
        }
        return new Int128((ulong)hi0, lo0) + new Int128((ulong)hi1, lo1);
    }

    /// <summary>(hi:lo) += a * b, exactly, as 128-bit two's complement.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static void Accumulate(ref long hi, ref ulong lo, long a, long b)
    {
        long productHi = Math.BigMul(a, b, out long productLo);
        ulong sum = lo + (ulong)productLo;
        hi += productHi + (sum < lo ? 1 : 0);
        lo = sum;
    }

    /// <summary>output[r] = round(W[r,:] . x) for every row, rows split over threads (bit-identical for any split).</summary>
    public void MatVec(Span<long> output, long[] x, int threads)
    {
        if (output.Length != Rows) throw new ArgumentException($"{Name}: matvec output has {output.Length} rows, expected {Rows}");
        fixed (long* py = output) MatMul(py, x, 1, threads);
    }

    /// <summary>
    /// y[t, r] = round(W[r,:] . x[t,:]) for a batch of <paramref name="tokens"/> rows of x ([tokens, Cols]);
    /// each weight row is read once for the whole batch (prefill). Rows are split over threads.
    /// </summary>
    public void MatMul(long* y, long[] x, int tokens, int threads)
    {
        if (x.Length < (long)tokens * Cols) throw new ArgumentException($"{Name}: matmul input holds {x.Length} values, needs {tokens} x {Cols}");
        int rows = Rows;
        void Range(int start, int end)
        {
            fixed (long* px = x)
                for (int r = start; r < end; r++)
                    for (int t = 0; t < tokens; t++)
                        y[(long)t * rows + r] = Round(r, DotRow(r, px + (long)t * Cols));
        }
        if (threads <= 1 || (long)rows * Cols * tokens < 1 << 16) { Range(0, rows); return; }
        int parts = Math.Min(threads, rows);
        Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = threads }, part =>
            Range((int)((long)rows * part / parts), (int)((long)rows * (part + 1) / parts)));
    }

    private long Round(int row, Int128 dot)
    {
        try { return Q48.RoundShift(dot, Q48.FracBits); }
        catch (Q48OverflowException e) { throw new Q48OverflowException($"{Name} row {row}: {e.Message}"); }
    }
}
