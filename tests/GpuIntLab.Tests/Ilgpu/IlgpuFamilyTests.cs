using System.Text.Json;
using GpuIntLab.Backends;
using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Experiments;
using GpuIntLab.Oracle;
using GpuIntLab.Tests.Engines;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Ilgpu;

/// <summary>
/// Every ILGPU backend on Llama 3, Qwen2 and Qwen3 (CPU accelerator): the INT64 engine bit-identical to the oracle
/// (raw logits at every position, which is what the determinism hash covers), and every backend x scheme through the runner
/// with no error record and finite logits.
/// </summary>
public class IlgpuFamilyTests(ITestOutputHelper output)
{
    public static TheoryData<string> Models() => new(FamilyConformance.Names);

    [Theory]
    [MemberData(nameof(Models))]
    public void Int64IsBitIdenticalToTheOracle(string modelName)
    {
        var model = FamilyConformance.Model(modelName);
        using var checkpoint = LlamaCheckpoint.Open(model.Folder);
        using var engine = (IlgpuInt64Engine)BackendCatalog.Find("ilgpu-int64")!.Create(checkpoint, new EngineOptions("exact", "cpu", Threads: 2));
        using var oracle = new OracleEngine(checkpoint, threads: 2);
        var ids = model.Case("greedy-0").InputIds;
        for (int i = 0; i < ids.Length; i++)
            Assert.True(oracle.DecodeRaw(ids[i]).AsSpan().SequenceEqual(engine.DecodeRaw(ids[i])), $"{modelName}: raw logits differ at position {i}");
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void EveryBackendRunsTheFamilyThroughTheRunner(string modelName)
    {
        var model = FamilyConformance.Model(modelName);
        string dir = TestData.TempDir("family-runner");
        var c = model.Case("greedy-0");
        var spec = new
        {
            name = "family-" + modelName,
            model = model.Folder,
            prompts = new object[] { new { name = "gate-0", ids = c.InputIds.Take(c.PromptLength).ToArray() } },
            new_tokens = 4,
            backends = new object[]
            {
                new { name = "ilgpu-fp16" }, new { name = "ilgpu-int8" }, new { name = "ilgpu-fp8" }, new { name = "ilgpu-int64" },
            },
            repetitions = 1,
            warmup = 0,
            accelerator = "cpu",
        };
        string path = Path.Combine(dir, "spec.json");
        File.WriteAllText(path, JsonSerializer.Serialize(spec));
        var summary = new ExperimentRunner().Run(ExperimentSpec.Load(path), new RunOptions { ResultsDirectory = Path.Combine(dir, "runs"), Command = "test" });
        var errors = summary.Records.Where(r => r.Type == "error").Select(r => $"{r.Backend}/{r.Scheme}: {r.Error}").ToList();
        Assert.Empty(errors);
        var results = summary.Records.Where(r => r.Type == "result").ToList();
        foreach (var r in results)
            output.WriteLine($"{modelName} {r.Backend}/{r.Scheme}: greedy {r.GreedyMatches}/{r.NewTokens}, teacher-forced {r.TeacherForcedMatches}, KL mean {r.KlMean:E2}, max |logit error| {r.MaxAbsLogitError:E2}");
        // fp16 + int8 x3 + fp8 x2 + int64
        Assert.Equal(7, results.Count);
        Assert.All(results, r => Assert.True(double.IsFinite(r.MaxAbsLogitError ?? double.NaN), $"{r.Backend}/{r.Scheme}: logits not finite"));
        var int64 = results.Single(r => r.Backend == "ilgpu-int64");
        Assert.Equal(0, int64.MaxAbsLogitError);
        Assert.Equal(int64.NewTokens, int64.GreedyMatches);
    }
}
