using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace GpuIntLab.Training;

/// <summary>
/// The dense building blocks of the trainer, generic over float and double (float to train, double
/// to check gradients against finite differences with the same code). Every matmul is written as
/// "rows of A dotted with rows of B" (C = A·Bᵀ), so forward and both backward products use one SIMD
/// kernel after a transpose. Work is split over output rows and each output element is summed by
/// one thread in a fixed order, so results do not depend on the thread count or on scheduling.
/// </summary>
public static class Kernels<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    /// <summary>Threads used by <c>Parallel.For</c>; set before training (1 gives a single-threaded run with identical results).</summary>
    public static ParallelOptions Parallelism { get; set; } = new() { MaxDegreeOfParallelism = Environment.ProcessorCount };

    /// <summary>c[i, j] (+)= dot(a[i, :], b[j, :]) for i &lt; rows, j &lt; cols, rows of length len.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void MatMulNT(T[] a, int aOff, int rows, T[] b, int bOff, int cols, int len, T[] c, int cOff, bool accumulate)
    {
        if (rows == 0 || cols == 0) return;
        // Chunks of rows per task: enough work per task to hide the scheduling cost.
        long perRow = Math.Max(1L, (long)cols * len);
        int rowsPerTask = (int)Math.Clamp(262144 / perRow, 1, Math.Max(1, rows / 8));
        rowsPerTask += rowsPerTask & 1; // even, for the two-row kernel
        int tasks = (rows + rowsPerTask - 1) / rowsPerTask;
        if (tasks == 1) { MatMulRows(a, aOff, 0, rows, b, bOff, cols, len, c, cOff, accumulate); return; }
        Parallel.For(0, tasks, Parallelism, t =>
        {
            int r0 = t * rowsPerTask;
            int r1 = Math.Min(rows, r0 + rowsPerTask);
            MatMulRows(a, aOff, r0, r1, b, bOff, cols, len, c, cOff, accumulate);
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MatMulRows(T[] a, int aOff, int r0, int r1, T[] b, int bOff, int cols, int len, T[] c, int cOff, bool accumulate)
    {
        int i = r0;
        for (; i + 2 <= r1; i += 2) MatMulTwoRows(a, aOff, i, b, bOff, cols, len, c, cOff, accumulate);
        if (i < r1) MatMulOneRow(a, aOff, i, b, bOff, 0, cols, len, c, cOff, accumulate);
    }

    /// <summary>Two rows of A against four rows of B at a time: 8 accumulators, 6 loads per 8 fused multiply-adds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MatMulTwoRows(T[] a, int aOff, int i, T[] b, int bOff, int cols, int len, T[] c, int cOff, bool accumulate)
    {
        int vc = Vector<T>.Count;
        ref T a0 = ref a[aOff + i * len];
        ref T a1 = ref Unsafe.Add(ref a0, len);
        ref T bBase = ref b[0];
        int j = 0;
        for (; j + 4 <= cols; j += 4)
        {
            ref T b0 = ref Unsafe.Add(ref bBase, bOff + j * len);
            ref T b1 = ref Unsafe.Add(ref b0, len);
            ref T b2 = ref Unsafe.Add(ref b1, len);
            ref T b3 = ref Unsafe.Add(ref b2, len);
            Vector<T> s00 = default, s01 = default, s02 = default, s03 = default, s10 = default, s11 = default, s12 = default, s13 = default;
            int k = 0;
            for (; k + vc <= len; k += vc)
            {
                var x0 = Vector.LoadUnsafe(ref a0, (nuint)k);
                var x1 = Vector.LoadUnsafe(ref a1, (nuint)k);
                var y = Vector.LoadUnsafe(ref b0, (nuint)k);
                s00 = Fma(x0, y, s00); s10 = Fma(x1, y, s10);
                y = Vector.LoadUnsafe(ref b1, (nuint)k);
                s01 = Fma(x0, y, s01); s11 = Fma(x1, y, s11);
                y = Vector.LoadUnsafe(ref b2, (nuint)k);
                s02 = Fma(x0, y, s02); s12 = Fma(x1, y, s12);
                y = Vector.LoadUnsafe(ref b3, (nuint)k);
                s03 = Fma(x0, y, s03); s13 = Fma(x1, y, s13);
            }
            T d00 = Vector.Sum(s00), d01 = Vector.Sum(s01), d02 = Vector.Sum(s02), d03 = Vector.Sum(s03);
            T d10 = Vector.Sum(s10), d11 = Vector.Sum(s11), d12 = Vector.Sum(s12), d13 = Vector.Sum(s13);
            for (; k < len; k++)
            {
                T x0 = Unsafe.Add(ref a0, k), x1 = Unsafe.Add(ref a1, k);
                T y0 = Unsafe.Add(ref b0, k), y1 = Unsafe.Add(ref b1, k), y2 = Unsafe.Add(ref b2, k), y3 = Unsafe.Add(ref b3, k);
                d00 += x0 * y0; d01 += x0 * y1; d02 += x0 * y2; d03 += x0 * y3;
                d10 += x1 * y0; d11 += x1 * y1; d12 += x1 * y2; d13 += x1 * y3;
            }
            int o = cOff + i * cols + j, o1 = o + cols;
            if (accumulate)
            {
                c[o] += d00; c[o + 1] += d01; c[o + 2] += d02; c[o + 3] += d03;
                c[o1] += d10; c[o1 + 1] += d11; c[o1 + 2] += d12; c[o1 + 3] += d13;
            }
            else
            {
                c[o] = d00; c[o + 1] = d01; c[o + 2] = d02; c[o + 3] = d03;
                c[o1] = d10; c[o1 + 1] = d11; c[o1 + 2] = d12; c[o1 + 3] = d13;
            }
        }
        if (j < cols)
        {
            MatMulOneRow(a, aOff, i, b, bOff, j, cols, len, c, cOff, accumulate);
            MatMulOneRow(a, aOff, i + 1, b, bOff, j, cols, len, c, cOff, accumulate);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void MatMulOneRow(T[] a, int aOff, int i, T[] b, int bOff, int j0, int cols, int len, T[] c, int cOff, bool accumulate)
    {
        ref T ai = ref a[aOff + i * len];
        for (int j = j0; j < cols; j++)
        {
            T d = Dot(ref ai, ref b[bOff + j * len], len);
            int o = cOff + i * cols + j;
            c[o] = accumulate ? c[o] + d : d;
        }
    }

    /// <summary>a·b + c with one rounding (hardware FMA for float and double).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<T> Fma(Vector<T> a, Vector<T> b, Vector<T> c)
    {
        if (typeof(T) == typeof(float))
            return Vector.As<float, T>(Vector.FusedMultiplyAdd(Vector.As<T, float>(a), Vector.As<T, float>(b), Vector.As<T, float>(c)));
        if (typeof(T) == typeof(double))
            return Vector.As<double, T>(Vector.FusedMultiplyAdd(Vector.As<T, double>(a), Vector.As<T, double>(b), Vector.As<T, double>(c)));
        return a * b + c;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static T Dot(ref T x, ref T y, int len)
    {
        int vc = Vector<T>.Count;
        var s = Vector<T>.Zero;
        int k = 0;
        for (; k + vc <= len; k += vc) s = Fma(Vector.LoadUnsafe(ref x, (nuint)k), Vector.LoadUnsafe(ref y, (nuint)k), s);
        T d = Vector.Sum(s);
        for (; k < len; k++) d += Unsafe.Add(ref x, k) * Unsafe.Add(ref y, k);
        return d;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static T Dot(ReadOnlySpan<T> x, ReadOnlySpan<T> y) =>
        Dot(ref MemoryMarshal.GetReference(x), ref MemoryMarshal.GetReference(y), x.Length);

    /// <summary>y += alpha * x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Axpy(T alpha, ReadOnlySpan<T> x, Span<T> y)
    {
        int vc = Vector<T>.Count;
        var av = new Vector<T>(alpha);
        ref T xr = ref MemoryMarshal.GetReference(x);
        ref T yr = ref MemoryMarshal.GetReference(y);
        int k = 0;
        for (; k + vc <= x.Length; k += vc)
            Fma(av, Vector.LoadUnsafe(ref xr, (nuint)k), Vector.LoadUnsafe(ref yr, (nuint)k)).StoreUnsafe(ref yr, (nuint)k);
        for (; k < x.Length; k++) Unsafe.Add(ref yr, k) += alpha * Unsafe.Add(ref xr, k);
    }

    /// <summary>dst[c, r] = src[r, c] for a rows×cols matrix at srcOff.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Transpose(T[] src, int srcOff, int rows, int cols, T[] dst)
    {
        const int Block = 32;
        int blocks = (rows + Block - 1) / Block;
        Parallel.For(0, blocks, Parallelism, bi =>
        {
            int r0 = bi * Block, r1 = Math.Min(rows, r0 + Block);
            for (int c0 = 0; c0 < cols; c0 += Block)
            {
                int c1 = Math.Min(cols, c0 + Block);
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++)
                        dst[c * rows + r] = src[srcOff + r * cols + c];
            }
        });
    }
}
