using GpuIntLab.Experiments;
using Xunit;

namespace GpuIntLab.Tests.Experiments;

/// <summary>Table regeneration from fixture records (no engine involved).</summary>
public class ResultTableTests
{
    private static ResultRecord Result(string backend, string scheme, string prompt, int matches, int tf, double decode, string ts, string run = "r1") => new()
    {
        Type = "result", RunId = run, Experiment = "fixture", TimestampUtc = ts, Backend = backend, Scheme = scheme, Prompt = prompt,
        Accelerator = "cpu", NewTokens = 20, GreedyMatches = matches, TeacherForcedMatches = tf, FirstDivergence = matches == 20 ? null : matches,
        KlMean = 0.01, KlMax = 0.05, MaxAbsLogitError = 0.5,
        DecodeTokensPerSec = new RateStats(decode, decode - 1, decode + 1, 3), PrefillTokensPerSec = new RateStats(decode * 4, decode, decode * 5, 3),
    };

    [Fact]
    public void RegeneratesSummaryWithSpeedupAndNewestRecordWins()
    {
        string dir = TestData.TempDir("tables");
        Directory.CreateDirectory(Path.Combine(dir, "runs"));
        var records = new List<ResultRecord>
        {
            new() { Type = "run", RunId = "r1", Experiment = "fixture", TimestampUtc = "2026-01-01T00:00:00", Command = "gpuintlab run x", Shard = "0/1", Environment = new EnvironmentInfo { Commit = "abc123", Cpu = "TestCPU", Cores = 2 } },
            Result("ilgpu-fp16", "fp16", "a", 20, 20, 100, "2026-01-01T00:00:01"),
            Result("ilgpu-fp16", "fp16", "b", 18, 20, 100, "2026-01-01T00:00:02"),
            Result("ilgpu-int8", "per-tensor", "a", 5, 15, 180, "2026-01-01T00:00:03"),
            Result("ilgpu-int8", "per-tensor", "b", 7, 16, 180, "2026-01-01T00:00:04"),
            // An older record of the same cell is superseded by the newer one above.
            Result("ilgpu-int8", "per-tensor", "a", 0, 0, 1, "2025-12-31T00:00:00", run: "r0"),
            new() { Type = "error", RunId = "r1", Experiment = "fixture", TimestampUtc = "2026-01-01T00:00:05", Backend = "cuda-fp8", Scheme = "per-tensor", Prompt = "a", Error = "unavailable: no CUDA driver" },
        };
        using (var w = new ResultWriter(Path.Combine(dir, "runs", "fixture.jsonl")))
            foreach (var r in records) w.Write(r);
        File.AppendAllText(Path.Combine(dir, "runs", "fixture.jsonl"), "{ not json\n");

        var warnings = new List<string>();
        var written = ResultTables.Regenerate(dir, warnings.Add);
        Assert.Single(warnings);
        Assert.Equal(2, written.Count);
        string md = File.ReadAllText(Path.Combine(dir, "fixture.md"));
        Assert.Contains("| ilgpu-fp16 | fp16 | 38/40 (95.0%) | 40/40 (100.0%) | 0/1 | 1.00e-02 | 5.00e-02 | 5.00e-01 | 400.0 | 100.0 | 1.00x | cpu |", md);
        Assert.Contains("| ilgpu-int8 | per-tensor | 12/40 (30.0%) | 31/40 (77.5%) | 0/2 | 1.00e-02 | 5.00e-02 | 5.00e-01 | 720.0 | 180.0 | 1.80x | cpu |", md);
        Assert.Contains("| cuda-fp8 | per-tensor | unavailable: no CUDA driver |", md);
        Assert.Contains("`gpuintlab run x`; commit abc123", md);
        string index = File.ReadAllText(Path.Combine(dir, "README.md"));
        Assert.Contains("## [fixture](fixture.md)", index);
    }
}
