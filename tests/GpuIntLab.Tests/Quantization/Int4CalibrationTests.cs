using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Formats.WeightOnly;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using GpuIntLab.Tests.Engines;
using Xunit;

namespace GpuIntLab.Tests.Quantization;

/// <summary>
/// The INT4 calibration driver (<see cref="Int4Calibration"/>): its float64 layer forward against the reference engine,
/// sequential GPTQ against GPTQ recomputed on the inputs of the finished quantized model, AWQ's clip search against a
/// brute force written here, and AWQ's folding against the unfolded scaled model.
/// </summary>
public class Int4CalibrationTests
{
    private static readonly int[][] s_prompts = [[1, 450, 4996, 17354, 1701, 29916, 432, 17204], [1, 3118, 2501, 263, 931, 29892]];

    public static TheoryData<string> ForwardModels() => ["conformance", "tiny-qwen2", "tiny-qwen3"];

    private static (string Folder, int[][] Prompts) Model(string name)
    {
        if (name == "conformance") return (TestData.ConformanceBf16, s_prompts);
        var model = FamilyConformance.Model(name);
        var ids = model.Case("greedy-0").InputIds;
        return (model.Folder, [ids.Take(9).ToArray(), ids.Skip(3).Take(6).ToArray()]);
    }

    /// <summary>
    /// With the checkpoint's weights, every linear input of <see cref="CalibrationForward"/> (all prompts at once) equals
    /// the reference engine's (one prompt at a time, through its activation hook) bit for bit: same float64 operations in
    /// the same order. Covers biases (Qwen2) and q/k norms (Qwen3).
    /// </summary>
    [Theory]
    [MemberData(nameof(ForwardModels))]
    public void ForwardEqualsTheReferenceEngineBitForBit(string name)
    {
        var (folder, prompts) = Model(name);
        using var checkpoint = LlamaCheckpoint.Open(folder);
        var c = checkpoint.Config;
        var observed = new Dictionary<string, List<double>>();
        using (var reference = new ReferenceEngine(checkpoint))
        {
            reference.ActivationObserver = (tensor, x) =>
            {
                if (!observed.TryGetValue(tensor, out var list)) observed[tensor] = list = [];
                list.AddRange(x.ToArray());
            };
            foreach (var p in prompts) { reference.Reset(); reference.Prefill(p); }
        }
        var forward = new CalibrationForward(c, prompts);
        double[] hidden = forward.Embed(checkpoint);
        void Same(int layer, LayerWeight w, double[] x) =>
            Assert.True(observed[LlamaCheckpoint.LayerTensorName(layer, w)].SequenceEqual(x), $"{name} layer {layer} {w} input differs from the reference engine's");
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var w = CalibrationForward.ReadLayer(checkpoint, l);
            var x1 = forward.RmsNorm(hidden, w.InputNorm);
            Same(l, LayerWeight.Q, x1);
            var mix = forward.AttentionMix(w, x1);
            Same(l, LayerWeight.O, mix);
            hidden = CalibrationForward.Add(hidden, CalibrationForward.Linear(mix, w.O, w.OBias, c.HiddenSize));
            var x2 = forward.RmsNorm(hidden, w.PostNorm);
            Same(l, LayerWeight.Gate, x2);
            var s = forward.SwiGlu(w, x2);
            Same(l, LayerWeight.Down, s);
            hidden = CalibrationForward.Add(hidden, CalibrationForward.Linear(s, w.Down, null, c.HiddenSize));
        }
    }

    /// <summary>
    /// Sequential, true-sequential GPTQ: every linear's codes equal GPTQ run on the Hessian of that linear's input in the
    /// finished quantized model (whose inputs to a group depend only on the earlier, already-quantized groups), and
    /// differ for some linear from GPTQ on the unquantized model's inputs (the old, non-sequential calibration).
    /// </summary>
    [Theory]
    [InlineData("int4-g128-gptq-sym")]
    [InlineData("int4-g128-gptq-act-asym")]
    public void GptqCalibratesEachGroupOnTheQuantizedModelsInputs(string scheme)
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        var c = checkpoint.Config;
        var model = Int4Calibration.QuantizeAll(checkpoint, new EngineOptions(scheme, "cpu", CalibrationPrompts: s_prompts), scheme);
        var (_, symmetric) = Int4Calibration.Parse(scheme);
        var options = new GptqOptions(128, symmetric, ActOrder: scheme.Contains("-act-"));
        var forward = new CalibrationForward(c, s_prompts);
        double[] quantizedHidden = forward.Embed(checkpoint), fullHidden = quantizedHidden;
        int differFromUnquantizedInputs = 0;
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var fp = CalibrationForward.ReadLayer(checkpoint, l);
            double[] Dq(LayerWeight w) => model.Linears[LlamaCheckpoint.LayerTensorName(l, w)].DequantizeAll();
            var q = fp with { Q = Dq(LayerWeight.Q), K = Dq(LayerWeight.K), V = Dq(LayerWeight.V), O = Dq(LayerWeight.O), Gate = Dq(LayerWeight.Gate), Up = Dq(LayerWeight.Up), Down = Dq(LayerWeight.Down) };
            var (quantizedInputs, nextQuantized) = Inputs(forward, q, quantizedHidden);
            var (fullInputs, nextFull) = Inputs(forward, fp, fullHidden);
            foreach (var (weight, original) in new[] { (LayerWeight.Q, fp.Q), (LayerWeight.K, fp.K), (LayerWeight.V, fp.V), (LayerWeight.O, fp.O), (LayerWeight.Gate, fp.Gate), (LayerWeight.Up, fp.Up), (LayerWeight.Down, fp.Down) })
            {
                int rows = LlamaCheckpoint.ExpectedShape(c, weight)[0], cols = original.Length / rows;
                var expected = Gptq.Quantize(original, rows, cols, quantizedInputs[weight], forward.Tokens, options).Matrix;
                var actual = model.Linears[LlamaCheckpoint.LayerTensorName(l, weight)];
                Assert.Equal(expected.Codes, actual.Codes);
                Assert.Equal(expected.Scales, actual.Scales);
                Assert.Equal(expected.GroupOfColumn, actual.GroupOfColumn);
                if (!Gptq.Quantize(original, rows, cols, fullInputs[weight], forward.Tokens, options).Matrix.Codes.SequenceEqual(actual.Codes)) differFromUnquantizedInputs++;
            }
            quantizedHidden = nextQuantized;
            fullHidden = nextFull;
        }
        Assert.True(differFromUnquantizedInputs > 0, "sequential calibration should change some linear's codes");
        Assert.Equal(c.NumHiddenLayers * 7, model.Errors.Count);
    }

    private static (Dictionary<LayerWeight, double[]> Inputs, double[] Next) Inputs(CalibrationForward forward, LayerWeights<double[], double[]> w, double[] hidden)
    {
        var c = forward.Config;
        var x1 = forward.RmsNorm(hidden, w.InputNorm);
        var mix = forward.AttentionMix(w, x1);
        var h1 = CalibrationForward.Add(hidden, CalibrationForward.Linear(mix, w.O, w.OBias, c.HiddenSize));
        var x2 = forward.RmsNorm(h1, w.PostNorm);
        var s = forward.SwiGlu(w, x2);
        var next = CalibrationForward.Add(h1, CalibrationForward.Linear(s, w.Down, null, c.HiddenSize));
        return (new() { [LayerWeight.Q] = x1, [LayerWeight.K] = x1, [LayerWeight.V] = x1, [LayerWeight.O] = mix, [LayerWeight.Gate] = x2, [LayerWeight.Up] = x2, [LayerWeight.Down] = s }, next);
    }

    // ---- AWQ clip search against a brute force ----

    /// <summary>llm-awq pseudo_quantize_tensor on one group, written out: asym s = max(max-min, 1e-5)/15, z = clamp(-round(min/s), 0, 15); sym s = max(amax, 1e-5)/7, z = 8.</summary>
    private static double[] PseudoQuantize(double[] group, bool symmetric)
    {
        double min = group.Min(), max = group.Max();
        float scale;
        int zero;
        if (symmetric) { scale = (float)(Math.Max(Math.Max(-min, max), 1e-5) / 7); zero = 8; }
        else { scale = (float)(Math.Max(max - min, 1e-5) / 15); zero = (int)Math.Clamp(-Math.Round(min / scale, MidpointRounding.ToEven), 0, 15); }
        return group.Select(w => scale * (Math.Clamp(Math.Round(w / scale, MidpointRounding.ToEven) + zero, 0, 15) - zero)).ToArray();
    }

    [Theory]
    [InlineData(false, 40)]
    [InlineData(true, 40)]
    [InlineData(false, 1100)]
    public void AwqClipSearchEqualsBruteForce(bool symmetric, int tokens)
    {
        const int rows = 5, cols = 80, groupSize = 32; // groups 32, 32 and a partial 16
        var random = new Random(31);
        var w = Enumerable.Range(0, rows * cols).Select(_ => (random.NextDouble() * 2 - 1) * (random.Next(10) == 0 ? 4 : 1)).ToArray();
        var x = Enumerable.Range(0, tokens * cols).Select(i => (random.NextDouble() * 2 - 1) * (1 + i % cols % 7)).ToArray();
        var options = new AwqOptions(groupSize, symmetric);
        var maxVal = Awq.SearchClip(w, rows, cols, x, tokens, options);

        int stride = Math.Max(1, tokens / 512);
        var sampled = Enumerable.Range(0, tokens).Where(t => t % stride == 0).ToArray();
        int shrunk = 0;
        for (int r = 0; r < rows; r++)
            for (int g = 0; g * groupSize < cols; g++)
            {
                var columns = Enumerable.Range(g * groupSize, Math.Min(groupSize, cols - g * groupSize)).ToArray();
                var group = columns.Select(col => w[r * cols + col]).ToArray();
                double amax = group.Max(Math.Abs);
                var errors = Enumerable.Range(0, 10).Select(i =>
                {
                    double m = amax * (1 - i / 20.0);
                    var q = PseudoQuantize(group.Select(v => Math.Clamp(v, -m, m)).ToArray(), symmetric);
                    return sampled.Average(t =>
                    {
                        double exact = 0, approx = 0;
                        for (int k = 0; k < columns.Length; k++) { exact += x[t * cols + columns[k]] * group[k]; approx += x[t * cols + columns[k]] * q[k]; }
                        return (approx - exact) * (approx - exact);
                    });
                }).ToArray();
                int best = Array.IndexOf(errors, errors.Min());
                Assert.Equal(amax * (1 - best / 20.0), maxVal[r * 3 + g]);
                if (best > 0) shrunk++;
            }
        Assert.True(shrunk > 0, "some group should prefer a clipped range");
        var clipped = Awq.ApplyClip(w, rows, cols, maxVal, groupSize);
        for (int i = 0; i < w.Length; i++) Assert.Equal(Math.Clamp(w[i], -maxVal[i / cols * 3 + i % cols / groupSize], maxVal[i / cols * 3 + i % cols / groupSize]), clipped[i]);
    }

    // ---- AWQ folding ----

    /// <summary>
    /// On a multi-head model (so v → o is scaled too) and the grouped-query conformance model: the folded model
    /// (RMSNorm weights and v / up rows divided by s, plain INT4 matrices) gives the same float64 hidden states as the
    /// unfolded one (checkpoint norms, every matrix dequantized and its columns divided by its s, up's rows multiplied back
    /// by down's s), within float64 rounding: relative 1e-12 of the state's scale after all layers.
    /// </summary>
    [Theory]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void AwqFoldedModelEqualsTheUnfoldedScaledModel(bool multiHead, bool symmetric)
    {
        string folder = TestData.ConformanceBf16;
        if (multiHead)
        {
            folder = Path.Combine(TestData.TempDir("awq-mha"), "model");
            var config = SeededCheckpointWriter.ConformanceConfig() with { NumKeyValueHeads = 4 };
            SeededCheckpointWriter.Write(folder, config, new(TensorDtype.BF16), tokenizerModelPath: TestData.Llama2TokenizerPath);
        }
        using var checkpoint = LlamaCheckpoint.Open(folder);
        var c = checkpoint.Config;
        string scheme = symmetric ? "int4-g128-awq-sym" : "int4-g128-awq-asym";
        var model = Int4Calibration.QuantizeAll(checkpoint, new EngineOptions(scheme, "cpu", CalibrationPrompts: s_prompts), scheme);
        Assert.Equal(multiHead, model.InputScales.ContainsKey(LlamaCheckpoint.LayerTensorName(0, LayerWeight.O)));
        Assert.All(model.Linears.Values, m => Assert.Null(m.ChannelScales));

        var forward = new CalibrationForward(c, s_prompts);
        double[] folded = forward.Embed(checkpoint), unfolded = folded;
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            var fp = CalibrationForward.ReadLayer(checkpoint, l);
            string Name(LayerWeight w) => LlamaCheckpoint.LayerTensorName(l, w);
            Int4Matrix M(LayerWeight w) => model.Linears[Name(w)];
            double[] Stored(LayerWeight w) => M(w).DequantizeAll();
            double[] Vector(LayerWeight w, double[] original) => model.FoldedVectors.TryGetValue(Name(w), out var v) ? v : original;
            var foldedLayer = fp with
            {
                InputNorm = Vector(LayerWeight.InputNorm, fp.InputNorm), PostNorm = Vector(LayerWeight.PostAttentionNorm, fp.PostNorm),
                VBias = fp.VBias is null ? null : Vector(LayerWeight.VBias, fp.VBias),
                Q = Stored(LayerWeight.Q), K = Stored(LayerWeight.K), V = Stored(LayerWeight.V), O = Stored(LayerWeight.O),
                Gate = Stored(LayerWeight.Gate), Up = Stored(LayerWeight.Up), Down = Stored(LayerWeight.Down),
            };
            // Unfolded: undo each scale on the weight side instead, written out here from the scales alone.
            double[] Unscaled(LayerWeight w)
            {
                var values = Stored(w);
                int rows = M(w).Rows, cols = M(w).Cols;
                var s = model.InputScales.GetValueOrDefault(Name(w));
                for (int r = 0; r < rows; r++)
                    for (int col = 0; col < cols; col++)
                    {
                        if (s != null) values[r * cols + col] /= s[col];
                        if (w == LayerWeight.Up) values[r * cols + col] *= model.InputScales[Name(LayerWeight.Down)][r];
                        if (w == LayerWeight.V && model.InputScales.TryGetValue(Name(LayerWeight.O), out var so)) values[r * cols + col] *= so[r];
                    }
                return values;
            }
            var unfoldedLayer = fp with
            {
                Q = Unscaled(LayerWeight.Q), K = Unscaled(LayerWeight.K), V = Unscaled(LayerWeight.V), O = Unscaled(LayerWeight.O),
                Gate = Unscaled(LayerWeight.Gate), Up = Unscaled(LayerWeight.Up), Down = Unscaled(LayerWeight.Down),
            };
            folded = Inputs(forward, foldedLayer, folded).Next;
            unfolded = Inputs(forward, unfoldedLayer, unfolded).Next;
        }
        double scale = unfolded.Max(Math.Abs);
        for (int i = 0; i < folded.Length; i++) Assert.True(Math.Abs(folded[i] - unfolded[i]) <= 1e-12 * scale, $"hidden[{i}]: folded {folded[i]} vs unfolded {unfolded[i]}");
        // The folding is not vacuous: the scales moved away from 1 somewhere.
        Assert.Contains(model.InputScales.Values, s => s.Any(v => Math.Abs(v - 1) > 1e-3));
    }
}
