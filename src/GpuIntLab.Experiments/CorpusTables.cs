using System.Globalization;
using System.Text;

namespace GpuIntLab.Experiments;

/// <summary>The corpus sections of an experiment's page: figures with their uncertainties, paired verdicts, where precision is lost.</summary>
public static class CorpusTables
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private static string E(double v) => v.ToString("0.00e+00", Inv);
    private static string Pct(double v) => (100 * v).ToString("F2", Inv);
    private static string P(double p) => p < 1e-4 ? "<1e-4" : p.ToString("0.0000", Inv);
    private static string PplRatio(CorpusRecord r) =>
        $"{r.PplRatio.ToString("F6", Inv)} [{r.PplRatioCi95[0].ToString("F6", Inv)}, {r.PplRatioCi95[1].ToString("F6", Inv)}]";

    /// <summary>
    /// The rows ranked by corpus mean KL, with each scheme's storage on the TinyLlama-1.1B shape (the lab's reference
    /// shape; the embedded model's own bytes are too small to matter), its greedy match on the prompts, and whether it
    /// differs from the next row.
    /// </summary>
    public static string Ranking(IReadOnlyList<CorpusRecord> merged, IReadOnlyList<SummaryRow> rows, IReadOnlyList<PairedRecord> pairs)
    {
        var ranked = merged.OrderBy(r => r.KlMean).ThenBy(r => r.Key, StringComparer.Ordinal).ToList();
        var byKey = rows.ToDictionary(r => r.Key, StringComparer.Ordinal);
        var shape = Core.Formats.LlamaShape.TinyLlama1B;
        var sb = new StringBuilder();
        sb.AppendLine("### Ranking");
        sb.AppendLine();
        sb.AppendLine($"Rows by corpus mean KL against the oracle (lowest first). Weights: the stored scheme of the decoder linears (`weight_scheme` in the lines); "
            + $"bits/weight and MiB are for the {shape.Name} shape (`WeightSchemeCatalog.Memory`: linears quantized, embeddings, head and norms 16-bit, exact engines 8 bytes throughout). "
            + "Greedy: the prompts' free-running match. vs next: the paired KL verdict against the next row down.");
        sb.AppendLine();
        sb.AppendLine($"| # | backend | scheme | weights | bits/weight | {shape.Name} MiB | mean KL ± SE | same top-1 % ± SE | ppl ratio [95% CI] | greedy | decode tok/s | vs next |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (int i = 0; i < ranked.Count; i++)
        {
            var r = ranked[i];
            var scheme = r.WeightScheme is { } w ? Core.Formats.WeightSchemeCatalog.Find(w.Name) : null;
            var memory = scheme == null ? null : Core.Formats.WeightSchemeCatalog.Memory(shape, scheme);
            string next = "-";
            if (i + 1 < ranked.Count)
            {
                var n = ranked[i + 1];
                var p = pairs.FirstOrDefault(p => (p.A == r.Key && p.B == n.Key) || (p.A == n.Key && p.B == r.Key));
                next = p == null ? (r.KlMax == 0 && n.KlMax == 0 ? "both exact" : "-") : p.KlVerdict.StartsWith("no difference", StringComparison.Ordinal) ? "no difference" : "lower KL";
            }
            byKey.TryGetValue(r.Key, out var prompts);
            string greedy = prompts is { Total: > 0 } ? $"{prompts.Matches}/{prompts.Total}" : "-";
            string rate = prompts?.DecodeRate is double d ? d.ToString("F1", Inv) : "-";
            sb.AppendLine($"| {i + 1} | {r.Backend} | {r.SchemeLabel} | {r.WeightScheme?.Name ?? "-"} | {(memory == null ? "-" : memory.LinearBitsPerWeight.ToString("F3", Inv))} "
                + $"| {(memory == null ? "-" : (memory.TotalBytes / 1048576.0).ToString("F0", Inv))} | {E(r.KlMean)} ± {E(r.KlMeanSe)} | {Pct(r.SameTop1)} ± {Pct(r.SameTop1Se)} | {PplRatio(r)} | {greedy} | {rate} | {next} |");
        }
        sb.AppendLine();
        return sb.ToString();
    }

    /// <summary>Merged corpus records of one experiment in the order of its summary rows (spec order), others after.</summary>
    public static List<CorpusRecord> Ordered(IEnumerable<CorpusRecord> merged, IReadOnlyList<SummaryRow> rows)
    {
        var order = rows.Select((r, i) => (r.Key, i)).ToDictionary(x => x.Key, x => x.i);
        return merged.OrderBy(r => order.TryGetValue(r.Key, out int i) ? i : int.MaxValue).ThenBy(r => r.Key, StringComparer.Ordinal).ToList();
    }

    /// <param name="plotsDirectory">The results' plots folder: charts there are linked (as plots/NAME), missing ones are not.</param>
    /// <param name="rows">The experiment's prompt summary rows (greedy match, decode rate) for the ranking; none: no ranking.</param>
    /// <param name="planned">The spec's planned comparisons (A, B), always reported and marked.</param>
    public static string Markdown(string experiment, IReadOnlyList<CorpusRecord> merged, string? plotsDirectory,
        IReadOnlyList<SummaryRow>? rows = null, IReadOnlyList<(string A, string B)>? planned = null)
    {
        string? Link(string png) => plotsDirectory != null && File.Exists(Path.Combine(plotsDirectory, png)) ? $"![{png}](plots/{png})" : null;
        if (merged.Count == 0) return "";
        var sb = new StringBuilder();
        var first = merged[0];
        sb.AppendLine("## Corpus evaluation");
        sb.AppendLine();
        sb.AppendLine($"Teacher-forced over `{Path.GetFileName(first.Corpus ?? "")}` (corpus sha256 {first.CorpusHash[..12]}), chunks of {first.Context} tokens "
            + $"(BOS + {first.Context - 1} corpus tokens; the second half of each chunk is scored), against the exact oracle's log-probabilities. "
            + "± is one standard error computed between chunks (positions in a chunk share their context); the naive per-position SE that llama.cpp prints is in brackets. "
            + "Percentiles interpolate between order statistics (numpy's default). Intervals are 95% Student t over chunks. Δp: change in the probability of the actual next token.");
        sb.AppendLine();
        sb.AppendLine("| backend | scheme | chunks | tokens | mean KL ± SE [naive] | KL p50 | p90 | p99 | p99.9 | max | same top-1 % ± SE | ppl | ppl ratio [95% CI] | Δp mean ± SE | Δp rms ± SE | largest error at | eval tok/s |");
        sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var r in merged)
        {
            string worst = r.AttributionWorst is { } w ? $"{(w.Layer < 0 ? "final" : $"layer {w.Layer}")} {w.Stage} ({E(w.RelativeError)})" : "-";
            sb.AppendLine($"| {r.Backend} | {r.SchemeLabel} | {r.Chunks} | {r.TokensScored} | {E(r.KlMean)} ± {E(r.KlMeanSe)} [{E(r.KlMeanNaiveSe)}] | {E(r.KlP50)} | {E(r.KlP90)} | {E(r.KlP99)} | {E(r.KlP999)} | {E(r.KlMax)} "
                + $"| {Pct(r.SameTop1)} ± {Pct(r.SameTop1Se)} | {r.Ppl.ToString("F4", Inv)} | {PplRatio(r)} "
                + $"| {E(r.DpMean)} ± {E(r.DpMeanSe)} | {E(r.DpRms)} ± {E(r.DpRmsSe)} | {worst} | {(r.EvalTokensPerSec?.ToString("F1", Inv) ?? "-")} |");
        }
        sb.AppendLine();
        sb.AppendLine($"Base perplexity (oracle): {first.PplBase.ToString("F6", Inv)}.");
        sb.AppendLine();

        var pairs = PairedRecord.Selected(merged, planned ?? []);
        if (rows != null) sb.Append(Ranking(merged, rows, pairs));
        if (pairs.Count > 0)
        {
            var holm = Holm.Rejects(pairs.Select(p => p.KlPValue).ToList());
            int rowsWithKl = merged.Count(r => r.KlMax > 0);
            sb.AppendLine("### Paired verdicts");
            sb.AppendLine();
            sb.AppendLine((rowsWithKl <= PairedRecord.AllPairsLimit
                    ? "Every pair of rows with a non-zero KL"
                    : $"{rowsWithKl} rows have a non-zero KL, too many to compare every pair: each row against its neighbour in the ranking by mean KL (is the order real?), and the spec's planned comparisons (marked)")
                + ", on the same chunks: difference A - B of the means, 95% interval paired over chunks. A verdict is drawn only when the interval excludes zero. "
                + $"With {pairs.Count} comparisons some 95% verdicts can be chance; the Holm column says whether the KL verdict holds with the family-wise error of all {pairs.Count} held at 5% (Holm's step-down on the paired t p-values).");
            sb.AppendLine();
            sb.AppendLine("| A | B | planned | chunks | mean KL A - B [95% CI] | p | KL verdict | holds under Holm | same top-1 A - B, points [95% CI] | same top-1 verdict |");
            sb.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
            for (int i = 0; i < pairs.Count; i++)
            {
                var p = pairs[i];
                sb.AppendLine($"| {p.A} | {p.B} | {(p.Planned ? "yes" : "")} | {p.Chunks} | {E(p.KlDiff)} [{E(p.KlDiffCi95[0])}, {E(p.KlDiffCi95[1])}] | {P(p.KlPValue)} | {p.KlVerdict} | {(holm[i] ? "yes" : "no")} "
                    + $"| {Pct(p.SameTop1Diff)} [{Pct(p.SameTop1DiffCi95[0])}, {Pct(p.SameTop1DiffCi95[1])}] | {p.SameTop1Verdict} |");
            }
            sb.AppendLine();
        }

        var attributed = merged.Where(r => r.AttributionWorst != null).ToList();
        sb.AppendLine("### Where precision is lost");
        sb.AppendLine();
        if (attributed.Count == 0)
            sb.AppendLine("No backend in these runs reported its intermediate values (engines report them through `IObservableEngine`), so there is no per-layer attribution yet.");
        else
        {
            sb.AppendLine("Relative error ||backend - oracle|| / ||oracle|| per layer and stage, pooled over the corpus's decode steps, on the same tokens as the oracle.");
            sb.AppendLine();
            foreach (var r in attributed)
            {
                var w = r.AttributionWorst!;
                sb.AppendLine($"- {r.Key}: largest at {(w.Layer < 0 ? "the final stages" : $"layer {w.Layer}")}, {w.Stage} ({E(w.RelativeError)})"
                    + (Link(CorpusPlots.HeatmapFile(experiment, r)) is { } link ? " " + link : ""));
            }
        }
        sb.AppendLine();
        foreach (var png in new[] { $"{experiment}-kl-cdf.png", $"{experiment}-same-top1.png", $"{experiment}-frontier.png" })
            if (Link(png) is { } link) sb.AppendLine(link);
        return sb.ToString();
    }
}
