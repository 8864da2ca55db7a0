using System.Text.Json;
using GpuIntLab.Tests.Cli;
using Xunit;

namespace GpuIntLab.Tests.Hardening;

/// <summary>Hostile command lines and file-system faults through the real CLI: exit code 2 and one <c>error:</c> line, before any work.</summary>
public class CliHardeningTests
{
    /// <summary>Runs the CLI, expects exit code 2 and exactly one stderr line, an error line containing every fragment.</summary>
    private static string OneErrorLine(string[] args, params string[] fragments)
    {
        var (code, _, stderr) = CliRunner.Run(args);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(code == 2 && lines.Length == 1 && lines[0].StartsWith("error: ", StringComparison.Ordinal),
            $"exit {code}, stderr:\n{stderr}");
        foreach (var f in fragments) Assert.Contains(f, lines[0]);
        return lines[0];
    }

    public static TheoryData<string[], string> ParseErrors => new()
    {
        { ["bogus"], "'bogus'" },
        { ["generate", "--prompt", "x", "--frobnicate"], "'--frobnicate'" },
        { ["generate", "--prompt", "x"], "'--model' is required" },
        { ["bench-oracle", "--model", "m", "--tokens", "abc"], "'abc'" },
        { ["bench-oracle", "--model", "m", "--tokens", "99999999999"], "'99999999999'" },
    };

    [Theory]
    [MemberData(nameof(ParseErrors))]
    public void CommandLineParseErrorsExitTwoWithOneErrorLine(string[] args, string fragment) => OneErrorLine(args, fragment, "--help");

    [Fact]
    public void PromptTogetherWithPromptIdsIsRefused() =>
        OneErrorLine(["generate", "--model", TestData.ConformanceBf16, "--prompt", "Hello", "--prompt-ids", "1 2"], "--prompt", "--prompt-ids", "not both");

    [Fact]
    public void MaxNewTokensNearIntMaxValueIsRefusedByTheContextCheck() =>
        OneErrorLine(["generate", "--model", TestData.ConformanceBf16, "--prompt-ids", "1", "--max-new-tokens", int.MaxValue.ToString()], $"{int.MaxValue} new tokens exceeds the context of 2048");

    [Fact]
    public void ExportNativeNeverWritesOverAnInput()
    {
        string dir = Path.Combine(TestData.TempDir("overwrite"), "model");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestData.ConformanceBf16)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        string shard = Path.Combine(dir, "model.safetensors");
        string before = TestData.Sha256(shard);
        OneErrorLine(["export-native", "--model", dir, "--out", shard], "refusing to write over an input");
        // Through a symbolic link to the folder, the same file.
        string link = Path.Combine(Path.GetDirectoryName(dir)!, "link");
        Directory.CreateSymbolicLink(link, dir);
        OneErrorLine(["export-native", "--model", dir, "--out", Path.Combine(link, "model.safetensors")], "refusing to write over an input");
        Assert.Equal(before, TestData.Sha256(shard));
    }

    [Fact]
    public void OutputsOfTheWrongKindFailBeforeTheWork()
    {
        string dir = TestData.TempDir("wrongkind");
        string file = Path.Combine(dir, "a-file");
        File.WriteAllText(file, "x");
        OneErrorLine(["make-model", "--out", file, "--shape", "conformance"], "--out", "is a file");
        OneErrorLine(["export-native", "--model", TestData.ConformanceBf16, "--out", dir], "--out", "is a folder");
        OneErrorLine(["bench-oracle", "--model", TestData.ConformanceBf16, "--json-out", dir, "--threads", "1"], "--json-out", "is a folder");
        OneErrorLine(["train", "--output", file, "--tokenizer", "bytes", "--steps", "1"], "--output", "is a file");
        Assert.Equal("x", File.ReadAllText(file));
    }

    [Fact]
    public void MakeModelWithAHundredThousandLayersIsRefusedBySizeBeforeWriting()
    {
        string dir = Path.Combine(TestData.TempDir("huge"), "m");
        OneErrorLine(["make-model", "--out", dir, "--layers", "100000"], "GB of weights", "free");
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void TrainOptionsThatCannotWorkAreRefusedBeforeTraining() =>
        OneErrorLine(["train", "--output", Path.Combine(TestData.TempDir("train"), "m"), "--kv-heads", "4"], "--kv-heads: 4 does not divide --heads 6");

    [Fact]
    public void UnknownAcceleratorIsRefused() => OneErrorLine(["backends", "--accelerator", "tpu"], "'tpu'", "auto, cpu, cuda");

    [Fact]
    public void AnUnreadableConfigIsOneErrorLine()
    {
        string dir = Path.Combine(TestData.TempDir("unreadable"), "model");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestData.ConformanceBf16).Where(f => !f.EndsWith("config.json", StringComparison.Ordinal)))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        // A folder where config.json belongs cannot be read as a file, even by root (chmod would not stop root).
        Directory.CreateDirectory(Path.Combine(dir, "config.json"));
        OneErrorLine(["generate", "--model", dir, "--prompt-ids", "1"], "config.json");
    }

    private static string SpecFile(string dir, string name = "cli-hardening")
    {
        string path = Path.Combine(dir, "spec.json");
        File.WriteAllText(path, JsonSerializer.Serialize(new
        {
            name, model = TestData.ConformanceBf16, new_tokens = 1, repetitions = 1, warmup = 0,
            prompts = new object[] { new { name = "p", ids = new[] { 1 } } }, backends = new object[] { new { name = "reference" } },
        }));
        return path;
    }

    [Fact]
    public void RunRefusesResultsFoldersThatCannotTakeItsRecordsBeforeTheWork()
    {
        string dir = TestData.TempDir("runfaults");
        string spec = SpecFile(dir);
        string runsIsFile = Path.Combine(dir, "r1");
        Directory.CreateDirectory(runsIsFile);
        File.WriteAllText(Path.Combine(runsIsFile, "runs"), "");
        OneErrorLine(["run", spec, "--results", runsIsFile], "runs", "is a file");
        string readmeIsFolder = Path.Combine(dir, "r2");
        Directory.CreateDirectory(Path.Combine(readmeIsFolder, "README.md"));
        OneErrorLine(["run", spec, "--results", readmeIsFolder], "README.md", "is a folder");
        Assert.False(Directory.Exists(Path.Combine(readmeIsFolder, "runs")));
        // /proc cannot take new folders, whoever runs the test.
        OneErrorLine(["run", spec, "--results", "/proc/gpuintlab-results"], "/proc/gpuintlab-results");
    }

    [Fact]
    public void ASpecNameThatWouldLeaveTheResultsFolderIsRefused()
    {
        string dir = TestData.TempDir("specname");
        OneErrorLine(["run", SpecFile(dir, "../../escape"), "--results", Path.Combine(dir, "results")], "'../../escape' is not a safe name");
        // The run file would have been results/runs/../../escape-<time>.jsonl, that is in dir itself.
        Assert.Empty(Directory.GetFiles(dir, "escape-*"));
        Assert.False(Directory.Exists(Path.Combine(dir, "results")));
    }
}
