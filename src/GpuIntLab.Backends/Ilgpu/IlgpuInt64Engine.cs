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
public sealed class IlgpuInt64Engine : IInferenceEngine
{
    private sealed record Layer(MemoryBuffer1D<long, Stride1D.Dense> InputNorm, MemoryBuffer1D<long, Stride1D.Dense> Q, MemoryBuffer1D<long, Stride1D.Dense> K,
        MemoryBuffer1D<long, Stride1D.Dense> V, MemoryBuffer1D<long, Stride1D.Dense> O, MemoryBuffer1D<long, Stride1D.Dense> PostNorm,
        MemoryBuffer1D<long, Stride1D.Dense> Gate, MemoryBuffer1D<long, Stride1D.Dense> Up, MemoryBuffer1D<long, Stride1D.Dense> Down,
        MemoryBuffer1D<long, Stride1D.Dense> Keys, MemoryBuffer1D<long, Stride1D.Dense> Values);

    private readonly LlamaConfig _c;
    private readonly IlgpuDevice _device;
    private readonly long[] _embedding;
    private readonly Layer[] _layers;
    private readonly MemoryBuffer1D<long, Stride1D.Dense> _finalNorm, _lmHead, _cos, _sin;
    private readonly MemoryBuffer1D<long, Stride1D.Dense> _x, _xb, _q, _k, _v, _att, _hb, _hb2, _scores, _sumSq, _logits;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> _error;
    private readonly long _epsilon, _attentionScale;
    private readonly long[] _hostScores, _hostGate, _hostSumSq = new long[2];
    private readonly int[] _hostError = new int[1];
    private readonly List<IDisposable> _owned = [];

    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, ArrayView<int>, int, int> _matVec;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, int> _sumSquares;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, long, ArrayView<int>> _normApply;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, ArrayView<int>> _rope;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, int> _copy;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, int, int, long, ArrayView<int>> _scoresK;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, int, int, ArrayView<int>> _attOut;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>> _residual;
    private readonly Action<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>> _mul;

    public EngineInfo Info { get; }
    public LlamaConfig Config => _c;
    public int Position { get; private set; }

    /// <summary>Raw Q16.48 logits of the last step that computed logits (for hashing).</summary>
    public long[] LastRawLogits { get; private set; } = [];

    /// <summary>Device bytes of the linear weights (8 per weight; a tied lm_head counts once more: it is uploaded as its own matrix).</summary>
    public long LinearWeightBytes { get; }

    public IlgpuInt64Engine(LlamaCheckpoint checkpoint, IlgpuDevice device)
    {
        _c = checkpoint.Config;
        _device = device;
        var acc = device.Accelerator;
        try
        {
            MemoryBuffer1D<long, Stride1D.Dense> Own(MemoryBuffer1D<long, Stride1D.Dense> b) { _owned.Add(b); return b; }
            MemoryBuffer1D<long, Stride1D.Dense> Load(TensorInfo t) => Own(acc.Allocate1D(checkpoint.ReadQ48(t)));
            MemoryBuffer1D<long, Stride1D.Dense> Matrix(long[] w, int rows, int cols) => Own(acc.Allocate1D(Layout.Transpose(w, rows, cols)));
            MemoryBuffer1D<long, Stride1D.Dense> Zeros(long n) => Own(acc.Allocate1D<long>(n));

            _embedding = checkpoint.ReadQ48(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
            int kvSize = _c.MaxPositionEmbeddings * _c.KvDim;
            _layers = new Layer[_c.NumHiddenLayers];
            for (int l = 0; l < _layers.Length; l++)
            {
                MemoryBuffer1D<long, Stride1D.Dense> W(LayerWeight w) { var t = checkpoint.Layer(l, w); return Matrix(checkpoint.ReadQ48(t), t.Shape[0], t.Shape[1]); }
                MemoryBuffer1D<long, Stride1D.Dense> N(LayerWeight w) => Load(checkpoint.Layer(l, w));
                _layers[l] = new Layer(N(LayerWeight.InputNorm), W(LayerWeight.Q), W(LayerWeight.K), W(LayerWeight.V), W(LayerWeight.O),
                    N(LayerWeight.PostAttentionNorm), W(LayerWeight.Gate), W(LayerWeight.Up), W(LayerWeight.Down), Zeros(kvSize), Zeros(kvSize));
            }
            _finalNorm = Load(checkpoint.Info(LlamaCheckpoint.FinalNormName));
            _lmHead = Matrix(checkpoint.LmHead.Name == LlamaCheckpoint.EmbeddingName ? _embedding : checkpoint.ReadQ48(checkpoint.LmHead), _c.VocabSize, _c.HiddenSize);
            LinearWeightBytes = _layers.Sum(w => w.Q.LengthInBytes + w.K.LengthInBytes + w.V.LengthInBytes + w.O.LengthInBytes
                + w.Gate.LengthInBytes + w.Up.LengthInBytes + w.Down.LengthInBytes) + _lmHead.LengthInBytes;

            // Boundary constants exactly as the oracle makes them.
            _epsilon = Q48.FromDouble(_c.RmsNormEps);
            _attentionScale = Q48.Rsqrt(Q48.FromInt(_c.HeadDim));
            var rope = new RopeTable(_c.HeadDim, _c.MaxPositionEmbeddings, _c.RopeTheta);
            int half = _c.HeadDim / 2;
            var cos = new long[_c.MaxPositionEmbeddings * half];
            var sin = new long[cos.Length];
            for (int p = 0; p < _c.MaxPositionEmbeddings; p++) { rope.Cos(p).CopyTo(cos.AsSpan(p * half)); rope.Sin(p).CopyTo(sin.AsSpan(p * half)); }
            _cos = Own(acc.Allocate1D(cos));
            _sin = Own(acc.Allocate1D(sin));

            int d = _c.HiddenSize;
            _x = Zeros(d); _xb = Zeros(d); _q = Zeros(d); _k = Zeros(_c.KvDim); _v = Zeros(_c.KvDim); _att = Zeros(d);
            _hb = Zeros(_c.IntermediateSize); _hb2 = Zeros(_c.IntermediateSize);
            _scores = Zeros((long)_c.NumAttentionHeads * _c.MaxPositionEmbeddings); _sumSq = Zeros(2); _logits = Zeros(_c.VocabSize);
            _error = acc.Allocate1D<int>(1);
            _owned.Add(_error);
            _hostScores = new long[_c.NumAttentionHeads * _c.MaxPositionEmbeddings];
            _hostGate = new long[_c.IntermediateSize];

            _matVec = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, ArrayView<int>, int, int>(Int64Kernels.MatVec);
            _sumSquares = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, int>(Int64Kernels.SumSquares);
            _normApply = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, long, ArrayView<int>>(Int64Kernels.NormApply);
            _rope = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, ArrayView<int>>(Int64Kernels.Rope);
            _copy = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, int>(Int64Kernels.CopyTo);
            _scoresK = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, int, int, long, ArrayView<int>>(Int64Kernels.Scores);
            _attOut = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, int, int, int, int, ArrayView<int>>(Int64Kernels.AttentionOutput);
            _residual = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>>(Int64Kernels.Residual);
            _mul = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>>(Int64Kernels.MulInPlace);
            _error.MemSetToZero();

            Info = new EngineInfo("ilgpu-int64", "Q16.48", "exact", device.Description, new Dictionary<string, string>
            {
                ["weights"] = "checkpoint values converted exactly to Q16.48, 8 bytes each on the device",
                ["matmul"] = "device: int64 x int64 -> exact 128-bit sum (products from 32-bit halves), one RNE per output",
                ["rmsnorm"] = "device: exact 128-bit sum of squares and Mul(w, Mul(x, inv)); host: mean (128-bit RNE division) and Q48.Rsqrt",
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

    public void Reset() => Position = 0;

    public double[] Prefill(ReadOnlySpan<int> tokens) =>
        StepwisePrefill.Run(_c, tokens, Position, (token, logits) =>
        {
            Forward(token, logits);
            return logits ? ToDoubles(LastRawLogits) : null;
        });

    public double[] Decode(int token) => ToDoubles(DecodeRaw(token));

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
        int pos = Position, d = _c.HiddenSize, hd = _c.HeadDim, kv = _c.KvDim, half = hd / 2, ff = _c.IntermediateSize;
        int heads = _c.NumAttentionHeads, group = _c.GroupSize, n = pos + 1;
        var err = _error.View;
        _x.View.CopyFromCPU(_embedding.AsSpan(token * d, d).ToArray());
        for (int l = 0; l < _layers.Length; l++)
        {
            var w = _layers[l];
            RmsNorm(_x.View, w.InputNorm.View, _xb.View, l, "input norm");
            _matVec(d, w.Q.View, _xb.View, _q.View, err, d, d);
            _matVec(kv, w.K.View, _xb.View, _k.View, err, kv, d);
            _matVec(kv, w.V.View, _xb.View, _v.View, err, kv, d);
            _rope(heads * half, _q.View, _cos.View, _sin.View, pos, half, err);
            _rope(_c.NumKeyValueHeads * half, _k.View, _cos.View, _sin.View, pos, half, err);
            _copy(kv, _k.View, w.Keys.View, pos * kv);
            _copy(kv, _v.View, w.Values.View, pos * kv);
            ArrayView<long> scores = _scores.View.SubView(0, heads * n);
            _scoresK(heads * n, _q.View, w.Keys.View, scores, n, hd, kv, group, _attentionScale, err);
            CheckError(l, "attention scores");
            // Softmax on the host with the oracle's code.
            var host = _hostScores.AsSpan(0, heads * n);
            scores.CopyToCPU(host);
            for (int h = 0; h < heads; h++) { var s = host.Slice(h * n, n); Q48.Softmax(s, s); }
            scores.CopyFromCPU((ReadOnlySpan<long>)host);
            _attOut(heads * hd, scores, w.Values.View, _att.View, n, hd, kv, group, err);
            _matVec(d, w.O.View, _att.View, _xb.View, err, d, d);
            _residual(d, _x.View, _xb.View, err);

            RmsNorm(_x.View, w.PostNorm.View, _xb.View, l, "post-attention norm");
            _matVec(ff, w.Gate.View, _xb.View, _hb.View, err, ff, d);
            _matVec(ff, w.Up.View, _xb.View, _hb2.View, err, ff, d);
            CheckError(l, "gate/up");
            _hb.View.CopyToCPU(_hostGate);
            for (int i = 0; i < ff; i++) _hostGate[i] = Q48.Silu(_hostGate[i]);
            _hb.View.CopyFromCPU(_hostGate);
            _mul(ff, _hb.View, _hb2.View, err);
            _matVec(d, w.Down.View, _hb.View, _xb.View, err, d, ff);
            _residual(d, _x.View, _xb.View, err);
        }
        Position = pos + 1;
        if (!computeLogits) { CheckError(_layers.Length - 1, "mlp"); return; }
        RmsNorm(_x.View, _finalNorm.View, _xb.View, _layers.Length, "final norm");
        _matVec(_c.VocabSize, _lmHead.View, _xb.View, _logits.View, err, _c.VocabSize, d);
        var logits = new long[_c.VocabSize];
        _logits.View.CopyToCPU(logits);
        CheckError(_layers.Length, "lm_head");
        LastRawLogits = logits;
    }

    private void RmsNorm(ArrayView<long> x, ArrayView<long> weight, ArrayView<long> output, int layer, string what)
    {
        CheckError(layer, what);
        _sumSquares(1, x, _sumSq.View, _c.HiddenSize);
        _sumSq.View.CopyToCPU(_hostSumSq);
        var sum = new Int128((ulong)_hostSumSq[0], (ulong)_hostSumSq[1]);
        long mean = Q48.DivideRound(sum, (Int128)_c.HiddenSize << Q48.FracBits);
        long inverse = Q48.Rsqrt(mean + _epsilon);
        _normApply(_c.HiddenSize, x, weight, output, inverse, _error.View);
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

    public void Dispose() => DisposeAll();
}
