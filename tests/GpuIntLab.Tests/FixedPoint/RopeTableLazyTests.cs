using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using GpuIntLab.Core.FixedPoint;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.FixedPoint;

/// <summary>Rows computed on demand: same bits as the eager build, memory only for used blocks, concurrent readers.</summary>
public class RopeTableLazyTests(ITestOutputHelper output)
{
    private const int Block = 64; // RopeRowCache<T>.BlockPositions

    /// <summary>
    /// SHA-256 of all cos rows then all sin rows (little-endian longs) as the eager table of commit 9518c6a
    /// (before lazy rows and rope_scaling) produced them: the plain table must not change by one bit.
    /// </summary>
    [Theory]
    [InlineData(64, 2048, 10000.0, "4D27507EA7ED0F1110E82C635AD47B86214535D6E66775F8C0D31A2AF0DE7D15")]
    [InlineData(16, 2048, 500000.0, "206B2155C16C2889D91483AE32B6010D7FF1811C806C4F6810BCF40D2307C29E")]
    [InlineData(128, 300, 1000000.0, "BF404B61679A5CA28A697AAA90B384209F98DEC04A2BB868DE45123B454393D2")]
    public void PlainTable_IsBitIdenticalToTheEagerBuild(int headDim, int positions, double theta, string sha256)
    {
        var table = new RopeTable(headDim, positions, theta);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (int p = 0; p < positions; p++)
        {
            hash.AppendData(MemoryMarshal.AsBytes(table.Cos(p)));
        }

        for (int p = 0; p < positions; p++)
        {
            hash.AppendData(MemoryMarshal.AsBytes(table.Sin(p)));
        }

        Assert.Equal(sha256, Convert.ToHexString(hash.GetHashAndReset()));
    }

    [Fact]
    public void Rows_AreComputedOnlyForUsedBlocks()
    {
        // Llama 3.2's 131072 positions and the 2^24 maximum: construction computes no row
        var sw = Stopwatch.StartNew();
        var table = new RopeTable(64, 1 << 24, 500000.0);
        sw.Stop();
        Assert.Equal(0, table.FilledBlocks);
        output.WriteLine($"RopeTable(64, 2^24, 500000) constructed in {sw.Elapsed.TotalMilliseconds:F2} ms");

        sw.Restart();
        long last = table.Cos((1 << 24) - 1)[31];
        sw.Stop();
        output.WriteLine($"first row of a block ({Block} positions x 32 pairs) computed in {sw.Elapsed.TotalMilliseconds:F1} ms");
        Assert.Equal(1, table.FilledBlocks);

        // the block holding the last position equals the same rows computed directly
        var cos = new long[Block * 32];
        var sin = new long[Block * 32];
        table.CopyRows((1 << 24) - Block, Block, cos, sin);
        Assert.Equal(1, table.FilledBlocks); // CopyRows does not cache
        Assert.Equal(cos[^1], last);
        Assert.Equal(sin[^32..], table.Sin((1 << 24) - 1).ToArray());

        _ = table.Sin(0);
        _ = table.Cos(Block - 1);
        Assert.Equal(2, table.FilledBlocks);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Cos(1 << 24).Length);
    }

    [Fact]
    public void PartialLastBlock_AndCopyRowsValidation()
    {
        var table = new RopeTable(8, 100, 10000.0);
        var cos = new long[100 * 4];
        var sin = new long[100 * 4];
        table.CopyRows(0, 100, cos, sin);
        for (int p = 0; p < 100; p++)
        {
            Assert.Equal(cos.AsSpan(p * 4, 4).ToArray(), table.Cos(p).ToArray());
            Assert.Equal(sin.AsSpan(p * 4, 4).ToArray(), table.Sin(p).ToArray());
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => table.Sin(100).Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.CopyRows(99, 2, cos, sin));
        Assert.Throws<ArgumentOutOfRangeException>(() => table.CopyRows(-1, 1, cos, sin));
        Assert.Throws<ArgumentException>(() => table.CopyRows(0, 100, cos.AsSpan(1), sin));
    }

    [Fact]
    public void ConcurrentReaders_SeeTheDirectlyComputedRows()
    {
        const int positions = 1024;
        var reference = new RopeTable(16, positions, 500000.0);
        var cos = new long[positions * 8];
        var sin = new long[positions * 8];
        reference.CopyRows(0, positions, cos, sin);

        // several threads walk the positions in different orders, racing on every block's first fill
        var table = new RopeTable(16, positions, 500000.0);
        int mismatches = 0;
        Parallel.For(0, 8, new ParallelOptions { MaxDegreeOfParallelism = 8 }, worker =>
        {
            var rng = new Random(worker);
            for (int n = 0; n < 4 * positions; n++)
            {
                int p = worker % 2 == 0 ? (n * 37) % positions : rng.Next(positions);
                if (!table.Cos(p).SequenceEqual(cos.AsSpan(p * 8, 8)) || !table.Sin(p).SequenceEqual(sin.AsSpan(p * 8, 8)))
                {
                    Interlocked.Increment(ref mismatches);
                }
            }
        });

        Assert.Equal(0, mismatches);
        Assert.Equal(positions / Block, table.FilledBlocks);
    }
}
