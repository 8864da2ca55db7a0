using System.Text.Json;
using GpuIntLab.Experiments;
using Xunit;

namespace GpuIntLab.Tests.Hardening;

/// <summary>Spec problems that can be seen before any work fail the whole run at validation, naming the key.</summary>
public class SpecHardeningTests
{
    private static string Write(string json)
    {
        string path = Path.Combine(TestData.TempDir("spec"), "spec.json");
        File.WriteAllText(path, json);
        return path;
    }

    private static string Spec(string extra = "", string name = "ok", string prompts = "[{\"name\": \"p\", \"ids\": [1]}]", string backends = "[{\"name\": \"reference\"}]") =>
        $"{{\"name\": \"{name}\", \"model\": {JsonSerializer.Serialize(TestData.ConformanceBf16)}, \"prompts\": {prompts}, \"backends\": {backends}, \"repetitions\": 1, \"warmup\": 0{extra}}}";

    private static ExperimentSpecException Refused(string json) =>
        Assert.Throws<ExperimentSpecException>(() => ExperimentSpec.Load(Write(json)).Validate());

    private static ExperimentSpecException RefusedRows(string json) =>
        Assert.Throws<ExperimentSpecException>(() => ExperimentSpec.Load(Write(json)).ResolveBackends(
            GpuIntLab.Backends.BackendCatalog.Find, GpuIntLab.Backends.BackendCatalog.All.Select(p => p.Name)));

    [Fact]
    public void APlannedComparisonMustNameTwoRowsOfTheSpec()
    {
        string backends = "[{\"name\": \"ilgpu-int8\", \"schemes\": [\"per-tensor\"]}, {\"name\": \"ilgpu-fp16\", \"kv_cache\": \"int8\"}]";
        var e = RefusedRows(Spec(", \"comparisons\": [[\"ilgpu-int8/per-tensor\", \"ilgpu-fp16/fp16\"]]", backends: backends));
        Assert.Contains("comparison row 'ilgpu-fp16/fp16' is not a backend/scheme of this spec", e.Message);
        Assert.Contains("ilgpu-fp16/fp16+kv-int8", e.Message);
        Assert.Contains("two different rows", RefusedRows(Spec(", \"comparisons\": [[\"ilgpu-int8/per-tensor\"]]", backends: backends)).Message);
        var ok = ExperimentSpec.Load(Write(Spec(", \"comparisons\": [[\"ilgpu-int8/per-tensor\", \"ilgpu-fp16/fp16+kv-int8\"]]", backends: backends)));
        Assert.Equal(2, ok.ResolveBackends(GpuIntLab.Backends.BackendCatalog.Find, []).Count);
        Assert.Equal(("ilgpu-int8/per-tensor", "ilgpu-fp16/fp16+kv-int8"), ok.PlannedComparisons.Single());
    }

    [Fact]
    public void ATypoedKeyIsRefusedWithTheKnownKeys()
    {
        var e = Refused(Spec(", \"new_token\": 3"));
        Assert.Contains("unknown key 'new_token'", e.Message);
        Assert.Contains("new_tokens", e.Message);
        Assert.Contains("calibration_prompts", e.Message);
    }

    [Fact]
    public void UnknownKeysInsidePromptsAndBackendsAreRefusedWithTheirPath()
    {
        Assert.Contains("unknown key 'prompts[0].txt'", Refused(Spec(prompts: "[{\"name\": \"p\", \"txt\": \"hi\"}]")).Message);
        Assert.Contains("unknown key 'backends[0].scheme'", Refused(Spec(backends: "[{\"name\": \"reference\", \"scheme\": [\"exact\"]}]")).Message);
    }

    [Theory]
    [InlineData("../../escape")]
    [InlineData("a/b")]
    [InlineData(".hidden")]
    public void ANameThatIsNotASafeFileNameIsRefused(string name) =>
        Assert.Contains("not a safe name", Refused(Spec(name: name)).Message);

    [Fact]
    public void EmptyPromptIdsAreRefused() =>
        Assert.Contains("prompt 'p' has empty 'ids'", Refused(Spec(prompts: "[{\"name\": \"p\", \"ids\": []}]")).Message);

    [Theory]
    [InlineData("-0.5")]
    [InlineData("1.5")]
    public void SmoothQuantAlphaOutsideZeroToOneIsRefused(string alpha) =>
        Assert.Contains("smoothquant_alpha must be in [0, 1]", Refused(Spec($", \"smoothquant_alpha\": {alpha}")).Message);

    [Fact]
    public void AnEmptyCalibrationPromptIsRefused() =>
        Assert.Contains("calibration prompt 1 is empty", Refused(Spec(", \"calibration_prompts\": [\"fine\", \"\"]")).Message);

    [Fact]
    public void AnUnknownAcceleratorIsRefusedWithTheKnownOnes()
    {
        var e = Refused(Spec(", \"accelerator\": \"tpu\""));
        Assert.Contains("'tpu'", e.Message);
        Assert.Contains("auto, cpu or cuda", e.Message);
    }

    private static ExperimentSpecException RefusedByTheRunner(string json, string dir)
    {
        var spec = ExperimentSpec.Load(Write(json));
        return Assert.Throws<ExperimentSpecException>(() => new ExperimentRunner().Run(spec, new RunOptions { ResultsDirectory = Path.Combine(dir, "runs") }));
    }

    [Fact]
    public void AnOverlongCalibrationPromptFailsTheRunBeforeAnyRecord()
    {
        string dir = TestData.TempDir("calib");
        // The conformance model's context is 2048 tokens; 3000 words encode to more.
        string longText = string.Join(' ', Enumerable.Repeat("story", 3000));
        var e = RefusedByTheRunner(Spec($", \"calibration_prompts\": [\"{longText}\"]"), dir);
        Assert.Contains("calibration prompt 0", e.Message);
        Assert.Contains("context of 2048", e.Message);
        Assert.False(Directory.Exists(Path.Combine(dir, "runs")) && Directory.GetFiles(Path.Combine(dir, "runs"), "*.jsonl").Length > 0);
    }

    [Fact]
    public void NewTokensNearIntMaxValueDoesNotWrapRoundInTheContextCheck()
    {
        var e = RefusedByTheRunner(Spec($", \"new_tokens\": {int.MaxValue}"), TestData.TempDir("maxtokens"));
        Assert.Contains($"+ {int.MaxValue} new tokens exceeds the model's context of 2048", e.Message);
    }
}
