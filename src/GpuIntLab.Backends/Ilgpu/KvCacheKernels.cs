using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// KV-cache formats applied where a K or V row is stored. The cache keeps float32 slots holding exactly the value the
/// format's read path returns (quantize at the store, dequantize once, store the result), so attention reads what a
/// quantized cache would give it; the memory a real cache saves is reported, not realised.
/// <list type="bullet">
/// <item>"fp8-e4m3" (vLLM <c>kv_cache_dtype=fp8</c> with <c>calculate_kv_scales</c>): one scale per layer and tensor,
/// k_scale = max|K| / 200 and v_scale = max|V| / 100 from the first forward (here the first token of each sequence, recomputed
/// after a reset: the engine steps one token at a time), write E4M3_satfinite_RNE(x / scale), read fp16(e4m3 * scale) (vLLM rounds the read through half).</item>
/// <item>"int8" (LMDeploy quant_policy=8): per token and per kv head, asymmetric: s = (max - min) / 255, zp = min,
/// q = clamp(RNE((x - min) / s), 0, 255), read q * s + min, float32 (a head of equal values stores s = 1, q = 0).</item>
/// </list>
/// </summary>
public static class KvCacheKernels
{
    /// <summary>The KV-cache format names a spec's backend entry may give ("kv_cache").</summary>
    public static readonly IReadOnlyList<string> Formats = ["float32", "fp8-e4m3", "int8"];

    /// <summary>One thread: scales[slot] = max|x| / constant (1 for a zero vector: vLLM would divide by 0).</summary>
    public static void Fp8Scale(Index1D index, ArrayView<float> x, ArrayView<float> scales, int slot, int n, float constant)
    {
        float m = 0f;
        for (int i = 0; i < n; i++) { float a = x[i] < 0 ? -x[i] : x[i]; if (a > m) m = a; }
        scales[slot] = m == 0f ? 1f : m / constant;
    }

    /// <summary>dst[offset + i] = fp16(e4m3(x[i] / scale) * scale).</summary>
    public static void Fp8Store(Index1D i, ArrayView<float> x, ArrayView<float> dst, int offset, ArrayView<float> scales, int slot, ArrayView<float> e4m3)
    {
        float scale = scales[slot];
        float decoded = e4m3[BlockKernels.EncodeByTable(x[i] / scale, e4m3, 0x7E, 0x80)];
        dst[offset + i] = DeviceMath.HalfToFloat(DeviceMath.FloatToHalf(decoded * scale));
    }

    /// <summary>One thread per kv head: asymmetric int8 of the head's headDim values, stored dequantized.</summary>
    public static void Int8Store(Index1D head, ArrayView<float> x, ArrayView<float> dst, int offset, int headDim)
    {
        int o = head * headDim;
        float min = x[o], max = x[o];
        for (int i = 1; i < headDim; i++) { float v = x[o + i]; if (v < min) min = v; if (v > max) max = v; }
        float s = max > min ? (max - min) / 255f : 1f;
        for (int i = 0; i < headDim; i++)
        {
            float q = DeviceMath.RoundEven((x[o + i] - min) / s);
            if (q < 0f) q = 0f;
            if (q > 255f) q = 255f;
            dst[offset + o + i] = DeviceMath.Mul(q, s) + min;
        }
    }

    /// <summary>Host reference of <see cref="Int8Store"/> for one head (tests).</summary>
    public static float[] Int8RoundTrip(ReadOnlySpan<float> head)
    {
        float min = head[0], max = head[0];
        foreach (float v in head) { min = MathF.Min(min, v); max = MathF.Max(max, v); }
        float s = max > min ? (max - min) / 255f : 1f;
        var result = new float[head.Length];
        for (int i = 0; i < head.Length; i++)
            result[i] = Math.Clamp(MathF.Round((head[i] - min) / s, MidpointRounding.ToEven), 0f, 255f) * s + min;
        return result;
    }
}
