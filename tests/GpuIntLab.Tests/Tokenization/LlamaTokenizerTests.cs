using System.Text;
using GpuIntLab.Core.Tokenization;
using Xunit;

namespace GpuIntLab.Tests.Tokenization;

public class LlamaTokenizerTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static LlamaTokenizer Tok => TokenizerTestData.Llama2;

    private static readonly string[] s_texts =
    [
        "Hello world", "The quick brown fox jumps over the lazy dog.",
        "café naïve Straße façade Ångström", "Ünïcödé àccênts",
        "日本語のテキスト", "中文分词测试 and 한국어",
        "I like 👍🏽 and 👨\u200d👩\u200d👧 emoji 🎉", "😀", "𠜎𠜱𠝹 龘靐齉", "\ue000 private use \U0010FFFD",
        " leading space", "   three leading", "trailing space ", "trailing three   ", "multiple    spaces   inside",
        " ", "   ", "line one\nline two\n", "\n\n", "tabs\tand\r\nwindows", "<s> literal </s> <unk>",
        "aaaa ===== ---------- !!!???", "def f():\n                    return 0",
    ];

    public static TheoryData<string> RoundTripTexts() => new(s_texts);

    [Theory]
    [MemberData(nameof(RoundTripTexts))]
    public void Encode_then_decode_restores_text(string text)
    {
        int[] ids = Tok.Encode(text);
        Assert.Equal(text, Tok.Decode(ids));
        Assert.Equal(text, Tok.Decode(Tok.Encode(text, addBos: false)));
        // eos at the end is invisible too
        Assert.Equal(text, Tok.Decode([.. ids, Tok.EosId]));
    }

    [Theory]
    [MemberData(nameof(RoundTripTexts))]
    public void Streaming_decoder_equals_whole_decode(string text)
    {
        int[] ids = Tok.Encode(text);
        var d = Tok.CreateStreamingDecoder();
        var sb = new StringBuilder();
        foreach (int id in ids) sb.Append(d.Push(id));
        sb.Append(d.Flush());
        Assert.Equal(Tok.Decode(ids), sb.ToString());
    }

    [Theory]
    [MemberData(nameof(RoundTripTexts))]
    public void DecodeNext_streaming_equals_whole_decode_without_multibyte_fallback(string text)
    {
        int[] ids = Tok.Encode(text);
        bool multiByteFallback = ids.Any(id => Tok.PieceType(id) == SentencePieceType.Byte && Tok.IdToPiece(id).CompareTo("<0x80>") >= 0);
        var sb = new StringBuilder();
        int prev = -1;
        foreach (int id in ids) { sb.Append(Tok.DecodeNext(prev, id)); prev = id; }
        if (multiByteFallback)
            Assert.NotEqual(Tok.Decode(ids), sb.ToString()); // documented: needs the stateful decoder
        else
            Assert.Equal(Tok.Decode(ids), sb.ToString());
    }

    [Fact]
    public void Byte_fallback_is_used_for_characters_outside_the_vocabulary()
    {
        int[] ids = Tok.Encode("😀", addBos: false);
        // "▁" then the four UTF-8 bytes of U+1F600
        Assert.Equal(["▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"], ids.Select(Tok.IdToPiece).ToArray());
        Assert.Equal("😀", Tok.Decode(ids));
    }

    [Fact]
    public void Decode_matches_SentencePiece_rules()
    {
        int b(string p) => Tok.PieceToId(p);
        // leading dummy-prefix space dropped once; later spaces kept
        Assert.Equal("Hello world", Tok.Decode([1, b("▁Hello"), b("▁world")]));
        Assert.Equal(" Hello", Tok.Decode([1, b("▁"), b("▁Hello")]));
        // truncated UTF-8 from byte pieces: one U+FFFD per invalid byte
        Assert.Equal("\uFFFD\uFFFDA", Tok.Decode([b("<0xF0>"), b("<0x9F>"), b("A")]));
        Assert.Equal("\uFFFD", Tok.Decode([b("<0xE6>")]));
        // <unk> has the unk surface
        Assert.Equal(" \u2047 ", Tok.Decode([0]));
        Assert.Equal("", Tok.Decode([1, 2]));
    }

    [Fact]
    public void DecodeNext_applies_the_leading_space_rule()
    {
        int hello = Tok.PieceToId("▁Hello"), world = Tok.PieceToId("▁world");
        Assert.Equal("Hello", Tok.DecodeNext(Tok.BosId, hello));
        Assert.Equal("Hello", Tok.DecodeNext(-1, hello));
        Assert.Equal(" world", Tok.DecodeNext(hello, world));
        Assert.Equal("", Tok.DecodeNext(world, Tok.EosId));
        Assert.Equal("\n", Tok.DecodeNext(world, Tok.PieceToId("<0x0A>")));
    }

    [Fact]
    public void Library_decode_agrees_on_round_trip_texts()
    {
        foreach (string text in s_texts)
        {
            int[] ids = Tok.Encode(text);
            Assert.Equal(Tok.Decode(ids), TokenizerTestData.Library.Decode(ids));
        }
    }

    [Fact]
    public void Missing_file_names_the_path()
    {
        string path = Path.Combine(Path.GetTempPath(), "gpuintlab-no-such-dir", "tokenizer.model");
        var e = Assert.Throws<TokenizerLoadException>(() => LlamaTokenizer.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void Garbage_bytes_are_rejected()
    {
        string path = Path.Combine(Path.GetTempPath(), $"gpuintlab-garbage-{Environment.ProcessId}.model");
        try
        {
            var rng = new Random(1234);
            var junk = new byte[4096];
            rng.NextBytes(junk);
            File.WriteAllBytes(path, junk);
            var e = Assert.Throws<TokenizerLoadException>(() => LlamaTokenizer.Load(path));
            Assert.Contains(path, e.Message);

            File.WriteAllText(path, "this is plainly not a protobuf\n");
            Assert.Throws<TokenizerLoadException>(() => LlamaTokenizer.Load(path));

            File.WriteAllBytes(path, []);
            e = Assert.Throws<TokenizerLoadException>(() => LlamaTokenizer.Load(path));
            Assert.Contains("no sentence pieces", e.Message);
        }
        finally { File.Delete(path); }
    }

    [Fact]
    public void Truncated_model_is_rejected()
    {
        byte[] bytes = File.ReadAllBytes(TokenizerTestData.Llama2ModelPath);
        var e = Assert.Throws<TokenizerLoadException>(() => LlamaTokenizer.FromBytes(bytes[..(bytes.Length / 2 + 3)]));
        Assert.Contains("malformed protobuf", e.Message);
    }

    [Fact]
    public void Unigram_model_is_rejected_as_not_BPE()
    {
        var m = SentencePieceModel.Parse(File.ReadAllBytes(TokenizerTestData.Llama2ModelPath));
        var unigram = new SentencePieceModel
        {
            Pieces = m.Pieces, ModelType = SentencePieceModel.ModelTypeUnigram, ByteFallback = true,
            NormalizerName = "identity", RemoveExtraWhitespaces = false,
        };
        var e = Assert.Throws<TokenizerLoadException>(() => LlamaTokenizer.FromBytes(unigram.ToBytes()));
        Assert.Contains("not a BPE model", e.Message);
    }

    [Fact]
    public void Out_of_range_ids_name_the_id_and_vocab_size()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Tok.ValidateIds([1, 5, 32000]));
        Assert.Contains("32000", e.Message);
        Assert.Contains("size 32000", e.Message);
        e = Assert.Throws<ArgumentOutOfRangeException>(() => Tok.Decode([1, -7]));
        Assert.Contains("-7", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Tok.IdToPiece(40000));
        Assert.Throws<ArgumentOutOfRangeException>(() => Tok.DecodeNext(1, 32000));
        Tok.ValidateIds([0, 1, 2, 31999]);
    }

    [Fact]
    public void Model_round_trips_through_the_writer()
    {
        byte[] bytes = File.ReadAllBytes(TokenizerTestData.Llama2ModelPath);
        var rewritten = LlamaTokenizer.FromBytes(SentencePieceModel.Parse(bytes).ToBytes());
        foreach (var c in TokenizerTestData.Cases) Assert.Equal(c.Ids, rewritten.Encode(c.Text));
    }

    [Fact]
    public void Encoding_100_KB_completes_and_matches_per_line_structure()
    {
        var sb = new StringBuilder();
        var rng = new Random(7);
        string[] words = ["the", "capital", "of", "France", "is", "Paris", "aaaa", "=====", "    ", "日本語", "😀", "café", "\n", "1+1=2"];
        while (sb.Length < 100_000) sb.Append(words[rng.Next(words.Length)]).Append(' ');
        string text = sb.ToString();
        _ = Tok; // load outside the timings
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int[] ids = Tok.Encode(text);
        output.WriteLine($"mixed 100 KB: {ids.Length} ids in {sw.ElapsedMilliseconds} ms");
        Assert.True(ids.Length > 10_000);
        Assert.Equal(text, Tok.Decode(ids));

        // a 100 KB run of one character (worst case for the merge agenda) also completes
        string run = new('a', 100_000);
        sw.Restart();
        int[] runIds = Tok.Encode(run);
        output.WriteLine($"'a' x 100000: {runIds.Length} ids in {sw.ElapsedMilliseconds} ms");
        Assert.Equal(run, Tok.Decode(runIds));
        string spaces = new(' ', 100_000);
        sw.Restart();
        int[] spaceIds = Tok.Encode(spaces);
        output.WriteLine($"' ' x 100000: {spaceIds.Length} ids in {sw.ElapsedMilliseconds} ms");
        Assert.Equal(spaces, Tok.Decode(spaceIds));
    }
}
