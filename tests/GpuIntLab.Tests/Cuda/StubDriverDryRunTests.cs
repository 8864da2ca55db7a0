using GpuIntLab.Backends.Cuda;
using GpuIntLab.Backends.Cuda.Interop;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Tests.Engines;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Cuda;

/// <summary>
/// The native CUDA engines end to end on a stand-in libcuda (Cuda/StubDriver/stub_libcuda.c, built with gcc
/// here) and the real NVRTC: compile, CUBIN module load, kernel lookup, uploads, every launch's marshalling,
/// graph capture and replay, read-back. This checks the PLUMBING, NOT THE NUMBERS: the stub runs no kernel,
/// so the logits are meaningless; it refuses, as a real driver would, any launch outside the device limits,
/// with too much shared memory or a null parameter, any copy outside an allocation, and any kernel lookup
/// inside a graph capture. Skips, with the reason, without NVRTC or gcc.
/// </summary>
[Collection("CudaRuntime")]
public class StubDriverDryRunTests(ITestOutputHelper output)
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

    [SkippableTheory]
    [InlineData("cuda-fp16", "fp16", "gemm_f16_mma", "gemv_f16")]
    [InlineData("cuda-int8", "per-channel", "gemm_int8_mma", "gemv_int8")]
    [InlineData("cuda-fp8", "per-tensor", "gemm_e4m3_mma", "gemv_e4m3")]
    [InlineData("cuda-int64", "exact", "matmul_q48", "matmul_q48")]
    public void Engine_PrefillsAndDecodes_ThroughGraphCapture_OnTheStubDriver(string backend, string scheme, string prefillMatmul, string decodeMatmul)
    {
        var (scope, logPath) = UseStub();
        using var _ = scope;
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        var config = checkpoint.Config;
        var provider = CudaProvider.All.Single(p => p.Name == backend);
        using (var engine = provider.Create(checkpoint, new EngineOptions(scheme)))
        {
            Assert.Equal("CUBIN sm_90", engine.Info.Precisions["module"]);
            var logits = engine.Prefill(Prompt);
            Assert.Equal(config.VocabSize, logits.Length);
            for (int i = 0; i < 3; i++) Assert.Equal(config.VocabSize, engine.Decode(i + 5).Length);
            Assert.Equal(Prompt.Length + 3, engine.Position);
            Assert.Equal(2, ((CudaEngineBase)engine).GraphReplays); // captured on the first decode, replayed on the next two
            Assert.Equal(1, ((CudaEngineBase)engine).GraphCaptures);
        }
        var log = File.ReadAllLines(logPath);
        foreach (var l in log.Take(40)) output.WriteLine(l);
        Assert.DoesNotContain(log, l => l.StartsWith("REFUSED", StringComparison.Ordinal));
        Assert.Contains(log, l => l.StartsWith("module CUBIN", StringComparison.Ordinal));
        string Kernel(string line) => line.Split(' ')[1];
        // Prefill: one un-captured step of T = prompt length through the batch kernels.
        var prefill = log.Where(l => l.StartsWith("launch ", StringComparison.Ordinal)).Select(Kernel).ToList();
        Assert.Equal(config.NumHiddenLayers, prefill.Count(k => k.StartsWith("attention_", StringComparison.Ordinal)));
        Assert.Contains(prefillMatmul, prefill);
        Assert.Equal("advance_pos", prefill[^1]);
        // Decode: one captured step, launched as a graph on each of the three decodes (the first right after capture).
        var captured = log.Where(l => l.StartsWith("capture ", StringComparison.Ordinal)).ToList();
        var replays = log.Where(l => l.StartsWith("replay ", StringComparison.Ordinal)).ToList();
        Assert.Equal(config.NumHiddenLayers, captured.Count(l => Kernel(l).StartsWith("attention_", StringComparison.Ordinal)));
        Assert.Contains(decodeMatmul, captured.Select(Kernel));
        Assert.Equal("advance_pos", Kernel(captured[^1]));
        var step = captured.Select(l => l["capture ".Length..]).ToList();
        Assert.Equal(step.Concat(step).Concat(step), replays.Select(l => l["replay ".Length..]));
        Assert.Equal(3, log.Count(l => l == $"graph-launch {captured.Count} nodes"));
        Assert.Contains($"end-capture {captured.Count} nodes", log);
        File.Delete(logPath);
    }

    /// <summary>
    /// The families (Llama 3 with rope_scaling and 131072 positions, Qwen2 with q/k/v biases, Qwen3 with q/k norm and a
    /// q width of 128 over a hidden size of 64) through every op on the stub: each family's extra kernels launched
    /// as many times as its config asks, a 62-token prefill, then decode across the KV caches' first growth (64 -> 128
    /// positions): the caches and RoPE tables move, the old buffers are freed, and the decode graph is captured again
    /// (the stub refuses any launch or graph replay that still points at freed memory).
    /// </summary>
    [SkippableTheory]
    [InlineData("tiny-llama3", "cuda-int64", "exact")]
    [InlineData("tiny-qwen2", "cuda-int64", "exact")]
    [InlineData("tiny-qwen3", "cuda-int64", "exact")]
    [InlineData("tiny-llama3", "cuda-fp16", "fp16")]
    [InlineData("tiny-qwen2", "cuda-fp8", "per-channel")]
    [InlineData("tiny-qwen3", "cuda-int8", "smoothquant")]
    public void Family_RunsEveryOp_AndRecapturesAfterTheCacheGrows_OnTheStubDriver(string model, string backend, string scheme)
    {
        var (scope, logPath) = UseStub();
        using var _ = scope;
        using var checkpoint = LlamaCheckpoint.Open(FamilyConformance.Model(model).Folder);
        var c = checkpoint.Config;
        var prompt = Enumerable.Range(0, 62).Select(i => (int)((long)i * 7919 % c.VocabSize)).ToArray();
        using (var engine = (CudaEngineBase)CudaProvider.All.Single(p => p.Name == backend).Create(checkpoint, new EngineOptions(scheme)))
        {
            Assert.Equal(c.VocabSize, engine.Prefill(prompt).Length);
            Assert.Equal(64, engine.CachePositions); // sized for the context used, not for max_position_embeddings
            for (int i = 0; i < 5; i++) Assert.Equal(c.VocabSize, engine.Decode(i + 3).Length); // positions 62..66
            Assert.Equal(67, engine.Position);
            Assert.Equal(128, engine.CachePositions);
            // Captured at position 62, replayed at 63; the growth at 64 drops it: captured again, replayed at 65 and 66.
            Assert.Equal(2, engine.GraphCaptures);
            Assert.Equal(3, engine.GraphReplays);
        }
        var log = File.ReadAllLines(logPath);
        Assert.DoesNotContain(log, l => l.StartsWith("REFUSED", StringComparison.Ordinal));
        string Kernel(string line) => line.Split(' ')[1];
        string suffix = backend == "cuda-int64" ? "q48" : "f32";
        var prefill = log.TakeWhile(l => !l.StartsWith("begin-capture", StringComparison.Ordinal))
            .Where(l => l.StartsWith("launch ", StringComparison.Ordinal)).Select(Kernel).ToList();
        int biasesPerLayer = (c.QkvBias ? 3 : 0) + (c.OutputBias ? 1 : 0);
        Assert.Equal(c.NumHiddenLayers * biasesPerLayer, prefill.Count(k => k == $"bias_add_{suffix}"));
        Assert.Equal(c.NumHiddenLayers * (c.QkNorm ? 2 : 0), prefill.Count(k => k == $"rmsnorm_rows_{suffix}"));
        Assert.Equal(c.NumHiddenLayers, prefill.Count(k => k == $"attention_{suffix}"));
        // The q/k norm covers every head of every token: T * heads blocks for q, T * kv_heads for k.
        if (c.QkNorm)
            Assert.Contains(log, l => l.StartsWith($"launch rmsnorm_rows_{suffix} grid={prompt.Length * c.NumAttentionHeads},1,1", StringComparison.Ordinal));
        // Two captures of the same decode step, the second after the caches (2 per layer) and the RoPE tables (2) moved.
        var captures = log.Where(l => l.StartsWith("end-capture", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, captures.Count);
        Assert.Equal(captures[0], captures[1]);
        int lastReplay = Array.FindLastIndex(log, l => l.StartsWith("replay ", StringComparison.Ordinal)); // Dispose frees the rest after it
        Assert.Equal(2 * c.NumHiddenLayers + 2, log.Take(lastReplay).Count(l => l.StartsWith("free ", StringComparison.Ordinal)));
        // The attention's dynamic shared memory follows the cache: 64 positions, then 128.
        int scoreBytes = backend == "cuda-int64" ? 8 : 4;
        Assert.Contains(log, l => l.StartsWith($"capture attention_{suffix}", StringComparison.Ordinal) && l.Contains($" smem={64 * scoreBytes} "));
        Assert.Contains(log, l => l.StartsWith($"capture attention_{suffix}", StringComparison.Ordinal) && l.Contains($" smem={128 * scoreBytes} "));
        File.Delete(logPath);
    }

    /// <summary>
    /// A 300-token prefill on tiny-qwen3: two steps of 256 and 44 tokens (MaxBatch), the KV caches grown from 64 to
    /// 256 positions before the first and to 512 before the second, every layer's attention launched over each batch.
    /// </summary>
    [SkippableFact]
    public void LongPrefill_RunsInBatchesOfAtMost256_GrowingTheCachesBetweenThem()
    {
        var (scope, logPath) = UseStub();
        using var _ = scope;
        using var checkpoint = LlamaCheckpoint.Open(FamilyConformance.Model("tiny-qwen3").Folder);
        var c = checkpoint.Config;
        var prompt = Enumerable.Range(0, 300).Select(i => (int)((long)(i + 1) * 104729 % c.VocabSize)).ToArray();
        using (var engine = (CudaEngineBase)CudaProvider.All.Single(p => p.Name == "cuda-int64").Create(checkpoint, new EngineOptions("exact")))
        {
            Assert.Equal(c.VocabSize, engine.Prefill(prompt).Length);
            Assert.Equal(300, engine.Position);
            Assert.Equal(512, engine.CachePositions);
            Assert.Equal(0, engine.GraphCaptures);
        }
        var log = File.ReadAllLines(logPath);
        Assert.DoesNotContain(log, l => l.StartsWith("REFUSED", StringComparison.Ordinal));
        var attention = log.Where(l => l.StartsWith("launch attention_q48 ", StringComparison.Ordinal)).ToList();
        Assert.Equal(2 * c.NumHiddenLayers, attention.Count);
        Assert.All(attention.Take(c.NumHiddenLayers), l => Assert.Contains($"grid={c.NumAttentionHeads},256,1 ", l));
        Assert.All(attention.Skip(c.NumHiddenLayers), l => Assert.Contains($"grid={c.NumAttentionHeads},44,1 ", l));
        // Only the last batch computes logits: one lm_head matmul (vocab rows) in the whole prefill.
        Assert.Single(log, l => l.StartsWith($"launch matmul_q48 grid={(c.VocabSize + 7) / 8},1,1 ", StringComparison.Ordinal));
        File.Delete(logPath);
    }

    [SkippableFact]
    public void TheStubRefusesWhatARealDriverRefuses_AndTheModuleRefusesAWrongSignature()
    {
        var (scope, logPath) = UseStub();
        using var _ = scope;
        using var dev = new CudaDevice();
        var m = dev.Compile("fp16.cu");
        ulong buf = dev.Alloc(1024);
        // 49,100 B dynamic + 128 B static without the opt-in attribute: over 48 KB (49,152 B), refused at launch,
        // although the dynamic part alone is under 48 KB (the old engines' threshold missed this edge).
        var e = Assert.Throws<CudaException>(() => m.Launch("attention_f32", (1, 1), 128, 49_100, buf, buf, buf, buf, buf, 1, 1, 64, 0.125f));
        Assert.Contains("cuLaunchKernel(fp16.cu:attention_f32)", e.Message);
        Assert.Contains("dynamic shared memory 49100 > the kernel's limit 49024", File.ReadAllText(logPath));
        // A copy past the end of an allocation.
        Assert.Throws<CudaException>(() => dev.Read<float>(buf, 257));
        // One argument too few, and an int where the kernel takes a pointer: refused before the driver sees them.
        var few = Assert.Throws<ArgumentException>(() => m.Launch("add_f32", (1, 1), 32, 0, buf, buf));
        Assert.Contains("add_f32 takes 3 parameters, the launch passes 2", few.Message);
        var wrong = Assert.Throws<ArgumentException>(() => m.Launch("add_f32", (1, 1), 32, 0, buf, 7, 4));
        Assert.Contains("parameter 1 is 8 bytes, the launch passes a Int32 (4 bytes)", wrong.Message);
        // A pointer to freed memory (what a graph captured before a buffer moved would hold).
        ulong gone = dev.Alloc(4096);
        dev.Free(gone);
        Assert.Throws<CudaException>(() => m.Launch("add_f32", (1, 1), 32, 0, buf, gone, 4));
        Assert.Contains("parameter 1 points to freed memory", File.ReadAllText(logPath));
        File.Delete(logPath);
    }
}
