using System.CommandLine;
using System.Diagnostics;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Cli.Commands;

/// <summary><c>gpuintlab export-native</c>: writes a model as the native exact-integer .q48 file.</summary>
public static class ExportNativeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "HF model folder to convert", Required = true };
        var output = new Option<string>("--out") { Description = "Output .q48 file", Required = true };
        var command = new Command("export-native", "Save a model as one native .q48 file: config, tokenizer and exact integer weights (M8E8 or Q16.48 raw), checksummed and memory-mappable.")
        {
            model, output,
        };
        command.SetAction(parse =>
        {
            var clock = Stopwatch.StartNew();
            string path = parse.GetValue(output)!;
            OutputPaths.CheckFile(path, "--out", OutputPaths.ModelInputs(parse.GetValue(model)!));
            using var checkpoint = LlamaCheckpoint.Open(parse.GetValue(model)!);
            // Written beside the target and renamed over it: a failure (a full disk) leaves no half-written .q48 under the name.
            string partial = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".{Path.GetFileName(path)}.{Environment.ProcessId}.partial");
            Dictionary<string, TensorDtype> encodings;
            try
            {
                encodings = NativeModelFile.Write(checkpoint, partial);
                File.Move(partial, path, overwrite: true);
            }
            finally { File.Delete(partial); }
            Console.WriteLine($"wrote {path}: {new FileInfo(path).Length / (1024.0 * 1024.0):F1} MiB in {clock.Elapsed.TotalSeconds:F1} s");
            foreach (var g in encodings.GroupBy(e => e.Value)) Console.WriteLine($"  {g.Count()} tensors as {g.Key}");
            return 0;
        });
        return command;
    }
}
