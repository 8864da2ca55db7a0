using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Oracle;
using Xunit;

namespace GpuIntLab.Tests.Oracle;

/// <summary>The oracle's worker team: every part exactly once, errors as themselves, nesting and concurrency safe.</summary>
public class WorkerTeamTests
{
    private static int AllCores => Math.Max(2, Environment.ProcessorCount);

    [Fact]
    public void EveryPartRunsExactlyOnceOverManyPasses()
    {
        var rng = new Random(1);
        for (int pass = 0; pass < 3000; pass++)
        {
            int parts = rng.Next(0, 40);
            var hits = new int[parts];
            WorkerTeam.Shared.Run(parts, AllCores, p => Interlocked.Increment(ref hits[p]));
            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }

    [Fact]
    public void APartsExceptionReachesTheCallerUnwrappedAndTheTeamGoesOn()
    {
        var e = Assert.Throws<Q48OverflowException>(() => WorkerTeam.Shared.Run(16, AllCores, p =>
        {
            if (p == 11) throw new Q48OverflowException("part 11 overflowed");
        }));
        Assert.Equal("part 11 overflowed", e.Message);
        var hits = new int[16];
        WorkerTeam.Shared.Run(16, AllCores, p => Interlocked.Increment(ref hits[p]));
        Assert.All(hits, h => Assert.Equal(1, h));
    }

    [Fact]
    public void NestedAndConcurrentPassesComplete()
    {
        var outer = new int[8];
        var inner = new int[8 * 8];
        WorkerTeam.Shared.Run(8, AllCores, p =>
        {
            Interlocked.Increment(ref outer[p]);
            WorkerTeam.Shared.Run(8, AllCores, q => Interlocked.Increment(ref inner[p * 8 + q]));
        });
        Assert.All(outer, h => Assert.Equal(1, h));
        Assert.All(inner, h => Assert.Equal(1, h));

        var totals = new long[4];
        Parallel.For(0, 4, caller =>
        {
            for (int pass = 0; pass < 200; pass++)
                WorkerTeam.Shared.Run(10, AllCores, p => Interlocked.Add(ref totals[caller], p));
        });
        Assert.All(totals, t => Assert.Equal(200L * 45, t));
    }
}
