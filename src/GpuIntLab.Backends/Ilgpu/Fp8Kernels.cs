using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// FP8 E4M3 linear layers: weight codes (per-tensor or per-row scale from <c>Quantizer</c>), activation
/// codes with a dynamic per-token scale exactly as <c>Quantizer.QuantizeActivationsE4M3</c> defines it
/// (absmax/448f, IEEE division, RNE with SATFINITE). Decoding through the exact 256-entry table; each
/// E4M3 x E4M3 product is exact in float32 and accumulates in float32; y = acc * (s_w * s_a) in float64,
/// rounded once to float32.
/// </summary>
public static class Fp8Kernels
{
    /// <summary>One thread: scale[0] = absmax(x)/448f (1 for a zero vector).</summary>
    public static void Prepare(Index1D index, ArrayView<float> x, ArrayView<float> scale, int n)
    {
        float m = 0f;
        for (int j = 0; j < n; j++) { float a = x[j] < 0 ? -x[j] : x[j]; if (a > m) m = a; }
        scale[0] = m == 0f ? 1f : m / 448f;
    }

    /// <summary>codes[j] = E4M3(x[j] / scale).</summary>
    public static void Quantize(Index1D j, ArrayView<float> x, ArrayView<float> scale, ArrayView<byte> codes)
        => codes[j] = DeviceMath.FloatToE4M3(x[j] / scale[0]);

    /// <summary>y[r] = (float)((sum_j dec(w[r, j]) * dec(a[j])) * (wScale * aScale)), j ascending; one thread per row, W column-major [cols, rows].</summary>
    public static void MatVec(Index1D r, ArrayView<byte> w, ArrayView<byte> a, ArrayView<float> table,
        ArrayView<float> wScale, int perRow, ArrayView<float> aScale, ArrayView<float> y, int rows, int cols)
    {
        float acc = 0f;
        for (int j = 0; j < cols; j++) acc += table[(int)w[(long)j * rows + r.X]] * table[(int)a[j]];
        double s = (double)wScale[r * perRow] * aScale[0];
        y[r] = (float)(acc * s);
    }
}
