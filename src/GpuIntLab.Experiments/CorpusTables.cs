using System.Globalization;
using System.Text;

namespace GpuIntLab.Experiments;

/// <summary>The corpus sections of an experiment's page: figures with their uncertainties, paired verdicts, where precision is lost.</summary>
public static class CorpusTables
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    private static string E(double v) => v.ToString("0.00e+00", Inv);
    private static string Pct(double v) => (100 * v).ToString("F2", Inv);

    /// <summary>Merged corpus records of one experiment in the order of its summary rows (spec order), others after.</summary>
    public static List<CorpusRecord> Ordered(IEnumerable<CorpusRecord> merged, IReadOnlyList<SummaryRow> rows)
    {
        var order = rows.Select((r, i) => (r.Key, i)).ToDictionary(x => x.Key, x => x.i);
        return merged.OrderBy(r => order.TryGetValue(r.Key, out int i) ? i : int.MaxValue).ThenBy(r => r.Key, StringComparer.Ordinal).ToList();
    }

    /// <param name="plotsDirectory">The results' plots folder: charts there are linked (as plots/NAME), missing ones are not.</param>
    public static string Markdown(string experiment, IReadOnlyList<CorpusRecord> merged, string? plotsDirectory)
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
            sb.AppendLine($"| {r.Backend} | {r.Scheme} | {r.Chunks} | {r.TokensScored} | {E(r.KlMean)} ± {E(r.KlMeanSe)} [{E(r.KlMeanNaiveSe)}] | {E(r.KlP50)} | {E(r.KlP90)} | {E(r.KlP99)} | {E(r.KlP999)} | {E(r.KlMax)} "
                + $"| {Pct(r.SameTop1)} ± {Pct(r.SameTop1Se)} | {r.Ppl.ToString("F4", Inv)} | {r.PplRatio.ToString("F6", Inv)} [{r.PplRatioCi95[0].ToString("F6", Inv)}, {r.PplRatioCi95[1].ToString("F6", Inv)}] "
                + $"| {E(r.DpMean)} ± {E(r.DpMeanSe)} | {E(r.DpRms)} ± {E(r.DpRmsSe)} | {worst} | {(r.EvalTokensPerSec?.ToString("F1", Inv) ?? "-")} |");
        }
        sb.AppendLine();
        sb.AppendLine($"Base perplexity (oracle): {first.PplBase.ToString("F6", Inv)}.");
        sb.AppendLine();

        var pairs = PairedRecord.AllPairs(merged.Where(r => r.KlMax > 0).ToList());
        if (pairs.Count > 0)
        {
            sb.AppendLine("### Paired verdicts");
            sb.AppendLine();
            sb.AppendLine("Every pair of rows with a non-zero KL, on the same chunks: difference A - B of the means, 95% interval paired over chunks. A verdict is drawn only when the interval excludes zero.");
            sb.AppendLine();
            sb.AppendLine("| A | B | chunks | mean KL A - B [95% CI] | KL verdict | same top-1 A - B, points [95% CI] | same top-1 verdict |");
            sb.AppendLine("|---|---|---|---|---|---|---|");
            foreach (var p in pairs)
                sb.AppendLine($"| {p.A} | {p.B} | {p.Chunks} | {E(p.KlDiff)} [{E(p.KlDiffCi95[0])}, {E(p.KlDiffCi95[1])}] | {p.KlVerdict} "
                    + $"| {Pct(p.SameTop1Diff)} [{Pct(p.SameTop1DiffCi95[0])}, {Pct(p.SameTop1DiffCi95[1])}] | {p.SameTop1Verdict} |");
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
