using System.Globalization;
using System.Text;

namespace GpuIntLab.Experiments;

/// <summary>One backend x scheme row of an experiment's summary, aggregated over its prompts.</summary>
public sealed record SummaryRow(string Backend, string Scheme, string Accelerator, int Matches, int Total, int TeacherForced,
    double? KlMean, double? KlMax, double? MaxLogitError, double? PrefillRate, double? DecodeRate, int NearTies, int Divergences,
    int? ExpectedMatches, int ExpectedTotal, string? Error)
{
    public string Key => $"{Backend}/{Scheme}";
}

/// <summary>
/// Regenerates the markdown tables from recorded runs. For each experiment, the newest record of each
/// backend x scheme x prompt cell wins, so shards of one run merge and a rerun replaces older numbers.
/// </summary>
public static class ResultTables
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    /// <summary>The newest result or error per cell, by experiment, among the records defined like the newest one (see <see cref="ResultCells"/>).</summary>
    public static Dictionary<string, List<ResultRecord>> LatestCells(IEnumerable<ResultRecord> records, Action<string>? warn = null)
    {
        var all = records.ToList();
        var headers = all.Where(r => r.Type == "run").GroupBy(r => r.RunId).ToDictionary(g => g.Key, g => g.First());
        return all.Where(r => r.Type is "result" or "error")
            .GroupBy(r => r.Experiment)
            .ToDictionary(g => g.Key, g => ResultCells.Latest(g.Key, g.ToList(), headers, warn));
    }

    /// <summary>The scheme as a table shows it: with "+kv-FORMAT" when the spec chose a KV-cache format other than the backend's own.</summary>
    public static string SchemeKey(ResultRecord r) => SchemeLabel(r.Scheme!, r.KvCache);

    /// <summary>A scheme with "+kv-FORMAT" appended when the KV cache is not the backend's own (float32 / native).</summary>
    public static string SchemeLabel(string scheme, string? kvCache) =>
        kvCache is null or "float32" or "native" ? scheme : $"{scheme}+kv-{kvCache}";

    public static List<SummaryRow> Summarize(IReadOnlyList<ResultRecord> cells)
    {
        var rows = new List<SummaryRow>();
        foreach (var g in cells.GroupBy(r => (r.Backend!, SchemeKey(r))))
        {
            var ok = g.Where(r => r.Type == "result").ToList();
            string? error = ok.Count == 0 ? g.Select(r => r.Error).FirstOrDefault(e => e != null) : null;
            double? Median(IEnumerable<double?> values)
            {
                var v = values.Where(x => x.HasValue).Select(x => x!.Value).ToList();
                return v.Count == 0 ? null : RateStats.Of(v)!.Median;
            }
            var withExpected = ok.Where(r => r.ExpectedMatches.HasValue).ToList();
            rows.Add(new SummaryRow(g.Key.Item1, g.Key.Item2,
                ok.Select(r => r.Accelerator).FirstOrDefault() ?? "",
                ok.Sum(r => r.GreedyMatches ?? 0), ok.Sum(r => r.NewTokens ?? 0), ok.Sum(r => r.TeacherForcedMatches ?? 0),
                ok.Count > 0 ? ok.Average(r => r.KlMean ?? 0) : null,
                ok.Count > 0 ? ok.Max(r => r.KlMax ?? 0) : null,
                ok.Count > 0 ? ok.Max(r => r.MaxAbsLogitError ?? 0) : null,
                Median(ok.Select(r => r.PrefillTokensPerSec?.Median)),
                Median(ok.Select(r => r.DecodeTokensPerSec?.Median)),
                ok.Count(r => r.NearTie?.IsNearTie == true), ok.Count(r => r.FirstDivergence.HasValue),
                withExpected.Count > 0 ? withExpected.Sum(r => r.ExpectedMatches!.Value) : null,
                withExpected.Sum(r => Math.Min(r.ExpectedIds?.Length ?? 0, r.NewTokens ?? 0)),
                error));
        }
        return rows;
    }

    /// <summary>The FP16 row a backend's speed is compared with: same family prefix ("ilgpu-", "cuda-"), format fp16.</summary>
    public static SummaryRow? Fp16Baseline(SummaryRow row, IReadOnlyList<SummaryRow> rows)
    {
        int dash = row.Backend.IndexOf('-');
        if (dash < 0) return null;
        string fp16 = row.Backend[..dash] + "-fp16";
        return rows.FirstOrDefault(r => r.Backend == fp16 && r.DecodeRate.HasValue);
    }

    private static string F(double? v, string format) => v.HasValue ? v.Value.ToString(format, Inv) : "-";

    public static string SummaryTable(IReadOnlyList<SummaryRow> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine("| backend | scheme | token match | teacher-forced top-1 | near ties / divergences | mean KL | max KL | max \\|logit err\\| | prefill tok/s | decode tok/s | vs FP16 | accelerator |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in rows)
        {
            if (r.Error != null)
            {
                sb.AppendLine($"| {r.Backend} | {r.Scheme} | {Escape(r.Error)} | | | | | | | | | |");
                continue;
            }
            string pct(int a, int b) => b == 0 ? "-" : $"{a}/{b} ({100.0 * a / b:F1}%)";
            var baseline = Fp16Baseline(r, rows);
            string speedup = baseline != null && r.DecodeRate.HasValue ? $"{r.DecodeRate.Value / baseline.DecodeRate!.Value:F2}x" : "-";
            sb.AppendLine($"| {r.Backend} | {r.Scheme} | {pct(r.Matches, r.Total)} | {pct(r.TeacherForced, r.Total)} | {r.NearTies}/{r.Divergences} | {F(r.KlMean, "0.00e+00")} | {F(r.KlMax, "0.00e+00")} | {F(r.MaxLogitError, "0.00e+00")} | {F(r.PrefillRate, "F1")} | {F(r.DecodeRate, "F1")} | {speedup} | {Escape(r.Accelerator)} |");
        }
        return sb.ToString();
    }

    private static string Escape(string s) => s.Replace("|", "\\|").Replace("\n", " ");

    public static string ExperimentMarkdown(string experiment, IReadOnlyList<ResultRecord> cells, IReadOnlyList<ResultRecord> headers)
    {
        var rows = Summarize(cells);
        var sb = new StringBuilder();
        sb.AppendLine($"# Experiment `{experiment}`");
        sb.AppendLine();
        sb.AppendLine("Generated by `gpuintlab table` from `results/runs/*.jsonl`; do not edit by hand.");
        sb.AppendLine();
        sb.AppendLine("Token match: free-running greedy positions equal to the oracle's. Teacher-forced: the backend is fed the oracle's tokens, so one early miss does not poison the rest. Near ties: first divergences where each side's token is in the other's top-5. KL: KL(oracle || backend) in nats per step. Rates: medians over timed repetitions (warm-up excluded), median over prompts.");
        sb.AppendLine();
        sb.AppendLine(SummaryTable(rows));
        if (rows.Any(r => r.ExpectedMatches.HasValue))
        {
            sb.AppendLine("Agreement with the spec's `expected_ids` (an outside reference's greedy ids):");
            sb.AppendLine();
            foreach (var r in rows.Where(r => r.ExpectedMatches.HasValue))
                sb.AppendLine($"- {r.Key}: {r.ExpectedMatches}/{r.ExpectedTotal}");
            sb.AppendLine();
        }
        sb.AppendLine("## Per prompt");
        sb.AppendLine();
        sb.AppendLine("| backend | scheme | prompt | match | first divergence | near tie (oracle margin) | teacher-forced | decode tok/s (min-max) |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|");
        // Rows follow the summary's (spec) order; a backend x scheme that failed on every prompt is already one summary row.
        var order = rows.Select((r, i) => (r.Key, i)).ToDictionary(x => x.Key, x => x.i);
        var whollyFailed = rows.Where(r => r.Error != null).Select(r => r.Key).ToHashSet();
        foreach (var r in cells.Where(c => !whollyFailed.Contains($"{c.Backend}/{SchemeKey(c)}"))
                     .OrderBy(c => order[$"{c.Backend}/{SchemeKey(c)}"]).ThenBy(c => c.Prompt, StringComparer.Ordinal))
        {
            if (r.Type == "error") { sb.AppendLine($"| {r.Backend} | {SchemeKey(r)} | {r.Prompt} | {Escape(r.Error ?? "")} | | | | |"); continue; }
            string tie = r.NearTie == null ? "-" : $"{(r.NearTie.IsNearTie ? "yes" : "no")} ({r.NearTie.OracleMargin.ToString("F3", Inv)})";
            string rate = r.DecodeTokensPerSec == null ? "-" : $"{F(r.DecodeTokensPerSec.Median, "F1")} ({F(r.DecodeTokensPerSec.Min, "F1")}-{F(r.DecodeTokensPerSec.Max, "F1")})";
            sb.AppendLine($"| {r.Backend} | {SchemeKey(r)} | {r.Prompt} | {r.GreedyMatches}/{r.NewTokens} | {(r.FirstDivergence?.ToString(Inv) ?? "-")} | {tie} | {r.TeacherForcedMatches}/{r.NewTokens} | {rate} |");
        }
        sb.AppendLine();
        sb.AppendLine("## Provenance");
        sb.AppendLine();
        var runIds = cells.Select(c => c.RunId).ToHashSet();
        foreach (var h in headers.Where(h => runIds.Contains(h.RunId)).OrderBy(h => h.TimestampUtc, StringComparer.Ordinal))
        {
            var env = h.Environment;
            sb.AppendLine($"- run `{h.RunId}` (shard {h.Shard}): `{h.Command}`; commit {env?.Commit}, {env?.DateUtc}; {env?.Cpu}, {env?.Cores} cores; {env?.Os}; {env?.DotNet}");
        }
        return sb.ToString();
    }

    /// <summary>Fails now, with one message, when the pages of <paramref name="experiment"/> could not be regenerated in <paramref name="resultsDirectory"/>.</summary>
    public static void CheckCanRegenerate(string resultsDirectory, string experiment)
    {
        ResultsStore.PrepareFolder(resultsDirectory, "results folder");
        ResultsStore.CheckFileTargets([Path.Combine(resultsDirectory, experiment + ".md"), Path.Combine(resultsDirectory, "README.md")]);
    }

    /// <summary>Writes results/&lt;experiment&gt;.md for each experiment and results/README.md as the index; returns the files written.</summary>
    public static List<string> Regenerate(string resultsDirectory, Action<string>? warn = null)
    {
        var records = ResultReader.ReadAll(Path.Combine(resultsDirectory, "runs"), warn);
        var (corpusLines, pairedLines) = CorpusResults.ReadAll(Path.Combine(resultsDirectory, "runs"));
        var corpus = CorpusResults.Merge(corpusLines);
        var headers = records.Where(r => r.Type == "run").ToList();
        var written = new List<string>();
        var index = new StringBuilder();
        index.AppendLine("# Results");
        index.AppendLine();
        index.AppendLine("Generated by `gpuintlab table` from the JSON lines in `runs/`; do not edit by hand. Each experiment's page has per-prompt detail and the provenance (command, commit, date, machine) of every number.");
        index.AppendLine();
        var latest = LatestCells(records, warn);
        // Experiment names come from results lines, possibly merged from other machines: only safe names become paths.
        foreach (var name in latest.Keys)
            if (SafeNames.Problem(name) is string bad) throw new ResultsFileException($"{resultsDirectory}: experiment {bad}");
        ResultsStore.PrepareFolder(resultsDirectory, "results folder");
        ResultsStore.CheckFileTargets(latest.Keys.Select(e => Path.Combine(resultsDirectory, e + ".md")).Append(Path.Combine(resultsDirectory, "README.md")));
        foreach (var (experiment, cells) in latest.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            string file = Path.Combine(resultsDirectory, experiment + ".md");
            var summary = Summarize(cells);
            var corpusRows = CorpusTables.Ordered(corpus.Where(c => c.Experiment == experiment), summary);
            // The planned comparisons travel in the paired lines (the spec is not read here).
            var planned = pairedLines.Where(p => p.Experiment == experiment && p.Planned).Select(p => (p.A, p.B)).Distinct().ToList();
            ResultsStore.WriteTextAtomically(file, ExperimentMarkdown(experiment, cells, headers)
                + CorpusTables.Markdown(experiment, corpusRows, Path.Combine(resultsDirectory, "plots"), summary, planned));
            written.Add(file);
            index.AppendLine($"## [{experiment}]({experiment}.md)");
            index.AppendLine();
            index.AppendLine(SummaryTable(Summarize(cells)));
            var plots = Path.Combine(resultsDirectory, "plots");
            foreach (var png in new[] { $"{experiment}-token-match.png", $"{experiment}-decode-speed.png" })
                if (File.Exists(Path.Combine(plots, png))) index.AppendLine($"![{png}](plots/{png})");
            index.AppendLine();
        }
        string readme = Path.Combine(resultsDirectory, "README.md");
        ResultsStore.WriteTextAtomically(readme, index.ToString());
        written.Add(readme);
        return written;
    }
}
