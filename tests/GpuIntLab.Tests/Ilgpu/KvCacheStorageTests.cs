using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using ILGPU;
using ILGPU.Runtime;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Ilgpu;

/// <summary>
/// The KV-cache formats held in their own storage by the ILGPU float engine (1-byte FP8 / INT8 codes, dequantized where
/// attention reads them): its logits are bit-identical to those of a reference store that keeps float32 slots holding
/// the dequantized value written at the store (the engine's earlier path, kept here), across a cache growth and a
/// reset; the bytes per token it allocates are the formats' arithmetic, before and after the cache grows.
/// </summary>
public class KvCacheStorageTests(ITestOutputHelper output)
{
    // tiny-gqa: 3 layers, 2 kv heads of 16 (kvDim 32), 4 query heads (group 2).
    private const int Layers = 3;
    // The compared engines' caches start at 8 positions (the provider's at 64), so 14 tokens cross a growth with codes in the cache.
    private const int InitialPositions = 8, GrownPositions = 16, Tokens = 14;

    public static TheoryData<string, long> Formats() => new()
    {
        { "float32", 2 * 32 * 4 },            // K and V, 4 bytes a value
        { "fp8-e4m3", 2 * 32 },               // K and V, 1 byte a value; the per-layer scales are not per token
        { "int8", 2 * 32 + 2 * 2 * 2 * 4 },   // K and V, 1 byte a value, plus (scale, zero point) float32 per kv head for each
    };

    [Theory]
    [MemberData(nameof(Formats))]
    public void ProviderEngineAllocatesTheFormatsBytesPerToken(string format, long bytesPerToken)
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        var c = checkpoint.Config;
        Assert.Equal((Layers, 32, 2), (c.NumHiddenLayers, c.KvDim, c.NumKeyValueHeads)); // the hand arithmetic above is for this shape
        using var engine = (IlgpuFloatEngine)new IlgpuFp16Provider().Create(checkpoint, new EngineOptions("fp16", "cpu", KvCache: format));
        Assert.Equal(bytesPerToken, engine.KvCacheBytesPerToken);
        Assert.Equal(bytesPerToken, KvCacheKernels.BytesPerToken(format, c.KvDim, c.NumKeyValueHeads));
        Assert.Equal(bytesPerToken.ToString(System.Globalization.CultureInfo.InvariantCulture), engine.Info.Precisions["kv cache bytes per token per layer"]);
        Assert.Equal(KvCacheStore.DefaultInitialPositions, engine.KvCache.Positions);
        Assert.Equal(Layers * KvCacheStore.DefaultInitialPositions * bytesPerToken, engine.KvCache.DeviceBytes);
        Assert.Equal(format == "fp8-e4m3" ? Layers * 2 * 4 + 256 * 4 : 0, engine.KvCache.FixedBytes); // k/v scale per layer, E4M3 decode table
    }

    [Fact]
    public void BytesPerTokenOnTheTinyLlama1BShape()
    {
        // 4 kv heads of 64: kvDim 256. float32 2*256*4; fp8 2*256; int8 2*256 + 2 tensors * 4 heads * 2 float32.
        Assert.Equal(2048, KvCacheKernels.BytesPerToken("float32", 256, 4));
        Assert.Equal(512, KvCacheKernels.BytesPerToken("fp8-e4m3", 256, 4));
        Assert.Equal(576, KvCacheKernels.BytesPerToken("int8", 256, 4));
        Assert.Contains("unknown kv_cache 'q4'", Assert.Throws<ArgumentException>(() => KvCacheKernels.BytesPerToken("q4", 256, 4)).Message);
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void LogitsEqualTheFloatSlotReferenceAcrossAGrowthAndAReset(string format, long bytesPerToken)
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        using var engine = Engine(checkpoint, format, (name, acc, config) => KvCacheStore.Create(name, acc, config, InitialPositions));
        using var reference = Engine(checkpoint, format, (name, acc, config) => new FloatSlotReferenceStore(name, acc, config, InitialPositions));
        Assert.Equal(Layers * InitialPositions * bytesPerToken, engine.KvCache.DeviceBytes);

        var rng = new Random(15);
        int[] first = Enumerable.Range(0, Tokens).Select(_ => rng.Next(3, checkpoint.Config.VocabSize)).ToArray();
        int[] second = Enumerable.Range(0, 5).Select(_ => rng.Next(3, checkpoint.Config.VocabSize)).ToArray();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int prefilled = InitialPositions - 2; // then decode one at a time through the growth, each step's logits compared
        Assert.True(engine.Prefill(first.AsSpan(0, prefilled)).AsSpan().SequenceEqual(reference.Prefill(first.AsSpan(0, prefilled))), $"{format}: prefill logits differ");
        for (int t = prefilled; t < first.Length; t++)
            Assert.True(engine.Decode(first[t]).AsSpan().SequenceEqual(reference.Decode(first[t])), $"{format}: logits differ at position {t}");
        Assert.Equal(GrownPositions, engine.KvCache.Positions);
        Assert.Equal(Layers * GrownPositions * bytesPerToken, engine.KvCache.DeviceBytes);
        Assert.Equal(bytesPerToken, engine.KvCacheBytesPerToken);

        // A new sequence: fp8 takes its scales from its first token again; the grown caches are reused.
        engine.Reset(); reference.Reset();
        Assert.True(engine.Prefill(second).AsSpan().SequenceEqual(reference.Prefill(second)), $"{format}: prefill logits differ after a reset");
        output.WriteLine($"{format}: {first.Length + second.Length} steps of both engines in {sw.Elapsed.TotalSeconds:F2} s");
    }

    /// <summary>The engine as the ilgpu-fp16 provider builds it, with the KV cache <paramref name="makeKvCache"/> gives.</summary>
    private static IlgpuFloatEngine Engine(LlamaCheckpoint checkpoint, string format, Func<string, Accelerator, LlamaConfig, KvCacheStore> makeKvCache) =>
        (IlgpuFloatEngine)IlgpuProvider.Build("cpu", device =>
        {
            var fp16 = new Fp16Format(device.Accelerator, IlgpuProvider.MaxCols(checkpoint.Config));
            return new IlgpuFloatEngine(checkpoint, device, fp16, (_, w, rows, cols) => fp16.Create(w, rows, cols), "ilgpu-fp16", "fp16", "fp16",
                new Dictionary<string, string>(), format, makeKvCache);
        });
}

/// <summary>
/// The reference: every format in float32 slots, each holding at the store the value the format's read returns (quantize,
/// dequantize once, keep the float32), read by the float32 attention kernels. The store kernels are the engine's
/// earlier ones, kept here verbatim.
/// </summary>
internal sealed class FloatSlotReferenceStore : KvCacheStore
{
    private readonly GrowableBuffer<float>[] _keys, _values;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _scales, _e4m3;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int> _copy;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, float> _fp8Scale;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, ArrayView<float>, int, ArrayView<float>> _fp8Store;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int> _int8Store;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, float> _scores;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int> _output;

    public FloatSlotReferenceStore(string format, Accelerator accelerator, LlamaConfig config, int initialPositions) : base(accelerator, config, format, initialPositions)
    {
        _keys = new GrowableBuffer<float>[config.NumHiddenLayers];
        _values = new GrowableBuffer<float>[config.NumHiddenLayers];
        for (int l = 0; l < _keys.Length; l++) { _keys[l] = PerPosition<float>(config.KvDim); _values[l] = PerPosition<float>(config.KvDim); }
        _scales = Own(accelerator.Allocate1D<float>(2L * config.NumHiddenLayers));
        _e4m3 = Own(accelerator.Allocate1D(GpuIntLab.Core.Formats.E4M3.CopyDecodeTable()));
        _copy = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(FloatKernels.CopyTo);
        _fp8Scale = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, float>(KvCacheKernels.Fp8Scale);
        _fp8Store = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, ArrayView<float>, int, ArrayView<float>>(Fp8StoreDequantized);
        _int8Store = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int>(Int8StoreDequantized);
        _scores = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, float>(FloatKernels.Scores);
        _output = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(FloatKernels.AttentionOutput);
    }

    public override string Description => $"{Format} held dequantized in float32 slots (test reference)";

    /// <summary>dst[offset + i] = fp16(e4m3(x[i] / scale) * scale).</summary>
    private static void Fp8StoreDequantized(Index1D i, ArrayView<float> x, ArrayView<float> dst, int offset, ArrayView<float> scales, int slot, ArrayView<float> e4m3)
    {
        float scale = scales[slot];
        float decoded = e4m3[BlockKernels.EncodeByTable(x[i] / scale, e4m3, 0x7E, 0x80)];
        dst[offset + i] = DeviceMath.HalfToFloat(DeviceMath.FloatToHalf(decoded * scale));
    }

    /// <summary>One thread per kv head: asymmetric int8 of the head's headDim values, stored dequantized.</summary>
    private static void Int8StoreDequantized(Index1D head, ArrayView<float> x, ArrayView<float> dst, int offset, int headDim)
    {
        int o = head * headDim;
        float min = x[o], max = x[o];
        for (int i = 1; i < headDim; i++) { float v = x[o + i]; if (v < min) min = v; if (v > max) max = v; }
        float s = max > min ? (max - min) / 255f : 1f;
        for (int i = 0; i < headDim; i++)
        {
            float q = DeviceMath.RoundEven((x[o + i] - min) / s);
            if (q < 0f) q = 0f;
            if (q > 255f) q = 255f;
            dst[offset + o + i] = DeviceMath.Mul(q, s) + min;
        }
    }

    public override void Store(int layer, ArrayView<float> k, ArrayView<float> v, int position)
    {
        Row(k, _keys[layer].View, position, 2 * layer, 200f);
        Row(v, _values[layer].View, position, 2 * layer + 1, 100f);
    }

    private void Row(ArrayView<float> row, ArrayView<float> cache, int position, int slot, float vllmConstant)
    {
        int kv = Config.KvDim;
        switch (Format)
        {
            case "fp8-e4m3":
                if (position == 0) _fp8Scale(1, row, _scales.View, slot, kv, vllmConstant);
                _fp8Store(kv, row, cache, position * kv, _scales.View, slot, _e4m3.View);
                break;
            case "int8":
                _int8Store(Config.NumKeyValueHeads, row, cache, position * kv, Config.HeadDim);
                break;
            default:
                _copy(kv, row, cache, position * kv);
                break;
        }
    }

    public override void Scores(int layer, ArrayView<float> q, ArrayView<float> scores, int n, float scale)
        => _scores(Config.NumAttentionHeads * n, q, _keys[layer].View, scores, n, Config.HeadDim, Config.KvDim, Config.GroupSize, scale);

    public override void AttentionOutput(int layer, ArrayView<float> p, ArrayView<float> output, int n)
        => _output(Config.QDim, p, _values[layer].View, output, n, Config.HeadDim, Config.KvDim, Config.GroupSize);
}

/// <summary>
/// The KV-cache kernels (the generic attention reads closed over each format's rows) compiled offline by ILGPU's PTX
/// backend for sm_80, as <see cref="IlgpuPtxTests"/> does for the other kernels: the CUDA path compiles, with no fused
/// multiply-add, and the reads' products that feed a sum are mul.rn (which ptxas may not contract into an fma), so CUDA
/// computes the float32 values the CPU accelerator does. (ptxas and the JIT still run only on a real device.)
/// </summary>
public class KvCachePtxTests(ITestOutputHelper output)
{
    public static TheoryData<string> Kernels() => new()
    {
        nameof(KvCacheKernels.Fp8Scale), nameof(KvCacheKernels.Fp8Store), nameof(KvCacheKernels.Int8Store),
        "Scores<Fp8Rows>", "Scores<Int8Rows>", "AttentionOutput<Fp8Rows>", "AttentionOutput<Int8Rows>",
    };

    [Theory]
    [MemberData(nameof(Kernels))]
    public void KernelCompilesToPtxForSm80WithoutFma(string kernel)
    {
        var name = kernel.Split('<', '>');
        var method = typeof(KvCacheKernels).GetMethod(name[0], System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static)!;
        if (name.Length > 1) method = method.MakeGenericMethod(name[1] == nameof(Fp8Rows) ? typeof(Fp8Rows) : typeof(Int8Rows));
        using var context = Context.Create(b => b.Default().EnableAlgorithms());
        using var backend = new ILGPU.Backends.PTX.PTXBackend(context, new ILGPU.Runtime.Cuda.CudaCapabilityContext(ILGPU.Runtime.Cuda.CudaArchitecture.SM_80),
            ILGPU.Runtime.Cuda.CudaArchitecture.SM_80, ILGPU.Runtime.Cuda.CudaInstructionSet.ISA_71, null);
        var compiled = (ILGPU.Backends.PTX.PTXCompiledKernel)backend.Compile(ILGPU.Backends.EntryPoints.EntryPointDescription.FromImplicitlyGroupedKernel(method), default);
        string ptx = compiled.PTXAssembly;
        Assert.Contains(".target sm_80", ptx);
        Assert.DoesNotContain("fma.", ptx);
        if (name.Length > 1) Assert.Contains("mul.rn.f32", ptx);
        output.WriteLine($"{kernel}: {ptx.Length} chars of PTX; f32 ops {string.Join(", ", ptx.Split('\n').Select(l => l.Trim().Split(' ', '\t')[0]).Where(o => o.EndsWith(".f32", StringComparison.Ordinal)).Distinct())}");
    }
}
