using ScottPlot;

namespace GpuIntLab.Experiments;

/// <summary>
/// PNG charts of the corpus evaluation: the KL distribution per scheme (CDF on a log axis), same-top-1 with 95%
/// intervals, the speed/accuracy frontier (decode tok/s of the greedy runs vs mean corpus KL), and one
/// per-(layer, stage) relative-error heatmap per backend x scheme that reported its intermediates.
/// </summary>
public static class CorpusPlots
{
    public static List<string> Regenerate(string plotsDirectory, string experiment, IReadOnlyList<CorpusRecord> merged, IReadOnlyList<SummaryRow> rows)
    {
        var written = new List<string>();
        if (merged.Count == 0) return written;
        Directory.CreateDirectory(plotsDirectory);
        written.Add(KlCdf(Path.Combine(plotsDirectory, $"{experiment}-kl-cdf.png"), experiment, merged));
        written.Add(SameTop1(Path.Combine(plotsDirectory, $"{experiment}-same-top1.png"), experiment, merged));
        var frontier = Frontier(Path.Combine(plotsDirectory, $"{experiment}-frontier.png"), experiment, merged, rows);
        if (frontier != null) written.Add(frontier);
        foreach (var r in merged.Where(r => r.Attribution != null && r.Attribution.Worst() != null))
            written.Add(Heatmap(Path.Combine(plotsDirectory, HeatmapFile(experiment, r)), experiment, r));
        return written;
    }

    /// <summary>Backend and scheme come from results lines (possibly merged from other machines): only safe names become file names.</summary>
    public static string HeatmapFile(string experiment, CorpusRecord r) =>
        SafeNames.Problem(r.Backend) is null && SafeNames.Problem(r.Scheme) is null && (r.KvCache is null || SafeNames.Problem(r.KvCache) is null)
            ? $"{experiment}-attribution-{r.Backend}-{r.Scheme}{(r.SchemeLabel == r.Scheme ? "" : ".kv-" + r.KvCache)}.png"
            : throw new ResultsFileException($"corpus record of experiment '{experiment}': backend '{r.Backend}' / scheme '{r.Scheme}' cannot name a file (allowed: A-Z a-z 0-9 . _ -)");

    // Values at or below this are drawn at it: KL of an exact engine is 0, which a log axis cannot show.
    private const double LogFloor = 1e-12;

    private static double[] PowersOfTen(double lowLog, double highLog) =>
        Enumerable.Range((int)Math.Floor(lowLog), (int)Math.Ceiling(highLog) - (int)Math.Floor(lowLog) + 1).Select(e => (double)e).ToArray();

    private static Tick[] LogTicks(IEnumerable<double> exponents) => exponents.Select(e => new Tick(e, $"1e{e:0}")).ToArray();

    private static string KlCdf(string path, string experiment, IReadOnlyList<CorpusRecord> merged)
    {
        var plot = new Plot();
        double lo = 0, hi = -12;
        bool any = false;
        foreach (var r in merged)
        {
            var kl = r.ChunkScores.SelectMany(c => c.Kl).Order().ToArray();
            if (kl.Length == 0 || kl[^1] <= LogFloor) continue;
            var xs = kl.Select(v => Math.Log10(Math.Max(v, LogFloor))).ToArray();
            var ys = Enumerable.Range(1, kl.Length).Select(i => (double)i / kl.Length).ToArray();
            var line = plot.Add.ScatterLine(xs, ys);
            line.LegendText = r.Key;
            lo = any ? Math.Min(lo, xs[0]) : xs[0]; hi = Math.Max(hi, xs[^1]);
            any = true;
        }
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(LogTicks(PowersOfTen(any ? lo : -12, any ? hi : 0)));
        plot.Title($"{experiment}: KL(oracle || backend) per scored position (exact rows, KL = 0, omitted)");
        plot.XLabel("KL divergence, nats (log scale)");
        plot.YLabel("fraction of positions <= x");
        plot.Legend.IsVisible = true;
        plot.Legend.Alignment = Alignment.LowerRight;
        plot.SavePng(path, 900, 560);
        return path;
    }

    private static string SameTop1(string path, string experiment, IReadOnlyList<CorpusRecord> merged)
    {
        var plot = new Plot();
        var xs = Enumerable.Range(0, merged.Count).Select(i => (double)i).ToArray();
        var ys = merged.Select(r => 100 * r.SameTop1).ToArray();
        var errors = merged.Select(r => 100 * StudentT.Quantile975(r.Chunks - 1) * r.SameTop1Se).ToArray();
        plot.Add.Bars(xs, ys);
        plot.Add.ErrorBar(xs, ys, errors);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(merged.Select((r, i) => new Tick(i, r.Key)).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 45;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.SetLimitsY(Math.Max(0, ys.Zip(errors, (y, e) => y - e).Min() - 1), 100.5);
        plot.Title($"{experiment}: same top-1 as the oracle over the corpus (95% interval over chunks)");
        plot.YLabel("% of scored positions");
        plot.Layout.Fixed(new PixelPadding(80, 30, 170, 40));
        plot.SavePng(path, Math.Max(640, 70 * merged.Count + 200), 560);
        return path;
    }

    private static string? Frontier(string path, string experiment, IReadOnlyList<CorpusRecord> merged, IReadOnlyList<SummaryRow> rows)
    {
        var points = merged.Select(r => (r.Key, Kl: r.KlMean, Rate: rows.FirstOrDefault(s => s.Key == r.Key)?.DecodeRate))
            .Where(p => p.Rate.HasValue).ToList();
        if (points.Count == 0) return null;
        var plot = new Plot();
        // KL spans 1e-16 (float64) to 1e-3 here: exact engines' 0 is drawn below the smallest non-zero value.
        double nonZero = points.Where(p => p.Kl > 0).Select(p => p.Kl).DefaultIfEmpty(1e-12).Min();
        double zeroAt = Math.Pow(10, Math.Floor(Math.Log10(nonZero)) - 2);
        var xs = points.Select(p => Math.Log10(p.Kl > 0 ? p.Kl : zeroAt)).ToArray();
        var ys = points.Select(p => Math.Log10(p.Rate!.Value)).ToArray();
        plot.Add.Markers(xs, ys);
        for (int i = 0; i < points.Count; i++) plot.Add.Text(points[i].Key, xs[i], ys[i]);
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(LogTicks(PowersOfTen(xs.Min(), xs.Max())));
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            PowersOfTen(ys.Min(), ys.Max()).SelectMany(e => new[] { e, e + Math.Log10(2), e + Math.Log10(5) }).Select(e => new Tick(e, Math.Pow(10, e).ToString("G3", System.Globalization.CultureInfo.InvariantCulture))).ToArray());
        plot.Axes.Margins(0.15, 0.15);
        // Room on the right for the labels of the least accurate points.
        plot.Axes.SetLimitsX(xs.Min() - 1, xs.Max() + 0.25 * (xs.Max() - xs.Min() + 4));
        plot.Title($"{experiment}: speed vs accuracy (KL = 0 drawn at {zeroAt:0e0})");
        plot.XLabel("mean corpus KL(oracle || backend), nats (log scale)");
        plot.YLabel("decode tokens/s (greedy runs, median; log scale)");
        plot.SavePng(path, 900, 600);
        return path;
    }

    private static string Heatmap(string path, string experiment, CorpusRecord r)
    {
        var m = r.Attribution!;
        int rows = m.Layers.Length, cols = m.Stages.Length;
        var intensities = new double[rows, cols];
        for (int row = 0; row < rows; row++)
            for (int s = 0; s < cols; s++)
                intensities[row, s] = m.RelativeError(row, s) is double e ? Math.Log10(Math.Max(e, LogFloor)) : double.NaN;
        var plot = new Plot();
        var heatmap = plot.Add.Heatmap(intensities);
        heatmap.Colormap = new ScottPlot.Colormaps.Viridis();
        heatmap.Position = new CoordinateRect(0, cols, 0, rows);
        // Cells are drawn as rectangles [stage, stage+1] x [row band], so they sit exactly on the ticks at their centres;
        // the (hidden) heatmap only feeds the colour bar its range and colour map.
        heatmap.IsVisible = false;
        var finite = intensities.Cast<double>().Where(double.IsFinite).ToList();
        var range = finite.Count == 0 ? new ScottPlot.Range(0, 1) : new ScottPlot.Range(finite.Min(), Math.Max(finite.Max(), finite.Min() + 1e-9));
        for (int row = 0; row < rows; row++)
            for (int s = 0; s < cols; s++)
            {
                if (!double.IsFinite(intensities[row, s])) continue;
                var cell = plot.Add.Rectangle(s, s + 1, rows - row - 1, rows - row);
                var color = heatmap.Colormap.GetColor(intensities[row, s], range);
                cell.FillStyle.Color = color;
                cell.LineStyle.Width = 0;
            }
        plot.Axes.SetLimits(0, cols, 0, rows);
        var bar = plot.Add.ColorBar(heatmap);
        bar.Label = "log10 relative error";
        // Row 0 of the intensities is drawn at the top.
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(m.Stages.Select((s, i) => new Tick(i + 0.5, s)).ToArray());
        plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
            m.Layers.Select((l, i) => new Tick(rows - i - 0.5, l < 0 ? "final" : $"layer {l}")).ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 45;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        var worst = m.Worst()!.Value;
        plot.Title($"{experiment} {r.Key}: ||backend - oracle|| / ||oracle||; worst {(worst.Layer < 0 ? "final" : $"layer {worst.Layer}")} {worst.Stage} ({worst.RelativeError:0.0e+00})");
        plot.Layout.Fixed(new PixelPadding(90, 120, 150, 40));
        plot.SavePng(path, 1000, 120 + 50 * rows + 150);
        return path;
    }
}
