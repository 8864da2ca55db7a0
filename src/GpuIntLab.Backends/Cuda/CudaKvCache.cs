using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Backends.Cuda;

/// <summary>
/// KV-cache formats of the native CUDA float engines (kernels/kvcache.cuh), the same three as the ILGPU engines
/// (<see cref="KvCacheKernels.Formats"/>) with the same values at the read. Unlike ILGPU's float32 slots the quantized
/// caches STORE the codes: "fp8-e4m3" one byte per value (plus two floats per layer), "int8" one byte per value plus
/// (scale, min) floats per kv head and position; attention dequantizes at every read.
/// </summary>
public static class CudaKvCache
{
    public static IReadOnlyList<string> Formats => KvCacheKernels.Formats;

    /// <summary>The attention kernel reading the format's cache; an unknown format is refused naming the accepted ones.</summary>
    public static string AttentionKernel(string format, string engine) => format switch
    {
        "float32" => "attention_f32",
        "fp8-e4m3" => "attention_fp8kv",
        "int8" => "attention_int8kv",
        _ => throw new ArgumentException($"{engine}: unknown kv_cache '{format}' (expected {string.Join(", ", Formats)})"),
    };

    /// <summary>Bytes per layer, position and tensor (K or V) of the format's cache.</summary>
    public static long BytesPerPosition(string format, LlamaConfig c) => format switch
    {
        "fp8-e4m3" => c.KvDim,
        "int8" => Int8Stride(c),
        _ => 4L * c.KvDim,
    };

    /// <summary>The int8 cache's bytes per position: kv_dim codes padded to 4 bytes, then (scale, min) per kv head.</summary>
    public static int Int8Stride(LlamaConfig c) => ((c.KvDim + 3) & ~3) + 8 * c.NumKeyValueHeads;

    /// <summary>The engine's precision note for the format.</summary>
    public static string Note(string format) => format switch
    {
        "fp8-e4m3" => "fp8-e4m3 as vLLM (calculate_kv_scales): per layer k_scale = max|K|/200, v_scale = max|V|/100 from the sequence's first token, stored as E4M3 codes (1 byte per value, RNE satfinite of x / scale), read fp16(e4m3 * scale) in the attention kernel",
        "int8" => "int8 per token per kv head, asymmetric as LMDeploy (s = (max-min)/255, zp = min): stored as codes (1 byte per value) + (s, min) floats per head, read q*s + min in float32 in the attention kernel",
        _ => "float32 on the device",
    };
}
