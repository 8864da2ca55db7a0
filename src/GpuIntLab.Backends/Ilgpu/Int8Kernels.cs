using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// INT8 W8A8 linear layers. Weights: int8 codes packed 4 to an int32 word (little-endian bytes, rows
/// padded with zero codes to a multiple of 4 columns). Activations: dynamic per-token scale and codes
/// exactly as <c>Quantizer.QuantizeActivationsInt8</c> defines them (float32 absmax, absmax/127f, IEEE
/// division, RNE, clamp to +-127), after the SmoothQuant division x_j / s_j when the scheme has one.
/// Dot products: exact int32 accumulation of int8 x int8, by <c>dp4a.s32.s32</c> inline PTX on CUDA and
/// a scalar multiply-accumulate elsewhere; then y = acc * (s_w * s_a) in float64, rounded once to float32.
/// </summary>
public static class Int8Kernels
{
    /// <summary>One thread: xs = x (or x / smooth), scale[0] = absmax(xs)/127f (1 for a zero vector).</summary>
    public static void Prepare(Index1D index, ArrayView<float> x, ArrayView<float> smooth, int hasSmooth,
        ArrayView<float> xs, ArrayView<float> scale, int n)
    {
        float m = 0f;
        for (int j = 0; j < n; j++)
        {
            float v = hasSmooth != 0 ? x[j] / smooth[j] : x[j];
            xs[j] = v;
            float a = v < 0 ? -v : v;
            if (a > m) m = a;
        }
        scale[0] = m == 0f ? 1f : m / 127f;
    }

    /// <summary>Code of one activation: clamp(RNE(v / scale), -127, 127).</summary>
    public static int Code(float v, float scale)
    {
        float t = v / scale;
        if (t > 127f) t = 127f;
        if (t < -127f) t = -127f;
        return (int)DeviceMath.RoundEven(t);
    }

    /// <summary>Packs the codes of columns 4w..4w+3 into word w (zero past n).</summary>
    public static void Quantize(Index1D w, ArrayView<float> xs, ArrayView<float> scale, ArrayView<int> packed, int n)
    {
        float s = scale[0];
        int word = 0;
        for (int k = 0; k < 4; k++)
        {
            int j = w * 4 + k;
            int c = j < n ? Code(xs[j], s) : 0;
            word |= (c & 0xFF) << (8 * k);
        }
        packed[w] = word;
    }

    /// <summary>acc + sum over the 4 byte lanes of a_k * b_k (signed): dp4a on CUDA, scalar elsewhere.</summary>
    public static int Dot4(int a, int b, int acc)
    {
        if (CudaAsm.IsSupported)
        {
            CudaAsm.Emit("dp4a.s32.s32 %0, %1, %2, %3;", out int d, a, b, acc);
            return d;
        }
        for (int k = 0; k < 4; k++)
            acc += ((a << (24 - 8 * k)) >> 24) * ((b << (24 - 8 * k)) >> 24);
        return acc;
    }

    /// <summary>y[r] = (float)(acc_r * (wScale[r or 0] * aScale)); one thread per row; packed W column-major [words, rows].</summary>
    public static void MatVec(Index1D r, ArrayView<int> w, ArrayView<int> a, ArrayView<float> wScale, int perRow,
        ArrayView<float> aScale, ArrayView<float> y, int rows, int words)
    {
        int acc = 0;
        for (int k = 0; k < words; k++) acc = Dot4(w[(long)k * rows + r.X], a[k], acc);
        double s = (double)wScale[r * perRow] * aScale[0];
        y[r] = (float)(acc * s);
    }
}
