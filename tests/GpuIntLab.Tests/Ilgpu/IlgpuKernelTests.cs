using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;
using ILGPU;
using ILGPU.Runtime;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Ilgpu;

/// <summary>One ILGPU CPU accelerator shared by the kernel tests.</summary>
public sealed class IlgpuCpuFixture : IDisposable
{
    public IlgpuDevice Device { get; } = IlgpuDevice.Create("cpu");
    public Accelerator Accelerator => Device.Accelerator;
    public void Dispose() => Device.Dispose();
}

/// <summary>
/// Kernel-level checks on the ILGPU CPU accelerator: the integer emulations of half and E4M3 rounding
/// equal the host codecs bit for bit, and each format's matvec is within its stated bound of a float64
/// reference (the Q16.48 matvec bit-exact).
/// </summary>
public class IlgpuKernelTests(IlgpuCpuFixture fixture, ITestOutputHelper output) : IClassFixture<IlgpuCpuFixture>
{
    private Accelerator Acc => fixture.Accelerator;

    /// <summary>Float bit patterns: a stride over all 2^32 plus every midpoint/neighbour of the target format's values.</summary>
    private static IEnumerable<float> Samples(Func<float, IEnumerable<float>> around, IEnumerable<float> grid)
    {
        for (long b = 0; b < 1L << 32; b += 4099) yield return BitConverter.UInt32BitsToSingle((uint)b);
        foreach (var g in grid)
            foreach (var f in around(g)) { yield return f; yield return -f; }
    }

    private static IEnumerable<float> Neighbours(float f)
    {
        yield return f;
        yield return MathF.BitIncrement(f);
        yield return MathF.BitDecrement(f);
    }

    [Fact]
    public void HalfRoundingMatchesHostCodecBitForBit()
    {
        // every midpoint between consecutive finite halves, and its float neighbours
        var midpoints = new List<float>();
        for (int h = 0; h < 0x7C00; h++)
            midpoints.Add((float)((Fp16.ToDouble((ushort)h) + Fp16.ToDouble((ushort)(h + 1))) / 2));
        var inputs = Samples(Neighbours, midpoints).Where(f => !float.IsNaN(f)).ToArray();
        int bad = 0;
        foreach (var f in inputs) if (DeviceMath.FloatToHalf(f) != Fp16.FromFloat(f)) bad++;
        Assert.Equal(0, bad);

        // the same through a kernel on the CPU accelerator, and the exact decode back
        var kernel = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<ushort>>(Fp16Kernels.ToHalf);
        using var x = Acc.Allocate1D(inputs);
        using var h16 = Acc.Allocate1D<ushort>(inputs.Length);
        kernel(inputs.Length, x.View, h16.View);
        var got = h16.GetAsArray1D();
        for (int i = 0; i < inputs.Length; i++) Assert.Equal(Fp16.FromFloat(inputs[i]), got[i]);
        for (int h = 0; h < 65536; h++)
        {
            float expect = Fp16.ToFloat((ushort)h), actual = DeviceMath.HalfToFloat((ushort)h);
            Assert.True(float.IsNaN(expect) ? float.IsNaN(actual) : BitConverter.SingleToUInt32Bits(expect) == BitConverter.SingleToUInt32Bits(actual), $"half 0x{h:X4}");
        }
        output.WriteLine($"{inputs.Length} floats rounded to half: all equal to System.Half's RNE; all 65536 decodes exact");
    }

    [Fact]
    public void E4M3RoundingMatchesHostCodecBitForBit()
    {
        var midpoints = new List<float>();
        for (int c = 0; c < 0x7E; c++) midpoints.Add((float)((E4M3.Decode((byte)c) + (double)E4M3.Decode((byte)(c + 1))) / 2));
        midpoints.AddRange([448f, 464f, 480f, 1e6f, float.PositiveInfinity, MathF.ScaleB(1, -10), MathF.ScaleB(1, -11), 0f]);
        var inputs = Samples(Neighbours, midpoints).Where(f => !float.IsNaN(f)).ToArray();
        int bad = 0;
        foreach (var f in inputs) if (DeviceMath.FloatToE4M3(f) != E4M3.Encode(f)) bad++;
        Assert.Equal(0, bad);
        Assert.Equal(E4M3.NaNCode, DeviceMath.FloatToE4M3(float.NaN));
        output.WriteLine($"{inputs.Length} floats encoded to E4M3: all equal to E4M3.Encode");
    }

    [Fact]
    public void DeviceExpAndRsqrtAreWithinAFewUlp()
    {
        double worstExp = 0, worstRsqrt = 0;
        for (float x = -87f; x <= 88f; x += 0.0137f)
        {
            double e = Math.Exp(x), got = DeviceMath.Exp(x);
            worstExp = Math.Max(worstExp, Math.Abs(got - e) / e);
        }
        for (float v = 1e-6f; v < 1e6f; v *= 1.0007f)
        {
            double r = 1 / Math.Sqrt(v), got = DeviceMath.Rsqrt(v);
            worstRsqrt = Math.Max(worstRsqrt, Math.Abs(got - r) / r);
        }
        output.WriteLine($"exp max rel error {worstExp:E2} ({worstExp / Math.ScaleB(1, -24):F2} x 2^-24); rsqrt {worstRsqrt:E2} ({worstRsqrt / Math.ScaleB(1, -24):F2} x 2^-24)");
        Assert.True(worstExp < 4 * Math.ScaleB(1, -24), $"exp {worstExp}");
        Assert.True(worstRsqrt < 2 * Math.ScaleB(1, -24), $"rsqrt {worstRsqrt}");
    }

    private static float[] RandomVector(Random rng, int n, float scale = 1f)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++) v[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return v;
    }

    private float[] Run(IDeviceLinear linear, float[] x)
    {
        using var xd = Acc.Allocate1D(x);
        using var yd = Acc.Allocate1D<float>(linear.Rows);
        linear.Apply(xd.View, yd.View);
        return yd.GetAsArray1D();
    }

    private const int Rows = 48, Cols = 203; // Cols not a multiple of 4: exercises the int8 padding

    /// <summary>
    /// FP16 vs float64 W x: the bound is the half rounding of both inputs (relative 2^-11 each) plus
    /// float32 sequential accumulation (Cols * 2^-24 of the sum of |terms|).
    /// </summary>
    [Fact]
    public void Fp16MatVecWithinHalfRoundingAndFloat32AccumulationBound()
    {
        var rng = new Random(11);
        var w = RandomVector(rng, Rows * Cols, 0.1f);
        var x = RandomVector(rng, Cols, 3f);
        using var format = new Fp16Format(Acc, Cols);
        using var linear = format.Create(w, Rows, Cols);
        var y = Run(linear, x);
        double u = Math.ScaleB(1, -11), gamma = Cols * Math.ScaleB(1, -24);
        double worst = 0, worstAcc = 0;
        for (int r = 0; r < Rows; r++)
        {
            double exact = 0, abs = 0, rounded = 0, absRounded = 0;
            for (int j = 0; j < Cols; j++)
            {
                exact += (double)w[r * Cols + j] * x[j]; abs += Math.Abs((double)w[r * Cols + j] * x[j]);
                double t = (double)Fp16.RoundToHalf(w[r * Cols + j]) * Fp16.RoundToHalf(x[j]);
                rounded += t; absRounded += Math.Abs(t);
            }
            double bound = (2 * u + u * u) * abs + gamma * absRounded;
            Assert.True(Math.Abs(y[r] - exact) <= bound, $"row {r}: {y[r]} vs {exact}, bound {bound}");
            Assert.True(Math.Abs(y[r] - rounded) <= gamma * absRounded, $"row {r}: accumulation error above Cols * 2^-24");
            worst = Math.Max(worst, Math.Abs(y[r] - exact) / abs);
            worstAcc = Math.Max(worstAcc, Math.Abs(y[r] - rounded) / absRounded);
        }
        output.WriteLine($"fp16 matvec [{Rows}x{Cols}]: max |y - Wx| / sum|w x| = {worst:E2} (bound {2 * u + u * u + gamma:E2}); float32 accumulation alone {worstAcc:E2} (bound {gamma:E2})");
    }

    [Theory]
    [InlineData(QuantScheme.PerTensor)]
    [InlineData(QuantScheme.PerChannel)]
    [InlineData(QuantScheme.SmoothQuant)]
    public void Int8MatVecEqualsReferenceWithinFloat32Rounding(QuantScheme scheme)
    {
        var rng = new Random(12 + (int)scheme);
        var w = RandomVector(rng, Rows * Cols, 0.1f);
        var x = RandomVector(rng, Cols, 3f);
        x[5] = 40f; // an activation outlier channel
        float[] absMax = scheme == QuantScheme.SmoothQuant ? x.Select(Math.Abs).ToArray() : [];
        var m = Quantizer.Quantize(w, Rows, Cols, QuantFormat.Int8, scheme, absMax);
        using var format = new Int8Format(Acc, Cols);
        using var linear = format.Create(m);
        var y = Run(linear, x);
        var reference = new double[Rows];
        Quantizer.ReferenceMatVec(m, x, reference);
        double worst = 0;
        for (int r = 0; r < Rows; r++)
        {
            double err = Math.Abs(y[r] - reference[r]);
            Assert.True(err <= Math.ScaleB(1, -24) * Math.Abs(reference[r]) * (1 + 1e-9), $"row {r}: {y[r]} vs {reference[r]}");
            worst = Math.Max(worst, err / Math.Abs(reference[r]));
        }
        output.WriteLine($"int8 {scheme} matvec vs Quantizer.ReferenceMatVec: max rel error {worst:E2} (bound 2^-24 = {Math.ScaleB(1, -24):E2}: one rounding to float32); dot: {format.DotProduct}");
    }

    /// <summary>
    /// The tensor-core kernel's layout (one warp per 16 rows, two rows written per lane group) on the CPU
    /// accelerator, where its scalar branch runs: bit-identical to the one-thread-per-row kernel, with rows not a
    /// multiple of 16 and words not a multiple of 8. (The mma.sync branch itself needs a GPU; on CUDA the engine
    /// self-tests it against the exact result before using it.)
    /// </summary>
    [Fact]
    public void Int8TensorCoreKernelLayoutEqualsTheScalarKernel()
    {
        const int rows = 45, cols = 203;
        var rng = new Random(13);
        var m = Quantizer.Quantize(RandomVector(rng, rows * cols, 0.1f), rows, cols, QuantFormat.Int8, QuantScheme.PerChannel);
        var x = RandomVector(rng, cols, 2f);
        var qa = new sbyte[cols];
        float sa = Quantizer.QuantizeActivationsInt8(x, qa);
        int words = (cols + 3) / 4;
        var packedA = new int[words];
        for (int c = 0; c < cols; c++) packedA[c / 4] |= (qa[c] & 0xFF) << (8 * (c % 4));
        using var wd = Acc.Allocate1D(Int8Format.Pack(m));
        using var ad = Acc.Allocate1D(packedA);
        using var swd = Acc.Allocate1D(m.WeightScales);
        using var sad = Acc.Allocate1D(new[] { sa });
        using var y1 = Acc.Allocate1D<float>(rows);
        using var y2 = Acc.Allocate1D<float>(rows);
        var scalar = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int, int>(Int8Kernels.MatVec);
        var mma = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int, int>(Int8Kernels.MatVecMma);
        scalar(rows, wd.View, ad.View, swd.View, 1, sad.View, y1.View, rows, words);
        mma((rows + 15) / 16 * 32, wd.View, ad.View, swd.View, 1, sad.View, y2.View, rows, words);
        Assert.Equal(y1.GetAsArray1D(), y2.GetAsArray1D());
        var plain = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int, int>(Int8Kernels.MatVecScalar);
        plain(rows, wd.View, ad.View, swd.View, 1, sad.View, y2.View, rows, words);
        Assert.Equal(y1.GetAsArray1D(), y2.GetAsArray1D());
    }

    [Theory]
    [InlineData(QuantScheme.PerTensor)]
    [InlineData(QuantScheme.PerChannel)]
    public void Fp8MatVecEqualsReferenceWithinFloat32AccumulationBound(QuantScheme scheme)
    {
        var rng = new Random(21 + (int)scheme);
        var w = RandomVector(rng, Rows * Cols, 0.1f);
        var x = RandomVector(rng, Cols, 3f);
        var m = Quantizer.Quantize(w, Rows, Cols, QuantFormat.E4M3, scheme);
        using var format = new Fp8Format(Acc, Cols);
        using var linear = format.Create(m);
        var y = Run(linear, x);
        var reference = new double[Rows];
        Quantizer.ReferenceMatVec(m, x, reference);
        var qa = new byte[Cols];
        double sa = Quantizer.QuantizeActivationsE4M3(x, qa);
        double worst = 0;
        for (int r = 0; r < Rows; r++)
        {
            double abs = 0;
            for (int j = 0; j < Cols; j++) abs += Math.Abs(m.CodeValue(r, j) * E4M3.Decode(qa[j]));
            abs *= m.ScaleOfRow(r) * sa;
            double bound = Cols * Math.ScaleB(1, -24) * abs + Math.ScaleB(1, -24) * Math.Abs(reference[r]);
            double err = Math.Abs(y[r] - reference[r]);
            Assert.True(err <= bound, $"row {r}: {y[r]} vs {reference[r]}, bound {bound}");
            worst = Math.Max(worst, err / abs);
        }
        output.WriteLine($"fp8 {scheme} matvec vs Quantizer.ReferenceMatVec: max |err| / sum|terms| = {worst:E2} (bound (Cols+1) * 2^-24 = {(Cols + 1) * Math.ScaleB(1, -24):E2})");
    }

    [Fact]
    public void Int64MatVecIsBitExact()
    {
        var rng = new Random(31);
        int rows = 37, cols = 101;
        var w = new long[rows * cols];
        var x = new long[cols];
        for (int i = 0; i < w.Length; i++) w[i] = rng.NextInt64(-(1L << 52), 1L << 52);
        for (int i = 0; i < x.Length; i++) x[i] = rng.NextInt64(-(1L << 52), 1L << 52);
        w[0] = long.MinValue + 1; x[0] = -(1L << 8); // extreme magnitudes and signs in row 0
        var kernel = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, ArrayView<int>, int, int>(Int64Kernels.MatVec);
        using var wd = Acc.Allocate1D(Layout.Transpose(w, rows, cols));
        using var xd = Acc.Allocate1D(x);
        using var yd = Acc.Allocate1D<long>(rows);
        using var err = Acc.Allocate1D<int>(1);
        err.MemSetToZero();
        kernel(rows, wd.View, xd.View, yd.View, err.View, rows, cols);
        var y = yd.GetAsArray1D();
        Assert.Equal(0, err.GetAsArray1D()[0]);
        for (int r = 0; r < rows; r++)
        {
            Int128 sum = 0;
            for (int j = 0; j < cols; j++) sum += (Int128)w[r * cols + j] * x[j];
            Assert.Equal(Q48.RoundShift(sum, 48), y[r]);
        }
        // products, rounding ties and overflow detection, scalar
        long[] edge = [0, 1, -1, long.MaxValue, long.MinValue, 1L << 47, -(1L << 47), 3L << 47, (1L << 48) + 1, -(5L << 46), 0x7FFF_FFFF_FFFFL, unchecked((long)0x8000_0000_0000_0001UL)];
        foreach (var a in edge)
            foreach (var b in edge)
            {
                long hi = DeviceMath.MulFull(a, b, out ulong lo);
                Assert.Equal((Int128)a * b, new Int128((ulong)hi, lo));
                bool ok = DeviceMath.Mul(a, b, out long p);
                Int128 exact = (Int128)a * b;
                Int128 q = exact >> 48;
                bool fits = q >= long.MinValue && q < long.MaxValue;
                if (fits) { Assert.True(ok); Assert.Equal(Q48.Mul(a, b), p); }
                bool ok2 = DeviceMath.RoundShift48((long)(exact >> 64), (ulong)exact, out long rs);
                if (ok2) Assert.Equal(Q48.RoundShift(exact, 48), rs);
                else Assert.Throws<Q48OverflowException>(() => Q48.RoundShift(exact, 48));
            }
        output.WriteLine($"int64 matvec [{rows}x{cols}] bit-exact vs Int128 + Q48.RoundShift; {edge.Length * edge.Length} edge products exact");
    }

    /// <summary>Out-of-range Q16.48 results are flagged (the engine then throws Q48OverflowException, as the oracle does), never wrapped silently.</summary>
    [Fact]
    public void Int64OverflowIsFlagged()
    {
        var matVec = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<long>, ArrayView<int>, int, int>(Int64Kernels.MatVec);
        var residual = Acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<long>, ArrayView<long>, ArrayView<int>>(Int64Kernels.Residual);
        using var err = Acc.Allocate1D<int>(1);
        using var big = Acc.Allocate1D(new[] { long.MaxValue, long.MaxValue });
        using var y = Acc.Allocate1D<long>(2);
        err.MemSetToZero();
        matVec(1, big.View.SubView(0, 2), big.View, y.View.SubView(0, 1), err.View, 1, 2); // (2^63)^2 * 2 / 2^48 >> 2^63
        Assert.Equal(Int64Kernels.MatVecOverflow, err.GetAsArray1D()[0]);
        err.MemSetToZero();
        residual(2, big.View, big.View, err.View);
        Assert.Equal(Int64Kernels.ResidualOverflow, err.GetAsArray1D()[0]);
        err.MemSetToZero();
        using var small = Acc.Allocate1D(new[] { 1L << 48, -(3L << 47) });
        residual(2, small.View, small.View, err.View);
        Assert.Equal(0, err.GetAsArray1D()[0]);
        Assert.Equal(new[] { 2L << 48, -(3L << 48) }, small.GetAsArray1D());
    }

    /// <summary>Schemes differ where they should: an outlier output channel hurts per-tensor scales, an outlier input channel is what SmoothQuant is for.</summary>
    [Fact]
    public void PerChannelBeatsPerTensorOnAnOutlierRowAndSmoothQuantOnAnOutlierActivation()
    {
        var rng = new Random(41);
        var w = RandomVector(rng, Rows * Cols, 0.05f);
        for (int j = 0; j < Cols; j++) w[j] *= 200f; // output channel 0 is an outlier
        var x = RandomVector(rng, Cols, 1f);
        double Error(QuantFormat f, QuantScheme s, float[] xs, float[] ws)
        {
            float[] absMax = s == QuantScheme.SmoothQuant ? xs.Select(Math.Abs).ToArray() : [];
            var m = Quantizer.Quantize(ws, Rows, Cols, f, s, absMax);
            IDeviceLinear linear;
            IDisposable format;
            if (f == QuantFormat.Int8) { var fi = new Int8Format(Acc, Cols); format = fi; linear = fi.Create(m); }
            else { var f8 = new Fp8Format(Acc, Cols); format = f8; linear = f8.Create(m); }
            using (format) using (linear)
            {
                var y = Run(linear, xs);
                double e = 0;
                for (int r = 1; r < Rows; r++) // the ordinary rows
                {
                    double exact = 0;
                    for (int j = 0; j < Cols; j++) exact += (double)ws[r * Cols + j] * xs[j];
                    e += (y[r] - exact) * (y[r] - exact);
                }
                return Math.Sqrt(e / (Rows - 1));
            }
        }
        double i8t = Error(QuantFormat.Int8, QuantScheme.PerTensor, x, w), i8c = Error(QuantFormat.Int8, QuantScheme.PerChannel, x, w);
        double f8t = Error(QuantFormat.E4M3, QuantScheme.PerTensor, x, w), f8c = Error(QuantFormat.E4M3, QuantScheme.PerChannel, x, w);
        output.WriteLine($"outlier row: int8 rms error per-tensor {i8t:E3}, per-channel {i8c:E3}; fp8 per-tensor {f8t:E3}, per-channel {f8c:E3}");
        Assert.True(i8c < i8t / 4, "int8 per-channel should be far better than per-tensor with an outlier row");
        Assert.True(f8c <= f8t, "fp8 per-channel should not be worse than per-tensor");

        var w2 = RandomVector(rng, Rows * Cols, 0.05f);
        var x2 = RandomVector(rng, Cols, 1f);
        x2[7] = 60f; x2[100] = -45f; // outlier activation channels
        double pc = Error(QuantFormat.Int8, QuantScheme.PerChannel, x2, w2), sq = Error(QuantFormat.Int8, QuantScheme.SmoothQuant, x2, w2);
        output.WriteLine($"outlier activations: int8 rms error per-channel {pc:E3}, smoothquant {sq:E3}");
        Assert.True(sq < pc / 2, "smoothquant should beat per-channel with outlier activation channels");
    }
}
