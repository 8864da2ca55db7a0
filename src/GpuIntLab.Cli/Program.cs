using System.CommandLine;
using GpuIntLab.Cli.Commands;

namespace GpuIntLab.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("GpuIntLab: how often does a low-precision or integer GPU kernel pick the same tokens as an exact Q16.48 oracle, and how fast is it?");
        // One line per command; each command lives in its own file under Commands/.
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        return CliErrors.Run(() => root.Parse(args).Invoke());
    }
}
