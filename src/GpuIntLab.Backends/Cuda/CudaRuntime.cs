using System.Runtime.InteropServices;
using GpuIntLab.Backends.Cuda.Interop;
using GpuIntLab.Core.Inference;

namespace GpuIntLab.Backends.Cuda;

/// <summary>
/// Process-wide CUDA state: the bound driver and NVRTC (loaded once), and whether a device is usable.
/// "No GPU" has two forms (DESIGN §5): the driver library is missing, or it loads and cuInit fails
/// (CUDA_ERROR_NO_DEVICE = 100); both become an <see cref="Availability"/> with the reason, never a crash.
/// </summary>
public static class CudaRuntime
{
    private static readonly Lazy<(CudaDriver? Driver, Nvrtc? Nvrtc, Availability Availability)> s_state =
        new(() => Probe(CudaDriver.DefaultCandidates(), Nvrtc.DefaultCandidates()));

    // Set only by UseForDryRun (the stub-driver tests); otherwise the probed state above.
    private static (CudaDriver? Driver, Nvrtc? Nvrtc, Availability Availability)? s_override;
    private static (CudaDriver? Driver, Nvrtc? Nvrtc, Availability Availability) State => s_override ?? s_state.Value;

    public static Availability Availability => State.Availability;

    /// <summary>Compute capability of device 0 as major*10+minor (0 when unavailable).</summary>
    public static int ComputeCapability => s_override is null ? s_cc.Value : QueryComputeCapability();
    private static readonly Lazy<int> s_cc = new(QueryComputeCapability);
    private static int QueryComputeCapability()
    {
        if (!Availability.IsAvailable) return 0;
        var d = Driver; int dev = d.DeviceGet(0);
        return 10 * d.DeviceAttribute(dev, CudaDriver.AttrComputeCapabilityMajor) + d.DeviceAttribute(dev, CudaDriver.AttrComputeCapabilityMinor);
    }
    internal static CudaDriver Driver => State.Driver ?? throw new CudaUnavailableException(Availability.Reason);
    internal static Nvrtc Nvrtc => State.Nvrtc ?? throw new CudaUnavailableException(Availability.Reason);

    /// <summary>
    /// Makes the process use the given driver and NVRTC (a stand-in libcuda for the GPU-less dry run) until the
    /// returned scope is disposed. Process-wide: callers must not run alongside other CUDA users.
    /// </summary>
    public static IDisposable UseForDryRun(string driverPath, string nvrtcPath)
    {
        var probed = Probe([driverPath], [nvrtcPath]);
        if (!probed.Availability.IsAvailable) throw new CudaUnavailableException(probed.Availability.Reason);
        s_override = probed;
        return new OverrideScope();
    }

    private sealed class OverrideScope : IDisposable
    {
        public void Dispose() => s_override = null;
    }

    /// <summary>Binds the driver and NVRTC from the candidate lists and classifies what is missing.</summary>
    public static (CudaDriver? Driver, Nvrtc? Nvrtc, Availability Availability) Probe(IEnumerable<string> driverCandidates, IEnumerable<string> nvrtcCandidates)
    {
        var driver = CudaDriver.TryLoad(driverCandidates, out string driverReason);
        if (driver is null) return (null, null, Availability.No("unavailable: " + driverReason));
        var availability = ProbeDevice(driver);
        if (!availability.IsAvailable) return (driver, null, availability);
        var nvrtc = Nvrtc.TryLoad(nvrtcCandidates, out string nvrtcReason);
        if (nvrtc is null) return (driver, null, Availability.No("unavailable: " + nvrtcReason));
        var (maj, min) = nvrtc.Version();
        return (driver, nvrtc, Availability.Yes($"{availability.Reason}; NVRTC {maj}.{min} ({nvrtc.Source})"));
    }

    /// <summary>cuInit and device 0, on an already bound driver (a stub in tests).</summary>
    public static Availability ProbeDevice(CudaDriver driver)
    {
        int rc = driver.InitRaw();
        if (rc != CudaDriver.CUDA_SUCCESS)
            return Availability.No($"unavailable: no CUDA driver: cuInit failed: {driver.ErrorName(rc)} ({rc}): {driver.ErrorString(rc)} ({driver.Source})");
        try
        {
            if (driver.DeviceCount() == 0) return Availability.No("unavailable: no CUDA device (cuDeviceGetCount = 0)");
            int dev = driver.DeviceGet(0);
            int major = driver.DeviceAttribute(dev, CudaDriver.AttrComputeCapabilityMajor);
            int minor = driver.DeviceAttribute(dev, CudaDriver.AttrComputeCapabilityMinor);
            return Availability.Yes($"{driver.DeviceName(dev)} (sm_{major}{minor}), driver {driver.DriverVersion()}");
        }
        catch (CudaException e) { return Availability.No("unavailable: " + e.Message); }
    }
}

/// <summary>
/// One device, its primary context and one non-blocking stream; compiles kernels/*.cu with NVRTC for the
/// device's compute capability and launches them. All work of an engine goes through one stream, so a
/// decode step can be captured as a CUDA graph.
/// </summary>
public sealed unsafe class CudaDevice : IDisposable
{
    private readonly CudaDriver _d;
    private readonly int _device;
    private readonly List<ulong> _allocations = [];
    private readonly List<IntPtr> _modules = [];
    private bool _disposed;

    public IntPtr Stream { get; }
    public string Name { get; }
    public int ComputeCapability { get; }   // e.g. 90
    public int MultiprocessorCount { get; }
    /// <summary>Largest shared memory (static + dynamic) one block may use after opting in, in bytes.</summary>
    public int MaxSharedBytesPerBlockOptin { get; }
    public CudaDriver Driver => _d;

    public CudaDevice(int ordinal = 0)
    {
        var a = CudaRuntime.Availability;
        if (!a.IsAvailable) throw new CudaUnavailableException(a.Reason);
        _d = CudaRuntime.Driver;
        _d.Init();
        _device = _d.DeviceGet(ordinal);
        Name = _d.DeviceName(_device);
        ComputeCapability = 10 * _d.DeviceAttribute(_device, CudaDriver.AttrComputeCapabilityMajor) + _d.DeviceAttribute(_device, CudaDriver.AttrComputeCapabilityMinor);
        MultiprocessorCount = _d.DeviceAttribute(_device, CudaDriver.AttrMultiprocessorCount);
        MaxSharedBytesPerBlockOptin = _d.DeviceAttribute(_device, CudaDriver.AttrMaxSharedMemoryPerBlockOptin);
        _context = _d.PrimaryCtxRetain(_device);
        _d.CtxSetCurrent(_context);
        Stream = _d.StreamCreate();
    }

    private readonly IntPtr _context;

    /// <summary>Makes this device's context current on the calling thread (engines call it at every entry).</summary>
    public void MakeCurrent() => _d.CtxSetCurrent(_context);

    /// <summary>Compiles kernels/<paramref name="file"/> (with common.cuh and q48_math.cuh as in-memory headers) for this device.</summary>
    public CudaModule Compile(string file)
    {
        var output = KernelSources.Compile(CudaRuntime.Nvrtc, file, ComputeCapability);
        var module = _d.ModuleLoadData(output.IsCubin ? output.Image : [.. output.Image, 0]);
        _modules.Add(module);
        return new CudaModule(this, module, file, output);
    }

    public ulong Alloc(ulong bytes) { var p = _d.MemAlloc(bytes); _allocations.Add(p); return p; }

    /// <summary>Frees an allocation of <see cref="Alloc"/> before the device is disposed (buffers that grow). Not inside a graph capture.</summary>
    public void Free(ulong pointer)
    {
        if (!_allocations.Remove(pointer)) throw new ArgumentException($"0x{pointer:X} is not an allocation of this device", nameof(pointer));
        _d.MemFree(pointer);
    }

    public ulong Upload<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        ulong bytes = (ulong)data.Length * (ulong)sizeof(T);
        var p = Alloc(bytes);
        Write(p, data);
        return p;
    }

    public void Write<T>(ulong dst, ReadOnlySpan<T> data) where T : unmanaged
    {
        fixed (T* src = data) _d.MemcpyHtoDAsync(dst, src, (ulong)data.Length * (ulong)sizeof(T), Stream);
        _d.StreamSynchronize(Stream); // pageable source: keep it alive until the copy is done
    }

    public void Read<T>(ulong src, Span<T> data) where T : unmanaged
    {
        fixed (T* dst = data) _d.MemcpyDtoHAsync(dst, src, (ulong)data.Length * (ulong)sizeof(T), Stream);
        _d.StreamSynchronize(Stream);
    }

    public T[] Read<T>(ulong src, int count) where T : unmanaged { var a = new T[count]; Read<T>(src, a); return a; }

    public void Fill(ulong dst, byte value, ulong bytes) => _d.MemsetD8Async(dst, value, bytes, Stream);
    public void CopyDeviceToDevice(ulong dst, ulong src, ulong bytes) => _d.MemcpyDtoDAsync(dst, src, bytes, Stream);
    public void Synchronize() => _d.StreamSynchronize(Stream);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        try
        {
            _d.StreamSynchronize(Stream);
            foreach (var p in _allocations) _d.MemFree(p);
            foreach (var m in _modules) _d.ModuleUnload(m);
            _d.StreamDestroy(Stream);
            _d.PrimaryCtxRelease(_device); // the retain in the constructor
        }
        catch (CudaException) { /* teardown after a device error: nothing more to do */ }
    }
}

/// <summary>
/// A loaded module: kernel lookup by name and launches with typed arguments. Every kernel the PTX declares
/// is resolved (cuModuleGetFunction) right here, after the load: never first inside a CUDA graph capture,
/// where lazy loading can refuse it (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED on older drivers).
/// </summary>
public sealed unsafe class CudaModule
{
    private readonly CudaDevice _device;
    private readonly Dictionary<string, IntPtr> _functions = [];
    private readonly Dictionary<string, KernelEntry> _entries = [];
    public string File { get; }
    public CudaDevice Device => _device;
    public NvrtcOutput Compiled { get; }
    /// <summary>ptxas's per-kernel resources (empty for a PTX image, where ptxas did not run).</summary>
    public IReadOnlyDictionary<string, KernelResources> Resources { get; }

    public CudaModule(CudaDevice device, IntPtr module, string file, NvrtcOutput compiled)
    {
        _device = device; File = file; Compiled = compiled;
        Resources = KernelImageInfo.Resources(compiled.Log);
        foreach (var e in KernelImageInfo.Entries(compiled.Ptx))
        {
            _entries[e.Name] = e;
            _functions[e.Name] = device.Driver.ModuleGetFunction(module, e.Name);
        }
    }

    public IntPtr Function(string name) => _functions.TryGetValue(name, out var f) ? f
        : throw new ArgumentException($"{File} has no kernel '{name}' (kernels: {string.Join(", ", _functions.Keys)})", nameof(name));

    /// <summary>Static shared memory of <paramref name="kernel"/> per ptxas, or null when unknown (PTX image).</summary>
    public int? StaticSharedBytes(string kernel) => Resources.TryGetValue(kernel, out var r) ? r.StaticSharedBytes : null;

    /// <summary>
    /// Launches <paramref name="name"/>; each argument is an int, uint or float (4-byte parameter) or a long,
    /// ulong (device pointer) or IntPtr (8-byte parameter). The count and each size must match the kernel's
    /// PTX signature: a mismatch is refused here, before the driver reads the wrong bytes.
    /// </summary>
    public void Launch(string name, (uint X, uint Y) grid, uint block, uint sharedBytes, params object[] args)
    {
        var f = Function(name);
        CheckArguments(_entries[name], args);
        // Marshal each argument into an 8-byte slot; the driver reads sizeof(param) bytes from each.
        ulong* slots = stackalloc ulong[args.Length];
        void** ptrs = stackalloc void*[args.Length];
        for (int i = 0; i < args.Length; i++)
        {
            slots[i] = 0;
            switch (args[i])
            {
                case int v: *(int*)&slots[i] = v; break;
                case uint v: *(uint*)&slots[i] = v; break;
                case long v: *(long*)&slots[i] = v; break;
                case ulong v: slots[i] = v; break;
                case float v: *(float*)&slots[i] = v; break;
                case IntPtr v: *(IntPtr*)&slots[i] = v; break;
                default: throw new ArgumentException($"{name}: unsupported kernel argument type {args[i]?.GetType().Name}");
            }
            ptrs[i] = &slots[i];
        }
        _device.Driver.LaunchKernel(f, Math.Max(1, grid.X), Math.Max(1, grid.Y), 1, block, 1, 1, sharedBytes, _device.Stream, ptrs, $"{File}:{name}");
    }

    private void CheckArguments(KernelEntry entry, object[] args)
    {
        if (args.Length != entry.ParamSizes.Count)
            throw new ArgumentException($"{File}:{entry.Name} takes {entry.ParamSizes.Count} parameters, the launch passes {args.Length}");
        for (int i = 0; i < args.Length; i++)
        {
            int size = args[i] switch { int or uint or float => 4, long or ulong or IntPtr => 8, _ => 0 };
            if (size != entry.ParamSizes[i])
                throw new ArgumentException($"{File}:{entry.Name} parameter {i} is {entry.ParamSizes[i]} bytes, the launch passes a {args[i]?.GetType().Name} ({size} bytes)");
        }
    }
}

/// <summary>Finds kernels/*.cu at run time and compiles them with NVRTC.</summary>
public static class KernelSources
{
    public static readonly string[] Headers = ["common.cuh", "q48_math.cuh", "lowbit.cuh", "kvcache.cuh"];

    /// <summary>kernels/ beside the assembly (copied by the Backends project), or GPUINTLAB_KERNELS.</summary>
    public static string Directory
    {
        get
        {
            var env = Environment.GetEnvironmentVariable("GPUINTLAB_KERNELS");
            if (!string.IsNullOrEmpty(env)) return env;
            return Path.Combine(AppContext.BaseDirectory, "kernels");
        }
    }

    public static string Read(string file)
    {
        string path = Path.Combine(Directory, file);
        if (!System.IO.File.Exists(path)) throw new FileNotFoundException($"CUDA kernel source not found: {path} (kernels/*.cu are copied to the output folder's kernels/)", path);
        return System.IO.File.ReadAllText(path);
    }

    /// <summary>The kernel files of <see cref="Directory"/> (every *.cu), sorted by name.</summary>
    public static IReadOnlyList<string> Files() =>
        [.. System.IO.Directory.EnumerateFiles(Directory, "*.cu").Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal)];

    /// <summary>
    /// NVRTC options for <paramref name="arch"/> ("sm_90": CUBIN, loads on any driver that knows the GPU, even
    /// one older than this NVRTC; "compute_90": PTX, JIT-compiled by the driver, which must be at least as new
    /// as NVRTC). C++17; no fused multiply-add contraction (IEEE rounding kept); --device-int128 because
    /// int64.cu's exact sums use unsigned __int128, which NVRTC (unlike nvcc and clang) refuses without it;
    /// -Xptxas=-v so the log reports registers, spills and shared memory per kernel (no effect on the code).
    /// </summary>
    public static IReadOnlyList<string> Options(string arch) =>
        [$"-arch={arch}", "--std=c++17", "-default-device", "--fmad=false", "--device-int128", "-Xptxas=-v"];

    /// <summary>The options for a device of compute capability <paramref name="computeCapability"/> when NVRTC can emit its CUBIN.</summary>
    public static IReadOnlyList<string> Options(int computeCapability) => Options($"sm_{computeCapability}");

    /// <summary>
    /// The target for a device: its real architecture (CUBIN) whenever this NVRTC lists it; PTX only where a
    /// CUBIN is impossible, i.e. an NVRTC older than the GPU, and then for the newest virtual architecture
    /// the NVRTC knows that the device can run.
    /// </summary>
    public static string Target(Nvrtc nvrtc, int computeCapability)
    {
        var supported = nvrtc.SupportedArchs();
        if (supported is null || supported.Contains(computeCapability)) return $"sm_{computeCapability}";
        var older = supported.Where(a => a <= computeCapability).ToList();
        if (older.Count == 0)
            throw new CudaUnavailableException($"unavailable: NVRTC {nvrtc.Source} knows no architecture at or below sm_{computeCapability} (it has {string.Join(", ", supported)})");
        return $"compute_{older.Max()}";
    }

    public static NvrtcOutput Compile(Nvrtc nvrtc, string file, int computeCapability) =>
        CompileFor(nvrtc, file, Target(nvrtc, computeCapability));

    /// <summary>
    /// Compiles kernels/<paramref name="file"/> for <paramref name="arch"/> with <see cref="Options(string)"/>.
    /// The result is kept per NVRTC, file, architecture and exact source text (file and headers), so the many
    /// engines a check or test run creates compile each module once (int64.cu takes seconds).
    /// </summary>
    public static NvrtcOutput CompileFor(Nvrtc nvrtc, string file, string arch)
    {
        var headers = Headers.ToDictionary(h => h, Read);
        string source = Read(file);
        string key = string.Join("\0", [nvrtc.Source, file, arch, source, .. headers.Values]);
        var lazy = s_compiled.GetOrAdd(key, _ => new Lazy<NvrtcOutput>(() => nvrtc.Compile(source, file, headers, Options(arch))));
        try { return lazy.Value; }
        catch (CudaException) { s_compiled.TryRemove(key, out _); throw; }  // a failed compile is retried next time
    }

    // Keyed by the library's path (two bindings of one library compile alike), file, arch and source text.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<NvrtcOutput>> s_compiled = new();
}
