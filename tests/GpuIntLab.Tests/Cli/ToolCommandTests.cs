using System.Text.Json;
using Xunit;

namespace GpuIntLab.Tests.Cli;

/// <summary>make-model, export-native, bench-oracle and backends through the real command line.</summary>
public class ToolCommandTests
{
    [Fact]
    public void MakeModelRebuildsTheConformanceCheckpointByteForByte()
    {
        string dir = Path.Combine(TestData.TempDir("makemodel"), "m");
        var (code, stdout, stderr) = CliRunner.Run("make-model", "--out", dir, "--shape", "conformance");
        Assert.True(code == 0, stderr);
        Assert.Contains("parameters", stdout);
        string expected = File.ReadAllLines(Path.Combine(TestData.ConformanceDir, "SHA256SUMS"))
            .Select(l => l.Split("  ", 2)).Single(p => p[1] == "tiny-gqa-bf16/model.safetensors")[0];
        Assert.Equal(expected, TestData.Sha256(Path.Combine(dir, "model.safetensors")));
    }

    [Fact]
    public void ExportNativeThenGenerateGivesTheFoldersHash()
    {
        string file = Path.Combine(TestData.TempDir("exportcli"), "m.q48");
        var export = CliRunner.Run("export-native", "--model", TestData.ConformanceBf16, "--out", file);
        Assert.True(export.ExitCode == 0, export.Stderr);
        Assert.Contains("as M8E8", export.Stdout);
        string Hash(string model)
        {
            var (code, stdout, stderr) = CliRunner.Run("generate", "--model", model, "--prompt", "Once upon a time", "--max-new-tokens", "3", "--json");
            Assert.True(code == 0, stderr);
            return JsonDocument.Parse(stdout).RootElement.GetProperty("logits_sha256").GetString()!;
        }
        Assert.Equal(Hash(TestData.ConformanceBf16), Hash(file));
    }

    [Fact]
    public void BenchOracleReportsRatesBandwidthAndMemory()
    {
        string json = Path.Combine(TestData.TempDir("bench"), "bench.json");
        var (code, stdout, stderr) = CliRunner.Run("bench-oracle", "--model", TestData.ConformanceBf16, "--tokens", "2", "--threads", "1", "--json-out", json);
        Assert.True(code == 0, stderr);
        Assert.Contains("% of the roofline", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var root = doc.RootElement;
        Assert.True(root.GetProperty("read_bandwidth_gbps").GetDouble() > 0);
        Assert.True(root.GetProperty("runs")[0].GetProperty("decode_tokens_per_sec").GetDouble() > 0);
        Assert.True(root.GetProperty("peak_working_set_bytes").GetInt64() > 0);
        // Every tensor byte but the embeddings: 8,464,768 data bytes in the file minus the 32000 x 64 bf16 embedding table.
        Assert.Equal(8_464_768 - 4_096_000, root.GetProperty("weight_bytes_per_token").GetInt64());
    }

    [Fact]
    public void BenchOracleTimesDecodeAfterAPrefilledContextAndRefusesOneTooLong()
    {
        string json = Path.Combine(TestData.TempDir("benchctx"), "bench.json");
        var (code, stdout, stderr) = CliRunner.Run("bench-oracle", "--model", TestData.ConformanceBf16, "--tokens", "2", "--threads", "1", "--context", "48", "--json-out", json);
        Assert.True(code == 0, stderr);
        Assert.Contains("at position 48 (prefill", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var run = doc.RootElement.GetProperty("runs")[0];
        Assert.Equal(48, doc.RootElement.GetProperty("context").GetInt32());
        Assert.True(run.GetProperty("prefill_tokens_per_sec").GetDouble() > 0);
        Assert.True(run.GetProperty("load_seconds").GetDouble() > 0);
        var (tooLong, _, error) = CliRunner.Run("bench-oracle", "--model", TestData.ConformanceBf16, "--tokens", "1", "--threads", "1", "--context", "1000000");
        Assert.Equal(2, tooLong);
        Assert.Contains("exceed the model's context", error);
    }

    [Fact]
    public void BackendsListsEveryBackendWithAReasonWhenUnavailable()
    {
        var (code, stdout, _) = CliRunner.Run("backends", "--accelerator", "cpu");
        Assert.Equal(0, code);
        foreach (var name in new[] { "oracle", "reference", "ilgpu-fp16", "ilgpu-int8", "ilgpu-fp8", "ilgpu-int64", "cuda-fp16", "cuda-int8", "cuda-fp8", "cuda-int64" })
            Assert.Contains(name, stdout);
        Assert.Contains("reason:", stdout);
    }
}
