using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Oracle;

/// <summary>
/// The ground truth: a Llama forward pass with every compute step in Q16.48 fixed point (int64 values,
/// 128-bit intermediates, round to nearest even once per op). Reads top to bottom like the math.
/// Floating point appears only at the boundary: the config's epsilon and theta are converted once at
/// load, and logits are widened to float64 on the way out. Deterministic for any thread count.
/// </summary>
public sealed class OracleEngine : IInferenceEngine
{
    private sealed record Layer(long[] InputNorm, ExactMatrix Q, ExactMatrix K, ExactMatrix V, ExactMatrix O,
        long[] PostNorm, ExactMatrix Gate, ExactMatrix Up, ExactMatrix Down);

    private readonly LlamaConfig _c;
    private readonly ExactMatrix _embedding;
    private readonly Layer[] _layers;
    private readonly long[] _finalNorm;
    private readonly ExactMatrix _lmHead;
    private readonly RopeTable _rope;
    private readonly long _epsilon;          // rms_norm_eps in Q16.48
    private readonly long _attentionScale;   // 1/sqrt(head_dim) in Q16.48
    private readonly KvCache<long> _cache;
    private readonly int _threads;

    private readonly long[] _x, _xb, _q, _k, _v, _attention, _hb, _hb2, _scores, _probabilities;

    public EngineInfo Info { get; }
    public LlamaConfig Config => _c;
    public int Position { get; private set; }

    /// <summary>Raw Q16.48 logits of the last step that computed logits (for hashing).</summary>
    public long[] LastRawLogits { get; private set; } = [];

    public OracleEngine(LlamaCheckpoint checkpoint, int threads = 1)
    {
        _c = checkpoint.Config;
        _threads = Math.Max(1, threads);
        _embedding = ExactMatrix.Load(checkpoint, checkpoint.Info(LlamaCheckpoint.EmbeddingName));
        _layers = new Layer[_c.NumHiddenLayers];
        for (int l = 0; l < _layers.Length; l++)
        {
            ExactMatrix M(LayerWeight w) => ExactMatrix.Load(checkpoint, checkpoint.Layer(l, w));
            long[] V(LayerWeight w) => checkpoint.ReadQ48(checkpoint.Layer(l, w));
            _layers[l] = new Layer(V(LayerWeight.InputNorm), M(LayerWeight.Q), M(LayerWeight.K), M(LayerWeight.V), M(LayerWeight.O),
                V(LayerWeight.PostAttentionNorm), M(LayerWeight.Gate), M(LayerWeight.Up), M(LayerWeight.Down));
        }
        _finalNorm = checkpoint.ReadQ48(checkpoint.Info(LlamaCheckpoint.FinalNormName));
        _lmHead = checkpoint.LmHead.Name == LlamaCheckpoint.EmbeddingName ? _embedding : ExactMatrix.Load(checkpoint, checkpoint.LmHead);

        // Boundary: the two real-valued hyper-parameters enter the integer world here, once.
        _epsilon = Q48.FromDouble(_c.RmsNormEps);
        _rope = new RopeTable(_c.HeadDim, _c.MaxPositionEmbeddings, _c.RopeTheta);
        _attentionScale = Q48.Rsqrt(Q48.FromInt(_c.HeadDim));

        _cache = new KvCache<long>(_c.NumHiddenLayers, _c.KvDim);
        _x = new long[_c.HiddenSize]; _xb = new long[_c.HiddenSize]; _q = new long[_c.HiddenSize];
        _k = new long[_c.KvDim]; _v = new long[_c.KvDim]; _attention = new long[_c.HiddenSize];
        _hb = new long[_c.IntermediateSize]; _hb2 = new long[_c.IntermediateSize];
        _scores = new long[_c.MaxPositionEmbeddings]; _probabilities = new long[_c.MaxPositionEmbeddings];
        Info = new EngineInfo("oracle", "Q16.48", "exact", $"cpu ({_threads} thread{(_threads == 1 ? "" : "s")})",
            new Dictionary<string, string>
            {
                ["weights"] = "checkpoint values converted exactly to Q16.48 (RNE below 2^-48)",
                ["matmul"] = "int64 x int64 -> exact int128 sum, one RNE rounding per output",
                ["nonlinear"] = "integer rsqrt/exp/sigmoid/sin/cos within a few Q16.48 ulp",
            });
    }

    public void Reset() => Position = 0;

    public double[] Prefill(ReadOnlySpan<int> tokens)
    {
        EngineGuards.CheckTokens(_c, tokens, Position);
        if (tokens.Length == 0) throw new ArgumentException("prefill needs at least one token", nameof(tokens));
        for (int i = 0; i < tokens.Length - 1; i++) Forward(tokens[i], computeLogits: false);
        Forward(tokens[^1], computeLogits: true);
        return ToDoubles(LastRawLogits);
    }

    public double[] Decode(int token)
    {
        EngineGuards.CheckTokens(_c, [token], Position);
        Forward(token, computeLogits: true);
        return ToDoubles(LastRawLogits);
    }

    /// <summary>Decode returning the raw Q16.48 logits (no float64 conversion).</summary>
    public long[] DecodeRaw(int token)
    {
        EngineGuards.CheckTokens(_c, [token], Position);
        Forward(token, computeLogits: true);
        return LastRawLogits;
    }

    private static double[] ToDoubles(long[] raw)
    {
        var result = new double[raw.Length];
        for (int i = 0; i < raw.Length; i++) result[i] = Q48.ToDouble(raw[i]);
        return result;
    }

    private void Forward(int token, bool computeLogits)
    {
        int pos = Position;
        int d = _c.HiddenSize, hd = _c.HeadDim;
        _cache.EnsureCapacity(pos + 1);
        _embedding.ReadRow(token, _x);
        Span<ulong> accLo = stackalloc ulong[hd];
        Span<long> accHi = stackalloc long[hd];

        for (int l = 0; l < _layers.Length; l++)
        {
            var w = _layers[l];
            // Attention block.
            RmsNorm(_xb, _x, w.InputNorm);
            w.Q.MatVec(_q, _xb, _threads); w.K.MatVec(_k, _xb, _threads); w.V.MatVec(_v, _xb, _threads);
            for (int h = 0; h < _c.NumAttentionHeads; h++) Rope(_q.AsSpan(h * hd, hd), pos);
            for (int h = 0; h < _c.NumKeyValueHeads; h++) Rope(_k.AsSpan(h * hd, hd), pos);
            _k.CopyTo(_cache.Key(l, pos)); _v.CopyTo(_cache.Value(l, pos));

            for (int h = 0; h < _c.NumAttentionHeads; h++)
            {
                int kvHead = h / _c.GroupSize; // HF repeat_kv: query head h reads kv head h / group
                var q = _q.AsSpan(h * hd, hd);
                var scores = _scores.AsSpan(0, pos + 1);
                for (int t = 0; t <= pos; t++)
                    scores[t] = Q48.Mul(Q48.RoundShift(Dot(q, _cache.Key(l, t).Slice(kvHead * hd, hd)), Q48.FracBits), _attentionScale);
                var p = _probabilities.AsSpan(0, pos + 1);
                Q48.Softmax(scores, p);
                // output = sum_t p[t] * v_t, each element one exact 128-bit sum rounded once.
                accLo.Clear(); accHi.Clear();
                for (int t = 0; t <= pos; t++)
                {
                    var v = _cache.Value(l, t).Slice(kvHead * hd, hd);
                    for (int i = 0; i < hd; i++) ExactMatrix.Accumulate(ref accHi[i], ref accLo[i], p[t], v[i]);
                }
                var output = _attention.AsSpan(h * hd, hd);
                for (int i = 0; i < hd; i++) output[i] = Q48.RoundShift(new Int128((ulong)accHi[i], accLo[i]), Q48.FracBits);
            }
            w.O.MatVec(_xb, _attention, _threads);
            AddResidual(_x, _xb, l, "attention");

            // SwiGLU MLP block.
            RmsNorm(_xb, _x, w.PostNorm);
            w.Gate.MatVec(_hb, _xb, _threads); w.Up.MatVec(_hb2, _xb, _threads);
            for (int i = 0; i < _hb.Length; i++) _hb[i] = Q48.Mul(Q48.Silu(_hb[i]), _hb2[i]);
            w.Down.MatVec(_xb, _hb, _threads);
            AddResidual(_x, _xb, l, "mlp");
        }
        Position = pos + 1;
        if (!computeLogits) return;
        RmsNorm(_xb, _x, _finalNorm);
        var logits = new long[_c.VocabSize];
        _lmHead.MatVec(logits, _xb, _threads);
        LastRawLogits = logits;
    }

    private static void AddResidual(long[] x, long[] delta, int layer, string block)
    {
        for (int i = 0; i < x.Length; i++)
        {
            long sum = x[i] + delta[i];
            // Signed overflow iff both operands share a sign that the sum does not.
            if (((x[i] ^ sum) & (delta[i] ^ sum)) < 0)
                throw new Q48OverflowException($"layer {layer} {block} residual: hidden state element {i} left the Q16.48 range");
            x[i] = sum;
        }
    }

    /// <summary>RMSNorm: w * (x * rsqrt(mean(x^2) + eps)); mean from the exact 128-bit sum of squares, rounded once.</summary>
    private void RmsNorm(long[] output, long[] x, long[] weight)
    {
        ulong lo = 0; long hi = 0;
        for (int i = 0; i < x.Length; i++) ExactMatrix.Accumulate(ref hi, ref lo, x[i], x[i]);
        long mean = DivideRound(new Int128((ulong)hi, lo), (Int128)x.Length << Q48.FracBits);
        long inverse = Q48.Rsqrt(mean + _epsilon);
        for (int i = 0; i < x.Length; i++) output[i] = Q48.Mul(weight[i], Q48.Mul(x[i], inverse));
    }

    /// <summary>numerator / denominator (denominator &gt; 0), rounded to nearest even.</summary>
    internal static long DivideRound(Int128 numerator, Int128 denominator)
    {
        var (q, r) = Int128.DivRem(numerator, denominator);
        if (r < 0) { q -= 1; r += denominator; } // floor division
        Int128 twice = r << 1;
        if (twice > denominator || (twice == denominator && (q & 1) != 0)) q += 1;
        if (q > long.MaxValue || q < long.MinValue) throw new Q48OverflowException($"division result {q} exceeds the Q16.48 range");
        return (long)q;
    }

    /// <summary>HF rotate-half RoPE on one head: pairs (i, i + head_dim/2), each output one exact 128-bit sum rounded once.</summary>
    private void Rope(Span<long> head, int pos)
    {
        int half = head.Length / 2;
        var cos = _rope.Cos(pos); var sin = _rope.Sin(pos);
        for (int i = 0; i < half; i++)
        {
            long a = head[i], b = head[i + half];
            head[i] = Q48.RoundShift((Int128)a * cos[i] - (Int128)b * sin[i], Q48.FracBits);
            head[i + half] = Q48.RoundShift((Int128)b * cos[i] + (Int128)a * sin[i], Q48.FracBits);
        }
    }

    private static Int128 Dot(ReadOnlySpan<long> a, ReadOnlySpan<long> b)
    {
        ulong lo = 0; long hi = 0;
        for (int i = 0; i < a.Length; i++) ExactMatrix.Accumulate(ref hi, ref lo, a[i], b[i]);
        return new Int128((ulong)hi, lo);
    }

    public void Dispose() { }
}
