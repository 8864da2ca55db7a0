using System.Text.Json;
using System.Text.Json.Serialization;

namespace GpuIntLab.Experiments;

/// <summary>Where and when a run happened: enough to reproduce or discount a number.</summary>
public sealed class EnvironmentInfo
{
    [JsonPropertyName("cpu")] public string Cpu { get; set; } = "";
    [JsonPropertyName("cores")] public int Cores { get; set; }
    [JsonPropertyName("os")] public string Os { get; set; } = "";
    [JsonPropertyName("dotnet")] public string DotNet { get; set; } = "";
    [JsonPropertyName("commit")] public string Commit { get; set; } = "";
    [JsonPropertyName("date_utc")] public string DateUtc { get; set; } = "";
    [JsonPropertyName("machine")] public string Machine { get; set; } = "";
}

/// <summary>One line of a results file: a run header, a result, or an error. <c>type</c> says which.</summary>
public sealed class ResultRecord
{
    [JsonPropertyName("type")] public string Type { get; set; } = "";            // run | result | error
    [JsonPropertyName("run_id")] public string RunId { get; set; } = "";
    [JsonPropertyName("experiment")] public string Experiment { get; set; } = "";
    [JsonPropertyName("timestamp_utc")] public string TimestampUtc { get; set; } = "";

    // run header
    [JsonPropertyName("spec_path")] public string? SpecPath { get; set; }
    [JsonPropertyName("model")] public string? Model { get; set; }
    [JsonPropertyName("command")] public string? Command { get; set; }
    [JsonPropertyName("shard")] public string? Shard { get; set; }
    [JsonPropertyName("environment")] public EnvironmentInfo? Environment { get; set; }

    // result / error
    [JsonPropertyName("backend")] public string? Backend { get; set; }
    [JsonPropertyName("scheme")] public string? Scheme { get; set; }
    /// <summary>The spec's kv_cache for this backend entry; null = the backend's own cache.</summary>
    [JsonPropertyName("kv_cache")] public string? KvCache { get; set; }
    /// <summary>What the decoder linears are stored in (element, block, scale encoding and rule); null for lines without a backend.</summary>
    [JsonPropertyName("weight_scheme")] public WeightSchemeIdentity? WeightScheme { get; set; }
    [JsonPropertyName("prompt")] public string? Prompt { get; set; }
    [JsonPropertyName("error")] public string? Error { get; set; }
    [JsonPropertyName("accelerator")] public string? Accelerator { get; set; }
    [JsonPropertyName("format")] public string? Format { get; set; }
    [JsonPropertyName("precisions")] public Dictionary<string, string>? Precisions { get; set; }
    [JsonPropertyName("prompt_ids")] public int[]? PromptIds { get; set; }
    [JsonPropertyName("oracle_ids")] public int[]? OracleIds { get; set; }
    [JsonPropertyName("generated_ids")] public int[]? GeneratedIds { get; set; }
    [JsonPropertyName("expected_ids")] public int[]? ExpectedIds { get; set; }
    [JsonPropertyName("new_tokens")] public int? NewTokens { get; set; }
    [JsonPropertyName("greedy_matches")] public int? GreedyMatches { get; set; }
    [JsonPropertyName("first_divergence")] public int? FirstDivergence { get; set; }
    [JsonPropertyName("near_tie")] public NearTie? NearTie { get; set; }
    [JsonPropertyName("teacher_forced_matches")] public int? TeacherForcedMatches { get; set; }
    [JsonPropertyName("kl_mean")] public double? KlMean { get; set; }
    [JsonPropertyName("kl_max")] public double? KlMax { get; set; }
    [JsonPropertyName("max_abs_logit_error")] public double? MaxAbsLogitError { get; set; }
    [JsonPropertyName("expected_matches")] public int? ExpectedMatches { get; set; }
    [JsonPropertyName("prefill_tokens_per_sec")] public RateStats? PrefillTokensPerSec { get; set; }
    [JsonPropertyName("decode_tokens_per_sec")] public RateStats? DecodeTokensPerSec { get; set; }
    [JsonPropertyName("deterministic_across_repetitions")] public bool? DeterministicAcrossRepetitions { get; set; }

    public static readonly JsonSerializerOptions Json = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        WriteIndented = false,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}

/// <summary>
/// Appends records to a JSON-lines file, each line one unbuffered write of the whole line, so an interrupted run
/// loses nothing written and leaves at most a torn last line. <paramref name="createNew"/> refuses an existing file.
/// </summary>
public sealed class ResultWriter : IDisposable
{
    private readonly FileStream _stream;
    public string Path { get; }

    public ResultWriter(string path, bool createNew = false)
    {
        Path = path;
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        _stream = new FileStream(path, createNew ? FileMode.CreateNew : FileMode.Append, FileAccess.Write, FileShare.Read, bufferSize: 0);
    }

    /// <summary>Any record type of the results file (result, corpus, paired) as one line.</summary>
    public void Write<TRecord>(TRecord record)
    {
        _stream.Write(System.Text.Encoding.UTF8.GetBytes(JsonSerializer.Serialize(record, ResultRecord.Json) + "\n"));
        _stream.Flush();
    }

    public void Dispose() => _stream.Dispose();
}

public static class ResultReader
{
    /// <summary>Every record of every *.jsonl under the folder (recursively), in file then line order; unreadable lines are reported, not fatal.</summary>
    public static List<ResultRecord> ReadAll(string folder, Action<string>? warn = null)
    {
        var records = new List<ResultRecord>();
        if (!Directory.Exists(folder)) return records;
        foreach (var file in Directory.GetFiles(folder, "*.jsonl", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            int lineNumber = 0;
            foreach (var line in File.ReadLines(file))
            {
                lineNumber++;
                if (string.IsNullOrWhiteSpace(line)) continue;
                try
                {
                    var r = JsonSerializer.Deserialize<ResultRecord>(line, ResultRecord.Json);
                    // Corpus and paired lines share the files; CorpusResults reads (and checks) those.
                    if (r?.Type is CorpusRecord.TypeName or PairedRecord.TypeName) continue;
                    if (ResultsStore.RecordProblem(r) is string problem) warn?.Invoke($"{file}:{lineNumber}: skipped malformed record ({problem})");
                    else records.Add(r!);
                }
                // InvalidOperationException: a string escaping half a surrogate pair parses but cannot be decoded.
                catch (Exception e) when (e is JsonException or InvalidOperationException) { warn?.Invoke($"{file}:{lineNumber}: skipped unreadable line ({e.Message})"); }
            }
        }
        return records;
    }
}
