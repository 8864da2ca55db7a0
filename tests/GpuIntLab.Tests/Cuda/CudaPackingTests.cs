using System.Runtime.InteropServices;
using GpuIntLab.Backends.Cuda;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;
using Xunit;

namespace GpuIntLab.Tests.Cuda;

/// <summary>The bytes the CUDA backend uploads equal the Quantizer's codes/scales in the kernels' layout.</summary>
public class CudaPackingTests
{
    private static float[] Weights(int n, int seed)
    {
        var r = new Random(seed); var w = new float[n];
        for (int i = 0; i < n; i++) w[i] = (float)((r.NextDouble() * 2 - 1) * (i % 17 == 0 ? 3 : 0.1));
        return w;
    }

    [Fact]
    public void Fp16_IsRowMajorLittleEndianHalfBits()
    {
        var w = Weights(7 * 12, 1);
        var p = CudaPacking.PackFp16(w, 7, 12);
        Assert.Equal(7 * 12 * 2, p.Weights.Length);
        for (int i = 0; i < w.Length; i++)
            Assert.Equal(Fp16.FromFloat(w[i]), (ushort)(p.Weights[2 * i] | (p.Weights[2 * i + 1] << 8)));
        Assert.Empty(p.Scales); Assert.Null(p.Smooth);
    }

    [Theory]
    [InlineData(QuantFormat.Int8, QuantScheme.PerTensor)]
    [InlineData(QuantFormat.Int8, QuantScheme.PerChannel)]
    [InlineData(QuantFormat.Int8, QuantScheme.SmoothQuant)]
    [InlineData(QuantFormat.E4M3, QuantScheme.PerTensor)]
    [InlineData(QuantFormat.E4M3, QuantScheme.PerChannel)]
    public void Quantized_UploadsTheQuantizersCodesAndScales(QuantFormat format, QuantScheme scheme)
    {
        int rows = 9, cols = 20;
        var w = Weights(rows * cols, 2);
        float[] absMax = scheme == QuantScheme.SmoothQuant ? Enumerable.Range(0, cols).Select(i => 0.5f + i).ToArray() : [];
        var q = Quantizer.Quantize(w, rows, cols, format, scheme, absMax);
        var p = CudaPacking.PackQuantized(q);
        Assert.Equal(q.Codes, p.Weights);
        Assert.Equal(q.WeightScales, p.Scales);
        Assert.Equal(scheme == QuantScheme.PerTensor ? 0 : 1, p.PerRow);
        Assert.Equal(scheme == QuantScheme.PerTensor ? 1 : rows, p.Scales.Length);
        // the kernels index W[row * K + col] and read sbyte (int8) / E4M3 codes at that offset
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                Assert.Equal(q.CodeValue(r, c), format == QuantFormat.Int8 ? (sbyte)p.Weights[r * cols + c] : E4M3.Decode(p.Weights[r * cols + c]));
        if (scheme == QuantScheme.SmoothQuant) Assert.Equal(q.SmoothFactors, p.Smooth);
        else Assert.Null(p.Smooth);
    }

    [Fact]
    public void Q48_IsLittleEndianInt64RowMajor()
    {
        long[] raws = [1, -1, long.MaxValue, long.MinValue, Q48.One, -Q48.One];
        var p = CudaPacking.PackQ48(raws, 2, 3);
        Assert.Equal(raws, MemoryMarshal.Cast<byte, long>(p.Weights).ToArray());
    }

    [Fact]
    public void Q48Tables_FollowTheKernelLayout()
    {
        var t = CudaPacking.Q48Tables();
        Assert.Equal(CudaPacking.Q48TableWords, t.Length);
        var pow2 = Q48Constants.Pow2Frac;
        for (int i = 0; i < 256; i++) Assert.Equal(pow2[i], new UInt128(t[2 * i + 1], t[2 * i]));
        // 1/k! in Q2.126 from an independent BigInteger division.
        for (int k = 0; k < 9; k++)
        {
            var f = System.Numerics.BigInteger.One;
            for (int j = 2; j <= k; j++) f *= j;
            var expected = System.Numerics.BigInteger.Divide((System.Numerics.BigInteger.One << 127) + f, 2 * f);
            Assert.Equal((UInt128)expected, new UInt128(t[512 + 2 * k + 1], t[512 + 2 * k]));
        }
    }
}
