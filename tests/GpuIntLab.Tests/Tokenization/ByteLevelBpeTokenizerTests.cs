using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;
using GpuIntLab.Core.Tokenization;
using Xunit;

namespace GpuIntLab.Tests.Tokenization;

/// <summary>The byte-level BPE tokenizer on small hand-built tokenizer.json files whose ids are worked out by hand, plus NFC, the code-point regex and the loader.</summary>
public class ByteLevelBpeTokenizerTests
{
    /// <summary>
    /// Ids 0..255 are the single bytes (GPT-2's alphabet: 'a' = 97, space = 'Ġ' = 32), then the extra tokens
    /// in order from 256. Pre-tokenizer: ByteLevel with GPT-2's regex, no prefix space.
    /// </summary>
    private static JsonObject ToyJson(string[] extraTokens, JsonArray merges, bool ignoreMerges = false, JsonArray? addedTokens = null)
    {
        var vocab = new JsonObject();
        for (int b = 0; b < 256; b++) vocab[ByteChar(b).ToString()] = b;
        for (int i = 0; i < extraTokens.Length; i++) vocab[extraTokens[i]] = 256 + i;
        return new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = addedTokens ?? [],
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["post_processor"] = null,
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["ignore_merges"] = ignoreMerges, ["vocab"] = vocab, ["merges"] = merges },
        };
    }

    /// <summary>GPT-2's bytes_to_unicode, written out from its definition: printable bytes stand for themselves, the rest take 256, 257, ... in byte order.</summary>
    private static char ByteChar(int b)
    {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (printable) return (char)b;
        int k = 0;
        for (int x = 0; x < b; x++) if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) k++;
        return (char)(256 + k);
    }

    private static ByteLevelBpeTokenizer Build(JsonObject json, JsonObject? config = null) =>
        ByteLevelBpeTokenizer.FromJson(Encoding.UTF8.GetBytes(json.ToJsonString()), "toy.json",
            config is null ? null : Encoding.UTF8.GetBytes(config.ToJsonString()), "toy_config.json");

    [Fact]
    public void Lowest_rank_merges_first_in_both_merge_forms()
    {
        // "abc": ranks b+c (0) < a+b (1) < a+bc (2): b+c first, then a+bc = "abc" (258). Merging leftmost first
        // instead would give "ab" + "c" = [257, 99].
        string[] extra = ["bc", "ab", "abc"];
        var asStrings = Build(ToyJson(extra, ["b c", "a b", "a bc"]));
        var asPairs = Build(ToyJson(extra, [new JsonArray("b", "c"), new JsonArray("a", "b"), new JsonArray("a", "bc")]));
        Assert.Equal([258], asStrings.Encode("abc", false));
        Assert.Equal([258], asPairs.Encode("abc", false));
        // "abcb c": GPT-2 regex -> "abcb", " c"; "abcb" -> a,bc,b -> abc,b; " c" has no merge: [32, 99].
        Assert.Equal([258, 98, 32, 99], asPairs.Encode("abcb c", false));
        // Equal ranks cannot happen within one pair; repeated pairs merge leftmost first: "aaa" with a+a -> "aa","a".
        var aa = Build(ToyJson(["aa"], ["a a"]));
        Assert.Equal([256, 97], aa.Encode("aaa", false));
    }

    [Fact]
    public void Ignore_merges_takes_a_whole_vocabulary_word_as_one_token()
    {
        // "abd" is in the vocabulary, but no merge path builds it (only a+b): BPE gives "ab","d".
        string[] extra = ["ab", "abd"];
        Assert.Equal([256, 100], Build(ToyJson(extra, ["a b"])).Encode("abd", false));
        Assert.Equal([257], Build(ToyJson(extra, ["a b"], ignoreMerges: true)).Encode("abd", false));
    }

    [Fact]
    public void Digits_step_and_prefix_space_split_as_the_rust_library()
    {
        // Merge "1"+"2" exists: GPT-2's regex alone keeps "123" together -> [256 ("12"), 51 ("3")];
        // a Digits(individual_digits) step first isolates each digit (SmolLM2's pre-tokenizer) -> [49, 50, 51].
        var plain = ToyJson(["12"], ["1 2"]);
        Assert.Equal([256, 51], Build(plain).Encode("123", false));
        var digits = ToyJson(["12"], ["1 2"]);
        digits["pre_tokenizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Digits", ["individual_digits"] = true },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true }),
        };
        Assert.Equal([49, 50, 51], Build(digits).Encode("123", false));
        // add_prefix_space: "hi" is encoded as " hi" (space = byte 32 = 'Ġ').
        var prefix = ToyJson([], []);
        prefix["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = true, ["use_regex"] = true };
        Assert.Equal([32, 104, 105], Build(prefix).Encode("hi", false));
        Assert.Equal([32, 104, 105], Build(prefix).Encode(" hi", false));
    }

    [Fact]
    public void Added_tokens_are_cut_out_longest_first_and_lstrip_rstrip_take_the_spaces()
    {
        var added = new JsonArray(
            new JsonObject { ["id"] = 300, ["content"] = "<x>", ["special"] = true, ["normalized"] = false },
            new JsonObject { ["id"] = 301, ["content"] = "<x>y", ["special"] = false, ["normalized"] = false },
            new JsonObject { ["id"] = 302, ["content"] = "[m]", ["special"] = true, ["normalized"] = false, ["lstrip"] = true, ["rstrip"] = true });
        var tok = Build(ToyJson([], [], addedTokens: added));
        Assert.Equal([97, 301, 98], tok.Encode("a<x>yb", false));          // "<x>y" beats "<x>"
        Assert.Equal([97, 300, 122], tok.Encode("a<x>z", false));
        Assert.Equal([97, 302, 98], tok.Encode("a  [m]  b", false));        // the spaces go with [m]
        Assert.Equal("a<x>yb", tok.Decode([97, 301, 98]));
        Assert.Equal("ab", tok.Decode([97, 300, 98], skipSpecialTokens: true));
        Assert.True(tok.IsSpecial(300));
        Assert.False(tok.IsSpecial(301));
    }

    [Fact]
    public void Bos_and_eos_come_from_tokenizer_config_when_there_is_no_template()
    {
        var added = new JsonArray(
            new JsonObject { ["id"] = 256, ["content"] = "<s>", ["special"] = true, ["normalized"] = false },
            new JsonObject { ["id"] = 257, ["content"] = "</s>", ["special"] = true, ["normalized"] = false });
        var config = new JsonObject { ["add_bos_token"] = true, ["bos_token"] = "<s>", ["add_eos_token"] = true, ["eos_token"] = new JsonObject { ["content"] = "</s>" } };
        var tok = Build(ToyJson([], [], addedTokens: added), config);
        Assert.Equal([256, 104, 105, 257], tok.Encode("hi"));
        Assert.Equal([104, 105], tok.Encode("hi", addSpecialTokens: false));
        Assert.Equal(256, tok.BosTokenId);
        Assert.Equal([257], tok.EosTokenIds);
    }

    [Fact]
    public void Decode_replaces_invalid_utf8_as_rusts_from_utf8_lossy()
    {
        var tok = Build(ToyJson([], []));
        Assert.Equal("\uFFFDA", tok.Decode([0xE6, 0x97, 0x41]));     // truncated 3-byte character: one U+FFFD
        Assert.Equal("\uFFFD\uFFFD", tok.Decode([0xC0, 0x80]));     // C0 is never valid: one U+FFFD per byte
        Assert.Equal("\u65E5", tok.Decode([0xE6, 0x97, 0xA5]));    // 日
        Assert.Equal("", tok.Decode([100_000]));                   // an id with no token is skipped, as HF does
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([-1]));
    }

    [Fact]
    public void Streaming_decode_holds_a_character_until_its_last_byte()
    {
        var stream = Build(ToyJson([], [])).CreateStreamingDecoder();
        Assert.Equal("", stream.Push(0xE6));
        Assert.Equal("", stream.Push(0x97));
        Assert.Equal("\u65E5", stream.Push(0xA5));
        Assert.Equal("x", stream.Push('x'));
        Assert.Equal("", stream.Push(0xE6));
        Assert.Equal("\uFFFD", stream.Flush());                     // unfinished at the end: U+FFFD, as full decode
    }

    [Fact]
    public void Nfc_composes_reorders_and_respects_exclusions()
    {
        Assert.Equal("\u00E9", UnicodeNfc.Normalize("e\u0301"));                    // é
        Assert.Equal("\u1EAD", UnicodeNfc.Normalize("a\u0302\u0323"));              // ậ: marks reordered (220 before 230), then composed
        Assert.Equal("\u1EAD", UnicodeNfc.Normalize("a\u0323\u0302"));
        Assert.Equal("\u01FA", UnicodeNfc.Normalize("A\u030A\u0301"));              // Ǻ: composed twice
        Assert.Equal("\u00C5", UnicodeNfc.Normalize("\u212B"));                     // Angstrom sign: singleton decomposition
        Assert.Equal("\u0915\u093C", UnicodeNfc.Normalize("\u0958"));              // क़ is a composition exclusion
        Assert.Equal("\uD55C", UnicodeNfc.Normalize("\u1112\u1161\u11AB"));        // 한 from conjoining jamo
        Assert.Equal("\u00E1\u0301", UnicodeNfc.Normalize("a\u0301\u0301"));        // the second acute is blocked
        Assert.Equal("\u00E9\U0001F999", UnicodeNfc.Normalize("e\u0301\U0001F999"));
        const string ascii = "plain ASCII text stays the same object";
        Assert.Same(ascii, UnicodeNfc.Normalize(ascii));
    }

    [Fact]
    public void Code_point_regex_sees_astral_letters_and_keeps_emoji_whole()
    {
        var regex = new CodePointRegex(@"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+");
        string Pieces(string s) => string.Join("|", regex.Matches(s).Select(m => s.Substring(m.Start, m.Length)));
        // U+20000 (CJK Ext. B) is a letter: " 𠀀abc" is one piece. In UTF-16 .NET would see two Cs surrogates.
        Assert.Equal(" \U00020000abc", Pieces(" \U00020000abc"));
        // An emoji (So) may lead a letter run as the optional non-letter, taken whole: "🦙abc".
        Assert.Equal("\U0001F999abc", Pieces("\U0001F999abc"));
        // U+1D7CE (mathematical bold digit zero) is a number.
        Assert.Equal("\U0001D7CE|1", Pieces("\U0001D7CE1"));
        foreach (UnicodeCategory category in Enum.GetValues<UnicodeCategory>())
            if (category != UnicodeCategory.Surrogate)
                Assert.Equal(category, CharUnicodeInfo.GetUnicodeCategory(CodePointRegex.StandIn(category)));
    }

    [Fact]
    public void Unsupported_features_are_refused_naming_file_and_field()
    {
        var singleWord = new JsonArray(new JsonObject { ["id"] = 256, ["content"] = "<w>", ["single_word"] = true });
        var e = Assert.Throws<TokenizerLoadException>(() => Build(ToyJson([], [], addedTokens: singleWord)));
        Assert.Contains("toy.json", e.Message);
        Assert.Contains("single_word", e.Message);

        var metaspace = ToyJson([], []);
        metaspace["decoder"] = new JsonObject { ["type"] = "Metaspace" };
        Assert.Contains("decoder.type 'Metaspace'", Assert.Throws<TokenizerLoadException>(() => Build(metaspace)).Message);

        var badMerge = ToyJson([], ["a b"]);
        Assert.Contains("model.merges[0]", Assert.Throws<TokenizerLoadException>(() => Build(badMerge)).Message);

        var nfkc = ToyJson([], []);
        nfkc["normalizer"] = new JsonObject { ["type"] = "NFKC" };
        Assert.Contains("normalizer.type 'NFKC'", Assert.Throws<TokenizerLoadException>(() => Build(nfkc)).Message);

        Assert.Contains("not valid JSON", Assert.Throws<TokenizerLoadException>(() =>
            ByteLevelBpeTokenizer.FromJson(Encoding.UTF8.GetBytes("{\"model\": "), "broken.json")).Message);
    }

    [Fact]
    public void Loader_picks_the_folders_tokenizer_and_names_a_folder_without_one()
    {
        string json = ByteLevelBpeTestData.WriteTokenizerFolder("llama3");
        var tok = TokenizerLoader.Load(json);
        Assert.IsType<ByteLevelBpeTokenizer>(tok);
        Assert.Equal([128000, 791, 6864, 315, 9822, 374], tok.Encode("The capital of France is"));

        string both = ByteLevelBpeTestData.WriteTokenizerFolder("llama3");
        File.Copy(TestData.Llama2TokenizerPath, Path.Combine(both, "tokenizer.model"));
        Assert.IsType<LlamaTokenizer>(TokenizerLoader.Load(both)); // a SentencePiece model's tokenizer.json is a conversion

        string empty = TestData.TempDir("tok-none");
        var e = Assert.Throws<TokenizerLoadException>(() => TokenizerLoader.Load(empty));
        Assert.Contains(Path.GetFullPath(empty), e.Message);
        Assert.Null(TokenizerLoader.TryLoad(empty));
    }

    [Fact]
    public void Checkpoint_with_tokenizer_json_gives_the_byte_level_tokenizer()
    {
        // A model whose embedding has room for Qwen's 151669 tokens (Qwen pads vocab_size to 151936).
        string dir = ByteLevelBpeTestData.WriteTokenizerFolder("qwen3");
        SeededCheckpointWriter.Write(dir, SeededCheckpointWriter.ConformanceConfig() with { VocabSize = 151936, NumHiddenLayers = 1 }, new(TensorDtype.BF16));
        using var checkpoint = LlamaCheckpoint.Open(dir);
        var tok = checkpoint.LoadTokenizer();
        Assert.IsType<ByteLevelBpeTokenizer>(tok);
        Assert.Equal([151644, 872], tok!.Encode("<|im_start|>user"));
    }

    [Fact]
    public void Tokenizer_with_more_tokens_than_the_embedding_has_rows_is_refused()
    {
        string dir = ByteLevelBpeTestData.WriteTokenizerFolder("qwen3");
        SeededCheckpointWriter.Write(dir, SeededCheckpointWriter.ConformanceConfig() with { NumHiddenLayers = 1 }, new(TensorDtype.BF16));
        using var checkpoint = LlamaCheckpoint.Open(dir);
        var e = Assert.Throws<ModelLoadException>(() => checkpoint.LoadTokenizer());
        Assert.Contains("151669", e.Message);
        Assert.Contains("32000", e.Message);
    }
}
