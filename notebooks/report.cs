#:project ../src/GpuIntLab.Experiments/GpuIntLab.Experiments.csproj
#:property PublishAot=false
// Analysis notebook over results/runs/*.jsonl, as a C# file-based app (Polyglot Notebooks were retired in 2026):
//   dotnet run notebooks/report.cs [results-folder]
// Prints, per experiment: the summary table (as `gpuintlab table` writes it), then the speed/accuracy
// frontier (backends no other backend beats on both teacher-forced agreement and decode speed), then
// where each backend first diverged from the oracle and whether the divergence was a near tie; then the corpus
// evaluation (shards merged from their per-chunk sums): mean KL and same top-1 with their between-chunk errors,
// the perplexity ratio interval, the significant paired verdicts, and where each scheme loses precision.
using GpuIntLab.Experiments;

string results = args.Length > 0 ? args[0] : Path.Combine(AppContext.GetData("EntryPointFileDirectoryPath") as string ?? ".", "..", "results");
var records = ResultReader.ReadAll(Path.Combine(results, "runs"), w => Console.Error.WriteLine("warning: " + w));
var corpus = CorpusResults.Merge(CorpusResults.ReadAll(Path.Combine(results, "runs")).Corpus);
if (records.Count == 0)
{
    Console.WriteLine($"no recorded runs under {Path.GetFullPath(Path.Combine(results, "runs"))}: run an experiment first");
    return;
}
foreach (var (experiment, cells) in ResultTables.LatestCells(records).OrderBy(kv => kv.Key, StringComparer.Ordinal))
{
    Console.WriteLine($"## {experiment}  ({cells.Count} cells)");
    Console.WriteLine();
    var rows = ResultTables.Summarize(cells);
    Console.WriteLine(ResultTables.SummaryTable(rows));

    var measured = rows.Where(r => r.Error == null && r.DecodeRate.HasValue && r.Total > 0).ToList();
    var frontier = measured.Where(r => !measured.Any(o =>
        o != r && o.TeacherForced >= r.TeacherForced && o.DecodeRate >= r.DecodeRate
        && (o.TeacherForced > r.TeacherForced || o.DecodeRate > r.DecodeRate))).OrderByDescending(r => r.DecodeRate).ToList();
    Console.WriteLine("Speed/accuracy frontier (teacher-forced agreement vs decode tok/s):");
    foreach (var r in frontier) Console.WriteLine($"  {r.Key,-28} {100.0 * r.TeacherForced / r.Total,6:F1}%  {r.DecodeRate,10:F1} tok/s");
    Console.WriteLine();

    Console.WriteLine("First divergences (position: oracle token vs backend token, oracle margin, near tie?):");
    foreach (var c in cells.Where(c => c.Type == "result" && c.NearTie != null).OrderBy(c => c.Backend).ThenBy(c => c.Scheme).ThenBy(c => c.Prompt))
        Console.WriteLine($"  {c.Backend}/{c.Scheme} {c.Prompt}: pos {c.NearTie!.Position}: {c.NearTie.OracleToken} vs {c.NearTie.BackendToken}, margin {c.NearTie.OracleMargin:F4}, {(c.NearTie.IsNearTie ? "near tie" : "clear miss")}");
    Console.WriteLine();

    var corpusRows = CorpusTables.Ordered(corpus.Where(c => c.Experiment == experiment), rows);
    if (corpusRows.Count == 0) continue;
    Console.WriteLine($"Corpus ({corpusRows[0].Chunks} chunks of {corpusRows[0].Context}, {corpusRows[0].TokensScored} scored positions; +- one SE between chunks):");
    foreach (var c in corpusRows)
        Console.WriteLine($"  {c.Key,-28} KL {c.KlMean:0.00e+00} +- {c.KlMeanSe:0.00e+00}  same top-1 {100 * c.SameTop1:F2}% +- {100 * c.SameTop1Se:F2}  ppl ratio {c.PplRatio:F6} [{c.PplRatioCi95[0]:F6}, {c.PplRatioCi95[1]:F6}]"
            + (c.AttributionWorst is { } w ? $"  worst: layer {w.Layer} {w.Stage} ({w.RelativeError:0.0e+00})" : ""));
    Console.WriteLine("Significant paired verdicts (95% interval over chunks excludes zero):");
    foreach (var p in PairedRecord.AllPairs(corpusRows.Where(r => r.KlMax > 0).ToList()))
        foreach (var v in new[] { p.KlVerdict, p.SameTop1Verdict }.Where(v => v.Contains(" than ")))
            Console.WriteLine($"  {v}");
    Console.WriteLine();
}
