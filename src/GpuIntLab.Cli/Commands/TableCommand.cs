using System.CommandLine;
using GpuIntLab.Experiments;

namespace GpuIntLab.Cli.Commands;

/// <summary><c>gpuintlab table</c> and <c>gpuintlab plot</c>: regenerate markdown tables / PNG charts from results/runs.</summary>
public static class TableCommand
{
    public static Command Create()
    {
        var results = new Option<string>("--results") { Description = "Results folder holding runs/*.jsonl", DefaultValueFactory = _ => "results" };
        var command = new Command("table", "Regenerate results/README.md and results/<experiment>.md from the recorded runs (shards merge: the newest record per cell wins).") { results };
        command.SetAction(parse =>
        {
            string dir = parse.GetValue(results)!;
            if (!Directory.Exists(Path.Combine(dir, "runs"))) throw new UserInputException($"{Path.Combine(dir, "runs")}: no recorded runs (run an experiment first)");
            foreach (var f in ResultTables.Regenerate(dir, w => Console.Error.WriteLine("warning: " + w))) Console.WriteLine($"wrote {f}");
            return 0;
        });
        return command;
    }

    public static Command CreatePlot()
    {
        var results = new Option<string>("--results") { Description = "Results folder holding runs/*.jsonl", DefaultValueFactory = _ => "results" };
        var command = new Command("plot", "Write PNG charts (token match, tokens/sec per backend x scheme) to results/plots/.") { results };
        command.SetAction(parse =>
        {
            string dir = parse.GetValue(results)!;
            if (!Directory.Exists(Path.Combine(dir, "runs"))) throw new UserInputException($"{Path.Combine(dir, "runs")}: no recorded runs (run an experiment first)");
            foreach (var f in ResultPlots.Regenerate(dir, w => Console.Error.WriteLine("warning: " + w))) Console.WriteLine($"wrote {f}");
            return 0;
        });
        return command;
    }
}
