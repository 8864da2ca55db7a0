using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// FP16 linear layers: weights and input activations as IEEE binary16 bit patterns (ushort), each
/// half x half product exact in float32 (11-bit significands), accumulated in float32 in column order
/// (what an mma.sync f16 with f32 accumulators computes, up to summation order). The output stays float32.
/// </summary>
public static class Fp16Kernels
{
    /// <summary>xh[i] = half(x[i]), round to nearest even (cvt.rn.f16.f32 semantics, integer emulation).</summary>
    public static void ToHalf(Index1D i, ArrayView<float> x, ArrayView<ushort> xh) => xh[i] = DeviceMath.FloatToHalf(x[i]);

    /// <summary>
    /// y[r] = sum_j float(w[r, j]) * float(xh[j]) in float32, j ascending; one thread per row. W is stored
    /// column-major ([cols, rows]) so that neighbouring threads read neighbouring addresses (coalesced on a GPU).
    /// </summary>
    public static void MatVec(Index1D r, ArrayView<ushort> w, ArrayView<ushort> xh, ArrayView<float> y, int rows, int cols)
    {
        float acc = 0f;
        for (int j = 0; j < cols; j++) acc += DeviceMath.HalfToFloat(w[(long)j * rows + r.X]) * DeviceMath.HalfToFloat(xh[j]);
        y[r] = acc;
    }
}
