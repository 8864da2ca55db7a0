using System.Diagnostics;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;

namespace GpuIntLab.Backends.Cuda;

/// <summary>One kernel check: what was compared, the measured error, the bound, and the verdict.</summary>
public sealed record KernelCheck(string Name, string Metric, double Value, double Bound, bool Pass, string Detail = "");

/// <summary>One timing: a kernel or step, its median time, bytes moved and achieved bandwidth.</summary>
public sealed record KernelTiming(string Name, double MedianMs, double Bytes, double GBps);

/// <summary>
/// Kernel-level checks against CPU references (llm.c style: kernel, reference, check, timing side by side),
/// run by the GPU tests and by scripts/gpu-check.sh. Inputs are fresh seeded random data (never zeros);
/// outputs are poisoned (0xFF bytes = NaN floats) before each launch so an unwritten element fails.
/// Bounds: INT8 GEMV/GEMM and the activation quantizers bit-exact with Quantizer; the CUDA-core GEMVs
/// (FP16, FP8) relative error ||out - ref|| / ||ref|| below 1e-5 (round-to-nearest float32 adds of exact
/// products, K &lt;= 5632); the tensor-core GEMMs below <see cref="TensorCoreRelL2Bound"/>; INT64 matmul and the
/// Q16.48 functions bit-exact with the C# library.
/// </summary>
public static class CudaSelfCheck
{
    /// <summary>
    /// Relative-L2 bound for a tensor-core GEMM over <paramref name="k"/> whose accumulator keeps
    /// <paramref name="fractionBits"/> fraction bits. Accumulation model (Fasi et al. 2021, "Numerical behavior
    /// of NVIDIA tensor cores"; the FP8 accumulator from DeepSeek-V3's report): tensor cores do not accumulate
    /// in IEEE float32. Per k-step the exact products and the running sum are aligned to the largest exponent,
    /// truncated to the accumulator's fraction bits and the sum truncated toward zero. Two error terms follow,
    /// each relative to the output: the running sum's truncation, biased (always toward zero, so the steps add
    /// up), at most one unit 2^-fractionBits per step, with ceil(k/8) steps (the m16n8k16 instruction counted
    /// as two 8-wide halves, the pessimistic reading); and the products' alignment truncation, at most one unit
    /// per product but of random sign, so about sqrt(k) units. Bound = 2^-fractionBits (ceil(k/8) + sqrt(k)):
    /// FP16 (23 bits) at K = 5632: 9.3e-5; at K = 64: 1.9e-6. A fragment-layout or indexing bug gives O(1).
    /// </summary>
    public static double TensorCoreRelL2Bound(int k, int fractionBits) =>
        Math.ScaleB(Math.Ceiling(k / 8.0) + Math.Sqrt(k), -fractionBits);

    /// <summary>Fraction bits of the HMMA float32 accumulator (Hopper/Ampere: float32's 23, truncating).</summary>
    public const int HmmaAccumulatorBits = 23;
    /// <summary>Fraction bits of the FP8 mma accumulator (about 14 bits retained per DeepSeek-V3's H800 measurement; 13 taken).</summary>
    public const int Fp8MmaAccumulatorBits = 13;

    public static List<KernelCheck> RunKernelChecks(CudaDevice dev, int seed = 1234)
    {
        var results = new List<KernelCheck>();
        var rng = new Random(seed);
        foreach (var (n, k, t) in new[] { (96, 64, 1), (173, 172, 5), (2048, 2048, 1), (5632, 2048, 1), (2048, 5632, 1), (256, 2048, 37) })
        {
            var w = RandomFloats(rng, n * k, 0.05);
            var x = RandomFloats(rng, t * k, 1.0);
            results.AddRange(CheckFp16(dev, w, x, n, k, t));
            foreach (var scheme in new[] { QuantScheme.PerTensor, QuantScheme.PerChannel, QuantScheme.SmoothQuant })
                results.AddRange(CheckQuantized(dev, QuantFormat.Int8, scheme, w, x, n, k, t, rng));
            if (dev.ComputeCapability >= 89)
                foreach (var scheme in new[] { QuantScheme.PerTensor, QuantScheme.PerChannel })
                    results.AddRange(CheckQuantized(dev, QuantFormat.E4M3, scheme, w, x, n, k, t, rng));
            results.Add(CheckQ48Matmul(dev, rng, n, k, t));
        }
        results.Add(CheckQ48Functions(dev, rng));
        results.AddRange(CudaBlockSelfCheck.Run(dev, rng));
        foreach (var (rows, dim) in new[] { (8, 32), (37, 64), (640, 128) })
        {
            results.Add(CheckQ48HeadNorm(dev, rng, rows, dim));
            results.Add(CheckF32HeadNorm(dev, rng, rows, dim));
            results.Add(CheckQ48BiasAdd(dev, rng, rows, dim));
        }
        return results;
    }

    internal static float[] RandomFloats(Random rng, int n, double scale)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return a;
    }

    private static double RelError(ReadOnlySpan<float> got, ReadOnlySpan<double> want)
    {
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++)
        {
            if (!float.IsFinite(got[i])) return double.NaN;
            double d = got[i] - want[i]; num += d * d; den += want[i] * want[i];
        }
        return Math.Sqrt(num / Math.Max(den, 1e-300));
    }

    internal static KernelCheck Rel(string name, float[] got, double[] want, double bound)
    {
        double e = RelError(got, want);
        return new KernelCheck(name, "rel L2", e, bound, e <= bound);
    }

    internal static ulong Poisoned(CudaDevice dev, ulong bytes) { var p = dev.Alloc(bytes); dev.Fill(p, 0xFF, bytes); return p; }

    private static IEnumerable<KernelCheck> CheckFp16(CudaDevice dev, float[] w, float[] x, int n, int k, int t)
    {
        var m = Module(dev, "fp16.cu");
        var packed = CudaPacking.PackFp16(w, n, k);
        var xh = new ushort[x.Length]; Fp16.FromFloat(x, xh);
        // reference: float64 dot products of the half-rounded operands
        var wBits = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ushort>(packed.Weights.AsSpan()).ToArray();
        var want = new double[t * n];
        for (int r = 0; r < t; r++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int c = 0; c < k; c++) s += (double)Fp16.ToFloat(wBits[j * k + c]) * Fp16.ToFloat(xh[r * k + c]);
                want[r * n + j] = s;
            }
        ulong dW = dev.Upload<byte>(packed.Weights), dX = dev.Upload<ushort>(xh);
        ulong dY = Poisoned(dev, (ulong)(t * n * 4));
        m.Launch("gemm_f16_mma", ((uint)((n + 31) / 32), (uint)((t + 15) / 16)), 128, 0, dX, dW, dY, t, n, k);
        yield return Rel($"fp16 gemm_f16_mma M={t} N={n} K={k}", dev.Read<float>(dY, t * n), want, TensorCoreRelL2Bound(k, HmmaAccumulatorBits));
        dY = Poisoned(dev, (ulong)(n * 4));
        m.Launch("gemv_f16", ((uint)((n + 7) / 8), 1), 256, 0, dW, dX, dY, n, k);
        yield return Rel($"fp16 gemv_f16 N={n} K={k}", dev.Read<float>(dY, n), want.AsSpan(0, n).ToArray(), 1e-5);
    }

    private static IEnumerable<KernelCheck> CheckQuantized(CudaDevice dev, QuantFormat format, QuantScheme scheme, float[] w, float[] x, int n, int k, int t, Random rng)
    {
        bool int8 = format == QuantFormat.Int8;
        var m = Module(dev, int8 ? "int8.cu" : "fp8.cu");
        float[] absMax = [];
        if (scheme == QuantScheme.SmoothQuant) { absMax = new float[k]; for (int i = 0; i < k; i++) absMax[i] = (float)(0.1 + rng.NextDouble() * 20); }
        var qm = Quantizer.Quantize(w, n, k, format, scheme, absMax);
        var p = CudaPacking.PackQuantized(qm);
        string tag = $"{(int8 ? "int8" : "fp8")} {scheme}";
        // host expectations: per-token activation codes/scales and the float64 reference, rounded to float
        var wantCodes = new byte[t * k]; var wantScales = new float[t]; var want = new double[t * n];
        for (int r = 0; r < t; r++)
        {
            var xr = x.AsSpan(r * k, k);
            var y = new double[n];
            Quantizer.ReferenceMatVec(qm, xr, y);
            for (int j = 0; j < n; j++) want[r * n + j] = (float)y[j];
            var xs = Quantizer.SmoothedActivations(qm, xr);
            if (int8) { var q = new sbyte[k]; wantScales[r] = Quantizer.QuantizeActivationsInt8(xs, q); for (int i = 0; i < k; i++) wantCodes[r * k + i] = (byte)q[i]; }
            else wantScales[r] = Quantizer.QuantizeActivationsE4M3(xs, wantCodes.AsSpan(r * k, k));
        }
        ulong dW = dev.Upload<byte>(p.Weights), dWs = dev.Upload<float>(p.Scales), dX = dev.Upload<float>(x);
        ulong dSmooth = p.Smooth is null ? 0 : dev.Upload<float>(p.Smooth);
        ulong dQ = Poisoned(dev, (ulong)(t * k)), dS = Poisoned(dev, (ulong)(t * 4));
        if (int8) m.Launch("quantize_int8", ((uint)t, 1), 256, 0, dX, dSmooth, dQ, dS, k);
        else m.Launch("quantize_e4m3", ((uint)t, 1), 256, 0, dX, dQ, dS, k);
        var gotCodes = dev.Read<byte>(dQ, t * k); var gotScales = dev.Read<float>(dS, t);
        int codeMismatch = Enumerable.Range(0, t * k).Count(i => gotCodes[i] != wantCodes[i]) + Enumerable.Range(0, t).Count(i => BitConverter.SingleToInt32Bits(gotScales[i]) != BitConverter.SingleToInt32Bits(wantScales[i]));
        yield return new KernelCheck($"{tag} quantize activations T={t} K={k}", "mismatches", codeMismatch, 0, codeMismatch == 0);

        ulong dY = Poisoned(dev, (ulong)(t * n * 4));
        m.Launch(int8 ? "gemm_int8_mma" : "gemm_e4m3_mma", ((uint)((n + 31) / 32), (uint)((t + 15) / 16)), 128, 0, dQ, dS, dW, dWs, p.PerRow, dY, t, n, k);
        var got = dev.Read<float>(dY, t * n);
        if (int8)
        {
            int bad = Enumerable.Range(0, t * n).Count(i => BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits((float)want[i]));
            yield return new KernelCheck($"{tag} gemm_int8_mma M={t} N={n} K={k}", "mismatches vs (float)Quantizer.ReferenceMatVec", bad, 0, bad == 0);
        }
        else yield return Rel($"{tag} gemm_e4m3_mma M={t} N={n} K={k}", got, want, TensorCoreRelL2Bound(k, Fp8MmaAccumulatorBits));

        dY = Poisoned(dev, (ulong)(n * 4));
        m.Launch(int8 ? "gemv_int8" : "gemv_e4m3", ((uint)((n + 7) / 8), 1), 256, 0, dW, dQ, dS, dWs, p.PerRow, dY, n, k);
        got = dev.Read<float>(dY, n);
        if (int8)
        {
            int bad = Enumerable.Range(0, n).Count(i => BitConverter.SingleToInt32Bits(got[i]) != BitConverter.SingleToInt32Bits((float)want[i]));
            yield return new KernelCheck($"{tag} gemv_int8 N={n} K={k}", "mismatches vs (float)Quantizer.ReferenceMatVec", bad, 0, bad == 0);
        }
        else yield return Rel($"{tag} gemv_e4m3 N={n} K={k}", got, want.AsSpan(0, n).ToArray(), 1e-5);
    }

    private static KernelCheck CheckQ48Matmul(CudaDevice dev, Random rng, int n, int k, int t)
    {
        var m = Module(dev, "int64.cu");
        var w = new long[n * k]; var x = new long[t * k];
        for (int i = 0; i < w.Length; i++) w[i] = rng.NextInt64(-(1L << 46), 1L << 46);
        for (int i = 0; i < x.Length; i++) x[i] = rng.NextInt64(-(1L << 49), 1L << 49);
        ulong dW = dev.Upload<long>(w), dX = dev.Upload<long>(x), dY = Poisoned(dev, (ulong)(t * n * 8)), dErr = dev.Upload<int>([0]);
        m.Launch("matmul_q48", ((uint)((n + 7) / 8), (uint)((t + 3) / 4)), 256, 0, dW, dX, dY, n, k, t, dErr);
        var got = dev.Read<long>(dY, t * n);
        int bad = 0;
        for (int r = 0; r < t; r++)
            for (int j = 0; j < n; j++)
            {
                Int128 s = 0;
                for (int c = 0; c < k; c++) s += (Int128)w[j * k + c] * x[r * k + c];
                if (Q48.RoundShift(s, Q48.FracBits) != got[r * n + j]) bad++;
            }
        bad += dev.Read<int>(dErr, 1)[0] != 0 ? 1 : 0;
        return new KernelCheck($"int64 matmul_q48 T={t} N={n} K={k}", "mismatches vs exact Int128", bad, 0, bad == 0);
    }

    private static KernelCheck CheckQ48Functions(CudaDevice dev, Random rng)
    {
        var m = Module(dev, "int64.cu");
        int count = 1 << 16;
        var x = new long[count];
        for (int i = 0; i < count; i++) x[i] = i < 64 ? (long)(i - 32) << 44 : rng.NextInt64(-(45L << 48), 45L << 48) >> rng.Next(0, 40);
        ulong dX = dev.Upload<long>(x), dR = Poisoned(dev, (ulong)count * 8), dS = Poisoned(dev, (ulong)count * 8);
        ulong dTab = dev.Upload<ulong>(CudaPacking.Q48Tables());
        m.Launch("test_q48_functions", (256, 1), 256, 0, dX, dR, dS, count, dTab);
        var r = dev.Read<long>(dR, count); var s = dev.Read<long>(dS, count);
        int bad = 0;
        for (int i = 0; i < count; i++)
        {
            if (x[i] > (1L << 18) && r[i] != Q48.Rsqrt(x[i])) bad++;
            if (s[i] != Q48.Silu(x[i])) bad++;
        }
        return new KernelCheck($"int64 q48 rsqrt+silu over {count} inputs", "mismatches vs Q48.Rsqrt/Q48.Silu", bad, 0, bad == 0);
    }

    /// <summary>rmsnorm_rows_q48 (Qwen3 q/k norm, in place per row) against the oracle's RmsNorm arithmetic from the Q48 library.</summary>
    private static KernelCheck CheckQ48HeadNorm(CudaDevice dev, Random rng, int rows, int dim)
    {
        var m = Module(dev, "int64.cu");
        var x = new long[rows * dim]; var w = new long[dim];
        for (int i = 0; i < x.Length; i++) x[i] = rng.NextInt64(-(1L << 52), 1L << 52) >> rng.Next(0, 12);
        for (int i = 0; i < dim; i++) w[i] = rng.NextInt64(-(2L << 48), 2L << 48);
        long eps = Q48.FromDouble(1e-6);
        ulong dX = dev.Upload<long>(x), dW = dev.Upload<long>(w), dErr = dev.Upload<int>([0]);
        m.Launch("rmsnorm_rows_q48", ((uint)rows, 1), 128, 0, dX, dW, dim, eps, dErr);
        var got = dev.Read<long>(dX, x.Length);
        int bad = dev.Read<int>(dErr, 1)[0] != 0 ? 1 : 0;
        for (int r = 0; r < rows; r++)
        {
            Int128 ss = 0;
            for (int i = 0; i < dim; i++) ss += (Int128)x[r * dim + i] * x[r * dim + i];
            long inv = Q48.Rsqrt(Q48.DivideRound(ss, (Int128)dim << Q48.FracBits) + eps);
            for (int i = 0; i < dim; i++) if (got[r * dim + i] != Q48.Mul(w[i], Q48.Mul(x[r * dim + i], inv))) bad++;
        }
        return new KernelCheck($"int64 rmsnorm_rows_q48 rows={rows} dim={dim}", "mismatches vs Q48 RmsNorm", bad, 0, bad == 0);
    }

    /// <summary>rmsnorm_rows_f32 against a float64 RMSNorm per row.</summary>
    private static KernelCheck CheckF32HeadNorm(CudaDevice dev, Random rng, int rows, int dim)
    {
        var m = Module(dev, "fp16.cu");
        var x = RandomFloats(rng, rows * dim, 3.0); var w = RandomFloats(rng, dim, 1.0);
        ulong dX = dev.Upload<float>(x), dW = dev.Upload<float>(w);
        m.Launch("rmsnorm_rows_f32", ((uint)rows, 1), 128, 0, dX, dW, dim, 1e-6f);
        var got = dev.Read<float>(dX, x.Length);
        var want = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[r * dim + i] * x[r * dim + i];
            double inv = 1 / Math.Sqrt(ss / dim + 1e-6);
            for (int i = 0; i < dim; i++) want[r * dim + i] = w[i] * (x[r * dim + i] * inv);
        }
        return Rel($"f32 rmsnorm_rows_f32 rows={rows} dim={dim}", got, want, 1e-5);
    }

    /// <summary>bias_add_q48 against Int128 sums, with rows at the int64 edge that must set the flag.</summary>
    private static KernelCheck CheckQ48BiasAdd(CudaDevice dev, Random rng, int rows, int width)
    {
        var m = Module(dev, "int64.cu");
        var y = new long[rows * width]; var b = new long[width];
        for (int i = 0; i < y.Length; i++) y[i] = rng.NextInt64(-(1L << 60), 1L << 60);
        for (int i = 0; i < width; i++) b[i] = rng.NextInt64(-(1L << 60), 1L << 60);
        ulong dY = dev.Upload<long>(y), dB = dev.Upload<long>(b), dErr = dev.Upload<int>([0]);
        m.Launch("bias_add_q48", ((uint)Math.Min((y.Length + 255) / 256, 4096), 1), 256, 0, dY, dB, y.Length, width, dErr);
        var got = dev.Read<long>(dY, y.Length);
        int bad = dev.Read<int>(dErr, 1)[0] != 0 ? 1 : 0;
        for (int i = 0; i < y.Length; i++) if (got[i] != y[i] + b[i % width]) bad++;
        // One sum past int64: the flag (ERR_BIAS = 64) must be set.
        dev.Write<long>(dY, [long.MaxValue]);
        dev.Write<long>(dB, [1]);
        m.Launch("bias_add_q48", (1, 1), 256, 0, dY, dB, 1, 1, dErr);
        if (dev.Read<int>(dErr, 1)[0] != 64) bad++;
        return new KernelCheck($"int64 bias_add_q48 rows={rows} width={width}", "mismatches vs Int128 sums (+ overflow flag)", bad, 0, bad == 0);
    }

    private static readonly Dictionary<(CudaDevice, string), CudaModule> s_modules = [];
    internal static CudaModule Module(CudaDevice dev, string file)
    {
        lock (s_modules)
        {
            if (!s_modules.TryGetValue((dev, file), out var m)) s_modules[(dev, file)] = m = dev.Compile(file);
            return m;
        }
    }

    /// <summary>Measured device-to-device copy bandwidth (bytes read + written per second, GB/s), median of 20.</summary>
    public static double CopyBandwidthGBps(CudaDevice dev, ulong bytes = 1UL << 30)
    {
        ulong a = dev.Alloc(bytes), b = dev.Alloc(bytes);
        dev.Fill(a, 0x5A, bytes);
        var d = dev.Driver; var e0 = d.EventCreate(); var e1 = d.EventCreate();
        var times = new List<double>();
        for (int i = 0; i < 23; i++)
        {
            d.EventRecord(e0, dev.Stream); dev.CopyDeviceToDevice(b, a, bytes); d.EventRecord(e1, dev.Stream); d.EventSynchronize(e1);
            if (i >= 3) times.Add(d.EventElapsedMs(e0, e1));
        }
        d.EventDestroy(e0); d.EventDestroy(e1);
        times.Sort();
        return 2.0 * bytes / (times[times.Count / 2] * 1e-3) / 1e9;
    }

    public static double Median(List<double> v) { var s = v.OrderBy(x => x).ToList(); return s[s.Count / 2]; }
    public static Stopwatch StartTimer() => Stopwatch.StartNew();
}
