using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Oracle;

/// <summary>
/// The float64 reference engine: the same Llama forward in plain IEEE double, written independently of
/// the Q16.48 oracle so that a convention error in one shows up as a disagreement with the other.
/// Weights are widened exactly from the checkpoint; libm exp/sin/cos/sqrt; RoPE angles
/// pos * theta^(-2i/head_dim) in float64 (not HF's float32 inv_freq), as the conformance reference does.
/// </summary>
public sealed class ReferenceEngine : IInferenceEngine
{
    private sealed record Layer(double[] InputNorm, double[] Q, double[] K, double[] V, double[] O,
        double[] PostNorm, double[] Gate, double[] Up, double[] Down);

    private readonly LlamaConfig _c;
    private readonly double[] _embedding;
    private readonly Layer[] _layers;
    private readonly double[] _finalNorm;
    private readonly double[] _lmHead;
    private readonly double[] _invFrequency;
    private readonly KvCache<double> _cache;
    private readonly int _threads;

    // Scratch buffers of one forward step.
    private readonly double[] _x, _xb, _q, _k, _v, _attention, _hb, _hb2, _scores;

    public EngineInfo Info { get; }
    public LlamaConfig Config => _c;

    /// <summary>
    /// Called with each linear layer's weight tensor name and its input vector before the product
    /// (calibration hook: SmoothQuant gathers per-channel activation maxima through it).
    /// </summary>
    public Action<string, ReadOnlySpan<double>>? ActivationObserver { get; set; }
    public int Position { get; private set; }

    public ReferenceEngine(LlamaCheckpoint checkpoint, int threads = 1)
    {
        _c = checkpoint.Config;
        _threads = Math.Max(1, threads);
        _embedding = checkpoint.ReadDouble(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
        _layers = new Layer[_c.NumHiddenLayers];
        for (int l = 0; l < _layers.Length; l++)
        {
            double[] W(LayerWeight w) => checkpoint.ReadDouble(checkpoint.Layer(l, w));
            _layers[l] = new Layer(W(LayerWeight.InputNorm), W(LayerWeight.Q), W(LayerWeight.K), W(LayerWeight.V), W(LayerWeight.O),
                W(LayerWeight.PostAttentionNorm), W(LayerWeight.Gate), W(LayerWeight.Up), W(LayerWeight.Down));
        }
        _finalNorm = checkpoint.ReadDouble(checkpoint.Info(LlamaCheckpoint.FinalNormName));
        _lmHead = checkpoint.LmHead.Name == LlamaCheckpoint.EmbeddingName ? _embedding : checkpoint.ReadDouble(checkpoint.LmHead);

        int half = _c.HeadDim / 2;
        _invFrequency = new double[half];
        for (int i = 0; i < half; i++) _invFrequency[i] = Math.Pow(_c.RopeTheta, -2.0 * i / _c.HeadDim);

        _cache = new KvCache<double>(_c.NumHiddenLayers, _c.KvDim);
        _x = new double[_c.HiddenSize]; _xb = new double[_c.HiddenSize]; _q = new double[_c.HiddenSize];
        _k = new double[_c.KvDim]; _v = new double[_c.KvDim]; _attention = new double[_c.HiddenSize];
        _hb = new double[_c.IntermediateSize]; _hb2 = new double[_c.IntermediateSize];
        _scores = new double[_c.MaxPositionEmbeddings];
        Info = new EngineInfo("reference", "float64", "exact", $"cpu ({_threads} thread{(_threads == 1 ? "" : "s")})",
            new Dictionary<string, string>
            {
                ["weights"] = "checkpoint values widened exactly to float64",
                ["matmul"] = "float64 multiply-add, sequential sum per row",
                ["nonlinear"] = "libm exp/sqrt/sin/cos in float64",
            });
    }

    public void Reset() => Position = 0;

    public double[] Prefill(ReadOnlySpan<int> tokens) => StepwisePrefill.Run(_c, tokens, Position, Forward);

    public double[] Decode(int token)
    {
        EngineGuards.CheckTokens(_c, [token], Position);
        return Forward(token, computeLogits: true)!;
    }

    private double[]? Forward(int token, bool computeLogits)
    {
        int pos = Position;
        int d = _c.HiddenSize, hd = _c.HeadDim, kvDim = _c.KvDim;
        _cache.EnsureCapacity(pos + 1);
        _embedding.AsSpan(token * d, d).CopyTo(_x);

        for (int l = 0; l < _layers.Length; l++)
        {
            var w = _layers[l];
            // Attention block.
            RmsNorm(_xb, _x, w.InputNorm);
            Observe(l, LayerWeight.Q, _xb); Observe(l, LayerWeight.K, _xb); Observe(l, LayerWeight.V, _xb);
            MatVec(_q, w.Q, _xb); MatVec(_k, w.K, _xb); MatVec(_v, w.V, _xb);
            for (int h = 0; h < _c.NumAttentionHeads; h++) Rope(_q.AsSpan(h * hd, hd), pos);
            for (int h = 0; h < _c.NumKeyValueHeads; h++) Rope(_k.AsSpan(h * hd, hd), pos);
            _k.CopyTo(_cache.Key(l, pos)); _v.CopyTo(_cache.Value(l, pos));

            double scale = 1.0 / Math.Sqrt(hd);
            for (int h = 0; h < _c.NumAttentionHeads; h++)
            {
                int kvHead = h / _c.GroupSize; // HF repeat_kv: query head h reads kv head h / group
                var q = _q.AsSpan(h * hd, hd);
                var scores = _scores.AsSpan(0, pos + 1);
                for (int t = 0; t <= pos; t++) scores[t] = Dot(q, _cache.Key(l, t).Slice(kvHead * hd, hd)) * scale;
                Softmax(scores);
                var output = _attention.AsSpan(h * hd, hd);
                output.Clear();
                for (int t = 0; t <= pos; t++)
                {
                    var v = _cache.Value(l, t).Slice(kvHead * hd, hd);
                    for (int i = 0; i < hd; i++) output[i] += scores[t] * v[i];
                }
            }
            Observe(l, LayerWeight.O, _attention);
            MatVec(_xb, w.O, _attention);
            for (int i = 0; i < d; i++) _x[i] += _xb[i];

            // SwiGLU MLP block.
            RmsNorm(_xb, _x, w.PostNorm);
            Observe(l, LayerWeight.Gate, _xb); Observe(l, LayerWeight.Up, _xb);
            MatVec(_hb, w.Gate, _xb); MatVec(_hb2, w.Up, _xb);
            for (int i = 0; i < _hb.Length; i++) _hb[i] = _hb[i] / (1.0 + Math.Exp(-_hb[i])) * _hb2[i];
            Observe(l, LayerWeight.Down, _hb);
            MatVec(_xb, w.Down, _hb);
            for (int i = 0; i < d; i++) _x[i] += _xb[i];
        }
        Position = pos + 1;
        if (!computeLogits) return null;
        RmsNorm(_xb, _x, _finalNorm);
        ActivationObserver?.Invoke(LlamaCheckpoint.LmHeadName, _xb);
        var logits = new double[_c.VocabSize];
        MatVec(logits, _lmHead, _xb);
        return logits;
    }

    private void Observe(int layer, LayerWeight weight, double[] input) =>
        ActivationObserver?.Invoke(LlamaCheckpoint.LayerTensorName(layer, weight), input);

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
        for (int i = 0; i < half; i++)
        {
            double angle = pos * _invFrequency[i];
            double cos = Math.Cos(angle), sin = Math.Sin(angle);
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
    private void MatVec(Span<double> output, double[] w, double[] x)
    {
        int rows = output.Length, cols = x.Length;
        if (_threads == 1 || rows < 64)
        {
            for (int r = 0; r < rows; r++) output[r] = Dot(w.AsSpan(r * cols, cols), x);
            return;
        }
        var result = new double[rows];
        Parallel.For(0, _threads, new ParallelOptions { MaxDegreeOfParallelism = _threads }, part =>
        {
            int start = (int)((long)rows * part / _threads), end = (int)((long)rows * (part + 1) / _threads);
            for (int r = start; r < end; r++) result[r] = Dot(w.AsSpan(r * cols, cols), x);
        });
        result.CopyTo(output);
    }


    public void Dispose() { }
}
