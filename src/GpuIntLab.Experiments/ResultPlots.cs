using ScottPlot;

namespace GpuIntLab.Experiments;

/// <summary>PNG charts regenerated from the recorded runs: token match and decode speed per backend x scheme.</summary>
public static class ResultPlots
{
    public static List<string> Regenerate(string resultsDirectory, Action<string>? warn = null)
    {
        var records = ResultReader.ReadAll(Path.Combine(resultsDirectory, "runs"), warn);
        string plots = Path.Combine(resultsDirectory, "plots");
        ResultsStore.PrepareFolder(plots, "plots folder");
        var written = new List<string>();
        var corpus = CorpusResults.Merge(CorpusResults.ReadAll(Path.Combine(resultsDirectory, "runs")).Corpus);
        foreach (var (experiment, cells) in ResultTables.LatestCells(records, warn))
        {
            if (SafeNames.Problem(experiment) is string bad) throw new ResultsFileException($"{resultsDirectory}: experiment {bad}");
            var rows = ResultTables.Summarize(cells).Where(r => r.Error == null).ToList();
            written.AddRange(CorpusPlots.Regenerate(plots, experiment, CorpusTables.Ordered(corpus.Where(c => c.Experiment == experiment), rows), rows));
            if (rows.Count == 0) continue;
            written.Add(Bars(Path.Combine(plots, $"{experiment}-token-match.png"), $"{experiment}: token match vs oracle",
                "% of greedy tokens equal to the oracle's",
                rows.Select(r => (r.Key, r.Total == 0 ? 0 : 100.0 * r.Matches / r.Total, r.Total == 0 ? 0 : 100.0 * r.TeacherForced / r.Total)).ToList(),
                ("free-running", "teacher-forced")));
            var speed = rows.Where(r => r.DecodeRate.HasValue).ToList();
            if (speed.Count > 0)
                written.Add(Bars(Path.Combine(plots, $"{experiment}-decode-speed.png"), $"{experiment}: tokens/sec (median)",
                    "tokens / second", speed.Select(r => (r.Key, r.DecodeRate!.Value, r.PrefillRate ?? 0)).ToList(), ("decode", "prefill")));
        }
        return written;
    }

    private static string Bars(string path, string title, string yLabel, List<(string Label, double A, double B)> rows, (string A, string B) series)
    {
        var plot = new Plot();
        var bars = new List<Bar>();
        for (int i = 0; i < rows.Count; i++)
        {
            bars.Add(new Bar { Position = i * 3, Value = rows[i].A, FillColor = Colors.SteelBlue });
            bars.Add(new Bar { Position = i * 3 + 1, Value = rows[i].B, FillColor = Colors.Orange });
        }
        plot.Add.Bars(bars);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            rows.Select((r, i) => new Tick(i * 3 + 0.5, r.Label)).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 45;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Margins(bottom: 0);
        plot.Title(title);
        plot.YLabel(yLabel);
        plot.Legend.IsVisible = true;
        plot.Legend.Alignment = Alignment.UpperRight;
        plot.Axes.Margins(top: 0.3);
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = series.A, FillColor = Colors.SteelBlue });
        plot.Legend.ManualItems.Add(new LegendItem { LabelText = series.B, FillColor = Colors.Orange });
        plot.Layout.Fixed(new PixelPadding(80, 30, 170, 40));
        plot.SavePng(path, Math.Max(640, 90 * rows.Count + 200), 560);
        return path;
    }
}
