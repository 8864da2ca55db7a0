using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// Q16.48 kernels: the oracle's integer arithmetic on the device. Every sum is the exact 128-bit sum of
/// exact 64x64 products (composed from 32-bit halves) rounded once with RNE, so results are the
/// oracle's bits whatever the thread layout. A result outside the int64 range writes its op code into
/// error[0] (the host checks it and throws, as the oracle would).
/// </summary>
public static class Int64Kernels
{
    public const int MatVecOverflow = 1, NormOverflow = 2, RopeOverflow = 3, ScoreOverflow = 4, AttentionOverflow = 5, ResidualOverflow = 6, SwiGluOverflow = 7;

    /// <summary>y[r] = RNE(sum_j w[r, j] * x[j] / 2^48); one thread per row, W column-major [cols, rows] (coalesced reads).</summary>
    public static void MatVec(Index1D r, ArrayView<long> w, ArrayView<long> x, ArrayView<long> y, ArrayView<int> error, int rows, int cols)
    {
        long hi = 0; ulong lo = 0;
        for (int j = 0; j < cols; j++) DeviceMath.Accumulate(ref hi, ref lo, w[(long)j * rows + r.X], x[j]);
        if (!DeviceMath.RoundShift48(hi, lo, out long v)) error[0] = MatVecOverflow;
        y[r] = v;
    }

    /// <summary>One thread: the exact 128-bit sum of squares, acc[0] = high word, acc[1] = low word.</summary>
    public static void SumSquares(Index1D index, ArrayView<long> x, ArrayView<long> acc, int n)
    {
        long hi = 0; ulong lo = 0;
        for (int i = 0; i < n; i++) DeviceMath.Accumulate(ref hi, ref lo, x[i], x[i]);
        acc[0] = hi;
        acc[1] = (long)lo;
    }

    /// <summary>output[i] = Mul(w[i], Mul(x[i], inverse)) (the oracle's RMSNorm apply).</summary>
    public static void NormApply(Index1D i, ArrayView<long> x, ArrayView<long> w, ArrayView<long> output, long inverse, ArrayView<int> error)
    {
        bool ok = DeviceMath.Mul(x[i], inverse, out long t);
        ok &= DeviceMath.Mul(w[i], t, out long v);
        if (!ok) error[0] = NormOverflow;
        output[i] = v;
    }

    /// <summary>Rotate-half RoPE: each output one exact 128-bit sum (a cos - b sin, b cos + a sin) rounded once.</summary>
    public static void Rope(Index1D index, ArrayView<long> vec, ArrayView<long> cos, ArrayView<long> sin, int pos, int half, ArrayView<int> error)
    {
        int h = index / half, i = index % half;
        int ia = h * 2 * half + i, ib = ia + half;
        long a = vec[ia], b = vec[ib];
        long c = cos[pos * half + i], s = sin[pos * half + i];
        long h1 = DeviceMath.MulFull(a, c, out ulong l1);
        long h2 = DeviceMath.MulFull(b, s, out ulong l2);
        DeviceMath.Subtract(ref h1, ref l1, h2, l2);
        long h3 = DeviceMath.MulFull(b, c, out ulong l3);
        long h4 = 0; ulong l4 = 0;
        DeviceMath.Accumulate(ref h4, ref l4, a, s);
        // (b c) + (a s)
        ulong sum = l3 + l4;
        long h5 = h3 + h4 + (sum < l3 ? 1L : 0L);
        bool ok = DeviceMath.RoundShift48(h1, l1, out long ra);
        ok &= DeviceMath.RoundShift48(h5, sum, out long rb);
        if (!ok) error[0] = RopeOverflow;
        vec[ia] = ra;
        vec[ib] = rb;
    }

    /// <summary>dst[offset + i] = src[i].</summary>
    public static void CopyTo(Index1D i, ArrayView<long> src, ArrayView<long> dst, int offset) => dst[offset + i] = src[i];

    /// <summary>scores[h, t] = Mul(RNE(q_h . k_t / 2^48), scale); one thread per (head, t).</summary>
    public static void Scores(Index1D index, ArrayView<long> q, ArrayView<long> keys, ArrayView<long> scores,
        int n, int headDim, int kvDim, int group, long scale, ArrayView<int> error)
    {
        int h = index / n, t = index % n;
        int qo = h * headDim, ko = t * kvDim + (h / group) * headDim;
        long hi = 0; ulong lo = 0;
        for (int i = 0; i < headDim; i++) DeviceMath.Accumulate(ref hi, ref lo, q[qo + i], keys[ko + i]);
        bool ok = DeviceMath.RoundShift48(hi, lo, out long dot);
        ok &= DeviceMath.Mul(dot, scale, out long v);
        if (!ok) error[0] = ScoreOverflow;
        scores[index] = v;
    }

    /// <summary>output[h, i] = RNE(sum_t p[h, t] * v_t[kvHead, i] / 2^48), exact sum; one thread per (head, i).</summary>
    public static void AttentionOutput(Index1D index, ArrayView<long> p, ArrayView<long> values, ArrayView<long> output,
        int n, int headDim, int kvDim, int group, ArrayView<int> error)
    {
        int h = index / headDim, i = index % headDim;
        int vo = (h / group) * headDim + i;
        long hi = 0; ulong lo = 0;
        for (int t = 0; t < n; t++) DeviceMath.Accumulate(ref hi, ref lo, p[h * n + t], values[t * kvDim + vo]);
        if (!DeviceMath.RoundShift48(hi, lo, out long v)) error[0] = AttentionOverflow;
        output[index] = v;
    }

    /// <summary>x[i] += delta[i], flagging signed overflow.</summary>
    public static void Residual(Index1D i, ArrayView<long> x, ArrayView<long> delta, ArrayView<int> error)
    {
        long a = x[i], d = delta[i];
        long sum = a + d;
        if (((a ^ sum) & (d ^ sum)) < 0) error[0] = ResidualOverflow;
        x[i] = sum;
    }

    /// <summary>hb[i] = Mul(silu[i], up[i]) where silu holds Q48.Silu(gate) computed by the host.</summary>
    public static void MulInPlace(Index1D i, ArrayView<long> silu, ArrayView<long> up, ArrayView<int> error)
    {
        if (!DeviceMath.Mul(silu[i], up[i], out long v)) error[0] = SwiGluOverflow;
        silu[i] = v;
    }
}
