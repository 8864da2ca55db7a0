using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// The float64 decoder-layer forward the INT4 calibrations drive one layer (and one sub-block) at a time, over every
/// calibration sequence at once: the calibrations need a layer's input computed from weights they have just replaced
/// (sequential GPTQ) and the output of the attention or MLP sub-block under candidate weights (AWQ's loss), which the
/// whole-model <see cref="Oracle.ReferenceEngine"/> cannot give without rerunning every layer. The arithmetic is the
/// reference engine's, operation for operation and in the same order (sequential dot products, RMSNorm
/// w * (x * 1/sqrt(mean + eps)), rotate-half RoPE from the same <see cref="FloatRope"/>, max-subtracted softmax,
/// x / (1 + exp(-x)) * up), so with the checkpoint's weights every linear input equals the reference engine's bit for
/// bit (tested). Rows are tokens, row-major; each sequence starts at position 0 and attends causally to itself only.
/// </summary>
internal sealed class CalibrationForward
{
    private readonly LlamaConfig _c;
    private readonly FloatRope _rope;
    private readonly int[] _sequenceOfToken, _positionOfToken, _startOfSequence;

    public CalibrationForward(LlamaConfig config, IReadOnlyList<int[]> sequences)
    {
        _c = config;
        _rope = new FloatRope(config.HeadDim, config.MaxPositionEmbeddings, config.RopeTheta, config.RopeScaling);
        Sequences = sequences;
        Tokens = sequences.Sum(s => s.Length);
        _sequenceOfToken = new int[Tokens];
        _positionOfToken = new int[Tokens];
        _startOfSequence = new int[sequences.Count];
        int t = 0;
        for (int s = 0; s < sequences.Count; s++)
        {
            if (sequences[s].Length > config.MaxPositionEmbeddings)
                throw new ArgumentException($"calibration prompt {s} has {sequences[s].Length} tokens, more than the model's {config.MaxPositionEmbeddings} positions");
            _startOfSequence[s] = t;
            for (int p = 0; p < sequences[s].Length; p++, t++) { _sequenceOfToken[t] = s; _positionOfToken[t] = p; }
        }
    }

    public IReadOnlyList<int[]> Sequences { get; }
    /// <summary>Calibration tokens over all sequences (the rows of every activation matrix).</summary>
    public int Tokens { get; }
    public LlamaConfig Config => _c;

    /// <summary>One decoder layer's weights as float64 arrays (exact widenings of the checkpoint values).</summary>
    public static LayerWeights<double[], double[]> ReadLayer(LlamaCheckpoint checkpoint, int layer)
    {
        double[] Read(LayerWeight w) => checkpoint.ReadDouble(checkpoint.Layer(layer, w));
        double[]? Optional(LayerWeight w) => checkpoint.OptionalLayer(layer, w) is { } t ? checkpoint.ReadDouble(t) : null;
        return new LayerWeights<double[], double[]>(Read(LayerWeight.InputNorm), Read(LayerWeight.Q), Optional(LayerWeight.QBias),
            Read(LayerWeight.K), Optional(LayerWeight.KBias), Read(LayerWeight.V), Optional(LayerWeight.VBias),
            Read(LayerWeight.O), Optional(LayerWeight.OBias), Optional(LayerWeight.QNorm), Optional(LayerWeight.KNorm),
            Read(LayerWeight.PostAttentionNorm), Read(LayerWeight.Gate), Read(LayerWeight.Up), Read(LayerWeight.Down));
    }

    /// <summary>The residual stream at the first layer: the embedding rows of every token, [Tokens, hidden].</summary>
    public double[] Embed(LlamaCheckpoint checkpoint)
    {
        int d = _c.HiddenSize;
        var embedding = checkpoint.ReadDouble(checkpoint.Info(LlamaCheckpoint.EmbeddingName));
        var x = new double[Tokens * d];
        int t = 0;
        foreach (var sequence in Sequences)
            foreach (int token in sequence)
            {
                if ((uint)token >= (uint)_c.VocabSize)
                    throw new ArgumentException($"calibration token {token} is outside the model's vocabulary of {_c.VocabSize}");
                Array.Copy(embedding, (long)token * d, x, (long)t++ * d, d);
            }
        return x;
    }

    /// <summary>RMSNorm of every row of <paramref name="x"/> with <paramref name="weight"/>.</summary>
    public double[] RmsNorm(double[] x, double[] weight)
    {
        int d = weight.Length;
        var y = new double[x.Length];
        for (int t = 0; t < x.Length / d; t++) NormRow(y.AsSpan(t * d, d), x.AsSpan(t * d, d), weight);
        return y;
    }

    private void NormRow(Span<double> output, ReadOnlySpan<double> x, ReadOnlySpan<double> weight)
    {
        double ss = 0;
        for (int i = 0; i < x.Length; i++) ss += x[i] * x[i];
        double inv = 1.0 / Math.Sqrt(ss / x.Length + _c.RmsNormEps);
        for (int i = 0; i < x.Length; i++) output[i] = weight[i] * (x[i] * inv);
    }

    /// <summary>Y = X Wᵀ (+ bias): X [T, cols], W [rows, cols] row-major, Y [T, rows]; sequential dot products.</summary>
    public static double[] Linear(double[] x, double[] w, double[]? bias, int rows)
    {
        int cols = w.Length / rows, tokens = x.Length / cols;
        var y = new double[tokens * rows];
        Parallel.For(0, tokens, t =>
        {
            ReadOnlySpan<double> input = x.AsSpan(t * cols, cols);
            for (int r = 0; r < rows; r++)
            {
                ReadOnlySpan<double> row = w.AsSpan(r * cols, cols);
                double s = 0;
                for (int i = 0; i < cols; i++) s += row[i] * input[i];
                y[t * rows + r] = bias is null ? s : s + bias[r];
            }
        });
        return y;
    }

    /// <summary>
    /// The attention mix of a layer for normed input <paramref name="normed"/>: q, k, v projections (+ bias), q/k norm
    /// where the family has it, RoPE, causal grouped-query softmax attention per sequence; [Tokens, QDim], the input
    /// of o_proj.
    /// </summary>
    public double[] AttentionMix(LayerWeights<double[], double[]> w, double[] normed)
    {
        int hd = _c.HeadDim, qDim = _c.QDim, kvDim = _c.KvDim;
        var q = Linear(normed, w.Q, w.QBias, qDim);
        var k = Linear(normed, w.K, w.KBias, kvDim);
        var v = Linear(normed, w.V, w.VBias, kvDim);
        if (_c.QkNorm)
        {
            for (int i = 0; i < q.Length; i += hd) NormRow(q.AsSpan(i, hd), q.AsSpan(i, hd), w.QNorm!);
            for (int i = 0; i < k.Length; i += hd) NormRow(k.AsSpan(i, hd), k.AsSpan(i, hd), w.KNorm!);
        }
        for (int t = 0; t < Tokens; t++)
        {
            int pos = _positionOfToken[t];
            for (int h = 0; h < _c.NumAttentionHeads; h++) Rope(q.AsSpan(t * qDim + h * hd, hd), pos);
            for (int h = 0; h < _c.NumKeyValueHeads; h++) Rope(k.AsSpan(t * kvDim + h * hd, hd), pos);
        }
        var output = new double[Tokens * qDim];
        double scale = 1.0 / Math.Sqrt(hd);
        Parallel.For(0, Tokens, t =>
        {
            int start = _startOfSequence[_sequenceOfToken[t]], pos = _positionOfToken[t];
            var scores = new double[pos + 1];
            for (int h = 0; h < _c.NumAttentionHeads; h++)
            {
                int kvHead = h / _c.GroupSize;
                ReadOnlySpan<double> qh = q.AsSpan(t * qDim + h * hd, hd);
                for (int j = 0; j <= pos; j++)
                {
                    ReadOnlySpan<double> kj = k.AsSpan((start + j) * kvDim + kvHead * hd, hd);
                    double dot = 0;
                    for (int i = 0; i < hd; i++) dot += qh[i] * kj[i];
                    scores[j] = dot * scale;
                }
                double max = double.NegativeInfinity;
                foreach (double s in scores) max = Math.Max(max, s);
                double sum = 0;
                for (int j = 0; j <= pos; j++) { scores[j] = Math.Exp(scores[j] - max); sum += scores[j]; }
                for (int j = 0; j <= pos; j++) scores[j] /= sum;
                Span<double> o = output.AsSpan(t * qDim + h * hd, hd);
                for (int j = 0; j <= pos; j++)
                {
                    ReadOnlySpan<double> vj = v.AsSpan((start + j) * kvDim + kvHead * hd, hd);
                    for (int i = 0; i < hd; i++) o[i] += scores[j] * vj[i];
                }
            }
        });
        return output;
    }

    /// <summary>The self-attention sub-block's output (o_proj of the mix, before the residual add), [Tokens, hidden].</summary>
    public double[] AttentionBlock(LayerWeights<double[], double[]> w, double[] normed) =>
        Linear(AttentionMix(w, normed), w.O, w.OBias, _c.HiddenSize);

    /// <summary>silu(gate) * up of the MLP for normed input, [Tokens, intermediate]: the input of down_proj.</summary>
    public double[] SwiGlu(LayerWeights<double[], double[]> w, double[] normed)
    {
        var gate = Linear(normed, w.Gate, null, _c.IntermediateSize);
        var up = Linear(normed, w.Up, null, _c.IntermediateSize);
        for (int i = 0; i < gate.Length; i++) gate[i] = gate[i] / (1.0 + Math.Exp(-gate[i])) * up[i];
        return gate;
    }

    /// <summary>The MLP sub-block's output (down_proj of the SwiGLU), [Tokens, hidden].</summary>
    public double[] MlpBlock(LayerWeights<double[], double[]> w, double[] normed) =>
        Linear(SwiGlu(w, normed), w.Down, null, _c.HiddenSize);

    /// <summary>a + b elementwise (the residual add).</summary>
    public static double[] Add(double[] a, double[] b)
    {
        var y = new double[a.Length];
        for (int i = 0; i < y.Length; i++) y[i] = a[i] + b[i];
        return y;
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
}
