#:project ../src/GpuIntLab.Experiments/GpuIntLab.Experiments.csproj
#:property PublishAot=false
// Analysis notebook over results/runs/*.jsonl, as a C# file-based app (Polyglot Notebooks were retired in 2026):
//   dotnet run notebooks/report.cs [results-folder]
// Prints, per experiment: the summary table (as `gpuintlab table` writes it), then the speed/accuracy
// frontier (backends no other backend beats on both teacher-forced agreement and decode speed), then
// where each backend first diverged from the oracle and whether the divergence was a near tie.
using GpuIntLab.Experiments;

string results = args.Length > 0 ? args[0] : Path.Combine(AppContext.GetData("EntryPointFileDirectoryPath") as string ?? ".", "..", "results");
var records = ResultReader.ReadAll(Path.Combine(results, "runs"), w => Console.Error.WriteLine("warning: " + w));
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
}
