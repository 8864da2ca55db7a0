using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// Kernels of the 2025-2026 linear formats (issue 15): block-scaled weights (INT4 g128, MXFP8/6/4, NVFP4) dequantized
/// in the kernel from their codes, BF16 weights, and the activation quantizers at a linear's input (BF16 and FP16
/// rounding, MX per-block and NVFP4 two-level quantization). Every quantizer reproduces its CPU codec in
/// <c>GpuIntLab.Core.Formats</c> bit for bit: only integer bit manipulation, IEEE float32 +, *, / and comparisons, and
/// the exact element decode tables. A dequantized weight is <c>(table[code] - zero) * scale</c> in float32, the value
/// the codecs' float32 <c>Dequantize</c> gives; the matvec sums <c>w * x</c> over K in ascending order in float32
/// (one thread per output row, products through <see cref="DeviceMath.Mul(float, float)"/> so CUDA cannot fuse).
/// </summary>
public static class BlockKernels
{
    /// <summary>2^k as a float for k in [-127, 127] (2^-127 is the subnormal 0x0040_0000).</summary>
    public static float Pow2(int k) => k >= -126 ? Interop.IntAsFloat((uint)(k + 127) << 23) : Interop.IntAsFloat(0x0040_0000u);

    /// <summary>
    /// Round to nearest even with satfinite saturation onto a mini-float whose non-negative codes 0..maxCode have
    /// increasing values table[0..maxCode] (= MiniFloatFormat.Encode for finite input): the largest code not above
    /// |v|, then the midpoint to the next code (exact in float32: these formats have at most 3 mantissa bits) decides,
    /// ties to the even code. The sign bit of v becomes <paramref name="signBit"/>.
    /// </summary>
    public static int EncodeByTable(float v, ArrayView<float> table, int maxCode, int signBit)
    {
        int sign = (Interop.FloatAsInt(v) >> 31) != 0 ? signBit : 0;
        float a = v < 0 ? -v : v;
        if (a >= table[maxCode]) return sign | maxCode;
        int lo = 0, hi = maxCode; // table[lo] <= a < table[hi]
        while (hi - lo > 1)
        {
            int mid = (lo + hi) >> 1;
            if (table[mid] <= a) lo = mid; else hi = mid;
        }
        float half = (table[lo] + table[hi]) * 0.5f;
        int code = a < half ? lo : a > half ? hi : ((lo & 1) == 0 ? lo : hi);
        return sign | code;
    }

    /// <summary>E8M0.ScaleFor: the scale byte of a block with magnitude <paramref name="amax"/>; rule 0 = ocp-floor, 1 = rceil.</summary>
    public static int E8M0Scale(float amax, int rule, int emaxElement, float reciprocalOfMax)
    {
        if (rule == 0)
        {
            int field = (int)((Interop.FloatAsInt(amax) >> 23) & 0xFF);
            if (field == 0xFF) return 0xFF;
            int shared = field - 127 - emaxElement;
            return (shared < -127 ? -127 : shared) + 127;
        }
        float value = amax * reciprocalOfMax;
        uint bits = Interop.FloatAsInt(value);
        int exponentField = (int)((bits >> 23) & 0xFF), mantissa = (int)(bits & 0x7F_FFFF);
        if (exponentField == 0xFF) return mantissa != 0 ? 0xFF : 0xFE;
        if (mantissa > 0 && exponentField != 0xFE && !(exponentField == 0 && mantissa <= 0x40_0000)) exponentField++;
        return exponentField;
    }

    /// <summary>BF16 rounding (RNE) of a float, returned as float (= Bf16.RoundToBf16; NaN stays NaN).</summary>
    public static float RoundToBf16(float v)
    {
        uint bits = Interop.FloatAsInt(v);
        if ((bits & 0x7FFF_FFFFu) > 0x7F80_0000u) return v;
        uint rounded = bits + 0x7FFFu + ((bits >> 16) & 1u);
        return Interop.IntAsFloat(rounded & 0xFFFF_0000u);
    }

    /// <summary>x'[j] = bf16(x[j]).</summary>
    public static void InputBf16(Index1D j, ArrayView<float> x, ArrayView<float> output) => output[j] = RoundToBf16(x[j]);

    /// <summary>x'[j] = fp16(x[j] / s[j]) (AWQ channel scale when hasScale = 1) or fp16(x[j]): the W4A16 kernels' half input.</summary>
    public static void InputFp16(Index1D j, ArrayView<float> x, ArrayView<float> channelScale, int hasScale, ArrayView<float> output)
    {
        float v = hasScale != 0 ? x[j] / channelScale[j] : x[j];
        output[j] = DeviceMath.HalfToFloat(DeviceMath.FloatToHalf(v));
    }

    /// <summary>
    /// MX quantize-dequantize of one block per thread (= MxCodec.Quantize then MxVector.Dequantize): amax, the E8M0
    /// scale by the rule, elements RNE-satfinite of x * 2^(127 - scale) (1.0 for byte 0 under rceil), output
    /// element * 2^(scale - 127) in float32. A NaN amax gives the NaN scale and NaN outputs.
    /// </summary>
    public static void InputMx(Index1D block, ArrayView<float> x, ArrayView<float> output, ArrayView<float> table,
        int n, int blockSize, int maxCode, int signBit, int rule, int emaxElement, float reciprocalOfMax)
    {
        int start = block * blockSize, end = start + blockSize < n ? start + blockSize : n;
        float amax = 0f;
        bool nan = false;
        for (int i = start; i < end; i++)
        {
            float v = x[i];
            if ((Interop.FloatAsInt(v) & 0x7FFF_FFFFu) > 0x7F80_0000u) nan = true;
            else { float a = v < 0 ? -v : v; if (a > amax) amax = a; }
        }
        int scale = E8M0Scale(nan ? Interop.IntAsFloat(0x7FC0_0000u) : amax, rule, emaxElement, reciprocalOfMax);
        if (scale == 0xFF)
        {
            for (int i = start; i < end; i++) output[i] = Interop.IntAsFloat(0x7FC0_0000u);
            return;
        }
        float encode = rule == 1 && scale == 0 ? 1f : Pow2(127 - scale);
        float decode = Pow2(scale - 127);
        for (int i = start; i < end; i++)
            output[i] = table[EncodeByTable(x[i] * encode, table, maxCode, signBit)] * decode;
    }

    /// <summary>One thread: scratch[0] = NVFP4's global encode scale of the vector (Nvfp4Codec.GlobalEncodeScale of its amax).</summary>
    public static void Nvfp4GlobalScale(Index1D index, ArrayView<float> x, ArrayView<float> scratch, int n)
    {
        float amax = 0f;
        for (int i = 0; i < n; i++) { float a = x[i] < 0 ? -x[i] : x[i]; if (a > amax) amax = a; }
        float scale = 2688f / amax;
        if (scale > float.MaxValue) scale = float.MaxValue;
        scratch[0] = amax == 0f || scale == 0f ? 1f : scale;
    }

    /// <summary>
    /// NVFP4 quantize-dequantize of one 16-element block per thread (= Nvfp4Codec.Quantize then Nvfp4Vector.Dequantize):
    /// E4M3 block scale of amax * (S_enc * fl32(1/6)), E2M1 elements of x * min(1 / (fp32(s_b) * fl32(1/S_enc)), max),
    /// output e2m1 * (fp32(s_b) * fl32(1/S_enc)).
    /// </summary>
    public static void InputNvfp4(Index1D block, ArrayView<float> x, ArrayView<float> output, ArrayView<float> scratch,
        ArrayView<float> e2m1, ArrayView<float> e4m3, int n)
    {
        int start = block * 16, end = start + 16 < n ? start + 16 : n;
        float globalEncode = scratch[0];
        float globalDecode = 1f / globalEncode;
        float blockScaleFactor = globalEncode * (1f / 6f);
        float amax = 0f;
        for (int i = start; i < end; i++) { float a = x[i] < 0 ? -x[i] : x[i]; if (a > amax) amax = a; }
        float scaled = amax * blockScaleFactor;
        if (scaled > float.MaxValue) scaled = float.MaxValue;
        int scaleCode = EncodeByTable(scaled, e4m3, 0x7E, 0x80);
        float decode = e4m3[scaleCode] * globalDecode;
        float multiplier = 1f / decode;
        if (multiplier > float.MaxValue) multiplier = float.MaxValue;
        for (int i = start; i < end; i++)
            output[i] = e2m1[EncodeByTable(x[i] * multiplier, e2m1, 7, 8)] * decode;
    }

    /// <summary>
    /// y[r] = sum_j ((table[code[j, r]] - zero[g, r]) * scale[g, r]) * x[j], g = j / blockSize (or groupOfColumn[j]
    /// when hasGroupIndex = 1: GPTQ act-order's g_idx), j ascending, float32; codes column-major [cols, rows], scales
    /// and zeros [groups, rows]; hasZero = 0 skips the zero points.
    /// </summary>
    public static void MatVecBlock(Index1D r, ArrayView<byte> codes, ArrayView<float> table, ArrayView<float> scales,
        ArrayView<float> zeros, int hasZero, ArrayView<int> groupOfColumn, int hasGroupIndex, ArrayView<float> x, ArrayView<float> y, int rows, int cols, int blockSize)
    {
        float acc = 0f;
        for (int j = 0; j < cols; j++)
        {
            int g = hasGroupIndex != 0 ? groupOfColumn[j] : j / blockSize;
            float w = table[(int)codes[(long)j * rows + r.X]];
            if (hasZero != 0) w -= zeros[g * rows + r.X];
            w = DeviceMath.Mul(w, scales[g * rows + r.X]);
            acc += DeviceMath.Mul(w, x[j]);
        }
        y[r] = acc;
    }

    /// <summary>y[r] = sum_j bf16(w[j, r]) * x[j], j ascending, float32; weights column-major bf16 bits.</summary>
    public static void MatVecBf16(Index1D r, ArrayView<ushort> w, ArrayView<float> x, ArrayView<float> y, int rows, int cols)
    {
        float acc = 0f;
        for (int j = 0; j < cols; j++)
            acc += DeviceMath.Mul(Interop.IntAsFloat((uint)w[(long)j * rows + r.X] << 16), x[j]);
        y[r] = acc;
    }
}
