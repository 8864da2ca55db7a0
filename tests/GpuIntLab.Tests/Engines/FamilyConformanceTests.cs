using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Engines;

/// <summary>
/// Oracle and float64 engine on Llama 3 (llama3 RoPE scaling, tied 128k head, head_dim field), Qwen2 (q/k/v bias,
/// untied) and Qwen3 (q/k norm, head_dim 32 != hidden/heads) against the outside float64 reference: greedy ids equal,
/// every compared logit within 1e-9 (oracle) / 1e-12 (float64 engine), the same bounds as the Llama 2 set.
/// </summary>
public class FamilyConformanceTests(ITestOutputHelper output)
{
    private static double Bound(string engine) => engine == "oracle" ? 1e-9 : 1e-12;

    public static TheoryData<string, string, string> Cases()
    {
        var data = new TheoryData<string, string, string>();
        foreach (var model in FamilyConformance.Names)
            foreach (var engine in new[] { "oracle", "reference" })
                foreach (var c in new[] { "greedy-0", "greedy-1", "greedy-2", "greedy-3", "teacher-forced-600" })
                    data.Add(model, engine, c);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void LogitsAndGreedyIdsMatchTheOutsideReference(string modelName, string engineName, string caseName)
    {
        var model = FamilyConformance.Model(modelName);
        var c = model.Case(caseName);
        using var checkpoint = LlamaCheckpoint.Open(model.Folder);
        using IInferenceEngine engine = engineName == "oracle" ? new OracleEngine(checkpoint, threads: 2) : new ReferenceEngine(checkpoint, threads: 1);
        var deviations = ConformanceReference.Run(engine, c);
        double bound = Bound(engineName);
        output.WriteLine($"{modelName} {engineName} {caseName}: max |logit error| {deviations.Max(d => d.Dev.MaxLogitError):E2}, max logsumexp error {deviations.Max(d => d.Dev.LogSumExpError):E2}");
        foreach (var (r, d) in deviations)
        {
            Assert.Equal(r.Argmax, d.Argmax);
            Assert.True(d.MaxLogitError <= bound, $"{caseName} pos {r.Pos}: |logit error| {d.MaxLogitError:E3} > {bound:E0}");
            Assert.True(d.LogSumExpError <= bound, $"{caseName} pos {r.Pos}: logsumexp error {d.LogSumExpError:E3}");
        }
        if (c.GeneratedIds.Length > 0)
        {
            engine.Reset();
            Assert.Equal(c.GeneratedIds, Greedy.Generate(engine, c.InputIds.AsSpan(0, c.PromptLength), c.GeneratedIds.Length));
        }
    }

    [Theory]
    [InlineData("tiny-llama3", ModelFamily.Llama, true, false, false)]
    [InlineData("tiny-qwen2", ModelFamily.Qwen2, false, true, false)]
    [InlineData("tiny-qwen3", ModelFamily.Qwen3, true, false, true)]
    public void ConfigIsReadAsTheFamilyDefinesIt(string modelName, ModelFamily family, bool tied, bool qkvBias, bool qkNorm)
    {
        using var checkpoint = LlamaCheckpoint.Open(FamilyConformance.Model(modelName).Folder);
        var c = checkpoint.Config;
        Assert.Equal(family, c.Family);
        Assert.Equal(tied, c.TieWordEmbeddings);
        Assert.Equal(qkvBias, c.QkvBias);
        Assert.False(c.OutputBias);
        Assert.Equal(qkNorm, c.QkNorm);
        Assert.Equal(modelName == "tiny-qwen3" ? 32 : 16, c.HeadDim);
        Assert.Equal(modelName == "tiny-llama3", c.RopeScaling is { Type: "llama3", Factor: 32 });
    }
}
