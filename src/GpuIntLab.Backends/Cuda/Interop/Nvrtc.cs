using System.Runtime.InteropServices;
using System.Text;

namespace GpuIntLab.Backends.Cuda.Interop;

/// <summary>
/// What NVRTC produced: the image to load (CUBIN when compiled for a real arch sm_XX, PTX for a virtual
/// compute_XX), the PTX, the log (with -Xptxas=-v it holds ptxas's per-kernel resource report) and the
/// target architecture named in the options.
/// </summary>
public sealed record NvrtcOutput(byte[] Image, bool IsCubin, string Ptx, string Log, string Arch = "")
{
    /// <summary>"CUBIN sm_90" or "PTX compute_90 (JIT by the driver)": what a module load gets.</summary>
    public string Kind => IsCubin ? $"CUBIN {Arch}" : $"PTX {Arch} (JIT by the driver)";
}

/// <summary>
/// The thin binding of NVRTC (libnvrtc.so.* / nvrtc64_*.dll): create, compile, log, get PTX/CUBIN, destroy.
/// Every call is checked; a failed compile throws <see cref="CudaException"/> carrying the compiler log.
/// NVRTC needs no GPU, so with the library present the kernels compile on a machine without one.
/// </summary>
public sealed unsafe class Nvrtc
{
    public string Source { get; }
    private readonly delegate* unmanaged<int, byte*> _getErrorString;
    private readonly delegate* unmanaged<int*, int*, int> _version;
    private readonly delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int> _createProgram;
    private readonly delegate* unmanaged<IntPtr, int, byte**, int> _compileProgram;
    private readonly delegate* unmanaged<IntPtr, nuint*, int> _getProgramLogSize;
    private readonly delegate* unmanaged<IntPtr, byte*, int> _getProgramLog;
    private readonly delegate* unmanaged<IntPtr, nuint*, int> _getPtxSize;
    private readonly delegate* unmanaged<IntPtr, byte*, int> _getPtx;
    private readonly delegate* unmanaged<IntPtr, nuint*, int> _getCubinSize;
    private readonly delegate* unmanaged<IntPtr, byte*, int> _getCubin;
    private readonly delegate* unmanaged<IntPtr*, int> _destroyProgram;
    private readonly delegate* unmanaged<int*, int> _getNumSupportedArchs;   // null before NVRTC 11.2
    private readonly delegate* unmanaged<int*, int> _getSupportedArchs;

    /// <summary>Candidate library names/paths, most recent first; GPUINTLAB_NVRTC overrides.</summary>
    public static IReadOnlyList<string> DefaultCandidates()
    {
        var list = new List<string>();
        var env = Environment.GetEnvironmentVariable("GPUINTLAB_NVRTC");
        if (!string.IsNullOrEmpty(env)) list.Add(env);
        if (OperatingSystem.IsWindows())
        {
            list.AddRange(["nvrtc64_130_0.dll", "nvrtc64_120_0.dll", "nvrtc64_112_0.dll"]);
            return list;
        }
        string[] names = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"];
        list.AddRange(names);
        var dirs = new List<string>();
        foreach (var v in new[] { "CUDA_HOME", "CUDA_PATH" })
            if (Environment.GetEnvironmentVariable(v) is { Length: > 0 } d) dirs.Add(Path.Combine(d, "lib64"));
        dirs.AddRange(["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"]);
        // pip wheels (nvidia-cuda-nvrtc): <site-packages>/nvidia/{cu13,cuda_nvrtc}/lib
        foreach (var root in new[] { "/opt/torch/.venv/lib", "/usr/local/lib", "/usr/lib" })
        {
            if (!Directory.Exists(root)) continue;
            try
            {
                foreach (var py in Directory.EnumerateDirectories(root, "python3*"))
                    foreach (var sp in new[] { "site-packages", "dist-packages" })
                        foreach (var sub in new[] { "nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib" })
                            dirs.Add(Path.Combine(py, sp, sub));
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        foreach (var d in dirs)
            foreach (var n in names)
                if (File.Exists(Path.Combine(d, n))) list.Add(Path.Combine(d, n));
        return list;
    }

    private Nvrtc(ISymbolResolver r)
    {
        Source = r.Source;
        IntPtr F(string name) => r.Find(name) is var p && p != IntPtr.Zero ? p
            : throw new CudaUnavailableException($"no NVRTC: {r.Source} lacks {name}");
        _getErrorString = (delegate* unmanaged<int, byte*>)F("nvrtcGetErrorString");
        _version = (delegate* unmanaged<int*, int*, int>)F("nvrtcVersion");
        _createProgram = (delegate* unmanaged<IntPtr*, byte*, byte*, int, byte**, byte**, int>)F("nvrtcCreateProgram");
        _compileProgram = (delegate* unmanaged<IntPtr, int, byte**, int>)F("nvrtcCompileProgram");
        _getProgramLogSize = (delegate* unmanaged<IntPtr, nuint*, int>)F("nvrtcGetProgramLogSize");
        _getProgramLog = (delegate* unmanaged<IntPtr, byte*, int>)F("nvrtcGetProgramLog");
        _getPtxSize = (delegate* unmanaged<IntPtr, nuint*, int>)F("nvrtcGetPTXSize");
        _getPtx = (delegate* unmanaged<IntPtr, byte*, int>)F("nvrtcGetPTX");
        _getCubinSize = (delegate* unmanaged<IntPtr, nuint*, int>)F("nvrtcGetCUBINSize");
        _getCubin = (delegate* unmanaged<IntPtr, byte*, int>)F("nvrtcGetCUBIN");
        _destroyProgram = (delegate* unmanaged<IntPtr*, int>)F("nvrtcDestroyProgram");
        _getNumSupportedArchs = (delegate* unmanaged<int*, int>)r.Find("nvrtcGetNumSupportedArchs");
        _getSupportedArchs = (delegate* unmanaged<int*, int>)r.Find("nvrtcGetSupportedArchs");
    }

    /// <summary>
    /// The real architectures this NVRTC can emit CUBIN for (e.g. 50..90), or null when the library is older
    /// than 11.2 and cannot say.
    /// </summary>
    public IReadOnlyList<int>? SupportedArchs()
    {
        if (_getNumSupportedArchs == null || _getSupportedArchs == null) return null;
        int n; Check(_getNumSupportedArchs(&n), "nvrtcGetNumSupportedArchs");
        var archs = new int[n];
        fixed (int* p = archs) Check(_getSupportedArchs(p), "nvrtcGetSupportedArchs");
        return archs;
    }

    public static Nvrtc Bind(ISymbolResolver resolver) => new(resolver);

    public static Nvrtc? TryLoad(IEnumerable<string> candidates, out string reason)
    {
        var lib = NativeLibraryResolver.TryLoad(candidates, out string tried);
        if (lib is null) { reason = $"no NVRTC (could not load any of: {tried})"; return null; }
        PreloadBuiltins(lib.Source);
        try { reason = "loaded " + lib.Source; return Bind(lib); }
        catch (CudaUnavailableException e) { reason = e.Message; return null; }
    }

    /// <summary>
    /// NVRTC dlopens libnvrtc-builtins.so.X.Y by bare name at compile time, which the loader finds only on its
    /// search path. When NVRTC itself was loaded by full path (a pip wheel, a CUDA folder, the fetched Debian
    /// package) that folder usually is not on it, and every compile fails with "failed to open
    /// libnvrtc-builtins". Loading the builtins from NVRTC's own folder first makes the later dlopen find the
    /// already loaded library by its SONAME.
    /// </summary>
    private static void PreloadBuiltins(string loadedPath)
    {
        if (!Path.IsPathRooted(loadedPath)) return;
        string? dir = Path.GetDirectoryName(loadedPath);
        if (dir is null || !System.IO.Directory.Exists(dir)) return;
        string pattern = OperatingSystem.IsWindows() ? "nvrtc-builtins64_*.dll" : "libnvrtc-builtins.so.*";
        // Longest name first: libnvrtc-builtins.so.12.4.127 is the file, the shorter names are its links.
        foreach (var f in System.IO.Directory.EnumerateFiles(dir, pattern).OrderByDescending(f => f.Length))
            NativeLibrary.TryLoad(f, out _);
    }

    public string ErrorString(int code)
    {
        byte* s = _getErrorString(code);
        return s == null ? $"NVRTC error {code}" : Marshal.PtrToStringAnsi((IntPtr)s)!;
    }

    private void Check(int rc, string call, string? detail = null)
    {
        if (rc != 0) throw new CudaException(call, rc, ErrorString(rc), ErrorString(rc), detail);
    }

    public (int Major, int Minor) Version() { int a, b; Check(_version(&a, &b), "nvrtcVersion"); return (a, b); }

    /// <summary>
    /// Compiles <paramref name="source"/> (with in-memory headers, name -> text) using <paramref name="options"/>.
    /// Returns CUBIN when the options name a real architecture (-arch=sm_XX or --gpu-architecture=sm_XX), else
    /// (a virtual compute_XX) PTX. A real architecture that yields no CUBIN is an error, never a silent PTX.
    /// </summary>
    public NvrtcOutput Compile(string source, string name, IReadOnlyDictionary<string, string> headers, IReadOnlyList<string> options)
    {
        var pins = new List<GCHandle>();
        byte* Pin(string s)
        {
            var h = GCHandle.Alloc(Encoding.UTF8.GetBytes(s + "\0"), GCHandleType.Pinned);
            pins.Add(h);
            return (byte*)h.AddrOfPinnedObject();
        }
        IntPtr prog = IntPtr.Zero;
        try
        {
            var hdrSrc = headers.Values.ToArray(); var hdrNames = headers.Keys.ToArray();
            byte** hs = stackalloc byte*[Math.Max(1, hdrSrc.Length)];
            byte** hn = stackalloc byte*[Math.Max(1, hdrSrc.Length)];
            for (int i = 0; i < hdrSrc.Length; i++) { hs[i] = Pin(hdrSrc[i]); hn[i] = Pin(hdrNames[i]); }
            Check(_createProgram(&prog, Pin(source), Pin(name), hdrSrc.Length, hs, hn), $"nvrtcCreateProgram({name})");
            byte** opts = stackalloc byte*[Math.Max(1, options.Count)];
            for (int i = 0; i < options.Count; i++) opts[i] = Pin(options[i]);
            int rc = _compileProgram(prog, options.Count, opts);
            string log = GetLog(prog);
            Check(rc, $"nvrtcCompileProgram({name}, {string.Join(' ', options)})", log);

            nuint ptxSize; Check(_getPtxSize(prog, &ptxSize), "nvrtcGetPTXSize");
            var ptx = new byte[(int)ptxSize];
            fixed (byte* p = ptx) Check(_getPtx(prog, p), "nvrtcGetPTX");
            string ptxText = Encoding.ASCII.GetString(ptx).TrimEnd('\0');

            string arch = TargetArch(options);
            if (arch.StartsWith("sm_", StringComparison.Ordinal))
            {
                nuint cubinSize; Check(_getCubinSize(prog, &cubinSize), "nvrtcGetCUBINSize");
                if (cubinSize == 0)
                    throw new CudaException($"nvrtcGetCUBIN({name})", 0, "NO_CUBIN", $"NVRTC returned no CUBIN although the options name the real architecture {arch}", log);
                var cubin = new byte[(int)cubinSize];
                fixed (byte* p = cubin) Check(_getCubin(prog, p), "nvrtcGetCUBIN");
                return new NvrtcOutput(cubin, true, ptxText, log, arch);
            }
            return new NvrtcOutput(ptx, false, ptxText, log, arch);
        }
        finally
        {
            if (prog != IntPtr.Zero) _destroyProgram(&prog);
            foreach (var h in pins) h.Free();
        }
    }

    /// <summary>The architecture named by -arch=X / --gpu-architecture=X (NVRTC's two spellings), else NVRTC's default "compute_52".</summary>
    public static string TargetArch(IReadOnlyList<string> options)
    {
        foreach (var o in options)
            foreach (var prefix in new[] { "-arch=", "--gpu-architecture=" })
                if (o.StartsWith(prefix, StringComparison.Ordinal)) return o[prefix.Length..];
        return "compute_52";
    }

    private string GetLog(IntPtr prog)
    {
        nuint size; Check(_getProgramLogSize(prog, &size), "nvrtcGetProgramLogSize");
        if (size <= 1) return "";
        var buf = new byte[(int)size];
        fixed (byte* p = buf) Check(_getProgramLog(prog, p), "nvrtcGetProgramLog");
        return Encoding.UTF8.GetString(buf).TrimEnd('\0');
    }
}
