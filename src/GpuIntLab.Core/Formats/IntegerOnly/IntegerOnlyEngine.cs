using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>
/// The CPU reference of the integer-only W8A8 step: every op of <see cref="LlamaStep"/> in int32/int64 arithmetic
/// through the primitives of this folder (<see cref="DyadicQuantization"/>, <see cref="IntegerRmsNorm"/>,
/// <see cref="IntegerExp"/>, <see cref="IntegerAttention"/>), written for clarity: the ILGPU engine must give the same
/// bits. Every step buffer is int32 at 2^-16; the KV cache holds int8 codes with a dyadic scale per token and KV head.
/// Floating point only in the boundary file (load-time quantisation, the float64 views and the output logits).
/// </summary>
public sealed partial class IntegerOnlyEngine : LlamaEngine, IIntegerOnlyOps
{
    private readonly LlamaConfig _c;
    private readonly IntegerOnlyModel _model;
    private readonly IntegerRopeTable _rope;
    private readonly KvCache<sbyte> _keys, _values;
    private readonly KvCache<int> _keyScales, _valueScales; // (multiplier, exponent) per KV head
    private int _tokens;
    private int[] _x = [], _xb = [], _q = [], _k = [], _v = [], _attention = [], _gate = [], _up = [], _projected = [];
    private sbyte[] _codes = [];
    private long[] _scores = [], _exps = [];
    private int[] _probabilities = [];

    /// <summary>Raw logits of the last step that computed them: int32 at 2^-16.</summary>
    public int[] LastRawLogits { get; private set; } = [];

    public override ILlamaOps Ops => this;

    /// <summary>Prefill runs: a weight row serves this many tokens.</summary>
    protected override int MaxStepTokens => 16;

    public IntegerOnlyEngine(LlamaCheckpoint checkpoint) : this(new IntegerOnlyModel(checkpoint)) { }

    /// <param name="initialPositions">Positions the KV cache and RoPE rows hold before they first grow (tests make it small to cross the growth).</param>
    public IntegerOnlyEngine(IntegerOnlyModel model, int initialPositions = 64) : base(model.Config)
    {
        _c = model.Config;
        _model = model;
        _rope = new IntegerRopeTable(_c, initialPositions);
        _keys = new KvCache<sbyte>(_c.NumHiddenLayers, _c.KvDim, initialPositions);
        _values = new KvCache<sbyte>(_c.NumHiddenLayers, _c.KvDim, initialPositions);
        _keyScales = new KvCache<int>(_c.NumHiddenLayers, 2 * _c.NumKeyValueHeads, initialPositions);
        _valueScales = new KvCache<int>(_c.NumHiddenLayers, 2 * _c.NumKeyValueHeads, initialPositions);
        Info = new EngineInfo("integer-only-cpu", IntegerOnlyNotes.Format, IntegerOnlyNotes.Scheme, "cpu (1 thread)", IntegerOnlyNotes.Precisions(model));
    }

    public override EngineInfo Info { get; }

    void ILlamaOps.Begin(int tokens, int position)
    {
        _rope.Ensure(position + tokens);
        foreach (var cache in new[] { _keys, _values }) cache.EnsureCapacity(position + tokens);
        _keyScales.EnsureCapacity(position + tokens);
        _valueScales.EnsureCapacity(position + tokens);
        if (_tokens == tokens) return;
        _tokens = tokens;
        int d = _c.HiddenSize;
        _x = new int[tokens * d]; _xb = new int[tokens * d]; _projected = new int[tokens * d];
        _q = new int[tokens * _c.QDim]; _attention = new int[tokens * _c.QDim];
        _k = new int[tokens * _c.KvDim]; _v = new int[tokens * _c.KvDim];
        _gate = new int[tokens * _c.IntermediateSize]; _up = new int[tokens * _c.IntermediateSize];
        int widestInput = d > _c.IntermediateSize ? d : _c.IntermediateSize;
        _codes = new sbyte[widestInput > _c.QDim ? widestInput : _c.QDim];
    }

    void ILlamaOps.Embed(ReadOnlySpan<int> tokens)
    {
        var e = _model.Embedding;
        int d = _c.HiddenSize;
        for (int t = 0; t < tokens.Length; t++)
            for (int j = 0; j < d; j++)
                _x[t * d + j] = DyadicQuantization.Dequantize(e.Codes[tokens[t] * d + j], e.Multipliers[tokens[t]], e.Exponents[tokens[t]]);
    }

    void ILlamaOps.RmsNorm(int layer, LayerWeight norm)
    {
        var w = _model.Weights.Layers[layer];
        var gamma = norm == LayerWeight.InputNorm ? w.InputNorm : w.PostNorm;
        int d = _c.HiddenSize;
        for (int t = 0; t < _tokens; t++) Norm(_x.AsSpan(t * d, d), gamma, _xb.AsSpan(t * d, d));
    }

    private void Norm(ReadOnlySpan<int> x, FixedVector gamma, Span<int> output) =>
        IntegerRmsNorm.Row(x, gamma.Codes, gamma.FracBits, _model.Epsilon.Multiplier, _model.Epsilon.Exponent, output);

    void ILlamaOps.QkvProjection(int layer)
    {
        var w = _model.Weights.Layers[layer];
        Linear(w.Q, w.QBias, _xb, _q);
        Linear(w.K, w.KBias, _xb, _k);
        Linear(w.V, w.VBias, _xb, _v);
    }

    void ILlamaOps.QkNorm(int layer)
    {
        var w = _model.Weights.Layers[layer];
        int hd = _c.HeadDim;
        // In place: the row function reads each element before it writes that element.
        for (int i = 0; i < _q.Length; i += hd) Norm(_q.AsSpan(i, hd), w.QNorm!, _q.AsSpan(i, hd));
        for (int i = 0; i < _k.Length; i += hd) Norm(_k.AsSpan(i, hd), w.KNorm!, _k.AsSpan(i, hd));
    }

    void ILlamaOps.RopeAndStore(int layer, int position)
    {
        int hd = _c.HeadDim, qDim = _c.QDim, kvDim = _c.KvDim;
        for (int t = 0; t < _tokens; t++)
        {
            int pos = position + t;
            for (int h = 0; h < _c.NumAttentionHeads; h++) Rope(_q.AsSpan(t * qDim + h * hd, hd), pos);
            for (int h = 0; h < _c.NumKeyValueHeads; h++) Rope(_k.AsSpan(t * kvDim + h * hd, hd), pos);
            Store(_k.AsSpan(t * kvDim, kvDim), _keys.Key(layer, pos), _keyScales.Key(layer, pos));
            Store(_v.AsSpan(t * kvDim, kvDim), _values.Key(layer, pos), _valueScales.Key(layer, pos));
        }
    }

    private void Rope(Span<int> head, int pos)
    {
        int half = head.Length / 2;
        var cos = _rope.Cos(pos);
        var sin = _rope.Sin(pos);
        for (int i = 0; i < half; i++)
        {
            IntegerAttention.Rotate(head[i], head[i + half], cos[i], sin[i], out int a, out int b);
            head[i] = a;
            head[i + half] = b;
        }
    }

    /// <summary>One token's keys or values into the cache: int8 codes and a (multiplier, exponent) per KV head.</summary>
    private void Store(ReadOnlySpan<int> row, Span<sbyte> codes, Span<int> scales)
    {
        int hd = _c.HeadDim;
        for (int h = 0; h < _c.NumKeyValueHeads; h++)
        {
            DyadicQuantization.QuantizeRow(row.Slice(h * hd, hd), codes.Slice(h * hd, hd), out int m, out int e);
            scales[2 * h] = m;
            scales[2 * h + 1] = e;
        }
    }

    void ILlamaOps.Attention(int layer, int position)
    {
        int hd = _c.HeadDim, qDim = _c.QDim;
        var scale = _model.AttentionScale;
        int length = position + _tokens;
        if (_scores.Length < length) { _scores = new long[2 * length]; _exps = new long[2 * length]; _probabilities = new int[2 * length]; }
        var queryCodes = new sbyte[hd];
        var accumulators = new long[hd];
        for (int t = 0; t < _tokens; t++)
        {
            int pos = position + t; // causal: token t sees positions 0..pos
            for (int h = 0; h < _c.NumAttentionHeads; h++)
            {
                int kvHead = h / _c.GroupSize; // HF repeat_kv: query head h reads kv head h / group
                DyadicQuantization.QuantizeRow(_q.AsSpan(t * qDim + h * hd, hd), queryCodes, out int mq, out int eq);
                var scores = _scores.AsSpan(0, pos + 1);
                for (int j = 0; j <= pos; j++)
                {
                    var key = _keys.Key(layer, j).Slice(kvHead * hd, hd);
                    var keyScale = _keyScales.Key(layer, j);
                    long dot = 0;
                    for (int i = 0; i < hd; i++) dot += queryCodes[i] * key[i];
                    scores[j] = IntegerAttention.Score(dot, mq, eq, keyScale[2 * kvHead], keyScale[2 * kvHead + 1], scale.Multiplier, scale.Exponent);
                }
                var probabilities = _probabilities.AsSpan(0, pos + 1);
                IntegerExp.Softmax(scores, IntegerAttention.ScoreFracBits, _exps.AsSpan(0, pos + 1), probabilities);
                Array.Clear(accumulators);
                for (int j = 0; j <= pos; j++)
                {
                    if (probabilities[j] == 0) continue; // adds exactly nothing
                    var value = _values.Key(layer, j).Slice(kvHead * hd, hd);
                    var valueScale = _valueScales.Key(layer, j);
                    int mv = valueScale[2 * kvHead], ev = valueScale[2 * kvHead + 1];
                    for (int i = 0; i < hd; i++) accumulators[i] += IntegerAttention.ValueTerm(probabilities[j], value[i], mv, ev);
                }
                var output = _attention.AsSpan(t * qDim + h * hd, hd);
                for (int i = 0; i < hd; i++) output[i] = IntegerAttention.Output(accumulators[i]);
            }
        }
    }

    void ILlamaOps.OutputProjection(int layer)
    {
        var w = _model.Weights.Layers[layer];
        Linear(w.O, w.OBias, _attention, _projected);
    }

    void ILlamaOps.AddResidual(int layer, LayerWeight block)
    {
        for (int i = 0; i < _x.Length; i++) _x[i] = DyadicQuantization.SaturatingAdd(_x[i], _projected[i]);
    }

    void ILlamaOps.GateUpSwiGlu(int layer)
    {
        var w = _model.Weights.Layers[layer];
        Linear(w.Gate, null, _xb, _gate);
        Linear(w.Up, null, _xb, _up);
        for (int i = 0; i < _gate.Length; i++) _gate[i] = IntegerExp.SwiGlu(_gate[i], _up[i]);
    }

    void ILlamaOps.DownProjection(int layer) => Linear(_model.Weights.Layers[layer].Down, null, _gate, _projected);

    void ILlamaOps.FinalNormAndHead()
    {
        int d = _c.HiddenSize;
        Norm(_x.AsSpan((_tokens - 1) * d, d), _model.Weights.FinalNorm, _xb.AsSpan(0, d));
        var logits = new int[_c.VocabSize];
        LinearRow(_model.Weights.LmHead, null, _xb.AsSpan(0, d), logits);
        LastRawLogits = logits;
    }

    /// <summary>y[t] = requantise(int8(x[t]) . W^T) (+ bias) for every token of the step.</summary>
    private void Linear(Int8Matrix w, FixedVector? bias, int[] input, int[] output)
    {
        for (int t = 0; t < _tokens; t++)
            LinearRow(w, bias, input.AsSpan(t * w.Cols, w.Cols), output.AsSpan(t * w.Rows, w.Rows));
    }

    /// <summary>
    /// One token through an int8 linear (DI-MatMul): dynamic per-token int8 codes of the input, exact int32
    /// accumulation of code products per output row, the dyadic requantisation to 2^-16, then the int32 bias.
    /// </summary>
    private void LinearRow(Int8Matrix w, FixedVector? bias, ReadOnlySpan<int> input, Span<int> output)
    {
        var codes = _codes.AsSpan(0, w.Cols);
        DyadicQuantization.QuantizeRow(input, codes, out int mx, out int ex);
        for (int r = 0; r < w.Rows; r++)
        {
            var row = w.Codes.AsSpan(r * w.Cols, w.Cols);
            int accumulator = 0;
            for (int j = 0; j < row.Length; j++) accumulator += row[j] * codes[j];
            int y = DyadicQuantization.Requantize(accumulator, mx, ex, w.Multipliers[r], w.Exponents[r]);
            output[r] = bias is null ? y : DyadicQuantization.SaturatingAdd(y, bias.Codes[r]);
        }
    }

    private int[] Buffer(StepBuffer buffer) => buffer switch
    {
        StepBuffer.Hidden => _x,
        StepBuffer.Normed => _xb,
        StepBuffer.Q => _q,
        StepBuffer.K => _k,
        StepBuffer.V => _v,
        StepBuffer.Attention => _attention,
        StepBuffer.SwiGlu => _gate,
        StepBuffer.Projected => _projected,
        StepBuffer.Logits => LastRawLogits,
        _ => throw new ArgumentOutOfRangeException(nameof(buffer)),
    };

    /// <summary>A step buffer's raw int32 values (2^-16): what the bit-exactness tests compare.</summary>
    public void ReadRaw(StepBuffer buffer, Span<int> destination) => Buffer(buffer).AsSpan(0, destination.Length).CopyTo(destination);

    /// <summary>Sets a step buffer from raw int32 values (2^-16).</summary>
    public void WriteRaw(StepBuffer buffer, ReadOnlySpan<int> values)
    {
        if (buffer == StepBuffer.Logits) LastRawLogits = new int[values.Length];
        values.CopyTo(Buffer(buffer));
    }

    public override void Dispose() { }
}
