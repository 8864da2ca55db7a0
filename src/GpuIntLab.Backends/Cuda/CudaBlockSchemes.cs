using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Formats.LowBit;
using GpuIntLab.Core.Formats.WeightOnly;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Backends.Cuda;

/// <summary>
/// A CUDA float engine's issue-15 linear format, prepared on the host: names for the result's identity, precision
/// notes, and the loader that packs and uploads one linear layer (by tensor name; lm_head by its own name when tied).
/// Quantization that needs calibration (GPTQ, AWQ) is done before the engine exists.
/// </summary>
public sealed record CudaBlockScheme(CudaFormat Format, string Backend, string FormatName, string Scheme, IReadOnlyDictionary<string, string> Notes,
    Func<string, float[], int, int, CudaBlockLinears, CudaBlockLinear> Load)
{
    /// <summary>Vectors (norm weights, biases) that replace the checkpoint's by tensor name: AWQ's scales folded into the RMSNorm weights.</summary>
    public IReadOnlyDictionary<string, float[]>? VectorOverrides { get; init; }

    /// <summary>The kernel file every block scheme runs (it includes the float32 forward kernels and the KV caches).</summary>
    public const string KernelFile = "block.cu";
}

/// <summary>The schemes of the cuda-bf16, cuda-int4, cuda-mx and cuda-nvfp4 backends (scheme names as the ILGPU backends').</summary>
public static class CudaBlockSchemes
{
    /// <summary>Scheme names, the same as ilgpu-int4 / ilgpu-mx / ilgpu-nvfp4 so results line up.</summary>
    /// <remarks>INT4 without the act-order schemes: gemv_int4 reads groups of 128 contiguous columns, not a g_idx.</remarks>
    public static IReadOnlyList<string> Int4Schemes { get; } = Int4Calibration.Schemes.Where(s => !s.Contains("-act-", StringComparison.Ordinal)).ToList();
    public static IReadOnlyList<string> MxSchemes { get; } = new IlgpuMxProvider().Schemes;
    public static IReadOnlyList<string> Nvfp4Schemes { get; } = new IlgpuNvfp4Provider().Schemes;

    private const string Accumulation =
        "weights dequantized in registers to float32 ((element - zero) * scale, the codec's float32 value), products rounded to float32 (no FMA), " +
        "per-lane partial sums in K order then a warp-shuffle tree (decode: one warp per output row; prefill: the same GEMV per token)";

    private const string NoBlockScaledMma =
        "emulated by dequantization on sm_80-sm_90: native block-scaled MMA (tcgen05 mma with MX/NVFP4 scale factors, mma.kind::mxf8f6f4 / mxf4nvf4) needs sm_100 / sm_120, " +
        "where the tensor core sums each block's element products exactly and applies the two scales to the block sum";

    private const string LmHead = "bf16 (gemv_bf16 / gemm_bf16_mma; the GPTQ, AWQ, torchao and llm-compressor recipes leave lm_head in 16 bits)";

    /// <summary>The scheme of <paramref name="format"/> for <paramref name="backend"/> (quantizing now when the scheme needs calibration).</summary>
    public static CudaBlockScheme Create(CudaFormat format, string backend, LlamaCheckpoint checkpoint, EngineOptions options) => format switch
    {
        CudaFormat.Bf16 => Bf16(backend),
        CudaFormat.Int4 => Int4(backend, checkpoint, options),
        CudaFormat.Mx => Mx(backend, options.Scheme),
        CudaFormat.Nvfp4 => Nvfp4(backend, options.Scheme),
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "not a block-format CUDA backend"),
    };

    private static CudaBlockLinear Head(float[] w, int rows, int cols, CudaBlockLinears l) => l.UploadBf16(w, rows, cols);

    public static CudaBlockScheme Bf16(string backend) => new(CudaFormat.Bf16, backend, "bf16", "bf16", new Dictionary<string, string>
    {
        ["weights"] = "bfloat16 (RNE from the checkpoint value), 2 bytes each, lm_head included",
        ["activations"] = "bfloat16 (RNE) at every linear input",
        ["matmul"] = "bf16 x bf16 -> float32 (decode: GEMV, 16-byte loads, products rounded to float32; prefill: mma.sync m16n8k16 bf16, fp32 accumulate in tile order)",
    }, (_, w, rows, cols, l) => l.UploadBf16(w, rows, cols));

    public static CudaBlockScheme Int4(string backend, LlamaCheckpoint checkpoint, EngineOptions options)
    {
        string scheme = options.Scheme;
        var (method, symmetric) = Int4Calibration.Parse(scheme);
        // The same quantization as ilgpu-int4 (Int4Calibration): RTN, sequential GPTQ, AWQ with its scales folded.
        var model = Int4Calibration.QuantizeAll(checkpoint, options, scheme);
        string? prompts = method == "rtn" ? null : BlockSchemes.CalibrationPrompts(checkpoint, options, $"{backend}/{scheme}").Note;
        var ilgpuNotes = IlgpuInt4Provider.Notes(method, symmetric, model, prompts);
        return new CudaBlockScheme(CudaFormat.Int4, backend, "int4", scheme, new Dictionary<string, string>
        {
            ["weights"] = $"INT4 {(symmetric ? "symmetric (z = 8)" : "asymmetric (4-bit zero point)")}, group 128 along K, PACKED two codes per byte on the device (0.5 B per weight), float32 group scales, one zero-point byte per group",
            ["quantizer"] = ilgpuNotes["quantizer"],
            ["activations"] = "fp16 (RNE) at every linear input (W4A16)",
            ["matmul"] = "gemv_int4: " + Accumulation,
            ["lm_head"] = LmHead,
            ["calibration"] = ilgpuNotes["calibration"],
        }, (name, w, rows, cols, l) => name == LlamaCheckpoint.LmHeadName ? Head(w, rows, cols, l) : l.UploadInt4(CudaBlockPacking.PackInt4(model.Linears[name])))
        {
            VectorOverrides = model.FoldedVectors.ToDictionary(v => v.Key, v => Array.ConvertAll(v.Value, x => (float)x)),
        };
    }

    public static CudaBlockScheme Mx(string backend, string scheme)
    {
        var format = MxFormat.All.Where(f => scheme.StartsWith(f.Name + "-", StringComparison.Ordinal)).OrderByDescending(f => f.Name.Length).First();
        string rest = scheme[(format.Name.Length + 1)..];
        var rule = rest.StartsWith("ocp-floor", StringComparison.Ordinal) ? MxScaleRule.OcpFloor : MxScaleRule.Rceil;
        bool weightOnly = rest.EndsWith("-weight-only", StringComparison.Ordinal);
        CudaLinearInput input = weightOnly ? new CudaLinearInput.Bf16Float() : new CudaLinearInput.Mx(format, rule);
        string packing = format.Element.BitWidth switch { 4 => "two codes per byte", 8 => "one code per byte", _ => "one code per byte (FP6 not bit-packed: 8 bits per code on the device)" };
        return new CudaBlockScheme(CudaFormat.Mx, backend, format.Name, scheme, new Dictionary<string, string>
        {
            ["weights"] = $"{format.Name}: {format.Element.Name} elements, block {format.BlockSize} along K, E8M0 scale by rule {rule.Name()} (MxCodec, bit for bit); {packing}, one scale byte per block",
            ["activations"] = weightOnly ? "bf16 (RNE) at every linear input"
                : $"{format.Name} per block of {format.BlockSize} at every linear input, same rule (lowbit.cuh, bit for bit with MxCodec), dequantized exactly to float32",
            ["matmul"] = "gemv_block: " + Accumulation + "; element decoding by bits (no tables)",
            ["tensor cores"] = NoBlockScaledMma,
            ["lm_head"] = LmHead,
        }, (name, w, rows, cols, l) => name == LlamaCheckpoint.LmHeadName ? Head(w, rows, cols, l) : l.UploadBlock(CudaBlockPacking.PackMx(w, rows, cols, format, rule), input));
    }

    public static CudaBlockScheme Nvfp4(string backend, string scheme)
    {
        bool weightOnly = scheme == "nvfp4-weight-only";
        CudaLinearInput input = weightOnly ? new CudaLinearInput.Bf16Float() : new CudaLinearInput.Nvfp4();
        return new CudaBlockScheme(CudaFormat.Nvfp4, backend, "nvfp4", scheme, new Dictionary<string, string>
        {
            ["weights"] = "NVFP4 as TransformerEngine quantizes (Nvfp4Codec, bit for bit): per-tensor fp32 global scale 2688/amax, E4M3 block-16 scales, E2M1 elements packed two per byte",
            ["activations"] = weightOnly ? "bf16 (RNE) at every linear input"
                : "NVFP4 at every linear input with a dynamic per-token global scale (the token's amax), quantized on the device (lowbit.cuh, bit for bit with Nvfp4Codec), dequantized in float32",
            ["matmul"] = "gemv_block: " + Accumulation + "; element decoding by bits (no tables)",
            ["tensor cores"] = NoBlockScaledMma,
            ["lm_head"] = LmHead,
        }, (name, w, rows, cols, l) => name == LlamaCheckpoint.LmHeadName ? Head(w, rows, cols, l) : l.UploadBlock(CudaBlockPacking.PackNvfp4(w, rows, cols), input));
    }
}
