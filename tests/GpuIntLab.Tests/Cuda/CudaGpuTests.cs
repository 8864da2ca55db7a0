using GpuIntLab.Backends.Cuda;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Cuda;

/// <summary>
/// Checks that need a CUDA device. Without one each shows as SKIPPED with the runtime's reason
/// ("unavailable: no CUDA driver ..." / "no NVRTC ..."), never as passed.
/// </summary>
[Collection("CudaRuntime")]
public class CudaGpuTests(ITestOutputHelper output)
{
    private static void RequireGpu() => Skip.IfNot(CudaRuntime.Availability.IsAvailable, CudaRuntime.Availability.Reason);

    [SkippableFact]
    public void Kernels_CompileForTheDevice_AndPassTheirChecksAgainstCpuReferences()
    {
        RequireGpu();
        using var dev = new CudaDevice();
        var checks = CudaSelfCheck.RunKernelChecks(dev);
        foreach (var c in checks) output.WriteLine($"{(c.Pass ? "PASS" : "FAIL")} {c.Name}: {c.Metric} = {c.Value:G4} (bound {c.Bound:G4})");
        Assert.All(checks, c => Assert.True(c.Pass, $"{c.Name}: {c.Metric} = {c.Value:G4} > {c.Bound:G4}"));
    }

    [SkippableFact]
    public void Int64Engine_IsBitIdenticalToTheOracle()
    {
        RequireGpu();
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var oracle = new OracleEngine(checkpoint, 2);
        using var gpu = (CudaInt64Engine)CudaProvider.All.Single(p => p.Name == "cuda-int64").Create(checkpoint, new EngineOptions("exact"));
        int[] prompt = [1, 450, 7483, 310, 3444, 338];
        using var hOracle = new LogitsHash(); using var hGpu = new LogitsHash();
        oracle.Prefill(prompt); gpu.Prefill(prompt);
        hOracle.Append(oracle.LastRawLogits); hGpu.Append(gpu.LastRawLogits);
        for (int i = 0; i < 12; i++)
        {
            int next = Greedy.ArgMax(Array.ConvertAll(oracle.LastRawLogits, v => (double)v));
            oracle.DecodeRaw(next); gpu.Decode(next);
            hOracle.Append(oracle.LastRawLogits); hGpu.Append(gpu.LastRawLogits);
        }
        Assert.Equal(hOracle.Finish(), hGpu.Finish());
        Assert.True(gpu.GraphReplays > 0 || Environment.GetEnvironmentVariable("GPUINTLAB_CUDA_GRAPHS") == "0");
    }

    [SkippableTheory]
    [InlineData("cuda-fp16", "fp16")]
    [InlineData("cuda-int8", "per-tensor")]
    [InlineData("cuda-int8", "per-channel")]
    [InlineData("cuda-int8", "smoothquant")]
    [InlineData("cuda-fp8", "per-tensor")]
    [InlineData("cuda-fp8", "per-channel")]
    public void LowPrecisionEngines_RunAndTrackTheReference(string backend, string scheme)
    {
        RequireGpu();
        var provider = CudaProvider.All.Single(p => p.Name == backend);
        var a = provider.CheckAvailability("cuda");
        Skip.IfNot(a.IsAvailable, a.Reason);
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var reference = new ReferenceEngine(checkpoint, 2);
        using var engine = provider.Create(checkpoint, new EngineOptions(scheme));
        int[] prompt = [1, 9038, 2501, 263, 931];
        var want = reference.Prefill(prompt); var got = engine.Prefill(prompt);
        int agree = 0, steps = 16;
        for (int i = 0; i < steps; i++)
        {
            Assert.All(got, v => Assert.True(double.IsFinite(v)));
            if (Greedy.ArgMax(got) == Greedy.ArgMax(want)) agree++;
            int next = Greedy.ArgMax(want); // teacher-forced: both follow the reference
            want = reference.Decode(next); got = engine.Decode(next);
        }
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++) { num += (got[i] - want[i]) * (got[i] - want[i]); den += want[i] * want[i]; }
        output.WriteLine($"{backend} {scheme}: teacher-forced top-1 {agree}/{steps}, last-step logits rel L2 {Math.Sqrt(num / den):G3}");
        Assert.True(Math.Sqrt(num / den) < (backend == "cuda-fp16" ? 1e-2 : 0.5), $"logits rel error {Math.Sqrt(num / den):G3}");
    }
}
