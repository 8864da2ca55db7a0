using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Oracle;

/// <summary>
/// A weight matrix [rows, cols] with exact products. BF16, F16 and native M8E8 weights are transcoded at load into
/// <see cref="BlockExponentWeights"/>, a 2-bytes-a-weight block-exponent layout that an AVX2 kernel multiplies exactly
/// with 32-bit limbs, four rows per pass. Without AVX2 (or with vectorPath off) they stay in the checkpoint's mapping
/// and are converted as they are used through a 65536-entry table of the exact conversion; F32 and native Q48 tensors
/// are converted once at load.
/// Every row's dot product is the exact 128-bit sum of the products, rounded once (RNE) at the end, so the result
/// depends on no path, order, thread count or machine: the vector and scalar paths give the same bits.
/// </summary>
internal sealed unsafe class ExactMatrix
{
    private readonly byte* _data;          // BF16/F16 payload in the mapping
    private readonly long[]? _converted;   // F32 (or 1-D) tensors converted at load
    private readonly long[]? _table;       // exact Q16.48 of every 16-bit pattern
    private BlockExponentWeights? _fast;   // vector layout for BF16 / M8E8 (null: scalar only)

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

    /// <summary>
    /// Loads a weight matrix. <paramref name="forProducts"/> false (the embedding table when the LM head is a separate
    /// tensor) skips the fast layout: only rows are ever read from it. <paramref name="vectorPath"/> false keeps even
    /// BF16 and M8E8 matrices on the scalar path (for tests that compare the two; both give the same bits).
    /// </summary>
    public static ExactMatrix Load(LlamaCheckpoint checkpoint, TensorInfo tensor, bool forProducts = true, bool vectorPath = true)
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
        if (forProducts && BlockExponentWeights.IsSupported && vectorPath)
        {
            // Transcoded from file reads, validating every weight on the way; the mapped pages are never touched.
            var format = tensor.Dtype == TensorDtype.F16 ? BlockExponentWeights.Format.F16 : BlockExponentWeights.Format.Bf16;
            matrix._fast = BlockExponentWeights.Build(
                (first, count, destination) => checkpoint.ReadBytes(tensor, (long)first * cols * 2, System.Runtime.InteropServices.MemoryMarshal.AsBytes(destination)),
                format, rows, cols, table, Unrepresentable, Environment.ProcessorCount, out var invalid);
            if (invalid is { } bad) throw OutOfRange(tensor, bad.Element, bad.Code);
        }
        else matrix.CheckRange(tensor);
        return matrix;
    }

    /// <summary>Weights the vector path adds from its exception lists (0 without a vector path).</summary>
    internal int VectorExceptions => _fast?.ExceptionCount ?? 0;

    /// <summary>The fast layout, if this matrix has one.</summary>
    internal BlockExponentWeights? VectorLayout => _fast;

    private static ModelLoadException OutOfRange(TensorInfo tensor, long element, ushort code) =>
        new($"{tensor.FilePath}: tensor '{tensor.Name}' element {element} ({tensor.Dtype} 0x{code:X4}) is outside the Q16.48 range (|x| < 32768) or not finite");

    /// <summary>Fails at load, naming the tensor and element, if any weight is outside the Q16.48 range.</summary>
    private void CheckRange(TensorInfo tensor)
    {
        var bits = new ReadOnlySpan<ushort>(_data, checked(Rows * Cols));
        for (int i = 0; i < bits.Length; i++)
            if (_table![bits[i]] == Unrepresentable) throw OutOfRange(tensor, i, bits[i]);
    }

    /// <summary>Row <paramref name="row"/> as Q16.48 raws.</summary>
    public void ReadRow(int row, Span<long> destination)
    {
        if (_converted != null) { _converted.AsSpan(row * Cols, Cols).CopyTo(destination); return; }
        var bits = new ReadOnlySpan<ushort>(_data + (long)row * Cols * 2, Cols);
        var table = _table!;
        for (int i = 0; i < bits.Length; i++) destination[i] = table[bits[i]];
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
    public void MatMul(long* y, long[] x, int tokens, int threads) => MatMulShared([this], [(nint)y], x, tokens, threads);

    /// <summary>
    /// Several matrices of the same width applied to the same activations x ([tokens, Cols]) in one parallel pass:
    /// x is prepared once and one dispatch covers every matrix's rows (q, k and v; gate and up). With
    /// <paramref name="rowsDone"/> the matrices must have the same rows: each part of the pass computes the same rows
    /// of every matrix and then calls rowsDone(firstRow, endRow) on them, so elementwise work on those outputs (the
    /// SwiGLU of gate and up) joins the pass. outputs[i] points at matrix i's [tokens, Rows] result.
    /// </summary>
    public static void MatMulShared(ExactMatrix[] matrices, nint[] outputs, long[] x, int tokens, int threads, Action<int, int>? rowsDone = null)
    {
        var first = matrices[0];
        int cols = first.Cols;
        foreach (var m in matrices)
        {
            if (m.Cols != cols || (rowsDone != null && m.Rows != first.Rows)) throw new ArgumentException($"{m.Name}: shape does not match {first.Name} in a shared matmul");
            if (x.Length < (long)tokens * cols) throw new ArgumentException($"{m.Name}: matmul input holds {x.Length} values, needs {tokens} x {cols}");
        }
        long work = matrices.Sum(m => (long)m.Rows) * cols * tokens;
        bool parallel = threads > 1 && work >= 1 << 16;
        fixed (long* px = x)
        {
            long* xs = px;
            bool vector = matrices.All(m => m._fast != null);
            long[]? prepared = null;
            if (vector)
            {
                // The activation limbs, once per token, shared by every matrix, row and thread.
                int length = first._fast!.PreparedLength;
                prepared = PreparedBuffer((long)length * tokens);
                fixed (long* pp = prepared)
                    for (int t = 0; t < tokens && vector; t++) vector = first._fast.PrepareActivation(xs + (long)t * cols, pp + (long)t * length);
            }
            if (!vector)
            {
                // Scalar exact path: each matrix on its own, rows split over threads; then the elementwise work.
                foreach (var (m, y) in matrices.Zip(outputs))
                    Dispatch(m.Rows, parallel ? threads : 1, (start, end) => m.ScalarRows((long*)y, xs, tokens, start, end));
                rowsDone?.Invoke(0, first.Rows);
                return;
            }
            fixed (long* pp = prepared)
            {
                long* prep = pp;
                if (rowsDone != null)
                {
                    int rows = first.Rows;
                    Dispatch(first._fast!.Quads, parallel ? threads : 1, (start, end) =>
                    {
                        for (int i = 0; i < matrices.Length; i++) matrices[i].QuadRows((long*)outputs[i], xs, prep, tokens, start, end);
                        rowsDone(start * BlockExponentWeights.RowsPerQuad, Math.Min(rows, end * BlockExponentWeights.RowsPerQuad));
                    });
                    return;
                }
                // The matrices' quads laid end to end, one index space.
                var quadStart = new int[matrices.Length + 1];
                for (int i = 0; i < matrices.Length; i++) quadStart[i + 1] = quadStart[i] + matrices[i]._fast!.Quads;
                Dispatch(quadStart[^1], parallel ? threads : 1, (start, end) =>
                {
                    for (int i = 0; i < matrices.Length; i++)
                    {
                        int a = Math.Max(start, quadStart[i]), b = Math.Min(end, quadStart[i + 1]);
                        if (a < b) matrices[i].QuadRows((long*)outputs[i], xs, prep, tokens, a - quadStart[i], b - quadStart[i]);
                    }
                });
            }
        }
    }

    /// <summary>Row ranges per thread in a matmul (taken dynamically, so a core slowed by other load hands work over).</summary>
    private const int PartsPerThread = 4;

    /// <summary>Runs range(start, end) over [0, items): inline with one thread, else in dynamically taken parts.</summary>
    private static void Dispatch(int items, int threads, Action<int, int> range)
    {
        if (threads <= 1 || items <= 1) { range(0, items); return; }
        int parts = Math.Min(threads * PartsPerThread, items);
        WorkerTeam.Shared.Run(parts, threads, part => range((int)((long)items * part / parts), (int)((long)items * (part + 1) / parts)));
    }

    /// <summary>Vector path: quads [start, end) of this matrix for every token of the batch.</summary>
    private void QuadRows(long* y, long* x, long* prepared, int tokens, int start, int end)
    {
        var fast = _fast!;
        int rows = Rows, cols = Cols, length = fast.PreparedLength;
        var dots = stackalloc Int128[BlockExponentWeights.RowsPerQuad];
        for (int q = start; q < end; q++)
            for (int t = 0; t < tokens; t++)
            {
                fast.Dot4(q, prepared + (long)t * length, x + (long)t * cols, dots);
                int r0 = q * BlockExponentWeights.RowsPerQuad, count = Math.Min(BlockExponentWeights.RowsPerQuad, rows - r0);
                for (int k = 0; k < count; k++) y[(long)t * rows + r0 + k] = Round(r0 + k, dots[k]);
            }
    }

    /// <summary>Scalar path: rows [start, end) for every token of the batch.</summary>
    private void ScalarRows(long* y, long* x, int tokens, int start, int end)
    {
        for (int r = start; r < end; r++)
            for (int t = 0; t < tokens; t++)
            {
                long* xt = x + (long)t * Cols;
                y[(long)t * Rows + r] = Round(r, _fast is { } f ? f.ScalarDot(r, xt) : DotRow(r, xt));
            }
    }

    [ThreadStatic] private static long[]? t_prepared;

    /// <summary>A per-calling-thread scratch for prepared activations (matmuls on one engine run one at a time).</summary>
    private static long[] PreparedBuffer(long length)
    {
        if (t_prepared == null || t_prepared.Length < length) t_prepared = GC.AllocateUninitializedArray<long>(checked((int)length), pinned: true);
        return t_prepared;
    }

    private long Round(int row, Int128 dot)
    {
        try { return Q48.RoundShift(dot, Q48.FracBits); }
        catch (Q48OverflowException e) { throw new Q48OverflowException($"{Name} row {row}: {e.Message}"); }
    }
}
