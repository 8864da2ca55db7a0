using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Formats.LowBit;
using GpuIntLab.Core.Formats.WeightOnly;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>Shared parts of the issue-15 providers (BF16, INT4, MX, NVFP4).</summary>
internal static class BlockSchemes
{
    /// <summary>Precision notes every block-format engine shares.</summary>
    public const string AccumulationNote =
        "weights dequantized in the kernel from codes + scales ((table[code] - zero) * scale in float32, the codec's float32 value), " +
        "products rounded to float32 and summed in float32 over K ascending, one thread per output row. A real GPU differs: " +
        "W4A16 GEMV kernels (Marlin, exllama, AWQ) dequantize to fp16/bf16 and multiply in half or on tensor cores with fp32 accumulate " +
        "in tile order; block-scaled MMA (sm_100/sm_120 tcgen05 / mma.kind::mxf8f6f4, nvf4) sums each block's element products exactly and applies the scales " +
        "to the block sum; on sm_80-sm_90 MX / NVFP4 exist only as dequantize-then-bf16-MMA emulation";

    public const string LmHeadNote = "bf16 (the GPTQ, AWQ, torchao and llm-compressor recipes leave lm_head in 16 bits)";

    /// <summary>lm_head stays bf16; every other linear goes through <paramref name="make"/>.</summary>
    public static Func<string, float[], int, int, IDeviceLinear> KeepHeadBf16(BlockFormat format, Func<string, float[], int, int, IDeviceLinear> make) =>
        (name, w, rows, cols) => name == LlamaCheckpoint.LmHeadName ? format.CreateBf16(w, rows, cols) : make(name, w, rows, cols);

    /// <summary>The calibration prompts of the options, or the gate prompts when they fit the vocabulary.</summary>
    public static (IReadOnlyList<int[]> Prompts, string Note) CalibrationPrompts(LlamaCheckpoint checkpoint, EngineOptions options, string who)
    {
        if (options.CalibrationPrompts is { Count: > 0 } given) return (given, $"{given.Count} prompt(s) from the experiment");
        IReadOnlyList<int[]> prompts = DeterminismGate.Llama2Prompts;
        int vocab = checkpoint.Config.VocabSize;
        if (prompts.Any(p => p.Any(t => (uint)t >= (uint)vocab)))
            throw new ArgumentException($"{who}: no calibration prompts given and the default (the Llama 2 gate prompts) is outside this model's vocabulary of {vocab}: pass EngineOptions.CalibrationPrompts (the spec's calibration_prompts)");
        return (prompts, $"{prompts.Count} prompt(s) (default: the gate prompts)");
    }
}

/// <summary>ILGPU BF16: the baseline row beside FP16 (what the checkpoints are trained in).</summary>
public sealed class IlgpuBf16Provider : IEngineProvider, IKvCacheFormats
{
    public IReadOnlyList<string> KvCacheFormats => KvCacheKernels.Formats;
    public string Name => "ilgpu-bf16";
    public string Description => "ILGPU kernels: BF16 weights and activations (RNE), float32 accumulation; norms, RoPE, softmax in float32";
    public IReadOnlyList<string> Schemes { get; } = ["bf16"];
    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        return IlgpuProvider.Build(options.Accelerator, device =>
        {
            var format = new BlockFormat(device.Accelerator, IlgpuProvider.MaxCols(checkpoint.Config));
            return new IlgpuFloatEngine(checkpoint, device, format, (_, w, rows, cols) => format.CreateBf16(w, rows, cols),
                Name, "bf16", "bf16", new Dictionary<string, string>
                {
                    ["weights"] = "bfloat16 (RNE from the checkpoint value), 2 bytes each, lm_head included",
                    ["activations"] = "bfloat16 (RNE) at every linear input",
                    ["matmul"] = "exact bf16 x bf16 products rounded to float32, float32 sequential accumulation (a GPU's bf16 tensor-core MMA sums in fp32 in tile order)",
                }, options.KvCache);
        });
    }
}

/// <summary>ILGPU INT4 weight-only, group 128 along K: RTN, GPTQ (with and without act-order) and AWQ (W4A16, half activations).</summary>
public sealed class IlgpuInt4Provider : IEngineProvider, IKvCacheFormats
{
    public IReadOnlyList<string> KvCacheFormats => KvCacheKernels.Formats;
    public string Name => "ilgpu-int4";
    public string Description => "ILGPU kernels: INT4 weight-only g128 (RTN, sequential GPTQ with or without act-order, AWQ with clip search and folded scales; sym / asym), dequantized in the kernel, fp16 activations, float32 accumulation";
    public IReadOnlyList<string> Schemes => Int4Calibration.Schemes;
    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        var (method, symmetric) = Int4Calibration.Parse(options.Scheme);
        var model = Int4Calibration.QuantizeAll(checkpoint, options, options.Scheme);
        var notes = Notes(method, symmetric, model, method == "rtn" ? null : BlockSchemes.CalibrationPrompts(checkpoint, options, $"{Name}/{options.Scheme}").Note);
        return IlgpuProvider.Build(options.Accelerator, device =>
        {
            var format = new BlockFormat(device.Accelerator, IlgpuProvider.MaxCols(checkpoint.Config));
            var input = new InputQuantizer.Fp16();
            var make = BlockSchemes.KeepHeadBf16(format, (name, _, _, _) => format.Create(BlockWeights.FromInt4(model.Linears[name]), input));
            return new IlgpuFloatEngine(checkpoint, device, format, make, Name, "int4", options.Scheme, notes, options.KvCache,
                model.FoldedVectors.ToDictionary(v => v.Key, v => Array.ConvertAll(v.Value, x => (float)x)));
        });
    }

    /// <summary>The engine's precision notes: exactly what the quantizer did, and what calibration measured.</summary>
    internal static Dictionary<string, string> Notes(string method, bool symmetric, Int4QuantizedModel model, string? prompts)
    {
        var notes = new Dictionary<string, string>
        {
            ["weights"] = $"INT4 {(symmetric ? "symmetric (z = 8)" : "asymmetric (4-bit zero point)")}, group 128 along K, float32 group scales (checkpoints store fp16), one code per byte on the device" +
                          (method == "gptq-act" ? "; act-order g_idx (int32 per input column) read per column by the kernel" : ""),
            ["quantizer"] = method switch
            {
                "rtn" => "round to nearest on GPTQ's min/max grid (Int4Rtn)",
                "gptq" or "gptq-act" =>
                    $"GPTQ (Core Gptq: damp 0.01, block 128, {(method == "gptq-act" ? "act-order (desc_act: columns by decreasing diag H, groups consecutive in that order, g_idx)" : "no act-order")}), " +
                    "sequential as IST-DASLab/gptq llama.py --true-sequential: each layer calibrated on inputs from the already-quantized earlier layers, " +
                    "within a layer (q,k,v) -> o -> (gate,up) -> down, each Hessian from inputs computed with the earlier groups quantized (float64 CalibrationForward)",
                _ => "AWQ as mit-han-lab/llm-awq (original scale formula, not AutoAWQ's duo_scaling): per layer on full-precision inputs, scale search (20 ratios, " +
                     "s = x_mean^r / sqrt(max*min)) for (q,k,v) with the loss on the self_attn output, (gate,up) on the MLP output, down on its own output" +
                     ", (v->o) only when v and o have the same shape; scales folded (input_layernorm and post_attention_layernorm weights divided by s, up_proj rows divided by down's s; " +
                     "the device runs plain INT4 with the folded float32 norm weights and no input division); clip search (max shrink 0..45% in 5% steps, per output row and group, " +
                     "on the scaled inputs) on v, o, gate, up, down; then RTN on AWQ's grid",
            },
            ["activations"] = "fp16 (RNE) at every linear input (W4A16)",
            ["matmul"] = BlockSchemes.AccumulationNote,
            ["lm_head"] = BlockSchemes.LmHeadNote,
            ["calibration"] = prompts is null ? "none" : $"{prompts}, {model.CalibrationTokens} tokens, float64",
        };
        if (model.Errors.Count > 0)
        {
            // Mean over layers of each linear's relative output error on its calibration inputs: the method's, then RTN's on the same inputs.
            var byKind = model.Errors.GroupBy(e => e.Name.Split('.')[^2]).Select(g =>
                $"{g.Key} {g.Average(e => e.Method):G3} vs {g.Average(e => e.Rtn):G3}");
            notes["calibration error"] = "mean relative output error |X(W_q - W)^T|^2/|XW^T|^2 on the calibration inputs, this method vs RTN: " + string.Join(", ", byKind);
        }
        return notes;
    }
}

/// <summary>ILGPU OCP microscaling: MXFP8 (E4M3 / E5M2), MXFP6 (E2M3 / E3M2), MXFP4, block 32, both scale rules, weight-only and W+A.</summary>
public sealed class IlgpuMxProvider : IEngineProvider, IKvCacheFormats
{
    public IReadOnlyList<string> KvCacheFormats => KvCacheKernels.Formats;
    public string Name => "ilgpu-mx";
    public string Description => "ILGPU kernels: OCP MX block-32 E8M0-scaled weights (ocp-floor or rceil), dequantized in the kernel; -weight-only: bf16 activations, -w8a8 / -w6a6 / -w4a4: activations MX-quantized per block at each linear input; float32 accumulation";
    public IReadOnlyList<string> Schemes { get; } = BuildSchemes();

    private static List<string> BuildSchemes()
    {
        var list = new List<string>();
        foreach (var format in MxFormat.All)
            foreach (var rule in new[] { "ocp-floor", "rceil" })
            {
                list.Add($"{format.Name}-{rule}-weight-only");
                list.Add($"{format.Name}-{rule}-{ActivationSuffix(format)}");
            }
        return list;
    }

    private static string ActivationSuffix(MxFormat format) => $"w{format.Element.BitWidth}a{format.Element.BitWidth}";

    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        var format = MxFormat.All.Where(f => options.Scheme.StartsWith(f.Name + "-", StringComparison.Ordinal)).OrderByDescending(f => f.Name.Length).First();
        string rest = options.Scheme[(format.Name.Length + 1)..];
        var rule = rest.StartsWith("ocp-floor", StringComparison.Ordinal) ? MxScaleRule.OcpFloor : MxScaleRule.Rceil;
        bool weightOnly = rest.EndsWith("-weight-only", StringComparison.Ordinal);
        return IlgpuProvider.Build(options.Accelerator, device =>
        {
            var blocks = new BlockFormat(device.Accelerator, IlgpuProvider.MaxCols(checkpoint.Config));
            InputQuantizer input = weightOnly ? new InputQuantizer.Bf16() : new InputQuantizer.Mx(format, rule);
            var make = BlockSchemes.KeepHeadBf16(blocks, (_, w, rows, cols) => blocks.Create(BlockWeights.FromMx(w, rows, cols, format, rule), input));
            return new IlgpuFloatEngine(checkpoint, device, blocks, make, Name, format.Name, options.Scheme, new Dictionary<string, string>
            {
                ["weights"] = $"{format.Name}: {format.Element.Name} elements, block {format.BlockSize} along K, E8M0 scale by rule {(rule == MxScaleRule.OcpFloor ? "ocp-floor" : "rceil")} (MxCodec, bit for bit); one code per byte on the device",
                ["activations"] = weightOnly ? "bf16 (RNE) at every linear input"
                    : $"{format.Name} per block of {format.BlockSize} at every linear input, same rule (MxCodec rules on the device, bit for bit), dequantized exactly",
                ["matmul"] = BlockSchemes.AccumulationNote,
                ["lm_head"] = BlockSchemes.LmHeadNote,
            }, options.KvCache);
        });
    }
}

/// <summary>ILGPU NVFP4 (TransformerEngine's two-level scale): weight-only and W4A4.</summary>
public sealed class IlgpuNvfp4Provider : IEngineProvider, IKvCacheFormats
{
    public IReadOnlyList<string> KvCacheFormats => KvCacheKernels.Formats;
    public string Name => "ilgpu-nvfp4";
    public string Description => "ILGPU kernels: NVFP4 weights (E2M1, E4M3 block-16 scales, fp32 tensor scale), dequantized in the kernel; weight-only (bf16 activations) or W4A4; float32 accumulation";
    public IReadOnlyList<string> Schemes { get; } = ["nvfp4-weight-only", "nvfp4-w4a4"];
    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        bool weightOnly = options.Scheme == "nvfp4-weight-only";
        return IlgpuProvider.Build(options.Accelerator, device =>
        {
            var blocks = new BlockFormat(device.Accelerator, IlgpuProvider.MaxCols(checkpoint.Config));
            InputQuantizer input = weightOnly ? new InputQuantizer.Bf16() : new InputQuantizer.Nvfp4();
            var make = BlockSchemes.KeepHeadBf16(blocks, (_, w, rows, cols) => blocks.Create(BlockWeights.FromNvfp4(w, rows, cols), input));
            return new IlgpuFloatEngine(checkpoint, device, blocks, make, Name, "nvfp4", options.Scheme, new Dictionary<string, string>
            {
                ["weights"] = "NVFP4 as TransformerEngine quantizes (Nvfp4Codec, bit for bit): per-tensor fp32 global scale 2688/amax, E4M3 block-16 scales, E2M1 elements; one code per byte on the device",
                ["activations"] = weightOnly ? "bf16 (RNE) at every linear input"
                    : "NVFP4 at every linear input with a dynamic per-token global scale (the vector's amax; TE uses the tensor's amax, which for one decode token is the same vector), dequantized in float32",
                ["matmul"] = BlockSchemes.AccumulationNote,
                ["lm_head"] = BlockSchemes.LmHeadNote,
            }, options.KvCache);
        });
    }
}
