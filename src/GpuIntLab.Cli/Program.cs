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
        root.Subcommands.Add(RunCommand.Create());
        root.Subcommands.Add(TableCommand.Create());
        root.Subcommands.Add(TableCommand.CreatePlot());
        root.Subcommands.Add(BackendsCommand.Create());
        root.Subcommands.Add(ExportNativeCommand.Create());
        root.Subcommands.Add(MakeModelCommand.Create());
        root.Subcommands.Add(BenchOracleCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(CudaCompileCommand.Create());
        // Our handler, not the library's, reports user errors: one line, exit code 2, no stack trace.
        return CliErrors.Run(() => CliErrors.Invoke(root, args));
    }
}
