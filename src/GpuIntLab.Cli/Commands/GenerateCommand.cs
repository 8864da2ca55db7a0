using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using GpuIntLab.Backends;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Core.Tokenization;
using GpuIntLab.Oracle;

namespace GpuIntLab.Cli.Commands;

/// <summary><c>gpuintlab generate</c>: greedy generation with any engine (the oracle, the float64 reference, or any backend x scheme).</summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (config.json + *.safetensors + tokenizer.model or tokenizer.json) or native .q48 file", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt text (encoded with the model's tokenizer, with the special tokens it adds (BOS for Llama))" };
        var promptIds = new Option<string?>("--prompt-ids") { Description = "Prompt as token ids separated by spaces or commas, used as given" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Greedy tokens to generate", DefaultValueFactory = _ => 20 };
        var engine = new Option<string>("--engine") { Description = "oracle (Q16.48, exact), reference (float64) or any backend (see `gpuintlab backends`)", DefaultValueFactory = _ => "oracle" };
        var scheme = new Option<string?>("--scheme") { Description = "The backend's quantization scheme (default: its first; see `gpuintlab backends`)" };
        var accelerator = new Option<string>("--accelerator") { Description = "auto, cpu or cuda", DefaultValueFactory = _ => "auto" };
        var threads = new Option<int>("--threads") { Description = "Threads for the matmuls (results are bit-identical for any count)", DefaultValueFactory = _ => Environment.ProcessorCount };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of text" };
        var command = new Command("generate", "Greedy generation with the Q16.48 oracle, the float64 reference engine or any backend x scheme.")
        {
            model, prompt, promptIds, maxNew, engine, scheme, accelerator, threads, json,
        };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(prompt), parse.GetValue(promptIds), parse.GetValue(maxNew),
            parse.GetValue(engine)!, parse.GetValue(scheme), parse.GetValue(accelerator)!, parse.GetValue(threads), parse.GetValue(json)));
        return command;
    }

    public static int[] ParseIds(string text, string option)
    {
        var parts = text.Split([' ', ',', '\t'], StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ids[i])) throw new UserInputException($"{option}: '{parts[i]}' is not a token id");
        if (ids.Length == 0) throw new UserInputException($"{option}: no token ids given");
        return ids;
    }

    private static int Run(string modelDir, string? promptText, string? promptIdsText, int maxNewTokens, string engineName, string? scheme, string accelerator, int threads, bool asJson)
    {
        if (promptText == null && promptIdsText == null) throw new UserInputException("give --prompt TEXT or --prompt-ids IDS");
        if (promptText != null && promptIdsText != null) throw new UserInputException("give --prompt TEXT or --prompt-ids IDS, not both (the ids would run while the text is reported)");
        if (maxNewTokens < 0) throw new UserInputException("--max-new-tokens must be 0 or more");
        if (threads < 1) throw new UserInputException("--threads must be at least 1");
        if (!EngineFactory.Names.Contains(engineName)) throw new UserInputException($"--engine: unknown engine '{engineName}' (known: {string.Join(", ", EngineFactory.Names)})");

        using var checkpoint = LlamaCheckpoint.Open(modelDir);
        var tokenizer = checkpoint.LoadTokenizer();
        int[] promptIds = promptIdsText != null
            ? ParseIds(promptIdsText, "--prompt-ids")
            : (tokenizer ?? throw new UserInputException($"{modelDir}: no tokenizer.model or tokenizer.json, so --prompt text cannot be encoded (use --prompt-ids)")).Encode(promptText!);
        EngineGuards.CheckTokens(checkpoint.Config, promptIds, 0);
        if ((long)promptIds.Length + maxNewTokens > checkpoint.Config.MaxPositionEmbeddings)
            throw new UserInputException($"prompt of {promptIds.Length} tokens + {maxNewTokens} new tokens exceeds the context of {checkpoint.Config.MaxPositionEmbeddings}");

        // SmoothQuant calibrates on the prompt itself: generate has no separate calibration set.
        using var engine = EngineFactory.Create(engineName, checkpoint, threads, scheme, accelerator, [promptIds]);
        using var hash = new LogitsHash();
        var generated = new List<int>();
        if (!asJson)
        {
            Console.WriteLine($"engine: {engine.Info.Name} ({engine.Info.Format}, {engine.Info.Accelerator})");
            Console.WriteLine($"prompt ids: {string.Join(' ', promptIds)}");
            if (promptText != null) Console.Write(promptText);
        }

        var clock = Stopwatch.StartNew();
        double[] logits = engine.Prefill(promptIds);
        double prefillSeconds = clock.Elapsed.TotalSeconds;
        AppendHash(hash, engine, logits);
        clock.Restart();
        // The prompt goes through the stream decoder unprinted, so the first generated token is read in context
        // (SentencePiece keeps its leading space; a character split across tokens is completed).
        var textStream = tokenizer?.CreateStreamingDecoder();
        if (textStream != null) foreach (int id in promptIds) textStream.Push(id);
        for (int i = 0; i < maxNewTokens; i++)
        {
            int next = Greedy.ArgMax(logits);
            generated.Add(next);
            if (!asJson && textStream != null) Console.Write(textStream.Push(next));
            if (i == maxNewTokens - 1) break;
            logits = engine.Decode(next);
            AppendHash(hash, engine, logits);
        }
        double decodeSeconds = clock.Elapsed.TotalSeconds;
        if (!asJson && textStream != null) Console.Write(textStream.Flush());
        int decodeSteps = Math.Max(0, maxNewTokens - 1);
        double prefillRate = promptIds.Length / prefillSeconds;
        double decodeRate = decodeSteps > 0 ? decodeSteps / decodeSeconds : 0;
        string text = tokenizer?.Decode(generated.ToArray()) ?? "";
        string digest = hash.Finish();

        if (asJson)
        {
            var result = new Dictionary<string, object?>
            {
                ["engine"] = engine.Info.Name,
                ["format"] = engine.Info.Format,
                ["scheme"] = engine.Info.Scheme,
                ["accelerator"] = engine.Info.Accelerator,
                ["logits_hashed"] = ExactRawLogits.Last(engine) != null ? "raw Q16.48 int64" : "float64 bits",
                ["threads"] = threads,
                ["model"] = Path.GetFullPath(modelDir),
                ["prompt"] = promptText,
                ["prompt_ids"] = promptIds,
                ["generated_ids"] = generated,
                ["text"] = text,
                ["prefill_tokens_per_sec"] = Math.Round(prefillRate, 3),
                ["decode_tokens_per_sec"] = Math.Round(decodeRate, 3),
                ["logits_sha256"] = digest,
            };
            Console.WriteLine(JsonSerializer.Serialize(result));
        }
        else
        {
            Console.WriteLine();
            Console.WriteLine($"generated ids: {string.Join(' ', generated)}");
            Console.WriteLine($"prefill: {promptIds.Length} tokens at {prefillRate:F2} tok/s; decode: {decodeSteps} steps at {decodeRate:F2} tok/s");
            Console.WriteLine($"logits sha256: {digest}");
        }
        return 0;
    }

    /// <summary>Exact engines (oracle, INT64 backends) hash their raw int64 logits, so they hash equal when bit-identical; float engines hash their float64 bit patterns.</summary>
    private static void AppendHash(LogitsHash hash, IInferenceEngine engine, double[] logits)
    {
        if (ExactRawLogits.Last(engine) is { } raw) { hash.Append(raw); return; }
        var bits = new long[logits.Length];
        for (int i = 0; i < logits.Length; i++) bits[i] = BitConverter.DoubleToInt64Bits(logits[i]);
        hash.Append(bits);
    }
}
