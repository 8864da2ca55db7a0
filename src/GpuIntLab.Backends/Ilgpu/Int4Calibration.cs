using GpuIntLab.Core.Formats.WeightOnly;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// A model's decoder linears quantized to INT4 g128, ready for any backend: the matrices (lm_head is not among them:
/// the recipes keep it in 16 bits), the vectors the quantizer changed (AWQ folds its input scales into the RMSNorm
/// weights, and into v_proj's bias when it scales o_proj), and what calibration measured.
/// </summary>
/// <param name="Linears">Every decoder linear by tensor name; no matrix carries AWQ channel scales (they are folded).</param>
/// <param name="FoldedVectors">Replacement values of checkpoint vectors by tensor name, float64 (AWQ only; empty otherwise): a
/// backend must use them (rounded to its own precision) instead of the checkpoint's, or the folded model is wrong.</param>
/// <param name="InputScales">AWQ only: per scaled linear, the s its columns were multiplied by (its input is divided by s
/// through the folded producer); up_proj's rows are also divided by down_proj's s.</param>
/// <param name="CalibrationTokens">Calibration tokens over all prompts (0 for RTN).</param>
/// <param name="Errors">Per linear, the relative output error ‖X(Ŵ - W)ᵀ‖² / ‖XWᵀ‖² on the calibration inputs the method
/// saw, and RTN's (the rtn scheme's grid) on the same inputs, in calibration order (empty for RTN).</param>
public sealed record Int4QuantizedModel(IReadOnlyDictionary<string, Int4Matrix> Linears, IReadOnlyDictionary<string, double[]> FoldedVectors,
    IReadOnlyDictionary<string, float[]> InputScales, int CalibrationTokens, IReadOnlyList<(string Name, double Method, double Rtn)> Errors);

/// <summary>
/// The INT4 weight-only quantization driver of the lab's schemes <c>int4-g128-{rtn, gptq, gptq-act, awq}-{sym, asym}</c>
/// (<see cref="QuantizeAll"/>), shared by every backend that runs them. Calibration runs the float64
/// <see cref="CalibrationForward"/> over the experiment's calibration prompts, one decoder layer at a time, as the
/// reference implementations loop over layers:
/// <list type="bullet">
/// <item>GPTQ (IST-DASLab/gptq <c>llama.py</c> with <c>--true-sequential</c>; act-order = <c>--act-order</c>): layer l's
/// inputs come from layers &lt; l with their quantized weights; within the layer, (q, k, v) are quantized from the Hessian
/// of their common input, then o from the attention mix computed with the quantized q/k/v, then (gate, up) from the
/// post-attention norm of the residual stream after the quantized o, then down from the SwiGLU of the quantized gate/up.
/// Each Hessian is H = (2/N) Σ x xᵀ over all calibration tokens (<see cref="GptqHessian"/>), damp 0.01, block 128.</item>
/// <item>AWQ (mit-han-lab/llm-awq <c>run_awq</c>: <c>auto_scale_block</c>, <c>apply_scale</c>, <c>auto_clip_block</c>,
/// <c>apply_clip</c>): each layer's inputs are the full-precision outputs of the previous layers (scaling is exact in
/// full precision, so these are also the scaled model's); scale search per group sharing an input with the loss where the
/// reference measures it (q/k/v: the self_attn output, o in full precision; gate/up: the MLP output, down in full
/// precision; down: its own output; v → o only when v's and o's shapes match), then every scale applied (the RMSNorm
/// weights and up_proj's / v_proj's rows divided by s, the columns of the consumers multiplied), then the clip search
/// on v, o, gate, up and down (not q and k) with their scaled inputs, then RTN on AWQ's grid.</item>
/// </list>
/// </summary>
public static class Int4Calibration
{
    /// <summary>Input columns per group.</summary>
    public const int GroupSize = 128;

    /// <summary>The schemes <see cref="QuantizeAll"/> accepts.</summary>
    public static IReadOnlyList<string> Schemes { get; } =
    [
        "int4-g128-rtn-asym", "int4-g128-rtn-sym", "int4-g128-gptq-asym", "int4-g128-gptq-sym",
        "int4-g128-gptq-act-asym", "int4-g128-gptq-act-sym", "int4-g128-awq-asym", "int4-g128-awq-sym",
    ];

    /// <summary>The quantizer of a scheme: "rtn", "gptq", "gptq-act" or "awq", and whether its grid is symmetric.</summary>
    public static (string Method, bool Symmetric) Parse(string scheme)
    {
        if (!Schemes.Contains(scheme))
            throw new ArgumentException($"unknown INT4 scheme '{scheme}' (expected one of {string.Join(", ", Schemes)})", nameof(scheme));
        bool symmetric = scheme.EndsWith("-sym", StringComparison.Ordinal);
        string method = scheme["int4-g128-".Length..^(symmetric ? "-sym".Length : "-asym".Length)];
        return (method, symmetric);
    }

    /// <summary>Every decoder linear of <paramref name="checkpoint"/> quantized under <paramref name="scheme"/>; calibration prompts from <paramref name="options"/>.</summary>
    public static Int4QuantizedModel QuantizeAll(LlamaCheckpoint checkpoint, EngineOptions options, string scheme)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentNullException.ThrowIfNull(options);
        var (method, symmetric) = Parse(scheme);
        if (method == "rtn") return Rtn(checkpoint, symmetric);
        var (prompts, _) = BlockSchemes.CalibrationPrompts(checkpoint, options, $"INT4 {scheme}");
        var forward = new CalibrationForward(checkpoint.Config, prompts);
        return method == "awq"
            ? Awq(checkpoint, forward, symmetric)
            : SequentialGptq(checkpoint, forward, new GptqOptions(GroupSize, symmetric, ActOrder: method == "gptq-act"));
    }

    private static readonly LayerWeight[] s_linears = [LayerWeight.Q, LayerWeight.K, LayerWeight.V, LayerWeight.O, LayerWeight.Gate, LayerWeight.Up, LayerWeight.Down];

    private static Int4QuantizedModel Rtn(LlamaCheckpoint checkpoint, bool symmetric)
    {
        var result = new Dictionary<string, Int4Matrix>(StringComparer.Ordinal);
        for (int l = 0; l < checkpoint.Config.NumHiddenLayers; l++)
            foreach (var w in s_linears)
            {
                var info = checkpoint.Layer(l, w);
                result[info.Name] = Int4Rtn.Quantize(checkpoint.ReadDouble(info), info.Shape[0], info.Shape[1], GroupSize, symmetric);
            }
        return new Int4QuantizedModel(result, new Dictionary<string, double[]>(), new Dictionary<string, float[]>(), 0, []);
    }

    /// <summary>Sequential, true-sequential GPTQ (see the class summary); the layer arrays are overwritten with their dequantized values as each group is done.</summary>
    private static Int4QuantizedModel SequentialGptq(LlamaCheckpoint checkpoint, CalibrationForward forward, GptqOptions options)
    {
        var c = checkpoint.Config;
        var result = new Dictionary<string, Int4Matrix>(StringComparer.Ordinal);
        var errors = new List<(string, double, double)>();
        double[] hidden = forward.Embed(checkpoint);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var w = CalibrationForward.ReadLayer(checkpoint, l);
            void QuantizeGroup(double[] inputs, params (LayerWeight Weight, double[] Values, int Rows)[] linears)
            {
                int cols = linears[0].Values.Length / linears[0].Rows;
                var hessian = new GptqHessian(cols);
                hessian.Add(inputs, forward.Tokens);
                double[] h = hessian.Build();
                foreach (var (weight, values, rows) in linears)
                {
                    string name = LlamaCheckpoint.LayerTensorName(l, weight);
                    var original = (double[])values.Clone();
                    var matrix = Gptq.QuantizeWithHessian(original, rows, cols, h, options).Matrix;
                    result[name] = matrix;
                    matrix.DequantizeAll().CopyTo(values, 0);
                    var rtn = Int4Rtn.Quantize(original, rows, cols, GroupSize, options.Symmetric).DequantizeAll();
                    errors.Add((name, RelativeError(inputs, original, values, rows), RelativeError(inputs, original, rtn, rows)));
                }
            }

            double[] attentionInput = forward.RmsNorm(hidden, w.InputNorm);
            QuantizeGroup(attentionInput, (LayerWeight.Q, w.Q, c.QDim), (LayerWeight.K, w.K, c.KvDim), (LayerWeight.V, w.V, c.KvDim));
            double[] mix = forward.AttentionMix(w, attentionInput);
            QuantizeGroup(mix, (LayerWeight.O, w.O, c.HiddenSize));
            hidden = CalibrationForward.Add(hidden, CalibrationForward.Linear(mix, w.O, w.OBias, c.HiddenSize));
            double[] mlpInput = forward.RmsNorm(hidden, w.PostNorm);
            QuantizeGroup(mlpInput, (LayerWeight.Gate, w.Gate, c.IntermediateSize), (LayerWeight.Up, w.Up, c.IntermediateSize));
            double[] swiGlu = forward.SwiGlu(w, mlpInput);
            QuantizeGroup(swiGlu, (LayerWeight.Down, w.Down, c.HiddenSize));
            hidden = CalibrationForward.Add(hidden, CalibrationForward.Linear(swiGlu, w.Down, null, c.HiddenSize));
        }
        return new Int4QuantizedModel(result, new Dictionary<string, double[]>(), new Dictionary<string, float[]>(), forward.Tokens, errors);
    }

    /// <summary>AWQ, llm-awq's layer loop (see the class summary).</summary>
    private static Int4QuantizedModel Awq(LlamaCheckpoint checkpoint, CalibrationForward forward, bool symmetric)
    {
        var c = checkpoint.Config;
        var options = new AwqOptions(GroupSize, symmetric);
        var result = new Dictionary<string, Int4Matrix>(StringComparer.Ordinal);
        var folded = new Dictionary<string, double[]>(StringComparer.Ordinal);
        var inputScales = new Dictionary<string, float[]>(StringComparer.Ordinal);
        var errors = new List<(string, double, double)>();
        int d = c.HiddenSize, tokens = forward.Tokens;
        // llm-awq scales o_proj by v_proj's rows only when the two weights have the same shape (not under grouped-query attention).
        bool scaleO = c.KvDim == c.HiddenSize && c.QDim == c.HiddenSize;
        double[] hidden = forward.Embed(checkpoint);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var fp = CalibrationForward.ReadLayer(checkpoint, l);
            // Full-precision activations of the layer (the reference's input_feat, captured before any scaling).
            double[] attentionInput = forward.RmsNorm(hidden, fp.InputNorm);
            double[] mix = forward.AttentionMix(fp, attentionInput);
            double[] attentionOut = CalibrationForward.Linear(mix, fp.O, fp.OBias, d);
            double[] afterAttention = CalibrationForward.Add(hidden, attentionOut);
            double[] mlpInput = forward.RmsNorm(afterAttention, fp.PostNorm);
            double[] swiGlu = forward.SwiGlu(fp, mlpInput);
            double[] mlpOut = CalibrationForward.Linear(swiGlu, fp.Down, null, d);
            double[] next = CalibrationForward.Add(afterAttention, mlpOut);

            double[] Trial(double[] w, int rows, float[] s) => QuantizeDequantizeScaled(w, rows, s, options);
            // auto_scale_block: every search on the unscaled full-precision layer.
            var qkvScale = Core.Formats.WeightOnly.Awq.SearchScales(Core.Formats.WeightOnly.Awq.MeanAbs(attentionInput, tokens, d), options.GridPoints, s =>
                MeanSquaredDifference(forward.AttentionBlock(fp with { Q = Trial(fp.Q, c.QDim, s), K = Trial(fp.K, c.KvDim, s), V = Trial(fp.V, c.KvDim, s) }, attentionInput), attentionOut)).Scales;
            float[]? oScale = scaleO
                ? Core.Formats.WeightOnly.Awq.SearchScales(Core.Formats.WeightOnly.Awq.MeanAbs(mix, tokens, c.QDim), options.GridPoints, s =>
                    MeanSquaredDifference(CalibrationForward.Linear(mix, Trial(fp.O, d, s), fp.OBias, d), attentionOut)).Scales
                : null;
            var gateUpScale = Core.Formats.WeightOnly.Awq.SearchScales(Core.Formats.WeightOnly.Awq.MeanAbs(mlpInput, tokens, d), options.GridPoints, s =>
                MeanSquaredDifference(forward.MlpBlock(fp with { Gate = Trial(fp.Gate, c.IntermediateSize, s), Up = Trial(fp.Up, c.IntermediateSize, s) }, mlpInput), mlpOut)).Scales;
            var downScale = Core.Formats.WeightOnly.Awq.SearchScales(Core.Formats.WeightOnly.Awq.MeanAbs(swiGlu, tokens, c.IntermediateSize), options.GridPoints, s =>
                MeanSquaredDifference(CalibrationForward.Linear(swiGlu, Trial(fp.Down, d, s), null, d), mlpOut)).Scales;

            // apply_scale, in the reference's order (qkv, o, gate/up, down): producers divided by s, consumers' columns multiplied.
            var scaled = new Dictionary<LayerWeight, double[]>
            {
                [LayerWeight.Q] = ScaleColumns(fp.Q, c.QDim, qkvScale), [LayerWeight.K] = ScaleColumns(fp.K, c.KvDim, qkvScale),
                [LayerWeight.V] = ScaleColumns(fp.V, c.KvDim, qkvScale), [LayerWeight.O] = fp.O,
            };
            folded[LlamaCheckpoint.LayerTensorName(l, LayerWeight.InputNorm)] = (DivideRows(fp.InputNorm, 1, qkvScale));
            double[] oInput = mix;
            if (oScale != null)
            {
                scaled[LayerWeight.V] = DivideRows(scaled[LayerWeight.V], d, oScale);
                if (fp.VBias != null) folded[LlamaCheckpoint.LayerTensorName(l, LayerWeight.VBias)] = (DivideRows(fp.VBias, 1, oScale));
                scaled[LayerWeight.O] = ScaleColumns(fp.O, d, oScale);
                oInput = DivideColumns(mix, c.QDim, oScale);
            }
            folded[LlamaCheckpoint.LayerTensorName(l, LayerWeight.PostAttentionNorm)] = (DivideRows(fp.PostNorm, 1, gateUpScale));
            scaled[LayerWeight.Gate] = ScaleColumns(fp.Gate, c.IntermediateSize, gateUpScale);
            scaled[LayerWeight.Up] = DivideRows(ScaleColumns(fp.Up, c.IntermediateSize, gateUpScale), d, downScale);
            scaled[LayerWeight.Down] = ScaleColumns(fp.Down, d, downScale);
            foreach (var (weight, scale) in new[] { (LayerWeight.Q, qkvScale), (LayerWeight.K, qkvScale), (LayerWeight.V, qkvScale), (LayerWeight.O, oScale),
                         (LayerWeight.Gate, gateUpScale), (LayerWeight.Up, gateUpScale), (LayerWeight.Down, downScale) })
                if (scale != null) inputScales[LlamaCheckpoint.LayerTensorName(l, weight)] = scale;
            // The recorded inputs divided by the scales, as apply_scale does to input_feat for the clip search.
            var inputs = new Dictionary<LayerWeight, double[]>
            {
                [LayerWeight.Q] = DivideColumns(attentionInput, d, qkvScale), [LayerWeight.O] = oInput,
                [LayerWeight.Gate] = DivideColumns(mlpInput, d, gateUpScale), [LayerWeight.Down] = DivideColumns(swiGlu, c.IntermediateSize, downScale),
            };
            inputs[LayerWeight.K] = inputs[LayerWeight.V] = inputs[LayerWeight.Q];
            inputs[LayerWeight.Up] = inputs[LayerWeight.Gate];
            var original = new Dictionary<LayerWeight, (double[] W, double[] X)>
            {
                [LayerWeight.Q] = (fp.Q, attentionInput), [LayerWeight.K] = (fp.K, attentionInput), [LayerWeight.V] = (fp.V, attentionInput),
                [LayerWeight.O] = (fp.O, mix), [LayerWeight.Gate] = (fp.Gate, mlpInput), [LayerWeight.Up] = (fp.Up, mlpInput), [LayerWeight.Down] = (fp.Down, swiGlu),
            };

            foreach (var weight in s_linears)
            {
                double[] w = scaled[weight];
                int rows = LlamaCheckpoint.ExpectedShape(c, weight)[0], cols = w.Length / rows;
                // auto_clip_block skips q and k: their error passes through the q·k product, which a per-linear MSE does not see.
                double[] final = weight is LayerWeight.Q or LayerWeight.K
                    ? w
                    : Core.Formats.WeightOnly.Awq.ApplyClip(w, rows, cols, Core.Formats.WeightOnly.Awq.SearchClip(w, rows, cols, inputs[weight], tokens, options), GroupSize);
                var matrix = Int4Rtn.Quantize(final, rows, cols, GroupSize, symmetric, Int4GridRule.Awq);
                string name = LlamaCheckpoint.LayerTensorName(l, weight);
                result[name] = matrix;
                var (ow, ox) = original[weight];
                errors.Add((name, RelativeError(inputs[weight], w, matrix.DequantizeAll(), rows),
                    RelativeError(ox, ow, Int4Rtn.Quantize(ow, rows, cols, GroupSize, symmetric).DequantizeAll(), rows)));
            }
            hidden = next;
        }
        return new Int4QuantizedModel(result, folded, inputScales, tokens, errors);
    }

    /// <summary>Q(W·s)/s: AWQ's trial weights in the original space (the reference's <c>w_quantize_func(W·s) / s</c>).</summary>
    private static double[] QuantizeDequantizeScaled(double[] w, int rows, float[] s, AwqOptions options)
    {
        int cols = w.Length / rows;
        var q = Int4Rtn.Quantize(Core.Formats.WeightOnly.Awq.ScaleColumns(w, rows, cols, s), rows, cols, options.GroupSize, options.Symmetric, options.Grid).DequantizeAll();
        for (int r = 0; r < rows; r++)
            for (int col = 0; col < cols; col++) q[r * cols + col] /= s[col];
        return q;
    }

    private static double[] ScaleColumns(double[] w, int rows, float[] s) => Core.Formats.WeightOnly.Awq.ScaleColumns(w, rows, w.Length / rows, s);

    /// <summary>Row r of row-major [s.Length, cols] divided by s_r (a producer's output channels; a vector when cols = 1).</summary>
    private static double[] DivideRows(double[] w, int cols, float[] s)
    {
        var y = new double[w.Length];
        for (int i = 0; i < w.Length; i++) y[i] = w[i] / s[i / cols];
        return y;
    }

    /// <summary>Column c of row-major [*, cols] divided by s_c (recorded inputs of a scaled consumer).</summary>
    private static double[] DivideColumns(double[] x, int cols, float[] s)
    {
        var y = new double[x.Length];
        for (int i = 0; i < x.Length; i++) y[i] = x[i] / s[i % cols];
        return y;
    }

    private static double MeanSquaredDifference(double[] a, double[] b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) { double diff = a[i] - b[i]; sum += diff * diff; }
        return sum / a.Length;
    }

    /// <summary>‖X(Ŵ - W)ᵀ‖² / ‖XWᵀ‖² over the rows of X.</summary>
    internal static double RelativeError(double[] x, double[] w, double[] quantized, int rows)
    {
        var exact = CalibrationForward.Linear(x, w, null, rows);
        var approximate = CalibrationForward.Linear(x, quantized, null, rows);
        double error = 0, norm = 0;
        for (int i = 0; i < exact.Length; i++)
        {
            double diff = approximate[i] - exact[i];
            error += diff * diff;
            norm += exact[i] * exact[i];
        }
        return norm == 0 ? 0 : error / norm;
    }
}
