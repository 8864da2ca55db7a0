using GpuIntLab.Backends.Cuda;
using GpuIntLab.Backends.Cuda.Interop;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
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
        File.Delete(logPath);
    }
}
