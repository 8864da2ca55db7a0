using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using GpuIntLab.Core.Models;
using GpuIntLab.Experiments;
using Xunit;

namespace GpuIntLab.Tests.Hardening;

/// <summary>
/// Seeded, time-bounded fuzzing of everything a user or a merged results folder can hand the lab as text: the
/// safetensors header, config.json, the experiment spec and results lines. Each mutation of a valid input must
/// either be accepted or be refused with the input's own exception type, never another exception. The seed is
/// fixed, so a failure names the seed, the iteration and the input, and reproduces.
/// </summary>
public partial class InputFuzzTests
{
    // Fixed in CI; GPUINTLAB_FUZZ_SEED and GPUINTLAB_FUZZ_SECONDS run a longer or different search by hand.
    private static readonly int Seed = int.TryParse(Environment.GetEnvironmentVariable("GPUINTLAB_FUZZ_SEED"), out int s) ? s : 20261201;
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(double.TryParse(Environment.GetEnvironmentVariable("GPUINTLAB_FUZZ_SECONDS"), out double b) ? b : 1.5);
    private static readonly int MaxIterations = Environment.GetEnvironmentVariable("GPUINTLAB_FUZZ_SECONDS") != null ? int.MaxValue : 4000;

    /// <summary>Values that break readers which assume a JSON type or a range.</summary>
    private static readonly string[] HostileValues =
    [
        "null", "true", "false", "0", "-1", "1.5", "1e400", "-1e400", "9223372036854775807", "9223372036854775808", "-9223372036854775808",
        "2147483647", "2147483648", "\"\"", "\"0\"", "\"x\"", "\"../../x\"", "\"/etc/passwd\"", "[]", "[1]", "[\"a\",\"b\"]", "{}", "{\"a\":1}",
        "\"\\u0000\"", "\"\\ud800\"", "[[[[[[[[]]]]]]]]", "NaN", "\"NaN\"", "\"Infinity\"",
    ];

    [GeneratedRegex("-?\\d+(\\.\\d+)?([eE][-+]?\\d+)?|\"(?:[^\"\\\\]|\\\\.)*\"|true|false|null")]
    private static partial Regex JsonValue();

    /// <summary>One random edit: replace a JSON value by a hostile one, or flip, delete, duplicate or insert bytes.</summary>
    private static byte[] Mutate(byte[] input, Random rng)
    {
        var bytes = input.ToList();
        int edits = 1 + rng.Next(3);
        for (int e = 0; e < edits && bytes.Count > 0; e++)
        {
            switch (rng.Next(6))
            {
                case 0:
                case 1:
                {
                    string text = Encoding.UTF8.GetString(bytes.ToArray());
                    var matches = JsonValue().Matches(text);
                    if (matches.Count == 0) goto case 2;
                    var m = matches[rng.Next(matches.Count)];
                    text = text[..m.Index] + HostileValues[rng.Next(HostileValues.Length)] + text[(m.Index + m.Length)..];
                    bytes = Encoding.UTF8.GetBytes(text).ToList();
                    break;
                }
                case 2: bytes[rng.Next(bytes.Count)] = (byte)rng.Next(256); break;
                case 3: { int at = rng.Next(bytes.Count); bytes.RemoveRange(at, Math.Min(bytes.Count - at, 1 + rng.Next(8))); break; }
                case 4: { int at = rng.Next(bytes.Count); int n = Math.Min(bytes.Count - at, 1 + rng.Next(16)); bytes.InsertRange(rng.Next(bytes.Count), bytes.GetRange(at, n)); break; }
                default: bytes.InsertRange(rng.Next(bytes.Count + 1), Encoding.UTF8.GetBytes(HostileValues[rng.Next(HostileValues.Length)])); break;
            }
        }
        return bytes.ToArray();
    }

    /// <summary>Runs <paramref name="check"/> on mutations of <paramref name="valid"/> until the budget is spent; returns the count.</summary>
    private static int Fuzz(string what, byte[] valid, Action<byte[]> check, Type allowed)
    {
        var rng = new Random(Seed);
        var clock = Stopwatch.StartNew();
        int i = 0;
        for (; i < MaxIterations && clock.Elapsed < Budget; i++)
        {
            var input = Mutate(valid, rng);
            try { check(input); }
            catch (Exception ex) when (ex.GetType() != allowed)
            {
                Assert.Fail($"{what}, seed {Seed}, iteration {i}: {ex.GetType().Name}: {ex.Message}\ninput (base64): {Convert.ToBase64String(input)}\n{ex.StackTrace}");
            }
            catch (Exception) { /* the allowed refusal */ }
        }
        return i;
    }

    [Fact]
    public void SafetensorsHeaders()
    {
        string dir = TestData.TempDir("fuzz-safetensors");
        var header = Encoding.UTF8.GetBytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[16,22]},\"__metadata__\":{\"format\":\"pt\"}}");
        int n = 0;
        int count = Fuzz("safetensors header", header, mutated =>
        {
            string path = Path.Combine(dir, $"f{n++ % 8}.safetensors");
            var file = new byte[8 + mutated.Length + 22];
            BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)mutated.Length);
            mutated.CopyTo(file, 8);
            File.WriteAllBytes(path, file);
            SafetensorsFile.Open(path).Dispose();
        }, typeof(ModelLoadException));
        Assert.True(count > 50, $"only {count} iterations");
    }

    [Fact]
    public void ConfigJson()
    {
        var valid = File.ReadAllBytes(Path.Combine(TestData.ConformanceBf16, "config.json"));
        int count = Fuzz("config.json", valid, mutated => LlamaConfig.Parse(Encoding.UTF8.GetString(mutated), "fuzzed config.json"), typeof(ModelLoadException));
        Assert.True(count > 50, $"only {count} iterations");
    }

    [Fact]
    public void ExperimentSpecs()
    {
        string dir = TestData.TempDir("fuzz-spec");
        var valid = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new
        {
            name = "fuzz", model = "m", new_tokens = 3, repetitions = 1, warmup = 0, threads = 1, smoothquant_alpha = 0.5, accelerator = "cpu",
            prompts = new object[] { new { name = "a", text = "Once" }, new { name = "b", ids = new[] { 1, 2 }, expected_ids = new[] { 3 } } },
            backends = new object[] { new { name = "reference", schemes = new[] { "exact" } } },
            calibration_prompts = new[] { "calibrate" },
        }));
        string path = Path.Combine(dir, "spec.json");
        int count = Fuzz("experiment spec", valid, mutated =>
        {
            File.WriteAllBytes(path, mutated);
            ExperimentSpec.Load(path).Validate();
        }, typeof(ExperimentSpecException));
        Assert.True(count > 50, $"only {count} iterations");
    }

    [Fact]
    public void ResultsLines()
    {
        string dir = TestData.TempDir("fuzz-results");
        string runs = Path.Combine(dir, "runs");
        Directory.CreateDirectory(runs);
        var header = new ResultRecord { Type = "run", RunId = "r", Experiment = "fuzz", TimestampUtc = "2026-01-01T00:00:00", Model = "/m/tiny", Command = "x", Shard = "0/1" };
        var result = new ResultRecord
        {
            Type = "result", RunId = "r", Experiment = "fuzz", TimestampUtc = "2026-01-01T00:00:01", Backend = "ilgpu-fp16", Scheme = "fp16", Prompt = "a",
            NewTokens = 3, GreedyMatches = 2, TeacherForcedMatches = 3, FirstDivergence = 2, PromptIds = [1, 2], OracleIds = [4, 5, 6], GeneratedIds = [4, 5, 7],
            KlMean = 0.1, KlMax = 0.2, MaxAbsLogitError = 0.3, DecodeTokensPerSec = new RateStats(10, 9, 11, 3), NearTie = new NearTie(2, 6, 7, true, true, 0.01),
        };
        var valid = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header, ResultRecord.Json) + "\n" + JsonSerializer.Serialize(result, ResultRecord.Json));
        // Lines are batched: each batch of mutated lines is one results file, read and tabulated as `table` does.
        var batch = new List<byte[]>();
        int count = Fuzz("results lines", valid, mutated =>
        {
            batch.Add(mutated);
            if (batch.Count < 100) return;
            File.WriteAllBytes(Path.Combine(runs, "fuzz.jsonl"), batch.SelectMany(b => b.Append((byte)'\n')).ToArray());
            batch.Clear();
            foreach (var f in ResultTables.Regenerate(dir, _ => { }))
                Assert.Equal(dir, Path.GetDirectoryName(f));
        }, typeof(ResultsFileException));
        Assert.True(count > 200, $"only {count} iterations");
    }
}
