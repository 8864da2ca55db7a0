using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using GpuIntLab.Backends;
using GpuIntLab.Backends.Cuda;
using GpuIntLab.Backends.Cuda.Interop;
using GpuIntLab.Core.Inference;
using Xunit;

namespace GpuIntLab.Tests.Cuda;

/// <summary>The driver/NVRTC binding without a GPU: both forms of "no GPU" (library missing, cuInit failing).</summary>
[Collection("CudaRuntime")]
public unsafe class CudaInteropTests
{
    [Fact]
    public void MissingDriverLibrary_IsReportedAsNoCudaDriver()
    {
        var (driver, nvrtc, a) = CudaRuntime.Probe(["libcuda-gpuintlab-missing.so.1"], ["libnvrtc-gpuintlab-missing.so"]);
        Assert.Null(driver); Assert.Null(nvrtc);
        Assert.False(a.IsAvailable);
        Assert.StartsWith("unavailable: no CUDA driver", a.Reason);
        Assert.Contains("libcuda-gpuintlab-missing.so.1", a.Reason);
    }

    [Fact]
    public void MissingNvrtcLibrary_IsReportedAsNoNvrtc()
    {
        Assert.Null(Nvrtc.TryLoad(["libnvrtc-gpuintlab-missing.so"], out string reason));
        Assert.StartsWith("no NVRTC", reason);
    }

    // ---- a stub driver: real function pointers into managed code, so the binding's calls really run ----
    private static readonly IntPtr s_noDevice = Marshal.StringToHGlobalAnsi("CUDA_ERROR_NO_DEVICE");
    private static readonly IntPtr s_noDeviceText = Marshal.StringToHGlobalAnsi("no CUDA-capable device is detected");
    private static int s_initCalls;

    [UnmanagedCallersOnly] private static int StubInit(uint flags) { s_initCalls++; return 100; }
    [UnmanagedCallersOnly] private static int StubErrorName(int code, byte** s) { *s = code == 100 ? (byte*)s_noDevice : null; return code == 100 ? 0 : 1; }
    [UnmanagedCallersOnly] private static int StubErrorString(int code, byte** s) { *s = code == 100 ? (byte*)s_noDeviceText : null; return code == 100 ? 0 : 1; }
    [UnmanagedCallersOnly] private static int StubUnexpected() => 999;

    private sealed class StubResolver(params string[] missing) : ISymbolResolver
    {
        public string Source => "stub libcuda";
        public IntPtr Find(string symbol)
        {
            if (missing.Contains(symbol)) return IntPtr.Zero;
            return symbol switch
            {
                "cuInit" => (IntPtr)(delegate* unmanaged<uint, int>)&StubInit,
                "cuGetErrorName" => (IntPtr)(delegate* unmanaged<int, byte**, int>)&StubErrorName,
                "cuGetErrorString" => (IntPtr)(delegate* unmanaged<int, byte**, int>)&StubErrorString,
                _ => (IntPtr)(delegate* unmanaged<int>)&StubUnexpected, // never called in these tests
            };
        }
    }

    [Fact]
    public void CuInitFailing_IsReportedWithTheDriversErrorNameAndString()
    {
        var driver = CudaDriver.Bind(new StubResolver());
        int before = s_initCalls;
        var a = CudaRuntime.ProbeDevice(driver);
        Assert.Equal(before + 1, s_initCalls);
        Assert.False(a.IsAvailable);
        Assert.StartsWith("unavailable: no CUDA driver: cuInit failed", a.Reason);
        Assert.Contains("CUDA_ERROR_NO_DEVICE (100)", a.Reason);
        Assert.Contains("no CUDA-capable device is detected", a.Reason);
    }

    [Fact]
    public void EveryFailedCall_ThrowsNamingTheCallAndTheErrorString()
    {
        var driver = CudaDriver.Bind(new StubResolver());
        var e = Assert.Throws<CudaException>(() => driver.Init());
        Assert.Equal("cuInit", e.Call);
        Assert.Equal(100, e.Code);
        Assert.Contains("cuInit failed: CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is detected", e.Message);
        var other = Assert.Throws<CudaException>(() => driver.Check(999, "cuMemAlloc_v2(64 bytes)"));
        Assert.Contains("cuMemAlloc_v2(64 bytes) failed: CUDA_ERROR_999", other.Message);
    }

    [Fact]
    public void MissingSymbol_IsUnavailableNamingTheSymbol()
    {
        var e = Assert.Throws<CudaUnavailableException>(() => CudaDriver.Bind(new StubResolver("cuLaunchKernel")));
        Assert.Contains("cuLaunchKernel", e.Message);
    }

    [Fact]
    public void Catalog_ListsTheFourCudaBackends_WithTheirSchemes()
    {
        Assert.Equal(["fp16"], BackendCatalog.Find("cuda-fp16")!.Schemes);
        Assert.Equal(["per-tensor", "per-channel", "smoothquant"], BackendCatalog.Find("cuda-int8")!.Schemes);
        Assert.Equal(["per-tensor", "per-channel"], BackendCatalog.Find("cuda-fp8")!.Schemes);
        Assert.Equal(["exact"], BackendCatalog.Find("cuda-int64")!.Schemes);
        Assert.False(BackendCatalog.Find("cuda-fp16")!.CheckAvailability("cpu").IsAvailable);
    }

    [SkippableFact]
    public void WithoutAGpu_ProvidersSayWhyAndCreateThrows()
    {
        Skip.If(CudaRuntime.Availability.IsAvailable, "a CUDA device is present: the no-GPU path is not reachable here");
        foreach (var p in CudaProvider.All)
        {
            var a = p.CheckAvailability("auto");
            Assert.False(a.IsAvailable);
            Assert.StartsWith("unavailable: no ", a.Reason); // "no CUDA driver ..." or "no NVRTC ..."
            var e = Assert.Throws<CudaUnavailableException>(() => p.Create(null!, new EngineOptions(p.Schemes[0])));
            Assert.Contains(a.Reason, e.Message);
        }
    }

    [Fact]
    public void KernelSources_AreCopiedBesideTheAssembly()
    {
        foreach (var f in new[] { "fp16.cu", "int8.cu", "fp8.cu", "int64.cu", "common.cuh", "q48_math.cuh" })
            Assert.True(File.Exists(Path.Combine(KernelSources.Directory, f)), $"{f} missing from {KernelSources.Directory}");
        Assert.Contains("-arch=sm_90", KernelSources.Options(90));
    }
}
