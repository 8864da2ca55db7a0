using System.CommandLine;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Cli.Commands;

/// <summary><c>gpuintlab make-model</c>: writes a seeded checkpoint (the conformance rule) for speed tests or to rebuild the conformance set.</summary>
public static class MakeModelCommand
{
    public static Command Create()
    {
        var output = new Option<string>("--out") { Description = "Output folder", Required = true };
        var shape = new Option<string>("--shape") { Description = "tinyllama (1.1B, TinyLlama's shapes) or conformance (the tiny GQA conformance model)", DefaultValueFactory = _ => "tinyllama" };
        var layers = new Option<int?>("--layers") { Description = "Override the number of layers (e.g. 2 for a quick TinyLlama-width model)" };
        var dtype = new Option<string>("--dtype") { Description = "bf16, f16 or f32", DefaultValueFactory = _ => "bf16" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "tokenizer.model to copy beside the weights" };
        var command = new Command("make-model", "Write a seeded Llama checkpoint by the conformance set's generation rule (no download needed).")
        {
            output, shape, layers, dtype, tokenizer,
        };
        command.SetAction(parse =>
        {
            var config = parse.GetValue(shape) switch
            {
                "tinyllama" => SeededCheckpointWriter.TinyLlamaShapedConfig(),
                "conformance" => SeededCheckpointWriter.ConformanceConfig(),
                var s => throw new UserInputException($"--shape: unknown shape '{s}' (tinyllama, conformance)"),
            };
            if (parse.GetValue(layers) is int l)
                config = l >= 1 ? config with { NumHiddenLayers = l } : throw new UserInputException("--layers must be at least 1");
            var d = parse.GetValue(dtype) switch
            {
                "bf16" => TensorDtype.BF16,
                "f16" => TensorDtype.F16,
                "f32" => TensorDtype.F32,
                var s => throw new UserInputException($"--dtype: unknown dtype '{s}' (bf16, f16, f32)"),
            };
            string? tok = parse.GetValue(tokenizer);
            if (tok != null && !File.Exists(tok)) throw new UserInputException($"{tok}: tokenizer file not found");
            string outDir = parse.GetValue(output)!;
            var layout = new SeededCheckpointLayout(d);
            long bytes;
            try { bytes = SeededCheckpointWriter.TotalBytes(config, layout); }
            catch (OverflowException) { throw new UserInputException("--layers: the model would have more than 2^63 bytes of weights"); }
            // Weights are generated as they are written, so memory is not the limit; the disk is, and is checked first.
            long free = OutputPaths.FreeBytes(outDir);
            if (bytes > free)
                throw new UserInputException($"--out {outDir}: the model needs {bytes / 1e9:F2} GB of weights but only {free / 1e9:F2} GB is free there (fewer --layers?)");
            OutputPaths.CheckFolder(outDir, "--out");
            SeededCheckpointWriter.Write(outDir, config, layout, tokenizerModelPath: tok);
            Console.WriteLine($"wrote {parse.GetValue(output)}: {config.ParameterCount / 1e6:F1}M parameters, {d}");
            return 0;
        });
        return command;
    }
}
