using System.Diagnostics;
using System.Runtime.InteropServices;
using GpuIntLab.Backends.Cuda.Interop;
using Xunit;

namespace GpuIntLab.Tests.Cuda;

/// <summary>Tests that swap the process-wide CUDA runtime (the stub driver) must not overlap the other CUDA tests.</summary>
[CollectionDefinition("CudaRuntime", DisableParallelization = true)]
public sealed class CudaRuntimeCollection;

/// <summary>
/// The GPU-less CUDA tools of the tests: a real NVRTC (GPUINTLAB_TEST_NVRTC, which .ci/run sets from
/// scripts/fetch-nvrtc.sh, else that script run here) and the stub libcuda built with gcc. Each reports why
/// it is missing, and the tests skip with that reason.
/// </summary>
public static class CudaToolsForTests
{
    public static string RepoRoot { get; } = FindRepoRoot();

    private static string FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "scripts", "fetch-nvrtc.sh"))) return d.FullName;
        return "";
    }

    private static readonly Lazy<(string? Path, string Reason)> s_nvrtcPath = new(LocateNvrtc);
    private static readonly Lazy<(GpuIntLab.Backends.Cuda.Interop.Nvrtc? Nvrtc, string Reason)> s_nvrtc = new(() =>
    {
        var (path, reason) = s_nvrtcPath.Value;
        if (path is null) return (null, reason);
        var n = GpuIntLab.Backends.Cuda.Interop.Nvrtc.TryLoad([path], out string why);
        return (n, why);
    });
    private static readonly Lazy<(string? Path, string Reason)> s_stub = new(BuildStub);

    /// <summary>Full path of libnvrtc.so.12; skips the test with the reason when there is none.</summary>
    public static string NvrtcPath() { var (p, r) = s_nvrtcPath.Value; Skip.If(p is null, r); return p!; }
    public static GpuIntLab.Backends.Cuda.Interop.Nvrtc Nvrtc() { var (n, r) = s_nvrtc.Value; Skip.If(n is null, r); return n!; }
    /// <summary>Full path of the stub libcuda.so.1; skips the test with the reason when it cannot be built.</summary>
    public static string StubDriverPath() { var (p, r) = s_stub.Value; Skip.If(p is null, r); return p!; }

    private static (string?, string) LocateNvrtc()
    {
        if (Environment.GetEnvironmentVariable("GPUINTLAB_TEST_NVRTC_UNAVAILABLE") is { Length: > 0 } why) return (null, "no NVRTC: " + why);
        var env = Environment.GetEnvironmentVariable("GPUINTLAB_TEST_NVRTC");
        if (!string.IsNullOrEmpty(env))
            return File.Exists(env) ? (env, "") : (null, $"GPUINTLAB_TEST_NVRTC names a missing file: {env}");
        if (RepoRoot == "") return (null, "no NVRTC: GPUINTLAB_TEST_NVRTC is unset and scripts/fetch-nvrtc.sh was not found above the test folder");
        var (code, stdout, stderr) = RunProcess("bash", [Path.Combine(RepoRoot, "scripts", "fetch-nvrtc.sh")], TimeSpan.FromMinutes(3));
        string path = stdout.Trim().Split('\n')[^1];
        return code == 0 && File.Exists(path) ? (path, "") : (null, $"no NVRTC: scripts/fetch-nvrtc.sh failed (exit {code}): {stderr.Trim()}");
    }

    private static (string?, string) BuildStub()
    {
        if (RepoRoot == "") return (null, "stub driver source not found (no repository above the test folder)");
        string source = Path.Combine(RepoRoot, "tests", "GpuIntLab.Tests", "Cuda", "StubDriver", "stub_libcuda.c");
        string dir = Path.Combine(Path.GetTempPath(), "gpuintlab-stub-cuda", Environment.ProcessId.ToString());
        Directory.CreateDirectory(dir);
        string lib = Path.Combine(dir, "libcuda.so.1");
        try
        {
            var (code, _, stderr) = RunProcess("gcc", ["-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", lib, source], TimeSpan.FromMinutes(1));
            return code == 0 ? (lib, "") : (null, $"gcc could not build the stub driver (exit {code}): {stderr.Trim()}");
        }
        catch (System.ComponentModel.Win32Exception e) { return (null, $"no gcc to build the stub driver: {e.Message}"); }
    }

    /// <summary>Points the stub driver's launch log at <paramref name="path"/> (its own export, not a CUDA entry point).</summary>
    public static unsafe void SetStubLog(string stubPath, string path)
    {
        var handle = NativeLibrary.Load(stubPath);
        var setLog = (delegate* unmanaged<byte*, void>)NativeLibrary.GetExport(handle, "stubSetLog");
        var bytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* p = bytes) setLog(p);
    }

    public static (int Code, string Stdout, string Stderr) RunProcess(string file, IEnumerable<string> args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync(); var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(true); return (-1, stdout.Result, $"timed out after {timeout.TotalSeconds} s"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
