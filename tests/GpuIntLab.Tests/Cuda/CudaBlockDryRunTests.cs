using GpuIntLab.Backends.Cuda;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Tests.Engines;
using Xunit;

namespace GpuIntLab.Tests.Cuda;

/// <summary>
/// The issue-15 CUDA backends (cuda-bf16, cuda-int4, cuda-mx, cuda-nvfp4) and the quantized KV caches end to end on
/// the stand-in libcuda (see <see cref="StubDriverDryRunTests"/>): compile of block.cu, uploads of the packed weights,
/// every launch's marshalling against the PTX signatures, graph capture and replay, read-back. PLUMBING, NOT NUMBERS:
/// the stub runs no kernel. Skips, with the reason, without NVRTC or gcc.
/// </summary>
[Collection("CudaRuntime")]
public class CudaBlockDryRunTests
{
    private static readonly int[] Prompt = [1, 450, 7483, 310, 3444, 338];

    private static (IDisposable Scope, string Log) UseStub()
    {
        string nvrtc = CudaToolsForTests.NvrtcPath();
        string stub = CudaToolsForTests.StubDriverPath();
        string log = Path.Combine(Path.GetTempPath(), $"gpuintlab-stub-{Environment.ProcessId}-{Guid.NewGuid():N}.log");
        CudaToolsForTests.SetStubLog(stub, log);
        return (CudaRuntime.UseForDryRun(stub, nvrtc), log);
    }

    private static string Kernel(string line) => line.Split(' ')[1];

    [SkippableTheory]
    [InlineData("cuda-bf16", "bf16", "float32", "input_bf16", "gemm_bf16_mma", "gemv_bf16")]
    [InlineData("cuda-int4", "int4-g128-rtn-asym", "fp8-e4m3", "input_f16", "gemv_int4", "gemv_int4")]
    [InlineData("cuda-int4", "int4-g128-rtn-sym", "int8", "input_f16", "gemv_int4", "gemv_int4")]
    [InlineData("cuda-mx", "mxfp4-rceil-w4a4", "int8", "input_mx", "gemv_block", "gemv_block")]
    [InlineData("cuda-mx", "mxfp6-e3m2-ocp-floor-weight-only", "float32", "input_bf16_f32", "gemv_block", "gemv_block")]
    [InlineData("cuda-nvfp4", "nvfp4-w4a4", "fp8-e4m3", "input_nvfp4", "gemv_block", "gemv_block")]
    public void BlockEngine_PrefillsAndDecodes_ThroughGraphCapture_OnTheStubDriver(string backend, string scheme, string kv, string input, string prefillMatmul, string decodeMatmul)
    {
        var (scope, logPath) = UseStub();
        using var _ = scope;
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        var c = checkpoint.Config;
        var provider = CudaProvider.All.Single(p => p.Name == backend);
        Assert.Contains(kv, Assert.IsAssignableFrom<IKvCacheFormats>(provider).KvCacheFormats);
        using (var engine = (CudaFloatEngine)provider.Create(checkpoint, new EngineOptions(scheme, KvCache: kv)))
        {
            Assert.Equal("CUBIN sm_90", engine.Info.Precisions["module"]);
            Assert.Equal((backend, scheme), (engine.Info.Name, engine.Info.Scheme));
            Assert.Equal(CudaKvCache.Note(kv), engine.Info.Precisions["kv cache"]);
            Assert.Equal(c.VocabSize, engine.Prefill(Prompt).Length);
            for (int i = 0; i < 3; i++) Assert.Equal(c.VocabSize, engine.Decode(i + 5).Length);
            Assert.Equal((2, 1), (engine.GraphReplays, engine.GraphCaptures));
        }
        var log = File.ReadAllLines(logPath);
        Assert.DoesNotContain(log, l => l.StartsWith("REFUSED", StringComparison.Ordinal));
        var prefill = log.Where(l => l.StartsWith("launch ", StringComparison.Ordinal)).Select(Kernel).ToList();
        var captured = log.Where(l => l.StartsWith("capture ", StringComparison.Ordinal)).Select(Kernel).ToList();
        int linears = 7 * c.NumHiddenLayers; // q, k, v, o, gate, up, down; lm_head stays bf16 (but is the bf16 scheme's own)
        Assert.Equal(linears + (backend == "cuda-bf16" ? 1 : 0), prefill.Count(k => k == input));
        Assert.Equal(linears, prefill.Count(k => k == prefillMatmul)); // the prefill's lm_head runs for its last token only: a GEMV
        Assert.Equal(linears + (backend == "cuda-bf16" ? 1 : 0), captured.Count(k => k == decodeMatmul));
        Assert.Equal(1, captured.Count(k => k == "gemv_bf16") - (backend == "cuda-bf16" ? linears : 0)); // the bf16 lm_head, once per decode step
        // The KV format's store and attention kernels, once per layer and step.
        var (store, attention) = kv switch
        {
            "fp8-e4m3" => ("kv_store_fp8", "attention_fp8kv"),
            "int8" => ("kv_store_int8", "attention_int8kv"),
            _ => ("kv_store_f32", "attention_f32"),
        };
        Assert.Equal(c.NumHiddenLayers, prefill.Count(k => k == store));
        Assert.Equal(c.NumHiddenLayers, captured.Count(k => k == attention));
        Assert.Equal(kv == "fp8-e4m3" ? c.NumHiddenLayers : 0, captured.Count(k => k == "kv_fp8_scales")); // launched every step, no-op after position 0
        Assert.DoesNotContain(captured, k => k.StartsWith("attention_", StringComparison.Ordinal) && k != attention);
        File.Delete(logPath);
    }

    /// <summary>
    /// A quantized KV cache across its first growth (64 -> 128 positions) on tiny-qwen3 (q/k norm, a q width unlike the
    /// hidden size): the code caches (kv_dim bytes, or the int8 stride, per position) move, the old ones are freed, the
    /// decode graph is captured again; an fp16 engine (the existing backends take the cache too) and an int4 one.
    /// </summary>
    [SkippableTheory]
    [InlineData("cuda-fp16", "fp16", "int8")]
    [InlineData("cuda-int4", "int4-g128-rtn-asym", "fp8-e4m3")]
    public void QuantizedKvCache_GrowsAndRecaptures_OnTheStubDriver(string backend, string scheme, string kv)
    {
        var (scope, logPath) = UseStub();
        using var _ = scope;
        using var checkpoint = LlamaCheckpoint.Open(FamilyConformance.Model("tiny-qwen3").Folder);
        var c = checkpoint.Config;
        var prompt = Enumerable.Range(0, 62).Select(i => (int)((long)i * 7919 % c.VocabSize)).ToArray();
        using (var engine = (CudaEngineBase)CudaProvider.All.Single(p => p.Name == backend).Create(checkpoint, new EngineOptions(scheme, KvCache: kv)))
        {
            Assert.Equal(c.VocabSize, engine.Prefill(prompt).Length);
            for (int i = 0; i < 5; i++) Assert.Equal(c.VocabSize, engine.Decode(i + 3).Length);
            Assert.Equal((128, 2, 3), (engine.CachePositions, engine.GraphCaptures, engine.GraphReplays));
        }
        var log = File.ReadAllLines(logPath);
        Assert.DoesNotContain(log, l => l.StartsWith("REFUSED", StringComparison.Ordinal));
        // The caches had their quantized size: at the growth, 2 per layer of 64 positions of kv_dim bytes (fp8) or of the int8 stride were freed.
        long bytes = 64 * CudaKvCache.BytesPerPosition(kv, c);
        Assert.True(log.Count(l => l == $"free {bytes} bytes") >= 2 * c.NumHiddenLayers,
            $"expected {2 * c.NumHiddenLayers} cache buffers of {bytes} B freed:\n" + string.Join("\n", log.Where(l => l.StartsWith("free ", StringComparison.Ordinal)).Take(12)));
        string attention = kv == "int8" ? "attention_int8kv" : "attention_fp8kv";
        Assert.Contains(log, l => l.StartsWith($"capture {attention}", StringComparison.Ordinal) && l.Contains($" smem={64 * 4} "));
        Assert.Contains(log, l => l.StartsWith($"capture {attention}", StringComparison.Ordinal) && l.Contains($" smem={128 * 4} "));
        File.Delete(logPath);
    }

    /// <summary>
    /// The GPU self-check of the new kernels (run by scripts/cuda-check when a GPU is lent) on the stub: every launch
    /// passes the stub's signature and limit checks, and since the stub computes nothing, every check FAILS (the
    /// outputs are poisoned or left unwritten): none of them can pass without the kernels running.
    /// </summary>
    [SkippableFact]
    public void TheBlockSelfCheck_LaunchesEveryNewKernel_AndFailsWhenNothingIsComputed()
    {
        var (scope, logPath) = UseStub();
        using var _ = scope;
        using (var dev = new CudaDevice())
        {
            var checks = CudaBlockSelfCheck.Run(dev, new Random(3), CudaBlockSelfCheck.Shapes.Take(3).ToList()); // the 2048 x 2048 one only adds host time here
            Assert.Equal(3 * 13 + 5, checks.Count); // per shape: bf16 3, int4 2, three MX 2 each, nvfp4 2; then the KV stores 5
            Assert.All(checks, c => Assert.False(c.Pass, c.Name));
        }
        var log = File.ReadAllLines(logPath);
        Assert.DoesNotContain(log, l => l.StartsWith("REFUSED", StringComparison.Ordinal));
        var launched = log.Where(l => l.StartsWith("launch ", StringComparison.Ordinal)).Select(Kernel).ToHashSet();
        foreach (var kernel in new[] { "input_bf16", "gemv_bf16", "gemm_bf16_mma", "input_f16", "gemv_int4", "input_mx", "input_bf16_f32", "input_nvfp4", "gemv_block", "kv_fp8_scales", "kv_store_fp8", "kv_store_int8" })
            Assert.Contains(kernel, launched);
        File.Delete(logPath);
    }

    /// <summary>experiments/gpu-check.json (step 3 of scripts/cuda-check on a GPU) names the new backends' schemes and KV formats validly.</summary>
    [SkippableFact]
    public void TheGpuCheckSpec_ResolvesTheNewBackendsSchemesAndKvCaches()
    {
        Skip.If(CudaToolsForTests.RepoRoot == "", "no repository above the test folder");
        var spec = GpuIntLab.Experiments.ExperimentSpec.Load(Path.Combine(CudaToolsForTests.RepoRoot, "experiments", "gpu-check.json"));
        var units = spec.ResolveBackends(GpuIntLab.Backends.BackendCatalog.Find, GpuIntLab.Backends.BackendCatalog.All.Select(p => p.Name));
        Assert.Contains(units, u => u.Provider.Name == "cuda-int4" && u.Scheme == "int4-g128-rtn-asym" && u.KvCache == "fp8-e4m3");
        Assert.Contains(units, u => u.Provider.Name == "cuda-bf16" && u.KvCache == "int8");
        foreach (var family in new[] { "cuda-bf16", "cuda-int4", "cuda-mx", "cuda-nvfp4" }) Assert.Contains(units, u => u.Provider.Name == family);
    }

    [SkippableFact]
    public void AnUnknownKvCache_IsRefusedBeforeTheDeviceIsTouched()
    {
        var (scope, logPath) = UseStub();
        using var _ = scope;
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        var e = Assert.Throws<ArgumentException>(() => CudaProvider.All.Single(p => p.Name == "cuda-bf16").Create(checkpoint, new EngineOptions("bf16", KvCache: "q4")));
        Assert.Equal("cuda-bf16: unknown kv_cache 'q4' (expected float32, fp8-e4m3, int8)", e.Message);
        File.Delete(logPath);
    }
}
