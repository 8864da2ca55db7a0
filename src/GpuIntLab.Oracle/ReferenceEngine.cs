using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Oracle;

/// <summary>
/// The float64 reference engine: the same Llama forward in plain IEEE double, written independently of
/// the Q16.48 oracle so that a convention error in one shows up as a disagreement with the other.
/// Weights are widened exactly from the checkpoint; libm exp/sin/cos/sqrt; RoPE angles
/// pos * inv_freq in float64 (FloatRope, llama3-rewritten where configured) (not HF's float32 inv_freq), as the conformance reference does.
/// </summary>
public sealed class ReferenceEngine : LlamaEngine, ILlamaOps
{
    private readonly LlamaConfig _c;
    private readonly double[] _embedding;
    private readonly ModelWeights<double[], double[]> _weights;
    private readonly FloatRope _rope;
    private readonly KvCache<double> _cache;
    private readonly int _threads;

    // Scratch buffers of one step of T tokens, [T, width].
    private int _tokens;
    private double[] _x = [], _xb = [], _q = [], _k = [], _v = [], _attention = [], _hb = [], _hb2 = [], _projected = [], _scores = [], _logits = [];

    public override EngineInfo Info { get; }
    public override ILlamaOps Ops => this;

    /// <summary>
    /// Called with each linear layer's weight tensor name and its input vector before the product
    /// (calibration hook: SmoothQuant and the INT4 calibrations gather activations through it).
    /// </summary>
    public Action<string, ReadOnlySpan<double>>? ActivationObserver { get; set; }

    public ReferenceEngine(LlamaCheckpoint checkpoint, int threads = 1) : base(checkpoint.Config)
    {
        _c = checkpoint.Config;
        _threads = Math.Max(1, threads);
        _embedding = checkpoint.ReadDouble(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
        _weights = LlamaWeights.Load(checkpoint, t => t.Name == LlamaCheckpoint.EmbeddingName ? _embedding : checkpoint.ReadDouble(t), checkpoint.ReadDouble);
        _rope = new FloatRope(_c.HeadDim, _c.MaxPositionEmbeddings, _c.RopeTheta, _c.RopeScaling);
        _cache = new KvCache<double>(_c.NumHiddenLayers, _c.KvDim);
        Info = new EngineInfo("reference", "float64", "exact", $"cpu ({_threads} thread{(_threads == 1 ? "" : "s")})",
            new Dictionary<string, string>
            {
                ["weights"] = "checkpoint values widened exactly to float64",
                ["matmul"] = "float64 multiply-add, sequential sum per row",
                ["nonlinear"] = "libm exp/sqrt/sin/cos in float64",
            });
    }

    protected override double[] ReadLogits() => (double[])_logits.Clone();

    void ILlamaOps.Begin(int tokens, int position)
    {
        _cache.EnsureCapacity(position + tokens);
        if (_tokens == tokens) return;
        _tokens = tokens;
        int d = _c.HiddenSize;
        _x = new double[tokens * d]; _xb = new double[tokens * d]; _projected = new double[tokens * d];
        _q = new double[tokens * _c.QDim]; _attention = new double[tokens * _c.QDim];
        _k = new double[tokens * _c.KvDim]; _v = new double[tokens * _c.KvDim];
        _hb = new double[tokens * _c.IntermediateSize]; _hb2 = new double[tokens * _c.IntermediateSize];
    }

    void ILlamaOps.Embed(ReadOnlySpan<int> tokens)
    {
        int d = _c.HiddenSize;
        for (int t = 0; t < tokens.Length; t++) _embedding.AsSpan(tokens[t] * d, d).CopyTo(_x.AsSpan(t * d, d));
    }

    void ILlamaOps.RmsNorm(int layer, LayerWeight norm)
    {
        var w = _weights.Layers[layer];
        int d = _c.HiddenSize;
        for (int t = 0; t < _tokens; t++) RmsNorm(_xb.AsSpan(t * d, d), _x.AsSpan(t * d, d), norm == LayerWeight.InputNorm ? w.InputNorm : w.PostNorm);
    }

    void ILlamaOps.QkvProjection(int layer)
    {
        var w = _weights.Layers[layer];
        Linear(layer, LayerWeight.Q, w.Q, w.QBias, _xb, _q);
        Linear(layer, LayerWeight.K, w.K, w.KBias, _xb, _k);
        Linear(layer, LayerWeight.V, w.V, w.VBias, _xb, _v);
    }

    void ILlamaOps.QkNorm(int layer)
    {
        var w = _weights.Layers[layer];
        int hd = _c.HeadDim;
        for (int i = 0; i < _q.Length; i += hd) RmsNorm(_q.AsSpan(i, hd), _q.AsSpan(i, hd), w.QNorm!);
        for (int i = 0; i < _k.Length; i += hd) RmsNorm(_k.AsSpan(i, hd), _k.AsSpan(i, hd), w.KNorm!);
    }

    void ILlamaOps.RopeAndStore(int layer, int position)
    {
        int hd = _c.HeadDim, qDim = _c.QDim, kvDim = _c.KvDim;
        for (int t = 0; t < _tokens; t++)
        {
            for (int h = 0; h < _c.NumAttentionHeads; h++) Rope(_q.AsSpan(t * qDim + h * hd, hd), position + t);
            for (int h = 0; h < _c.NumKeyValueHeads; h++) Rope(_k.AsSpan(t * kvDim + h * hd, hd), position + t);
            _k.AsSpan(t * kvDim, kvDim).CopyTo(_cache.Key(layer, position + t));
            _v.AsSpan(t * kvDim, kvDim).CopyTo(_cache.Value(layer, position + t));
        }
    }

    void ILlamaOps.Attention(int layer, int position)
    {
        int hd = _c.HeadDim, qDim = _c.QDim;
        double scale = 1.0 / Math.Sqrt(hd);
        if (_scores.Length < position + _tokens) _scores = new double[Math.Max(position + _tokens, 2 * _scores.Length)];
        for (int t = 0; t < _tokens; t++)
        {
            int pos = position + t; // causal: token t sees positions 0..pos
            for (int h = 0; h < _c.NumAttentionHeads; h++)
            {
                int kvHead = h / _c.GroupSize; // HF repeat_kv: query head h reads kv head h / group
                var q = _q.AsSpan(t * qDim + h * hd, hd);
                var scores = _scores.AsSpan(0, pos + 1);
                for (int j = 0; j <= pos; j++) scores[j] = Dot(q, _cache.Key(layer, j).Slice(kvHead * hd, hd)) * scale;
                Softmax(scores);
                var output = _attention.AsSpan(t * qDim + h * hd, hd);
                output.Clear();
                for (int j = 0; j <= pos; j++)
                {
                    var v = _cache.Value(layer, j).Slice(kvHead * hd, hd);
                    for (int i = 0; i < hd; i++) output[i] += scores[j] * v[i];
                }
            }
        }
    }

    void ILlamaOps.OutputProjection(int layer)
    {
        var w = _weights.Layers[layer];
        Linear(layer, LayerWeight.O, w.O, w.OBias, _attention, _projected);
    }

    void ILlamaOps.AddResidual(int layer, LayerWeight block)
    {
        for (int i = 0; i < _x.Length; i++) _x[i] += _projected[i];
    }

    void ILlamaOps.GateUpSwiGlu(int layer)
    {
        var w = _weights.Layers[layer];
        Linear(layer, LayerWeight.Gate, w.Gate, null, _xb, _hb);
        Linear(layer, LayerWeight.Up, w.Up, null, _xb, _hb2);
        for (int i = 0; i < _hb.Length; i++) _hb[i] = _hb[i] / (1.0 + Math.Exp(-_hb[i])) * _hb2[i];
    }

    void ILlamaOps.DownProjection(int layer) => Linear(layer, LayerWeight.Down, _weights.Layers[layer].Down, null, _hb, _projected);

    void ILlamaOps.FinalNormAndHead()
    {
        int d = _c.HiddenSize;
        RmsNorm(_xb.AsSpan(0, d), _x.AsSpan((_tokens - 1) * d, d), _weights.FinalNorm);
        ActivationObserver?.Invoke(LlamaCheckpoint.LmHeadName, _xb.AsSpan(0, d));
        _logits = new double[_c.VocabSize];
        MatVec(_logits, _weights.LmHead, _xb.AsSpan(0, d));
    }

    private double[] Buffer(StepBuffer buffer) => buffer switch
    {
        StepBuffer.Hidden => _x,
        StepBuffer.Normed => _xb,
        StepBuffer.Q => _q,
        StepBuffer.K => _k,
        StepBuffer.V => _v,
        StepBuffer.Attention => _attention,
        StepBuffer.SwiGlu => _hb,
        StepBuffer.Projected => _projected,
        StepBuffer.Logits => _logits,
        _ => throw new ArgumentOutOfRangeException(nameof(buffer)),
    };

    void ILlamaOps.Read(StepBuffer buffer, Span<double> destination) => Buffer(buffer).AsSpan(0, destination.Length).CopyTo(destination);

    void ILlamaOps.Write(StepBuffer buffer, ReadOnlySpan<double> values)
    {
        if (buffer == StepBuffer.Logits) _logits = new double[values.Length];
        values.CopyTo(Buffer(buffer));
    }

    /// <summary>y[t] = W x[t] (+ bias) for every token of the step; the calibration hook sees each input row.</summary>
    private void Linear(int layer, LayerWeight weight, double[] w, double[]? bias, double[] x, double[] y)
    {
        int cols = x.Length / _tokens, rows = y.Length / _tokens;
        for (int t = 0; t < _tokens; t++)
        {
            var input = x.AsSpan(t * cols, cols);
            ActivationObserver?.Invoke(LlamaCheckpoint.LayerTensorName(layer, weight), input);
            var output = y.AsSpan(t * rows, rows);
            MatVec(output, w, input);
            if (bias != null) for (int r = 0; r < rows; r++) output[r] += bias[r];
        }
    }

    private void RmsNorm(Span<double> output, ReadOnlySpan<double> x, ReadOnlySpan<double> weight)
    {
        double ss = 0;
        for (int i = 0; i < x.Length; i++) ss += x[i] * x[i];
        double inv = 1.0 / Math.Sqrt(ss / x.Length + _c.RmsNormEps);
        for (int i = 0; i < x.Length; i++) output[i] = weight[i] * (x[i] * inv);
    }

    /// <summary>HF rotate-half RoPE: pairs (i, i + head_dim/2).</summary>
    private void Rope(Span<double> head, int pos)
    {
        int half = head.Length / 2;
        var cosines = _rope.Cos(pos);
        var sines = _rope.Sin(pos);
        for (int i = 0; i < half; i++)
        {
            double cos = cosines[i], sin = sines[i];
            double a = head[i], b = head[i + half];
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }

    private static void Softmax(Span<double> x)
    {
        double max = double.NegativeInfinity;
        foreach (var v in x) max = Math.Max(max, v);
        double sum = 0;
        for (int i = 0; i < x.Length; i++) { x[i] = Math.Exp(x[i] - max); sum += x[i]; }
        for (int i = 0; i < x.Length; i++) x[i] /= sum;
    }

    private static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    /// <summary>output[r] = W[r, :] . x for W stored [rows, cols] row-major; rows split across threads.</summary>
    private void MatVec(Span<double> output, double[] w, ReadOnlySpan<double> x)
    {
        int rows = output.Length, cols = x.Length;
        if (_threads == 1 || rows < 64)
        {
            for (int r = 0; r < rows; r++) output[r] = Dot(w.AsSpan(r * cols, cols), x);
            return;
        }
        var result = new double[rows];
        var input = x.ToArray();
        Parallel.For(0, _threads, new ParallelOptions { MaxDegreeOfParallelism = _threads }, part =>
        {
            int start = (int)((long)rows * part / _threads), end = (int)((long)rows * (part + 1) / _threads);
            for (int r = start; r < end; r++) result[r] = Dot(w.AsSpan(r * cols, cols), input);
        });
        result.CopyTo(output);
    }


    public override void Dispose() { }
}
