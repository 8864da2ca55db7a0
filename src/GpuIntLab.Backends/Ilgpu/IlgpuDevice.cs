using System.Reflection;
using System.Runtime.InteropServices;
using GpuIntLab.Core.Inference;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// An ILGPU context and one accelerator, chosen by name: "auto" (CUDA when ILGPU sees a CUDA device,
/// else the CPU accelerator), "cuda" (fails with a reason when there is none) or "cpu". Engines own one
/// and dispose it.
/// </summary>
public sealed class IlgpuDevice : IDisposable
{
    public Context Context { get; }
    public Accelerator Accelerator { get; }
    public bool IsCuda => Accelerator.AcceleratorType == AcceleratorType.Cuda;

    /// <summary>"cpu accelerator" or "cuda: NVIDIA H100 (sm_90)": for EngineInfo.Accelerator.</summary>
    public string Description => IsCuda
        ? $"ilgpu cuda: {Accelerator.Name}"
        : "ilgpu cpu accelerator";

    private IlgpuDevice(Context context, Accelerator accelerator) { Context = context; Accelerator = accelerator; }

    /// <summary>Creates the device or throws <see cref="InvalidOperationException"/> with the unavailability reason.</summary>
    public static IlgpuDevice Create(string accelerator)
    {
        InstallCudaResolver();
        var check = Check(accelerator);
        if (!check.IsAvailable) throw new InvalidOperationException($"unavailable: {check.Reason}");
        // ILGPU's default CPU device runs 16 spinning threads per group; on a 2-core machine that oversubscription
        // made the CPU accelerator ~7x slower (default experiment, fp16: 6.7 -> 49.9 tok/s with 2-thread groups).
        var context = Context.Create(b => b.CPU(new CPUDevice(2, 1, Math.Max(1, Environment.ProcessorCount / 2))).Cuda().EnableAlgorithms());
        try
        {
            bool useCuda = accelerator != "cpu" && context.GetCudaDevices().Count > 0;
            Accelerator acc = useCuda
                ? context.CreateCudaAccelerator(0)
                : context.CreateCPUAccelerator(0);
            return new IlgpuDevice(context, acc);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>Whether the requested accelerator can be had here, without keeping anything open.</summary>
    public static Availability Check(string accelerator)
    {
        if (accelerator is not ("auto" or "cuda" or "cpu"))
            return Availability.No($"unknown accelerator '{accelerator}' (auto, cuda or cpu)");
        if (accelerator == "cpu") return Availability.Yes("ilgpu cpu accelerator");
        InstallCudaResolver();
        try
        {
            using var context = Context.Create(b => b.Default());
            var cuda = context.GetCudaDevices();
            if (cuda.Count > 0) return Availability.Yes($"ilgpu cuda: {cuda[0].Name}");
            return accelerator == "cuda"
                ? Availability.No("no CUDA device: ILGPU found none (no driver, no GPU, or cuInit failed)")
                : Availability.Yes("ilgpu cpu accelerator (no CUDA device found)");
        }
        catch (Exception e) when (accelerator == "auto")
        {
            return Availability.Yes($"ilgpu cpu accelerator (CUDA probe failed: {e.GetType().Name}: {e.Message})");
        }
        catch (Exception e)
        {
            return Availability.No($"no CUDA device: {e.GetType().Name}: {e.Message}");
        }
    }

    private static int s_resolverInstalled;

    /// <summary>
    /// ILGPU P/Invokes the unversioned <c>libcuda.so</c>, which exists only with the driver's development
    /// package; the runtime ships <c>libcuda.so.1</c>. Map one to the other on Linux (DESIGN §5).
    /// ILGPU installs its own resolver under WSL; setting a second one throws, which we ignore.
    /// </summary>
    internal static void InstallCudaResolver()
    {
        if (!OperatingSystem.IsLinux() || Interlocked.Exchange(ref s_resolverInstalled, 1) != 0) return;
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            // a resolver is already set for ILGPU (its WSL one): leave it
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        if (name is "cuda" or "libcuda" or "libcuda.so")
        {
            if (NativeLibrary.TryLoad("libcuda.so", assembly, path, out var h)) return h;
            if (NativeLibrary.TryLoad("libcuda.so.1", assembly, path, out h)) return h;
        }
        return IntPtr.Zero;
    }

    public void Dispose()
    {
        Accelerator.Dispose();
        Context.Dispose();
    }
}
