using GpuIntLab.Backends.Cuda.Interop;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

namespace GpuIntLab.Backends.Cuda;

/// <summary>Number format of a native CUDA engine's linear layers.</summary>
public enum CudaFormat { Fp16, Int8, Fp8, Int64, Bf16, Int4, Mx, Nvfp4 }

/// <summary>
/// A device buffer sized by positions (KV caches, RoPE tables), grown by doubling as the context grows, so a model
/// whose config allows 131072 positions costs device memory only for the positions it uses. Growing keeps the
/// contents and MOVES the buffer: whatever captured the old address (a CUDA graph) must be rebuilt.
/// </summary>
internal sealed class DevicePositions(CudaDevice device, long bytesPerPosition, int initialPositions = 64)
{
    public int Positions { get; private set; } = Math.Max(1, initialPositions);
    public ulong Pointer { get; private set; } = device.Alloc((ulong)(bytesPerPosition * Math.Max(1, initialPositions)));

    /// <summary>Makes room for <paramref name="positions"/> positions; true if the buffer moved.</summary>
    public bool Ensure(int positions)
    {
        if (positions <= Positions) return false;
        int capacity = Positions;
        while (capacity < positions) capacity = (int)Math.Min(2L * capacity, int.MaxValue);
        ulong grown = device.Alloc((ulong)(bytesPerPosition * capacity));
        device.CopyDeviceToDevice(grown, Pointer, (ulong)(bytesPerPosition * Positions));
        device.Synchronize(); // the copy reads the old buffer: done before it is freed
        device.Free(Pointer);
        Pointer = grown;
        Positions = capacity;
        return true;
    }
}

/// <summary>
/// Shared skeleton of the native CUDA engines: the one Llama step (<see cref="LlamaStep"/>) over ops that each
/// enqueue kernels of kernels/*.cu on one stream. Prefill runs in batches of up to <see cref="MaxBatch"/> tokens
/// through GEMM kernels (tensor cores where the format has them), decode through GEMV kernels. The position lives
/// in device memory (advance_pos adds T at the end of each step) and every buffer is sized before the step's
/// launches, so a decode step's launch sequence is identical every time: without an observer it is captured once
/// as a CUDA graph and replayed (GPUINTLAB_CUDA_GRAPHS=0 turns that off). KV caches and RoPE tables grow with the
/// context (<see cref="DevicePositions"/>); a growth moves them, so the graph is captured again.
/// </summary>
public abstract class CudaEngineBase : LlamaEngine
{
    protected const int MaxBatch = 256;           // prefill runs in chunks of at most this many tokens
    protected readonly CudaDevice Dev;
    protected readonly LlamaConfig C;
    protected readonly CudaModule Module;
    protected readonly ulong DPos, DTokens;
    private readonly int _elementBytes;
    private readonly DevicePositions[] _keys, _values;
    private readonly DevicePositions _cos, _sin;
    private int _ropeRows;         // rows of the RoPE tables uploaded so far
    private int _devicePosition;   // *DPos once the queued work has run
    private bool _capturing;
    private IntPtr _graphExec, _graph;
    private readonly bool _useGraphs = Environment.GetEnvironmentVariable("GPUINTLAB_CUDA_GRAPHS") != "0";

    /// <summary>Decode steps replayed from a captured graph (for reports and tests).</summary>
    public int GraphReplays { get; private set; }
    /// <summary>Decode graphs captured (one, plus one per KV-cache growth during decode).</summary>
    public int GraphCaptures { get; private set; }
    /// <summary>Positions the KV caches hold now (grown by doubling).</summary>
    public int CachePositions => _keys.Length == 0 ? _cos.Positions : _keys[0].Positions;
    /// <summary>The attention kernel's shared-memory plan: how many positions this GPU can attend over.</summary>
    protected AttentionSharedMemory Attention { get; }
    /// <summary>Tokens of the current step (set by Begin).</summary>
    protected int Tokens { get; private set; } = 1;

    protected override int MaxStepTokens => MaxBatch;

    /// <param name="elementBytes">Bytes of one activation / cache / RoPE value (4: float32, 8: Q16.48).</param>
    /// <param name="kvBytesPerPosition">Bytes per position of each layer's K and V cache (default kv_dim values of elementBytes; less for a quantized cache).</param>
    protected CudaEngineBase(LlamaConfig config, string kernelFile, string attentionKernel, int elementBytes, long? kvBytesPerPosition = null) : base(config)
    {
        C = config;
        _elementBytes = elementBytes;
        Dev = new CudaDevice();
        try
        {
            Module = Dev.Compile(kernelFile);
            DPos = Dev.Upload<int>([0]);
            DTokens = Dev.Alloc(MaxBatch * sizeof(int));
            _keys = new DevicePositions[C.NumHiddenLayers];
            _values = new DevicePositions[C.NumHiddenLayers];
            for (int l = 0; l < _keys.Length; l++)
            {
                _keys[l] = new DevicePositions(Dev, kvBytesPerPosition ?? (long)C.KvDim * elementBytes);
                _values[l] = new DevicePositions(Dev, kvBytesPerPosition ?? (long)C.KvDim * elementBytes);
            }
            _cos = new DevicePositions(Dev, (long)C.HeadDim / 2 * elementBytes);
            _sin = new DevicePositions(Dev, (long)C.HeadDim / 2 * elementBytes);
            Attention = AttentionSharedMemory.Apply(Module, attentionKernel, C.MaxPositionEmbeddings, elementBytes, Dev.MaxSharedBytesPerBlockOptin);
        }
        catch
        {
            Dev.Dispose();
            throw;
        }
    }

    protected ulong KeyCache(int layer) => _keys[layer].Pointer;
    protected ulong ValueCache(int layer) => _values[layer].Pointer;
    protected ulong CosTable => _cos.Pointer;
    protected ulong SinTable => _sin.Pointer;

    /// <summary>
    /// The attention kernel's dynamic shared memory: one score per cached position (at least position + T, since
    /// Begin grew the cache), capped by the GPU's plan (Begin refused longer contexts). Fixed between cache
    /// growths, so a captured decode step stays valid.
    /// </summary>
    protected uint AttentionSharedBytes => (uint)(Math.Min(CachePositions, Attention.Positions) * _elementBytes);

    /// <summary>Uploads RoPE rows [first, first + count) into the tables at <paramref name="cos"/> / <paramref name="sin"/> (row-major, head_dim/2 per row).</summary>
    protected abstract void UploadRopeRows(int first, int count, ulong cos, ulong sin);

    /// <summary>Copies rows of a RoPE table (float32 or raw Q16.48, <c>CopyRows</c> of FloatRope / RopeTable).</summary>
    protected delegate void RopeRowSource<T>(int first, int count, Span<T> cos, Span<T> sin);

    /// <summary>The one upload of <see cref="UploadRopeRows"/>: rows from <paramref name="source"/> written to the device tables.</summary>
    protected void WriteRopeRows<T>(RopeRowSource<T> source, int first, int count, ulong cos, ulong sin) where T : unmanaged
    {
        var c = new T[(long)count * (C.HeadDim / 2)];
        var s = new T[c.Length];
        source(first, count, c, s);
        Dev.Write<T>(cos, c);
        Dev.Write<T>(sin, s);
    }

    /// <summary>
    /// Sizes everything a step of <paramref name="tokens"/> tokens at <paramref name="position"/> touches (caches,
    /// RoPE rows) and sets the device position. Nothing here may run inside a graph capture (allocations and host
    /// copies are refused there): <see cref="Step"/> calls it before capturing, so the Begin inside the captured
    /// step finds nothing left to do.
    /// </summary>
    protected override void CheckContext(int positions) => Attention.Check(Info.Name, 0, positions, C.MaxPositionEmbeddings);

    protected void BeginStep(int tokens, int position)
    {
        if (tokens < 1 || tokens > MaxBatch) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, $"a step takes 1..{MaxBatch} tokens");
        Attention.Check(Info.Name, position, tokens, C.MaxPositionEmbeddings);
        Dev.MakeCurrent();
        int needed = position + tokens;
        if (needed > CachePositions || _ropeRows < Math.Min(needed, C.MaxPositionEmbeddings) || _devicePosition != position)
        {
            if (_capturing) throw new InvalidOperationException("a captured step would grow a buffer or move the position (the engine sizes both before capturing)");
            bool moved = false;
            foreach (var cache in _keys.Concat(_values)) moved |= cache.Ensure(needed);
            moved |= _cos.Ensure(needed);
            moved |= _sin.Ensure(needed);
            if (moved) DropGraph();
            int rows = Math.Min(_cos.Positions, C.MaxPositionEmbeddings);
            if (rows > _ropeRows)
            {
                ulong rowBytes = (ulong)(C.HeadDim / 2 * _elementBytes);
                UploadRopeRows(_ropeRows, rows - _ropeRows, _cos.Pointer + (ulong)_ropeRows * rowBytes, _sin.Pointer + (ulong)_ropeRows * rowBytes);
                _ropeRows = rows;
            }
            if (_devicePosition != position) { Dev.Write<int>(DPos, [position]); _devicePosition = position; }
        }
        Tokens = tokens;
    }

    /// <summary>Puts the step's token ids in device memory (not while capturing: the step before the capture did).</summary>
    protected void UploadTokens(ReadOnlySpan<int> tokens)
    {
        if (!_capturing) Dev.Write(DTokens, tokens);
    }

    /// <summary>
    /// One step: sized first, then run op by op (prefill, observed or graph-less steps), or, for a decode step
    /// without an observer, launched from the captured graph (captured on the first such step and after every
    /// cache growth). Ends with advance_pos and the error check.
    /// </summary>
    protected override void Step(ReadOnlySpan<int> tokens, bool computeLogits)
    {
        int n = tokens.Length;
        BeginStep(n, Position);
        if (!_useGraphs || Observer is not null || n != 1 || !computeLogits)
        {
            LlamaStep.Run(Ops, C, tokens, Position, computeLogits, Observer);
            Module.Launch("advance_pos", (1, 1), 32, 0, DPos, n);
        }
        else
        {
            Dev.Write(DTokens, tokens);
            var d = Dev.Driver;
            if (_graphExec == IntPtr.Zero) Capture(tokens);
            else GraphReplays++;
            d.GraphLaunch(_graphExec, Dev.Stream);
        }
        _devicePosition += n;
        CheckErrors();
        Advance(n);
    }

    private void Capture(ReadOnlySpan<int> tokens)
    {
        var d = Dev.Driver;
        d.StreamBeginCapture(Dev.Stream);
        _capturing = true;
        try
        {
            LlamaStep.Run(Ops, C, tokens, Position, computeLogits: true);
            Module.Launch("advance_pos", (1, 1), 32, 0, DPos, 1);
        }
        catch
        {
            _capturing = false;
            var partial = d.StreamEndCapture(Dev.Stream);
            if (partial != IntPtr.Zero) d.GraphDestroy(partial);
            throw;
        }
        _capturing = false;
        _graph = d.StreamEndCapture(Dev.Stream);
        _graphExec = d.GraphInstantiate(_graph);
        GraphCaptures++;
    }

    private void DropGraph()
    {
        if (_graphExec != IntPtr.Zero) Dev.Driver.GraphExecDestroy(_graphExec);
        if (_graph != IntPtr.Zero) Dev.Driver.GraphDestroy(_graph);
        _graphExec = _graph = IntPtr.Zero;
    }

    /// <summary>Throws if a kernel of the queued work flagged an error (the INT64 engine's overflow flag).</summary>
    protected virtual void CheckErrors() { }

    /// <summary>A step buffer's device address and capacity in elements.</summary>
    protected abstract (ulong Pointer, long Capacity) Buffer(StepBuffer buffer);

    /// <summary>Checks a Read/Write of <paramref name="count"/> elements against the buffer's capacity.</summary>
    protected ulong CheckedBuffer(StepBuffer buffer, int count)
    {
        var (pointer, capacity) = Buffer(buffer);
        if (count > capacity) throw new ArgumentOutOfRangeException(nameof(count), count, $"{Info.Name}: buffer {buffer} holds {capacity} values");
        Dev.MakeCurrent();
        return pointer;
    }

    protected static (uint, uint) G(long x, long y = 1) => ((uint)x, (uint)y);
    protected static long Ceil(long a, long b) => (a + b - 1) / b;
    /// <summary>Grid of a grid-stride elementwise kernel over n values (256-thread blocks, at most 4096 blocks).</summary>
    protected static (uint, uint) Elementwise(long n) => G(Math.Min(Ceil(n, 256), 4096));

    public override void Dispose()
    {
        try { DropGraph(); }
        catch (CudaException) { /* teardown after a device error: nothing more to do */ }
        Dev.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>
/// FP16, INT8 (per-tensor, per-channel, smoothquant) and FP8 E4M3 (per-tensor, per-channel) engines, and the issue-15
/// formats BF16, INT4 W4A16, MX and NVFP4 (<see cref="CudaBlockScheme"/>, kernels/block.cu). The residual stream,
/// RMSNorm (and Qwen3's q/k norm), RoPE, attention, SwiGLU, biases and the residual adds run in float32; the KV cache
/// is float32 or, by options.KvCache, fp8-e4m3 / int8 codes (<see cref="CudaKvCache"/>); the linear layers take their
/// operands in the format (kernels/fp16.cu, int8.cu, fp8.cu, block.cu).
/// </summary>
public sealed class CudaFloatEngine : CudaEngineBase, ILlamaOps
{
    private sealed record Linear(int Rows, int Cols, ulong W, ulong Scales, int PerRow, ulong Smooth, CudaBlockLinear? Block = null);
    private sealed record Vector(ulong Pointer, int Length);

    private readonly CudaFormat _format;
    private readonly FloatRope _rope;
    private readonly ulong _embedding;
    private readonly ModelWeights<Linear, Vector> _weights;
    private readonly ulong _x, _xb, _q, _k, _v, _att, _hb, _hb2, _projected, _logits, _xh, _xq, _xs;
    private readonly float _eps, _scale;
    private readonly string _kvCache;
    private readonly ulong _kvScales;              // fp8-e4m3 cache: (k, v) scale of each layer
    private readonly CudaBlockLinears? _blocks;    // the issue-15 formats' linears (kernels/block.cu)

    public override EngineInfo Info { get; }
    public override ILlamaOps Ops => this;

    /// <summary>Device bytes of the linear weights and their scales (all layers and lm_head).</summary>
    public long LinearWeightBytes { get; }

    public CudaFloatEngine(LlamaCheckpoint checkpoint, CudaFormat format, QuantScheme? scheme, EngineOptions options)
        : this(checkpoint, format, scheme, null, options) { }

    /// <summary>An engine whose linears are <paramref name="block"/>'s formats (BF16, INT4, MX, NVFP4: kernels/block.cu).</summary>
    public CudaFloatEngine(LlamaCheckpoint checkpoint, CudaBlockScheme block, EngineOptions options)
        : this(checkpoint, block.Format, null, block, options) { }

    private CudaFloatEngine(LlamaCheckpoint checkpoint, CudaFormat format, QuantScheme? scheme, CudaBlockScheme? block, EngineOptions options)
        : base(checkpoint.Config, block is not null ? CudaBlockScheme.KernelFile : format switch { CudaFormat.Fp16 => "fp16.cu", CudaFormat.Int8 => "int8.cu", CudaFormat.Fp8 => "fp8.cu", _ => throw new ArgumentOutOfRangeException(nameof(format)) },
            CudaKvCache.AttentionKernel(options.KvCache, block?.Backend ?? $"cuda-{format}".ToLowerInvariant()), sizeof(float), CudaKvCache.BytesPerPosition(options.KvCache, checkpoint.Config))
    {
        _format = format;
        _kvCache = options.KvCache;
        try
        {
            if (_kvCache == "fp8-e4m3") _kvScales = Dev.Upload<float>(new float[2 * C.NumHiddenLayers]);
            long maxInput = Math.Max(Math.Max(C.HiddenSize, C.QDim), C.IntermediateSize);
            if (block is not null) _blocks = new CudaBlockLinears(Dev, Module, MaxBatch, maxInput);
            if (format == CudaFormat.Fp8 && Dev.ComputeCapability < 89)
                throw new CudaUnavailableException($"unavailable: FP8 E4M3 mma needs sm_89 (device {Dev.Name} is sm_{Dev.ComputeCapability})");
            var absMax = scheme == QuantScheme.SmoothQuant ? Calibration.ActivationAbsMax(checkpoint, options) : null;

            var embedding = checkpoint.ReadSingle(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
            _embedding = Dev.Upload<float>(embedding);
            Linear Load(TensorInfo t)
            {
                // A tied head is the embedding matrix (the checkpoint names the embedding tensor then), calibrated as lm_head.
                bool tied = t.Name == LlamaCheckpoint.EmbeddingName;
                string observedName = tied ? LlamaCheckpoint.LmHeadName : t.Name;
                int rows = t.Shape[0], cols = t.Shape[1];
                var w = tied ? embedding : checkpoint.ReadSingle(t);
                if (block is not null)
                {
                    var b = block.Load(observedName, w, rows, cols, _blocks!);
                    return new Linear(rows, cols, b.Weights, 0, 0, 0, b);
                }
                CudaPacking.PackedMatrix p = format == CudaFormat.Fp16
                    ? CudaPacking.PackFp16(w, rows, cols)
                    : CudaPacking.PackQuantized(Quantizer.Quantize(w, rows, cols, format == CudaFormat.Int8 ? QuantFormat.Int8 : QuantFormat.E4M3,
                        scheme!.Value, absMax is null ? default : absMax[observedName], (float)options.SmoothQuantAlpha));
                return new Linear(rows, cols, Dev.Upload<byte>(p.Weights), p.Scales.Length == 0 ? 0 : Dev.Upload<float>(p.Scales), p.PerRow,
                    p.Smooth is null ? 0 : Dev.Upload<float>(p.Smooth));
            }
            Vector Vec(TensorInfo t)
            {
                var v = block?.VectorOverrides?.GetValueOrDefault(t.Name) ?? checkpoint.ReadSingle(t);
                return new Vector(Dev.Upload<float>(v), v.Length);
            }
            _weights = LlamaWeights.Load(checkpoint, Load, Vec);
            long Bytes(Linear l) => l.Block?.DeviceBytes ?? (long)l.Rows * l.Cols * (format == CudaFormat.Fp16 ? 2 : 1);
            LinearWeightBytes = _weights.Layers.Sum(w => new[] { w.Q, w.K, w.V, w.O, w.Gate, w.Up, w.Down }.Sum(Bytes)) + Bytes(_weights.LmHead);
            _rope = new FloatRope(C.HeadDim, C.MaxPositionEmbeddings, C.RopeTheta, C.RopeScaling);

            int d = C.HiddenSize, kv = C.KvDim, qd = C.QDim, inter = C.IntermediateSize;
            ulong F(long n) => Dev.Alloc((ulong)n * 4);
            _x = F(MaxBatch * d); _xb = F(MaxBatch * d); _projected = F(MaxBatch * d); _q = F(MaxBatch * qd);
            _k = F(MaxBatch * kv); _v = F(MaxBatch * kv); _att = F(MaxBatch * qd);
            _hb = F(MaxBatch * inter); _hb2 = F(MaxBatch * inter); _logits = F(C.VocabSize);
            long maxCols = Math.Max(Math.Max(d, qd), inter); // linear inputs: normed stream, attention output, SwiGLU
            _xh = Dev.Alloc((ulong)(MaxBatch * maxCols * 2)); _xq = Dev.Alloc((ulong)(MaxBatch * maxCols)); _xs = F(MaxBatch);
            _eps = (float)C.RmsNormEps;
            _scale = (float)(1.0 / Math.Sqrt(C.HeadDim));

            string fmt = format switch { CudaFormat.Fp16 => "fp16", CudaFormat.Int8 => "int8", _ => "fp8-e4m3" };
            var accelerator = $"{Dev.Name} (sm_{Dev.ComputeCapability})";
            Info = block is not null ? new EngineInfo(block.Backend, block.FormatName, block.Scheme, accelerator, new Dictionary<string, string>(block.Notes)
                {
                    ["nonlinear"] = "float32 (rsqrtf, expf), biases and q/k norm float32; RoPE table from float64 angles (llama3 scaling) rounded once",
                    ["kv cache"] = CudaKvCache.Note(_kvCache),
                    ["linear weight bytes"] = LinearWeightBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
                    ["module"] = Module.Compiled.Kind,
                }) : new EngineInfo($"cuda-{(format == CudaFormat.Fp8 ? "fp8" : fmt)}", fmt, options.Scheme, accelerator,
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
                    ["nonlinear"] = "float32 (rsqrtf, expf), biases and q/k norm float32; RoPE table from float64 angles (llama3 scaling) rounded once",
                    ["kv cache"] = CudaKvCache.Note(_kvCache),
                    ["module"] = Module.Compiled.Kind,
                });
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    protected override void UploadRopeRows(int first, int count, ulong cos, ulong sin) =>
        WriteRopeRows<float>(_rope.CopyRows, first, count, cos, sin);

    private void RunLinear(Linear l, ulong x, int t, ulong y)
    {
        if (l.Block is not null) { _blocks!.Run(l.Block, x, t, y); return; }
        int n = l.Rows, k = l.Cols;
        switch (_format)
        {
            case CudaFormat.Fp16:
                Module.Launch("f32_to_f16", Elementwise((long)t * k), 256, 0, x, _xh, t * k);
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

    private void AddBias(ulong y, Vector? bias)
    {
        if (bias is null) return;
        long n = (long)Tokens * bias.Length;
        Module.Launch("bias_add_f32", Elementwise(n), 256, 0, y, bias.Pointer, (int)n, bias.Length);
    }

    void ILlamaOps.Begin(int tokens, int position) => BeginStep(tokens, position);

    void ILlamaOps.Embed(ReadOnlySpan<int> tokens)
    {
        UploadTokens(tokens);
        Module.Launch("embed_f32", G(Tokens), 256, 0, _embedding, DTokens, _x, C.HiddenSize);
    }

    void ILlamaOps.RmsNorm(int layer, LayerWeight norm)
    {
        var w = _weights.Layers[layer];
        Module.Launch("rmsnorm_f32", G(Tokens), 256, 0, _x, (norm == LayerWeight.InputNorm ? w.InputNorm : w.PostNorm).Pointer, _xb, C.HiddenSize, _eps);
    }

    void ILlamaOps.QkvProjection(int layer)
    {
        var w = _weights.Layers[layer];
        RunLinear(w.Q, _xb, Tokens, _q); RunLinear(w.K, _xb, Tokens, _k); RunLinear(w.V, _xb, Tokens, _v);
        AddBias(_q, w.QBias); AddBias(_k, w.KBias); AddBias(_v, w.VBias);
    }

    void ILlamaOps.QkNorm(int layer)
    {
        var w = _weights.Layers[layer];
        Module.Launch("rmsnorm_rows_f32", G((long)Tokens * C.NumAttentionHeads), 128, 0, _q, w.QNorm!.Pointer, C.HeadDim, _eps);
        Module.Launch("rmsnorm_rows_f32", G((long)Tokens * C.NumKeyValueHeads), 128, 0, _k, w.KNorm!.Pointer, C.HeadDim, _eps);
    }

    void ILlamaOps.RopeAndStore(int layer, int position)
    {
        Module.Launch("rope_f32", G(Tokens), 256, 0, _q, _k, CosTable, SinTable, DPos, C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim);
        switch (_kvCache)
        {
            case "fp8-e4m3":
                Module.Launch("kv_fp8_scales", G(1), 256, 0, _k, _v, _kvScales, layer, DPos, C.KvDim);
                Module.Launch("kv_store_fp8", G(Tokens), 256, 0, _k, _v, KeyCache(layer), ValueCache(layer), _kvScales, layer, DPos, C.KvDim);
                break;
            case "int8":
                Module.Launch("kv_store_int8", G(Tokens), 128, 0, _k, _v, KeyCache(layer), ValueCache(layer), DPos, C.NumKeyValueHeads, C.HeadDim, CudaKvCache.Int8Stride(C));
                break;
            default:
                Module.Launch("kv_store_f32", G(Tokens), 256, 0, _k, _v, KeyCache(layer), ValueCache(layer), DPos, C.KvDim);
                break;
        }
    }

    void ILlamaOps.Attention(int layer, int position)
    {
        var grid = G(C.NumAttentionHeads, Tokens);
        switch (_kvCache)
        {
            case "fp8-e4m3":
                Module.Launch("attention_fp8kv", grid, 128, AttentionSharedBytes, _q, KeyCache(layer), ValueCache(layer), _kvScales, layer, _att, DPos,
                    C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim, _scale);
                break;
            case "int8":
                Module.Launch("attention_int8kv", grid, 128, AttentionSharedBytes, _q, KeyCache(layer), ValueCache(layer), _att, DPos,
                    C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim, CudaKvCache.Int8Stride(C), _scale);
                break;
            default:
                Module.Launch("attention_f32", grid, 128, AttentionSharedBytes, _q, KeyCache(layer), ValueCache(layer), _att, DPos,
                    C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim, _scale);
                break;
        }
    }

    void ILlamaOps.OutputProjection(int layer)
    {
        var w = _weights.Layers[layer];
        RunLinear(w.O, _att, Tokens, _projected);
        AddBias(_projected, w.OBias);
    }

    void ILlamaOps.AddResidual(int layer, LayerWeight block)
    {
        long n = (long)Tokens * C.HiddenSize;
        Module.Launch("add_f32", Elementwise(n), 256, 0, _x, _projected, (int)n);
    }

    void ILlamaOps.GateUpSwiGlu(int layer)
    {
        var w = _weights.Layers[layer];
        RunLinear(w.Gate, _xb, Tokens, _hb); RunLinear(w.Up, _xb, Tokens, _hb2);
        long n = (long)Tokens * C.IntermediateSize;
        Module.Launch("swiglu_f32", Elementwise(n), 256, 0, _hb, _hb2, _hb, (int)n);
    }

    void ILlamaOps.DownProjection(int layer) => RunLinear(_weights.Layers[layer].Down, _hb, Tokens, _projected);

    void ILlamaOps.FinalNormAndHead()
    {
        ulong lastRow = _x + (ulong)(Tokens - 1) * (ulong)C.HiddenSize * sizeof(float);
        Module.Launch("rmsnorm_f32", G(1), 256, 0, lastRow, _weights.FinalNorm.Pointer, _xb, C.HiddenSize, _eps);
        RunLinear(_weights.LmHead, _xb, 1, _logits);
    }

    protected override (ulong Pointer, long Capacity) Buffer(StepBuffer buffer) => buffer switch
    {
        StepBuffer.Hidden => (_x, (long)MaxBatch * C.HiddenSize),
        StepBuffer.Normed => (_xb, (long)MaxBatch * C.HiddenSize),
        StepBuffer.Q => (_q, (long)MaxBatch * C.QDim),
        StepBuffer.K => (_k, (long)MaxBatch * C.KvDim),
        StepBuffer.V => (_v, (long)MaxBatch * C.KvDim),
        StepBuffer.Attention => (_att, (long)MaxBatch * C.QDim),
        StepBuffer.SwiGlu => (_hb, (long)MaxBatch * C.IntermediateSize),
        StepBuffer.Projected => (_projected, (long)MaxBatch * C.HiddenSize),
        StepBuffer.Logits => (_logits, C.VocabSize),
        _ => throw new ArgumentOutOfRangeException(nameof(buffer)),
    };

    void ILlamaOps.Read(StepBuffer buffer, Span<double> destination)
    {
        var values = new float[destination.Length];
        Dev.Read<float>(CheckedBuffer(buffer, values.Length), values);
        for (int i = 0; i < values.Length; i++) destination[i] = values[i];
    }

    void ILlamaOps.Write(StepBuffer buffer, ReadOnlySpan<double> values)
    {
        var single = new float[values.Length];
        for (int i = 0; i < single.Length; i++) single[i] = (float)values[i];
        Dev.Write<float>(CheckedBuffer(buffer, single.Length), single);
    }

    protected override double[] ReadLogits()
    {
        var f = Dev.Read<float>(_logits, C.VocabSize);
        return Array.ConvertAll(f, v => (double)v);
    }
}

/// <summary>
/// The exact Q16.48 engine (kernels/int64.cu): every op bit-identical to <see cref="OracleEngine"/>'s (biases and
/// Qwen3's q/k norm included), so its raw logits hash equal to the oracle's. Overflows set a device flag that
/// becomes a <see cref="Q48OverflowException"/> after the step (or at the next Read of a buffer).
/// </summary>
public sealed class CudaInt64Engine : CudaEngineBase, IExactLlamaOps, IRawLogitsEngine
{
    private sealed record Matrix(ulong Pointer, int Rows, int Cols);
    private sealed record Vector(ulong Pointer, int Length);

    private readonly RopeTable _rope;
    private readonly ulong _embedding, _tables, _err;
    private readonly ModelWeights<Matrix, Vector> _weights;
    private readonly ulong _x, _xb, _q, _k, _v, _att, _hb, _hb2, _projected, _logits;
    private readonly long _epsilon, _attentionScale;

    /// <summary>Flag bits of kernels/q48_math.cuh (ERR_*), in bit order.</summary>
    private static readonly string[] s_errorNames = ["matmul", "rmsnorm", "rope", "attention", "swiglu", "residual", "bias", "q/k norm"];

    public override EngineInfo Info { get; }
    public override ILlamaOps Ops => this;

    /// <summary>Raw Q16.48 logits of the last step (for the determinism hash).</summary>
    public long[] LastRawLogits { get; private set; } = [];

    public CudaInt64Engine(LlamaCheckpoint checkpoint, EngineOptions options) : base(checkpoint.Config, "int64.cu", "attention_q48", sizeof(long))
    {
        try
        {
            _embedding = Dev.Upload<long>(checkpoint.ReadQ48(checkpoint.Info(LlamaCheckpoint.EmbeddingName)));
            // A tied head is the embedding matrix itself: the same device buffer.
            Matrix M(TensorInfo t) => new(t.Name == LlamaCheckpoint.EmbeddingName ? _embedding : Dev.Upload<long>(checkpoint.ReadQ48(t)), t.Shape[0], t.Shape[1]);
            Vector V(TensorInfo t) { var v = checkpoint.ReadQ48(t); return new Vector(Dev.Upload<long>(v), v.Length); }
            _weights = LlamaWeights.Load(checkpoint, M, V);
            _epsilon = Q48.FromDouble(C.RmsNormEps);
            _attentionScale = Q48.Rsqrt(Q48.FromInt(C.HeadDim));
            _rope = new RopeTable(C.HeadDim, C.MaxPositionEmbeddings, C.RopeTheta, C.RopeScaling);
            _tables = Dev.Upload<ulong>(CudaPacking.Q48Tables());
            _err = Dev.Upload<int>([0]);
            int d = C.HiddenSize, kv = C.KvDim, qd = C.QDim, inter = C.IntermediateSize;
            ulong L(long n) => Dev.Alloc((ulong)n * 8);
            _x = L(MaxBatch * d); _xb = L(MaxBatch * d); _projected = L(MaxBatch * d); _q = L(MaxBatch * qd);
            _k = L(MaxBatch * kv); _v = L(MaxBatch * kv); _att = L(MaxBatch * qd);
            _hb = L(MaxBatch * inter); _hb2 = L(MaxBatch * inter); _logits = L(C.VocabSize);
            Info = new EngineInfo("cuda-int64", "Q16.48", "exact", $"{Dev.Name} (sm_{Dev.ComputeCapability})",
                new Dictionary<string, string>
                {
                    ["weights"] = "checkpoint values converted exactly to Q16.48 (the oracle's conversion)",
                    ["matmul"] = "int64 x int64 -> exact 128-bit sum (mul.lo + __mul64hi), one RNE rounding per output; biases: int64 add with overflow check",
                    ["nonlinear"] = "the oracle's integer rsqrt/exp/sigmoid ported to device code (unsigned __int128); q/k norm as RMSNorm over head_dim",
                    ["rope"] = "the oracle's RopeTable rows (llama3 scaling applied exactly), uploaded as the context grows",
                    ["module"] = Module.Compiled.Kind,
                });
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    protected override void UploadRopeRows(int first, int count, ulong cos, ulong sin) =>
        WriteRopeRows<long>(_rope.CopyRows, first, count, cos, sin);

    private void MatMul(Matrix w, ulong x, int t, ulong y) =>
        Module.Launch("matmul_q48", G(Ceil(w.Rows, 8), Ceil(t, 4)), 256, 0, w.Pointer, x, y, w.Rows, w.Cols, t, _err);

    private void AddBias(ulong y, Vector? bias)
    {
        if (bias is null) return;
        long n = (long)Tokens * bias.Length;
        Module.Launch("bias_add_q48", Elementwise(n), 256, 0, y, bias.Pointer, (int)n, bias.Length, _err);
    }

    void ILlamaOps.Begin(int tokens, int position) => BeginStep(tokens, position);

    void ILlamaOps.Embed(ReadOnlySpan<int> tokens)
    {
        UploadTokens(tokens);
        Module.Launch("embed_q48", G(Tokens), 256, 0, _embedding, DTokens, _x, C.HiddenSize);
    }

    void ILlamaOps.RmsNorm(int layer, LayerWeight norm)
    {
        var w = _weights.Layers[layer];
        Module.Launch("rmsnorm_q48", G(Tokens), 256, 0, _x, (norm == LayerWeight.InputNorm ? w.InputNorm : w.PostNorm).Pointer, _xb, C.HiddenSize, _epsilon, _err);
    }

    void ILlamaOps.QkvProjection(int layer)
    {
        var w = _weights.Layers[layer];
        MatMul(w.Q, _xb, Tokens, _q); MatMul(w.K, _xb, Tokens, _k); MatMul(w.V, _xb, Tokens, _v);
        AddBias(_q, w.QBias); AddBias(_k, w.KBias); AddBias(_v, w.VBias);
    }

    void ILlamaOps.QkNorm(int layer)
    {
        var w = _weights.Layers[layer];
        Module.Launch("rmsnorm_rows_q48", G((long)Tokens * C.NumAttentionHeads), 128, 0, _q, w.QNorm!.Pointer, C.HeadDim, _epsilon, _err);
        Module.Launch("rmsnorm_rows_q48", G((long)Tokens * C.NumKeyValueHeads), 128, 0, _k, w.KNorm!.Pointer, C.HeadDim, _epsilon, _err);
    }

    void ILlamaOps.RopeAndStore(int layer, int position)
    {
        Module.Launch("rope_q48", G(Tokens), 256, 0, _q, _k, CosTable, SinTable, DPos, C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim, _err);
        Module.Launch("kv_store_q48", G(Tokens), 256, 0, _k, _v, KeyCache(layer), ValueCache(layer), DPos, C.KvDim);
    }

    void ILlamaOps.Attention(int layer, int position) =>
        Module.Launch("attention_q48", G(C.NumAttentionHeads, Tokens), 128, AttentionSharedBytes, _q, KeyCache(layer), ValueCache(layer), _att, DPos,
            C.NumAttentionHeads, C.NumKeyValueHeads, C.HeadDim, _attentionScale, _tables, _err);

    void ILlamaOps.OutputProjection(int layer)
    {
        var w = _weights.Layers[layer];
        MatMul(w.O, _att, Tokens, _projected);
        AddBias(_projected, w.OBias);
    }

    void ILlamaOps.AddResidual(int layer, LayerWeight block)
    {
        long n = (long)Tokens * C.HiddenSize;
        Module.Launch("add_q48", Elementwise(n), 256, 0, _x, _projected, (int)n, _err);
    }

    void ILlamaOps.GateUpSwiGlu(int layer)
    {
        var w = _weights.Layers[layer];
        MatMul(w.Gate, _xb, Tokens, _hb); MatMul(w.Up, _xb, Tokens, _hb2);
        long n = (long)Tokens * C.IntermediateSize;
        Module.Launch("swiglu_q48", Elementwise(n), 256, 0, _hb, _hb2, _hb, (int)n, _tables, _err);
    }

    void ILlamaOps.DownProjection(int layer) => MatMul(_weights.Layers[layer].Down, _hb, Tokens, _projected);

    void ILlamaOps.FinalNormAndHead()
    {
        ulong lastRow = _x + (ulong)(Tokens - 1) * (ulong)C.HiddenSize * sizeof(long);
        Module.Launch("rmsnorm_q48", G(1), 256, 0, lastRow, _weights.FinalNorm.Pointer, _xb, C.HiddenSize, _epsilon, _err);
        MatMul(_weights.LmHead, _xb, 1, _logits);
    }

    protected override (ulong Pointer, long Capacity) Buffer(StepBuffer buffer) => buffer switch
    {
        StepBuffer.Hidden => (_x, (long)MaxBatch * C.HiddenSize),
        StepBuffer.Normed => (_xb, (long)MaxBatch * C.HiddenSize),
        StepBuffer.Q => (_q, (long)MaxBatch * C.QDim),
        StepBuffer.K => (_k, (long)MaxBatch * C.KvDim),
        StepBuffer.V => (_v, (long)MaxBatch * C.KvDim),
        StepBuffer.Attention => (_att, (long)MaxBatch * C.QDim),
        StepBuffer.SwiGlu => (_hb, (long)MaxBatch * C.IntermediateSize),
        StepBuffer.Projected => (_projected, (long)MaxBatch * C.HiddenSize),
        StepBuffer.Logits => (_logits, C.VocabSize),
        _ => throw new ArgumentOutOfRangeException(nameof(buffer)),
    };

    void IExactLlamaOps.ReadRaw(StepBuffer buffer, Span<long> destination)
    {
        ulong pointer = CheckedBuffer(buffer, destination.Length);
        CheckErrors(); // an overflow in the ops that wrote it surfaces here, as the oracle's would at the op
        Dev.Read<long>(pointer, destination);
    }

    void IExactLlamaOps.WriteRaw(StepBuffer buffer, ReadOnlySpan<long> values)
    {
        Dev.Write<long>(CheckedBuffer(buffer, values.Length), values);
        if (buffer == StepBuffer.Logits) LastRawLogits = values.ToArray();
    }

    void ILlamaOps.Read(StepBuffer buffer, Span<double> destination) => IExactLlamaOps.ReadAsDoubles(this, buffer, destination);

    void ILlamaOps.Write(StepBuffer buffer, ReadOnlySpan<double> values) => IExactLlamaOps.WriteFromDoubles(this, buffer, values);

    protected override void CheckErrors()
    {
        int err = Dev.Read<int>(_err, 1)[0];
        if (err == 0) return;
        Dev.Write<int>(_err, [0]);
        var parts = new List<string>();
        for (int i = 0; i < s_errorNames.Length; i++) if ((err & (1 << i)) != 0) parts.Add(s_errorNames[i]);
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
