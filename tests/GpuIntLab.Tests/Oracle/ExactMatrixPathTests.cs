using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using Xunit;

namespace GpuIntLab.Tests.Oracle;

/// <summary>
/// The oracle's matrices through both paths on real checkpoints (the conformance model's bf16 and sharded f16 copies,
/// loaded through file reads): the block-exponent vector path and the scalar int64 x int64 -> int128 path give the same rounded outputs
/// for batches of tokens at 1 and 2 threads, and a shared pass with a row epilogue visits every row exactly once.
/// </summary>
public unsafe class ExactMatrixPathTests
{
    private static long[] RandomX(Random rng, int count) =>
        Enumerable.Range(0, count).Select(_ => rng.NextInt64(-(1L << 52), 1L << 52)).ToArray();

    [Theory]
    [InlineData("bf16")]
    [InlineData("f16-sharded")]
    public void VectorAndScalarPathsGiveTheSameBits(string copy)
    {
        using var checkpoint = LlamaCheckpoint.Open(copy == "bf16" ? TestData.ConformanceBf16 : TestData.ConformanceF16Sharded);
        var rng = new Random(21);
        foreach (var tensor in new[] { checkpoint.Layer(0, LayerWeight.Q), checkpoint.Layer(0, LayerWeight.K), checkpoint.Layer(1, LayerWeight.Gate),
                                       checkpoint.Layer(1, LayerWeight.Down), checkpoint.LmHead })
        {
            var vector = ExactMatrix.Load(checkpoint, tensor);
            var scalar = ExactMatrix.Load(checkpoint, tensor, vectorPath: false);
            Assert.Null(scalar.VectorLayout);
            if (!System.Runtime.Intrinsics.X86.Avx2.IsSupported) continue; // nothing to compare on this machine
            Assert.NotNull(vector.VectorLayout);
            foreach (int tokens in new[] { 1, 3 })
            {
                var x = RandomX(rng, tokens * vector.Cols);
                var expected = new long[tokens * vector.Rows];
                fixed (long* y = expected) scalar.MatMul(y, x, tokens, threads: 1);
                foreach (int threads in new[] { 1, 2 })
                {
                    var actual = new long[tokens * vector.Rows];
                    fixed (long* y = actual) vector.MatMul(y, x, tokens, threads);
                    Assert.Equal(expected, actual);
                }
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void SharedPassRunsTheEpilogueOnEveryRowOnce(int threads)
    {
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        var gate = ExactMatrix.Load(checkpoint, checkpoint.Layer(0, LayerWeight.Gate));
        var up = ExactMatrix.Load(checkpoint, checkpoint.Layer(0, LayerWeight.Up));
        int tokens = 2, rows = gate.Rows;
        var x = RandomX(new Random(4), tokens * gate.Cols);
        var g = new long[tokens * rows];
        var u = new long[tokens * rows];
        var visits = new int[rows];
        var sumAtVisit = new long[tokens * rows];
        fixed (long* pg = g, pu = u)
            ExactMatrix.MatMulShared([gate, up], [(nint)pg, (nint)pu], x, tokens, threads, (start, end) =>
            {
                for (int r = start; r < end; r++)
                {
                    Interlocked.Increment(ref visits[r]);
                    for (int t = 0; t < tokens; t++) sumAtVisit[t * rows + r] = g[t * rows + r] + u[t * rows + r]; // both ready here
                }
            });
        Assert.All(visits, v => Assert.Equal(1, v));
        var eg = new long[tokens * rows];
        var eu = new long[tokens * rows];
        fixed (long* pg = eg, pu = eu) { gate.MatMul(pg, x, tokens, 1); up.MatMul(pu, x, tokens, 1); }
        Assert.Equal(eg, g);
        Assert.Equal(eu, u);
        Assert.Equal(eg.Zip(eu, (a, b) => a + b), sumAtVisit);
    }
}
