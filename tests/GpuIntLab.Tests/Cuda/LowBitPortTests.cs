using System.Diagnostics;
using System.Runtime.InteropServices;
using GpuIntLab.Backends.Cuda;
using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Formats.LowBit;
using GpuIntLab.Tests.Engines;
using Xunit;

namespace GpuIntLab.Tests.Cuda;

/// <summary>
/// The device low-bit codecs (kernels/lowbit.cuh: what block.cu's activation quantizers and GEMV decoding and
/// kvcache.cuh's KV caches run) built for the host by the system C++ compiler through
/// kernels/check/lowbit_host_harness.cpp, and compared bit for bit with the C# codecs of Core.Formats.LowBit.
/// Checks the port's arithmetic without a GPU (not the GPU's execution of it: CudaBlockSelfCheck does that when one is lent).
/// </summary>
public unsafe class LowBitPortTests
{
    private static readonly Lazy<(IntPtr Lib, string Reason)> s_lib = new(Build);

    private static (IntPtr, string) Build()
    {
        string? cxx = new[] { "g++", "c++", "clang++", "clang++-14" }.FirstOrDefault(c =>
            Environment.GetEnvironmentVariable("PATH")!.Split(':').Any(d => File.Exists(Path.Combine(d, c))));
        if (cxx is null) return (IntPtr.Zero, "no host C++ compiler (g++/clang++) on PATH to build kernels/check/lowbit_host_harness.cpp");
        string src = Path.Combine(KernelSources.Directory, "check", "lowbit_host_harness.cpp");
        string lib = Path.Combine(TestData.TempDir("lowbitharness"), "liblowbit.so");
        var psi = new ProcessStartInfo(cxx, ["-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", lib, src]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd(); p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{cxx} failed on {src}:\n{err}");
        return (NativeLibrary.Load(lib), "");
    }

    private static IntPtr Fn(string name)
    {
        var (lib, reason) = s_lib.Value;
        Skip.If(lib == IntPtr.Zero, reason);
        return NativeLibrary.GetExport(lib, name);
    }

    /// <summary>Float bit patterns: every 4096th (all exponents and the top 11 mantissa bits: the exact ties of every format down to half) and 2^18 random ones.</summary>
    private static IEnumerable<uint> Patterns(int seed)
    {
        for (uint i = 0; i < 1u << 20; i++) yield return i << 12;
        var r = new Random(seed);
        for (int i = 0; i < 1 << 18; i++) yield return (uint)r.NextInt64(0, 1L << 32);
    }

    [SkippableFact]
    public void ElementEncoders_MatchMiniFloatFormatEncode()
    {
        var encode = (delegate* unmanaged<float, int, int, int, int, int, int>)Fn("h_encode");
        foreach (var f in MiniFloatFormat.All)
        {
            var e = CudaElement.From(f);
            int checkedCount = 0;
            foreach (uint bits in Patterns(11))
            {
                float v = BitConverter.UInt32BitsToSingle(bits);
                if (float.IsNaN(v) && f.NaNCode < 0) continue; // Core refuses NaN for FP6 / FP4
                int want = f.Encode(v), got = encode(v, e.MantissaBits, e.Bias, e.MaxCode, e.SignBit, e.NaNCode);
                Assert.True(want == got, $"{f.Name} encode 0x{bits:X8} ({v:R}): Core 0x{want:X2}, device code 0x{got:X2}");
                checkedCount++;
            }
            Assert.True(checkedCount > 1_000_000);
        }
    }

    [SkippableFact]
    public void ElementDecoding_MatchesTheDecodeTable_ForEveryFiniteCode()
    {
        var decode = (delegate* unmanaged<int, int, int, int, float>)Fn("h_decode");
        var e4m3 = (delegate* unmanaged<int, float>)Fn("h_e4m3_decode");
        foreach (var f in MiniFloatFormat.All)
            for (int code = 0; code < f.CodeCount; code++)
            {
                float want = f.DecodeTable[code];
                if (!float.IsFinite(want)) continue;
                Assert.Equal(BitConverter.SingleToUInt32Bits(want), BitConverter.SingleToUInt32Bits(decode(code, f.ExponentBits, f.MantissaBits, f.Bias)));
            }
        for (int code = 0; code < 256; code++)
        {
            float want = Core.Formats.E4M3.Decode((byte)code), got = e4m3(code);
            Assert.True(float.IsNaN(want) ? float.IsNaN(got) : BitConverter.SingleToUInt32Bits(want) == BitConverter.SingleToUInt32Bits(got), $"E4M3 code 0x{code:X2}: {want:R} vs {got:R}");
        }
    }

    [SkippableFact]
    public void E8M0ScaleRules_MatchScaleFor_OverEveryBf16AmaxAndRandomFloats()
    {
        var scale = (delegate* unmanaged<float, int, int, float, int>)Fn("h_e8m0_scale");
        var r = new Random(12);
        var amaxes = Enumerable.Range(0, 0x8000).Select(b => BitConverter.UInt32BitsToSingle((uint)b << 16))
            .Concat(Enumerable.Range(0, 200_000).Select(_ => BitConverter.UInt32BitsToSingle((uint)r.NextInt64(0, 0x8000_0000L))));
        foreach (float amax in amaxes)
            foreach (var f in MiniFloatFormat.All)
                foreach (var rule in new[] { MxScaleRule.OcpFloor, MxScaleRule.Rceil })
                {
                    var e = CudaElement.From(f);
                    int want = E8M0.ScaleFor(amax, f, rule), got = scale(amax, rule == MxScaleRule.Rceil ? 1 : 0, e.EmaxElement, e.ReciprocalOfMax);
                    Assert.True(want == got, $"{f.Name} {rule} amax 0x{BitConverter.SingleToUInt32Bits(amax):X8}: Core {want}, device code {got}");
                }
    }

    [SkippableFact]
    public void Bf16AndHalfRounding_MatchBf16FromFloatAndSystemHalf()
    {
        var bf16 = (delegate* unmanaged<float, ushort>)Fn("h_bf16");
        var half = (delegate* unmanaged<float, float>)Fn("h_f16_round");
        foreach (uint bits in Patterns(13))
        {
            float v = BitConverter.UInt32BitsToSingle(bits);
            Assert.Equal(Bf16.FromFloat(v), bf16(v));
            float want = (float)(Half)v, got = half(v);
            Assert.True(float.IsNaN(want) ? float.IsNaN(got) : BitConverter.SingleToUInt32Bits(want) == BitConverter.SingleToUInt32Bits(got),
                $"half rounding of 0x{bits:X8}: System.Half {want:R}, device code {got:R}");
        }
    }

    /// <summary>Vectors of 1..100 values at magnitudes from 2^-140 to 2^100, with zeros and an occasional outlier.</summary>
    private static List<float[]> Vectors(int seed, int count)
    {
        var r = new Random(seed);
        var list = new List<float[]>();
        for (int i = 0; i < count; i++)
        {
            var x = new float[1 + r.Next(100)];
            double magnitude = Math.ScaleB(1, r.Next(-140, 100));
            for (int j = 0; j < x.Length; j++)
                x[j] = r.Next(10) == 0 ? 0f : (float)((r.NextDouble() * 2 - 1) * magnitude * (r.Next(20) == 0 ? 1000 : 1));
            list.Add(x);
        }
        return list;
    }

    private static void AssertSameBits(float[] want, float[] got, string what)
    {
        for (int i = 0; i < want.Length; i++)
            Assert.True(BitConverter.SingleToUInt32Bits(want[i]) == BitConverter.SingleToUInt32Bits(got[i]) || float.IsNaN(want[i]) && float.IsNaN(got[i]),
                $"{what} [{i}]: Core {want[i]:R}, device code {got[i]:R}");
    }

    [SkippableFact]
    public void MxActivationQuantizer_MatchesMxCodec_ForEveryFormatAndRule()
    {
        var mx = (delegate* unmanaged<float*, float*, int, int, int, int, int, int, int, int, int, int, float, void>)Fn("h_mx");
        var vectors = Vectors(14, 1500);
        vectors.Add([float.NaN, 1f, 2f]); // a NaN block: every value NaN
        foreach (var format in MxFormat.All)
            foreach (var rule in new[] { MxScaleRule.OcpFloor, MxScaleRule.Rceil })
                foreach (var x in vectors)
                {
                    var want = new float[x.Length];
                    MxCodec.Quantize(x, format, rule).Dequantize(want);
                    var got = new float[x.Length];
                    var e = CudaElement.From(format.Element);
                    fixed (float* px = x, pg = got)
                        mx(px, pg, x.Length, format.BlockSize, e.ExponentBits, e.MantissaBits, e.Bias, e.MaxCode, e.SignBit, e.NaNCode, rule == MxScaleRule.Rceil ? 1 : 0, e.EmaxElement, e.ReciprocalOfMax);
                    AssertSameBits(want, got, $"{format.Name} {rule.Name()} n={x.Length}");
                }
    }

    [SkippableFact]
    public void Nvfp4ActivationQuantizer_MatchesNvfp4Codec()
    {
        var nvfp4 = (delegate* unmanaged<float*, float*, int, void>)Fn("h_nvfp4");
        foreach (var x in Vectors(15, 3000).Append(new float[40]))
        {
            var want = new float[x.Length];
            Nvfp4Codec.Quantize(x, Nvfp4Codec.GlobalEncodeScale(Nvfp4Codec.Amax(x))).Dequantize(want);
            var got = new float[x.Length];
            fixed (float* px = x, pg = got) nvfp4(px, pg, x.Length);
            AssertSameBits(want, got, $"nvfp4 n={x.Length}");
        }
    }

    [SkippableFact]
    public void KvCacheCodecs_MatchTheIlgpuEnginesValues()
    {
        var fp8 = (delegate* unmanaged<float*, float*, int, float, void>)Fn("h_kv_fp8");
        var int8 = (delegate* unmanaged<float*, float*, int, void>)Fn("h_kv_int8");
        var r = new Random(16);
        for (int trial = 0; trial < 2000; trial++)
        {
            var x = new float[1 + r.Next(128)];
            double spread = Math.ScaleB(1, r.Next(-20, 12));
            for (int i = 0; i < x.Length; i++) x[i] = (float)((r.NextDouble() * 2 - 1) * spread);
            if (trial % 50 == 0) Array.Fill(x, x[0]); // a head of equal values: s = 1, q = 0
            float scale = trial % 7 == 0 ? 1f : (float)(spread / 200 * (0.5 + r.NextDouble())); // some values saturate at 448
            // fp8-e4m3 (vLLM): write E4M3(x / scale), read fp16(e4m3 * scale); reference from Core's E4M3 and System.Half.
            var want = x.Select(v => (float)(Half)(Core.Formats.E4M3.Decode(Core.Formats.E4M3.Encode(v / scale)) * scale)).ToArray();
            var got = new float[x.Length];
            fixed (float* px = x, pg = got) fp8(px, pg, x.Length, scale);
            AssertSameBits(want, got, $"kv fp8 trial {trial}");
            fixed (float* px = x, pg = got) int8(px, pg, x.Length);
            AssertSameBits(KvCacheKernels.Int8RoundTrip(x), got, $"kv int8 trial {trial}");
        }
    }
}
