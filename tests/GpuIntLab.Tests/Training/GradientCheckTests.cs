using GpuIntLab.Core.Models;
using GpuIntLab.Training;
using Xunit;

namespace GpuIntLab.Tests.Training;

/// <summary>
/// The hand-written backward pass against central finite differences, in float64 through the same
/// generic code the float32 trainer runs. Every element of every parameter tensor of a tiny model is
/// checked (embeddings, both norms per layer, q/k/v/o, gate/up/down, the final norm, lm_head).
/// Tolerance: |analytic − numeric| ≤ 1e-7 + 1e-5·|numeric| with step h = 1e-5 (central differences
/// have error O(h²) ≈ 1e-10 here, rounding ≈ 1e-16/h ≈ 1e-11).
/// </summary>
public class GradientCheckTests
{
    internal static LlamaConfig TinyConfig(int vocab = 11, int maxPos = 16) => new()
    {
        HiddenSize = 8, IntermediateSize = 12, NumAttentionHeads = 4, NumKeyValueHeads = 2, NumHiddenLayers = 2,
        VocabSize = vocab, MaxPositionEmbeddings = maxPos, RmsNormEps = 1e-5, RopeTheta = 10000.0, TieWordEmbeddings = false,
    };

    [Fact]
    public void Backward_matches_finite_differences_for_every_parameter()
    {
        var config = TinyConfig();
        var model = new TrainableLlama<double>(config);
        model.Initialize(seed: 7, std: 0.5); // large weights so every path (attention, SiLU curvature) matters
        // Norm weights away from 1 so their gradients are not a special case.
        var rng = new SeededRandom(3);
        foreach (var t in model.Tensors.Where(t => t.Shape.Length == 1))
            for (int i = 0; i < t.Length; i++) model.Params[t.Offset + i] = 0.5 + rng.NextDouble();
        const int batch = 2, seq = 6;
        var tokens = Enumerable.Range(0, batch * (seq + 1)).Select(_ => rng.Next(config.VocabSize)).ToArray();

        model.Loss(tokens, batch, seq, backward: true);
        var analytic = (double[])model.Grads.Clone();

        const double h = 1e-5;
        var kinds = new HashSet<string>();
        foreach (var t in model.Tensors)
        {
            double worst = 0;
            for (int i = t.Offset; i < t.Offset + t.Length; i++)
            {
                double saved = model.Params[i];
                model.Params[i] = saved + h;
                double up = model.Loss(tokens, batch, seq, backward: false);
                model.Params[i] = saved - h;
                double down = model.Loss(tokens, batch, seq, backward: false);
                model.Params[i] = saved;
                double numeric = (up - down) / (2 * h);
                double err = Math.Abs(analytic[i] - numeric);
                Assert.True(err <= 1e-7 + 1e-5 * Math.Abs(numeric),
                    $"{t.Name}[{i - t.Offset}]: analytic {analytic[i]:R} vs numeric {numeric:R}");
                worst = Math.Max(worst, Math.Abs(numeric));
            }
            Assert.True(worst > 1e-6, $"{t.Name}: all gradients ~0, the check would be vacuous");
            kinds.Add(t.Name.Split('.')[^2]);
        }
        Assert.Superset(new HashSet<string> { "embed_tokens", "input_layernorm", "q_proj", "k_proj", "v_proj", "o_proj",
            "post_attention_layernorm", "gate_proj", "up_proj", "down_proj", "norm", "lm_head" }, kinds);
    }

    [Fact]
    public void Float32_and_float64_paths_agree()
    {
        var config = TinyConfig();
        var m64 = new TrainableLlama<double>(config);
        m64.Initialize(seed: 5, std: 0.3);
        var m32 = new TrainableLlama<float>(config);
        for (int i = 0; i < m64.Params.Length; i++) m32.Params[i] = (float)m64.Params[i];
        for (int i = 0; i < m64.Params.Length; i++) m64.Params[i] = m32.Params[i];
        var rng = new SeededRandom(9);
        var tokens = Enumerable.Range(0, 3 * 9).Select(_ => rng.Next(config.VocabSize)).ToArray();
        double l64 = m64.Loss(tokens, 3, 8, backward: true);
        double l32 = m32.Loss(tokens, 3, 8, backward: true);
        Assert.InRange(Math.Abs(l64 - l32), 0, 1e-5);
        double maxG = m64.Grads.Max(Math.Abs);
        for (int i = 0; i < m64.Grads.Length; i++)
            Assert.True(Math.Abs(m64.Grads[i] - m32.Grads[i]) <= 1e-4 * maxG, $"grad {i}: {m64.Grads[i]} vs {m32.Grads[i]}");
    }
}
