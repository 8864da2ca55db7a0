using GpuIntLab.Core.Formats.IntegerOnly;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using GpuIntLab.Tests.Engines;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.IntegerOnly;

/// <summary>
/// The integer-only engine against the exact oracle on the lab's trained model: greedy agreement and the
/// teacher-forced KL divergence of the next-token distributions.
/// </summary>
public class IntegerOnlyAccuracyTests(ITestOutputHelper output)
{
    private static double[] LogSoftmax(double[] logits)
    {
        double max = logits.Max();
        double log = Math.Log(logits.Sum(v => Math.Exp(v - max))) + max;
        return Array.ConvertAll(logits, v => v - log);
    }

    /// <summary>KL(oracle || engine) of two logit vectors, float64.</summary>
    internal static double Kl(double[] oracle, double[] engine)
    {
        var p = LogSoftmax(oracle);
        var q = LogSoftmax(engine);
        double kl = 0;
        for (int i = 0; i < p.Length; i++) kl += Math.Exp(p[i]) * (p[i] - q[i]);
        return kl;
    }

    /// <summary>
    /// Bounds, loose on purpose and justified by the lab's float-rescaled W8A8 row: ilgpu-int8/per-channel (float
    /// requantisation, float softmax / norm / SiLU, float KV cache) has a mean KL of 9.4e-5 on this model
    /// (results/README.md, 4 prompts x 20 tokens). The integer-only path adds integer nonlinearities whose errors
    /// (exp 3.9e-6 relative, RMSNorm ~2^-20, 2^-16 steps) are far below the int8 steps (1/254 of a row's range), plus
    /// an int8 embedding and an int8 KV cache, so it must stay in that class: mean KL below 1e-3 (ten times the
    /// float W8A8 row) and the oracle's top-1 on at least 90% of the teacher-forced positions. A convention error (a
    /// wrong scale or shift, a sign, a missing gamma) sends the KL above 0.1 and the agreement towards chance.
    /// Measured (2026-12-01): 40/40 greedy, 40/40 top-1, mean KL 5.7e-5.
    /// </summary>
    [Fact]
    public void CpuEngineFollowsTheOracleOnTheEmbeddedModel()
    {
        using var checkpoint = LlamaCheckpoint.Open(EmbeddedModelTests.ModelDir);
        using var oracle = new OracleEngine(checkpoint, threads: 2);
        using var engine = new IntegerOnlyEngine(checkpoint);
        const int newTokens = 10;
        int greedySame = 0, top1Same = 0, positions = 0;
        double klSum = 0, klMax = 0;
        foreach (var prompt in EmbeddedModelTests.Prompts)
        {
            oracle.Reset();
            var oracleLogits = new List<double[]>();
            var oracleIds = Greedy.Generate(oracle, prompt, newTokens, onToken: (_, l) => oracleLogits.Add(l));
            engine.Reset();
            var ids = Greedy.Generate(engine, prompt, newTokens);
            greedySame += ids.Zip(oracleIds, (a, b) => a == b ? 1 : 0).Sum();
            engine.Reset();
            var logits = engine.Prefill(prompt);
            for (int t = 0; t < newTokens; t++)
            {
                double kl = Kl(oracleLogits[t], logits);
                klSum += kl; klMax = Math.Max(klMax, kl); positions++;
                if (Greedy.ArgMax(logits) == oracleIds[t]) top1Same++;
                if (t < newTokens - 1) logits = engine.Decode(oracleIds[t]);
            }
        }
        double klMean = klSum / positions;
        output.WriteLine($"integer-only (CPU) vs oracle, embedded model, 4 prompts x {newTokens}: greedy {greedySame}/{positions}, teacher-forced top-1 {top1Same}/{positions}, KL mean {klMean:E3} max {klMax:E3}");
        Assert.True(klMean < 1e-3, $"mean KL {klMean}");
        Assert.True(top1Same >= 0.9 * positions, $"top-1 {top1Same}/{positions}");
    }
}
