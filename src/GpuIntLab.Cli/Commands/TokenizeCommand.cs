using System.CommandLine;
using System.Text;
using System.Text.Json;
using GpuIntLab.Core.Tokenization;

namespace GpuIntLab.Cli.Commands;

/// <summary>
/// <c>gpuintlab tokenize</c>: a model folder's token ids for one text, or for every line of a JSON-lines
/// file in one process (the tokenizer is loaded once; outside tools can compare their ids with ours).
/// </summary>
public static class TokenizeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Folder holding tokenizer.json (+ tokenizer_config.json) or tokenizer.model; config.json and weights are not needed", Required = true };
        var text = new Option<string?>("--text") { Description = "Text to encode; the ids are printed space-separated" };
        var input = new Option<string?>("--input-jsonl") { Description = "JSON-lines file of {\"text\": ...}; writes {\"text\": ..., \"ids\": [...]} per line to stdout" };
        var addSpecial = new Option<bool>("--add-special-tokens") { Description = "Add the special tokens the model adds (e.g. Llama's BOS); without it the ids are the text's alone" };
        var command = new Command("tokenize", "Encode text with a model's tokenizer (tokenizer.json byte-level BPE or SentencePiece tokenizer.model).")
        {
            model, text, input, addSpecial,
        };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(text), parse.GetValue(input), parse.GetValue(addSpecial)));
        return command;
    }

    private static int Run(string modelDir, string? text, string? inputJsonl, bool addSpecialTokens)
    {
        if ((text == null) == (inputJsonl == null)) throw new UserInputException("give exactly one of --text TEXT or --input-jsonl FILE");
        if (!Directory.Exists(modelDir)) throw new UserInputException($"--model: folder not found: '{Path.GetFullPath(modelDir)}'");
        if (inputJsonl != null && !File.Exists(inputJsonl)) throw new UserInputException($"--input-jsonl: file not found: '{Path.GetFullPath(inputJsonl)}'");
        var tokenizer = TokenizerLoader.Load(modelDir);
        if (text != null)
        {
            Console.WriteLine(string.Join(' ', tokenizer.Encode(text, addSpecialTokens)));
            return 0;
        }

        // Parse every line before writing anything, so a bad line leaves no half-written output behind.
        var texts = ReadTexts(inputJsonl!);
        using var stdout = new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false), 1 << 16);
        var buffer = new MemoryStream();
        using var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        foreach (string t in texts)
        {
            json.Reset();
            buffer.SetLength(0);
            json.WriteStartObject();
            json.WriteString("text", t);
            json.WriteStartArray("ids");
            foreach (int id in tokenizer.Encode(t, addSpecialTokens)) json.WriteNumberValue(id);
            json.WriteEndArray();
            json.WriteEndObject();
            json.Flush();
            stdout.WriteLine(Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length));
        }
        return 0;
    }

    private static List<string> ReadTexts(string path)
    {
        var texts = new List<string>();
        int lineNumber = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string where = $"{path}:{lineNumber}";
            JsonElement root;
            try
            {
                using var doc = JsonDocument.Parse(line);
                root = doc.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw new UserInputException($"{where}: not a JSON object: {e.Message}");
            }
            if (root.ValueKind != JsonValueKind.Object) throw new UserInputException($"{where}: expected a JSON object like {{\"text\": \"...\"}}, got {root.ValueKind}");
            if (!root.TryGetProperty("text", out var value)) throw new UserInputException($"{where}: no \"text\" field");
            if (value.ValueKind != JsonValueKind.String) throw new UserInputException($"{where}: \"text\" must be a string, not {value.ValueKind}");
            string text = value.GetString()!;
            if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') >= 0 && !IsWellFormed(text))
                throw new UserInputException($"{where}: \"text\" holds a lone surrogate escape (\\uD800-\\uDFFF): not valid Unicode");
            texts.Add(text);
        }
        return texts;
    }

    private static bool IsWellFormed(string s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1])) i++;
            else if (char.IsSurrogate(s[i])) return false;
        }
        return true;
    }
}
