using System.Runtime.CompilerServices;
using System.Numerics;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Training;

/// <summary>One parameter tensor inside the flat parameter array, by its HF name.</summary>
public sealed record ParamTensor(string Name, int[] Shape, int Offset, int Length, bool Decay);

/// <summary>
/// A Llama decoder with everything TinyLlama has (token embeddings, RMSNorm, grouped-query attention
/// with rotate-half RoPE, SwiGLU MLP, final RMSNorm, untied lm_head), trained on the CPU with a
/// hand-written backward pass. All parameters live in one flat array in HF tensor order (HF layouts:
/// linear weights are [out, in]), gradients in a second array of the same layout, so the optimizer,
/// the export and reproducibility checks see one vector. Generic over the float type: float to train,
/// double for gradient checks against finite differences.
/// </summary>
public sealed class TrainableLlama<T> where T : unmanaged, IFloatingPointIeee754<T>
{
    private struct LayerOffsets { public int InNorm, Q, K, V, O, PostNorm, Gate, Up, Down; }

    private readonly int _emb, _finalNorm, _head;
    private readonly LayerOffsets[] _layers;
    private readonly T[] _cos, _sin; // [position, headDim/2]
    private readonly T _eps;
    private Workspace? _ws;

    public LlamaConfig Config { get; }
    public T[] Params { get; }
    public T[] Grads { get; }
    public IReadOnlyList<ParamTensor> Tensors { get; }
    public int ParameterCount => Params.Length;

    public TrainableLlama(LlamaConfig config)
    {
        if (config.TieWordEmbeddings) throw new ArgumentException("the trainer builds an untied lm_head, as TinyLlama has");
        Config = config;
        var tensors = new List<ParamTensor>();
        int offset = 0;
        foreach (var (name, shape) in LlamaCheckpoint.ExpectedTensors(config, includeLmHead: true))
        {
            int len = shape.Aggregate(1, (a, b) => checked(a * b));
            tensors.Add(new ParamTensor(name, shape, offset, len, Decay: shape.Length == 2));
            offset = checked(offset + len);
        }
        Tensors = tensors;
        Params = new T[offset];
        Grads = new T[offset];
        var byName = tensors.ToDictionary(t => t.Name, t => t.Offset);
        _emb = byName[LlamaCheckpoint.EmbeddingName];
        _finalNorm = byName[LlamaCheckpoint.FinalNormName];
        _head = byName[LlamaCheckpoint.LmHeadName];
        _layers = new LayerOffsets[config.NumHiddenLayers];
        for (int l = 0; l < _layers.Length; l++)
        {
            int O(LayerWeight w) => byName[LlamaCheckpoint.LayerTensorName(l, w)];
            _layers[l] = new LayerOffsets
            {
                InNorm = O(LayerWeight.InputNorm), Q = O(LayerWeight.Q), K = O(LayerWeight.K), V = O(LayerWeight.V), O = O(LayerWeight.O),
                PostNorm = O(LayerWeight.PostAttentionNorm), Gate = O(LayerWeight.Gate), Up = O(LayerWeight.Up), Down = O(LayerWeight.Down),
            };
        }

        // RoPE tables in float64, then rounded once: angle = pos * theta^(-2i/headDim).
        int half = config.HeadDim / 2;
        _cos = new T[config.MaxPositionEmbeddings * half];
        _sin = new T[config.MaxPositionEmbeddings * half];
        for (int p = 0; p < config.MaxPositionEmbeddings; p++)
            for (int i = 0; i < half; i++)
            {
                double angle = p * Math.Pow(config.RopeTheta, -2.0 * i / config.HeadDim);
                _cos[p * half + i] = T.CreateChecked(Math.Cos(angle));
                _sin[p * half + i] = T.CreateChecked(Math.Sin(angle));
            }
        _eps = T.CreateChecked(config.RmsNormEps);
    }

    public ParamTensor Tensor(string name) => Tensors.First(t => t.Name == name);

    /// <summary>
    /// Seeded initialisation: norms at 1, every other tensor N(0, std²), with the projections that
    /// write into the residual stream (o_proj, down_proj) scaled by 1/sqrt(2·layers) (GPT-2 style).
    /// Each tensor draws from its own stream derived from the seed and its index.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Initialize(ulong seed, double std = 0.02)
    {
        for (int ti = 0; ti < Tensors.Count; ti++)
        {
            var t = Tensors[ti];
            var span = Params.AsSpan(t.Offset, t.Length);
            if (t.Shape.Length == 1) { span.Fill(T.One); continue; }
            double s = std;
            if (t.Name.EndsWith("o_proj.weight", StringComparison.Ordinal) || t.Name.EndsWith("down_proj.weight", StringComparison.Ordinal))
                s /= Math.Sqrt(2.0 * Config.NumHiddenLayers);
            var rng = SeededRandom.Derive(seed, (ulong)ti + 1);
            for (int i = 0; i < span.Length; i++) span[i] = T.CreateChecked(rng.NextGaussian() * s);
        }
    }

    /// <summary>Activations kept for the backward pass, sized for one (batch, sequence) shape.</summary>
    private sealed class Workspace
    {
        public readonly int B, S, N;
        public readonly T[][] X;                    // residual stream entering layer l; X[L] leaves the last layer
        public readonly T[][] Xn1, R1, Q, K, V, P, Att, Xm, Xn2, R2, G, U, H;
        public readonly T[] XnF, RF, Logits, Loss;
        public readonly T[] Tmp, DX, DXn, DQ, DK, DV, DAtt, DG, DU, DH, TA, TB, TW;

        public Workspace(LlamaConfig c, int b, int s)
        {
            B = b; S = s; N = b * s;
            int L = c.NumHiddenLayers, D = c.HiddenSize, KV = c.KvDim, I = c.IntermediateSize, Hh = c.NumAttentionHeads, Vc = c.VocabSize;
            T[][] Alloc(int len) => Enumerable.Range(0, L).Select(_ => new T[len]).ToArray();
            X = Enumerable.Range(0, L + 1).Select(_ => new T[N * D]).ToArray();
            Xn1 = Alloc(N * D); R1 = Alloc(N); Q = Alloc(N * D); K = Alloc(N * KV); V = Alloc(N * KV);
            P = Alloc(b * Hh * s * s); Att = Alloc(N * D); Xm = Alloc(N * D); Xn2 = Alloc(N * D); R2 = Alloc(N);
            G = Alloc(N * I); U = Alloc(N * I); H = Alloc(N * I);
            XnF = new T[N * D]; RF = new T[N]; Logits = new T[N * Vc]; Loss = new T[N];
            Tmp = new T[N * D]; DX = new T[N * D]; DXn = new T[N * D]; DQ = new T[N * D]; DK = new T[N * KV]; DV = new T[N * KV];
            DAtt = new T[N * D]; DG = new T[N * I]; DU = new T[N * I]; DH = new T[N * I];
            int widest = Math.Max(Vc, Math.Max(I, D));
            TA = new T[N * widest]; TB = new T[N * widest]; TW = new T[widest * Math.Max(I, D)];
        }
    }

    private Workspace Ws(int b, int s)
    {
        if (s > Config.MaxPositionEmbeddings) throw new ArgumentException($"sequence length {s} exceeds max_position_embeddings {Config.MaxPositionEmbeddings}");
        if (_ws is null || _ws.B != b || _ws.S != s) _ws = new Workspace(Config, b, s);
        return _ws;
    }

    /// <summary>
    /// Mean next-token cross-entropy over a batch, and (when <paramref name="backward"/>) its gradient in
    /// <see cref="Grads"/> (overwritten). <paramref name="tokens"/> holds <paramref name="batch"/> rows of
    /// <paramref name="seq"/>+1 ids: inputs are a row's first <paramref name="seq"/>, targets its last.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public double Loss(int[] tokens, int batch, int seq, bool backward)
    {
        if (tokens.Length != batch * (seq + 1)) throw new ArgumentException("tokens must hold batch × (seq + 1) ids");
        var ws = Forward(tokens, batch, seq, seq + 1);
        int Vc = Config.VocabSize, N = ws.N;
        T invN = T.One / T.CreateChecked(N);
        Parallel.For(0, N, Kernels<T>.Parallelism, n =>
        {
            int b = n / seq, t = n % seq;
            int target = tokens[b * (seq + 1) + t + 1];
            var row = ws.Logits.AsSpan(n * Vc, Vc);
            T max = row[0];
            for (int j = 1; j < Vc; j++) if (row[j] > max) max = row[j];
            T sum = T.Zero;
            for (int j = 0; j < Vc; j++) sum += T.Exp(row[j] - max);
            T lse = max + T.Log(sum);
            ws.Loss[n] = lse - row[target];
            if (backward)
            {
                for (int j = 0; j < Vc; j++) row[j] = T.Exp(row[j] - lse) * invN;
                row[target] -= invN;
            }
        });
        double total = 0;
        for (int n = 0; n < N; n++) total += double.CreateChecked(ws.Loss[n]);
        if (backward) Backward(tokens, ws, seq + 1);
        return total / N;
    }

    /// <summary>Per-position next-token losses of the last <see cref="Loss"/> call (length batch × seq).</summary>
    public ReadOnlySpan<T> LastPositionLosses => _ws is null ? default : _ws.Loss.AsSpan(0, _ws.N);

    /// <summary>Logits [seq, vocab] for every position of one sequence (a copy).</summary>
    public T[] Logits(ReadOnlySpan<int> tokens)
    {
        var ids = tokens.ToArray();
        var ws = Forward(ids, 1, ids.Length, ids.Length);
        return ws.Logits.AsSpan(0, ws.N * Config.VocabSize).ToArray();
    }

    /// <summary>Greedy continuation (no KV cache: the whole context is recomputed each step, fine at this size).</summary>
    public List<int> Greedy(IReadOnlyList<int> prompt, int maxNew, int? stopId)
    {
        var ids = new List<int>(prompt);
        var generated = new List<int>();
        for (int i = 0; i < maxNew && ids.Count < Config.MaxPositionEmbeddings; i++)
        {
            var logits = Logits(ids.ToArray());
            int V = Config.VocabSize, last = (ids.Count - 1) * V, best = 0;
            for (int j = 1; j < V; j++) if (logits[last + j] > logits[last + best]) best = j;
            ids.Add(best);
            generated.Add(best);
            if (best == stopId) break;
        }
        return generated;
    }

    private Workspace Forward(int[] tokens, int batch, int seq, int stride)
    {
        var c = Config;
        var ws = Ws(batch, seq);
        int N = ws.N, D = c.HiddenSize, KV = c.KvDim, I = c.IntermediateSize;
        var p = Params;
        for (int n = 0; n < N; n++)
        {
            int tok = tokens[n / seq * stride + n % seq];
            if ((uint)tok >= (uint)c.VocabSize) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {tok} is outside the vocabulary of {c.VocabSize}");
            p.AsSpan(_emb + tok * D, D).CopyTo(ws.X[0].AsSpan(n * D, D));
        }
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var o = _layers[l];
            RmsNorm(ws.X[l], N, o.InNorm, ws.Xn1[l], ws.R1[l]);
            Kernels<T>.MatMulNT(ws.Xn1[l], 0, N, p, o.Q, D, D, ws.Q[l], 0, false);
            Kernels<T>.MatMulNT(ws.Xn1[l], 0, N, p, o.K, KV, D, ws.K[l], 0, false);
            Kernels<T>.MatMulNT(ws.Xn1[l], 0, N, p, o.V, KV, D, ws.V[l], 0, false);
            Rope(ws.Q[l], N, seq, c.NumAttentionHeads, inverse: false);
            Rope(ws.K[l], N, seq, c.NumKeyValueHeads, inverse: false);
            Attention(ws, l);
            Kernels<T>.MatMulNT(ws.Att[l], 0, N, p, o.O, D, D, ws.Tmp, 0, false);
            Add(ws.X[l], ws.Tmp, ws.Xm[l], N * D);
            RmsNorm(ws.Xm[l], N, o.PostNorm, ws.Xn2[l], ws.R2[l]);
            Kernels<T>.MatMulNT(ws.Xn2[l], 0, N, p, o.Gate, I, D, ws.G[l], 0, false);
            Kernels<T>.MatMulNT(ws.Xn2[l], 0, N, p, o.Up, I, D, ws.U[l], 0, false);
            var g = ws.G[l]; var u = ws.U[l]; var h = ws.H[l];
            Parallel.For(0, N, Kernels<T>.Parallelism, n =>
            {
                for (int k = n * I, e = k + I; k < e; k++) h[k] = Silu(g[k]) * u[k];
            });
            Kernels<T>.MatMulNT(h, 0, N, p, o.Down, D, I, ws.Tmp, 0, false);
            Add(ws.Xm[l], ws.Tmp, ws.X[l + 1], N * D);
        }
        RmsNorm(ws.X[c.NumHiddenLayers], N, _finalNorm, ws.XnF, ws.RF);
        Kernels<T>.MatMulNT(ws.XnF, 0, N, p, _head, c.VocabSize, D, ws.Logits, 0, false);
        return ws;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Backward(int[] tokens, Workspace ws, int stride)
    {
        var c = Config;
        int N = ws.N, S = ws.S, D = c.HiddenSize, KV = c.KvDim, I = c.IntermediateSize, L = c.NumHiddenLayers;
        Array.Clear(Grads);
        // Logits now hold dLoss/dLogits.
        LinearBackward(ws, ws.XnF, D, ws.Logits, c.VocabSize, _head, ws.DXn, false);
        RmsNormBackward(ws.X[L], N, ws.RF, _finalNorm, ws.DXn, ws.DX, accumulate: false);
        for (int l = L - 1; l >= 0; l--)
        {
            var o = _layers[l];
            // X[l+1] = Xm + down(silu(gate) * up): dX flows to Xm unchanged, plus the MLP branch.
            LinearBackward(ws, ws.H[l], I, ws.DX, D, o.Down, ws.DH, false);
            var g = ws.G[l]; var u = ws.U[l];
            Parallel.For(0, N, Kernels<T>.Parallelism, n =>
            {
                for (int k = n * I, e = k + I; k < e; k++)
                {
                    T sig = T.One / (T.One + T.Exp(-g[k]));
                    T silu = g[k] * sig;
                    ws.DU[k] = ws.DH[k] * silu;
                    ws.DG[k] = ws.DH[k] * u[k] * sig * (T.One + g[k] * (T.One - sig));
                }
            });
            LinearBackward(ws, ws.Xn2[l], D, ws.DG, I, o.Gate, ws.DXn, false);
            LinearBackward(ws, ws.Xn2[l], D, ws.DU, I, o.Up, ws.DXn, true);
            RmsNormBackward(ws.Xm[l], N, ws.R2[l], o.PostNorm, ws.DXn, ws.DX, accumulate: true);
            // Xm = X + o_proj(attention): dX flows to X unchanged, plus the attention branch.
            LinearBackward(ws, ws.Att[l], D, ws.DX, D, o.O, ws.DAtt, false);
            AttentionBackward(ws, l);
            Rope(ws.DQ, N, S, c.NumAttentionHeads, inverse: true);
            Rope(ws.DK, N, S, c.NumKeyValueHeads, inverse: true);
            LinearBackward(ws, ws.Xn1[l], D, ws.DQ, D, o.Q, ws.DXn, false);
            LinearBackward(ws, ws.Xn1[l], D, ws.DK, KV, o.K, ws.DXn, true);
            LinearBackward(ws, ws.Xn1[l], D, ws.DV, KV, o.V, ws.DXn, true);
            RmsNormBackward(ws.X[l], N, ws.R1[l], o.InNorm, ws.DXn, ws.DX, accumulate: true);
        }
        for (int n = 0; n < N; n++)
        {
            int tok = tokens[n / S * stride + n % S];
            Kernels<T>.Axpy(T.One, ws.DX.AsSpan(n * D, D), Grads.AsSpan(_emb + tok * D, D));
        }
    }

    /// <summary>y = x·Wᵀ backward: dW += dyᵀ·x (into Grads at wOff), dx (+)= dy·W.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void LinearBackward(Workspace ws, T[] x, int inDim, T[] dy, int outDim, int wOff, T[] dx, bool accumulateDx)
    {
        int N = ws.N;
        Kernels<T>.Transpose(dy, 0, N, outDim, ws.TA);   // [out, N]
        Kernels<T>.Transpose(x, 0, N, inDim, ws.TB);     // [in, N]
        Kernels<T>.MatMulNT(ws.TA, 0, outDim, ws.TB, 0, inDim, N, Grads, wOff, accumulate: true);
        Kernels<T>.Transpose(Params, wOff, outDim, inDim, ws.TW); // [in, out]
        Kernels<T>.MatMulNT(dy, 0, N, ws.TW, 0, inDim, outDim, dx, 0, accumulateDx);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static T Silu(T g) => g / (T.One + T.Exp(-g));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Add(T[] a, T[] b, T[] dst, int len)
    {
        for (int i = 0; i < len; i++) dst[i] = a[i] + b[i];
    }

    /// <summary>y = x · r · w with r = 1/sqrt(mean(x²) + eps); keeps r per row for the backward pass.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RmsNorm(T[] x, int N, int wOff, T[] y, T[] r)
    {
        int D = Config.HiddenSize;
        var p = Params;
        T invD = T.One / T.CreateChecked(D);
        Parallel.For(0, N, Kernels<T>.Parallelism, n =>
        {
            var xr = x.AsSpan(n * D, D);
            T rr = T.One / T.Sqrt(Kernels<T>.Dot(xr, xr) * invD + _eps);
            r[n] = rr;
            for (int k = 0; k < D; k++) y[n * D + k] = xr[k] * rr * p[wOff + k];
        });
    }

    /// <summary>dx (+)= r·w·dy − x·r³/D·Σ(dy·w·x); dw += Σ_rows dy·x·r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RmsNormBackward(T[] x, int N, T[] r, int wOff, T[] dy, T[] dx, bool accumulate)
    {
        int D = Config.HiddenSize;
        var p = Params;
        T invD = T.One / T.CreateChecked(D);
        Parallel.For(0, N, Kernels<T>.Parallelism, n =>
        {
            int b = n * D;
            T rr = r[n];
            T s = T.Zero;
            for (int k = 0; k < D; k++) s += dy[b + k] * p[wOff + k] * x[b + k];
            T coef = rr * rr * rr * invD * s;
            for (int k = 0; k < D; k++)
            {
                T v = rr * p[wOff + k] * dy[b + k] - x[b + k] * coef;
                dx[b + k] = accumulate ? dx[b + k] + v : v;
            }
        });
        var gw = Grads.AsSpan(wOff, D);
        for (int n = 0; n < N; n++)
        {
            int b = n * D;
            T rr = r[n];
            for (int k = 0; k < D; k++) gw[k] += dy[b + k] * x[b + k] * rr;
        }
    }

    /// <summary>Rotate-half RoPE on every head of [N, heads·headDim]; inverse applies the transpose rotation (for gradients).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Rope(T[] a, int N, int seq, int heads, bool inverse)
    {
        int hd = Config.HeadDim, half = hd / 2, width = heads * hd;
        Parallel.For(0, N, Kernels<T>.Parallelism, n =>
        {
            int pos = n % seq;
            for (int h = 0; h < heads; h++)
            {
                int b = n * width + h * hd;
                for (int i = 0; i < half; i++)
                {
                    T cs = _cos[pos * half + i], sn = inverse ? -_sin[pos * half + i] : _sin[pos * half + i];
                    T x1 = a[b + i], x2 = a[b + i + half];
                    a[b + i] = x1 * cs - x2 * sn;
                    a[b + i + half] = x2 * cs + x1 * sn;
                }
            }
        });
    }

    /// <summary>Causal softmax attention; query head h reads key/value head h / (heads / kvHeads).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Attention(Workspace ws, int l)
    {
        var c = Config;
        int S = ws.S, H = c.NumAttentionHeads, hd = c.HeadDim, D = c.HiddenSize, KV = c.KvDim, group = c.GroupSize;
        T scale = T.One / T.Sqrt(T.CreateChecked(hd));
        var q = ws.Q[l]; var k = ws.K[l]; var v = ws.V[l]; var P = ws.P[l]; var att = ws.Att[l];
        Parallel.For(0, ws.B * H, Kernels<T>.Parallelism, bh =>
        {
            int b = bh / H, h = bh % H, kvh = h / group;
            for (int t = 0; t < S; t++)
            {
                var qv = q.AsSpan((b * S + t) * D + h * hd, hd);
                var prow = P.AsSpan((bh * S + t) * S, S);
                T max = T.NegativeInfinity;
                for (int s = 0; s <= t; s++)
                {
                    T sc = Kernels<T>.Dot(qv, k.AsSpan((b * S + s) * KV + kvh * hd, hd)) * scale;
                    prow[s] = sc;
                    if (sc > max) max = sc;
                }
                T sum = T.Zero;
                for (int s = 0; s <= t; s++) { prow[s] = T.Exp(prow[s] - max); sum += prow[s]; }
                T inv = T.One / sum;
                var outv = att.AsSpan((b * S + t) * D + h * hd, hd);
                outv.Clear();
                for (int s = 0; s <= t; s++)
                {
                    prow[s] *= inv;
                    Kernels<T>.Axpy(prow[s], v.AsSpan((b * S + s) * KV + kvh * hd, hd), outv);
                }
            }
        });
    }

    /// <summary>Backward of <see cref="Attention"/>, per (batch row, kv head) so shared dK/dV are summed by one thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void AttentionBackward(Workspace ws, int l)
    {
        var c = Config;
        int S = ws.S, H = c.NumAttentionHeads, hd = c.HeadDim, D = c.HiddenSize, KV = c.KvDim, group = c.GroupSize, KVH = c.NumKeyValueHeads;
        T scale = T.One / T.Sqrt(T.CreateChecked(hd));
        var q = ws.Q[l]; var k = ws.K[l]; var v = ws.V[l]; var P = ws.P[l];
        var dAtt = ws.DAtt; var dq = ws.DQ; var dk = ws.DK; var dv = ws.DV;
        Parallel.For(0, ws.B * KVH, Kernels<T>.Parallelism, bk =>
        {
            int b = bk / KVH, kvh = bk % KVH;
            for (int s = 0; s < S; s++)
            {
                dk.AsSpan((b * S + s) * KV + kvh * hd, hd).Clear();
                dv.AsSpan((b * S + s) * KV + kvh * hd, hd).Clear();
            }
            var dp = new T[S];
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
            {
                int bh = b * H + h;
                for (int t = 0; t < S; t++)
                {
                    var dO = dAtt.AsSpan((b * S + t) * D + h * hd, hd);
                    var prow = P.AsSpan((bh * S + t) * S, S);
                    T dot = T.Zero;
                    for (int s = 0; s <= t; s++)
                    {
                        int kvOff = (b * S + s) * KV + kvh * hd;
                        dp[s] = Kernels<T>.Dot(dO, v.AsSpan(kvOff, hd));
                        Kernels<T>.Axpy(prow[s], dO, dv.AsSpan(kvOff, hd));
                        dot += prow[s] * dp[s];
                    }
                    var dqv = dq.AsSpan((b * S + t) * D + h * hd, hd);
                    dqv.Clear();
                    var qv = q.AsSpan((b * S + t) * D + h * hd, hd);
                    for (int s = 0; s <= t; s++)
                    {
                        T ds = prow[s] * (dp[s] - dot) * scale;
                        int kvOff = (b * S + s) * KV + kvh * hd;
                        Kernels<T>.Axpy(ds, k.AsSpan(kvOff, hd), dqv);
                        Kernels<T>.Axpy(ds, qv, dk.AsSpan(kvOff, hd));
                    }
                }
            }
        });
    }
}
