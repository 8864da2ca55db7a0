using GpuIntLab.Core.Formats.IntegerOnly;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// The integer-only W8A8 step on an ILGPU accelerator, every op on the device (<see cref="IntegerOnlyKernels"/>): int8
/// weights and per-token int8 activations, int32 accumulators with dyadic requantisation, integer RMSNorm, RoPE,
/// softmax and SiLU, an int32 residual stream and an int8 KV cache. The host only launches kernels and converts the
/// final int32 logits to float64. Bit-identical to the CPU reference <see cref="IntegerOnlyEngine"/> (same model
/// quantisation, same static helpers), one token a step.
/// </summary>
public sealed class IlgpuIntegerOnlyEngine : LlamaEngine, IIntegerOnlyOps
{
    private sealed record DeviceMatrix(MemoryBuffer1D<sbyte, Stride1D.Dense> Codes, MemoryBuffer1D<int, Stride1D.Dense> Multipliers,
        MemoryBuffer1D<int, Stride1D.Dense> Exponents, int Rows, int Cols);

    private sealed record DeviceVector(MemoryBuffer1D<int, Stride1D.Dense> Codes, int FracBits);

    private sealed class LayerCache(Accelerator acc, int kvDim, int kvHeads, int initialPositions) : IDisposable
    {
        public readonly GrowableBuffer<sbyte> Keys = new(acc, kvDim, initialPositions), Values = new(acc, kvDim, initialPositions);
        public readonly GrowableBuffer<int> KeyScales = new(acc, 2 * kvHeads, initialPositions), ValueScales = new(acc, 2 * kvHeads, initialPositions);
        public void Ensure(int positions) { Keys.Ensure(positions); Values.Ensure(positions); KeyScales.Ensure(positions); ValueScales.Ensure(positions); }
        public void Dispose() { Keys.Dispose(); Values.Dispose(); KeyScales.Dispose(); ValueScales.Dispose(); }
    }

    private readonly LlamaConfig _c;
    private readonly IlgpuDevice _device;
    private readonly IntegerOnlyModel _model;
    private readonly DeviceMatrix _embedding;
    private readonly ModelWeights<DeviceMatrix, DeviceVector> _weights;
    private readonly LayerCache[] _caches;
    private readonly IntegerRopeTable _rope;
    private readonly GrowableBuffer<int> _cos, _sin, _probabilities;
    private readonly GrowableBuffer<long> _scores, _exps;
    private int _ropePositions;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _x, _xb, _q, _k, _v, _att, _gate, _up, _projected, _logits, _inputScale, _queryScales, _noBias;
    private readonly MemoryBuffer1D<sbyte, Stride1D.Dense> _codes, _queryCodes;
    private readonly MemoryBuffer1D<long, Stride1D.Dense> _normStats;
    private readonly List<IDisposable> _owned = [];

    private readonly Action<Index1D, ArrayView<int>, ArrayView<int>, int> _rowScales;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<sbyte>, int> _quantize;
    private readonly Action<Index1D, ArrayView<sbyte>, ArrayView<sbyte>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, ArrayView<int>, int, int> _matVec;
    private readonly Action<Index1D, ArrayView<sbyte>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int> _embed;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<long>, int, int, int> _normStatsKernel;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<long>, ArrayView<int>, int, ArrayView<int>, int> _normApply;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int> _ropeKernel;
    private readonly Action<Index1D, ArrayView<sbyte>, ArrayView<int>, ArrayView<sbyte>, ArrayView<int>, ArrayView<long>, int, int, int, int, int, int> _scoresKernel;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>, int> _softmax;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<sbyte>, ArrayView<int>, ArrayView<int>, int, int, int, int> _attentionOutput;
    private readonly Action<Index1D, ArrayView<int>, ArrayView<int>> _residual, _swiGlu;

    public override EngineInfo Info { get; }
    public override ILlamaOps Ops => this;

    /// <summary>Raw logits of the last step that computed them: int32 at 2^-16.</summary>
    public int[] LastRawLogits { get; private set; } = [];

    /// <summary>Device bytes of the linear weights: 1 per code + 8 per output channel (multiplier, exponent); a tied head counts once.</summary>
    public long LinearWeightBytes { get; }

    public IlgpuIntegerOnlyEngine(LlamaCheckpoint checkpoint, IlgpuDevice device) : this(new IntegerOnlyModel(checkpoint), device) { }

    /// <param name="initialPositions">Positions the device KV cache, score rows and RoPE rows hold before they first grow (tests make it small to cross the growth).</param>
    public IlgpuIntegerOnlyEngine(IntegerOnlyModel model, IlgpuDevice device, int initialPositions = 64) : base(model.Config)
    {
        _c = model.Config;
        _model = model;
        _device = device;
        var acc = device.Accelerator;
        try
        {
            T Own<T>(T d) where T : IDisposable { _owned.Add(d); return d; }
            MemoryBuffer1D<int, Stride1D.Dense> Ints(long n) => Own(acc.Allocate1D<int>(Math.Max(1, n)));
            var uploaded = new Dictionary<Int8Matrix, DeviceMatrix>(ReferenceEqualityComparer.Instance);
            DeviceMatrix Matrix(Int8Matrix m)
            {
                if (uploaded.TryGetValue(m, out var done)) return done; // a tied head is the embedding, uploaded once
                return uploaded[m] = new DeviceMatrix(Own(acc.Allocate1D(m.TransposedCodes())), Own(acc.Allocate1D(m.Multipliers)), Own(acc.Allocate1D(m.Exponents)), m.Rows, m.Cols);
            }
            DeviceVector? Vector(FixedVector? v) => v is null ? null : new DeviceVector(Own(acc.Allocate1D(v.Codes)), v.FracBits);

            _embedding = Matrix(model.Embedding);
            var layers = model.Weights.Layers.Select(w => new LayerWeights<DeviceMatrix, DeviceVector>(
                Vector(w.InputNorm)!, Matrix(w.Q), Vector(w.QBias), Matrix(w.K), Vector(w.KBias), Matrix(w.V), Vector(w.VBias),
                Matrix(w.O), Vector(w.OBias), Vector(w.QNorm), Vector(w.KNorm), Vector(w.PostNorm)!, Matrix(w.Gate), Matrix(w.Up), Matrix(w.Down))).ToArray();
            _weights = new ModelWeights<DeviceMatrix, DeviceVector>(layers, Vector(model.Weights.FinalNorm)!, Matrix(model.Weights.LmHead));
            LinearWeightBytes = uploaded.Values.Where(m => m != _embedding || model.TiedHead).Sum(m => m.Codes.LengthInBytes + m.Multipliers.LengthInBytes + m.Exponents.LengthInBytes);

            _caches = new LayerCache[_c.NumHiddenLayers];
            for (int l = 0; l < _caches.Length; l++) _caches[l] = Own(new LayerCache(acc, _c.KvDim, _c.NumKeyValueHeads, initialPositions));
            _rope = new IntegerRopeTable(_c, initialPositions);
            _cos = Own(new GrowableBuffer<int>(acc, _c.HeadDim / 2, initialPositions));
            _sin = Own(new GrowableBuffer<int>(acc, _c.HeadDim / 2, initialPositions));
            _scores = Own(new GrowableBuffer<long>(acc, _c.NumAttentionHeads, initialPositions));
            _exps = Own(new GrowableBuffer<long>(acc, _c.NumAttentionHeads, initialPositions));
            _probabilities = Own(new GrowableBuffer<int>(acc, _c.NumAttentionHeads, initialPositions));

            int d = _c.HiddenSize;
            _x = Ints(d); _xb = Ints(d); _projected = Ints(d); _q = Ints(_c.QDim); _att = Ints(_c.QDim); _k = Ints(_c.KvDim); _v = Ints(_c.KvDim);
            _gate = Ints(_c.IntermediateSize); _up = Ints(_c.IntermediateSize); _logits = Ints(_c.VocabSize);
            _inputScale = Ints(2); _queryScales = Ints(2 * _c.NumAttentionHeads); _noBias = Ints(1);
            _codes = Own(acc.Allocate1D<sbyte>(IlgpuProvider.MaxCols(_c)));
            _queryCodes = Own(acc.Allocate1D<sbyte>(_c.QDim));
            _normStats = Own(acc.Allocate1D<long>(3 * Math.Max(_c.NumAttentionHeads, _c.NumKeyValueHeads)));

            _rowScales = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, int>(IntegerOnlyKernels.RowScales);
            _quantize = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<sbyte>, int>(IntegerOnlyKernels.QuantizeCodes);
            _matVec = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<sbyte>, ArrayView<sbyte>, ArrayView<int>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, ArrayView<int>, int, int>(IntegerOnlyKernels.MatVec);
            _embed = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<sbyte>, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int>(IntegerOnlyKernels.Embed);
            _normStatsKernel = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<long>, int, int, int>(IntegerOnlyKernels.NormStats);
            _normApply = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<long>, ArrayView<int>, int, ArrayView<int>, int>(IntegerOnlyKernels.NormApply);
            _ropeKernel = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<int>, int, int>(IntegerOnlyKernels.Rope);
            _scoresKernel = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<sbyte>, ArrayView<int>, ArrayView<sbyte>, ArrayView<int>, ArrayView<long>, int, int, int, int, int, int>(IntegerOnlyKernels.Scores);
            _softmax = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>, int>(IntegerOnlyKernels.Softmax);
            _attentionOutput = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<sbyte>, ArrayView<int>, ArrayView<int>, int, int, int, int>(IntegerOnlyKernels.AttentionOutput);
            _residual = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>>(IntegerOnlyKernels.Residual);
            _swiGlu = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>>(IntegerOnlyKernels.SwiGlu);

            var notes = IntegerOnlyNotes.Precisions(model);
            notes["device"] = "every op in ILGPU kernels calling the Core IntegerOnly helpers; one thread per output row for the matvecs (int32 accumulation, column-major int8 W); host: kernel launches and the float64 conversion of the logits";
            notes["linear weight bytes"] = LinearWeightBytes.ToString(System.Globalization.CultureInfo.InvariantCulture);
            Info = new EngineInfo("ilgpu-intonly", IntegerOnlyNotes.Format, IntegerOnlyNotes.Scheme, device.Description, notes);
        }
        catch
        {
            DisposeAll();
            throw;
        }
    }

    void ILlamaOps.Begin(int tokens, int position)
    {
        if (tokens != 1) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "this engine runs one token a step");
        foreach (var cache in _caches) cache.Ensure(position + 1);
        _scores.Ensure(position + 1); _exps.Ensure(position + 1); _probabilities.Ensure(position + 1);
        if (_ropePositions < position + 1)
        {
            _rope.Ensure(position + 1);
            _cos.Ensure(_rope.Positions); _sin.Ensure(_rope.Positions);
            _cos.View.SubView(0, _rope.AllCos.Length).CopyFromCPU(_rope.AllCos);
            _sin.View.SubView(0, _rope.AllSin.Length).CopyFromCPU(_rope.AllSin);
            _ropePositions = _rope.Positions;
        }
    }

    void ILlamaOps.Embed(ReadOnlySpan<int> tokens) =>
        _embed(_c.HiddenSize, _embedding.Codes.View, _embedding.Multipliers.View, _embedding.Exponents.View, _x.View, tokens[0], _c.VocabSize);

    void ILlamaOps.RmsNorm(int layer, LayerWeight norm)
    {
        var w = _weights.Layers[layer];
        Norm(_x.View, norm == LayerWeight.InputNorm ? w.InputNorm : w.PostNorm, _xb.View, rows: 1, _c.HiddenSize);
    }

    private void Norm(ArrayView<int> x, DeviceVector gamma, ArrayView<int> output, int rows, int n)
    {
        _normStatsKernel(rows, x, _normStats.View, n, _model.Epsilon.Multiplier, _model.Epsilon.Exponent);
        _normApply(rows * n, x, _normStats.View, gamma.Codes.View, gamma.FracBits, output, n);
    }

    void ILlamaOps.QkvProjection(int layer)
    {
        var w = _weights.Layers[layer];
        QuantizeInput(_xb.View, _c.HiddenSize);
        MatVec(w.Q, w.QBias, _q.View);
        MatVec(w.K, w.KBias, _k.View);
        MatVec(w.V, w.VBias, _v.View);
    }

    void ILlamaOps.QkNorm(int layer)
    {
        var w = _weights.Layers[layer];
        Norm(_q.View, w.QNorm!, _q.View, _c.NumAttentionHeads, _c.HeadDim);
        Norm(_k.View, w.KNorm!, _k.View, _c.NumKeyValueHeads, _c.HeadDim);
    }

    void ILlamaOps.RopeAndStore(int layer, int position)
    {
        int half = _c.HeadDim / 2, kv = _c.KvDim, kvHeads = _c.NumKeyValueHeads;
        _ropeKernel(_c.NumAttentionHeads * half, _q.View, _cos.View, _sin.View, position, half);
        _ropeKernel(kvHeads * half, _k.View, _cos.View, _sin.View, position, half);
        var cache = _caches[layer];
        Quantize(_k.View, kvHeads, cache.KeyScales.View.SubView(position * 2 * kvHeads, 2 * kvHeads), cache.Keys.View.SubView(position * kv, kv));
        Quantize(_v.View, kvHeads, cache.ValueScales.View.SubView(position * 2 * kvHeads, 2 * kvHeads), cache.Values.View.SubView(position * kv, kv));
    }

    void ILlamaOps.Attention(int layer, int position)
    {
        int heads = _c.NumAttentionHeads, hd = _c.HeadDim, n = position + 1;
        var cache = _caches[layer];
        var scale = _model.AttentionScale;
        Quantize(_q.View, heads, _queryScales.View, _queryCodes.View);
        _scoresKernel(heads * n, _queryCodes.View, _queryScales.View, cache.Keys.View, cache.KeyScales.View, _scores.View.SubView(0, heads * n),
            n, hd, _c.KvDim, _c.GroupSize, scale.Multiplier, scale.Exponent);
        _softmax(heads, _scores.View, _exps.View, _probabilities.View, n);
        _attentionOutput(heads * hd, _probabilities.View, cache.Values.View, cache.ValueScales.View, _att.View, n, hd, _c.KvDim, _c.GroupSize);
    }

    void ILlamaOps.OutputProjection(int layer)
    {
        var w = _weights.Layers[layer];
        QuantizeInput(_att.View, _c.QDim);
        MatVec(w.O, w.OBias, _projected.View);
    }

    void ILlamaOps.AddResidual(int layer, LayerWeight block) => _residual(_c.HiddenSize, _x.View, _projected.View);

    void ILlamaOps.GateUpSwiGlu(int layer)
    {
        var w = _weights.Layers[layer];
        QuantizeInput(_xb.View, _c.HiddenSize);
        MatVec(w.Gate, null, _gate.View);
        MatVec(w.Up, null, _up.View);
        _swiGlu(_c.IntermediateSize, _gate.View, _up.View);
    }

    void ILlamaOps.DownProjection(int layer)
    {
        QuantizeInput(_gate.View, _c.IntermediateSize);
        MatVec(_weights.Layers[layer].Down, null, _projected.View);
    }

    void ILlamaOps.FinalNormAndHead()
    {
        Norm(_x.View, _weights.FinalNorm, _xb.View, rows: 1, _c.HiddenSize);
        QuantizeInput(_xb.View, _c.HiddenSize);
        MatVec(_weights.LmHead, null, _logits.View);
        var logits = new int[_c.VocabSize];
        _logits.View.CopyToCPU(logits);
        LastRawLogits = logits;
    }

    /// <summary>Heads of x (q, k or v) into int8 codes with a dynamic scale per head.</summary>
    private void Quantize(ArrayView<int> x, int heads, ArrayView<int> scales, ArrayView<sbyte> codes)
    {
        _rowScales(heads, x, scales, _c.HeadDim);
        _quantize(heads * _c.HeadDim, x, scales, codes, _c.HeadDim);
    }

    /// <summary>One token's linear input (n elements) into the shared code buffer and its scale.</summary>
    private void QuantizeInput(ArrayView<int> x, int n)
    {
        var input = x.SubView(0, n);
        _rowScales(1, input, _inputScale.View, n);
        _quantize(n, input, _inputScale.View, _codes.View, n);
    }

    private void MatVec(DeviceMatrix w, DeviceVector? bias, ArrayView<int> y) =>
        _matVec(w.Rows, w.Codes.View, _codes.View, _inputScale.View, w.Multipliers.View, w.Exponents.View,
            (bias?.Codes ?? _noBias).View, bias is null ? 0 : 1, y, w.Rows, w.Cols);

    private MemoryBuffer1D<int, Stride1D.Dense> Buffer(StepBuffer buffer) => buffer switch
    {
        StepBuffer.Hidden => _x,
        StepBuffer.Normed => _xb,
        StepBuffer.Q => _q,
        StepBuffer.K => _k,
        StepBuffer.V => _v,
        StepBuffer.Attention => _att,
        StepBuffer.SwiGlu => _gate,
        StepBuffer.Projected => _projected,
        StepBuffer.Logits => _logits,
        _ => throw new ArgumentOutOfRangeException(nameof(buffer)),
    };

    /// <summary>A step buffer's raw int32 values (2^-16), downloaded.</summary>
    public void ReadRaw(StepBuffer buffer, Span<int> destination) => ((ArrayView<int>)Buffer(buffer).View).SubView(0, destination.Length).CopyToCPU(destination);

    /// <summary>Sets a step buffer from raw int32 values (2^-16).</summary>
    public void WriteRaw(StepBuffer buffer, ReadOnlySpan<int> values)
    {
        ((ArrayView<int>)Buffer(buffer).View).SubView(0, values.Length).CopyFromCPU(values);
        if (buffer == StepBuffer.Logits) LastRawLogits = values.ToArray();
    }

    // The boundary: float64 views of the int32 buffers and the output logits (no floating point inside the step).
    protected override double[] ReadLogits() => Array.ConvertAll(LastRawLogits, FixedVector.ToDouble);

    void ILlamaOps.Read(StepBuffer buffer, Span<double> destination) => IIntegerOnlyOps.ReadAsDoubles(this, buffer, destination);

    void ILlamaOps.Write(StepBuffer buffer, ReadOnlySpan<double> values) => IIntegerOnlyOps.WriteFromDoubles(this, buffer, values);

    private void DisposeAll()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
        _device.Dispose();
    }

    public override void Dispose() => DisposeAll();
}
