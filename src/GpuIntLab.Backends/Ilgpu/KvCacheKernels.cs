using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// KV-cache formats: the kernels that write a K or V row into the cache in the format's storage and the attention
/// kernels that dequantize it where they read it (<see cref="KvCacheStore"/> holds the buffers).
/// <list type="bullet">
/// <item>"fp8-e4m3" (vLLM <c>kv_cache_dtype=fp8</c> with <c>calculate_kv_scales</c>): one scale per layer and tensor,
/// k_scale = max|K| / 200 and v_scale = max|V| / 100 from the first forward (here the first token of each sequence, recomputed
/// after a reset: the engine steps one token at a time), write E4M3_satfinite_RNE(x / scale) as one byte, read fp16(e4m3 * scale)
/// (vLLM rounds the read through half).</item>
/// <item>"int8" (LMDeploy quant_policy=8): per token and per kv head, asymmetric: s = (max - min) / 255, zp = min,
/// q = clamp(RNE((x - min) / s), 0, 255) as one byte, s and min as float32 beside it, read q * s + min in float32
/// (a head of equal values stores s = 1, q = 0).</item>
/// </list>
/// </summary>
public static class KvCacheKernels
{
    /// <summary>The KV-cache format names a spec's backend entry may give ("kv_cache").</summary>
    public static readonly IReadOnlyList<string> Formats = ["float32", "fp8-e4m3", "int8"];

    /// <summary>
    /// Bytes one token adds to one layer's cache, K and V together: the codes and the per-token parameters (int8's
    /// float32 scale and zero point per kv head). Fixed per-layer state (fp8's two scales) is not per token.
    /// </summary>
    public static long BytesPerToken(string format, int kvDim, int kvHeads) => format switch
    {
        "float32" => 2L * kvDim * sizeof(float),
        "fp8-e4m3" => 2L * kvDim,
        "int8" => 2L * (kvDim + 2L * kvHeads * sizeof(float)),
        _ => throw new ArgumentException($"unknown kv_cache '{format}' (expected {string.Join(", ", Formats)})", nameof(format)),
    };

    /// <summary>One thread: scales[slot] = max|x| / constant (1 for a zero vector: vLLM would divide by 0).</summary>
    public static void Fp8Scale(Index1D index, ArrayView<float> x, ArrayView<float> scales, int slot, int n, float constant)
    {
        float m = 0f;
        for (int i = 0; i < n; i++) { float a = x[i] < 0 ? -x[i] : x[i]; if (a > m) m = a; }
        scales[slot] = m == 0f ? 1f : m / constant;
    }

    /// <summary>codes[offset + i] = e4m3(x[i] / scale), RNE, saturating at 448.</summary>
    public static void Fp8Store(Index1D i, ArrayView<float> x, ArrayView<byte> codes, int offset, ArrayView<float> scales, int slot, ArrayView<float> e4m3)
        => codes[offset + i] = (byte)BlockKernels.EncodeByTable(x[i] / scales[slot], e4m3, 0x7E, 0x80);

    /// <summary>
    /// One thread per kv head: the head's headDim values as asymmetric int8 codes at codes[offset + head * headDim ..],
    /// its scale and zero point at parameters[parameterOffset + 2 * head] and [.. + 1].
    /// </summary>
    public static void Int8Store(Index1D head, ArrayView<float> x, ArrayView<byte> codes, int offset, ArrayView<float> parameters, int parameterOffset, int headDim)
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
            codes[offset + o + i] = (byte)(int)q;
        }
        parameters[parameterOffset + 2 * head] = s;
        parameters[parameterOffset + 2 * head + 1] = min;
    }

    /// <summary>The value attention reads for an E4M3 code: fp16(e4m3 * scale), widened back to float32.</summary>
    public static float Fp8Read(ArrayView<float> e4m3, byte code, float scale)
        => DeviceMath.HalfToFloat(DeviceMath.FloatToHalf(e4m3[(int)code] * scale));

    /// <summary>The value attention reads for an int8 code: q * s + min in float32 (the product unfused, as on the CPU).</summary>
    public static float Int8Read(byte code, float scale, float zero) => DeviceMath.Mul(code, scale) + zero;

    /// <summary>
    /// <see cref="FloatKernels.Scores"/> over a quantized cache, the same sums in the same order: scores[h, t] =
    /// (q_h . k_t) * scale, k_t dequantized element by element as it is read.
    /// </summary>
    public static void Scores<TRows>(Index1D index, ArrayView<float> q, TRows keys, ArrayView<float> scores, int n, int headDim, int group, float scale)
        where TRows : struct, IKvRows
    {
        int h = index / n, t = index % n;
        int kvHead = h / group;
        float dot = 0f;
        int qo = h * headDim;
        for (int i = 0; i < headDim; i++) dot += DeviceMath.Mul(q[qo + i], keys.Read(t, kvHead, i));
        scores[index] = dot * scale;
    }

    /// <summary><see cref="FloatKernels.AttentionOutput"/> over a quantized cache: output[h, i] = sum_t p[h, t] * v_t[kvHead, i], same order.</summary>
    public static void AttentionOutput<TRows>(Index1D index, ArrayView<float> p, TRows values, ArrayView<float> output, int n, int headDim, int group)
        where TRows : struct, IKvRows
    {
        int h = index / headDim, i = index % headDim;
        int kvHead = h / group;
        float acc = 0f;
        for (int t = 0; t < n; t++) acc += DeviceMath.Mul(p[h * n + t], values.Read(t, kvHead, i));
        output[index] = acc;
    }

    /// <summary>Host reference of <see cref="Int8Store"/> then <see cref="Int8Read"/> for one head (tests).</summary>
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

/// <summary>A layer's K or V cache as the attention kernels read it: element i of kv head h at position t, dequantized.</summary>
public interface IKvRows
{
    float Read(int position, int kvHead, int i);
}

/// <summary>E4M3 codes [position, kvDim] with the layer's per-tensor scale in scales[slot].</summary>
public readonly struct Fp8Rows(ArrayView<byte> codes, ArrayView<float> scales, int slot, ArrayView<float> e4m3, int kvDim, int headDim) : IKvRows
{
    private readonly ArrayView<byte> _codes = codes;
    private readonly ArrayView<float> _scales = scales, _e4m3 = e4m3;
    private readonly int _slot = slot, _kvDim = kvDim, _headDim = headDim;

    public float Read(int position, int kvHead, int i)
        => KvCacheKernels.Fp8Read(_e4m3, _codes[position * _kvDim + kvHead * _headDim + i], _scales[_slot]);
}

/// <summary>Int8 codes [position, kvDim] with (scale, zero point) per position and kv head in parameters [position, kvHeads, 2].</summary>
public readonly struct Int8Rows(ArrayView<byte> codes, ArrayView<float> parameters, int kvHeads, int headDim) : IKvRows
{
    private readonly ArrayView<byte> _codes = codes;
    private readonly ArrayView<float> _parameters = parameters;
    private readonly int _kvHeads = kvHeads, _headDim = headDim;

    public float Read(int position, int kvHead, int i)
    {
        int p = 2 * (position * _kvHeads + kvHead);
        return KvCacheKernels.Int8Read(_codes[(position * _kvHeads + kvHead) * _headDim + i], _parameters[p], _parameters[p + 1]);
    }
}
