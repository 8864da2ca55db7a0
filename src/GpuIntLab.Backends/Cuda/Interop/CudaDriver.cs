using System.Runtime.InteropServices;
using System.Text;

namespace GpuIntLab.Backends.Cuda.Interop;

/// <summary>
/// The thin binding of the CUDA driver API (libcuda.so.1 / nvcuda.dll): the only place that calls it.
/// Every entry point is resolved once, by name, when the library is bound (a missing symbol is a
/// <see cref="CudaUnavailableException"/> naming it), and every call goes through <see cref="Check"/>,
/// which turns a non-zero CUresult into a <see cref="CudaException"/> naming the call and the driver's
/// own error name and string. Handles are <see cref="IntPtr"/>, device pointers <see cref="ulong"/>.
/// </summary>
public sealed unsafe class CudaDriver
{
    public const int CUDA_SUCCESS = 0;
    public const int CUDA_ERROR_NO_DEVICE = 100;

    // CUdevice_attribute values used here (cuda.h).
    public const int AttrMultiprocessorCount = 16;
    public const int AttrMemoryClockRate = 36;
    public const int AttrGlobalMemoryBusWidth = 37;
    public const int AttrL2CacheSize = 38;
    public const int AttrComputeCapabilityMajor = 75;
    public const int AttrComputeCapabilityMinor = 76;
    public const int AttrMaxSharedMemoryPerBlockOptin = 97;
    // CUfunction_attribute
    public const int FuncAttrMaxDynamicSharedSizeBytes = 8;
    // CUstreamCaptureMode
    public const int StreamCaptureModeThreadLocal = 1;

    /// <summary>Library names tried in order (the OS loader's search path), unless GPUINTLAB_CUDA_DRIVER names a file.</summary>
    public static IReadOnlyList<string> DefaultCandidates()
    {
        var list = new List<string>();
        var env = Environment.GetEnvironmentVariable("GPUINTLAB_CUDA_DRIVER");
        if (!string.IsNullOrEmpty(env)) list.Add(env);
        if (OperatingSystem.IsWindows()) list.Add("nvcuda.dll");
        else list.AddRange(["libcuda.so.1", "libcuda.so", "/usr/local/nvidia/lib64/libcuda.so.1", "/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1"]);
        return list;
    }

    public string Source { get; }

    private readonly delegate* unmanaged<uint, int> _cuInit;
    private readonly delegate* unmanaged<int*, int> _cuDriverGetVersion;
    private readonly delegate* unmanaged<int*, int> _cuDeviceGetCount;
    private readonly delegate* unmanaged<int*, int, int> _cuDeviceGet;
    private readonly delegate* unmanaged<byte*, int, int, int> _cuDeviceGetName;
    private readonly delegate* unmanaged<int*, int, int, int> _cuDeviceGetAttribute;
    private readonly delegate* unmanaged<nuint*, int, int> _cuDeviceTotalMem;
    private readonly delegate* unmanaged<IntPtr*, int, int> _cuDevicePrimaryCtxRetain;
    private readonly delegate* unmanaged<int, int> _cuDevicePrimaryCtxRelease;
    private readonly delegate* unmanaged<IntPtr, int> _cuCtxSetCurrent;
    private readonly delegate* unmanaged<int> _cuCtxSynchronize;
    private readonly delegate* unmanaged<IntPtr*, void*, int> _cuModuleLoadData;
    private readonly delegate* unmanaged<IntPtr*, IntPtr, byte*, int> _cuModuleGetFunction;
    private readonly delegate* unmanaged<IntPtr, int> _cuModuleUnload;
    private readonly delegate* unmanaged<IntPtr, int, int, int> _cuFuncSetAttribute;
    private readonly delegate* unmanaged<ulong*, nuint, int> _cuMemAlloc;
    private readonly delegate* unmanaged<ulong, int> _cuMemFree;
    private readonly delegate* unmanaged<ulong, void*, nuint, IntPtr, int> _cuMemcpyHtoDAsync;
    private readonly delegate* unmanaged<void*, ulong, nuint, IntPtr, int> _cuMemcpyDtoHAsync;
    private readonly delegate* unmanaged<ulong, ulong, nuint, IntPtr, int> _cuMemcpyDtoDAsync;
    private readonly delegate* unmanaged<ulong, byte, nuint, IntPtr, int> _cuMemsetD8Async;
    private readonly delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int> _cuLaunchKernel;
    private readonly delegate* unmanaged<IntPtr*, uint, int> _cuStreamCreate;
    private readonly delegate* unmanaged<IntPtr, int> _cuStreamSynchronize;
    private readonly delegate* unmanaged<IntPtr, int> _cuStreamDestroy;
    private readonly delegate* unmanaged<IntPtr*, uint, int> _cuEventCreate;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> _cuEventRecord;
    private readonly delegate* unmanaged<IntPtr, int> _cuEventSynchronize;
    private readonly delegate* unmanaged<float*, IntPtr, IntPtr, int> _cuEventElapsedTime;
    private readonly delegate* unmanaged<IntPtr, int> _cuEventDestroy;
    private readonly delegate* unmanaged<IntPtr, int, int> _cuStreamBeginCapture;
    private readonly delegate* unmanaged<IntPtr, IntPtr*, int> _cuStreamEndCapture;
    private readonly delegate* unmanaged<IntPtr*, IntPtr, ulong, int> _cuGraphInstantiateWithFlags;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> _cuGraphLaunch;
    private readonly delegate* unmanaged<IntPtr, int> _cuGraphExecDestroy;
    private readonly delegate* unmanaged<IntPtr, int> _cuGraphDestroy;
    private readonly delegate* unmanaged<int, byte**, int> _cuGetErrorName;
    private readonly delegate* unmanaged<int, byte**, int> _cuGetErrorString;

    private CudaDriver(ISymbolResolver r)
    {
        Source = r.Source;
        IntPtr F(params string[] names)
        {
            foreach (var n in names) { var p = r.Find(n); if (p != IntPtr.Zero) return p; }
            throw new CudaUnavailableException($"no CUDA driver: {r.Source} lacks {string.Join(" / ", names)}");
        }
        _cuGetErrorName = (delegate* unmanaged<int, byte**, int>)F("cuGetErrorName");
        _cuGetErrorString = (delegate* unmanaged<int, byte**, int>)F("cuGetErrorString");
        _cuInit = (delegate* unmanaged<uint, int>)F("cuInit");
        _cuDriverGetVersion = (delegate* unmanaged<int*, int>)F("cuDriverGetVersion");
        _cuDeviceGetCount = (delegate* unmanaged<int*, int>)F("cuDeviceGetCount");
        _cuDeviceGet = (delegate* unmanaged<int*, int, int>)F("cuDeviceGet");
        _cuDeviceGetName = (delegate* unmanaged<byte*, int, int, int>)F("cuDeviceGetName");
        _cuDeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)F("cuDeviceGetAttribute");
        _cuDeviceTotalMem = (delegate* unmanaged<nuint*, int, int>)F("cuDeviceTotalMem_v2");
        _cuDevicePrimaryCtxRetain = (delegate* unmanaged<IntPtr*, int, int>)F("cuDevicePrimaryCtxRetain");
        _cuDevicePrimaryCtxRelease = (delegate* unmanaged<int, int>)F("cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease");
        _cuCtxSetCurrent = (delegate* unmanaged<IntPtr, int>)F("cuCtxSetCurrent");
        _cuCtxSynchronize = (delegate* unmanaged<int>)F("cuCtxSynchronize");
        _cuModuleLoadData = (delegate* unmanaged<IntPtr*, void*, int>)F("cuModuleLoadData");
        _cuModuleGetFunction = (delegate* unmanaged<IntPtr*, IntPtr, byte*, int>)F("cuModuleGetFunction");
        _cuModuleUnload = (delegate* unmanaged<IntPtr, int>)F("cuModuleUnload");
        _cuFuncSetAttribute = (delegate* unmanaged<IntPtr, int, int, int>)F("cuFuncSetAttribute");
        _cuMemAlloc = (delegate* unmanaged<ulong*, nuint, int>)F("cuMemAlloc_v2");
        _cuMemFree = (delegate* unmanaged<ulong, int>)F("cuMemFree_v2");
        _cuMemcpyHtoDAsync = (delegate* unmanaged<ulong, void*, nuint, IntPtr, int>)F("cuMemcpyHtoDAsync_v2");
        _cuMemcpyDtoHAsync = (delegate* unmanaged<void*, ulong, nuint, IntPtr, int>)F("cuMemcpyDtoHAsync_v2");
        _cuMemcpyDtoDAsync = (delegate* unmanaged<ulong, ulong, nuint, IntPtr, int>)F("cuMemcpyDtoDAsync_v2");
        _cuMemsetD8Async = (delegate* unmanaged<ulong, byte, nuint, IntPtr, int>)F("cuMemsetD8Async");
        _cuLaunchKernel = (delegate* unmanaged<IntPtr, uint, uint, uint, uint, uint, uint, uint, IntPtr, void**, void**, int>)F("cuLaunchKernel");
        _cuStreamCreate = (delegate* unmanaged<IntPtr*, uint, int>)F("cuStreamCreate");
        _cuStreamSynchronize = (delegate* unmanaged<IntPtr, int>)F("cuStreamSynchronize");
        _cuStreamDestroy = (delegate* unmanaged<IntPtr, int>)F("cuStreamDestroy_v2");
        _cuEventCreate = (delegate* unmanaged<IntPtr*, uint, int>)F("cuEventCreate");
        _cuEventRecord = (delegate* unmanaged<IntPtr, IntPtr, int>)F("cuEventRecord");
        _cuEventSynchronize = (delegate* unmanaged<IntPtr, int>)F("cuEventSynchronize");
        _cuEventElapsedTime = (delegate* unmanaged<float*, IntPtr, IntPtr, int>)F("cuEventElapsedTime_v2", "cuEventElapsedTime");
        _cuEventDestroy = (delegate* unmanaged<IntPtr, int>)F("cuEventDestroy_v2");
        _cuStreamBeginCapture = (delegate* unmanaged<IntPtr, int, int>)F("cuStreamBeginCapture_v2");
        _cuStreamEndCapture = (delegate* unmanaged<IntPtr, IntPtr*, int>)F("cuStreamEndCapture");
        _cuGraphInstantiateWithFlags = (delegate* unmanaged<IntPtr*, IntPtr, ulong, int>)F("cuGraphInstantiateWithFlags");
        _cuGraphLaunch = (delegate* unmanaged<IntPtr, IntPtr, int>)F("cuGraphLaunch");
        _cuGraphExecDestroy = (delegate* unmanaged<IntPtr, int>)F("cuGraphExecDestroy");
        _cuGraphDestroy = (delegate* unmanaged<IntPtr, int>)F("cuGraphDestroy");
    }

    /// <summary>Binds the driver from a resolver (throws <see cref="CudaUnavailableException"/> for a missing symbol).</summary>
    public static CudaDriver Bind(ISymbolResolver resolver) => new(resolver);

    /// <summary>Loads the first driver library found among <paramref name="candidates"/>; null with the reason if none loads.</summary>
    public static CudaDriver? TryLoad(IEnumerable<string> candidates, out string reason)
    {
        var lib = NativeLibraryResolver.TryLoad(candidates, out string tried);
        if (lib is null) { reason = $"no CUDA driver (could not load any of: {tried})"; return null; }
        try { reason = "loaded " + lib.Source; return Bind(lib); }
        catch (CudaUnavailableException e) { reason = e.Message; return null; }
    }

    // ---- errors ----
    public string ErrorName(int code)
    {
        byte* s = null;
        return _cuGetErrorName(code, &s) == 0 && s != null ? Marshal.PtrToStringAnsi((IntPtr)s)! : $"CUDA_ERROR_{code}";
    }

    public string ErrorString(int code)
    {
        byte* s = null;
        return _cuGetErrorString(code, &s) == 0 && s != null ? Marshal.PtrToStringAnsi((IntPtr)s)! : "unknown error";
    }

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="call"/> if <paramref name="rc"/> is not CUDA_SUCCESS.</summary>
    public void Check(int rc, string call)
    {
        if (rc != CUDA_SUCCESS) throw new CudaException(call, rc, ErrorName(rc), ErrorString(rc));
    }

    // ---- init and devices ----
    /// <summary>cuInit(0); returns the raw result (callers decide: 100 means "no device").</summary>
    public int InitRaw() => _cuInit(0);
    public void Init() => Check(_cuInit(0), "cuInit");
    public int DriverVersion() { int v; Check(_cuDriverGetVersion(&v), "cuDriverGetVersion"); return v; }
    public int DeviceCount() { int n; Check(_cuDeviceGetCount(&n), "cuDeviceGetCount"); return n; }
    public int DeviceGet(int ordinal) { int d; Check(_cuDeviceGet(&d, ordinal), "cuDeviceGet"); return d; }
    public string DeviceName(int device)
    {
        byte* buf = stackalloc byte[256];
        Check(_cuDeviceGetName(buf, 256, device), "cuDeviceGetName");
        return Marshal.PtrToStringAnsi((IntPtr)buf)!;
    }
    public int DeviceAttribute(int device, int attribute)
    {
        int v; Check(_cuDeviceGetAttribute(&v, attribute, device), $"cuDeviceGetAttribute({attribute})"); return v;
    }
    public ulong DeviceTotalMem(int device) { nuint b; Check(_cuDeviceTotalMem(&b, device), "cuDeviceTotalMem_v2"); return b; }

    // ---- context ----
    public IntPtr PrimaryCtxRetain(int device) { IntPtr c; Check(_cuDevicePrimaryCtxRetain(&c, device), "cuDevicePrimaryCtxRetain"); return c; }
    public void PrimaryCtxRelease(int device) => Check(_cuDevicePrimaryCtxRelease(device), "cuDevicePrimaryCtxRelease_v2");
    public void CtxSetCurrent(IntPtr ctx) => Check(_cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
    public void CtxSynchronize() => Check(_cuCtxSynchronize(), "cuCtxSynchronize");

    // ---- modules ----
    /// <summary>Loads a module from a PTX (NUL-terminated text) or CUBIN image.</summary>
    public IntPtr ModuleLoadData(byte[] image)
    {
        IntPtr m;
        fixed (byte* p = image) Check(_cuModuleLoadData(&m, p), "cuModuleLoadData");
        return m;
    }
    public IntPtr ModuleGetFunction(IntPtr module, string name)
    {
        IntPtr f;
        var bytes = Encoding.ASCII.GetBytes(name + "\0");
        fixed (byte* p = bytes) Check(_cuModuleGetFunction(&f, module, p), $"cuModuleGetFunction({name})");
        return f;
    }
    public void ModuleUnload(IntPtr module) => Check(_cuModuleUnload(module), "cuModuleUnload");
    public void FuncSetAttribute(IntPtr f, int attribute, int value) => Check(_cuFuncSetAttribute(f, attribute, value), "cuFuncSetAttribute");

    // ---- memory ----
    public ulong MemAlloc(ulong bytes) { ulong p; Check(_cuMemAlloc(&p, (nuint)Math.Max(bytes, 1)), $"cuMemAlloc_v2({bytes} bytes)"); return p; }
    public void MemFree(ulong ptr) => Check(_cuMemFree(ptr), "cuMemFree_v2");
    public void MemcpyHtoDAsync(ulong dst, void* src, ulong bytes, IntPtr stream) => Check(_cuMemcpyHtoDAsync(dst, src, (nuint)bytes, stream), "cuMemcpyHtoDAsync_v2");
    public void MemcpyDtoHAsync(void* dst, ulong src, ulong bytes, IntPtr stream) => Check(_cuMemcpyDtoHAsync(dst, src, (nuint)bytes, stream), "cuMemcpyDtoHAsync_v2");
    public void MemcpyDtoDAsync(ulong dst, ulong src, ulong bytes, IntPtr stream) => Check(_cuMemcpyDtoDAsync(dst, src, (nuint)bytes, stream), "cuMemcpyDtoDAsync_v2");
    public void MemsetD8Async(ulong dst, byte value, ulong count, IntPtr stream) => Check(_cuMemsetD8Async(dst, value, (nuint)count, stream), "cuMemsetD8Async");

    // ---- launch ----
    public void LaunchKernel(IntPtr f, uint gx, uint gy, uint gz, uint bx, uint by, uint bz, uint sharedBytes, IntPtr stream, void** args, string name)
        => Check(_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, sharedBytes, stream, args, null), $"cuLaunchKernel({name})");

    // ---- streams, events, graphs ----
    public IntPtr StreamCreate() { IntPtr s; Check(_cuStreamCreate(&s, 1 /* CU_STREAM_NON_BLOCKING */), "cuStreamCreate"); return s; }
    public void StreamSynchronize(IntPtr s) => Check(_cuStreamSynchronize(s), "cuStreamSynchronize");
    public void StreamDestroy(IntPtr s) => Check(_cuStreamDestroy(s), "cuStreamDestroy_v2");
    public IntPtr EventCreate() { IntPtr e; Check(_cuEventCreate(&e, 0), "cuEventCreate"); return e; }
    public void EventRecord(IntPtr e, IntPtr stream) => Check(_cuEventRecord(e, stream), "cuEventRecord");
    public void EventSynchronize(IntPtr e) => Check(_cuEventSynchronize(e), "cuEventSynchronize");
    public float EventElapsedMs(IntPtr start, IntPtr end) { float ms; Check(_cuEventElapsedTime(&ms, start, end), "cuEventElapsedTime"); return ms; }
    public void EventDestroy(IntPtr e) => Check(_cuEventDestroy(e), "cuEventDestroy_v2");
    public void StreamBeginCapture(IntPtr s) => Check(_cuStreamBeginCapture(s, StreamCaptureModeThreadLocal), "cuStreamBeginCapture_v2");
    public IntPtr StreamEndCapture(IntPtr s) { IntPtr g; Check(_cuStreamEndCapture(s, &g), "cuStreamEndCapture"); return g; }
    public IntPtr GraphInstantiate(IntPtr graph) { IntPtr e; Check(_cuGraphInstantiateWithFlags(&e, graph, 0), "cuGraphInstantiateWithFlags"); return e; }
    public void GraphLaunch(IntPtr exec, IntPtr stream) => Check(_cuGraphLaunch(exec, stream), "cuGraphLaunch");
    public void GraphExecDestroy(IntPtr exec) => Check(_cuGraphExecDestroy(exec), "cuGraphExecDestroy");
    public void GraphDestroy(IntPtr graph) => Check(_cuGraphDestroy(graph), "cuGraphDestroy");
}
