using System.Text.Json;
using System.Text.Json.Serialization;

namespace GpuIntLab.Experiments;

/// <summary>
/// A <c>"type": "corpus"</c> line: one backend x scheme over the corpus chunks a run (or shard) evaluated. The
/// headline figures are for the chunks of this line; <c>chunk_scores</c> holds each chunk's sums (and per-position
/// KL), which is what <c>table</c> merges across shards before recomputing every figure and uncertainty.
/// </summary>
public sealed class CorpusRecord
{
    public const string TypeName = "corpus";
    [JsonPropertyName("type")] public string Type { get; set; } = TypeName;
    [JsonPropertyName("run_id")] public string RunId { get; set; } = "";
    [JsonPropertyName("experiment")] public string Experiment { get; set; } = "";
    [JsonPropertyName("timestamp_utc")] public string TimestampUtc { get; set; } = "";
    [JsonPropertyName("backend")] public string Backend { get; set; } = "";
    [JsonPropertyName("scheme")] public string Scheme { get; set; } = "";
    /// <summary>The KV cache the line ran with (the spec's kv_cache, else the backend's own); null in lines written before it was recorded.</summary>
    [JsonPropertyName("kv_cache")] public string? KvCache { get; set; }
    /// <summary>The weight scheme's identity (element, block, scale encoding and rule, bits), null for backends without one.</summary>
    [JsonPropertyName("weight_scheme")] public WeightSchemeIdentity? WeightScheme { get; set; }
    [JsonPropertyName("accelerator")] public string? Accelerator { get; set; }
    [JsonPropertyName("shard")] public string? Shard { get; set; }
    [JsonPropertyName("corpus")] public string? Corpus { get; set; }
    [JsonPropertyName("corpus_hash")] public string CorpusHash { get; set; } = "";
    [JsonPropertyName("model_hash")] public string? ModelHash { get; set; }
    [JsonPropertyName("context")] public int Context { get; set; }
    [JsonPropertyName("chunks")] public int Chunks { get; set; }
    [JsonPropertyName("chunks_total")] public int ChunksTotal { get; set; }
    [JsonPropertyName("tokens_scored")] public int TokensScored { get; set; }
    [JsonPropertyName("ppl")] public double Ppl { get; set; }
    [JsonPropertyName("ppl_base")] public double PplBase { get; set; }
    [JsonPropertyName("ppl_ratio")] public double PplRatio { get; set; }
    [JsonPropertyName("ppl_ratio_ci95")] public double[] PplRatioCi95 { get; set; } = [];
    [JsonPropertyName("kl_mean")] public double KlMean { get; set; }
    [JsonPropertyName("kl_mean_se")] public double KlMeanSe { get; set; }
    [JsonPropertyName("kl_mean_naive_se")] public double KlMeanNaiveSe { get; set; }
    [JsonPropertyName("kl_p50")] public double KlP50 { get; set; }
    [JsonPropertyName("kl_p90")] public double KlP90 { get; set; }
    [JsonPropertyName("kl_p99")] public double KlP99 { get; set; }
    [JsonPropertyName("kl_p999")] public double KlP999 { get; set; }
    [JsonPropertyName("kl_max")] public double KlMax { get; set; }
    [JsonPropertyName("percentile_method")] public string PercentileMethod { get; set; } = CorpusStatistics.PercentileMethod;
    [JsonPropertyName("same_top1")] public double SameTop1 { get; set; }
    [JsonPropertyName("same_top1_se")] public double SameTop1Se { get; set; }
    [JsonPropertyName("same_top1_naive_se")] public double SameTop1NaiveSe { get; set; }
    [JsonPropertyName("dp_mean")] public double DpMean { get; set; }
    [JsonPropertyName("dp_mean_se")] public double DpMeanSe { get; set; }
    [JsonPropertyName("dp_mean_naive_se")] public double DpMeanNaiveSe { get; set; }
    [JsonPropertyName("dp_rms")] public double DpRms { get; set; }
    [JsonPropertyName("dp_rms_se")] public double DpRmsSe { get; set; }
    [JsonPropertyName("se_method")] public string SeMethod { get; set; } = CorpusStatistics.SeMethod;
    /// <summary>Teacher-forced evaluation rate of the backend (tokens fed a second, prefill and decode together).</summary>
    [JsonPropertyName("eval_tokens_per_sec")] public double? EvalTokensPerSec { get; set; }
    [JsonPropertyName("baseline_cache_hits")] public int? BaselineCacheHits { get; set; }
    [JsonPropertyName("baseline_cache_misses")] public int? BaselineCacheMisses { get; set; }
    [JsonPropertyName("attribution")] public StageErrorMatrix? Attribution { get; set; }
    [JsonPropertyName("attribution_worst")] public WorstStage? AttributionWorst { get; set; }
    [JsonPropertyName("chunk_scores")] public List<ChunkScore> ChunkScores { get; set; } = [];

    /// <summary>Fills the headline figures from the chunk scores.</summary>
    public void Fill(IReadOnlyList<ChunkScore> chunks)
    {
        ChunkScores = [.. chunks];
        var s = CorpusStatistics.Summarize(chunks);
        Chunks = s.Chunks; TokensScored = s.TokensScored;
        Ppl = s.Ppl; PplBase = s.PplBase; PplRatio = s.PplRatio; PplRatioCi95 = [s.PplRatioCi95.Low, s.PplRatioCi95.High];
        KlMean = s.Kl.Mean; KlMeanSe = s.Kl.Se; KlMeanNaiveSe = s.Kl.NaiveSe;
        KlP50 = s.KlP50; KlP90 = s.KlP90; KlP99 = s.KlP99; KlP999 = s.KlP999; KlMax = s.KlMax;
        SameTop1 = s.SameTop1.Mean; SameTop1Se = s.SameTop1.Se; SameTop1NaiveSe = s.SameTop1.NaiveSe;
        DpMean = s.Dp.Mean; DpMeanSe = s.Dp.Se; DpMeanNaiveSe = s.Dp.NaiveSe; DpRms = s.DpRms; DpRmsSe = s.DpRmsSe;
        if (Attribution?.Worst() is var (layer, stage, error)) AttributionWorst = new WorstStage(layer, stage, error);
    }

    /// <summary>The scheme as tables show it (with "+kv-FORMAT" when a non-default KV cache was chosen).</summary>
    public string SchemeLabel => ResultTables.SchemeLabel(Scheme, KvCache);

    public string Key => $"{Backend}/{SchemeLabel}";
}

/// <summary>The layer and stage where a backend's relative error is largest (layer -1: after the last layer).</summary>
public sealed record WorstStage(
    [property: JsonPropertyName("layer")] int Layer,
    [property: JsonPropertyName("stage")] string Stage,
    [property: JsonPropertyName("rel_error")] double RelativeError);

/// <summary>A <c>"type": "paired"</c> line: backend x scheme A against B on the chunks both evaluated.</summary>
public sealed class PairedRecord
{
    public const string TypeName = "paired";
    [JsonPropertyName("type")] public string Type { get; set; } = TypeName;
    [JsonPropertyName("run_id")] public string RunId { get; set; } = "";
    [JsonPropertyName("experiment")] public string Experiment { get; set; } = "";
    [JsonPropertyName("timestamp_utc")] public string TimestampUtc { get; set; } = "";
    [JsonPropertyName("a")] public string A { get; set; } = "";
    [JsonPropertyName("b")] public string B { get; set; } = "";
    [JsonPropertyName("corpus_hash")] public string CorpusHash { get; set; } = "";
    [JsonPropertyName("context")] public int Context { get; set; }
    [JsonPropertyName("chunks")] public int Chunks { get; set; }
    [JsonPropertyName("tokens_scored")] public int TokensScored { get; set; }
    /// <summary>mean KL(A) - mean KL(B), paired by chunk.</summary>
    [JsonPropertyName("kl_diff")] public double KlDiff { get; set; }
    [JsonPropertyName("kl_diff_se")] public double KlDiffSe { get; set; }
    [JsonPropertyName("kl_diff_ci95")] public double[] KlDiffCi95 { get; set; } = [];
    [JsonPropertyName("kl_verdict")] public string KlVerdict { get; set; } = "";
    /// <summary>Two-sided p-value of the KL difference (the interval's paired t test), for corrections over many comparisons.</summary>
    [JsonPropertyName("kl_p_value")] public double KlPValue { get; set; }
    /// <summary>Whether the spec planned this comparison ("comparisons"), rather than the table choosing it.</summary>
    [JsonPropertyName("planned")] public bool Planned { get; set; }
    /// <summary>same-top-1(A) - same-top-1(B), paired by chunk.</summary>
    [JsonPropertyName("same_top1_diff")] public double SameTop1Diff { get; set; }
    [JsonPropertyName("same_top1_diff_se")] public double SameTop1DiffSe { get; set; }
    [JsonPropertyName("same_top1_diff_ci95")] public double[] SameTop1DiffCi95 { get; set; } = [];
    [JsonPropertyName("same_top1_verdict")] public string SameTop1Verdict { get; set; } = "";
    [JsonPropertyName("se_method")] public string SeMethod { get; set; } = "paired over chunks: per-chunk difference of sums, cluster-robust SE, 95% Student t interval (K-1 df)";

    /// <summary>The paired record of A against B, or null when they share fewer than two chunks.</summary>
    public static PairedRecord? Of(CorpusRecord a, CorpusRecord b)
    {
        var kl = CorpusStatistics.Paired(a.ChunkScores, b.ChunkScores, c => c.KlSum);
        var same = CorpusStatistics.Paired(a.ChunkScores, b.ChunkScores, c => c.SameTop1);
        if (kl == null || same == null) return null;
        return new PairedRecord
        {
            RunId = a.RunId, Experiment = a.Experiment, A = a.Key, B = b.Key, CorpusHash = a.CorpusHash, Context = a.Context,
            Chunks = kl.Chunks, TokensScored = kl.Positions,
            KlDiff = kl.Difference, KlDiffSe = kl.Se, KlDiffCi95 = [kl.Low, kl.High],
            KlVerdict = CorpusStatistics.Verdict(kl, $"{a.Key} KL", b.Key), KlPValue = kl.PValue,
            SameTop1Diff = same.Difference, SameTop1DiffSe = same.Se, SameTop1DiffCi95 = [same.Low, same.High],
            SameTop1Verdict = CorpusStatistics.Verdict(same, $"{a.Key} same-top-1", b.Key),
        };
    }

    /// <summary>Up to this many rows with a non-zero KL, every pair is compared; beyond it, neighbours in the KL ranking and the planned pairs.</summary>
    public const int AllPairsLimit = 8;

    /// <summary>
    /// The comparisons an experiment reports: every pair when at most <see cref="AllPairsLimit"/> rows have a non-zero KL
    /// (an exact engine against another is no comparison); otherwise each row against its neighbour in the ranking by mean
    /// KL (is the order real?) and the spec's planned pairs, which are marked. Rows are matched by <see cref="CorpusRecord.Key"/>.
    /// </summary>
    public static List<PairedRecord> Selected(IReadOnlyList<CorpusRecord> records, IReadOnlyList<(string A, string B)> planned)
    {
        var rows = records.Where(r => r.KlMax > 0).ToList();
        var byKey = rows.GroupBy(r => r.Key).ToDictionary(g => g.Key, g => g.Last(), StringComparer.Ordinal);
        // One comparison per unordered pair; a planned pair keeps the spec's order (A - B) and its mark.
        var chosen = new Dictionary<(string, string), (CorpusRecord A, CorpusRecord B, bool Planned)>();
        void Add(CorpusRecord a, CorpusRecord b, bool isPlanned)
        {
            var key = string.CompareOrdinal(a.Key, b.Key) < 0 ? (a.Key, b.Key) : (b.Key, a.Key);
            if (!chosen.ContainsKey(key)) chosen[key] = (a, b, isPlanned);
        }
        foreach (var (a, b) in planned)
            if (byKey.TryGetValue(a, out var ra) && byKey.TryGetValue(b, out var rb)) Add(ra, rb, true);
        if (rows.Count <= AllPairsLimit)
        {
            for (int i = 0; i < rows.Count; i++)
                for (int j = i + 1; j < rows.Count; j++) Add(rows[i], rows[j], false);
        }
        else
        {
            var ranked = rows.OrderBy(r => r.KlMean).ThenBy(r => r.Key, StringComparer.Ordinal).ToList();
            for (int i = 0; i + 1 < ranked.Count; i++) Add(ranked[i], ranked[i + 1], false);
        }
        var pairs = new List<PairedRecord>();
        foreach (var (a, b, isPlanned) in chosen.Values)
            if (a.CorpusHash == b.CorpusHash && a.Context == b.Context && Of(a, b) is { } p) { p.Planned = isPlanned; pairs.Add(p); }
        return pairs;
    }

}

public static class CorpusResults
{
    /// <summary>The corpus and paired lines of every *.jsonl under the folder (other lines are skipped; unreadable lines are reported).</summary>
    public static (List<CorpusRecord> Corpus, List<PairedRecord> Paired) ReadAll(string folder, Action<string>? warn = null)
    {
        var corpus = new List<CorpusRecord>();
        var paired = new List<PairedRecord>();
        if (!Directory.Exists(folder)) return (corpus, paired);
        foreach (var file in Directory.GetFiles(folder, "*.jsonl", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            int lineNumber = 0;
            foreach (var line in File.ReadLines(file))
            {
                lineNumber++;
                if (!line.Contains("\"corpus\"", StringComparison.Ordinal) && !line.Contains("\"paired\"", StringComparison.Ordinal)) continue;
                try
                {
                    using var doc = JsonDocument.Parse(line);
                    string? type = doc.RootElement.TryGetProperty("type", out var t) ? t.GetString() : null;
                    if (type == "corpus") corpus.Add(doc.Deserialize<CorpusRecord>(ResultRecord.Json)!);
                    else if (type == "paired") paired.Add(doc.Deserialize<PairedRecord>(ResultRecord.Json)!);
                }
                catch (JsonException e) { warn?.Invoke($"{file}:{lineNumber}: skipped unreadable line ({e.Message})"); }
            }
        }
        return (corpus, paired);
    }

    /// <summary>
    /// Merges corpus records per experiment x backend x scheme x corpus x context: for each chunk the newest record's
    /// score wins (shards of one run have disjoint chunks and simply join; a rerun replaces older chunks), and the
    /// attribution sums of the records that contributed chunks are added. Every figure is then recomputed from the
    /// merged chunk scores, so merged uncertainties are those of an unsharded run over the same chunks.
    /// </summary>
    public static List<CorpusRecord> Merge(IEnumerable<CorpusRecord> records)
    {
        var merged = new List<CorpusRecord>();
        foreach (var g in records.GroupBy(r => (r.Experiment, r.Backend, r.Scheme, Kv: ResultTables.SchemeLabel(r.Scheme, r.KvCache), r.CorpusHash, r.Context)))
        {
            var ordered = g.OrderBy(r => r.TimestampUtc, StringComparer.Ordinal).ToList();
            var owner = new Dictionary<int, (CorpusRecord Record, ChunkScore Score)>();
            foreach (var r in ordered)
                foreach (var c in r.ChunkScores) owner[c.Chunk] = (r, c);
            if (owner.Count == 0) continue;
            var contributors = owner.Values.Select(v => v.Record).Distinct().ToList();
            var newest = ordered[^1];
            StageErrorMatrix? attribution = null;
            foreach (var r in contributors.Where(r => r.Attribution != null))
            {
                if (attribution == null) { attribution = StageErrorMatrix.Empty(r.Attribution!.Layers.Length - 1); }
                attribution.Add(r.Attribution!);
            }
            var rates = contributors.Where(r => r.EvalTokensPerSec.HasValue).Select(r => r.EvalTokensPerSec!.Value).ToList();
            var m = new CorpusRecord
            {
                RunId = string.Join(",", contributors.Select(r => r.RunId).Distinct()), Experiment = g.Key.Experiment, TimestampUtc = newest.TimestampUtc,
                Backend = g.Key.Backend, Scheme = g.Key.Scheme, KvCache = newest.KvCache, WeightScheme = newest.WeightScheme, Accelerator = newest.Accelerator, Corpus = newest.Corpus,
                CorpusHash = g.Key.CorpusHash, ModelHash = newest.ModelHash, Context = g.Key.Context, ChunksTotal = newest.ChunksTotal,
                EvalTokensPerSec = rates.Count > 0 ? RateStats.Of(rates)!.Median : null, Attribution = attribution,
            };
            m.Fill(owner.OrderBy(kv => kv.Key).Select(kv => kv.Value.Score).ToList());
            merged.Add(m);
        }
        return merged;
    }
}
