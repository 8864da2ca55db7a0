using System.Text.Json;
using GpuIntLab.Experiments;
using Xunit;

namespace GpuIntLab.Tests.Hardening;

/// <summary>Results folders shared by concurrent runs, hostile or malformed results lines, and cells of differently defined runs.</summary>
public class ResultsHardeningTests
{
    private static string WriteSpec(string dir, object spec)
    {
        string path = Path.Combine(dir, "spec.json");
        File.WriteAllText(path, JsonSerializer.Serialize(spec));
        return path;
    }

    private static object SmallSpec(string name = "concurrent", int newTokens = 2) => new
    {
        name,
        model = TestData.ConformanceBf16,
        prompts = new object[] { new { name = "a", ids = new[] { 1, 450 } }, new { name = "b", ids = new[] { 1 } } },
        new_tokens = newTokens,
        backends = new object[] { new { name = "reference" } },
        repetitions = 1,
        warmup = 0,
    };

    [Fact]
    public void ConcurrentRunsIntoOneFolderLoseNoRecordAndTearNoLine()
    {
        string dir = TestData.TempDir("concurrent");
        string runs = Path.Combine(dir, "runs");
        var spec = ExperimentSpec.Load(WriteSpec(dir, SmallSpec()));
        const int runners = 4;
        using var start = new Barrier(runners);
        var summaries = new RunSummary[runners];
        // All runners start together, so their run ids are taken in the same second (the old ids were per-second).
        Parallel.For(0, runners, new ParallelOptions { MaxDegreeOfParallelism = runners }, i =>
        {
            start.SignalAndWait();
            summaries[i] = new ExperimentRunner().Run(spec, new RunOptions { ResultsDirectory = runs, Command = $"runner {i}" });
        });
        Assert.Equal(runners, summaries.Select(s => s.RunId).Distinct().Count());
        var lines = Directory.GetFiles(runs, "*.jsonl").SelectMany(File.ReadAllLines).ToList();
        // Each run: its header and one result per prompt, each a whole line that parses.
        Assert.Equal(runners * 3, lines.Count);
        var records = lines.Select(l => JsonSerializer.Deserialize<ResultRecord>(l, ResultRecord.Json)!).ToList();
        foreach (var s in summaries)
        {
            Assert.Single(records, r => r.RunId == s.RunId && r.Type == "run");
            Assert.Equal(2, records.Count(r => r.RunId == s.RunId && r.Type == "result"));
        }
        Assert.Equal(runners * 3, ResultReader.ReadAll(runs).Count);
    }

    [Fact]
    public void ARunsFolderThatIsAFileFailsBeforeAnyWork()
    {
        string dir = TestData.TempDir("runsfile");
        File.WriteAllText(Path.Combine(dir, "runs"), "not a folder");
        var spec = ExperimentSpec.Load(WriteSpec(dir, SmallSpec()));
        var e = Assert.Throws<ResultsFileException>(() => new ExperimentRunner().Run(spec, new RunOptions { ResultsDirectory = Path.Combine(dir, "runs") }));
        Assert.Contains("is a file, not a folder", e.Message);
    }

    private static ResultRecord Result(string experiment, string run, string prompt, int newTokens, int matches, string ts) => new()
    {
        Type = "result", RunId = run, Experiment = experiment, TimestampUtc = ts, Backend = "ilgpu-fp16", Scheme = "fp16", Prompt = prompt,
        NewTokens = newTokens, GreedyMatches = matches, TeacherForcedMatches = matches, PromptIds = [1, 2],
    };

    private static void WriteLines(string runsDir, string file, IEnumerable<string> lines)
    {
        Directory.CreateDirectory(runsDir);
        File.WriteAllLines(Path.Combine(runsDir, file), lines);
    }

    [Fact]
    public void MalformedAndHostileRecordsAreSkippedWithAWarningNamingFileAndLine()
    {
        string dir = TestData.TempDir("malformed");
        string runs = Path.Combine(dir, "runs");
        string good = JsonSerializer.Serialize(Result("fixture", "r1", "a", 5, 5, "2026-01-01T00:00:01"), ResultRecord.Json);
        WriteLines(runs, "mixed.jsonl",
        [
            good,
            good.Replace("\"experiment\":\"fixture\"", "\"experiment\":null"),
            good.Replace("\"experiment\":\"fixture\"", "\"experiment\":\"../../escaped\""),
            good.Replace("\"type\":\"result\"", "\"type\":7"),
            "null",
        ]);
        var warnings = new List<string>();
        var written = ResultTables.Regenerate(dir, warnings.Add);
        Assert.Equal(4, warnings.Count);
        string file = Path.Combine(runs, "mixed.jsonl");
        Assert.Contains(warnings, w => w.StartsWith($"{file}:2:", StringComparison.Ordinal) && w.Contains("'experiment'"));
        Assert.Contains(warnings, w => w.StartsWith($"{file}:3:", StringComparison.Ordinal) && w.Contains("not a safe name"));
        Assert.Contains(warnings, w => w.StartsWith($"{file}:4:", StringComparison.Ordinal));
        Assert.Contains(warnings, w => w.StartsWith($"{file}:5:", StringComparison.Ordinal));
        // Only the good line's experiment page and the index, both inside the results folder.
        Assert.Equal([Path.Combine(dir, "fixture.md"), Path.Combine(dir, "README.md")], written);
        Assert.False(File.Exists(Path.Combine(dir, "..", "..", "escaped.md")));
        Assert.DoesNotContain(ResultPlots.Regenerate(dir, _ => { }), p => !p.StartsWith(dir, StringComparison.Ordinal));
    }

    [Fact]
    public void CellsOfRunsWithDifferentNewTokensAreNeverSummed()
    {
        string dir = TestData.TempDir("definitions");
        string runs = Path.Combine(dir, "runs");
        var header = (string run, string ts) => new ResultRecord { Type = "run", RunId = run, Experiment = "fixture", TimestampUtc = ts, Model = "/m/tiny" };
        var lines = new[]
        {
            header("short", "2026-01-01T00:00:00"),
            Result("fixture", "short", "a", 5, 5, "2026-01-01T00:00:01"), Result("fixture", "short", "b", 5, 5, "2026-01-01T00:00:02"),
            header("long", "2026-01-02T00:00:00"),
            // The newer run covers other prompts with 20 tokens: the old 5-token cells must not join its row.
            Result("fixture", "long", "c", 20, 20, "2026-01-02T00:00:01"), Result("fixture", "long", "d", 20, 20, "2026-01-02T00:00:02"),
        }.Select(r => JsonSerializer.Serialize(r, ResultRecord.Json));
        WriteLines(runs, "two.jsonl", lines);
        var warnings = new List<string>();
        ResultTables.Regenerate(dir, warnings.Add);
        string md = File.ReadAllText(Path.Combine(dir, "fixture.md"));
        Assert.Contains("| ilgpu-fp16 | fp16 | 40/40 (100.0%) |", md);
        Assert.DoesNotContain("50/50", md);
        Assert.Contains(warnings, w => w.Contains("run short") && w.Contains("new_tokens 5") && w.Contains("new_tokens 20"));
    }

    [Fact]
    public void SamePromptNameWithDifferentIdsIsADifferentCell()
    {
        string dir = TestData.TempDir("promptids");
        var old = Result("fixture", "old", "a", 5, 5, "2026-01-01T00:00:01");
        old.Backend = "ilgpu-int8"; old.Scheme = "per-tensor"; old.PromptIds = [1, 9, 9];
        var lines = new[] { old, Result("fixture", "new", "a", 5, 4, "2026-01-02T00:00:01") }.Select(r => JsonSerializer.Serialize(r, ResultRecord.Json));
        WriteLines(Path.Combine(dir, "runs"), "ids.jsonl", lines);
        var warnings = new List<string>();
        ResultTables.Regenerate(dir, warnings.Add);
        string md = File.ReadAllText(Path.Combine(dir, "fixture.md"));
        Assert.DoesNotContain("ilgpu-int8", md);
        Assert.Contains(warnings, w => w.Contains("run old") && w.Contains("prompt 'a' as ids [1 9 9]"));
    }

    [Fact]
    public void AReadmeThatIsAFolderFailsBeforeAnyPageIsWritten()
    {
        string dir = TestData.TempDir("readmedir");
        WriteLines(Path.Combine(dir, "runs"), "r.jsonl", [JsonSerializer.Serialize(Result("fixture", "r", "a", 5, 5, "2026-01-01T00:00:01"), ResultRecord.Json)]);
        Directory.CreateDirectory(Path.Combine(dir, "README.md"));
        var e = Assert.Throws<ResultsFileException>(() => ResultTables.Regenerate(dir));
        Assert.Contains("README.md", e.Message);
        Assert.Contains("is a folder", e.Message);
        Assert.False(File.Exists(Path.Combine(dir, "fixture.md")));
    }

    [Fact]
    public void PagesAreReplacedThroughARenameLeavingNoTemporaryFiles()
    {
        string dir = TestData.TempDir("atomic");
        string page = Path.Combine(dir, "page.md");
        File.WriteAllText(page, "old");
        ResultsStore.WriteTextAtomically(page, "new");
        Assert.Equal("new", File.ReadAllText(page));
        Assert.Equal(["page.md"], Directory.GetFiles(dir).Select(Path.GetFileName));
        // A target that cannot be replaced leaves no temporary file behind.
        Directory.CreateDirectory(Path.Combine(dir, "sub.md"));
        Assert.Throws<ResultsFileException>(() => ResultsStore.WriteTextAtomically(Path.Combine(dir, "sub.md"), "x"));
        Assert.Equal(["page.md"], Directory.GetFiles(dir).Select(Path.GetFileName));
    }

    [Theory]
    [InlineData("default", true)]
    [InlineData("tinyllama-gate_v1.2", true)]
    [InlineData("../../escape", false)]
    [InlineData("a/b", false)]
    [InlineData("a\\b", false)]
    [InlineData(".hidden", false)]
    [InlineData("", false)]
    [InlineData("caf\u00e9", false)]
    [InlineData("x\ny", false)]
    public void SafeNamesAllowOnlyOneCharacterSet(string name, bool safe) => Assert.Equal(safe, SafeNames.IsSafe(name));

    [Fact]
    public void AnOverlongNameIsNotSafe() => Assert.False(SafeNames.IsSafe(new string('a', SafeNames.MaxLength + 1)));
}
