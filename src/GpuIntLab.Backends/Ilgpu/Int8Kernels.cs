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
        return Dot4Scalar(a, b, acc);
    }

    /// <summary>Scalar dot of 4 packed int8 lanes (no inline PTX): for CUDA devices below sm_61, which lack dp4a.</summary>
    public static int Dot4Scalar(int a, int b, int acc)
    {
        for (int k = 0; k < 4; k++)
            acc += ((a << (24 - 8 * k)) >> 24) * ((b << (24 - 8 * k)) >> 24);
        return acc;
    }

    /// <summary><see cref="MatVec"/> without inline PTX (CUDA below sm_61).</summary>
    public static void MatVecScalar(Index1D r, ArrayView<int> w, ArrayView<int> a, ArrayView<float> wScale, int perRow,
        ArrayView<float> aScale, ArrayView<float> y, int rows, int words)
    {
        int acc = 0;
        for (int k = 0; k < words; k++) acc = Dot4Scalar(w[(long)k * rows + r.X], a[k], acc);
        double s = (double)wScale[r * perRow] * aScale[0];
        y[r] = (float)(acc * s);
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

    /// <summary>Word k of row r of the column-major packed W, zero outside the matrix.</summary>
    private static int Word(ArrayView<int> w, int k, int r, int rows, int words) => k < words && r < rows ? w[(long)k * rows + r] : 0;

    /// <summary>
    /// Tensor-core matvec: one warp per 16 rows; each step of 32 int8 columns is one
    /// <c>mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32</c> with the activation as column 0 of B (the other
    /// 7 columns zero). Fragments (PTX ISA, m16n8k32 .s8; g = lane/4, t = lane%4, one int32 = 4 codes):
    /// a0 = A[g, word t], a1 = A[g+8, word t], a2 = A[g, word 4+t], a3 = A[g+8, word 4+t];
    /// b0 = B[word t, column g], b1 = B[word 4+t, column g]; c0 = C[g, 2t], c2 = C[g+8, 2t].
    /// Launch with 32 threads per 16 rows (whole warps). Where inline PTX is unsupported (CPU accelerator) the
    /// lanes with t = 0 compute their two rows with scalar code, so the indexing and output are testable there.
    /// Exact int32 sums either way: the result equals <see cref="MatVec"/> bit for bit.
    /// </summary>
    public static void MatVecMma(Index1D index, ArrayView<int> w, ArrayView<int> a, ArrayView<float> wScale, int perRow,
        ArrayView<float> aScale, ArrayView<float> y, int rows, int words)
    {
        int warp = index.X / 32, lane = index.X % 32;
        int g = lane / 4, t = lane % 4;
        int r0 = warp * 16 + g, r1 = r0 + 8;
        int c0 = 0, c2 = 0;
        if (CudaAsm.IsSupported)
        {
            Ref<int> d0 = 0, d1 = 0, d2 = 0, d3 = 0;
            for (int kb = 0; kb < words; kb += 8)
            {
                int k0 = kb + t, k1 = kb + 4 + t;
                Input<int> a0 = Word(w, k0, r0, rows, words), a1 = Word(w, k0, r1, rows, words);
                Input<int> a2 = Word(w, k1, r0, rows, words), a3 = Word(w, k1, r1, rows, words);
                Input<int> b0 = g == 0 && k0 < words ? a[k0] : 0;
                Input<int> b1 = g == 0 && k1 < words ? a[k1] : 0;
                CudaAsm.EmitRef("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};",
                    ref d0, ref d1, ref d2, ref d3, ref a0, ref a1, ref a2, ref a3, ref b0, ref b1);
            }
            c0 = d0.Value;
            c2 = d2.Value;
        }
        else if (t == 0)
        {
            for (int k = 0; k < words; k++)
            {
                c0 = Dot4(Word(w, k, r0, rows, words), a[k], c0);
                c2 = Dot4(Word(w, k, r1, rows, words), a[k], c2);
            }
        }
        if (t != 0) return;
        if (r0 < rows) y[r0] = (float)(c0 * ((double)wScale[r0 * perRow] * aScale[0]));
        if (r1 < rows) y[r1] = (float)(c2 * ((double)wScale[r1 * perRow] * aScale[0]));
    }
}
