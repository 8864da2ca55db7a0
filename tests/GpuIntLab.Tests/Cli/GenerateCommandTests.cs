using System.Text.Json;
using Xunit;

namespace GpuIntLab.Tests.Cli;

public class GenerateCommandTests
{
    [Fact]
    public void JsonOutputHasTheDocumentedFieldsAndMatchesTheReferenceIds()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", TestData.ConformanceBf16, "--prompt", "The capital of France is",
            "--max-new-tokens", "5", "--json", "--threads", "1");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        var root = doc.RootElement;
        Assert.Equal([1, 450, 7483, 310, 3444, 338], root.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()));
        var expected = Engines.ConformanceReference.Case("greedy-0").GeneratedIds.Take(5);
        Assert.Equal(expected, root.GetProperty("generated_ids").EnumerateArray().Select(e => e.GetInt32()));
        Assert.Equal("oracle", root.GetProperty("engine").GetString());
        Assert.True(root.GetProperty("decode_tokens_per_sec").GetDouble() > 0);
        Assert.Equal(64, root.GetProperty("logits_sha256").GetString()!.Length);
        Assert.True(root.TryGetProperty("text", out _));
    }

    [Fact]
    public void SameHashForOneThreadAndTwoAndTextOutputShowsRate()
    {
        string Hash(string threads)
        {
            var (code, stdout, stderr) = CliRunner.Run("generate", "--model", TestData.ConformanceBf16, "--prompt-ids", "1 9038 2501", "--max-new-tokens", "3", "--json", "--threads", threads);
            Assert.True(code == 0, stderr);
            return JsonDocument.Parse(stdout).RootElement.GetProperty("logits_sha256").GetString()!;
        }
        Assert.Equal(Hash("1"), Hash("2"));
        var (c, text, _) = CliRunner.Run("generate", "--model", TestData.ConformanceBf16, "--prompt", "Once upon a time", "--max-new-tokens", "3", "--engine", "reference");
        Assert.Equal(0, c);
        Assert.Contains("Once upon a time", text);
        Assert.Contains("tok/s", text);
    }

    public static TheoryData<string[], string> BadInputs() => new()
    {
        { ["generate", "--model", "/no/such/dir", "--prompt", "x"], "/no/such/dir: model folder not found" },
        { ["generate", "--model", "@MODEL", "--prompt", "x", "--engine", "quantum"], "unknown engine 'quantum'" },
        { ["generate", "--model", "@MODEL", "--prompt-ids", "1 32000"], "token id 32000" },
        { ["generate", "--model", "@MODEL", "--prompt-ids", "1 abc"], "'abc' is not a token id" },
        { ["generate", "--model", "@MODEL", "--prompt", "hi", "--max-new-tokens", "5000"], "exceeds the context of 2048" },
        { ["run", "/no/such/spec.json"], "experiment file not found" },
    };

    [Theory]
    [MemberData(nameof(BadInputs))]
    public void BadInputGivesOneClearLineAndExitCode2(string[] args, string expected)
    {
        var (code, _, stderr) = CliRunner.Run(args.Select(a => a == "@MODEL" ? TestData.ConformanceBf16 : a).ToArray());
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
        Assert.DoesNotContain("   at ", stderr); // no stack trace
        Assert.Single(stderr.Trim().Split('\n'));
    }
}
