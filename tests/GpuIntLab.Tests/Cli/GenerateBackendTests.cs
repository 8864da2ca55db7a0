using System.Text.Json;
using Xunit;

namespace GpuIntLab.Tests.Cli;

/// <summary><c>generate --engine BACKEND</c>: every exact engine hashes its raw Q16.48 logits, so the oracle and the INT64 backend agree.</summary>
public class GenerateBackendTests
{
    private static JsonElement Generate(params string[] extra)
    {
        var (code, stdout, stderr) = CliRunner.Run(["generate", "--model", TestData.ConformanceBf16, "--prompt-ids", "1 9038 2501", "--max-new-tokens", "3", "--json", .. extra]);
        Assert.True(code == 0, stderr);
        return JsonDocument.Parse(stdout).RootElement.Clone();
    }

    [Fact]
    public void Int64BackendHashesEqualToTheOracleAndAQuantizedBackendRuns()
    {
        var oracle = Generate("--engine", "oracle");
        var int64 = Generate("--engine", "ilgpu-int64", "--accelerator", "cpu");
        Assert.Equal("raw Q16.48 int64", oracle.GetProperty("logits_hashed").GetString());
        Assert.Equal("raw Q16.48 int64", int64.GetProperty("logits_hashed").GetString());
        Assert.Equal(oracle.GetProperty("logits_sha256").GetString(), int64.GetProperty("logits_sha256").GetString());
        Assert.Equal(oracle.GetProperty("generated_ids").ToString(), int64.GetProperty("generated_ids").ToString());

        var int8 = Generate("--engine", "ilgpu-int8", "--scheme", "per-channel", "--accelerator", "cpu");
        Assert.Equal("per-channel", int8.GetProperty("scheme").GetString());
        Assert.Equal("float64 bits", int8.GetProperty("logits_hashed").GetString());
        Assert.NotEqual(oracle.GetProperty("logits_sha256").GetString(), int8.GetProperty("logits_sha256").GetString());
    }

    [Theory]
    [InlineData("--engine", "ilgpu-int8", "--scheme", "per-row", "ilgpu-int8 has no scheme 'per-row'")]
    [InlineData("--engine", "oracle", "--accelerator", "tpu", "--accelerator: expected auto, cpu or cuda")]
    [InlineData("--engine", "oracle", "--accelerator", "cuda", "oracle cannot run here")]
    public void BadSchemeOrAcceleratorIsOneClearLine(string o1, string v1, string o2, string v2, string expected)
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", TestData.ConformanceBf16, "--prompt-ids", "1", o1, v1, o2, v2);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }
}
