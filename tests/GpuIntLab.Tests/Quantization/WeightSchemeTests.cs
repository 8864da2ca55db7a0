using GpuIntLab.Core.Formats;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Quantization;

/// <summary>Scheme identity and storage: byte counts checked against hand-computed TinyLlama-1.1B figures.</summary>
public class WeightSchemeTests(ITestOutputHelper output)
{
    // TinyLlama-1.1B: per layer q 2048², k and v 256x2048, o 2048², gate/up 5632x2048, down 2048x5632 = 44,040,192 weights;
    // x22 = 968,884,224 linear weights; embedding + lm_head 2 x 32000 x 2048 = 131,072,000; norms 45 x 2048 = 92,160.
    // Total 1,100,048,384 parameters (the published 1.1B count).
    private const long LinearWeights = 968_884_224, OtherParameters = 131_072_000 + 92_160;

    [Fact]
    public void Quantization_Schemes_TinyLlamaMemoryMatchesHandCounts()
    {
        var shape = LlamaShape.TinyLlama1B;
        var fp16 = WeightSchemeCatalog.Memory(shape, WeightSchemeCatalog.Get("fp16"));
        Assert.Equal(2 * (LinearWeights + OtherParameters), fp16.TotalBytes);
        Assert.Equal(16.0, fp16.LinearBitsPerWeight);
        // MXFP4: 4 bits + one byte per 32 -> 4.25 bits; every K (2048, 5632) is a multiple of 32.
        Assert.Equal(LinearWeights * 17 / 32, WeightSchemeCatalog.Memory(shape, WeightSchemeCatalog.Get("mxfp4-rceil")).LinearBytes);
        // NVFP4: 4 bits + one byte per 16 -> 4.5 bits, plus 4 bytes per tensor (7 per layer).
        Assert.Equal(LinearWeights * 9 / 16 + 22 * 7 * 4, WeightSchemeCatalog.Memory(shape, WeightSchemeCatalog.Get("nvfp4")).LinearBytes);
        // INT4 g128 asymmetric: 64 bytes of codes + 2 (fp16 scale) + 0.5 (packed zero) per 128 weights.
        Assert.Equal(LinearWeights / 128 * 133 / 2, WeightSchemeCatalog.Memory(shape, WeightSchemeCatalog.Get("int4-g128-gptq-asym")).LinearBytes);
        // MXFP6: 6.25 bits.
        Assert.Equal(LinearWeights * 25 / 32, WeightSchemeCatalog.Memory(shape, WeightSchemeCatalog.Get("mxfp6-e2m3-ocp-floor")).LinearBytes);
        // INT8 per channel: 1 byte + 4 bytes per output row (22 x (2048+256+256+2048+5632+5632+2048) rows).
        Assert.Equal(LinearWeights + 4L * 22 * 17920, WeightSchemeCatalog.Memory(shape, WeightSchemeCatalog.Get("int8-per-channel")).LinearBytes);
        Assert.Equal(2 * OtherParameters, WeightSchemeCatalog.Memory(shape, WeightSchemeCatalog.Get("mxfp4-rceil")).OtherBytes);
        Assert.Contains("nvfp4", Assert.Throws<ArgumentException>(() => WeightSchemeCatalog.Get("fp5")).Message);
        Assert.Equal(4.25, WeightSchemeCatalog.Get("mxfp4-ocp-floor").NominalBitsPerWeight);
        Assert.Equal(4.5, WeightSchemeCatalog.Get("nvfp4").NominalBitsPerWeight);
        Assert.Equal(4 + 20.0 / 128, WeightSchemeCatalog.Get("int4-g128-awq-asym").NominalBitsPerWeight);
        // The oracle's Q16.48: 8 bytes for every parameter, 1,100,048,384 x 8.
        Assert.Equal(8 * (LinearWeights + OtherParameters), WeightSchemeCatalog.Memory(shape, WeightSchemeCatalog.Get("q16.48")).TotalBytes);
        Assert.Equal(WeightSchemeCatalog.All.Count, WeightSchemeCatalog.All.Select(s => s.Name).Distinct().Count());
        output.WriteLine(WeightSchemeCatalog.MemoryTable(shape));
    }
}
