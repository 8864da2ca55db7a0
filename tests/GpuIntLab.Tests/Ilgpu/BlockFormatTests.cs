using GpuIntLab.Backends;
using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Formats.LowBit;
using GpuIntLab.Core.Formats.WeightOnly;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using GpuIntLab.Tests.Engines;
using ILGPU.Runtime;
using Xunit;

namespace GpuIntLab.Tests.Ilgpu;

/// <summary>
/// The issue-15 device linears (BF16, INT4 g128, MX, NVFP4) on the CPU accelerator against their CPU codecs: weights
/// dequantized by the codec's own float32 path, inputs quantized and dequantized by the codec, then a float32 loop
/// summing w * x over K in ascending order, the kernel's order: the outputs must be bit-identical.
/// Then every new scheme through the engine on the conformance model and on tiny-qwen2 with finite logits.
/// </summary>
public sealed class BlockFormatFixture : IDisposable
{
    public IlgpuDevice Device { get; } = IlgpuDevice.Create("cpu");
    public Accelerator Accelerator => Device.Accelerator;
    /// <summary>Compiled once for every test of the class (each BlockFormat compiles its kernels).</summary>
    public BlockFormat Blocks { get; }
    public BlockFormatFixture() => Blocks = new BlockFormat(Device.Accelerator, 256);
    public void Dispose() { Blocks.Dispose(); Device.Dispose(); }
}

public class BlockFormatTests(BlockFormatFixture fixture) : IClassFixture<BlockFormatFixture>
{
    private const int Rows = 37, Cols = 200; // 200 = partial last block for 16, 32 and 128

    /// <summary>Values over many binades (exponents -12..4), some exact zeros, signs mixed: exercises subnormal MX elements and tiny blocks.</summary>
    private static float[] Values(int n, int seed)
    {
        var rng = new Random(seed);
        var v = new float[n];
        for (int i = 0; i < n; i++)
            v[i] = rng.Next(17) == 0 ? 0f : (float)((rng.NextDouble() * 2 - 1) * Math.ScaleB(1, rng.Next(-12, 5)));
        return v;
    }

    private float[] Run(IDeviceLinear linear, float[] x)
    {
        var acc = fixture.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var yd = acc.Allocate1D<float>(linear.Rows);
        linear.Apply(xd.View, yd.View);
        acc.Synchronize();
        return yd.GetAsArray1D();
    }

    /// <summary>y[r] = sum_j w[r, j] * x[j] in float32, j ascending.</summary>
    private static float[] Float32MatVec(float[] w, float[] x, int rows, int cols)
    {
        var y = new float[rows];
        for (int r = 0; r < rows; r++)
        {
            float acc = 0f;
            for (int j = 0; j < cols; j++) acc += w[r * cols + j] * x[j];
            y[r] = acc;
        }
        return y;
    }

    private static void AssertBitEqual(float[] expected, float[] actual, string what)
    {
        for (int r = 0; r < expected.Length; r++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[r]) == BitConverter.SingleToInt32Bits(actual[r]) || expected[r] == actual[r],
                $"{what}: row {r}: device {actual[r]:R} vs codec reference {expected[r]:R}");
    }

    public static TheoryData<string, string, bool> MxCases()
    {
        var data = new TheoryData<string, string, bool>();
        foreach (var f in MxFormat.All)
            foreach (var rule in new[] { "ocp-floor", "rceil" })
                foreach (bool wa in new[] { false, true })
                    data.Add(f.Name, rule, wa);
        return data;
    }

    [Theory]
    [MemberData(nameof(MxCases))]
    public void MxLinearEqualsTheCodec(string formatName, string ruleName, bool quantizeInput)
    {
        var format = MxFormat.All.Single(f => f.Name == formatName);
        var rule = ruleName == "rceil" ? MxScaleRule.Rceil : MxScaleRule.OcpFloor;
        var w = Values(Rows * Cols, 1);
        var x = Values(Cols, 2);
        var blocks = fixture.Blocks;
        using var linear = blocks.Create(BlockWeights.FromMx(w, Rows, Cols, format, rule),
            quantizeInput ? new InputQuantizer.Mx(format, rule) : new InputQuantizer.Bf16());
        var wq = new float[Rows * Cols];
        for (int r = 0; r < Rows; r++)
            MxCodec.Quantize(w.AsSpan(r * Cols, Cols), format, rule).Dequantize(wq.AsSpan(r * Cols, Cols));
        var xq = new float[Cols];
        if (quantizeInput) MxCodec.Quantize(x, format, rule).Dequantize(xq);
        else for (int j = 0; j < Cols; j++) xq[j] = Bf16.RoundToBf16(x[j]);
        AssertBitEqual(Float32MatVec(wq, xq, Rows, Cols), Run(linear, x), $"{formatName}/{ruleName}/{(quantizeInput ? "w+a" : "weight-only")}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Nvfp4LinearEqualsTheCodec(bool quantizeInput)
    {
        var w = Values(Rows * Cols, 3);
        var x = Values(Cols, 4);
        var blocks = fixture.Blocks;
        using var linear = blocks.Create(BlockWeights.FromNvfp4(w, Rows, Cols), quantizeInput ? new InputQuantizer.Nvfp4() : new InputQuantizer.Bf16());
        float global = Nvfp4Codec.GlobalEncodeScale(Nvfp4Codec.Amax(w));
        var wq = new float[Rows * Cols];
        for (int r = 0; r < Rows; r++) Nvfp4Codec.Quantize(w.AsSpan(r * Cols, Cols), global).Dequantize(wq.AsSpan(r * Cols, Cols));
        var xq = new float[Cols];
        if (quantizeInput) Nvfp4Codec.Quantize(x, Nvfp4Codec.GlobalEncodeScale(Nvfp4Codec.Amax(x))).Dequantize(xq);
        else for (int j = 0; j < Cols; j++) xq[j] = Bf16.RoundToBf16(x[j]);
        AssertBitEqual(Float32MatVec(wq, xq, Rows, Cols), Run(linear, x), $"nvfp4/{(quantizeInput ? "w4a4" : "weight-only")}");
    }

    [Theory]
    [InlineData("rtn", false)]
    [InlineData("rtn", true)]
    [InlineData("gptq", false)]
    [InlineData("awq", false)]
    [InlineData("gptq-act", true)]
    public void Int4LinearEqualsTheCodec(string method, bool symmetric)
    {
        var w = Values(Rows * Cols, 5);
        var x = Values(Cols, 6);
        var wd = Array.ConvertAll(w, v => (double)v);
        int tokens = 64;
        var activations = new double[tokens * Cols];
        var rng = new Random(7);
        for (int i = 0; i < activations.Length; i++) activations[i] = (rng.NextDouble() * 2 - 1) * (1 + i % Cols % 5);
        var m = method switch
        {
            "rtn" => Int4Rtn.Quantize(wd, Rows, Cols, 128, symmetric),
            "gptq" => Gptq.Quantize(wd, Rows, Cols, activations, tokens, new GptqOptions(Symmetric: symmetric)).Matrix,
            "gptq-act" => Gptq.Quantize(wd, Rows, Cols, activations, tokens, new GptqOptions(Symmetric: symmetric, ActOrder: true)).Matrix,
            _ => Awq.Quantize([(wd, Rows)], Cols, activations, tokens, new AwqOptions(Symmetric: symmetric)).Matrices[0],
        };
        var blocks = fixture.Blocks;
        using var linear = blocks.Create(BlockWeights.FromInt4(m), new InputQuantizer.Fp16());
        // The stored weight scale * (code - zero) is exact in float64; float32 rounds it once, as the kernel's product does.
        var wq = new float[Rows * Cols];
        for (int r = 0; r < Rows; r++)
            for (int c = 0; c < Cols; c++) wq[r * Cols + c] = (float)m.DequantizeStored(r, c);
        var xq = new float[Cols];
        for (int j = 0; j < Cols; j++)
        {
            float v = m.ChannelScales is null ? x[j] : x[j] / m.ChannelScales[j];
            xq[j] = (float)(Half)v; // .NET's float -> Half conversion rounds to nearest even
        }
        AssertBitEqual(Float32MatVec(wq, xq, Rows, Cols), Run(linear, x), $"int4/{method}/{(symmetric ? "sym" : "asym")}");
        if (method == "awq") Assert.NotNull(m.ChannelScales);
        // act-order must actually permute the groups here, or the g_idx path of the kernel is not exercised.
        if (method == "gptq-act") Assert.NotNull(BlockWeights.FromInt4(m).GroupOfColumn);
    }

    [Fact]
    public void Bf16LinearEqualsRoundedWeightsAndInputs()
    {
        var w = Values(Rows * Cols, 8);
        var x = Values(Cols, 9);
        var blocks = fixture.Blocks;
        using var linear = blocks.CreateBf16(w, Rows, Cols);
        AssertBitEqual(Float32MatVec(Array.ConvertAll(w, Bf16.RoundToBf16), Array.ConvertAll(x, Bf16.RoundToBf16), Rows, Cols), Run(linear, x), "bf16");
    }

    /// <summary>
    /// Every scheme of the four new providers on the conformance model; on tiny-qwen2 (biases, another shape) the schemes
    /// whose code paths differ (each input quantizer, each INT4 quantizer), to keep the suite fast. The KV formats ride
    /// on two of them.
    /// </summary>
    public static TheoryData<string, string, bool, string> NewSchemes()
    {
        var qwen2 = new HashSet<string> { "bf16", "int4-g128-gptq-asym", "int4-g128-awq-sym", "mxfp6-e3m2-ocp-floor-w6a6", "mxfp4-rceil-weight-only", "nvfp4-w4a4" };
        var data = new TheoryData<string, string, bool, string>();
        foreach (var name in new[] { "ilgpu-bf16", "ilgpu-int4", "ilgpu-mx", "ilgpu-nvfp4" })
            foreach (var scheme in BackendCatalog.Find(name)!.Schemes)
                data.Add(name, scheme, qwen2.Contains(scheme), scheme switch { "bf16" => "fp8-e4m3", "nvfp4-w4a4" => "int8", _ => "float32" });
        return data;
    }

    [Theory]
    [MemberData(nameof(NewSchemes))]
    public void NewSchemesRunTheConformanceAndQwen2Models(string provider, string scheme, bool alsoQwen2, string kvCache)
    {
        using (var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16))
        {
            int[] prompt = DeterminismGate.Llama2Prompts[0];
            using var engine = BackendCatalog.Find(provider)!.Create(checkpoint, new EngineOptions(scheme, "cpu", Threads: 2, KvCache: kvCache));
            var logits = engine.Prefill(prompt);
            Assert.All(logits, v => Assert.True(double.IsFinite(v)));
            Assert.Equal(scheme, engine.Info.Scheme);
            Assert.StartsWith(kvCache, engine.Info.Precisions["kv cache"], StringComparison.Ordinal);
        }
        if (!alsoQwen2) return;
        var model = FamilyConformance.Model("tiny-qwen2");
        using (var checkpoint = LlamaCheckpoint.Open(model.Folder))
        {
            var c = model.Case("greedy-0");
            int[] prompt = c.InputIds.Take(c.PromptLength).ToArray();
            using var engine = BackendCatalog.Find(provider)!.Create(checkpoint, new EngineOptions(scheme, "cpu", Threads: 2, CalibrationPrompts: [prompt], KvCache: kvCache));
            var logits = engine.Prefill(prompt);
            Assert.All(logits, v => Assert.True(double.IsFinite(v)));
        }
    }
}
