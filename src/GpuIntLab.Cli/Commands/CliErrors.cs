using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Core.Tokenization;
using GpuIntLab.Experiments;

namespace GpuIntLab.Cli.Commands;

/// <summary>Turns user errors (bad files, bad arguments) into one clear line and exit code 2: no stack traces.</summary>
public static class CliErrors
{
    public static int Run(Func<int> body)
    {
        try { return body(); }
        catch (Exception e) when (IsUserError(e))
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }

    public static bool IsUserError(Exception e) => e is ModelLoadException or WeightRangeException or UserInputException
        or TokenInputException or FileNotFoundException or DirectoryNotFoundException
        or ExperimentSpecException or TokenizerLoadException;
}

/// <summary>A problem with what the user asked for (unknown engine, prompt too long, ...).</summary>
public sealed class UserInputException(string message) : Exception(message);
