using System.Text.Json;
using GpuIntLab.Tests.Tokenization;
using Xunit;

namespace GpuIntLab.Tests.Cli;

/// <summary><c>gpuintlab tokenize</c> through the real command line, on folders holding only tokenizer files.</summary>
public class TokenizeCommandTests
{
    [Fact]
    public void Text_prints_the_ids_with_BOS_only_when_asked()
    {
        string dir = ByteLevelBpeTestData.WriteTokenizerFolder("llama3");
        var plain = CliRunner.Run("tokenize", "--model", dir, "--text", "The capital of France is");
        Assert.True(plain.ExitCode == 0, plain.Stderr);
        Assert.Equal("791 6864 315 9822 374", plain.Stdout.Trim());
        var special = CliRunner.Run("tokenize", "--model", dir, "--text", "The capital of France is", "--add-special-tokens");
        Assert.Equal("128000 791 6864 315 9822 374", special.Stdout.Trim());
    }

    [Fact]
    public void Jsonl_gives_one_line_per_text_equal_to_the_reference_ids()
    {
        string dir = ByteLevelBpeTestData.WriteTokenizerFolder("qwen3");
        var cases = ByteLevelBpeTestData.Cases.Where(c => c.Tokenizer == "qwen3").ToArray();
        string input = Path.Combine(TestData.TempDir("tokenize-jsonl"), "in.jsonl");
        File.WriteAllLines(input, cases.Select(c => JsonSerializer.Serialize(new { text = c.Text })));
        var (code, stdout, stderr) = CliRunner.Run("tokenize", "--model", dir, "--input-jsonl", input);
        Assert.True(code == 0, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(cases.Length, lines.Length);
        for (int i = 0; i < cases.Length; i++)
        {
            using var doc = JsonDocument.Parse(lines[i]);
            Assert.Equal(cases[i].Text, doc.RootElement.GetProperty("text").GetString());
            Assert.Equal(cases[i].Ids, doc.RootElement.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray());
        }
    }

    [Fact]
    public void Bad_input_is_one_error_line_naming_file_and_line()
    {
        string dir = ByteLevelBpeTestData.WriteTokenizerFolder("qwen3");
        string input = Path.Combine(TestData.TempDir("tokenize-bad"), "in.jsonl");
        File.WriteAllLines(input, ["{\"text\": \"fine\"}", "{\"txt\": \"typo\"}"]);
        var (code, stdout, stderr) = CliRunner.Run("tokenize", "--model", dir, "--input-jsonl", input);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.StartsWith("error: ", stderr);
        Assert.Contains($"{input}:2: no \"text\" field", stderr);

        string empty = TestData.TempDir("tokenize-empty");
        var none = CliRunner.Run("tokenize", "--model", empty, "--text", "x");
        Assert.Equal(2, none.ExitCode);
        Assert.Contains("no tokenizer.json or tokenizer.model", none.Stderr);
    }
}
