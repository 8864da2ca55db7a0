using System.CommandLine;

namespace GpuIntLab.Cli.Commands;

public static class GenerateCommand
{
    public static Command Create()
    {
        var command = new Command("generate", "Greedy generation with the Q16.48 oracle or the float64 reference engine.");
        command.SetAction(_ => { Console.Error.WriteLine("generate: under construction"); return 1; });
        return command;
    }
}
