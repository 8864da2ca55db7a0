using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Core.Tokenization;
using System.CommandLine;
using GpuIntLab.Experiments;
using GpuIntLab.Training;

namespace GpuIntLab.Cli.Commands;

/// <summary>Turns user errors (bad files, bad arguments) into one clear line and exit code 2: no stack traces.</summary>
public static class CliErrors
{
    public static int Run(Func<int> body)
    {
        try { return body(); }
        catch (Exception e) when (IsUserError(e))
        {
            // One line whatever the message holds: scripts and users read the first line of stderr.
            Console.Error.WriteLine($"error: {e.Message.ReplaceLineEndings(" ")}");
            return 2;
        }
    }

    /// <summary>
    /// Parses and invokes. A command line that does not parse (unknown command or option, missing required option,
    /// a number that is not one) is a user error like any other: one <c>error:</c> line and exit code 2, not the
    /// library's exit code 1 with the whole help text.
    /// </summary>
    public static int Invoke(RootCommand root, string[] args)
    {
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            string help = parse.CommandResult.Command is RootCommand ? "gpuintlab --help" : $"gpuintlab {parse.CommandResult.Command.Name} --help";
            Console.Error.WriteLine($"error: {string.Join(" ", parse.Errors.Select(e => e.Message.ReplaceLineEndings(" ")))} (see '{help}')");
            return 2;
        }
        return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
    }

    /// <summary>
    /// Failures a user can cause: bad files and arguments, and file-system faults (a read-only folder, a full disk, a
    /// path of the wrong kind), whose .NET messages name the path.
    /// </summary>
    public static bool IsUserError(Exception e) => e is ModelLoadException or WeightRangeException or UserInputException
        or TokenInputException or IOException or UnauthorizedAccessException
        or ExperimentSpecException or TokenizerLoadException or ResultsFileException or TrainingInputException
        or GpuIntLab.Core.FixedPoint.Q48OverflowException;
}

/// <summary>A problem with what the user asked for (unknown engine, prompt too long, ...).</summary>
public sealed class UserInputException(string message) : Exception(message);
