using System.IO.Compression;
using System.Text.Json;
using GpuIntLab.Core.Tokenization;

namespace GpuIntLab.Tests.Tokenization;

/// <summary>The Llama 3 and Qwen3 tokenizer.json files and tokenizer-cases.json (Data/conformance/families).</summary>
public static class ByteLevelBpeTestData
{
    public sealed record Case(string Tokenizer, int Index, string Text, int[] Ids);

    public static readonly string[] Names = ["llama3", "qwen3"];
    public static string FamiliesDir => Path.Combine(TestData.ConformanceDir, "families");
    public static string TokenizerDir(string name) => Path.Combine(FamiliesDir, "tokenizers", name);

    public static byte[] TokenizerJson(string name)
    {
        using var gz = new GZipStream(File.OpenRead(Path.Combine(TokenizerDir(name), "tokenizer.json.gz")), CompressionMode.Decompress);
        using var ms = new MemoryStream();
        gz.CopyTo(ms);
        return ms.ToArray();
    }

    public static byte[] TokenizerConfigJson(string name) => File.ReadAllBytes(Path.Combine(TokenizerDir(name), "tokenizer_config.json"));

    private static readonly Dictionary<string, Lazy<ByteLevelBpeTokenizer>> s_tokenizers = Names.ToDictionary(n => n,
        n => new Lazy<ByteLevelBpeTokenizer>(() => ByteLevelBpeTokenizer.FromJson(TokenizerJson(n), n + "/tokenizer.json", TokenizerConfigJson(n), n + "/tokenizer_config.json")));

    public static ByteLevelBpeTokenizer Get(string name) => s_tokenizers[name].Value;

    private static readonly Lazy<(Case[] Cases, Case[] Gates)> s_cases = new(() =>
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(FamiliesDir, "tokenizer-cases.json")));
        var cases = new List<Case>();
        var gates = new List<Case>();
        foreach (string name in Names)
        {
            var t = doc.RootElement.GetProperty(name);
            Case Read(JsonElement e, int i) => new(name, i, e.GetProperty("text").GetString()!, e.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray());
            cases.AddRange(t.GetProperty("cases").EnumerateArray().Select(Read));
            gates.AddRange(t.GetProperty("gate_prompts").EnumerateArray().Select(Read));
        }
        return (cases.ToArray(), gates.ToArray());
    });

    public static Case[] Cases => s_cases.Value.Cases;
    public static Case[] GatePrompts => s_cases.Value.Gates;

    /// <summary>A model folder holding only the tokenizer files (tokenizer.json gunzipped, tokenizer_config.json).</summary>
    public static string WriteTokenizerFolder(string name)
    {
        string dir = TestData.TempDir("tok-" + name);
        File.WriteAllBytes(Path.Combine(dir, "tokenizer.json"), TokenizerJson(name));
        File.WriteAllBytes(Path.Combine(dir, "tokenizer_config.json"), TokenizerConfigJson(name));
        return dir;
    }
}
