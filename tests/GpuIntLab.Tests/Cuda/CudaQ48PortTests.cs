using System.Diagnostics;
using System.Runtime.InteropServices;
using GpuIntLab.Backends.Cuda;
using GpuIntLab.Core.FixedPoint;
using Xunit;

namespace GpuIntLab.Tests.Cuda;

/// <summary>
/// The device Q16.48 algorithms (kernels/q48_math.cuh, the code int64.cu runs) built for the host by the
/// system C++ compiler through kernels/check/q48_host_harness.cpp, and compared bit for bit with the C#
/// library the oracle uses. Checks the port's arithmetic without a GPU (not the GPU's execution of it).
/// </summary>
public unsafe class CudaQ48PortTests
{
    private static readonly Lazy<(IntPtr Lib, string Reason)> s_lib = new(Build);

    private static (IntPtr, string) Build()
    {
        string? cxx = new[] { "g++", "c++", "clang++", "clang++-14" }.FirstOrDefault(c =>
            Environment.GetEnvironmentVariable("PATH")!.Split(':').Any(d => File.Exists(Path.Combine(d, c))));
        if (cxx is null) return (IntPtr.Zero, "no host C++ compiler (g++/clang++) on PATH to build kernels/check/q48_host_harness.cpp");
        string src = Path.Combine(KernelSources.Directory, "check", "q48_host_harness.cpp");
        string lib = Path.Combine(TestData.TempDir("q48harness"), "libq48harness.so");
        var psi = new ProcessStartInfo(cxx, ["-O2", "-shared", "-fPIC", "-o", lib, src]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd(); p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{cxx} failed on {src}:\n{err}");
        return (NativeLibrary.Load(lib), "");
    }

    private static T Fn<T>(string name) where T : unmanaged
    {
        var (lib, reason) = s_lib.Value;
        Skip.If(lib == IntPtr.Zero, reason);
        var p = NativeLibrary.GetExport(lib, name);
        return *(T*)&p;
    }

    private static readonly ulong[] s_tables = CudaPacking.Q48Tables();

    [SkippableFact]
    public void Rsqrt_MatchesQ48Rsqrt()
    {
        var f = Fn<nint>("h_rsqrt"); var rsqrt = (delegate* unmanaged<long, long>)f;
        var r = new Random(5);
        var xs = new List<long> { (1L << 18) + 1, 1L << 48, Q48.FromDouble(1e-5), long.MaxValue, long.MaxValue - 1, 3L << 47 };
        for (int i = 0; i < 20000; i++) xs.Add(Math.Max((1L << 18) + 1, r.NextInt64(1, long.MaxValue) >> r.Next(0, 44)));
        foreach (var x in xs) Assert.True(Q48.Rsqrt(x) == rsqrt(x), $"rsqrt raw {x}: C# {Q48.Rsqrt(x)} device-code {rsqrt(x)}");
    }

    [SkippableFact]
    public void Silu_MatchesQ48Silu()
    {
        var silu = (delegate* unmanaged<long, ulong*, long>)Fn<nint>("h_silu");
        var r = new Random(6);
        var xs = new List<long> { 0, 1, -1, Q48.One, -Q48.One, 40L << 48, (40L << 48) - 1, -(40L << 48), -(40L << 48) + 1, long.MaxValue, long.MinValue + 1 };
        for (int i = 0; i < 20000; i++) xs.Add(r.NextInt64(-(45L << 48), 45L << 48) >> r.Next(0, 40));
        fixed (ulong* tab = s_tables)
            foreach (var x in xs) Assert.True(Q48.Silu(x) == silu(x, tab), $"silu raw {x}: C# {Q48.Silu(x)} device-code {silu(x, tab)}");
    }

    [SkippableFact]
    public void Softmax_MatchesQ48Softmax()
    {
        var softmax = (delegate* unmanaged<long*, long*, int, ulong*, void>)Fn<nint>("h_softmax");
        var r = new Random(7);
        fixed (ulong* tab = s_tables)
            for (int trial = 0; trial < 300; trial++)
            {
                int n = 1 + r.Next(0, trial < 10 ? 2048 : 300);
                var x = new long[n];
                double spread = new[] { 0.01, 1, 10, 60 }[trial % 4];
                for (int i = 0; i < n; i++) x[i] = Q48.FromDouble((r.NextDouble() * 2 - 1) * spread);
                var want = new long[n]; Q48.Softmax(x, want);
                var got = new long[n];
                fixed (long* px = x) fixed (long* pg = got) softmax(px, pg, n, tab);
                Assert.Equal(want, got);
            }
    }

    [SkippableFact]
    public void DotAndRmsInverse_MatchTheOracleArithmetic()
    {
        var dot = (delegate* unmanaged<long*, long*, int, int*, long>)Fn<nint>("h_dot");
        var rms = (delegate* unmanaged<long*, int, long, long>)Fn<nint>("h_rms_inverse");
        var r = new Random(8);
        long eps = Q48.FromDouble(1e-5);
        for (int trial = 0; trial < 200; trial++)
        {
            int k = 1 + r.Next(0, 3000);
            var w = new long[k]; var x = new long[k];
            for (int i = 0; i < k; i++) { w[i] = r.NextInt64(-(1L << 50), 1L << 50); x[i] = r.NextInt64(-(1L << 52), 1L << 52) >> r.Next(0, 8); }
            Int128 s = 0; for (int i = 0; i < k; i++) s += (Int128)w[i] * x[i];
            int ok;
            long got;
            fixed (long* pw = w) fixed (long* px = x) got = dot(pw, px, k, &ok);
            if (TryRound48(s, out long want)) { Assert.Equal(1, ok); Assert.Equal(want, got); }
            else Assert.Equal(0, ok);

            // OracleEngine.RmsNorm's inverse: DivideRound(sum x^2, n << 48) then Rsqrt(mean + eps)
            Int128 ss = 0; for (int i = 0; i < k; i++) ss += (Int128)x[i] * x[i];
            var (q, rem) = Int128.DivRem(ss, (Int128)k << 48);
            Int128 twice = rem << 1, den = (Int128)k << 48;
            if (twice > den || (twice == den && (q & 1) != 0)) q += 1;
            long inv = Q48.Rsqrt((long)q + eps);
            fixed (long* px = x) Assert.Equal(inv, rms(px, k, eps));
        }
    }

    private static bool TryRound48(Int128 v, out long r)
    {
        try { r = Q48.RoundShift(v, Q48.FracBits); return true; }
        catch (Q48OverflowException) { r = 0; return false; }
    }
}
