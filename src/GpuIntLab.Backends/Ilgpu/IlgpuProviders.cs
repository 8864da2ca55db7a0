using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>Shared plumbing of the ILGPU providers.</summary>
internal static class IlgpuProvider
{
    public static string CheckScheme(IEngineProvider p, string scheme) =>
        p.Schemes.Contains(scheme) ? scheme : throw new ArgumentException($"{p.Name}: unknown scheme '{scheme}' (expected {string.Join(", ", p.Schemes)})");

    /// <summary>Creates the device, then the engine from it; the device is freed if the engine cannot be built.</summary>
    public static IInferenceEngine Build(string accelerator, Func<IlgpuDevice, IInferenceEngine> make)
    {
        var device = IlgpuDevice.Create(accelerator);
        try { return make(device); }
        catch { device.Dispose(); throw; }
    }

    public static int MaxCols(LlamaConfig c) => Math.Max(Math.Max(c.HiddenSize, c.IntermediateSize), c.QDim);

    public static QuantScheme ParseScheme(string scheme) => scheme switch
    {
        "per-tensor" => QuantScheme.PerTensor,
        "per-channel" => QuantScheme.PerChannel,
        "smoothquant" => QuantScheme.SmoothQuant,
        _ => throw new ArgumentException($"unknown scheme '{scheme}'"),
    };

    /// <summary>
    /// SmoothQuant calibration: per linear layer (by tensor name, lm_head as "lm_head.weight"), the max |x_j|
    /// of its float64 input over the prompts, observed through the reference engine.
    /// </summary>
    public static Dictionary<string, float[]> Calibrate(LlamaCheckpoint checkpoint, IReadOnlyList<int[]> prompts, int threads)
    {
        var absMax = new Dictionary<string, float[]>(StringComparer.Ordinal);
        using var reference = new ReferenceEngine(checkpoint, threads);
        reference.ActivationObserver = (name, x) =>
        {
            if (!absMax.TryGetValue(name, out var m)) absMax[name] = m = new float[x.Length];
            for (int j = 0; j < x.Length; j++) m[j] = Math.Max(m[j], (float)Math.Abs(x[j]));
        };
        foreach (var prompt in prompts)
        {
            reference.Reset();
            reference.Prefill(prompt);
        }
        return absMax;
    }
}

/// <summary>ILGPU FP16: half weights and activations, float32 accumulation.</summary>
public sealed class IlgpuFp16Provider : IEngineProvider, IKvCacheFormats
{
    public IReadOnlyList<string> KvCacheFormats => KvCacheKernels.Formats;
    public string Name => "ilgpu-fp16";
    public string Description => "ILGPU kernels: FP16 weights and activations, float32 accumulation; norms, RoPE, softmax in float32";
    public IReadOnlyList<string> Schemes { get; } = ["fp16"];
    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        return IlgpuProvider.Build(options.Accelerator, device =>
        {
            var format = new Fp16Format(device.Accelerator, IlgpuProvider.MaxCols(checkpoint.Config));
            return new IlgpuFloatEngine(checkpoint, device, format, (_, w, rows, cols) => format.Create(w, rows, cols),
                Name, "fp16", "fp16", new Dictionary<string, string>
                {
                    ["weights"] = "IEEE half (RNE from the checkpoint value), 2 bytes each",
                    ["matmul"] = "half activations (RNE, integer emulation of cvt.rn.f16.f32) x half weights, exact products, float32 sequential accumulation, float32 output",
                    ["tensor cores"] = "no: one thread per output row on CUDA cores (no mma.sync f16 path for the N = 1 decode matvec)",
                }, options.KvCache);
        });
    }
}

/// <summary>ILGPU INT8 W8A8: per-tensor, per-channel and SmoothQuant schemes.</summary>
public sealed class IlgpuInt8Provider : IEngineProvider, IKvCacheFormats
{
    public IReadOnlyList<string> KvCacheFormats => KvCacheKernels.Formats;
    public string Name => "ilgpu-int8";
    public string Description => "ILGPU kernels: INT8 weights x INT8 dynamic per-token activations, int32 accumulation, float rescale";
    public IReadOnlyList<string> Schemes { get; } = ["per-tensor", "per-channel", "smoothquant"];
    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        var scheme = IlgpuProvider.ParseScheme(options.Scheme);
        Dictionary<string, float[]>? calibration = null;
        string calibrationNote = "none";
        float alpha = (float)options.SmoothQuantAlpha;
        if (scheme == QuantScheme.SmoothQuant)
        {
            var prompts = options.CalibrationPrompts is { Count: > 0 } given ? given : DeterminismGate.Llama2Prompts;
            int vocab = checkpoint.Config.VocabSize;
            if (options.CalibrationPrompts is not { Count: > 0 } && prompts.Any(p => p.Any(t => (uint)t >= (uint)vocab)))
                throw new ArgumentException($"{Name}/smoothquant: no calibration prompts given and the default (the Llama 2 gate prompts) is outside this model's vocabulary of {vocab}: pass EngineOptions.CalibrationPrompts");
            calibrationNote = $"{prompts.Count} prompt(s) ({(options.CalibrationPrompts is { Count: > 0 } ? "from the experiment" : "default: the gate prompts")}), float64 reference activations, alpha {alpha}";
            calibration = IlgpuProvider.Calibrate(checkpoint, prompts, options.EffectiveThreads);
        }
        return IlgpuProvider.Build(options.Accelerator, device =>
        {
            var format = new Int8Format(device.Accelerator, IlgpuProvider.MaxCols(checkpoint.Config));
            IDeviceLinear Make(string name, float[] w, int rows, int cols)
            {
                var absMax = calibration == null ? default : (ReadOnlySpan<float>)(calibration.TryGetValue(name, out var m) ? m : new float[cols]);
                return format.Create(Quantizer.Quantize(w, rows, cols, QuantFormat.Int8, scheme, absMax, alpha));
            }
            return new IlgpuFloatEngine(checkpoint, device, format, Make, Name, "int8", options.Scheme, new Dictionary<string, string>
            {
                ["weights"] = $"int8 symmetric, {(scheme == QuantScheme.PerTensor ? "one scale per tensor" : "one scale per output channel")} (Quantizer rules), 1 byte each + float32 scales",
                ["activations"] = "int8, dynamic per-token absmax scale in float32 (Quantizer.QuantizeActivationsInt8 rules, bit for bit)"
                    + (scheme == QuantScheme.SmoothQuant ? ", after x_j / s_j (float32 division)" : ""),
                ["matmul"] = format.DotProduct + "; y = acc * (s_w * s_a) in float64, rounded once to float32",
                ["tensor cores"] = format.UseTensorCores ? "yes: mma.sync m16n8k32 s8 (self-tested at engine creation)" : "no (see matmul)",
                ["calibration"] = calibrationNote,
            }, options.KvCache);
        });
    }
}

/// <summary>ILGPU FP8 E4M3: per-tensor and per-channel weight scales, dynamic per-token activation scale.</summary>
public sealed class IlgpuFp8Provider : IEngineProvider, IKvCacheFormats
{
    public IReadOnlyList<string> KvCacheFormats => KvCacheKernels.Formats;
    public string Name => "ilgpu-fp8";
    public string Description => "ILGPU kernels: FP8 E4M3 weights and activations, float32 accumulation";
    public IReadOnlyList<string> Schemes { get; } = ["per-tensor", "per-channel"];
    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        var scheme = IlgpuProvider.ParseScheme(options.Scheme);
        return IlgpuProvider.Build(options.Accelerator, device =>
        {
            var format = new Fp8Format(device.Accelerator, IlgpuProvider.MaxCols(checkpoint.Config));
            return new IlgpuFloatEngine(checkpoint, device, format,
                (_, w, rows, cols) => format.Create(Quantizer.Quantize(w, rows, cols, QuantFormat.E4M3, scheme)),
                Name, "fp8-e4m3", options.Scheme, new Dictionary<string, string>
                {
                    ["weights"] = $"E4M3FN codes, {(scheme == QuantScheme.PerTensor ? "one scale per tensor" : "one scale per output channel")}, 1 byte each + float32 scales",
                    ["activations"] = "E4M3FN, dynamic per-token scale absmax/448 (Quantizer.QuantizeActivationsE4M3 rules, bit for bit)",
                    ["matmul"] = "exact decode table, exact float32 products, float32 sequential accumulation; y = acc * (s_w * s_a) in float64, rounded once to float32 (no e4m3 mma: ILGPU targets at most sm_80)",
                }, options.KvCache);
        });
    }
}

/// <summary>ILGPU INT64 Q16.48: the oracle's arithmetic on the device, bit-identical logits.</summary>
public sealed class IlgpuInt64Provider : IEngineProvider
{
    public string Name => "ilgpu-int64";
    public string Description => "ILGPU kernels: Q16.48 fixed point, exact 128-bit sums, bit-identical to the oracle";
    public IReadOnlyList<string> Schemes { get; } = ["exact"];
    public Availability CheckAvailability(string accelerator) => IlgpuDevice.Check(accelerator);

    public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        IlgpuProvider.CheckScheme(this, options.Scheme);
        return IlgpuProvider.Build(options.Accelerator, device => new IlgpuInt64Engine(checkpoint, device));
    }
}

/// <summary>Device memory of each ILGPU backend for a model shape, computed from the formats' storage rules.</summary>
public static class IlgpuMemory
{
    /// <summary>Bytes of the linear weights (all layers and lm_head) with their scales and smoothing factors.</summary>
    public static long LinearWeightBytes(LlamaConfig c, string provider, string scheme)
    {
        long total = 0;
        foreach (var (rows, cols) in Linears(c))
        {
            total += provider switch
            {
                "ilgpu-fp16" => 2L * rows * cols,
                "ilgpu-int64" => 8L * rows * cols,
                "ilgpu-int8" => rows * 4L * ((cols + 3) / 4) + 4L * (scheme == "per-tensor" ? 1 : rows) + (scheme == "smoothquant" ? 4L * cols : 0),
                "ilgpu-fp8" => (long)rows * cols + 4L * (scheme == "per-tensor" ? 1 : rows),
                _ => throw new ArgumentException($"unknown provider '{provider}'"),
            };
        }
        return total;
    }

    /// <summary>KV cache for the full context: int64 for Q16.48, else the float engines' format (<see cref="KvCacheKernels.BytesPerToken"/>: float32 slots or 1-byte codes).</summary>
    public static long KvCacheBytes(LlamaConfig c, string provider, string kvCache = "float32") =>
        (long)c.NumHiddenLayers * c.MaxPositionEmbeddings
        * (provider == "ilgpu-int64" ? 2L * c.KvDim * sizeof(long) : KvCacheKernels.BytesPerToken(kvCache, c.KvDim, c.NumKeyValueHeads));

    /// <summary>(rows, cols) of every linear layer and lm_head.</summary>
    public static IEnumerable<(int Rows, int Cols)> Linears(LlamaConfig c)
    {
        for (int l = 0; l < c.NumHiddenLayers; l++)
            foreach (var w in new[] { LayerWeight.Q, LayerWeight.K, LayerWeight.V, LayerWeight.O, LayerWeight.Gate, LayerWeight.Up, LayerWeight.Down })
            {
                var s = LlamaCheckpoint.ExpectedShape(c, w);
                yield return (s[0], s[1]);
            }
        yield return (c.VocabSize, c.HiddenSize);
    }
}
