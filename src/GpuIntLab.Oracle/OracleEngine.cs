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


    public EngineInfo Info { get; }
    public LlamaConfig Config => _c;
    public int Position { get; private set; }

    /// <summary>Raw Q16.48 logits of the last step that computed logits (for hashing).</summary>
    public long[] LastRawLogits { get; private set; } = [];

    public OracleEngine(LlamaCheckpoint checkpoint, int threads = 1)
    {
        _c = checkpoint.Config;
        _threads = Math.Max(1, threads);
        _embedding = ExactMatrix.Load(checkpoint, checkpoint.Info(LlamaCheckpoint.EmbeddingName), forProducts: checkpoint.LmHead.Name == LlamaCheckpoint.EmbeddingName);
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
        // The prompt goes through in chunks: every weight row is read once per chunk, not once per token.
        // Exact sums make the result bit-identical to feeding the tokens one at a time.
        for (int start = 0; start < tokens.Length; start += PrefillChunk)
        {
            int count = Math.Min(PrefillChunk, tokens.Length - start);
            Forward(tokens.Slice(start, count), computeLogits: start + count == tokens.Length);
        }
        return ToDoubles(LastRawLogits);
    }

    /// <summary>Tokens per prefill chunk (bounds the scratch memory: chunk x intermediate size int64s).</summary>
    public const int PrefillChunk = 64;

    public double[] Decode(int token) => ToDoubles(DecodeRaw(token));

    /// <summary>Decode returning the raw Q16.48 logits (no float64 conversion).</summary>
    public long[] DecodeRaw(int token)
    {
        EngineGuards.CheckTokens(_c, [token], Position);
        Forward([token], computeLogits: true);
        return LastRawLogits;
    }

    private static double[] ToDoubles(long[] raw)
    {
        var result = new double[raw.Length];
        for (int i = 0; i < raw.Length; i++) result[i] = Q48.ToDouble(raw[i]);
        return result;
    }

    /// <summary>Activations of a run of B tokens, row-major [B, width]; reused across steps of the same B.</summary>
    private sealed class Scratch(LlamaConfig c, int tokens)
    {
        public readonly int Tokens = tokens;
        public readonly long[] X = new long[tokens * c.HiddenSize], Xb = new long[tokens * c.HiddenSize];
        public readonly long[] Q = new long[tokens * c.HiddenSize], Attention = new long[tokens * c.HiddenSize];
        public readonly long[] K = new long[tokens * c.KvDim], V = new long[tokens * c.KvDim];
        public readonly long[] Hb = new long[tokens * c.IntermediateSize], Hb2 = new long[tokens * c.IntermediateSize];
    }

    private Scratch? _scratch;
    private long[] _attentionBuffer = new long[256]; // scores and probabilities of one head, grown by doubling
    [ThreadStatic] private static long[]? t_attention; // the same for each thread of a parallel attention pass

    /// <summary>Runs B tokens at positions Position..Position+B-1 through the model (causal), appending to the KV cache.</summary>
    private unsafe void Forward(ReadOnlySpan<int> tokens, bool computeLogits)
    {
        int pos0 = Position, n = tokens.Length;
        int d = _c.HiddenSize, hd = _c.HeadDim, kvDim = _c.KvDim;
        _cache.EnsureCapacity(pos0 + n);
        var s = _scratch is { } cached && cached.Tokens == n ? cached : (_scratch = new Scratch(_c, n));
        for (int t = 0; t < n; t++) _embedding.ReadRow(tokens[t], s.X.AsSpan(t * d, d));

        for (int l = 0; l < _layers.Length; l++)
        {
            var w = _layers[l];
            // Attention block.
            for (int t = 0; t < n; t++) RmsNorm(s.Xb.AsSpan(t * d, d), s.X.AsSpan(t * d, d), w.InputNorm);
            fixed (long* q = s.Q, k = s.K, v = s.V)
                ExactMatrix.MatMulShared([w.Q, w.K, w.V], [(nint)q, (nint)k, (nint)v], s.Xb, n, _threads);
            for (int t = 0; t < n; t++)
            {
                for (int h = 0; h < _c.NumAttentionHeads; h++) Rope(s.Q.AsSpan(t * d + h * hd, hd), pos0 + t);
                for (int h = 0; h < _c.NumKeyValueHeads; h++) Rope(s.K.AsSpan(t * kvDim + h * hd, hd), pos0 + t);
                s.K.AsSpan(t * kvDim, kvDim).CopyTo(_cache.Key(l, pos0 + t));
                s.V.AsSpan(t * kvDim, kvDim).CopyTo(_cache.Value(l, pos0 + t));
            }
            // Every (token, head) pair is independent: split them over threads when the context makes it worth it.
            int pairs = n * _c.NumAttentionHeads;
            long work = (long)pairs * (pos0 + n) * hd;
            if (_threads > 1 && work > 1 << 12)
                WorkerTeam.Shared.Run(pairs, _threads, pair =>
                {
                    if (t_attention == null || t_attention.Length < 2 * (pos0 + n)) t_attention = new long[Math.Max(2 * (pos0 + n), 256)];
                    AttendHead(l, s, pair / _c.NumAttentionHeads, pair % _c.NumAttentionHeads, pos0, t_attention);
                });
            else
            {
                if (_attentionBuffer.Length < 2 * (pos0 + n)) _attentionBuffer = new long[Math.Max(2 * (pos0 + n), 2 * _attentionBuffer.Length)];
                for (int pair = 0; pair < pairs; pair++) AttendHead(l, s, pair / _c.NumAttentionHeads, pair % _c.NumAttentionHeads, pos0, _attentionBuffer);
            }
            fixed (long* xb = s.Xb) w.O.MatMul(xb, s.Attention, n, _threads);
            AddResidual(s.X, s.Xb, l, "attention");

            // SwiGLU MLP block.
            for (int t = 0; t < n; t++) RmsNorm(s.Xb.AsSpan(t * d, d), s.X.AsSpan(t * d, d), w.PostNorm);
            // gate and up in one pass, each part finishing its rows with hb = silu(gate) * up (the costly SiLU rides along).
            int inter = _c.IntermediateSize;
            fixed (long* hb = s.Hb, hb2 = s.Hb2)
                ExactMatrix.MatMulShared([w.Gate, w.Up], [(nint)hb, (nint)hb2], s.Xb, n, _threads, (start, end) =>
                {
                    for (int t = 0; t < n; t++)
                        for (int i = t * inter + start; i < t * inter + end; i++) s.Hb[i] = Q48.Mul(Q48.Silu(s.Hb[i]), s.Hb2[i]);
                });
            fixed (long* xb = s.Xb) w.Down.MatMul(xb, s.Hb, n, _threads);
            AddResidual(s.X, s.Xb, l, "mlp");
        }
        Position = pos0 + n;
        if (!computeLogits) return;
        var last = new long[d];
        RmsNorm(last, s.X.AsSpan((n - 1) * d, d), _finalNorm);
        var logits = new long[_c.VocabSize];
        _lmHead.MatVec(logits, last, _threads);
        LastRawLogits = logits;
    }

    /// <summary>
    /// Causal attention of token t (position pos0 + t) for query head h: scores over the cache, Q16.48 softmax,
    /// and the value sum, each output element one exact 128-bit sum rounded once.
    /// </summary>
    private unsafe void AttendHead(int layer, Scratch s, int t, int h, int pos0, long[] buffer)
    {
        int hd = _c.HeadDim, pos = pos0 + t;
        int kvOffset = h / _c.GroupSize * hd; // HF repeat_kv: query head h reads kv head h / group
        var scores = buffer.AsSpan(0, pos + 1);
        var p = buffer.AsSpan(pos + 1, pos + 1);
        fixed (long* q = &s.Q[t * _c.HiddenSize + h * hd])
            for (int j = 0; j <= pos; j++)
                fixed (long* k = _cache.Key(layer, j))
                    scores[j] = Q48.Mul(Q48.RoundShift(Dot(q, k + kvOffset, hd), Q48.FracBits), _attentionScale);
        Q48.Softmax(scores, p);
        // The value sum of every output element, exact in 128 bits; a zero probability adds nothing and is skipped.
        long* accHi = stackalloc long[hd];
        ulong* accLo = stackalloc ulong[hd];
        new Span<long>(accHi, hd).Clear();
        new Span<ulong>(accLo, hd).Clear();
        for (int j = 0; j <= pos; j++)
        {
            long pj = p[j];
            if (pj == 0) continue;
            fixed (long* v0 = _cache.Value(layer, j))
            {
                long* v = v0 + kvOffset;
                for (int i = 0; i < hd; i++) ExactMatrix.Accumulate(ref accHi[i], ref accLo[i], pj, v[i]);
            }
        }
        var output = s.Attention.AsSpan(t * _c.HiddenSize + h * hd, hd);
        for (int i = 0; i < hd; i++) output[i] = Q48.RoundShift(new Int128((ulong)accHi[i], accLo[i]), Q48.FracBits);
    }

    /// <summary>Exact 128-bit dot product; two independent carry chains (integer addition is associative).</summary>
    private static unsafe Int128 Dot(long* a, long* b, int n)
    {
        ulong lo0 = 0, lo1 = 0; long hi0 = 0, hi1 = 0;
        int i = 0;
        for (; i + 2 <= n; i += 2)
        {
            ExactMatrix.Accumulate(ref hi0, ref lo0, a[i], b[i]);
            ExactMatrix.Accumulate(ref hi1, ref lo1, a[i + 1], b[i + 1]);
        }
        for (; i < n; i++) ExactMatrix.Accumulate(ref hi0, ref lo0, a[i], b[i]);
        return new Int128((ulong)hi0, lo0) + new Int128((ulong)hi1, lo1);
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
    private void RmsNorm(Span<long> output, ReadOnlySpan<long> x, long[] weight)
    {
        ulong lo = 0; long hi = 0;
        for (int i = 0; i < x.Length; i++) ExactMatrix.Accumulate(ref hi, ref lo, x[i], x[i]);
        long mean = Q48.DivideRound(new Int128((ulong)hi, lo), (Int128)x.Length << Q48.FracBits);
        long inverse = Q48.Rsqrt(mean + _epsilon);
        for (int i = 0; i < x.Length; i++) output[i] = Q48.Mul(weight[i], Q48.Mul(x[i], inverse));
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


    public void Dispose() { }
}
