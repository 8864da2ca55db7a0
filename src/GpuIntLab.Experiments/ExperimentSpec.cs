using System.Text.Json;
using System.Text.Json.Serialization;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Experiments;

/// <summary>A prompt given as text (encoded with the model's tokenizer) or as token ids (used as given).</summary>
public sealed class PromptSpec
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("text")] public string? Text { get; set; }
    [JsonPropertyName("ids")] public int[]? Ids { get; set; }
    /// <summary>Optional ids an outside reference generated (e.g. the C lab's float reference), reported beside the oracle's.</summary>
    [JsonPropertyName("expected_ids")] public int[]? ExpectedIds { get; set; }
    [JsonPropertyName("note")] public string? Note { get; set; }
}

/// <summary>A backend and the schemes to run it under (all of its schemes when none are named).</summary>
public sealed class BackendSpec
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("schemes")] public string[]? Schemes { get; set; }
    /// <summary>KV-cache format (a provider's <see cref="IKvCacheFormats"/>); null = the backend's own.</summary>
    [JsonPropertyName("kv_cache")] public string? KvCache { get; set; }
}

/// <summary>An experiment file in <c>experiments/</c>: model, prompts, token counts, backends x schemes, timing.</summary>
public sealed class ExperimentSpec
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("description")] public string? Description { get; set; }
    /// <summary>Model folder, relative to the spec file or absolute; "$NAME" reads the environment variable NAME.</summary>
    [JsonPropertyName("model")] public string Model { get; set; } = "";
    [JsonPropertyName("prompts")] public List<PromptSpec> Prompts { get; set; } = [];
    [JsonPropertyName("new_tokens")] public int NewTokens { get; set; } = 20;
    [JsonPropertyName("backends")] public List<BackendSpec> Backends { get; set; } = [];
    [JsonPropertyName("calibration_prompts")] public List<string> CalibrationPrompts { get; set; } = [];
    [JsonPropertyName("repetitions")] public int Repetitions { get; set; } = 3;
    [JsonPropertyName("warmup")] public int Warmup { get; set; } = 1;
    [JsonPropertyName("accelerator")] public string Accelerator { get; set; } = "auto";
    [JsonPropertyName("threads")] public int Threads { get; set; }
    [JsonPropertyName("smoothquant_alpha")] public double SmoothQuantAlpha { get; set; } = 0.5;
    /// <summary>Optional corpus evaluated teacher-forced for every backend x scheme (KL, same top-1, perplexity ratio).</summary>
    [JsonPropertyName("corpus")] public CorpusSpec? Corpus { get; set; }
    /// <summary>
    /// Planned corpus comparisons, each ["backend/scheme", "backend/scheme"] as tables name rows (a "+kv-FORMAT" suffix for a
    /// chosen KV cache): always reported with their paired verdict, and corrected together for multiple testing (Holm).
    /// </summary>
    [JsonPropertyName("comparisons")] public List<string[]> Comparisons { get; set; } = [];

    [JsonIgnore] public string SourcePath { get; private set; } = "";

    public static ExperimentSpec Load(string path)
    {
        if (!File.Exists(path)) throw new ExperimentSpecException($"{path}: experiment file not found");
        ExperimentSpec? spec;
        string json = File.ReadAllText(path);
        SpecChecks.CheckKeys(path, json);
        try { spec = JsonSerializer.Deserialize<ExperimentSpec>(json, new JsonSerializerOptions { ReadCommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new ExperimentSpecException($"{path}: not a valid experiment spec ({e.Message})"); }
        if (spec == null) throw new ExperimentSpecException($"{path}: empty experiment spec");
        spec.SourcePath = Path.GetFullPath(path);
        return spec;
    }

    /// <summary>The model folder: an override (e.g. --model), else the spec's, resolved against the spec's folder.</summary>
    public string ResolveModel(string? overridePath)
    {
        string raw = overridePath ?? (Model.StartsWith('$') ? Environment.GetEnvironmentVariable(Model[1..]) ?? "" : Model);
        if (string.IsNullOrWhiteSpace(raw))
            throw new ExperimentSpecException($"{SourcePath}: model '{Model}' is not set; pass --model DIR" + (Model.StartsWith('$') ? $" or set {Model[1..]}" : ""));
        return Path.IsPathRooted(raw) ? raw : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(SourcePath) ?? ".", raw));
    }

    /// <summary>Every (backend, scheme) pair in spec order, each backend's schemes checked against its provider.</summary>
    public List<(IEngineProvider Provider, string Scheme, string? KvCache)> ResolveBackends(Func<string, IEngineProvider?> find, IEnumerable<string> known)
    {
        var units = new List<(IEngineProvider, string, string?)>();
        foreach (var b in Backends)
        {
            var provider = find(b.Name) ?? throw new ExperimentSpecException($"{SourcePath}: unknown backend '{b.Name}' (known: {string.Join(", ", known)})");
            if (b.KvCache != null && !(provider is IKvCacheFormats kv && kv.KvCacheFormats.Contains(b.KvCache)))
                throw new ExperimentSpecException($"{SourcePath}: backend '{b.Name}' has no kv_cache '{b.KvCache}' ({(provider is IKvCacheFormats k ? "its formats: " + string.Join(", ", k.KvCacheFormats) : "it runs only its own cache")})");
            foreach (var scheme in b.Schemes is { Length: > 0 } ? b.Schemes : provider.Schemes)
            {
                if (!provider.Schemes.Contains(scheme))
                    throw new ExperimentSpecException($"{SourcePath}: backend '{b.Name}' has no scheme '{scheme}' (its schemes: {string.Join(", ", provider.Schemes)})");
                units.Add((provider, scheme, b.KvCache));
            }
        }
        var rows = units.Select(u => $"{u.Item1.Name}/{ResultTables.SchemeLabel(u.Item2, u.Item3)}").ToHashSet(StringComparer.Ordinal);
        foreach (var pair in Comparisons)
        {
            if (pair is not { Length: 2 } || pair[0] == pair[1])
                throw new ExperimentSpecException($"{SourcePath}: each of 'comparisons' must be two different rows [\"backend/scheme\", \"backend/scheme\"] (got [{string.Join(", ", pair ?? [])}])");
            foreach (var row in pair)
                if (!rows.Contains(row))
                    throw new ExperimentSpecException($"{SourcePath}: comparison row '{row}' is not a backend/scheme of this spec (rows: {string.Join(", ", rows)})");
        }
        return units;
    }

    /// <summary>The planned comparisons as (A, B) row keys.</summary>
    public IReadOnlyList<(string A, string B)> PlannedComparisons => Comparisons.Select(p => (p[0], p[1])).ToList();

    /// <summary>Checks everything that can be checked before any work: fails with one clear message.</summary>
    public void Validate()
    {
        string where = SourcePath;
        if (string.IsNullOrWhiteSpace(Name)) throw new ExperimentSpecException($"{where}: 'name' is missing");
        if (Prompts.Count == 0) throw new ExperimentSpecException($"{where}: no prompts");
        foreach (var p in Prompts)
        {
            if (string.IsNullOrWhiteSpace(p.Name)) throw new ExperimentSpecException($"{where}: a prompt has no 'name'");
            if ((p.Text == null) == (p.Ids == null)) throw new ExperimentSpecException($"{where}: prompt '{p.Name}' needs exactly one of 'text' or 'ids'");
        }
        if (Prompts.Select(p => p.Name).Distinct().Count() != Prompts.Count) throw new ExperimentSpecException($"{where}: prompt names must be unique");
        if (NewTokens < 1) throw new ExperimentSpecException($"{where}: new_tokens must be at least 1");
        if (Backends.Count == 0) throw new ExperimentSpecException($"{where}: no backends");
        if (Repetitions < 1) throw new ExperimentSpecException($"{where}: repetitions must be at least 1");
        if (Warmup < 0) throw new ExperimentSpecException($"{where}: warmup must be 0 or more");
        if (Accelerator is not ("auto" or "cpu" or "cuda")) throw new ExperimentSpecException($"{where}: accelerator must be auto, cpu or cuda (got '{Accelerator}')");
        SpecChecks.CheckValues(this);
        Corpus?.Validate(where);
    }

    public EngineOptions EngineOptionsFor(string scheme, IReadOnlyList<int[]> calibration, string? kvCache = null) =>
        new(scheme, Accelerator, Threads, calibration, SmoothQuantAlpha, kvCache ?? "float32");
}

public sealed class ExperimentSpecException(string message) : Exception(message);
