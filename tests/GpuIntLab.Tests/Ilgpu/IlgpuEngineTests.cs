using System.Diagnostics;
using GpuIntLab.Backends;
using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using GpuIntLab.Tests.Engines;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Ilgpu;

/// <summary>
/// The ILGPU backends end to end on the CPU accelerator: the INT64 engine reproduces the oracle's
/// determinism hash, every format runs the conformance model, FP16 picks the oracle's tokens on a model
/// with clear margins, schemes give different logits, "cuda" without a GPU is a reason, not a crash.
/// </summary>
public class IlgpuEngineTests(ITestOutputHelper output)
{
    private static IInferenceEngine Create(LlamaCheckpoint checkpoint, string provider, string scheme, string accelerator = "cpu") =>
        BackendCatalog.Find(provider)!.Create(checkpoint, new EngineOptions(scheme, accelerator, Threads: 2));

    private static bool HasCuda() => new IlgpuInt64Provider().CheckAvailability("cuda").IsAvailable;

    /// <summary>DeterminismGate.Hash with the ILGPU INT64 engine in place of the oracle (the gate takes any exact engine).</summary>
    internal static string GateHash(IlgpuInt64Engine engine, IReadOnlyList<int[]> prompts, int newTokens) => DeterminismGate.Hash(engine, prompts, newTokens);

    [Fact]
    public void Int64GateHashEqualsTheOracleGolden()
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var engine = (IlgpuInt64Engine)Create(checkpoint, "ilgpu-int64", "exact");
        var sw = Stopwatch.StartNew();
        string hash = GateHash(engine, DeterminismGate.Llama2Prompts, newTokens: 4);
        int steps = DeterminismGate.Llama2Prompts.Sum(p => p.Length + 4);
        output.WriteLine($"ilgpu-int64 gate hash {hash} ({steps} steps in {sw.Elapsed.TotalSeconds:F2} s, {sw.Elapsed.TotalMilliseconds / steps:F1} ms/token on {engine.Info.Accelerator})");
        Assert.Equal(DeterminismGateTests.ConformanceGolden, hash);
    }

    [Fact]
    public void Int64TiedCheckpointIsBitIdenticalToTheOracle()
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceTiedBf16);
        using var engine = (IlgpuInt64Engine)Create(checkpoint, "ilgpu-int64", "exact");
        using var oracle = new OracleEngine(checkpoint);
        foreach (int token in DeterminismGate.Llama2Prompts[1])
            Assert.Equal(oracle.DecodeRaw(token), engine.DecodeRaw(token));
    }

    public static TheoryData<string, string> FloatBackends() => new()
    {
        { "ilgpu-fp16", "fp16" },
        { "ilgpu-int8", "per-tensor" },
        { "ilgpu-int8", "per-channel" },
        { "ilgpu-int8", "smoothquant" },
        { "ilgpu-fp8", "per-tensor" },
        { "ilgpu-fp8", "per-channel" },
    };

    private sealed record Comparison(int GreedyMatch, int FirstDivergence, int TeacherForcedTop1, int Steps, double MaxLogitError, double MinOracleMargin, double MaxAbsLogit, double Seconds);

    /// <summary>Free-running greedy and teacher-forced comparison of an engine with the oracle on one prompt.</summary>
    private static Comparison Compare(IInferenceEngine engine, OracleEngine oracle, int[] prompt, int newTokens)
    {
        oracle.Reset();
        var oracleLogits = new List<double[]>();
        var oracleIds = Greedy.Generate(oracle, prompt, newTokens, onToken: (_, l) => oracleLogits.Add(l));
        engine.Reset();
        var sw = Stopwatch.StartNew();
        var ids = Greedy.Generate(engine, prompt, newTokens);
        double seconds = sw.Elapsed.TotalSeconds;
        int match = 0, first = -1;
        for (int i = 0; i < newTokens; i++) { if (ids[i] == oracleIds[i]) match++; else if (first < 0) first = i; }

        // teacher forced: the engine reads the oracle's tokens
        engine.Reset();
        int top1 = 0; double maxErr = 0, minMargin = double.MaxValue, maxAbs = 0;
        var logits = engine.Prefill(prompt);
        for (int i = 0; i < newTokens; i++)
        {
            var o = oracleLogits[i];
            if (Greedy.ArgMax(logits) == Greedy.ArgMax(o)) top1++;
            for (int v = 0; v < o.Length; v++)
            {
                Assert.True(double.IsFinite(logits[v]), $"logit {v} not finite");
                maxErr = Math.Max(maxErr, Math.Abs(logits[v] - o[v]));
                maxAbs = Math.Max(maxAbs, Math.Abs(o[v]));
            }
            var sorted = o.OrderDescending().Take(2).ToArray();
            minMargin = Math.Min(minMargin, sorted[0] - sorted[1]);
            if (i < newTokens - 1) logits = engine.Decode(oracleIds[i]);
        }
        return new Comparison(match, first, top1, newTokens, maxErr, minMargin, maxAbs, seconds);
    }

    [Theory]
    [MemberData(nameof(FloatBackends))]
    public void FloatBackendRunsTheConformanceModelEndToEnd(string provider, string scheme)
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var engine = Create(checkpoint, provider, scheme);
        using var oracle = new OracleEngine(checkpoint);
        var c = Compare(engine, oracle, DeterminismGate.Llama2Prompts[0], newTokens: 3);
        output.WriteLine($"{provider}/{scheme} on {engine.Info.Accelerator}: greedy {c.GreedyMatch}/{c.Steps} (first divergence {c.FirstDivergence}), teacher-forced top-1 {c.TeacherForcedTop1}/{c.Steps}, max |logit - oracle| {c.MaxLogitError:E2} ({c.MaxLogitError / c.MaxAbsLogit:P2} of max |logit| {c.MaxAbsLogit:F2}), oracle min margin {c.MinOracleMargin:E2}, {c.Seconds / (DeterminismGate.Llama2Prompts[0].Length + 2) * 1000:F1} ms/token");
        foreach (var (k, v) in engine.Info.Precisions) output.WriteLine($"  {k}: {v}");
        Assert.Equal(DeterminismGate.Llama2Prompts[0].Length + 3 - 1, engine.Position);
        // Sanity bounds relative to the largest logit (the format's error, not garbage; measured on this model:
        // fp16 0.02%, int8 0.7%, fp8 4%): FP16 0.1%, INT8 2%, E4M3 10%.
        double bound = (provider switch { "ilgpu-fp16" => 0.001, "ilgpu-int8" => 0.02, _ => 0.1 }) * c.MaxAbsLogit;
        Assert.True(c.MaxLogitError < bound, $"max |logit error| {c.MaxLogitError:E2} >= {bound:E2}");
        Assert.True(c.TeacherForcedTop1 >= c.Steps - 1, "more than one teacher-forced top-1 miss");
    }

    /// <summary>
    /// A model whose greedy choices have clear margins: the conformance rule (another seed, F32 storage) with a
    /// 256-token vocabulary, so the top logit has few rivals and the oracle's top-2 gaps dwarf FP16's logit error
    /// (checked in the test: min margin &gt; 4x the max logit error).
    /// </summary>
    internal static string ClearMarginModel()
    {
        string folder = TestData.TempDir("clear-margin");
        var config = SeededCheckpointWriter.ConformanceConfig() with { VocabSize = 256 };
        SeededCheckpointWriter.Write(folder, config, new(TensorDtype.F32), seed: 7);
        return folder;
    }

    internal static readonly int[][] ClearMarginPrompts = [[1, 45, 73, 31, 34, 33], [1, 90, 25, 26, 93], [1, 29, 29, 74, 29, 22], [1, 45, 65, 31, 28, 33]];

    [Fact]
    public void Fp16GreedyTokensEqualTheOracleOnAClearMarginModel()
    {
        string folder = ClearMarginModel();
        using var checkpoint = LlamaCheckpoint.Open(folder);
        using var engine = Create(checkpoint, "ilgpu-fp16", "fp16");
        using var oracle = new OracleEngine(checkpoint);
        int[][] prompts = ClearMarginPrompts;
        int matched = 0, total = 0; double maxErr = 0, minMargin = double.MaxValue;
        foreach (var prompt in prompts)
        {
            var c = Compare(engine, oracle, prompt, newTokens: 8);
            matched += c.GreedyMatch; total += c.Steps;
            maxErr = Math.Max(maxErr, c.MaxLogitError); minMargin = Math.Min(minMargin, c.MinOracleMargin);
        }
        output.WriteLine($"ilgpu-fp16 vs oracle on the clear-margin model: greedy {matched}/{total}, max |logit error| {maxErr:E2}, oracle min top-2 margin {minMargin:E2}");
        Assert.True(minMargin > 4 * maxErr, $"the model's margins ({minMargin:E2}) are not clear against FP16's error ({maxErr:E2})");
        Assert.Equal(total, matched);
    }

    [Fact]
    public void SchemesGiveDifferentLogits()
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        int[] prompt = DeterminismGate.Llama2Prompts[1];
        var logits = new Dictionary<string, double[]>();
        foreach (var (p, s) in new[] { ("ilgpu-int8", "per-tensor"), ("ilgpu-int8", "per-channel"), ("ilgpu-int8", "smoothquant"), ("ilgpu-fp8", "per-tensor"), ("ilgpu-fp8", "per-channel") })
        {
            using var engine = Create(checkpoint, p, s);
            logits[$"{p}/{s}"] = engine.Prefill(prompt);
        }
        using var oracle = new OracleEngine(checkpoint);
        var exact = oracle.Prefill(prompt);
        foreach (var (k, v) in logits)
            output.WriteLine($"{k}: rms |logit - oracle| {Math.Sqrt(v.Zip(exact, (a, b) => (a - b) * (a - b)).Average()):E3}");
        var keys = logits.Keys.ToArray();
        for (int i = 0; i < keys.Length; i++)
            for (int j = i + 1; j < keys.Length; j++)
                Assert.False(logits[keys[i]].SequenceEqual(logits[keys[j]]), $"{keys[i]} and {keys[j]} gave identical logits");
    }

    [Fact]
    public void CudaWithoutADeviceIsUnavailableWithAReason()
    {
        if (HasCuda()) { output.WriteLine("a CUDA device is present: nothing to check here"); return; }
        foreach (var p in BackendCatalog.All.OfType<IEngineProvider>().Where(p => p.Name.StartsWith("ilgpu-", StringComparison.Ordinal)))
        {
            var a = p.CheckAvailability("cuda");
            Assert.False(a.IsAvailable);
            Assert.StartsWith("no CUDA device", a.Reason);
            Assert.True(p.CheckAvailability("auto").IsAvailable);
            Assert.True(p.CheckAvailability("cpu").IsAvailable);
            Assert.False(p.CheckAvailability("tpu").IsAvailable);
        }
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        var e = Assert.Throws<InvalidOperationException>(() => Create(checkpoint, "ilgpu-fp16", "fp16", "cuda"));
        Assert.StartsWith("unavailable: no CUDA device", e.Message);
        Assert.Throws<ArgumentException>(() => Create(checkpoint, "ilgpu-fp8", "smoothquant"));
        output.WriteLine($"cuda requested: {new IlgpuFp16Provider().CheckAvailability("cuda").Reason}");
    }

    [SkippableFact]
    public void CudaInt64HashEqualsTheOracleGolden()
    {
        Skip.IfNot(HasCuda(), "no CUDA device here (ILGPU found none)");
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var engine = (IlgpuInt64Engine)Create(checkpoint, "ilgpu-int64", "exact", "cuda");
        Assert.Equal(DeterminismGateTests.ConformanceGolden, GateHash(engine, DeterminismGate.Llama2Prompts, newTokens: 4));
    }

    [SkippableFact]
    public void CudaFloatBackendsAgreeWithTheCpuAccelerator()
    {
        Skip.IfNot(HasCuda(), "no CUDA device here (ILGPU found none)");
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        int[] prompt = DeterminismGate.Llama2Prompts[0];
        foreach (var (p, s) in new[] { ("ilgpu-fp16", "fp16"), ("ilgpu-int8", "per-channel"), ("ilgpu-fp8", "per-channel") })
        {
            double[] cpu, gpu;
            using (var e = Create(checkpoint, p, s, "cpu")) cpu = e.Prefill(prompt);
            using (var e = Create(checkpoint, p, s, "cuda")) { gpu = e.Prefill(prompt); output.WriteLine($"{p}/{s}: {string.Join("; ", e.Info.Precisions.Select(kv => kv.Key + ": " + kv.Value))}"); }
            double worst = cpu.Zip(gpu, (a, b) => Math.Abs(a - b)).Max();
            output.WriteLine($"{p}/{s}: max |cuda - cpu accelerator| logit {worst:E2}");
            Assert.True(worst < 1e-4, $"{p}/{s}: {worst}");
        }
    }

    [Fact]
    public void DeviceMemoryForATinyLlamaShapedModel()
    {
        var c = SeededCheckpointWriter.TinyLlamaShapedConfig();
        long weights = IlgpuMemory.Linears(c).Sum(s => (long)s.Rows * s.Cols);
        Assert.Equal(1_034_420_224L, weights); // 22 x (2*2048^2 + 2*256*2048 + 3*5632*2048) + 32000*2048
        foreach (var (p, s) in new[] { ("ilgpu-fp16", "fp16"), ("ilgpu-int8", "per-tensor"), ("ilgpu-int8", "per-channel"), ("ilgpu-int8", "smoothquant"), ("ilgpu-fp8", "per-tensor"), ("ilgpu-fp8", "per-channel"), ("ilgpu-int64", "exact") })
        {
            long bytes = IlgpuMemory.LinearWeightBytes(c, p, s), kv = IlgpuMemory.KvCacheBytes(c, p);
            output.WriteLine($"{p}/{s}: linear weights {bytes:N0} B ({bytes / 1e9:F3} GB), + kv cache at 2048 positions {kv / 1e6:F1} MB");
        }
        Assert.Equal(2 * weights, IlgpuMemory.LinearWeightBytes(c, "ilgpu-fp16", "fp16"));
        Assert.Equal(8 * weights, IlgpuMemory.LinearWeightBytes(c, "ilgpu-int64", "exact"));
        Assert.Equal(weights + 4, IlgpuMemory.LinearWeightBytes(c, "ilgpu-fp8", "per-tensor") - 4 * (22 * 7));
    }

    [Fact]
    public void EngineMemoryMatchesTheEstimateOnTheConformanceModel()
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        foreach (var (p, s) in new[] { ("ilgpu-fp16", "fp16"), ("ilgpu-int8", "per-channel"), ("ilgpu-fp8", "per-tensor") })
        {
            using var engine = (IlgpuFloatEngine)Create(checkpoint, p, s);
            Assert.Equal(IlgpuMemory.LinearWeightBytes(checkpoint.Config, p, s), engine.LinearWeightBytes);
        }
        using var int64 = (IlgpuInt64Engine)Create(checkpoint, "ilgpu-int64", "exact");
        Assert.Equal(IlgpuMemory.LinearWeightBytes(checkpoint.Config, "ilgpu-int64", "exact"), int64.LinearWeightBytes);
    }
}
