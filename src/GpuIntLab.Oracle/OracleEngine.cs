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
public sealed class OracleEngine : LlamaEngine, IRawLogitsEngine, IExactLlamaOps
{
    private readonly LlamaConfig _c;
    private readonly ExactMatrix _embedding;
    private readonly ModelWeights<ExactMatrix, long[]> _weights;
    private readonly RopeTable _rope;
    private readonly long _epsilon;          // rms_norm_eps in Q16.48
    private readonly long _attentionScale;   // 1/sqrt(head_dim) in Q16.48
    private readonly KvCache<long> _cache;
    private readonly int _threads;

    public override EngineInfo Info { get; }
    public override ILlamaOps Ops => this;

    /// <summary>The prompt goes through in runs of this many tokens: every weight row is read once per run, not once per token.</summary>
    protected override int MaxStepTokens => PrefillChunk;

    /// <summary>Raw Q16.48 logits of the last step that computed logits (for hashing).</summary>
    public long[] LastRawLogits { get; private set; } = [];

    public OracleEngine(LlamaCheckpoint checkpoint, int threads = 1) : base(checkpoint.Config)
    {
        _c = checkpoint.Config;
        _threads = Math.Max(1, threads);
        bool tied = checkpoint.LmHead.Name == LlamaCheckpoint.EmbeddingName;
        _embedding = ExactMatrix.Load(checkpoint, checkpoint.Info(LlamaCheckpoint.EmbeddingName), forProducts: tied);
        // A tied head is the embedding matrix itself, loaded once.
        _weights = LlamaWeights.Load(checkpoint,
            t => t.Name == LlamaCheckpoint.EmbeddingName ? _embedding : ExactMatrix.Load(checkpoint, t),
            checkpoint.ReadQ48);

        // Boundary: the real-valued hyper-parameters enter the integer world here, once.
        _epsilon = Q48.FromDouble(_c.RmsNormEps);
        _rope = new RopeTable(_c.HeadDim, _c.MaxPositionEmbeddings, _c.RopeTheta, _c.RopeScaling);
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

    /// <summary>Tokens per prefill run (bounds the scratch memory: run x intermediate size int64s).</summary>
    public const int PrefillChunk = 64;

    protected override double[] ReadLogits() => ToDoubles(LastRawLogits);

    /// <summary>Decode returning the raw Q16.48 logits (no float64 conversion).</summary>
    public long[] DecodeRaw(int token)
    {
        Decode(token);
        return LastRawLogits;
    }

    private static double[] ToDoubles(long[] raw)
    {
        var result = new double[raw.Length];
        for (int i = 0; i < raw.Length; i++) result[i] = Q48.ToDouble(raw[i]);
        return result;
    }

    /// <summary>Activations of a run of T tokens, row-major [T, width]; reused across steps of the same T.</summary>
    private sealed class Scratch(LlamaConfig c, int tokens)
    {
        public readonly int Tokens = tokens;
        public readonly long[] X = new long[tokens * c.HiddenSize], Xb = new long[tokens * c.HiddenSize], Projected = new long[tokens * c.HiddenSize];
        public readonly long[] Q = new long[tokens * c.QDim], Attention = new long[tokens * c.QDim];
        public readonly long[] K = new long[tokens * c.KvDim], V = new long[tokens * c.KvDim];
        public readonly long[] Hb = new long[tokens * c.IntermediateSize], Hb2 = new long[tokens * c.IntermediateSize];
    }

    private Scratch _s = null!;
    private int _position;
    private long[] _attentionBuffer = new long[256]; // scores and probabilities of one head, grown by doubling
    [ThreadStatic] private static long[]? t_attention; // the same for each thread of a parallel attention pass

    void ILlamaOps.Begin(int tokens, int position)
    {
        _position = position;
        _cache.EnsureCapacity(position + tokens);
        if (_s is not { } cached || cached.Tokens != tokens) _s = new Scratch(_c, tokens);
    }

    void ILlamaOps.Embed(ReadOnlySpan<int> tokens)
    {
        int d = _c.HiddenSize;
        for (int t = 0; t < tokens.Length; t++) _embedding.ReadRow(tokens[t], _s.X.AsSpan(t * d, d));
    }

    void ILlamaOps.RmsNorm(int layer, LayerWeight norm)
    {
        var w = _weights.Layers[layer];
        long[] weight = norm == LayerWeight.InputNorm ? w.InputNorm : w.PostNorm;
        int d = _c.HiddenSize;
        for (int t = 0; t < _s.Tokens; t++) RmsNorm(_s.Xb.AsSpan(t * d, d), _s.X.AsSpan(t * d, d), weight);
    }

    unsafe void ILlamaOps.QkvProjection(int layer)
    {
        var w = _weights.Layers[layer];
        // q, k and v in one pass over the shared normed activations.
        fixed (long* q = _s.Q, k = _s.K, v = _s.V)
            ExactMatrix.MatMulShared([w.Q, w.K, w.V], [(nint)q, (nint)k, (nint)v], _s.Xb, _s.Tokens, _threads);
        AddBias(_s.Q, w.QBias, layer, "q_proj");
        AddBias(_s.K, w.KBias, layer, "k_proj");
        AddBias(_s.V, w.VBias, layer, "v_proj");
    }

    void ILlamaOps.QkNorm(int layer)
    {
        var w = _weights.Layers[layer];
        int hd = _c.HeadDim;
        for (int i = 0; i < _s.Q.Length; i += hd) RmsNorm(_s.Q.AsSpan(i, hd), _s.Q.AsSpan(i, hd), w.QNorm!);
        for (int i = 0; i < _s.K.Length; i += hd) RmsNorm(_s.K.AsSpan(i, hd), _s.K.AsSpan(i, hd), w.KNorm!);
    }

    void ILlamaOps.RopeAndStore(int layer, int position)
    {
        int qDim = _c.QDim, kvDim = _c.KvDim, hd = _c.HeadDim;
        for (int t = 0; t < _s.Tokens; t++)
        {
            for (int h = 0; h < _c.NumAttentionHeads; h++) Rope(_s.Q.AsSpan(t * qDim + h * hd, hd), position + t);
            for (int h = 0; h < _c.NumKeyValueHeads; h++) Rope(_s.K.AsSpan(t * kvDim + h * hd, hd), position + t);
            _s.K.AsSpan(t * kvDim, kvDim).CopyTo(_cache.Key(layer, position + t));
            _s.V.AsSpan(t * kvDim, kvDim).CopyTo(_cache.Value(layer, position + t));
        }
    }

    void ILlamaOps.Attention(int layer, int position)
    {
        int n = _s.Tokens, hd = _c.HeadDim;
        var s = _s;
        // Every (token, head) pair is independent: split them over threads when the context makes it worth it.
        int pairs = n * _c.NumAttentionHeads;
        long work = (long)pairs * (position + n) * hd;
        if (_threads > 1 && work > 1 << 12)
            WorkerTeam.Shared.Run(pairs, _threads, pair =>
            {
                if (t_attention == null || t_attention.Length < 2 * (position + n)) t_attention = new long[Math.Max(2 * (position + n), 256)];
                AttendHead(layer, s, pair / _c.NumAttentionHeads, pair % _c.NumAttentionHeads, position, t_attention);
            });
        else
        {
            if (_attentionBuffer.Length < 2 * (position + n)) _attentionBuffer = new long[Math.Max(2 * (position + n), 2 * _attentionBuffer.Length)];
            for (int pair = 0; pair < pairs; pair++) AttendHead(layer, s, pair / _c.NumAttentionHeads, pair % _c.NumAttentionHeads, position, _attentionBuffer);
        }
    }

    unsafe void ILlamaOps.OutputProjection(int layer)
    {
        var w = _weights.Layers[layer];
        fixed (long* y = _s.Projected) w.O.MatMul(y, _s.Attention, _s.Tokens, _threads);
        AddBias(_s.Projected, w.OBias, layer, "o_proj");
    }

    void ILlamaOps.AddResidual(int layer, LayerWeight block) =>
        AddResidual(_s.X, _s.Projected, layer, block == LayerWeight.O ? "attention" : "mlp");

    unsafe void ILlamaOps.GateUpSwiGlu(int layer)
    {
        var w = _weights.Layers[layer];
        var s = _s;
        int n = s.Tokens, inter = _c.IntermediateSize;
        // gate and up in one pass, each part finishing its rows with hb = silu(gate) * up (the costly SiLU rides along).
        fixed (long* hb = s.Hb, hb2 = s.Hb2)
            ExactMatrix.MatMulShared([w.Gate, w.Up], [(nint)hb, (nint)hb2], s.Xb, n, _threads, (start, end) =>
            {
                for (int t = 0; t < n; t++)
                    for (int i = t * inter + start; i < t * inter + end; i++) s.Hb[i] = Q48.Mul(Q48.Silu(s.Hb[i]), s.Hb2[i]);
            });
    }

    unsafe void ILlamaOps.DownProjection(int layer)
    {
        fixed (long* y = _s.Projected) _weights.Layers[layer].Down.MatMul(y, _s.Hb, _s.Tokens, _threads);
    }

    void ILlamaOps.FinalNormAndHead()
    {
        int d = _c.HiddenSize;
        var last = _s.Xb.AsSpan(0, d);
        RmsNorm(last, _s.X.AsSpan((_s.Tokens - 1) * d, d), _weights.FinalNorm);
        var logits = new long[_c.VocabSize];
        _weights.LmHead.MatVec(logits, _s.Xb, _threads);
        LastRawLogits = logits;
    }

    private long[] Buffer(StepBuffer buffer) => buffer switch
    {
        StepBuffer.Hidden => _s.X,
        StepBuffer.Normed => _s.Xb,
        StepBuffer.Q => _s.Q,
        StepBuffer.K => _s.K,
        StepBuffer.V => _s.V,
        StepBuffer.Attention => _s.Attention,
        StepBuffer.SwiGlu => _s.Hb,
        StepBuffer.Projected => _s.Projected,
        StepBuffer.Logits => LastRawLogits,
        _ => throw new ArgumentOutOfRangeException(nameof(buffer)),
    };

    void ILlamaOps.Read(StepBuffer buffer, Span<double> destination)
    {
        var raw = Buffer(buffer);
        for (int i = 0; i < destination.Length; i++) destination[i] = Q48.ToDouble(raw[i]);
    }

    void ILlamaOps.Write(StepBuffer buffer, ReadOnlySpan<double> values)
    {
        var raw = WritableBuffer(buffer, values.Length);
        for (int i = 0; i < values.Length; i++) raw[i] = Q48.FromDouble(values[i]);
    }

    void IExactLlamaOps.ReadRaw(StepBuffer buffer, Span<long> destination) => Buffer(buffer).AsSpan(0, destination.Length).CopyTo(destination);

    void IExactLlamaOps.WriteRaw(StepBuffer buffer, ReadOnlySpan<long> values) => values.CopyTo(WritableBuffer(buffer, values.Length));

    private long[] WritableBuffer(StepBuffer buffer, int length)
    {
        if (buffer == StepBuffer.Logits) LastRawLogits = new long[length];
        return Buffer(buffer);
    }

    private static void AddBias(long[] y, long[]? bias, int layer, string projection)
    {
        if (bias is not null) AddChecked(y, bias, layer, $"{projection} bias");
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
        fixed (long* q = &s.Q[t * _c.QDim + h * hd])
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
        var output = s.Attention.AsSpan(t * _c.QDim + h * hd, hd);
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

    private static void AddResidual(long[] x, long[] delta, int layer, string block) => AddChecked(x, delta, layer, $"{block} residual");

    /// <summary>
    /// y += delta row by row (delta is one row: a bias broadcast over the tokens, or the whole of y for a residual add),
    /// each sum checked: Q16.48 never wraps.
    /// </summary>
    private static void AddChecked(long[] y, long[] delta, int layer, string what)
    {
        for (int row = 0; row < y.Length; row += delta.Length)
            for (int j = 0; j < delta.Length; j++)
            {
                long a = y[row + j], b = delta[j], sum = a + b;
                // Signed overflow iff both operands share a sign that the sum does not.
                if (((a ^ sum) & (b ^ sum)) < 0)
                    throw new Q48OverflowException($"layer {layer} {what}: element {j} left the Q16.48 range");
                y[row + j] = sum;
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


    public override void Dispose() { }
}
