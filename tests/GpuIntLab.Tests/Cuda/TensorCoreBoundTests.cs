using GpuIntLab.Backends.Cuda;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Cuda;

/// <summary>
/// The FP16 tensor-core GEMM check's bound (<see cref="CudaSelfCheck.TensorCoreRelL2Bound"/>) against a
/// simulation of the truncating accumulation it is derived from, on the check's shapes and data distribution
/// (W uniform in +-0.05, x uniform in +-1, both rounded to half): the bound must hold with a 2x margin for
/// 8-wide and 16-wide accumulation steps, so a correct kernel on real tensor cores passes it.
/// </summary>
public class TensorCoreBoundTests(ITestOutputHelper output)
{
    /// <summary>
    /// One output of a tensor-core dot product under the model: per step of <paramref name="width"/> products,
    /// every exact product and the running sum truncated toward zero to a multiple of 2^(e-23) where 2^e is
    /// the largest magnitude among them, added exactly, and the sum truncated toward zero to float32.
    /// </summary>
    private static double TruncatingDot(ReadOnlySpan<double> w, ReadOnlySpan<double> x, int width)
    {
        double acc = 0;
        for (int s = 0; s < w.Length; s += width)
        {
            int end = Math.Min(w.Length, s + width);
            double max = Math.Abs(acc);
            for (int i = s; i < end; i++) max = Math.Max(max, Math.Abs(w[i] * x[i]));
            if (max == 0) continue;
            double quantum = Math.ScaleB(1.0, Math.ILogB(max) - 23);
            double sum = Math.Truncate(acc / quantum) * quantum;   // exact: both are powers of two apart
            for (int i = s; i < end; i++) sum += Math.Truncate(w[i] * x[i] / quantum) * quantum;
            float rounded = (float)sum;
            if (Math.Abs((double)rounded) > Math.Abs(sum)) rounded = sum > 0 ? MathF.BitDecrement(rounded) : MathF.BitIncrement(rounded);
            acc = rounded;
        }
        return acc;
    }

    [Theory]
    [InlineData(96, 64)]
    [InlineData(173, 172)]
    [InlineData(512, 2048)]
    [InlineData(512, 5632)]
    public void TheModelsErrorStaysWithinHalfTheBound(int rows, int k)
    {
        var rng = new Random(1234 + k);
        double[] Halves(int n, double scale) => Enumerable.Range(0, n).Select(_ => (double)(float)(Half)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
        var w = Halves(rows * k, 0.05);
        var x = Halves(k, 1.0);
        double bound = CudaSelfCheck.TensorCoreRelL2Bound(k, CudaSelfCheck.HmmaAccumulatorBits);
        foreach (int width in new[] { 8, 16 })
        {
            double num = 0, den = 0;
            for (int r = 0; r < rows; r++)
            {
                var row = w.AsSpan(r * k, k);
                double exact = 0;
                for (int i = 0; i < k; i++) exact += row[i] * x[i];   // float64: exact enough (error ~1e-16 relative)
                double got = TruncatingDot(row, x, width);
                num += (got - exact) * (got - exact); den += exact * exact;
            }
            double rel = Math.Sqrt(num / den);
            output.WriteLine($"K={k} width {width}: model rel L2 {rel:G3}, bound {bound:G3}");
            Assert.True(rel > 0, "the model must lose something (else it models nothing)");
            Assert.True(rel <= bound / 2, $"K={k} width {width}: model rel L2 {rel:G3} > half the bound {bound:G3}");
        }
    }

    [Fact]
    public void TheBound_IsTheStatedFormula()
    {
        // 2^-23 (ceil(5632/8) + sqrt(5632)) = (704 + 75.05) / 8388608 = 9.287e-5; K = 64: (8 + 8) / 2^23 = 1.907e-6.
        Assert.Equal(9.287e-5, CudaSelfCheck.TensorCoreRelL2Bound(5632, 23), 8);
        Assert.Equal(16.0 / 8388608, CudaSelfCheck.TensorCoreRelL2Bound(64, 23), 15);
    }
}
