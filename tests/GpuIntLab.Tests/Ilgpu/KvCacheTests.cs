using GpuIntLab.Backends;
using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Experiments;
using ILGPU;
using ILGPU.Runtime;
using Xunit;

namespace GpuIntLab.Tests.Ilgpu;

/// <summary>
/// The KV-cache formats' store kernels against host codecs and round trips written from their definitions (vLLM FP8
/// E4M3 with a per-tensor scale, LMDeploy asymmetric INT8 per token per head), the error bounds those definitions imply,
/// and the spec's kv_cache field (accepted for ILGPU float backends, one clear error elsewhere). The engine-level
/// storage (bytes, growth, bit-identical reads) is in <see cref="KvCacheStorageTests"/>.
/// </summary>
public class KvCacheTests(IlgpuCpuFixture fixture) : IClassFixture<IlgpuCpuFixture>
{
    private const int Heads = 3, HeadDim = 40;

    private static float[] Row(int seed)
    {
        var rng = new Random(seed);
        var row = new float[Heads * HeadDim];
        for (int i = 0; i < row.Length; i++) row[i] = (float)((rng.NextDouble() * 2 - 1) * Math.ScaleB(1, rng.Next(-6, 4)));
        for (int i = 0; i < HeadDim; i++) row[2 * HeadDim + i] = 0.75f; // a head of equal values: scale 1, exact
        return row;
    }

    [Fact]
    public void Int8StoreWritesCodesAndParametersThatReadBackWithinHalfAStep()
    {
        var acc = fixture.Accelerator;
        var store = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<byte>, int, ArrayView<float>, int, int>(KvCacheKernels.Int8Store);
        var row = Row(1);
        using var x = acc.Allocate1D(row);
        using var codes = acc.Allocate1D<byte>(2 * row.Length);
        using var parameters = acc.Allocate1D<float>(2 * 2 * Heads);
        codes.MemSetToZero(); // device memory starts undefined; the first position must stay untouched
        parameters.MemSetToZero();
        store(Heads, x.View, codes.View, row.Length, parameters.View, 2 * Heads, HeadDim); // second position of the cache
        acc.Synchronize();
        var storedCodes = codes.GetAsArray1D();
        var storedParameters = parameters.GetAsArray1D();
        for (int h = 0; h < Heads; h++)
        {
            var head = row.AsSpan(h * HeadDim, HeadDim);
            var expected = KvCacheKernels.Int8RoundTrip(head);
            float min = float.MaxValue, max = float.MinValue;
            foreach (float v in head) { min = Math.Min(min, v); max = Math.Max(max, v); }
            float s = max > min ? (max - min) / 255f : 1f;
            Assert.Equal((s, min), (storedParameters[2 * Heads + 2 * h], storedParameters[2 * Heads + 2 * h + 1]));
            double step = (max - min) / 255.0;
            for (int i = 0; i < HeadDim; i++)
            {
                byte code = storedCodes[row.Length + h * HeadDim + i];
                // The code is the nearest step of the head's range above min (RNE of (x - min) / s, written out in float64 here).
                Assert.True(Math.Abs(code - (head[i] - (double)min) / s) <= 0.5 + 1e-4, $"head {h} [{i}]: code {code} for {head[i]}");
                float read = code * s + min; // the read path's expression, host float32
                Assert.Equal(expected[i], read);
                // Half a step, plus float32 rounding of the scale, the product and the add.
                Assert.True(Math.Abs(read - head[i]) <= step / 2 + 4e-7 * Math.Max(Math.Abs(min), Math.Abs(max)) + 1e-30, $"head {h} [{i}]: {read} vs {head[i]}");
            }
        }
        Assert.All(storedCodes.AsSpan(row.Length + 2 * HeadDim, HeadDim).ToArray(), q => Assert.Equal(0, q)); // equal values: q = 0, s = 1, zp = 0.75
        Assert.Equal((1f, 0.75f), (storedParameters[2 * Heads + 4], storedParameters[2 * Heads + 5]));
        Assert.All(storedCodes.AsSpan(0, row.Length).ToArray(), q => Assert.Equal(0, q));
        Assert.All(storedParameters.AsSpan(0, 2 * Heads).ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void Fp8StoreWritesVllmsScaledE4M3CodesReadThroughHalf()
    {
        var acc = fixture.Accelerator;
        var scaleKernel = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, float>(KvCacheKernels.Fp8Scale);
        var store = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<byte>, int, ArrayView<float>, int, ArrayView<float>>(KvCacheKernels.Fp8Store);
        var first = Row(2);
        var later = Array.ConvertAll(Row(3), v => v * 4f); // beyond the first token's range: saturates at 448 * scale
        using var table = acc.Allocate1D(E4M3.CopyDecodeTable());
        using var scales = acc.Allocate1D<float>(2);
        using var x0 = acc.Allocate1D(first);
        using var x1 = acc.Allocate1D(later);
        using var codes = acc.Allocate1D<byte>(2 * first.Length);
        scaleKernel(1, x0.View, scales.View, 1, first.Length, 200f);
        store(first.Length, x0.View, codes.View, 0, scales.View, 1, table.View);
        store(first.Length, x1.View, codes.View, first.Length, scales.View, 1, table.View);
        acc.Synchronize();
        var stored = codes.GetAsArray1D();
        float amax = first.Max(Math.Abs);
        float scale = amax / 200f;
        Assert.Equal(scale, scales.GetAsArray1D()[1]);
        int saturated = 0;
        for (int t = 0; t < 2; t++)
            for (int i = 0; i < first.Length; i++)
            {
                float v = (t == 0 ? first : later)[i];
                byte code = stored[t * first.Length + i];
                Assert.Equal(E4M3.Encode(v / scale), code); // the Core codec (big-rational tested) on the same quotient
                if ((code & 0x7F) == E4M3.MaxCode) saturated++;
                float read = (float)(System.Half)(E4M3.Decode(code) * scale); // vLLM's read: through half
                if (t == 0) // in range: E4M3's relative step 2^-3 (half of it for RNE), then half's 2^-11, or the subnormal floor
                    Assert.True(Math.Abs(read - v) <= Math.Abs(v) * (1.0 / 16 + 1.0 / 2048) + Math.ScaleB(1, -10) * scale, $"[{i}] {read} vs {v}");
            }
        Assert.True(saturated > 0, "the later row should reach E4M3's saturation");
    }

    [Fact]
    public void SpecKvCacheIsCheckedAgainstTheBackend()
    {
        string dir = TestData.TempDir("kv-spec");
        string Write(string backend, string kv)
        {
            string path = Path.Combine(dir, backend + kv + ".json");
            File.WriteAllText(path, $$"""{"name":"kv","model":"m","prompts":[{"name":"p","ids":[1]}],"new_tokens":1,"backends":[{"name":"{{backend}}","kv_cache":"{{kv}}"}]}""");
            return path;
        }
        var ok = ExperimentSpec.Load(Write("ilgpu-fp16", "fp8-e4m3")).ResolveBackends(BackendCatalog.Find, BackendCatalog.All.Select(p => p.Name));
        Assert.Equal(("ilgpu-fp16", "fp16", "fp8-e4m3"), (ok[0].Provider.Name, ok[0].Scheme, ok[0].KvCache));
        var native = Assert.Throws<ExperimentSpecException>(() => ExperimentSpec.Load(Write("oracle", "int8")).ResolveBackends(BackendCatalog.Find, BackendCatalog.All.Select(p => p.Name)));
        Assert.Contains("backend 'oracle' has no kv_cache 'int8'", native.Message);
        var unknown = Assert.Throws<ExperimentSpecException>(() => ExperimentSpec.Load(Write("ilgpu-int4", "q4")).ResolveBackends(BackendCatalog.Find, BackendCatalog.All.Select(p => p.Name)));
        Assert.Contains("its formats: float32, fp8-e4m3, int8", unknown.Message);
        Assert.Equal("fp16+kv-fp8-e4m3", ResultTables.SchemeKey(new ResultRecord { Scheme = "fp16", KvCache = "fp8-e4m3" }));
        Assert.Equal("fp16", ResultTables.SchemeKey(new ResultRecord { Scheme = "fp16", KvCache = "float32" }));
        Assert.Equal("exact", ResultTables.SchemeKey(new ResultRecord { Scheme = "exact", KvCache = "native" }));
        using var checkpoint = GpuIntLab.Core.Models.LlamaCheckpoint.Open(TestData.ConformanceBf16);
        var direct = Assert.Throws<ArgumentException>(() => new IlgpuFp16Provider().Create(checkpoint, new EngineOptions("fp16", "cpu", KvCache: "q4")));
        Assert.Contains("unknown kv_cache 'q4'", direct.Message);
    }
}
