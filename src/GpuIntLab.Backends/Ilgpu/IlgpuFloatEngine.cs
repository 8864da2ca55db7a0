using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// The Llama forward on an ILGPU accelerator with every linear layer (lm_head included) in a
/// low-precision format (<see cref="IDeviceLinear"/>: FP16, INT8, FP8) and everything else in float32 on
/// the device: RMSNorm, RoPE (float32 cos/sin table from float64 angles), attention over a KV cache held
/// in its format (<see cref="KvCacheStore"/>: float32, or 1-byte FP8 / INT8 codes dequantized where attention reads
/// them), softmax, SwiGLU, residual stream. The embedding row is gathered on the host (exact float32
/// of the checkpoint value) and uploaded; logits come back as float32 widened to float64.
/// </summary>
public sealed class IlgpuFloatEngine : LlamaEngine, ILlamaOps
{
    private readonly LlamaConfig _c;
    private readonly IlgpuDevice _device;
    private readonly IDisposable _format;
    private readonly float[] _embedding;
    private readonly ModelWeights<IDeviceLinear, MemoryBuffer1D<float, Stride1D.Dense>> _weights;
    private readonly KvCacheStore _kv;
    private readonly FloatRope _rope;
    private readonly GrowableBuffer<float> _cos, _sin, _scores;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _x, _xb, _q, _k, _v, _att, _hb, _hb2, _projected, _inv, _logits;
    private readonly float _eps, _scale;
    private readonly List<IDisposable> _owned = [];
    private int _ropePositions; // positions whose cos/sin are on the device

    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, float> _rmsInverse;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> _rmsApply;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, float> _rmsInverseRows;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> _rmsApplyRows;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _ropeKernel;
    private readonly Action<Index1D, ArrayView<float>, int> _softmax;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>> _residual;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>> _swiGlu;

    public override EngineInfo Info { get; }
    public override ILlamaOps Ops => this;

    /// <summary>Device bytes of the linear weights and their scales (all layers and lm_head).</summary>
    public long LinearWeightBytes { get; }

    /// <summary>Device bytes one token takes in one layer's KV cache, K and V together, as allocated (codes and per-token scales).</summary>
    public long KvCacheBytesPerToken => _kv.BytesPerToken;

    /// <summary>The KV cache (tests: its allocations and growth).</summary>
    internal KvCacheStore KvCache => _kv;

    /// <param name="makeLinear">Builds one linear layer from its tensor name and exact float32 weights [rows, cols].</param>
    /// <param name="kvCache">KV-cache format (<see cref="KvCacheKernels"/>): "float32", "fp8-e4m3" or "int8".</param>
    /// <param name="vectorOverrides">Float32 values that replace checkpoint vectors (norm weights, biases) by tensor name: AWQ's scales folded into the RMSNorm weights.</param>
    public IlgpuFloatEngine(LlamaCheckpoint checkpoint, IlgpuDevice device, IDisposable format,
        Func<string, float[], int, int, IDeviceLinear> makeLinear, string name, string formatName, string scheme,
        IReadOnlyDictionary<string, string> precisions, string kvCache = "float32", IReadOnlyDictionary<string, float[]>? vectorOverrides = null)
        : this(checkpoint, device, format, makeLinear, name, formatName, scheme, precisions, kvCache, KvCacheStore.Create, vectorOverrides) { }

    /// <param name="makeKvCache">Builds the KV cache of the format (tests substitute a reference store).</param>
    internal IlgpuFloatEngine(LlamaCheckpoint checkpoint, IlgpuDevice device, IDisposable format,
        Func<string, float[], int, int, IDeviceLinear> makeLinear, string name, string formatName, string scheme,
        IReadOnlyDictionary<string, string> precisions, string kvCache, Func<string, Accelerator, LlamaConfig, KvCacheStore> makeKvCache,
        IReadOnlyDictionary<string, float[]>? vectorOverrides = null)
        : base(checkpoint.Config)
    {
        if (!KvCacheKernels.Formats.Contains(kvCache))
        {
            device.Dispose();
            format.Dispose();
            throw new ArgumentException($"{name}: unknown kv_cache '{kvCache}' (expected {string.Join(", ", KvCacheKernels.Formats)})");
        }
        _c = checkpoint.Config;
        _device = device;
        _format = format;
        var acc = device.Accelerator;
        try
        {
            _embedding = checkpoint.ReadSingle(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
            MemoryBuffer1D<float, Stride1D.Dense> Own(MemoryBuffer1D<float, Stride1D.Dense> b) { _owned.Add(b); return b; }
            T OwnAny<T>(T d) where T : IDisposable { _owned.Add(d); return d; }
            MemoryBuffer1D<float, Stride1D.Dense> Zeros(long n) => Own(acc.Allocate1D<float>(n));
            IDeviceLinear Lin(TensorInfo t)
            {
                // The head reuses the embedding values when tied (the checkpoint names the embedding tensor then).
                var weights = t.Name == LlamaCheckpoint.EmbeddingName ? _embedding : checkpoint.ReadSingle(t);
                return OwnAny(makeLinear(t.Name == LlamaCheckpoint.EmbeddingName ? LlamaCheckpoint.LmHeadName : t.Name, weights, t.Shape[0], t.Shape[1]));
            }
            _weights = LlamaWeights.Load(checkpoint, Lin, t => Own(acc.Allocate1D(vectorOverrides?.GetValueOrDefault(t.Name) ?? checkpoint.ReadSingle(t))));
            _kv = OwnAny(makeKvCache(kvCache, acc, _c));
            LinearWeightBytes = _weights.Layers.Sum(w => new[] { w.Q, w.K, w.V, w.O, w.Gate, w.Up, w.Down }.Sum(x => x.WeightBytes)) + _weights.LmHead.WeightBytes;

            // RoPE: float64 angles pos * inv_freq (llama3-rewritten where configured), cos/sin rounded to float32, grown with the context.
            _rope = new FloatRope(_c.HeadDim, _c.MaxPositionEmbeddings, _c.RopeTheta, _c.RopeScaling);
            _cos = OwnAny(new GrowableBuffer<float>(acc, _c.HeadDim / 2));
            _sin = OwnAny(new GrowableBuffer<float>(acc, _c.HeadDim / 2));
            _scores = OwnAny(new GrowableBuffer<float>(acc, _c.NumAttentionHeads));

            int d = _c.HiddenSize;
            _x = Zeros(d); _xb = Zeros(d); _projected = Zeros(d); _q = Zeros(_c.QDim); _k = Zeros(_c.KvDim); _v = Zeros(_c.KvDim); _att = Zeros(_c.QDim);
            _hb = Zeros(_c.IntermediateSize); _hb2 = Zeros(_c.IntermediateSize);
            _inv = Zeros(Math.Max(1, _c.NumAttentionHeads)); _logits = Zeros(_c.VocabSize);
            _eps = (float)_c.RmsNormEps;
            _scale = (float)(1.0 / Math.Sqrt(_c.HeadDim));

            _rmsInverse = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, float>(FloatKernels.RmsInverse);
            _rmsApply = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(FloatKernels.RmsApply);
            _rmsInverseRows = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, float>(FloatKernels.RmsInverseRows);
            _rmsApplyRows = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(FloatKernels.RmsApplyRows);
            _ropeKernel = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(FloatKernels.Rope);
            _softmax = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int>(FloatKernels.Softmax);
            _residual = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(FloatKernels.Residual);
            _swiGlu = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(FloatKernels.SwiGlu);

            var p = new Dictionary<string, string>(precisions)
            {
                ["norm/rope/attention/softmax/swiglu"] = "float32 on the device (one thread per output; sequential float32 sums; exp and rsqrt from IEEE +,*,/ only)",
                ["residual stream, biases"] = "float32 on the device",
                ["kv cache"] = _kv.Description,
                ["kv cache bytes per token per layer"] = KvCacheBytesPerToken.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["embedding"] = "host gather of the exact float32 row, uploaded per token",
                ["linear weight bytes"] = LinearWeightBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
            };
            Info = new EngineInfo(name, formatName, scheme, device.Description, p);
        }
        catch
        {
            DisposeAll();
            throw;
        }
    }

    protected override double[] ReadLogits()
    {
        var logits = new float[_c.VocabSize];
        _logits.View.CopyToCPU(logits);
        return Array.ConvertAll(logits, v => (double)v);
    }

    void ILlamaOps.Begin(int tokens, int position)
    {
        if (tokens != 1) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "this engine runs one token a step");
        _kv.Ensure(position + 1);
        _scores.Ensure(position + 1);
        if (_ropePositions < position + 1)
        {
            _cos.Ensure(position + 1); _sin.Ensure(position + 1);
            int half = _c.HeadDim / 2;
            var cos = new float[(long)_cos.Positions * half];
            var sin = new float[cos.Length];
            int rows = Math.Min(_cos.Positions, _c.MaxPositionEmbeddings);
            _rope.CopyRows(0, rows, cos.AsSpan(0, rows * half), sin.AsSpan(0, rows * half));
            _cos.View.CopyFromCPU(cos); _sin.View.CopyFromCPU(sin);
            _ropePositions = _cos.Positions;
        }
    }

    void ILlamaOps.Embed(ReadOnlySpan<int> tokens)
    {
        int d = _c.HiddenSize;
        _x.View.CopyFromCPU(_embedding.AsSpan(tokens[0] * d, d).ToArray());
    }

    void ILlamaOps.RmsNorm(int layer, LayerWeight norm)
    {
        var w = _weights.Layers[layer];
        RmsNorm(_x.View, (norm == LayerWeight.InputNorm ? w.InputNorm : w.PostNorm).View, _xb.View);
    }

    void ILlamaOps.QkvProjection(int layer)
    {
        var w = _weights.Layers[layer];
        w.Q.Apply(_xb.View, _q.View); w.K.Apply(_xb.View, _k.View); w.V.Apply(_xb.View, _v.View);
        if (w.QBias != null) { _residual(_c.QDim, _q.View, w.QBias.View); _residual(_c.KvDim, _k.View, w.KBias!.View); _residual(_c.KvDim, _v.View, w.VBias!.View); }
    }

    void ILlamaOps.QkNorm(int layer)
    {
        var w = _weights.Layers[layer];
        int hd = _c.HeadDim;
        _rmsInverseRows(_c.NumAttentionHeads, _q.View, _inv.View, hd, _eps);
        _rmsApplyRows(_c.QDim, _q.View, _inv.View, w.QNorm!.View, hd);
        _rmsInverseRows(_c.NumKeyValueHeads, _k.View, _inv.View, hd, _eps);
        _rmsApplyRows(_c.KvDim, _k.View, _inv.View, w.KNorm!.View, hd);
    }

    void ILlamaOps.RopeAndStore(int layer, int position)
    {
        int half = _c.HeadDim / 2;
        _ropeKernel(_c.NumAttentionHeads * half, _q.View, _cos.View, _sin.View, position, half);
        _ropeKernel(_c.NumKeyValueHeads * half, _k.View, _cos.View, _sin.View, position, half);
        _kv.Store(layer, _k.View, _v.View, position);
    }

    void ILlamaOps.Attention(int layer, int position)
    {
        int heads = _c.NumAttentionHeads, n = position + 1;
        var scores = _scores.View.SubView(0, heads * n);
        _kv.Scores(layer, _q.View, scores, n, _scale);
        _softmax(heads, scores, n);
        _kv.AttentionOutput(layer, scores, _att.View, n);
    }

    void ILlamaOps.OutputProjection(int layer)
    {
        var w = _weights.Layers[layer];
        w.O.Apply(_att.View, _projected.View);
        if (w.OBias != null) _residual(_c.HiddenSize, _projected.View, w.OBias.View);
    }

    void ILlamaOps.AddResidual(int layer, LayerWeight block) => _residual(_c.HiddenSize, _x.View, _projected.View);

    void ILlamaOps.GateUpSwiGlu(int layer)
    {
        var w = _weights.Layers[layer];
        w.Gate.Apply(_xb.View, _hb.View); w.Up.Apply(_xb.View, _hb2.View);
        _swiGlu(_c.IntermediateSize, _hb.View, _hb2.View);
    }

    void ILlamaOps.DownProjection(int layer) => _weights.Layers[layer].Down.Apply(_hb.View, _projected.View);

    void ILlamaOps.FinalNormAndHead()
    {
        RmsNorm(_x.View, _weights.FinalNorm.View, _xb.View);
        _weights.LmHead.Apply(_xb.View, _logits.View);
    }

    private MemoryBuffer1D<float, Stride1D.Dense> Buffer(StepBuffer buffer) => buffer switch
    {
        StepBuffer.Hidden => _x,
        StepBuffer.Normed => _xb,
        StepBuffer.Q => _q,
        StepBuffer.K => _k,
        StepBuffer.V => _v,
        StepBuffer.Attention => _att,
        StepBuffer.SwiGlu => _hb,
        StepBuffer.Projected => _projected,
        StepBuffer.Logits => _logits,
        _ => throw new ArgumentOutOfRangeException(nameof(buffer)),
    };

    void ILlamaOps.Read(StepBuffer buffer, Span<double> destination)
    {
        var values = new float[destination.Length];
        ((ArrayView<float>)Buffer(buffer).View).SubView(0, values.Length).CopyToCPU(values);
        for (int i = 0; i < values.Length; i++) destination[i] = values[i];
    }

    void ILlamaOps.Write(StepBuffer buffer, ReadOnlySpan<double> values)
    {
        var single = new float[values.Length];
        for (int i = 0; i < single.Length; i++) single[i] = (float)values[i];
        ((ArrayView<float>)Buffer(buffer).View).SubView(0, single.Length).CopyFromCPU(single);
    }

    private void RmsNorm(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> output)
    {
        _rmsInverse(1, x, _inv.View, _c.HiddenSize, _eps);
        _rmsApply(_c.HiddenSize, x, _inv.View, weight, output);
    }

    private void DisposeAll()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
        _format.Dispose();
        _device.Dispose();
    }

    public override void Dispose() => DisposeAll();
}
