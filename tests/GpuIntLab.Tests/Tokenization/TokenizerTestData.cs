using System.Text.Json;
using GpuIntLab.Core.Tokenization;

namespace GpuIntLab.Tests.Tokenization;

internal static class TokenizerTestData
{
    public static string ConformanceDir => Path.Combine(AppContext.BaseDirectory, "Data", "conformance");
    public static string Llama2ModelPath => Path.Combine(ConformanceDir, "tokenizer.model");

    private static readonly Lazy<LlamaTokenizer> s_llama2 = new(() => LlamaTokenizer.Load(Llama2ModelPath));
    public static LlamaTokenizer Llama2 => s_llama2.Value;

    private static readonly Lazy<Microsoft.ML.Tokenizers.LlamaTokenizer> s_library = new(() => Llama2.CreateLibraryTokenizer());
    public static Microsoft.ML.Tokenizers.LlamaTokenizer Library => s_library.Value;

    public sealed record Case(int Index, string Text, int[] Ids, string[] Pieces, int[]? MlIds);

    private static readonly Lazy<Case[]> s_cases = new(() =>
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ConformanceDir, "llama2-tokenizer-cases.json")));
        var list = new List<Case>();
        int i = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            int[]? ml = c.TryGetProperty("microsoft_ml_tokenizers_2_0_1_ids", out var m) ? m.EnumerateArray().Select(e => e.GetInt32()).ToArray() : null;
            list.Add(new Case(i++, c.GetProperty("text").GetString()!,
                c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                c.GetProperty("pieces").EnumerateArray().Select(e => e.GetString()!).ToArray(), ml));
        }
        return list.ToArray();
    });
    public static Case[] Cases => s_cases.Value;

    /// <summary>A readable, escaped label for a case (shows up in the test name).</summary>
    public static string Label(string text)
    {
        var sb = new System.Text.StringBuilder();
        foreach (char c in text.Length > 40 ? text[..40] + "…" : text)
            sb.Append(c switch { '\n' => "\\n", '\r' => "\\r", '\t' => "\\t", ' ' => "·", _ when char.IsControl(c) => $"\\u{(int)c:X4}", _ => c.ToString() });
        return sb.ToString();
    }
}
