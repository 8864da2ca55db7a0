using System.CommandLine;
using GpuIntLab.Experiments;
using Spectre.Console;

namespace GpuIntLab.Cli.Commands;

/// <summary><c>gpuintlab run SPEC</c>: runs an experiment, appends results/runs/*.jsonl, regenerates the tables.</summary>
public static class RunCommand
{
    public static Command Create()
    {
        var spec = new Argument<string>("spec") { Description = "Experiment file, e.g. experiments/default.json" };
        var model = new Option<string?>("--model") { Description = "Model folder overriding the spec's (e.g. a local TinyLlama-1.1B-Chat folder)" };
        var shard = new Option<string>("--shard") { Description = "Run only slice i of N of the backend x scheme x prompt matrix and of the corpus chunks (e.g. 0/4; Slurm: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)", DefaultValueFactory = _ => "0/1" };
        var results = new Option<string>("--results") { Description = "Results folder (runs are appended under RESULTS/runs)", DefaultValueFactory = _ => "results" };
        var noTable = new Option<bool>("--no-table") { Description = "Do not regenerate the markdown tables after the run" };
        var command = new Command("run", "Run an experiment: token match, KL and tokens/sec of every backend x scheme against the oracle.")
        {
            spec, model, shard, results, noTable,
        };
        command.SetAction(parse => Run(parse.GetValue(spec)!, parse.GetValue(model), parse.GetValue(shard)!, parse.GetValue(results)!, parse.GetValue(noTable)));
        return command;
    }

    private static int Run(string specPath, string? model, string shardText, string resultsDir, bool noTable)
    {
        var spec = ExperimentSpec.Load(specPath);
        spec.Validate();
        var shard = Shard.Parse(shardText);
        // The pages regenerated after the run are checked now, so a results folder that cannot take them fails before the work.
        if (!noTable) ResultTables.CheckCanRegenerate(resultsDir, spec.Name);
        bool interactive = AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;
        string command = "gpuintlab run " + string.Join(' ', Environment.GetCommandLineArgs().Skip(2));
        var runner = new ExperimentRunner();
        RunSummary? summary = null;
        var options = new RunOptions
        {
            ModelOverride = model,
            Shard = shard,
            ResultsDirectory = Path.Combine(resultsDir, "runs"),
            Command = command,
        };
        Console.WriteLine($"experiment {spec.Name}: {spec.Prompts.Count} prompts x {spec.NewTokens} tokens, shard {shard}");
        if (interactive)
        {
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    var tasks = new Dictionary<int, ProgressTask>();
                    summary = runner.Run(spec, options with
                    {
                        Progress = p =>
                        {
                            if (!tasks.TryGetValue(p.Cell, out var task))
                                tasks[p.Cell] = task = ctx.AddTask(Markup.Escape($"{p.Backend}/{p.Scheme} {p.Prompt}"), maxValue: p.TokensTotal);
                            task.Description = Markup.Escape($"{p.Backend}/{p.Scheme} {p.Prompt} [{p.Phase}]" + (p.TokensPerSecond is double r ? $" {r:F1} tok/s" : ""));
                            task.Value = p.TokensDone;
                        },
                    });
                    foreach (var t in tasks.Values) t.Value = t.MaxValue;
                });
        }
        else
        {
            string last = "";
            summary = runner.Run(spec, options with
            {
                Progress = p =>
                {
                    // Plain lines when redirected: one per cell phase, with the rate when known.
                    string key = $"{p.Cell}:{p.Phase}";
                    if (key == last && p.TokensDone != p.TokensTotal) return;
                    last = key;
                    if (p.TokensDone == p.TokensTotal || p.TokensDone <= 1)
                        Console.WriteLine($"[{(p.Cell < 0 ? "oracle" : $"{p.Cell + 1}/{p.CellCount}")}] {p.Backend}/{p.Scheme} {p.Prompt} {p.Phase} {p.TokensDone}/{p.TokensTotal}" + (p.TokensPerSecond is double r ? $" {r:F1} tok/s" : ""));
                },
            });
        }

        Console.WriteLine($"results: {summary!.ResultsFile}");
        foreach (var e in summary.Records.Where(r => r.Type == "error"))
            Console.WriteLine($"  {e.Backend}/{e.Scheme} {e.Prompt}: {e.Error}");
        var rows = ResultTables.Summarize(summary.Records.Where(r => r.Type is "result" or "error").ToList());
        Console.WriteLine();
        Console.WriteLine(ResultTables.SummaryTable(rows));
        if (summary.Corpus.Count > 0) Console.WriteLine(CorpusTables.Markdown(spec.Name, CorpusTables.Ordered(summary.Corpus, rows), null, rows, spec.PlannedComparisons));
        if (!noTable)
        {
            foreach (var f in ResultTables.Regenerate(resultsDir, w => Console.Error.WriteLine("warning: " + w))) Console.WriteLine($"wrote {f}");
        }
        return 0;
    }
}
