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
    public static void MatMulNT(T[] a, int aOff, int rows, T[] b, int bOff, int cols, int len, T[] c, int cOff, bool accumulate)
    {
        if (rows == 0 || cols == 0) return;
        // Chunks of rows per task: enough work per task to hide the scheduling cost.
        long perRow = Math.Max(1L, (long)cols * len);
        int rowsPerTask = (int)Math.Clamp(262144 / perRow, 1, Math.Max(1, rows / 8));
        int tasks = (rows + rowsPerTask - 1) / rowsPerTask;
        if (tasks == 1) { MatMulRows(a, aOff, 0, rows, b, bOff, cols, len, c, cOff, accumulate); return; }
        Parallel.For(0, tasks, Parallelism, t =>
        {
            int r0 = t * rowsPerTask;
            int r1 = Math.Min(rows, r0 + rowsPerTask);
            MatMulRows(a, aOff, r0, r1, b, bOff, cols, len, c, cOff, accumulate);
        });
    }

    private static void MatMulRows(T[] a, int aOff, int r0, int r1, T[] b, int bOff, int cols, int len, T[] c, int cOff, bool accumulate)
    {
        int vc = Vector<T>.Count;
        ref T bBase = ref b[0];
        for (int i = r0; i < r1; i++)
        {
            ref T ai = ref a[aOff + i * len];
            int j = 0;
            for (; j + 4 <= cols; j += 4)
            {
                ref T b0 = ref Unsafe.Add(ref bBase, bOff + j * len);
                ref T b1 = ref Unsafe.Add(ref b0, len);
                ref T b2 = ref Unsafe.Add(ref b1, len);
                ref T b3 = ref Unsafe.Add(ref b2, len);
                Vector<T> s0 = Vector<T>.Zero, s1 = Vector<T>.Zero, s2 = Vector<T>.Zero, s3 = Vector<T>.Zero;
                int k = 0;
                for (; k + vc <= len; k += vc)
                {
                    var x = Vector.LoadUnsafe(ref ai, (nuint)k);
                    s0 += x * Vector.LoadUnsafe(ref b0, (nuint)k);
                    s1 += x * Vector.LoadUnsafe(ref b1, (nuint)k);
                    s2 += x * Vector.LoadUnsafe(ref b2, (nuint)k);
                    s3 += x * Vector.LoadUnsafe(ref b3, (nuint)k);
                }
                T d0 = Vector.Sum(s0), d1 = Vector.Sum(s1), d2 = Vector.Sum(s2), d3 = Vector.Sum(s3);
                for (; k < len; k++)
                {
                    T x = Unsafe.Add(ref ai, k);
                    d0 += x * Unsafe.Add(ref b0, k);
                    d1 += x * Unsafe.Add(ref b1, k);
                    d2 += x * Unsafe.Add(ref b2, k);
                    d3 += x * Unsafe.Add(ref b3, k);
                }
                int o = cOff + i * cols + j;
                if (accumulate) { c[o] += d0; c[o + 1] += d1; c[o + 2] += d2; c[o + 3] += d3; }
                else { c[o] = d0; c[o + 1] = d1; c[o + 2] = d2; c[o + 3] = d3; }
            }
            for (; j < cols; j++)
            {
                T d = Dot(ref ai, ref Unsafe.Add(ref bBase, bOff + j * len), len);
                int o = cOff + i * cols + j;
                c[o] = accumulate ? c[o] + d : d;
            }
        }
    }

    public static T Dot(ref T x, ref T y, int len)
    {
        int vc = Vector<T>.Count;
        var s = Vector<T>.Zero;
        int k = 0;
        for (; k + vc <= len; k += vc) s += Vector.LoadUnsafe(ref x, (nuint)k) * Vector.LoadUnsafe(ref y, (nuint)k);
        T d = Vector.Sum(s);
        for (; k < len; k++) d += Unsafe.Add(ref x, k) * Unsafe.Add(ref y, k);
        return d;
    }

    public static T Dot(ReadOnlySpan<T> x, ReadOnlySpan<T> y) =>
        Dot(ref MemoryMarshal.GetReference(x), ref MemoryMarshal.GetReference(y), x.Length);

    /// <summary>y += alpha * x.</summary>
    public static void Axpy(T alpha, ReadOnlySpan<T> x, Span<T> y)
    {
        int vc = Vector<T>.Count;
        var av = new Vector<T>(alpha);
        ref T xr = ref MemoryMarshal.GetReference(x);
        ref T yr = ref MemoryMarshal.GetReference(y);
        int k = 0;
        for (; k + vc <= x.Length; k += vc)
            (Vector.LoadUnsafe(ref yr, (nuint)k) + av * Vector.LoadUnsafe(ref xr, (nuint)k)).StoreUnsafe(ref yr, (nuint)k);
        for (; k < x.Length; k++) Unsafe.Add(ref yr, k) += alpha * Unsafe.Add(ref xr, k);
    }

    /// <summary>dst[c, r] = src[r, c] for a rows×cols matrix at srcOff.</summary>
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
