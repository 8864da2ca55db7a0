using System.Diagnostics;
using GpuIntLab.Backends;
using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Formats.IntegerOnly;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Tests.Engines;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.IntegerOnly;

/// <summary>
/// The ILGPU integer-only engine (CPU accelerator) bit-identical to the CPU reference engine: every stage buffer of
/// every layer and the raw int32 logits at every position, on the lab's trained model and on the three family
/// models (Llama 3 with llama3 RoPE and a tied 128k head, Qwen2 with q/k/v biases, Qwen3 with q/k norm).
/// </summary>
public class IntegerOnlyEngineTests(ITestOutputHelper output)
{
    /// <summary>Records every stage an engine shows, in order.</summary>
    private sealed class Recorder : IStepObserver
    {
        public readonly List<(int Layer, StepStage Stage, double[] Values)> Seen = [];
        public void Observe(int layer, StepStage stage, int tokens, ReadOnlySpan<double> values) => Seen.Add((layer, stage, values.ToArray()));
    }

    /// <summary>
    /// Feeds the tokens one at a time to both engines with recorders attached; every stage's values (int32 / 2^16, so
    /// float64 equality is int32 equality) and the raw logits must be equal. Returns the stage count compared.
    /// </summary>
    private static int AssertBitIdentical(LlamaCheckpoint checkpoint, ReadOnlySpan<int> tokens, string what)
    {
        // One quantised model for both engines (the provider builds the same from the checkpoint; the load dominates on the 128k-vocab families).
        var model = new IntegerOnlyModel(checkpoint);
        using var reference = new IntegerOnlyEngine(model);
        using var device = new IlgpuIntegerOnlyEngine(model, IlgpuDevice.Create("cpu"));
        var a = new Recorder();
        var b = new Recorder();
        reference.Observer = a;
        device.Observer = b;
        for (int i = 0; i < tokens.Length; i++)
        {
            reference.Decode(tokens[i]);
            device.Decode(tokens[i]);
            Assert.True(reference.LastRawLogits.AsSpan().SequenceEqual(device.LastRawLogits), $"{what}: raw logits differ at position {i}");
        }
        Assert.Equal(a.Seen.Count, b.Seen.Count);
        for (int s = 0; s < a.Seen.Count; s++)
        {
            var (layer, stage, expected) = a.Seen[s];
            Assert.Equal((layer, stage), (b.Seen[s].Layer, b.Seen[s].Stage));
            int differ = expected.Zip(b.Seen[s].Values, (x, y) => x == y ? 0 : 1).Sum();
            Assert.True(differ == 0, $"{what}: layer {layer} {stage} (record {s}): {differ} of {expected.Length} values differ");
        }
        // The logits are not all equal (a dead path would make both engines agree trivially).
        Assert.True(reference.LastRawLogits.Distinct().Count() > reference.LastRawLogits.Length / 4, $"{what}: logits nearly constant");
        return a.Seen.Count;
    }

    [Fact]
    public void IlgpuIsBitIdenticalToTheCpuReferenceOnTheEmbeddedModel()
    {
        var clock = Stopwatch.StartNew();
        using var checkpoint = LlamaCheckpoint.Open(EmbeddedModelTests.ModelDir);
        int stages = AssertBitIdentical(checkpoint, EmbeddedModelTests.Prompts[1].AsSpan(0, 12), "tinystories-512");
        output.WriteLine($"tinystories-512: 12 positions, {stages} stage buffers and the logits bit-identical in {clock.Elapsed.TotalSeconds:F1} s");
    }

    /// <summary>
    /// The KV caches, score rows and RoPE rows grow by doubling (GrowableBuffer on the device, KvCache and the integer
    /// RoPE table on the CPU); started at 2 positions, 20 tokens cross four growths, and the raw logits stay
    /// bit-identical at every position (the default start, 64, is the same code).
    /// </summary>
    [Fact]
    public void IlgpuStaysBitIdenticalWhileTheContextGrows()
    {
        using var checkpoint = LlamaCheckpoint.Open(EmbeddedModelTests.ModelDir);
        var model = new IntegerOnlyModel(checkpoint);
        using var reference = new IntegerOnlyEngine(model, initialPositions: 2);
        using var device = new IlgpuIntegerOnlyEngine(model, IlgpuDevice.Create("cpu"), initialPositions: 2);
        int[] tokens = EmbeddedModelTests.Prompts[1][..20];
        for (int i = 0; i < tokens.Length; i++)
        {
            reference.Decode(tokens[i]);
            device.Decode(tokens[i]);
            Assert.True(reference.LastRawLogits.AsSpan().SequenceEqual(device.LastRawLogits), $"raw logits differ at position {i}");
        }
    }

    public static TheoryData<string> Families() => new(FamilyConformance.Names);

    [Theory]
    [MemberData(nameof(Families))]
    public void IlgpuIsBitIdenticalToTheCpuReferenceOnTheFamilies(string modelName)
    {
        var clock = Stopwatch.StartNew();
        var model = FamilyConformance.Model(modelName);
        using var checkpoint = LlamaCheckpoint.Open(model.Folder);
        int stages = AssertBitIdentical(checkpoint, model.Case("greedy-0").InputIds.AsSpan(0, 4), modelName);
        output.WriteLine($"{modelName}: 4 positions, {stages} stage buffers and the logits bit-identical in {clock.Elapsed.TotalSeconds:F1} s");
    }

    /// <summary>The CPU engine's multi-token prefill runs (16 tokens a step) give the bits of token-by-token decoding.</summary>
    [Fact]
    public void CpuPrefillRunsEqualTokenByTokenSteps()
    {
        using var checkpoint = LlamaCheckpoint.Open(EmbeddedModelTests.ModelDir);
        using var engine = new IntegerOnlyEngine(checkpoint);
        int[] prompt = [.. EmbeddedModelTests.Prompts[1], .. EmbeddedModelTests.Prompts[0]]; // 38 tokens: runs of 16, 16, 6
        engine.Prefill(prompt);
        var runs = engine.LastRawLogits;
        engine.Reset();
        foreach (int token in prompt) engine.Decode(token);
        Assert.Equal(runs, engine.LastRawLogits);
    }

    [Fact]
    public void ProviderIsListedWithItsSchemeAndRefusesAnother()
    {
        var provider = BackendCatalog.Find("ilgpu-intonly");
        Assert.NotNull(provider);
        Assert.Equal(["w8a8-integer-only"], provider!.Schemes);
        using var checkpoint = LlamaCheckpoint.Open(EmbeddedModelTests.ModelDir);
        var e = Assert.Throws<ArgumentException>(() => provider.Create(checkpoint, new EngineOptions("per-channel", "cpu")));
        Assert.Contains("unknown scheme 'per-channel'", e.Message);
        using var engine = provider.Create(checkpoint, new EngineOptions(IntegerOnlyNotes.Scheme, "cpu"));
        Assert.Equal("ilgpu-intonly", engine.Info.Name);
        Assert.Contains("DI-ClippedSoftmax", engine.Info.Precisions["softmax"]);
    }
}
