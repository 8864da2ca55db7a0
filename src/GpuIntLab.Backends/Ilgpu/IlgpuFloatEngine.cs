using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// The Llama forward on an ILGPU accelerator with every linear layer (lm_head included) in a
/// low-precision format (<see cref="IDeviceLinear"/>: FP16, INT8, FP8) and everything else in float32 on
/// the device: RMSNorm, RoPE (float32 cos/sin table from float64 angles), attention over a float32 KV
/// cache, softmax, SwiGLU, residual stream. The embedding row is gathered on the host (exact float32
/// of the checkpoint value) and uploaded; logits come back as float32 widened to float64.
/// </summary>
public sealed class IlgpuFloatEngine : IInferenceEngine
{
    private sealed record Layer(MemoryBuffer1D<float, Stride1D.Dense> InputNorm, IDeviceLinear Q, IDeviceLinear K, IDeviceLinear V, IDeviceLinear O,
        MemoryBuffer1D<float, Stride1D.Dense> PostNorm, IDeviceLinear Gate, IDeviceLinear Up, IDeviceLinear Down,
        MemoryBuffer1D<float, Stride1D.Dense> Keys, MemoryBuffer1D<float, Stride1D.Dense> Values);

    private readonly LlamaConfig _c;
    private readonly IlgpuDevice _device;
    private readonly IDisposable _format;
    private readonly float[] _embedding;
    private readonly Layer[] _layers;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _finalNorm, _cos, _sin;
    private readonly IDeviceLinear _lmHead;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _x, _xb, _q, _k, _v, _att, _hb, _hb2, _scores, _inv, _logits;
    private readonly float _eps, _scale;
    private readonly List<IDisposable> _owned = [];

    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, float> _rmsInverse;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>> _rmsApply;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> _rope;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int> _copy;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, float> _scoresK;
    private readonly Action<Index1D, ArrayView<float>, int> _softmax;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int> _attOut;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>> _residual;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>> _swiGlu;

    public EngineInfo Info { get; }
    public LlamaConfig Config => _c;
    public int Position { get; private set; }

    /// <summary>Device bytes of the linear weights and their scales (all layers and lm_head).</summary>
    public long LinearWeightBytes { get; }

    /// <param name="makeLinear">Builds one linear layer from its tensor name and exact float32 weights [rows, cols].</param>
    public IlgpuFloatEngine(LlamaCheckpoint checkpoint, IlgpuDevice device, IDisposable format,
        Func<string, float[], int, int, IDeviceLinear> makeLinear, string name, string formatName, string scheme,
        IReadOnlyDictionary<string, string> precisions)
    {
        _c = checkpoint.Config;
        _device = device;
        _format = format;
        var acc = device.Accelerator;
        try
        {
            _embedding = checkpoint.ReadSingle(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
            MemoryBuffer1D<float, Stride1D.Dense> Own(MemoryBuffer1D<float, Stride1D.Dense> b) { _owned.Add(b); return b; }
            MemoryBuffer1D<float, Stride1D.Dense> Vec(string tensor) => Own(acc.Allocate1D(checkpoint.ReadSingle(checkpoint.Info(tensor))));
            MemoryBuffer1D<float, Stride1D.Dense> Zeros(long n) => Own(acc.Allocate1D<float>(n));
            IDeviceLinear Lin(TensorInfo t)
            {
                var l = makeLinear(t.Name, checkpoint.ReadSingle(t), t.Shape[0], t.Shape[1]);
                _owned.Add(l);
                return l;
            }

            int kvSize = _c.MaxPositionEmbeddings * _c.KvDim;
            _layers = new Layer[_c.NumHiddenLayers];
            for (int l = 0; l < _layers.Length; l++)
            {
                IDeviceLinear M(LayerWeight w) => Lin(checkpoint.Layer(l, w));
                _layers[l] = new Layer(Vec(LlamaCheckpoint.LayerTensorName(l, LayerWeight.InputNorm)), M(LayerWeight.Q), M(LayerWeight.K), M(LayerWeight.V), M(LayerWeight.O),
                    Vec(LlamaCheckpoint.LayerTensorName(l, LayerWeight.PostAttentionNorm)), M(LayerWeight.Gate), M(LayerWeight.Up), M(LayerWeight.Down),
                    Zeros(kvSize), Zeros(kvSize));
            }
            _finalNorm = Vec(LlamaCheckpoint.FinalNormName);
            var lmHeadInfo = checkpoint.LmHead;
            var lmHeadWeights = lmHeadInfo.Name == LlamaCheckpoint.EmbeddingName ? _embedding : checkpoint.ReadSingle(lmHeadInfo);
            _lmHead = makeLinear(LlamaCheckpoint.LmHeadName, lmHeadWeights, _c.VocabSize, _c.HiddenSize);
            _owned.Add(_lmHead);
            LinearWeightBytes = _layers.Sum(w => new[] { w.Q, w.K, w.V, w.O, w.Gate, w.Up, w.Down }.Sum(x => x.WeightBytes)) + _lmHead.WeightBytes;

            // RoPE table: float64 angles pos * theta^(-2i/hd) (as the reference engine), cos/sin rounded to float32.
            int half = _c.HeadDim / 2;
            var cos = new float[_c.MaxPositionEmbeddings * half];
            var sin = new float[cos.Length];
            for (int i = 0; i < half; i++)
            {
                double inv = Math.Pow(_c.RopeTheta, -2.0 * i / _c.HeadDim);
                for (int t = 0; t < _c.MaxPositionEmbeddings; t++) { cos[t * half + i] = (float)Math.Cos(t * inv); sin[t * half + i] = (float)Math.Sin(t * inv); }
            }
            _cos = Own(acc.Allocate1D(cos));
            _sin = Own(acc.Allocate1D(sin));

            int d = _c.HiddenSize;
            _x = Zeros(d); _xb = Zeros(d); _q = Zeros(d); _k = Zeros(_c.KvDim); _v = Zeros(_c.KvDim); _att = Zeros(d);
            _hb = Zeros(_c.IntermediateSize); _hb2 = Zeros(_c.IntermediateSize);
            _scores = Zeros((long)_c.NumAttentionHeads * _c.MaxPositionEmbeddings); _inv = Zeros(1); _logits = Zeros(_c.VocabSize);
            _eps = (float)_c.RmsNormEps;
            _scale = (float)(1.0 / Math.Sqrt(_c.HeadDim));

            _rmsInverse = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, float>(FloatKernels.RmsInverse);
            _rmsApply = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>>(FloatKernels.RmsApply);
            _rope = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(FloatKernels.Rope);
            _copy = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(FloatKernels.CopyTo);
            _scoresK = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, float>(FloatKernels.Scores);
            _softmax = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int>(FloatKernels.Softmax);
            _attOut = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(FloatKernels.AttentionOutput);
            _residual = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(FloatKernels.Residual);
            _swiGlu = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(FloatKernels.SwiGlu);

            var p = new Dictionary<string, string>(precisions)
            {
                ["norm/rope/attention/softmax/swiglu"] = "float32 on the device (one thread per output; sequential float32 sums; exp and rsqrt from IEEE +,*,/ only)",
                ["residual stream, kv cache"] = "float32 on the device",
                ["embedding"] = "host gather of the exact float32 row, uploaded per token",
                ["linear weight bytes"] = LinearWeightBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
            };
            Info = new EngineInfo(name, formatName, scheme, device.Description, p);
        }
        catch
        {
            DisposeAll();
            throw;
        }
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
        int pos = Position, d = _c.HiddenSize, hd = _c.HeadDim, kv = _c.KvDim, half = hd / 2;
        int heads = _c.NumAttentionHeads, group = _c.GroupSize, n = pos + 1;
        _x.View.CopyFromCPU(_embedding.AsSpan(token * d, d).ToArray());
        for (int l = 0; l < _layers.Length; l++)
        {
            var w = _layers[l];
            RmsNorm(_x.View, w.InputNorm.View, _xb.View);
            w.Q.Apply(_xb.View, _q.View); w.K.Apply(_xb.View, _k.View); w.V.Apply(_xb.View, _v.View);
            _rope(heads * half, _q.View, _cos.View, _sin.View, pos, half);
            _rope(_c.NumKeyValueHeads * half, _k.View, _cos.View, _sin.View, pos, half);
            _copy(kv, _k.View, w.Keys.View, pos * kv);
            _copy(kv, _v.View, w.Values.View, pos * kv);
            var scores = _scores.View.SubView(0, heads * n);
            _scoresK(heads * n, _q.View, w.Keys.View, scores, n, hd, kv, group, _scale);
            _softmax(heads, scores, n);
            _attOut(heads * hd, scores, w.Values.View, _att.View, n, hd, kv, group);
            w.O.Apply(_att.View, _xb.View);
            _residual(d, _x.View, _xb.View);

            RmsNorm(_x.View, w.PostNorm.View, _xb.View);
            w.Gate.Apply(_xb.View, _hb.View); w.Up.Apply(_xb.View, _hb2.View);
            _swiGlu(_c.IntermediateSize, _hb.View, _hb2.View);
            w.Down.Apply(_hb.View, _xb.View);
            _residual(d, _x.View, _xb.View);
        }
        Position = pos + 1;
        if (!computeLogits) { _device.Accelerator.Synchronize(); return null; }
        RmsNorm(_x.View, _finalNorm.View, _xb.View);
        _lmHead.Apply(_xb.View, _logits.View);
        var logits = new float[_c.VocabSize];
        _logits.View.CopyToCPU(logits);
        var result = new double[logits.Length];
        for (int i = 0; i < logits.Length; i++) result[i] = logits[i];
        return result;
    }

    private void RmsNorm(ArrayView<float> x, ArrayView<float> weight, ArrayView<float> output)
    {
        _rmsInverse(1, x, _inv.View, _c.HiddenSize, _eps);
        _rmsApply(_c.HiddenSize, x, _inv.View, weight, output);
    }

    private void DisposeAll()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
        _format.Dispose();
        _device.Dispose();
    }

    public void Dispose() => DisposeAll();
}
