using GpuIntLab.Backends.Cuda.Interop;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Backends.Cuda;

/// <summary>
/// A native CUDA backend (kernels/*.cu compiled by NVRTC, launched through the driver API). Without a
/// driver, a device or NVRTC it reports why ("unavailable: no CUDA driver ..."), and <see cref="Create"/>
/// throws <see cref="CudaUnavailableException"/> with the same reason.
/// </summary>
public class CudaProvider(string name, CudaFormat format, string description, IReadOnlyList<string> schemes) : IEngineProvider
{
    public string Name => name;
    public string Description => description;
    public IReadOnlyList<string> Schemes => schemes;
    public CudaFormat Format => format;

    /// <summary>Smallest compute capability the format's kernels need (tensor-core mma: sm_80; e4m3 mma: sm_89).</summary>
    public int MinComputeCapability => format == CudaFormat.Fp8 ? 89 : 80;

    public Availability CheckAvailability(string accelerator)
    {
        if (accelerator is not ("auto" or "cuda")) return Availability.No($"runs on CUDA only (accelerator '{accelerator}' requested)");
        var a = CudaRuntime.Availability;
        if (!a.IsAvailable) return a;
        int cc = CudaRuntime.ComputeCapability;
        if (cc < MinComputeCapability)
            return Availability.No($"unavailable: needs sm_{MinComputeCapability} (device is sm_{cc})");
        return a;
    }

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        if (!Schemes.Contains(options.Scheme))
            throw new ArgumentException($"{Name} has no scheme '{options.Scheme}' (schemes: {string.Join(", ", Schemes)})", nameof(options));
        var a = CheckAvailability(options.Accelerator);
        if (!a.IsAvailable) throw new CudaUnavailableException($"{Name}: {a.Reason}");
        return format switch
        {
            CudaFormat.Int64 => new CudaInt64Engine(checkpoint, options),
            CudaFormat.Fp16 => new CudaFloatEngine(checkpoint, format, null, options),
            CudaFormat.Bf16 or CudaFormat.Int4 or CudaFormat.Mx or CudaFormat.Nvfp4 => new CudaFloatEngine(checkpoint, CudaBlockSchemes.Create(format, Name, checkpoint, options), options),
            _ => new CudaFloatEngine(checkpoint, format, ParseScheme(options.Scheme), options),
        };
    }

    public static QuantScheme ParseScheme(string scheme) => scheme switch
    {
        "per-tensor" => QuantScheme.PerTensor,
        "per-channel" => QuantScheme.PerChannel,
        "smoothquant" => QuantScheme.SmoothQuant,
        _ => throw new ArgumentException($"unknown quantization scheme '{scheme}'", nameof(scheme)),
    };

    /// <summary>The native CUDA backends, as listed in <see cref="BackendCatalog"/>.</summary>
    public static IReadOnlyList<CudaProvider> All { get; } =
    [
        new("cuda-fp16", CudaFormat.Fp16, "native CUDA (NVRTC): fp16 weights/activations, float32 accumulate; GEMV + mma.sync m16n8k16", ["fp16"]),
        new("cuda-int8", CudaFormat.Int8, "native CUDA (NVRTC): W8A8 int8, s32 accumulate; dp4a GEMV + mma.sync m16n8k32 s8", ["per-tensor", "per-channel", "smoothquant"]),
        new("cuda-fp8", CudaFormat.Fp8, "native CUDA (NVRTC): FP8 E4M3 weights/activations, float32 accumulate; mma.sync e4m3 (sm_89+)", ["per-tensor", "per-channel"]),
        new("cuda-int64", CudaFormat.Int64, "native CUDA (NVRTC): Q16.48 exact, 64x64->128 accumulate, bit-identical to the oracle", ["exact"]),
        new CudaKvProvider("cuda-bf16", CudaFormat.Bf16, "native CUDA (NVRTC): bf16 weights/activations, float32 accumulate; GEMV + mma.sync m16n8k16 bf16", ["bf16"]),
        new CudaKvProvider("cuda-int4", CudaFormat.Int4, "native CUDA (NVRTC): INT4 weight-only g128 (RTN, GPTQ, AWQ; sym / asym), packed two per byte, dequantized in registers, fp16 activations, float32 accumulate", CudaBlockSchemes.Int4Schemes),
        new CudaKvProvider("cuda-mx", CudaFormat.Mx, "native CUDA (NVRTC): OCP MX block-32 E8M0 (ocp-floor / rceil), dequantized in registers (no block-scaled MMA before sm_100); weight-only (bf16 activations) or W+A (activations MX-quantized on the device)", CudaBlockSchemes.MxSchemes),
        new CudaKvProvider("cuda-nvfp4", CudaFormat.Nvfp4, "native CUDA (NVRTC): NVFP4 (E2M1, E4M3 block-16 scales, fp32 tensor scale), dequantized in registers (no block-scaled MMA before sm_100); weight-only or W4A4", CudaBlockSchemes.Nvfp4Schemes),
    ];
}

/// <summary>A native CUDA float backend whose engines take the spec's "kv_cache" (<see cref="CudaKvCache"/>).</summary>
public sealed class CudaKvProvider(string name, CudaFormat format, string description, IReadOnlyList<string> schemes)
    : CudaProvider(name, format, description, schemes), IKvCacheFormats
{
    public IReadOnlyList<string> KvCacheFormats => CudaKvCache.Formats;
}
