using System.Diagnostics;
using GpuIntLab.Core.Tokenization;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Tokenization;

/// <summary>
/// Every case of tokenizer-cases.json (ids three outside implementations agree on) for the real Llama 3
/// and Qwen3 tokenizer.json files: encode exactly, decode back, stream-decode to the same text.
/// </summary>
public class ByteLevelBpeConformanceTests(ITestOutputHelper output)
{
    public static TheoryData<string, int> CaseRows()
    {
        var rows = new TheoryData<string, int>();
        foreach (var c in ByteLevelBpeTestData.Cases) rows.Add(c.Tokenizer, c.Index);
        return rows;
    }

    private static ByteLevelBpeTestData.Case Find(string tokenizer, int index) =>
        ByteLevelBpeTestData.Cases.Single(c => c.Tokenizer == tokenizer && c.Index == index);

    [Fact]
    public void Both_tokenizers_have_27_cases_and_4_gate_prompts()
    {
        foreach (string name in ByteLevelBpeTestData.Names)
        {
            Assert.Equal(27, ByteLevelBpeTestData.Cases.Count(c => c.Tokenizer == name));
            Assert.Equal(4, ByteLevelBpeTestData.GatePrompts.Count(c => c.Tokenizer == name));
        }
    }

    [Theory]
    [MemberData(nameof(CaseRows))]
    public void Encode_matches_the_reference_ids(string tokenizer, int index)
    {
        var c = Find(tokenizer, index);
        int[] ids = ByteLevelBpeTestData.Get(tokenizer).Encode(c.Text, addSpecialTokens: false);
        Assert.True(c.Ids.SequenceEqual(ids), $"{tokenizer} case {index} {System.Text.Json.JsonSerializer.Serialize(c.Text)}: expected [{string.Join(' ', c.Ids)}] got [{string.Join(' ', ids)}]");
    }

    [Fact]
    public void Gate_prompts_match_the_reference_ids()
    {
        foreach (var g in ByteLevelBpeTestData.GatePrompts)
            Assert.Equal(g.Ids, ByteLevelBpeTestData.Get(g.Tokenizer).Encode(g.Text, addSpecialTokens: false));
    }

    /// <summary>Decoding the reference ids gives the text back; Qwen's NFC normalizer turns e + U+0301 into é first.</summary>
    [Theory]
    [MemberData(nameof(CaseRows))]
    public void Decode_of_the_reference_ids_restores_the_text(string tokenizer, int index)
    {
        var c = Find(tokenizer, index);
        string expected = tokenizer == "qwen3" ? c.Text.Replace("e\u0301", "\u00E9") : c.Text;
        Assert.Equal(expected, ByteLevelBpeTestData.Get(tokenizer).Decode(c.Ids));
    }

    [Theory]
    [MemberData(nameof(CaseRows))]
    public void Streaming_decode_equals_full_decode_and_releases_only_whole_characters(string tokenizer, int index)
    {
        var c = Find(tokenizer, index);
        var tok = ByteLevelBpeTestData.Get(tokenizer);
        var stream = tok.CreateStreamingDecoder();
        var pieces = c.Ids.Select(stream.Push).ToList();
        pieces.Add(stream.Flush());
        Assert.Equal(tok.Decode(c.Ids), string.Concat(pieces));
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD')); // a character split over tokens is held, not broken
    }

    [Fact]
    public void Special_tokens_Llama3_adds_BOS_Qwen_adds_nothing()
    {
        const string text = "The capital of France is";
        var llama = ByteLevelBpeTestData.Get("llama3");
        var qwen = ByteLevelBpeTestData.Get("qwen3");
        Assert.Equal([128000, 791, 6864, 315, 9822, 374], llama.Encode(text, addSpecialTokens: true));
        Assert.Equal([128000, 791, 6864, 315, 9822, 374], llama.Encode(text));
        Assert.Equal(128000, llama.BosTokenId);
        Assert.Equal([128001], llama.EosTokenIds);          // tokenizer_config.json eos_token <|end_of_text|>
        Assert.Equal(128256, llama.VocabSize);
        Assert.Equal([785, 6722, 315, 9625, 374], qwen.Encode(text, addSpecialTokens: true));
        Assert.Null(qwen.BosTokenId);
        Assert.Equal([151645], qwen.EosTokenIds);           // <|im_end|>
        Assert.Equal(151669, qwen.VocabSize);
    }

    /// <summary>
    /// Load cost, measured as this process's CPU time so that other load on a shared machine does not count
    /// (the bound is loose: other tests running in parallel add their CPU time too).
    /// </summary>
    [Fact]
    public void Loading_a_real_tokenizer_json_is_fast()
    {
        byte[] json = ByteLevelBpeTestData.TokenizerJson("llama3");
        byte[] config = ByteLevelBpeTestData.TokenizerConfigJson("llama3");
        ByteLevelBpeTokenizer.FromJson(json, "llama3", config); // JIT warm-up
        var process = Process.GetCurrentProcess();
        process.Refresh();
        var cpuBefore = process.TotalProcessorTime;
        var clock = Stopwatch.StartNew();
        var tok = ByteLevelBpeTokenizer.FromJson(json, "llama3", config);
        double wall = clock.Elapsed.TotalSeconds;
        process.Refresh();
        double cpu = (process.TotalProcessorTime - cpuBefore).TotalSeconds;
        output.WriteLine($"Llama 3 tokenizer.json ({json.Length / 1e6:F1} MB, 128000 vocab, 280147 merges) loaded in {cpu * 1000:F0} ms CPU, {wall * 1000:F0} ms wall");
        Assert.Equal(128256, tok.VocabSize);
        Assert.True(cpu < 10, $"loading took {cpu:F2} s of CPU");
    }
}
