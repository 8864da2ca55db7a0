using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// The oracle's Q16.48 forward on an ILGPU accelerator. On the device: every linear layer and lm_head
/// (int64 weights, exact 128-bit sums, one RNE), RMSNorm's exact sum of squares and its apply, RoPE from
/// the oracle's integer table, attention scores and p·v sums, SwiGLU's final product, residual adds with
/// overflow checks. On the host, with the oracle's own <see cref="Q48"/> code (its UInt128 algorithms do
/// not compile under ILGPU): the one rsqrt per RMSNorm (with the 128-bit mean's division), softmax over
/// each head's scores, and SiLU of the gate vector, each a download and an upload. Raw logits are
/// bit-identical to <c>OracleEngine</c>'s.
/// </summary>
public sealed class IlgpuInt64Engine : LlamaEngine, IRawLogitsEngine, IExactLlamaOps
{
    private sealed class LayerCache(Accelerator acc, int kvDim) : IDisposable
    {
        public readonly GrowableBuffer<long> Keys = new(acc, kvDim), Values = new(acc, kvDim);
        public void Dispose() { Keys.Dispose(); Values.Dispose(); }
    }

    private readonly LlamaConfig _c;
    private readonly IlgpuDevice _device;
    private readonly long[] _embedding;
    private readonly ModelWeights<MemoryBuffer1D<long, Stride1D.Dense>, MemoryBuffer1D<long, Stride1D.Dense>> _weights;
    private readonly LayerCache[] _caches;
    private readonly RopeTable _rope;
    private readonly GrowableBuffer<long> _cos, _sin, _scores;
    private int _ropePositions; // positions whose cos/sin are on the device
    private readonly MemoryBuffer1D<long, Stride1D.Dense> _x, _xb, _q, _k, _v, _att, _hb, _hb2, _projected, _sumSq, _logits;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _error;
    private readonly long _epsilon, _attentionScale;
    private long[] _hostScores = [];
    private readonly long[] _hostGate, _hostSumSq = new long[2];
    private readonly int[] _hostError = new int[1];
    private readonly List<IDisposable> _owned = [];

    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, ArrayView<int>, int, int> _matVec;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, int> _sumSquares;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, long, ArrayView<int>> _normApply;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, ArrayView<int>> _ropeKernel;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, int> _copy;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, int, int, long, ArrayView<int>> _scoresK;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, int, int, ArrayView<int>> _attOut;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>> _residual;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>> _mul;

    public override EngineInfo Info { get; }
    public override ILlamaOps Ops => this;

    /// <summary>Raw Q16.48 logits of the last step that computed logits (for hashing).</summary>
    public long[] LastRawLogits { get; private set; } = [];

    /// <summary>Device bytes of the linear weights (8 per weight; a tied lm_head counts once more: it is uploaded as its own matrix).</summary>
    public long LinearWeightBytes { get; }

    public IlgpuInt64Engine(LlamaCheckpoint checkpoint, IlgpuDevice device) : base(checkpoint.Config)
    {
        _c = checkpoint.Config;
        _device = device;
        var acc = device.Accelerator;
        try
        {
            MemoryBuffer1D<long, Stride1D.Dense> Own(MemoryBuffer1D<long, Stride1D.Dense> b) { _owned.Add(b); return b; }
            T OwnAny<T>(T d) where T : IDisposable { _owned.Add(d); return d; }
            MemoryBuffer1D<long, Stride1D.Dense> Zeros(long n) => Own(acc.Allocate1D<long>(n));

            _embedding = checkpoint.ReadQ48(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
            _weights = LlamaWeights.Load(checkpoint,
                t => Own(acc.Allocate1D(Layout.Transpose(t.Name == LlamaCheckpoint.EmbeddingName ? _embedding : checkpoint.ReadQ48(t), t.Shape[0], t.Shape[1]))),
                t => Own(acc.Allocate1D(checkpoint.ReadQ48(t))));
            _caches = new LayerCache[_c.NumHiddenLayers];
            for (int l = 0; l < _caches.Length; l++) _caches[l] = OwnAny(new LayerCache(acc, _c.KvDim));
            LinearWeightBytes = _weights.Layers.Sum(w => w.Q.LengthInBytes + w.K.LengthInBytes + w.V.LengthInBytes + w.O.LengthInBytes
                + w.Gate.LengthInBytes + w.Up.LengthInBytes + w.Down.LengthInBytes) + _weights.LmHead.LengthInBytes;

            // Boundary constants exactly as the oracle makes them; the oracle's integer RoPE table, uploaded as the context grows.
            _epsilon = Q48.FromDouble(_c.RmsNormEps);
            _attentionScale = Q48.Rsqrt(Q48.FromInt(_c.HeadDim));
            _rope = new RopeTable(_c.HeadDim, _c.MaxPositionEmbeddings, _c.RopeTheta, _c.RopeScaling);
            _cos = OwnAny(new GrowableBuffer<long>(acc, _c.HeadDim / 2));
            _sin = OwnAny(new GrowableBuffer<long>(acc, _c.HeadDim / 2));
            _scores = OwnAny(new GrowableBuffer<long>(acc, _c.NumAttentionHeads));

            int d = _c.HiddenSize;
            _x = Zeros(d); _xb = Zeros(d); _projected = Zeros(d); _q = Zeros(_c.QDim); _k = Zeros(_c.KvDim); _v = Zeros(_c.KvDim); _att = Zeros(_c.QDim);
            _hb = Zeros(_c.IntermediateSize); _hb2 = Zeros(_c.IntermediateSize);
            _sumSq = Zeros(2); _logits = Zeros(_c.VocabSize);
            _error = acc.Allocate1D<int>(1);
            _owned.Add(_error);
            _hostGate = new long[_c.IntermediateSize];

            _matVec = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, ArrayView<int>, int, int>(Int64Kernels.MatVec);
            _sumSquares = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, int>(Int64Kernels.SumSquares);
            _normApply = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, long, ArrayView<int>>(Int64Kernels.NormApply);
            _ropeKernel = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, ArrayView<int>>(Int64Kernels.Rope);
            _copy = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, int>(Int64Kernels.CopyTo);
            _scoresK = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, int, int, long, ArrayView<int>>(Int64Kernels.Scores);
            _attOut = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, int, int, ArrayView<int>>(Int64Kernels.AttentionOutput);
            _residual = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>>(Int64Kernels.Residual);
            _mul = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>>(Int64Kernels.MulInPlace);
            _error.MemSetToZero();

            Info = new EngineInfo("ilgpu-int64", "Q16.48", "exact", device.Description, new Dictionary<string, string>
            {
                ["weights"] = "checkpoint values converted exactly to Q16.48, 8 bytes each on the device",
                ["matmul"] = "device: int64 x int64 -> exact 128-bit sum (products from 32-bit halves), one RNE per output; biases: int64 add with overflow check",
                ["rmsnorm"] = "device: exact 128-bit sum of squares and Mul(w, Mul(x, inv)); host: mean (128-bit RNE division) and Q48.Rsqrt (also per head for q/k norm)",
                ["rope"] = "device: oracle's integer cos/sin table, one exact 128-bit sum per output, RNE",
                ["attention"] = "device: scores Mul(RNE(q.k), 1/sqrt(hd)) and exact p.v sums; host: Q48.Softmax (UInt128 code)",
                ["swiglu"] = "host: Q48.Silu of the gate vector; device: Mul(silu, up)",
                ["residual"] = "device: int64 add with overflow check",
                ["linear weight bytes"] = LinearWeightBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
            });
        }
        catch
        {
            DisposeAll();
            throw;
        }
    }

    protected override double[] ReadLogits() => Array.ConvertAll(LastRawLogits, Q48.ToDouble);

    /// <summary>Decode returning the raw Q16.48 logits (no float64 conversion).</summary>
    public long[] DecodeRaw(int token)
    {
        Decode(token);
        return LastRawLogits;
    }

    void ILlamaOps.Begin(int tokens, int position)
    {
        if (tokens != 1) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "this engine runs one token a step");
        foreach (var cache in _caches) { cache.Keys.Ensure(position + 1); cache.Values.Ensure(position + 1); }
        _scores.Ensure(position + 1);
        if (_ropePositions < position + 1)
        {
            _cos.Ensure(position + 1); _sin.Ensure(position + 1);
            int half = _c.HeadDim / 2, positions = _cos.Positions;
            var cos = new long[(long)positions * half];
            var sin = new long[cos.Length];
            int rows = Math.Min(positions, _c.MaxPositionEmbeddings);
            _rope.CopyRows(0, rows, cos.AsSpan(0, rows * half), sin.AsSpan(0, rows * half));
            _cos.View.CopyFromCPU(cos); _sin.View.CopyFromCPU(sin);
            _ropePositions = positions;
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
        RmsNorm(_x.View, (norm == LayerWeight.InputNorm ? w.InputNorm : w.PostNorm).View, _xb.View, layer, norm == LayerWeight.InputNorm ? "input norm" : "post-attention norm");
    }

    void ILlamaOps.QkvProjection(int layer)
    {
        var w = _weights.Layers[layer];
        int d = _c.HiddenSize, q = _c.QDim, kv = _c.KvDim;
        var err = _error.View;
        _matVec(q, w.Q.View, _xb.View, _q.View, err, q, d);
        _matVec(kv, w.K.View, _xb.View, _k.View, err, kv, d);
        _matVec(kv, w.V.View, _xb.View, _v.View, err, kv, d);
        if (w.QBias != null) { _residual(q, _q.View, w.QBias.View, err); _residual(kv, _k.View, w.KBias!.View, err); _residual(kv, _v.View, w.VBias!.View, err); }
        CheckError(layer, "q/k/v");
    }

    void ILlamaOps.QkNorm(int layer)
    {
        var w = _weights.Layers[layer];
        int hd = _c.HeadDim;
        for (int h = 0; h < _c.NumAttentionHeads; h++) HeadNorm(_q.View.SubView(h * hd, hd), w.QNorm!.View, layer);
        for (int h = 0; h < _c.NumKeyValueHeads; h++) HeadNorm(_k.View.SubView(h * hd, hd), w.KNorm!.View, layer);
    }

    void ILlamaOps.RopeAndStore(int layer, int position)
    {
        int half = _c.HeadDim / 2, kv = _c.KvDim;
        _ropeKernel(_c.NumAttentionHeads * half, _q.View, _cos.View, _sin.View, position, half, _error.View);
        _ropeKernel(_c.NumKeyValueHeads * half, _k.View, _cos.View, _sin.View, position, half, _error.View);
        _copy(kv, _k.View, _caches[layer].Keys.View, position * kv);
        _copy(kv, _v.View, _caches[layer].Values.View, position * kv);
    }

    void ILlamaOps.Attention(int layer, int position)
    {
        int heads = _c.NumAttentionHeads, hd = _c.HeadDim, n = position + 1;
        var cache = _caches[layer];
        ArrayView<long> scores = _scores.View.SubView(0, heads * n);
        _scoresK(heads * n, _q.View, cache.Keys.View, scores, n, hd, _c.KvDim, _c.GroupSize, _attentionScale, _error.View);
        CheckError(layer, "attention scores");
        // Softmax on the host with the oracle's code.
        if (_hostScores.Length < heads * n) _hostScores = new long[Math.Max(heads * n, 2 * _hostScores.Length)];
        var host = _hostScores.AsSpan(0, heads * n);
        scores.CopyToCPU(host);
        for (int h = 0; h < heads; h++) { var s = host.Slice(h * n, n); Q48.Softmax(s, s); }
        scores.CopyFromCPU((ReadOnlySpan<long>)host);
        _attOut(heads * hd, scores, cache.Values.View, _att.View, n, hd, _c.KvDim, _c.GroupSize, _error.View);
    }

    void ILlamaOps.OutputProjection(int layer)
    {
        var w = _weights.Layers[layer];
        _matVec(_c.HiddenSize, w.O.View, _att.View, _projected.View, _error.View, _c.HiddenSize, _c.QDim);
        if (w.OBias != null) _residual(_c.HiddenSize, _projected.View, w.OBias.View, _error.View);
    }

    void ILlamaOps.AddResidual(int layer, LayerWeight block)
    {
        _residual(_c.HiddenSize, _x.View, _projected.View, _error.View);
        CheckError(layer, block == LayerWeight.O ? "attention residual" : "mlp residual");
    }

    void ILlamaOps.GateUpSwiGlu(int layer)
    {
        var w = _weights.Layers[layer];
        int d = _c.HiddenSize, ff = _c.IntermediateSize;
        var err = _error.View;
        _matVec(ff, w.Gate.View, _xb.View, _hb.View, err, ff, d);
        _matVec(ff, w.Up.View, _xb.View, _hb2.View, err, ff, d);
        CheckError(layer, "gate/up");
        _hb.View.CopyToCPU(_hostGate);
        for (int i = 0; i < ff; i++) _hostGate[i] = Q48.Silu(_hostGate[i]);
        _hb.View.CopyFromCPU(_hostGate);
        _mul(ff, _hb.View, _hb2.View, err);
    }

    void ILlamaOps.DownProjection(int layer) =>
        _matVec(_c.HiddenSize, _weights.Layers[layer].Down.View, _hb.View, _projected.View, _error.View, _c.HiddenSize, _c.IntermediateSize);

    void ILlamaOps.FinalNormAndHead()
    {
        int layers = _c.NumHiddenLayers;
        RmsNorm(_x.View, _weights.FinalNorm.View, _xb.View, layers, "final norm");
        _matVec(_c.VocabSize, _weights.LmHead.View, _xb.View, _logits.View, _error.View, _c.VocabSize, _c.HiddenSize);
        var logits = new long[_c.VocabSize];
        _logits.View.CopyToCPU(logits);
        CheckError(layers, "lm_head");
        LastRawLogits = logits;
    }

    private MemoryBuffer1D<long, Stride1D.Dense> Buffer(StepBuffer buffer) => buffer switch
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

    void IExactLlamaOps.ReadRaw(StepBuffer buffer, Span<long> destination) => ((ArrayView<long>)Buffer(buffer).View).SubView(0, destination.Length).CopyToCPU(destination);

    void IExactLlamaOps.WriteRaw(StepBuffer buffer, ReadOnlySpan<long> values)
    {
        ((ArrayView<long>)Buffer(buffer).View).SubView(0, values.Length).CopyFromCPU(values);
        if (buffer == StepBuffer.Logits) LastRawLogits = values.ToArray();
    }

    void ILlamaOps.Read(StepBuffer buffer, Span<double> destination) => IExactLlamaOps.ReadAsDoubles(this, buffer, destination);

    void ILlamaOps.Write(StepBuffer buffer, ReadOnlySpan<double> values) => IExactLlamaOps.WriteFromDoubles(this, buffer, values);

    private void RmsNorm(ArrayView<long> x, ArrayView<long> weight, ArrayView<long> output, int layer, string what)
    {
        CheckError(layer, what);
        _normApply(_c.HiddenSize, x, weight, output, Inverse(x, _c.HiddenSize), _error.View);
    }

    /// <summary>Qwen3's per-head norm, in place over one head (the oracle's RmsNorm over head_dim).</summary>
    private void HeadNorm(ArrayView<long> head, ArrayView<long> weight, int layer)
    {
        _normApply(_c.HeadDim, head, weight, head, Inverse(head, _c.HeadDim), _error.View);
        CheckError(layer, "q/k norm");
    }

    /// <summary>rsqrt(mean(x^2) + eps): the exact 128-bit sum of squares on the device, the oracle's division and Rsqrt on the host.</summary>
    private long Inverse(ArrayView<long> x, int n)
    {
        _sumSquares(1, x, _sumSq.View, n);
        _sumSq.View.CopyToCPU(_hostSumSq);
        var sum = new Int128((ulong)_hostSumSq[0], (ulong)_hostSumSq[1]);
        long mean = Q48.DivideRound(sum, (Int128)n << Q48.FracBits);
        return Q48.Rsqrt(mean + _epsilon);
    }

    private void CheckError(int layer, string where)
    {
        _error.View.CopyToCPU(_hostError);
        if (_hostError[0] == 0) return;
        int code = _hostError[0];
        _error.MemSetToZero();
        string op = code switch
        {
            Int64Kernels.MatVecOverflow => "a matvec output",
            Int64Kernels.NormOverflow => "an RMSNorm output",
            Int64Kernels.RopeOverflow => "a RoPE output",
            Int64Kernels.ScoreOverflow => "an attention score",
            Int64Kernels.AttentionOverflow => "an attention output",
            Int64Kernels.ResidualOverflow => "a residual add",
            Int64Kernels.SwiGluOverflow => "a SwiGLU product",
            _ => $"op {code}",
        };
        throw new Q48OverflowException($"ilgpu-int64: {op} left the Q16.48 range (layer {layer}, before/at {where})");
    }


    private void DisposeAll()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
        _device.Dispose();
    }

    public override void Dispose() => DisposeAll();
}
