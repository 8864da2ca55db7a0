using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// The float32 parts of the forward pass shared by the FP16, INT8 and FP8 engines: RMSNorm, RoPE,
/// attention over the KV cache, softmax, SwiGLU, residual add. Plain one-thread-per-output kernels, no
/// shared memory or barriers (the CPU accelerator runs barrier kernels ~1000x slower); reductions over
/// a vector are one thread walking it in order, so the CPU accelerator and CUDA sum in the same order, and
/// inexact products go through <see cref="DeviceMath.Mul(float, float)"/> so CUDA cannot fuse them into FMAs:
/// the CPU accelerator's float32 results are the ones CUDA computes.
/// </summary>
public static class FloatKernels
{
    /// <summary>One thread: inv[0] = 1/sqrt(sum(x^2)/n + eps), sequential float32 sum.</summary>
    public static void RmsInverse(Index1D index, ArrayView<float> x, ArrayView<float> inv, int n, float eps)
    {
        float ss = 0f;
        for (int i = 0; i < n; i++) ss += DeviceMath.Mul(x[i], x[i]);
        inv[0] = DeviceMath.Rsqrt(ss / n + eps);
    }

    /// <summary>output[i] = w[i] * (x[i] * inv).</summary>
    public static void RmsApply(Index1D i, ArrayView<float> x, ArrayView<float> inv, ArrayView<float> w, ArrayView<float> output)
        => output[i] = w[i] * (x[i] * inv[0]);

    /// <summary>One thread per row of width n (Qwen3's per-head q/k norm): inv[row] = 1/sqrt(sum(x_row^2)/n + eps), sequential sum.</summary>
    public static void RmsInverseRows(Index1D row, ArrayView<float> x, ArrayView<float> inv, int n, float eps)
    {
        float ss = 0f;
        int o = row * n;
        for (int i = 0; i < n; i++) ss += DeviceMath.Mul(x[o + i], x[o + i]);
        inv[row] = DeviceMath.Rsqrt(ss / n + eps);
    }

    /// <summary>x[i] = w[i mod n] * (x[i] * inv[i / n]), in place, rows of width n.</summary>
    public static void RmsApplyRows(Index1D i, ArrayView<float> x, ArrayView<float> inv, ArrayView<float> w, int n)
        => x[i] = w[i % n] * (x[i] * inv[i / n]);

    /// <summary>HF rotate-half RoPE, one thread per (head, pair); cos/sin tables [position, headDim/2].</summary>
    public static void Rope(Index1D index, ArrayView<float> vec, ArrayView<float> cos, ArrayView<float> sin, int pos, int half)
    {
        int h = index / half, i = index % half;
        int a = h * 2 * half + i, b = a + half;
        float c = cos[pos * half + i], s = sin[pos * half + i];
        float x0 = vec[a], x1 = vec[b];
        vec[a] = DeviceMath.Mul(x0, c) - DeviceMath.Mul(x1, s);
        vec[b] = DeviceMath.Mul(x1, c) + DeviceMath.Mul(x0, s);
    }

    /// <summary>dst[offset + i] = src[i].</summary>
    public static void CopyTo(Index1D i, ArrayView<float> src, ArrayView<float> dst, int offset) => dst[offset + i] = src[i];

    /// <summary>scores[h, t] = (q_h . k_t) * scale for t &lt; n; one thread per (head, t). Cache rows are [position, kvDim].</summary>
    public static void Scores(Index1D index, ArrayView<float> q, ArrayView<float> keys, ArrayView<float> scores,
        int n, int headDim, int kvDim, int group, float scale)
    {
        int h = index / n, t = index % n;
        int kvHead = h / group;
        float dot = 0f;
        int qo = h * headDim, ko = t * kvDim + kvHead * headDim;
        for (int i = 0; i < headDim; i++) dot += DeviceMath.Mul(q[qo + i], keys[ko + i]);
        scores[index] = dot * scale;
    }

    /// <summary>In-place softmax over each head's n scores; one thread per head.</summary>
    public static void Softmax(Index1D h, ArrayView<float> scores, int n)
    {
        int o = h * n;
        float max = scores[o];
        for (int t = 1; t < n; t++) if (scores[o + t] > max) max = scores[o + t];
        float sum = 0f;
        for (int t = 0; t < n; t++) { float e = DeviceMath.Exp(scores[o + t] - max); scores[o + t] = e; sum += e; }
        for (int t = 0; t < n; t++) scores[o + t] = scores[o + t] / sum;
    }

    /// <summary>output[h, i] = sum_t p[h, t] * v_t[kvHead, i]; one thread per (head, i).</summary>
    public static void AttentionOutput(Index1D index, ArrayView<float> p, ArrayView<float> values, ArrayView<float> output,
        int n, int headDim, int kvDim, int group)
    {
        int h = index / headDim, i = index % headDim;
        int vo = (h / group) * headDim + i;
        float acc = 0f;
        for (int t = 0; t < n; t++) acc += DeviceMath.Mul(p[h * n + t], values[t * kvDim + vo]);
        output[index] = acc;
    }

    /// <summary>x[i] += delta[i].</summary>
    public static void Residual(Index1D i, ArrayView<float> x, ArrayView<float> delta) => x[i] += delta[i];

    /// <summary>gate[i] = silu(gate[i]) * up[i] = g / (1 + e^-g) * u.</summary>
    public static void SwiGlu(Index1D i, ArrayView<float> gate, ArrayView<float> up)
    {
        float g = gate[i];
        gate[i] = g / (1f + DeviceMath.Exp(-g)) * up[i];
    }
}
