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

    /// <summary>Every linear's float64 input rows (by tensor name) over the prompts, from the reference engine.</summary>
    public static Dictionary<string, List<double[]>> ActivationRows(LlamaCheckpoint checkpoint, IReadOnlyList<int[]> prompts, int threads)
    {
        var rows = new Dictionary<string, List<double[]>>(StringComparer.Ordinal);
        using var reference = new ReferenceEngine(checkpoint, threads);
        reference.ActivationObserver = (name, x) =>
        {
            if (!rows.TryGetValue(name, out var list)) rows[name] = list = [];
            list.Add(x.ToArray());
        };
        foreach (var prompt in prompts)
        {
            reference.Reset();
            reference.Prefill(prompt);
        }
        return rows;
    }

    /// <summary>Row-major [tokens, cols] of a tensor's calibration rows.</summary>
    public static double[] Stack(List<double[]> rows, int cols)
    {
        var all = new double[rows.Count * cols];
        for (int t = 0; t < rows.Count; t++) rows[t].CopyTo(all, t * cols);
        return all;
    }

    public static double[] Widen(float[] w) => Array.ConvertAll(w, v => (double)v);
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

/// <summary>ILGPU INT4 weight-only, group 128 along K: RTN, GPTQ and AWQ (W4A16, half activations).</summary>
public sealed class IlgpuInt4Provider : IEngineProvider, IKvCacheFormats
{
    public IReadOnlyList<string> KvCacheFormats => KvCacheKernels.Formats;
    public string Name => "ilgpu-int4";
    public string Description => "ILGPU kernels: INT4 weight-only g128 (RTN, GPTQ, AWQ; sym / asym), dequantized in the kernel, fp16 activations, float32 accumulation";
    public IReadOnlyList<string> Schemes { get; } =
        ["int4-g128-rtn-asym", "int4-g128-rtn-sym", "int4-g128-gptq-asym", "int4-g128-gptq-sym", "int4-g128-awq-asym", "int4-g128-awq-sym"];
    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        string method = options.Scheme.Split('-')[2];
        bool symmetric = options.Scheme.EndsWith("-sym", StringComparison.Ordinal);
        var matrices = method switch
        {
            "rtn" => Rtn(checkpoint, symmetric),
            "gptq" => Gptq(checkpoint, options, symmetric, out _),
            _ => Awq(checkpoint, options, symmetric, out _),
        };
        string calibration = method == "rtn" ? "none"
            : BlockSchemes.CalibrationPrompts(checkpoint, options, $"{Name}/{options.Scheme}").Note
              + ", float64 reference-engine activations of the unquantized model (all prompt tokens)";
        return IlgpuProvider.Build(options.Accelerator, device =>
        {
            var format = new BlockFormat(device.Accelerator, IlgpuProvider.MaxCols(checkpoint.Config));
            var input = new InputQuantizer.Fp16();
            var make = BlockSchemes.KeepHeadBf16(format, (name, _, _, _) => format.Create(BlockWeights.FromInt4(matrices[name]), input));
            var notes = new Dictionary<string, string>
            {
                ["weights"] = $"INT4 {(symmetric ? "symmetric (z = 8)" : "asymmetric (4-bit zero point)")}, group 128 along K, float32 group scales (checkpoints store fp16), one code per byte on the device",
                ["quantizer"] = method switch
                {
                    "rtn" => "round to nearest on GPTQ's min/max grid (Int4Rtn)",
                    "gptq" => "GPTQ (Core Gptq: damp 0.01, block 128, no act-order). Hessians from the float64 engine's activations of the unquantized model, " +
                              "not the reference's sequential inputs from already-quantized layers (so the layer order does not matter here)",
                    _ => "AWQ scale search (Core Awq, its own grid, 20 ratios, no clip search) per shared input: (q,k,v), (gate,up), down, and o only when v and o shapes match; " +
                         "the channel scale 1/s is applied to the linear's input on the device (x / s in float32, then fp16) instead of being folded into the RMSNorm / up_proj / v weights",
                },
                ["activations"] = "fp16 (RNE) at every linear input (W4A16)",
                ["matmul"] = BlockSchemes.AccumulationNote,
                ["lm_head"] = BlockSchemes.LmHeadNote,
                ["calibration"] = calibration,
            };
            return new IlgpuFloatEngine(checkpoint, device, format, make, Name, "int4", options.Scheme, notes, options.KvCache);
        });
    }

    private static IEnumerable<(string Name, TensorInfo Info)> DecoderLinears(LlamaCheckpoint checkpoint)
    {
        for (int l = 0; l < checkpoint.Config.NumHiddenLayers; l++)
            foreach (var w in new[] { LayerWeight.Q, LayerWeight.K, LayerWeight.V, LayerWeight.O, LayerWeight.Gate, LayerWeight.Up, LayerWeight.Down })
            {
                string name = LlamaCheckpoint.LayerTensorName(l, w);
                yield return (name, checkpoint.Info(name));
            }
    }

    internal static Dictionary<string, Int4Matrix> Rtn(LlamaCheckpoint checkpoint, bool symmetric)
    {
        var result = new Dictionary<string, Int4Matrix>(StringComparer.Ordinal);
        foreach (var (name, info) in DecoderLinears(checkpoint))
            result[name] = Int4Rtn.Quantize(BlockSchemes.Widen(checkpoint.ReadSingle(info)), info.Shape[0], info.Shape[1], 128, symmetric);
        return result;
    }

    /// <summary>GPTQ of every decoder linear with its own Hessian from the float64 activations.</summary>
    internal static Dictionary<string, Int4Matrix> Gptq(LlamaCheckpoint checkpoint, EngineOptions options, bool symmetric, out double totalLoss)
    {
        var (prompts, _) = BlockSchemes.CalibrationPrompts(checkpoint, options, "ilgpu-int4/gptq");
        var rows = BlockSchemes.ActivationRows(checkpoint, prompts, options.EffectiveThreads);
        var result = new Dictionary<string, Int4Matrix>(StringComparer.Ordinal);
        var hessians = new Dictionary<string, double[]>(StringComparer.Ordinal);
        totalLoss = 0;
        foreach (var (name, info) in DecoderLinears(checkpoint))
        {
            int cols = info.Shape[1];
            // q, k, v share their input (the q rows), as do gate and up (the gate rows): one Hessian per distinct input.
            string key = SharedInput(name);
            if (!hessians.TryGetValue(key, out var h))
            {
                var inputRows = rows[key];
                var acc = new GptqHessian(cols);
                acc.Add(BlockSchemes.Stack(inputRows, cols), inputRows.Count);
                hessians[key] = h = acc.Build();
            }
            var r = Core.Formats.WeightOnly.Gptq.QuantizeWithHessian(BlockSchemes.Widen(checkpoint.ReadSingle(info)), info.Shape[0], cols, h,
                new GptqOptions(GroupSize: 128, Symmetric: symmetric));
            result[name] = r.Matrix;
            totalLoss += r.Loss;
        }
        return result;
    }

    /// <summary>The tensor whose observed input a linear shares: q for k and v, gate for up, itself otherwise.</summary>
    private static string SharedInput(string name) =>
        name.EndsWith(".k_proj.weight", StringComparison.Ordinal) || name.EndsWith(".v_proj.weight", StringComparison.Ordinal)
            ? name[..^".k_proj.weight".Length] + ".q_proj.weight"
            : name.EndsWith(".up_proj.weight", StringComparison.Ordinal) ? name[..^".up_proj.weight".Length] + ".gate_proj.weight" : name;

    /// <summary>AWQ per group of linears sharing an input (see <see cref="Core.Formats.WeightOnly.Awq"/>, the caller's part).</summary>
    internal static Dictionary<string, Int4Matrix> Awq(LlamaCheckpoint checkpoint, EngineOptions options, bool symmetric, out List<double> chosenRatios)
    {
        var (prompts, _) = BlockSchemes.CalibrationPrompts(checkpoint, options, "ilgpu-int4/awq");
        var rows = BlockSchemes.ActivationRows(checkpoint, prompts, options.EffectiveThreads);
        var c = checkpoint.Config;
        var result = new Dictionary<string, Int4Matrix>(StringComparer.Ordinal);
        chosenRatios = [];
        var awqOptions = new AwqOptions(GroupSize: 128, Symmetric: symmetric);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var groups = new List<LayerWeight[]> { new[] { LayerWeight.Q, LayerWeight.K, LayerWeight.V }, new[] { LayerWeight.Gate, LayerWeight.Up }, new[] { LayerWeight.Down } };
            bool oShared = c.KvDim == c.HiddenSize;
            if (oShared) groups.Add([LayerWeight.O]);
            foreach (var group in groups)
            {
                var names = group.Select(w => LlamaCheckpoint.LayerTensorName(l, w)).ToArray();
                var infos = names.Select(checkpoint.Info).ToArray();
                int cols = infos[0].Shape[1];
                var inputRows = rows[names[0]];
                var weights = infos.Select(i => (BlockSchemes.Widen(checkpoint.ReadSingle(i)), i.Shape[0])).ToList();
                var r = Core.Formats.WeightOnly.Awq.Quantize(weights, cols, BlockSchemes.Stack(inputRows, cols), inputRows.Count, awqOptions);
                chosenRatios.Add(r.BestRatio);
                for (int i = 0; i < names.Length; i++) result[names[i]] = r.Matrices[i];
            }
            if (!oShared)
            {
                string o = LlamaCheckpoint.LayerTensorName(l, LayerWeight.O);
                var info = checkpoint.Info(o);
                result[o] = Int4Rtn.Quantize(BlockSchemes.Widen(checkpoint.ReadSingle(info)), info.Shape[0], info.Shape[1], 128, symmetric, Int4GridRule.Awq);
            }
        }
        return result;
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
