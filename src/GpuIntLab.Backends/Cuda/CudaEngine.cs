using GpuIntLab.Backends.Cuda.Interop;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

namespace GpuIntLab.Backends.Cuda;

/// <summary>Number format of a native CUDA engine's linear layers.</summary>
public enum CudaFormat { Fp16, Int8, Fp8, Int64 }

/// <summary>
/// Shared skeleton of the native CUDA engines: a Llama forward pass whose every step is a kernel of
/// kernels/*.cu on one stream. The position lives in device memory (advance_pos adds T at the end of each
/// step), so the decode step's launch sequence is identical every time: it is captured once as a CUDA graph
/// and replayed (GPUINTLAB_CUDA_GRAPHS=0 turns that off). Prefill runs the batch through GEMM kernels
/// (tensor cores where the format has them), decode through GEMV kernels.
/// </summary>
public abstract class CudaEngineBase : IInferenceEngine
{
    protected const int MaxBatch = 256;           // prefill runs in chunks of at most this many tokens
    protected readonly CudaDevice Dev;
    protected readonly LlamaConfig C;
    protected readonly CudaModule Module;
    protected readonly ulong DPos, DTokens;
    private IntPtr _graphExec, _graph;
    private readonly bool _useGraphs = Environment.GetEnvironmentVariable("GPUINTLAB_CUDA_GRAPHS") != "0";

    public EngineInfo Info { get; protected init; } = null!;
    public LlamaConfig Config => C;
    public int Position { get; private set; }
    /// <summary>Decode steps replayed from the captured graph (for reports and tests).</summary>
    public int GraphReplays { get; private set; }
    /// <summary>The attention kernel's shared-memory plan: how many positions this GPU can attend over.</summary>
    protected AttentionSharedMemory Attention { get; init; } = null!;

    protected CudaEngineBase(LlamaConfig config, string kernelFile, CudaDevice device)
    {
        C = config;
        Dev = device;
        Module = Dev.Compile(kernelFile);
        DPos = Dev.Upload<int>([0]);
        DTokens = Dev.Alloc(MaxBatch * sizeof(int));
    }

    public void Reset()
    {
        Dev.MakeCurrent();
        Dev.Write<int>(DPos, [0]);
        Position = 0;
    }

    public double[] Prefill(ReadOnlySpan<int> tokens)
    {
        EngineGuards.CheckTokens(C, tokens, Position);
        if (tokens.Length == 0) throw new ArgumentException("prefill needs at least one token", nameof(tokens));
        Attention.Check(Info.Name, Position, tokens.Length, C.MaxPositionEmbeddings);
        Dev.MakeCurrent();
        for (int start = 0; start < tokens.Length; start += MaxBatch)
        {
            int n = Math.Min(MaxBatch, tokens.Length - start);
            bool last = start + n == tokens.Length;
            Dev.Write(DTokens, tokens.Slice(start, n));
            Step(n, last);
            CheckErrors();
            Position += n;
        }
        return ReadLogits();
    }

    public double[] Decode(int token)
    {
        EngineGuards.CheckTokens(C, [token], Position);
        Attention.Check(Info.Name, Position, 1, C.MaxPositionEmbeddings);
        Dev.MakeCurrent();
        Dev.Write<int>(DTokens, [token]);
        var d = Dev.Driver;
        if (!_useGraphs) Step(1, true);
        else if (_graphExec != IntPtr.Zero) { d.GraphLaunch(_graphExec, Dev.Stream); GraphReplays++; }
        else
        {
            d.StreamBeginCapture(Dev.Stream);
            try { Step(1, true); }
            finally { _graph = d.StreamEndCapture(Dev.Stream); }
            _graphExec = d.GraphInstantiate(_graph);
            d.GraphLaunch(_graphExec, Dev.Stream);
        }
        CheckErrors();
        Position++;
        return ReadLogits();
    }

    /// <summary>Enqueues one forward step of <paramref name="t"/> tokens (already in DTokens) ending with advance_pos.</summary>
    protected abstract void Step(int t, bool computeLogits);
    protected abstract double[] ReadLogits();
    protected virtual void CheckErrors() { }

    protected static (uint, uint) G(long x, long y = 1) => ((uint)x, (uint)y);
    protected static long Ceil(long a, long b) => (a + b - 1) / b;

    public virtual void Dispose()
    {
        try
        {
            if (_graphExec != IntPtr.Zero) Dev.Driver.GraphExecDestroy(_graphExec);
            if (_graph != IntPtr.Zero) Dev.Driver.GraphDestroy(_graph);
        }
        catch (CudaException) { }
        Dev.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>
/// FP16, INT8 (per-tensor, per-channel, smoothquant) and FP8 E4M3 (per-tensor, per-channel) engines. The
/// residual stream, RMSNorm, RoPE, attention (KV cache float32), SwiGLU and the residual adds run in float32;
/// the linear layers take their operands in the format (kernels/fp16.cu, int8.cu, fp8.cu).
/// </summary>
public sealed class CudaFloatEngine : CudaEngineBase
{
    private sealed record Linear(int Rows, int Cols, ulong W, ulong Scales, int PerRow, ulong Smooth);
    private sealed record Layer(ulong InNorm, Linear Q, Linear K, Linear V, Linear O, ulong PostNorm, Linear Gate, Linear Up, Linear Down, ulong KCache, ulong VCache);

    private readonly CudaFormat _format;
    private readonly ulong _embedding, _finalNorm, _cos, _sin;
    private readonly Layer[] _layers;
    private readonly Linear _lmHead;
    private readonly ulong _x, _xb, _xb2, _q, _k, _v, _att, _hb, _hb2, _logits, _xh, _xq, _xs;

    public CudaFloatEngine(LlamaCheckpoint checkpoint, CudaFormat format, QuantScheme? scheme, EngineOptions options)
        : base(checkpoint.Config, format switch { CudaFormat.Fp16 => "fp16.cu", CudaFormat.Int8 => "int8.cu", CudaFormat.Fp8 => "fp8.cu", _ => throw new ArgumentOutOfRangeException(nameof(format)) }, new CudaDevice())
    {
        _format = format;
        if (format == CudaFormat.Fp8 && Dev.ComputeCapability < 89)
            throw new CudaUnavailableException($"unavailable: FP8 E4M3 mma needs sm_89 (device {Dev.Name} is sm_{Dev.ComputeCapability})");
        var absMax = scheme == QuantScheme.SmoothQuant ? Calibration.ActivationAbsMax(checkpoint, options) : null;

        Linear Load(TensorInfo t, string observedName)
        {
            int rows = t.Shape[0], cols = t.Shape[1];
            var w = checkpoint.ReadSingle(t);
            CudaPacking.PackedMatrix p = format == CudaFormat.Fp16
                ? CudaPacking.PackFp16(w, rows, cols)
                : CudaPacking.PackQuantized(Quantizer.Quantize(w, rows, cols, format == CudaFormat.Int8 ? QuantFormat.Int8 : QuantFormat.E4M3,
                    scheme!.Value, absMax is null ? default : absMax[observedName], (float)options.SmoothQuantAlpha));
            return new Linear(rows, cols, Dev.Upload<byte>(p.Weights), p.Scales.Length == 0 ? 0 : Dev.Upload<float>(p.Scales), p.PerRow,
                p.Smooth is null ? 0 : Dev.Upload<float>(p.Smooth));
        }
        ulong Vec(TensorInfo t) => Dev.Upload<float>(checkpoint.ReadSingle(t));

        int d = C.HiddenSize, kv = C.KvDim, inter = C.IntermediateSize, maxPos = C.MaxPositionEmbeddings;
        _embedding = Vec(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
        _layers = new Layer[C.NumHiddenLayers];
        for (int l = 0; l < _layers.Length; l++)
        {
            Linear M(LayerWeight w) => Load(checkpoint.Layer(l, w), LlamaCheckpoint.LayerTensorName(l, w));
            _layers[l] = new Layer(Vec(checkpoint.Layer(l, LayerWeight.InputNorm)), M(LayerWeight.Q), M(LayerWeight.K), M(LayerWeight.V), M(LayerWeight.O),
                Vec(checkpoint.Layer(l, LayerWeight.PostAttentionNorm)), M(LayerWeight.Gate), M(LayerWeight.Up), M(LayerWeight.Down),
                Dev.Alloc((ulong)maxPos * (ulong)kv * 4), Dev.Alloc((ulong)maxPos * (ulong)kv * 4));
        }
        _finalNorm = Vec(checkpoint.Info(LlamaCheckpoint.FinalNormName));
        _lmHead = Load(checkpoint.LmHead, LlamaCheckpoint.LmHeadName);
        var (cos, sin) = CudaPacking.RopeF32(C.HeadDim, maxPos, C.RopeTheta);
        _cos = Dev.Upload<float>(cos); _sin = Dev.Upload<float>(sin);

        ulong F(long n) => Dev.Alloc((ulong)n * 4);
        _x = F(MaxBatch * d); _xb = F(MaxBatch * d); _xb2 = F(MaxBatch * d); _q = F(MaxBatch * d);
        _k = F(MaxBatch * kv); _v = F(MaxBatch * kv); _att = F(MaxBatch * d);
        _hb = F(MaxBatch * inter); _hb2 = F(MaxBatch * inter); _logits = F(C.VocabSize);
        long maxCols = Math.Max(d, inter);
        _xh = Dev.Alloc((ulong)(MaxBatch * maxCols * 2)); _xq = Dev.Alloc((ulong)(MaxBatch * maxCols)); _xs = F(MaxBatch);
        Attention = AttentionSharedMemory.Apply(Module, "attention_f32", maxPos, sizeof(float), Dev.MaxSharedBytesPerBlockOptin);

        string fmt = format switch { CudaFormat.Fp16 => "fp16", CudaFormat.Int8 => "int8", _ => "fp8-e4m3" };
        Info = new EngineInfo($"cuda-{(format == CudaFormat.Fp8 ? "fp8" : fmt)}", fmt, options.Scheme, $"{Dev.Name} (sm_{Dev.ComputeCapability})",
            new Dictionary<string, string>
            {
                ["weights"] = format == CudaFormat.Fp16 ? "float32 -> half (RNE)" : $"Quantizer {options.Scheme} codes and float32 scales",
                ["matmul"] = format switch
                {
                    CudaFormat.Fp16 => "half x half -> float32 (decode: GEMV, 16-byte loads; prefill: mma.sync m16n8k16)",
                    CudaFormat.Int8 => "s8 x s8 -> s32, rescale in float64 (decode: dp4a GEMV; prefill: mma.sync m16n8k32)",
                    _ => "e4m3 x e4m3 -> float32, rescale in float64 (decode: GEMV; prefill: mma.sync m16n8k32 e4m3)",
                },
                ["activations"] = format switch { CudaFormat.Fp16 => "float32, rounded to half at each linear input", _ => "float32, dynamic per-token quantization at each linear input" },
                ["nonlinear"] = "float32 (rsqrtf, expf), KV cache float32",
                ["module"] = Module.Compiled.Kind,
            });
    }

    private void RunLinear(Linear l, ulong x, int t, ulong y)
    {
        int n = l.Rows, k = l.Cols;
        switch (_format)
        {
            case CudaFormat.Fp16:
                Module.Launch("f32_to_f16", G(Math.Min(Ceil((long)t * k, 256), 4096)), 256, 0, x, _xh, t * k);
                if (t == 1) Module.Launch("gemv_f16", G(Ceil(n, 8)), 256, 0, l.W, _xh, y, n, k);
                else Module.Launch("gemm_f16_mma", G(Ceil(n, 32), Ceil(t, 16)), 128, 0, _xh, l.W, y, t, n, k);
                break;
            case CudaFormat.Int8:
                Module.Launch("quantize_int8", G(t), 256, 0, x, l.Smooth, _xq, _xs, k);
                if (t == 1) Module.Launch("gemv_int8", G(Ceil(n, 8)), 256, 0, l.W, _xq, _xs, l.Scales, l.PerRow, y, n, k);
                else Module.Launch("gemm_int8_mma", G(Ceil(n, 32), Ceil(t, 16)), 128, 0, _xq, _xs, l.W, l.Scales, l.PerRow, y, t, n, k);
                break;
            default:
                Module.Launch("quantize_e4m3", G(t), 256, 0, x, _xq, _xs, k);
                if (t == 1) Module.Launch("gemv_e4m3", G(Ceil(n, 8)), 256, 0, l.W, _xq, _xs, l.Scales, l.PerRow, y, n, k);
                else Module.Launch("gemm_e4m3_mma", G(Ceil(n, 32), Ceil(t, 16)), 128, 0, _xq, _xs, l.W, l.Scales, l.PerRow, y, t, n, k);
                break;
        }
    }

    protected override void Step(int t, bool computeLogits)
    {
        int d = C.HiddenSize, kv = C.KvDim, inter = C.IntermediateSize;
        float eps = (float)C.RmsNormEps, scale = (float)(1.0 / Math.Sqrt(C.HeadDim));
        uint attShared = (uint)Attention.DynamicBytes;
        var m = Module;
        m.Launch("embed_f32", G(t), 256, 0, _embedding, DTokens, _x, d);
        foreach (var w in _layers)
        {
            m.Launch("rmsnorm_f32", G(t), 256, 0, _x, w.InNorm, _xb, d, eps);
            RunLinear(w.Q, _xb, t, _q); RunLinear(w.K, _xb, t, _k); RunLinear(w.V, _xb, t, _v);
            m.Launch("rope_f32", G(t), 256, 0, _q, _k, _cos, _sin, DPos, C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim);
            m.Launch("kv_store_f32", G(t), 256, 0, _k, _v, w.KCache, w.VCache, DPos, kv);
            m.Launch("attention_f32", G(C.NumAttentionHeads, t), 128, attShared, _q, w.KCache, w.VCache, _att, DPos, C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim, scale);
            RunLinear(w.O, _att, t, _xb2);
            m.Launch("add_f32", G(Math.Min(Ceil((long)t * d, 256), 4096)), 256, 0, _x, _xb2, t * d);
            m.Launch("rmsnorm_f32", G(t), 256, 0, _x, w.PostNorm, _xb, d, eps);
            RunLinear(w.Gate, _xb, t, _hb); RunLinear(w.Up, _xb, t, _hb2);
            m.Launch("swiglu_f32", G(Math.Min(Ceil((long)t * inter, 256), 4096)), 256, 0, _hb, _hb2, _hb, t * inter);
            RunLinear(w.Down, _hb, t, _xb2);
            m.Launch("add_f32", G(Math.Min(Ceil((long)t * d, 256), 4096)), 256, 0, _x, _xb2, t * d);
        }
        if (computeLogits)
        {
            ulong lastRow = _x + (ulong)(t - 1) * (ulong)d * 4;
            m.Launch("rmsnorm_f32", G(1), 256, 0, lastRow, _finalNorm, _xb, d, eps);
            RunLinear(_lmHead, _xb, 1, _logits);
        }
        m.Launch("advance_pos", G(1), 32, 0, DPos, t);
    }

    protected override double[] ReadLogits()
    {
        var f = Dev.Read<float>(_logits, C.VocabSize);
        return Array.ConvertAll(f, v => (double)v);
    }
}

/// <summary>
/// The exact Q16.48 engine (kernels/int64.cu): every step bit-identical to <see cref="OracleEngine"/>, so its
/// raw logits hash equal to the oracle's. Overflows set a device flag that becomes a <see cref="Q48OverflowException"/>.
/// </summary>
public sealed class CudaInt64Engine : CudaEngineBase
{
    private sealed record Layer(ulong InNorm, ulong Q, ulong K, ulong V, ulong O, ulong PostNorm, ulong Gate, ulong Up, ulong Down, ulong KCache, ulong VCache);
    private readonly ulong _embedding, _lmHead, _finalNorm, _cos, _sin, _tables, _err;
    private readonly Layer[] _layers;
    private readonly ulong _x, _xb, _xb2, _q, _k, _v, _att, _hb, _hb2, _logits;
    private readonly long _epsilon, _attentionScale;

    /// <summary>Raw Q16.48 logits of the last step (for the determinism hash).</summary>
    public long[] LastRawLogits { get; private set; } = [];

    public CudaInt64Engine(LlamaCheckpoint checkpoint, EngineOptions options) : base(checkpoint.Config, "int64.cu", new CudaDevice())
    {
        int d = C.HiddenSize, kv = C.KvDim, inter = C.IntermediateSize, maxPos = C.MaxPositionEmbeddings;
        ulong M(TensorInfo t) => Dev.Upload<long>(checkpoint.ReadQ48(t));
        _embedding = M(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
        _layers = new Layer[C.NumHiddenLayers];
        for (int l = 0; l < _layers.Length; l++)
        {
            ulong W(LayerWeight w) => M(checkpoint.Layer(l, w));
            _layers[l] = new Layer(W(LayerWeight.InputNorm), W(LayerWeight.Q), W(LayerWeight.K), W(LayerWeight.V), W(LayerWeight.O),
                W(LayerWeight.PostAttentionNorm), W(LayerWeight.Gate), W(LayerWeight.Up), W(LayerWeight.Down),
                Dev.Alloc((ulong)maxPos * (ulong)kv * 8), Dev.Alloc((ulong)maxPos * (ulong)kv * 8));
        }
        _finalNorm = M(checkpoint.Info(LlamaCheckpoint.FinalNormName));
        _lmHead = checkpoint.LmHead.Name == LlamaCheckpoint.EmbeddingName ? _embedding : M(checkpoint.LmHead);
        _epsilon = Q48.FromDouble(C.RmsNormEps);
        _attentionScale = Q48.Rsqrt(Q48.FromInt(C.HeadDim));
        var (cos, sin) = CudaPacking.RopeQ48(new RopeTable(C.HeadDim, maxPos, C.RopeTheta));
        _cos = Dev.Upload<long>(cos); _sin = Dev.Upload<long>(sin);
        _tables = Dev.Upload<ulong>(CudaPacking.Q48Tables());
        _err = Dev.Upload<int>([0]);
        ulong L(long n) => Dev.Alloc((ulong)n * 8);
        _x = L(MaxBatch * d); _xb = L(MaxBatch * d); _xb2 = L(MaxBatch * d); _q = L(MaxBatch * d);
        _k = L(MaxBatch * kv); _v = L(MaxBatch * kv); _att = L(MaxBatch * d);
        _hb = L(MaxBatch * inter); _hb2 = L(MaxBatch * inter); _logits = L(C.VocabSize);
        Attention = AttentionSharedMemory.Apply(Module, "attention_q48", maxPos, sizeof(long), Dev.MaxSharedBytesPerBlockOptin);
        Info = new EngineInfo("cuda-int64", "Q16.48", "exact", $"{Dev.Name} (sm_{Dev.ComputeCapability})",
            new Dictionary<string, string>
            {
                ["weights"] = "checkpoint values converted exactly to Q16.48 (the oracle's conversion)",
                ["matmul"] = "int64 x int64 -> exact 128-bit sum (mul.lo + __mul64hi), one RNE rounding per output",
                ["nonlinear"] = "the oracle's integer rsqrt/exp/sigmoid ported to device code (unsigned __int128)",
                ["module"] = Module.Compiled.Kind,
            });
    }

    private void MatMul(ulong w, int n, int k, ulong x, int t, ulong y) =>
        Module.Launch("matmul_q48", G(Ceil(n, 8), Ceil(t, 4)), 256, 0, w, x, y, n, k, t, _err);

    protected override void Step(int t, bool computeLogits)
    {
        int d = C.HiddenSize, kv = C.KvDim, inter = C.IntermediateSize;
        uint attShared = (uint)Attention.DynamicBytes;
        var m = Module;
        m.Launch("embed_q48", G(t), 256, 0, _embedding, DTokens, _x, d);
        foreach (var w in _layers)
        {
            m.Launch("rmsnorm_q48", G(t), 256, 0, _x, w.InNorm, _xb, d, _epsilon, _err);
            MatMul(w.Q, d, d, _xb, t, _q); MatMul(w.K, kv, d, _xb, t, _k); MatMul(w.V, kv, d, _xb, t, _v);
            m.Launch("rope_q48", G(t), 256, 0, _q, _k, _cos, _sin, DPos, C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim, _err);
            m.Launch("kv_store_q48", G(t), 256, 0, _k, _v, w.KCache, w.VCache, DPos, kv);
            m.Launch("attention_q48", G(C.NumAttentionHeads, t), 128, attShared, _q, w.KCache, w.VCache, _att, DPos,
                C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim, _attentionScale, _tables, _err);
            MatMul(w.O, d, d, _att, t, _xb2);
            m.Launch("add_q48", G(Math.Min(Ceil((long)t * d, 256), 4096)), 256, 0, _x, _xb2, t * d, _err);
            m.Launch("rmsnorm_q48", G(t), 256, 0, _x, w.PostNorm, _xb, d, _epsilon, _err);
            MatMul(w.Gate, inter, d, _xb, t, _hb); MatMul(w.Up, inter, d, _xb, t, _hb2);
            m.Launch("swiglu_q48", G(Math.Min(Ceil((long)t * inter, 256), 4096)), 256, 0, _hb, _hb2, _hb, t * inter, _tables, _err);
            MatMul(w.Down, d, inter, _hb, t, _xb2);
            m.Launch("add_q48", G(Math.Min(Ceil((long)t * d, 256), 4096)), 256, 0, _x, _xb2, t * d, _err);
        }
        if (computeLogits)
        {
            ulong lastRow = _x + (ulong)(t - 1) * (ulong)d * 8;
            m.Launch("rmsnorm_q48", G(1), 256, 0, lastRow, _finalNorm, _xb, d, _epsilon, _err);
            MatMul(_lmHead, C.VocabSize, d, _xb, 1, _logits);
        }
        m.Launch("advance_pos", G(1), 32, 0, DPos, t);
    }

    protected override void CheckErrors()
    {
        int err = Dev.Read<int>(_err, 1)[0];
        if (err == 0) return;
        Dev.Write<int>(_err, [0]);
        var parts = new List<string>();
        string[] names = ["matmul", "rmsnorm", "rope", "attention", "swiglu", "residual"];
        for (int i = 0; i < names.Length; i++) if ((err & (1 << i)) != 0) parts.Add(names[i]);
        throw new Q48OverflowException($"cuda-int64: a value left the Q16.48 range in: {string.Join(", ", parts)} (device flag 0x{err:X})");
    }

    protected override double[] ReadLogits()
    {
        LastRawLogits = Dev.Read<long>(_logits, C.VocabSize);
        return Array.ConvertAll(LastRawLogits, Q48.ToDouble);
    }
}

/// <summary>SmoothQuant calibration: per-channel max |x| of every linear layer's input, from the float64 reference engine.</summary>
public static class Calibration
{
    public static Dictionary<string, float[]> ActivationAbsMax(LlamaCheckpoint checkpoint, EngineOptions options)
    {
        var c = checkpoint.Config;
        var prompts = options.CalibrationPrompts is { Count: > 0 } p ? p : [DefaultPrompt(c)];
        var max = new Dictionary<string, double[]>();
        using var reference = new ReferenceEngine(checkpoint, options.EffectiveThreads);
        reference.ActivationObserver = (name, x) =>
        {
            if (!max.TryGetValue(name, out var m)) max[name] = m = new double[x.Length];
            for (int i = 0; i < x.Length; i++) m[i] = Math.Max(m[i], Math.Abs(x[i]));
        };
        foreach (var prompt in prompts) { reference.Reset(); reference.Prefill(prompt); }
        return max.ToDictionary(kv => kv.Key, kv => Array.ConvertAll(kv.Value, v => (float)v));
    }

    /// <summary>Used when no calibration prompts are given: BOS (when the model has one) then 31 ids spread over the vocabulary.</summary>
    public static int[] DefaultPrompt(LlamaConfig c) =>
        [.. c.BosTokenId is int bos ? [bos] : Array.Empty<int>(), .. Enumerable.Range(1, 31).Select(i => (int)((long)i * 7919 % c.VocabSize))];
}
