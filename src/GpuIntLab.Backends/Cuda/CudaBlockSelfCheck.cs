using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Formats.LowBit;
using GpuIntLab.Core.Formats.WeightOnly;

namespace GpuIntLab.Backends.Cuda;

/// <summary>
/// Kernel checks of kernels/block.cu and kvcache.cuh against host references, run with <see cref="CudaSelfCheck"/> when
/// a GPU is lent (none of this runs without one). Bounds: the activation quantizers and KV stores bit-exact with the
/// Core codecs (mismatch counts); the GEMVs relative L2 below 1e-5 against float64 sums of the exact dequantized
/// operands (float32 products and adds over K &lt;= 2048); gemm_bf16_mma below the tensor-core accumulation bound.
/// </summary>
public static class CudaBlockSelfCheck
{
    private const double GemvBound = 1e-5;

    /// <summary>(N, K, T) of the checks: a K off the 8- and 32-value vector paths, decode and prefill GEMVs, a TinyLlama-sized layer.</summary>
    public static readonly (int N, int K, int T)[] Shapes = [(37, 100, 2), (96, 256, 1), (200, 1024, 3), (2048, 2048, 1)];

    public static List<KernelCheck> Run(CudaDevice dev, Random rng, IReadOnlyList<(int N, int K, int T)>? shapes = null)
    {
        var results = new List<KernelCheck>();
        var m = CudaSelfCheck.Module(dev, CudaBlockScheme.KernelFile);
        foreach (var (n, k, t) in shapes ?? Shapes)
        {
            var w = CudaSelfCheck.RandomFloats(rng, n * k, 0.05);
            var x = CudaSelfCheck.RandomFloats(rng, t * k, 1.0);
            ulong dX = dev.Upload<float>(x), dY = CudaSelfCheck.Poisoned(dev, (ulong)(t * n * 4));
            results.AddRange(Bf16(dev, m, w, x, dX, n, k, t));
            results.AddRange(Int4(dev, m, w, x, dX, n, k, t, rng));
            foreach (var (format, rule, weightOnly) in new[] { (MxFormat.Mxfp4, MxScaleRule.Rceil, false), (MxFormat.Mxfp8E4M3, MxScaleRule.OcpFloor, true), (MxFormat.Mxfp6E3M2, MxScaleRule.OcpFloor, false) })
            {
                var p = CudaBlockPacking.PackMx(w, n, k, format, rule);
                CudaLinearInput input = weightOnly ? new CudaLinearInput.Bf16Float() : new CudaLinearInput.Mx(format, rule);
                results.AddRange(Block(dev, m, p, input, $"{format.Name} {rule.Name()} {(weightOnly ? "weight-only" : "W+A")}", x, n, k, t, r => weightOnly
                    ? Array.ConvertAll(r, Core.Formats.LowBit.Bf16.RoundToBf16) : Dequantized(MxCodec.Quantize(r, format, rule))));
            }
            results.AddRange(Block(dev, m, CudaBlockPacking.PackNvfp4(w, n, k), new CudaLinearInput.Nvfp4(), "nvfp4 W4A4", x, n, k, t, r =>
            {
                var v = new float[r.Length];
                Nvfp4Codec.Quantize(r, Nvfp4Codec.GlobalEncodeScale(Nvfp4Codec.Amax(r))).Dequantize(v);
                return v;
            }));
        }
        results.AddRange(KvStores(dev, m, rng));
        return results;
    }

    private static float[] Dequantized(MxVector v) { var a = new float[v.Length]; v.Dequantize(a); return a; }

    private static KernelCheck Mismatches(string name, float[] got, float[] want)
    {
        int bad = 0;
        for (int i = 0; i < want.Length; i++)
            if (BitConverter.SingleToUInt32Bits(got[i]) != BitConverter.SingleToUInt32Bits(want[i]) && !(float.IsNaN(got[i]) && float.IsNaN(want[i]))) bad++;
        return new KernelCheck(name, "mismatches", bad, 0, bad == 0);
    }

    /// <summary>float64 y[t, j] = sum_c weight(j, c) * operand[t, c].</summary>
    private static double[] Reference(Func<int, int, float> weight, float[] operand, int n, int k, int t)
    {
        var y = new double[t * n];
        for (int r = 0; r < t; r++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int c = 0; c < k; c++) s += (double)weight(j, c) * operand[r * k + c];
                y[r * n + j] = s;
            }
        return y;
    }

    private static (uint, uint) Rows(int n, int t) => ((uint)((n + 7) / 8), (uint)t);
    private static (uint, uint) Elementwise(int count) => ((uint)Math.Min((count + 255) / 256, 4096), 1);

    private static IEnumerable<KernelCheck> Bf16(CudaDevice dev, CudaModule m, float[] w, float[] x, ulong dX, int n, int k, int t)
    {
        var wb = CudaBlockPacking.PackBf16(w);
        var xb = CudaBlockPacking.PackBf16(x);
        ulong dW = dev.Upload<ushort>(wb), dXb = CudaSelfCheck.Poisoned(dev, (ulong)(t * k * 2));
        m.Launch("input_bf16", Elementwise(t * k), 256, 0, dX, dXb, t * k);
        var gotBits = dev.Read<ushort>(dXb, t * k);
        int bad = Enumerable.Range(0, t * k).Count(i => gotBits[i] != xb[i]);
        yield return new KernelCheck($"bf16 input_bf16 T={t} K={k}", "mismatches", bad, 0, bad == 0);
        var want = Reference((j, c) => Core.Formats.LowBit.Bf16.ToFloat(wb[j * k + c]), Array.ConvertAll(xb, Core.Formats.LowBit.Bf16.ToFloat), n, k, t);
        ulong dY = CudaSelfCheck.Poisoned(dev, (ulong)(t * n * 4));
        m.Launch("gemv_bf16", Rows(n, t), 256, 0, dW, dXb, dY, n, k);
        yield return CudaSelfCheck.Rel($"bf16 gemv_bf16 T={t} N={n} K={k}", dev.Read<float>(dY, t * n), want, GemvBound);
        dY = CudaSelfCheck.Poisoned(dev, (ulong)(t * n * 4));
        m.Launch("gemm_bf16_mma", ((uint)((n + 31) / 32), (uint)((t + 15) / 16)), 128, 0, dXb, dW, dY, t, n, k);
        yield return CudaSelfCheck.Rel($"bf16 gemm_bf16_mma M={t} N={n} K={k}", dev.Read<float>(dY, t * n), want,
            CudaSelfCheck.TensorCoreRelL2Bound(k, CudaSelfCheck.HmmaAccumulatorBits));
    }

    private static IEnumerable<KernelCheck> Int4(CudaDevice dev, CudaModule m, float[] w, float[] x, ulong dX, int n, int k, int t, Random rng)
    {
        var im = Int4Rtn.Quantize(Array.ConvertAll(w, v => (double)v), n, k, 128, symmetric: false);
        // AWQ's channel divisor on the input (x / s then fp16) and half scales, at every other shape.
        bool awqStyle = k % 256 == 0;
        var divisors = awqStyle ? Enumerable.Range(0, k).Select(_ => (float)(0.5 + rng.NextDouble() * 1.5)).ToArray() : null;
        var p = CudaBlockPacking.PackInt4(im with { ChannelScales = divisors }, fp16Scales: awqStyle);
        string tag = awqStyle ? "int4 (fp16 scales, AWQ divisor)" : "int4";
        var xh = new float[t * k];
        for (int i = 0; i < xh.Length; i++) xh[i] = (float)(Half)(divisors is null ? x[i] : x[i] / divisors[i % k]);
        ulong dXh = CudaSelfCheck.Poisoned(dev, (ulong)(t * k * 2));
        ulong dDiv = divisors is null ? 0 : dev.Upload<float>(divisors);
        m.Launch("input_f16", Elementwise(t * k), 256, 0, dX, dDiv, divisors is null ? 0 : 1, dXh, t * k, k);
        var gotHalf = Array.ConvertAll(dev.Read<ushort>(dXh, t * k), b => (float)BitConverter.UInt16BitsToHalf(b));
        yield return Mismatches($"{tag} input_f16 T={t} K={k}", gotHalf, xh);
        ulong dW = dev.Upload<byte>(p.Codes), dZ = dev.Upload<byte>(p.Zeros);
        ulong dS = p.Scales16 is not null ? dev.Upload<ushort>(p.Scales16) : dev.Upload<float>(p.Scales32!);
        ulong dY = CudaSelfCheck.Poisoned(dev, (ulong)(t * n * 4));
        m.Launch("gemv_int4", Rows(n, t), 256, 0, dW, dS, p.Scales16 is null ? 0 : 1, dZ, dXh, dY, n, k, p.GroupSize);
        var want = Reference((j, c) => CudaBlockPacking.DequantizeStored(p, j, c), xh, n, k, t);
        yield return CudaSelfCheck.Rel($"{tag} gemv_int4 T={t} N={n} K={k}", dev.Read<float>(dY, t * n), want, GemvBound);
    }

    private static IEnumerable<KernelCheck> Block(CudaDevice dev, CudaModule m, PackedBlock p, CudaLinearInput input, string tag, float[] x, int n, int k, int t,
        Func<float[], float[]> quantizeRow)
    {
        var linears = new CudaBlockLinears(dev, m, t, k);
        var layer = linears.UploadBlock(p, input);
        var xq = new float[t * k];
        for (int r = 0; r < t; r++) quantizeRow(x.AsSpan(r * k, k).ToArray()).CopyTo(xq, r * k);
        ulong dX = dev.Upload<float>(x), dY = CudaSelfCheck.Poisoned(dev, (ulong)(t * n * 4));
        linears.Run(layer, dX, t, dY);
        yield return Mismatches($"{tag} input T={t} K={k}", dev.Read<float>(linears.FloatOperand, t * k), xq);
        var want = Reference((j, c) => CudaBlockPacking.Dequantize(p, j, c), xq, n, k, t);
        yield return CudaSelfCheck.Rel($"{tag} gemv_block T={t} N={n} K={k}", dev.Read<float>(dY, t * n), want, GemvBound);
    }

    /// <summary>kv_fp8_scales + kv_store_fp8 and kv_store_int8 at position 0 for 3 tokens: the stored codes decoded on the host equal the ILGPU engine's values.</summary>
    private static IEnumerable<KernelCheck> KvStores(CudaDevice dev, CudaModule m, Random rng)
    {
        const int tokens = 3, heads = 4, hd = 64, kvDim = heads * hd;
        var k = CudaSelfCheck.RandomFloats(rng, tokens * kvDim, 3.0);
        var v = CudaSelfCheck.RandomFloats(rng, tokens * kvDim, 0.5);
        ulong dK = dev.Upload<float>(k), dV = dev.Upload<float>(v), dPos = dev.Upload<int>([0]);
        ulong dScales = CudaSelfCheck.Poisoned(dev, 8), dKc = CudaSelfCheck.Poisoned(dev, tokens * kvDim), dVc = CudaSelfCheck.Poisoned(dev, tokens * kvDim);
        m.Launch("kv_fp8_scales", (1, 1), 256, 0, dK, dV, dScales, 0, dPos, kvDim);
        m.Launch("kv_store_fp8", (tokens, 1), 256, 0, dK, dV, dKc, dVc, dScales, 0, dPos, kvDim);
        var scales = dev.Read<float>(dScales, 2);
        float ks = k.AsSpan(0, kvDim).ToArray().Max(MathF.Abs) / 200f, vs = v.AsSpan(0, kvDim).ToArray().Max(MathF.Abs) / 100f;
        yield return Mismatches("kv_fp8_scales (vLLM max/200, max/100 of the first token)", scales, [ks, vs]);
        float Fp8(byte code, float scale) => (float)(Half)(E4M3.Decode(code) * scale);
        var gotK = Array.ConvertAll(dev.Read<byte>(dKc, tokens * kvDim), c => Fp8(c, ks));
        yield return Mismatches("kv_store_fp8 keys read back", gotK, Array.ConvertAll(k, x => Fp8(E4M3.Encode(x / ks), ks)));
        var gotV = Array.ConvertAll(dev.Read<byte>(dVc, tokens * kvDim), c => Fp8(c, vs));
        yield return Mismatches("kv_store_fp8 values read back", gotV, Array.ConvertAll(v, x => Fp8(E4M3.Encode(x / vs), vs)));

        int stride = ((kvDim + 3) & ~3) + 8 * heads;
        ulong dKi = CudaSelfCheck.Poisoned(dev, (ulong)(tokens * stride)), dVi = CudaSelfCheck.Poisoned(dev, (ulong)(tokens * stride));
        m.Launch("kv_store_int8", (tokens, 1), 128, 0, dK, dV, dKi, dVi, dPos, heads, hd, stride);
        foreach (var (name, src, cache) in new[] { ("keys", k, dKi), ("values", v, dVi) })
        {
            var bytes = dev.Read<byte>(cache, tokens * stride);
            var got = new float[tokens * kvDim];
            var want = new float[tokens * kvDim];
            for (int tok = 0; tok < tokens; tok++)
                for (int h = 0; h < heads; h++)
                {
                    float s = BitConverter.ToSingle(bytes, tok * stride + kvDim + 8 * h), min = BitConverter.ToSingle(bytes, tok * stride + kvDim + 8 * h + 4);
                    for (int i = 0; i < hd; i++) got[tok * kvDim + h * hd + i] = bytes[tok * stride + h * hd + i] * s + min;
                    KvCacheKernels.Int8RoundTrip(src.AsSpan(tok * kvDim + h * hd, hd)).CopyTo(want, tok * kvDim + h * hd);
                }
            yield return Mismatches($"kv_store_int8 {name} read back (q * s + min)", got, want);
        }
    }
}
