using GpuIntLab.Backends.Cuda;
using GpuIntLab.Core.Formats.LowBit;
using GpuIntLab.Core.Formats.WeightOnly;
using GpuIntLab.Core.Models;
using Xunit;

namespace GpuIntLab.Tests.Cuda;

/// <summary>
/// Host-side packing of the issue-15 formats into kernels/block.cu's layouts (no GPU): the bytes uploaded decode,
/// by the kernels' rule, to exactly the Core codecs' dequantized values; the layouts' sizes by hand.
/// </summary>
public class CudaBlockPackingTests
{
    private static float[] Random(int n, int seed, double scale = 0.05)
    {
        var r = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)((r.NextDouble() * 2 - 1) * scale * (r.Next(50) == 0 ? 20 : 1));
        return a;
    }

    [Fact]
    public void Nibbles_ArePackedLowFirst_RowByRow()
    {
        byte[] codes = [1, 2, 3, 15, 0, 7];
        Assert.Equal(new byte[] { 0x21, 0x03, 0x0F, 0x07 }, CudaBlockPacking.PackNibbles(codes, 2, 3)); // 3 columns: 2 bytes per row
        Assert.Equal(7, CudaBlockPacking.Nibble([0x21, 0x03, 0x0F, 0x07], 2, 1, 2));
        var e = Assert.Throws<ArgumentException>(() => CudaBlockPacking.PackNibbles([16], 1, 1));
        Assert.Contains("code [0, 0] = 16 does not fit 4 bits", e.Message);
    }

    [Theory]
    [InlineData(false, Int4GridRule.Gptq)]
    [InlineData(true, Int4GridRule.Gptq)]
    [InlineData(false, Int4GridRule.Awq)]
    [InlineData(true, Int4GridRule.Awq)]
    public void Int4_PackedCodesAndScales_DecodeToTheCodecsValues(bool symmetric, Int4GridRule grid)
    {
        const int rows = 7, cols = 301; // 3 groups of 128, the last one short; odd columns: a half-used byte per row
        var w = Random(rows * cols, 3);
        var m = Int4Rtn.Quantize(Array.ConvertAll(w, v => (double)v), rows, cols, 128, symmetric, grid);
        var p = CudaBlockPacking.PackInt4(m);
        Assert.Equal(rows * 151, p.Codes.Length);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                Assert.Equal(m.Codes[r * cols + c], CudaBlockPacking.Nibble(p.Codes, p.RowBytes, r, c));
                // DequantizeStored is exact in float64; the kernel's float32 product is its rounding.
                Assert.Equal((float)m.DequantizeStored(r, c), CudaBlockPacking.DequantizeStored(p, r, c));
            }
    }

    [Fact]
    public void Int4_Fp16Scales_StayWithinHalfsRelativeRounding()
    {
        const int rows = 5, cols = 256;
        var m = Int4Rtn.Quantize(Array.ConvertAll(Random(rows * cols, 4), v => (double)v), rows, cols);
        var p = CudaBlockPacking.PackInt4(m, fp16Scales: true);
        Assert.Null(p.Scales32);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                double exact = m.DequantizeStored(r, c);
                Assert.True(Math.Abs(CudaBlockPacking.DequantizeStored(p, r, c) - exact) <= Math.Abs(exact) * Math.ScaleB(1, -11) * 1.0001, $"[{r}, {c}]");
            }
    }

    [Fact]
    public void Int4_ActOrder_IsRefused_AndTheDeviceBytesAreHalfAByteAWeightPlusGroups()
    {
        var m = Int4Rtn.Quantize(Array.ConvertAll(Random(4 * 256, 5), v => (double)v), 4, 256);
        var permuted = m with { GroupOfColumn = Enumerable.Range(0, 256).Select(c => (255 - c) / 128).ToArray() };
        Assert.Contains("act-order", Assert.Throws<ArgumentException>(() => CudaBlockPacking.PackInt4(permuted)).Message);
        // 2048 x 2048, group 128: 2048 * 1024 code bytes + 2048 * 16 float scales + 2048 * 16 zero bytes.
        var big = new PackedInt4(2048, 2048, 128, new byte[2048 * 1024], new float[2048 * 16], null, new byte[2048 * 16], null);
        Assert.Equal(2_097_152 + 131_072 + 32_768, big.DeviceBytes);
    }

    public static IEnumerable<object[]> MxCases() =>
        MxFormat.All.SelectMany(f => new[] { MxScaleRule.OcpFloor, MxScaleRule.Rceil }.Select(r => new object[] { f.Name, r }));

    [Theory]
    [MemberData(nameof(MxCases))]
    public void Mx_PackedCodesAndScales_DecodeToMxCodecsValues(string formatName, MxScaleRule rule)
    {
        var format = MxFormat.All.Single(f => f.Name == formatName);
        const int rows = 6, cols = 101;
        var w = Random(rows * cols, 6, 3.0);
        w[5] = 0; w[40] = 1e-30f; // a zero and a value under every element format's range
        var p = CudaBlockPacking.PackMx(w, rows, cols, format, rule);
        bool fourBit = format.Element.BitWidth == 4;
        Assert.Equal(fourBit ? 4 : 8, p.CodeBits);
        Assert.Equal(rows * (fourBit ? 51 : 101) + rows * 4, p.DeviceBytes); // 4 blocks of 32 per row
        for (int r = 0; r < rows; r++)
        {
            var want = new float[cols];
            MxCodec.Quantize(w.AsSpan(r * cols, cols), format, rule).Dequantize(want);
            for (int c = 0; c < cols; c++)
                Assert.Equal(BitConverter.SingleToUInt32Bits(want[c]), BitConverter.SingleToUInt32Bits(CudaBlockPacking.Dequantize(p, r, c)));
        }
    }

    [Fact]
    public void Nvfp4_PackedCodesAndScales_DecodeToNvfp4CodecsValues_WithTheTensorsGlobalScale()
    {
        const int rows = 5, cols = 70;
        var w = Random(rows * cols, 7, 2.0);
        w[3 * cols + 9] = 40f; // the tensor's amax sits in row 3: every row shares its global scale
        var p = CudaBlockPacking.PackNvfp4(w, rows, cols);
        float global = 2688f / 40f;
        Assert.Equal(1f / global, p.GlobalDecode);
        Assert.Equal(rows * 35 + rows * 5, p.DeviceBytes); // two codes per byte, 5 blocks of 16 per row
        for (int r = 0; r < rows; r++)
        {
            var want = new float[cols];
            Nvfp4Codec.Quantize(w.AsSpan(r * cols, cols), global).Dequantize(want);
            for (int c = 0; c < cols; c++)
                Assert.Equal(BitConverter.SingleToUInt32Bits(want[c]), BitConverter.SingleToUInt32Bits(CudaBlockPacking.Dequantize(p, r, c)));
        }
    }

    [Fact]
    public void KvCacheLayouts_StoreOneBytePerValue_AndRefuseAnUnknownFormat()
    {
        // TinyLlama: 4 kv heads of 64 = kv_dim 256.
        var c = new LlamaConfig { HiddenSize = 2048, NumAttentionHeads = 32, NumKeyValueHeads = 4, IntermediateSize = 5632, NumHiddenLayers = 22, VocabSize = 32000, MaxPositionEmbeddings = 2048, RmsNormEps = 1e-5, RopeTheta = 10000, TieWordEmbeddings = false };
        Assert.Equal(1024, CudaKvCache.BytesPerPosition("float32", c));
        Assert.Equal(256, CudaKvCache.BytesPerPosition("fp8-e4m3", c));
        Assert.Equal(256 + 4 * 8, CudaKvCache.BytesPerPosition("int8", c));
        var e = Assert.Throws<ArgumentException>(() => CudaKvCache.AttentionKernel("fp4", "cuda-bf16"));
        Assert.Equal("cuda-bf16: unknown kv_cache 'fp4' (expected float32, fp8-e4m3, int8)", e.Message);
    }
}
