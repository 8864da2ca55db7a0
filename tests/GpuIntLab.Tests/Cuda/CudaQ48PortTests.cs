using System.Diagnostics;
using System.Runtime.InteropServices;
using GpuIntLab.Backends.Cuda;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using GpuIntLab.Tests.Engines;
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

    /// <summary>
    /// rmsnorm_rows_q48 (Qwen3's q/k norm, in place per head) against the oracle's own QkNorm op on tiny-qwen3
    /// (head_dim 32, q width 128 != hidden 64): random heads of several scales, all-zero heads, and heads so large
    /// that the mean leaves int64 (the oracle throws; the kernel code flags ERR_QKNORM).
    /// </summary>
    [SkippableFact]
    public void HeadRmsNorm_MatchesTheOraclesQkNorm()
    {
        var rows = (delegate* unmanaged<long*, long*, int, int, long, int>)Fn<nint>("h_rmsnorm_rows");
        using var checkpoint = LlamaCheckpoint.Open(FamilyConformance.Model("tiny-qwen3").Folder);
        var c = checkpoint.Config;
        Assert.True(c.QkNorm && c.QDim != c.HiddenSize);
        using var oracle = new OracleEngine(checkpoint);
        var ops = (IExactLlamaOps)oracle.Ops;
        long eps = Q48.FromDouble(c.RmsNormEps);
        var qNorm = checkpoint.ReadQ48(checkpoint.OptionalLayer(1, LayerWeight.QNorm)!);
        var kNorm = checkpoint.ReadQ48(checkpoint.OptionalLayer(1, LayerWeight.KNorm)!);
        var r = new Random(9);
        const int tokens = 5;
        int hd = c.HeadDim;
        for (int trial = 0; trial < 12; trial++)
        {
            var q = new long[tokens * c.QDim];
            var k = new long[tokens * c.KvDim];
            int shift = new[] { 40, 48, 52, 55 }[trial % 4]; // |x| up to 2^-8 .. 2^7 (the mean square stays inside Q16.48)
            foreach (var a in new[] { q, k })
                for (int i = 0; i < a.Length; i++) a[i] = r.NextInt64(-(1L << shift), 1L << shift);
            if (trial == 0) Array.Clear(q, hd, hd); // one all-zero head: mean 0, inverse of eps alone
            ops.Begin(tokens, 0);
            ops.WriteRaw(StepBuffer.Q, q);
            ops.WriteRaw(StepBuffer.K, k);
            ops.QkNorm(1);
            var wantQ = new long[q.Length]; var wantK = new long[k.Length];
            ops.ReadRaw(StepBuffer.Q, wantQ); ops.ReadRaw(StepBuffer.K, wantK);
            fixed (long* pq = q) fixed (long* pw = qNorm) Assert.Equal(0, rows(pq, pw, tokens * c.NumAttentionHeads, hd, eps));
            fixed (long* pk = k) fixed (long* pw = kNorm) Assert.Equal(0, rows(pk, pw, tokens * c.NumKeyValueHeads, hd, eps));
            Assert.Equal(wantQ, q);
            Assert.Equal(wantK, k);
        }
        // A head whose mean square is past int64: the oracle throws, the kernel code flags the q/k norm bit.
        var huge = new long[tokens * c.QDim];
        Array.Fill(huge, 1L << 62);
        ops.Begin(tokens, 0);
        ops.WriteRaw(StepBuffer.Q, huge);
        ops.WriteRaw(StepBuffer.K, new long[tokens * c.KvDim]);
        Assert.Throws<Q48OverflowException>(() => ops.QkNorm(1));
        const int errQkNorm = 128; // ERR_QKNORM of kernels/q48_math.cuh
        fixed (long* ph = huge) fixed (long* pw = qNorm) Assert.Equal(errQkNorm, rows(ph, pw, tokens * c.NumAttentionHeads, hd, eps));
    }

    /// <summary>
    /// matmul_q48's row sum then bias_add_q48 (Qwen2's q/k/v biases) against the oracle's QkvProjection on tiny-qwen2,
    /// and bias_add_q48 alone against Int128 sums at the int64 edges (overflow flags ERR_BIAS, as the oracle throws).
    /// </summary>
    [SkippableFact]
    public void BiasAdd_AfterTheMatmul_MatchesTheOraclesQkvProjection()
    {
        var dot = (delegate* unmanaged<long*, long*, int, int*, long>)Fn<nint>("h_dot");
        var biasAdd = (delegate* unmanaged<long*, long*, int, int, int>)Fn<nint>("h_bias_add");
        using var checkpoint = LlamaCheckpoint.Open(FamilyConformance.Model("tiny-qwen2").Folder);
        var c = checkpoint.Config;
        Assert.True(c.QkvBias);
        using var oracle = new OracleEngine(checkpoint);
        var ops = (IExactLlamaOps)oracle.Ops;
        const int tokens = 3;
        int d = c.HiddenSize;
        var r = new Random(10);
        var x = new long[tokens * d];
        for (int i = 0; i < x.Length; i++) x[i] = r.NextInt64(-(4L << 48), 4L << 48);
        ops.Begin(tokens, 0);
        ops.WriteRaw(StepBuffer.Normed, x);
        ops.QkvProjection(0);
        foreach (var (buffer, weight, bias) in new[] { (StepBuffer.Q, LayerWeight.Q, LayerWeight.QBias), (StepBuffer.K, LayerWeight.K, LayerWeight.KBias), (StepBuffer.V, LayerWeight.V, LayerWeight.VBias) })
        {
            var w = checkpoint.ReadQ48(checkpoint.Layer(0, weight));
            var b = checkpoint.ReadQ48(checkpoint.OptionalLayer(0, bias)!);
            int n = b.Length;
            var got = new long[tokens * n];
            fixed (long* pw = w) fixed (long* px = x)
                for (int t = 0; t < tokens; t++)
                    for (int row = 0; row < n; row++)
                    {
                        int ok;
                        got[t * n + row] = dot(pw + (long)row * d, px + (long)t * d, d, &ok);
                        Assert.Equal(1, ok);
                    }
            fixed (long* pg = got) fixed (long* pb = b) Assert.Equal(0, biasAdd(pg, pb, got.Length, n));
            var want = new long[got.Length];
            ops.ReadRaw(buffer, want);
            Assert.Equal(want, got);
        }

        // The overflow edge: Int128 sums decide.
        const int errBias = 64; // ERR_BIAS of kernels/q48_math.cuh
        long[] edges = [long.MaxValue, long.MaxValue - 1, long.MinValue, long.MinValue + 1, 0, 1, -1, 1L << 62, -(1L << 62)];
        foreach (long y0 in edges)
            foreach (long b0 in edges)
            {
                Int128 exact = (Int128)y0 + b0;
                bool fits = exact >= long.MinValue && exact <= long.MaxValue;
                long y = y0, bias = b0;
                int err = biasAdd(&y, &bias, 1, 1);
                Assert.Equal(fits ? 0 : errBias, err);
                if (fits) Assert.Equal((long)exact, y);
            }
    }

    private static bool TryRound48(Int128 v, out long r)
    {
        try { r = Q48.RoundShift(v, Q48.FracBits); return true; }
        catch (Q48OverflowException) { r = 0; return false; }
    }
}
