using System.Diagnostics;
using GpuIntLab.Core.Tokenization;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Tokenization;

public class SentencePieceBpeTrainerTests(ITestOutputHelper output)
{
    private static readonly Lazy<byte[]> s_model512 = new(() => SentencePieceBpeTrainer.Train(StoryCorpus.Lines(300_000), 512));
    private static byte[] Model512 => s_model512.Value;

    [Fact]
    public void Model_has_the_requested_vocab_and_layout()
    {
        var tok = LlamaTokenizer.FromBytes(Model512);
        output.WriteLine(string.Join(" ", Enumerable.Range(259, 253).Select(i => $"{tok.IdToPiece(i)}({tok.Score(i)})")));
        Assert.Equal(512, tok.VocabSize);
        Assert.Equal((0, 1, 2), (tok.UnkId, tok.BosId, tok.EosId));
        Assert.Equal(("<unk>", SentencePieceType.Unknown), (tok.IdToPiece(0), tok.PieceType(0)));
        Assert.Equal(("<s>", SentencePieceType.Control), (tok.IdToPiece(1), tok.PieceType(1)));
        Assert.Equal(("</s>", SentencePieceType.Control), (tok.IdToPiece(2), tok.PieceType(2)));
        for (int b = 0; b < 256; b++)
        {
            Assert.Equal($"<0x{b:X2}>", tok.IdToPiece(3 + b));
            Assert.Equal(SentencePieceType.Byte, tok.PieceType(3 + b));
        }
        for (int id = 259; id < 512; id++)
        {
            Assert.Equal(SentencePieceType.Normal, tok.PieceType(id));
            if (id > 259) Assert.True(tok.Score(id) < tok.Score(id - 1), $"scores must descend at {id}");
        }
        var m = tok.Model;
        Assert.Equal(SentencePieceModel.ModelTypeBpe, m.ModelType);
        Assert.True(m.ByteFallback);
        Assert.Equal("identity", m.NormalizerName);
        Assert.True(m.AddDummyPrefix);
        Assert.False(m.RemoveExtraWhitespaces);
        Assert.True(m.EscapeWhitespaces);
        Assert.Equal(-1, m.PadId);
        Assert.Equal(512, m.TrainerVocabSize);
        // common words of the corpus became single pieces
        Assert.Equal(["<s>", "▁Once", "▁upon", "▁a", "▁time"], tok.Encode("Once upon a time").Select(tok.IdToPiece).ToArray());
    }

    [Theory]
    [InlineData(300)]
    [InlineData(400)]
    [InlineData(550)]
    public void Vocab_size_is_exactly_as_requested(int vocab)
    {
        byte[] model = SentencePieceBpeTrainer.Train(StoryCorpus.Lines(200_000, seed: 5), vocab);
        Assert.Equal(vocab, LlamaTokenizer.FromBytes(model).VocabSize);
    }

    [Fact]
    public void Loads_with_Microsoft_ML_Tokenizers_and_agrees_on_corpus_like_text()
    {
        var ours = LlamaTokenizer.FromBytes(Model512);
        var lib = ours.CreateLibraryTokenizer();
        Assert.Equal(512, lib.Vocabulary.Count);
        int compared = 0;
        foreach (string line in StoryCorpus.Lines(60_000, seed: 99))
        {
            int[] mine = ours.Encode(line);
            int[] theirs = lib.EncodeToIds(line).ToArray();
            Assert.True(mine.SequenceEqual(theirs), $"'{line}'\nours [{string.Join(' ', mine)}]\nlib  [{string.Join(' ', theirs)}]");
            Assert.Equal(line, lib.Decode(mine));
            compared++;
        }
        Assert.True(compared > 50);
    }

    [Theory]
    [InlineData("Zürich 東京 🙂")]
    [InlineData("Once upon a time, Lily found 42 shiny apples.")]
    [InlineData("  two leading spaces, tabs\tand\nnewlines  ")]
    [InlineData("Ωmega ünïcode — “quotes” ¿qué? 😀👍🏽")]
    [InlineData("")]
    public void Encode_decode_round_trips_with_byte_fallback(string text)
    {
        var tok = LlamaTokenizer.FromBytes(Model512);
        int[] ids = tok.Encode(text);
        Assert.Equal(text, tok.Decode(ids));
        Assert.Equal(text, tok.CreateLibraryTokenizer().Decode(ids));
        if (text.Contains('東')) Assert.Contains(ids, id => tok.PieceType(id) == SentencePieceType.Byte);
    }

    [Fact]
    public void Training_is_deterministic()
    {
        byte[] again = SentencePieceBpeTrainer.Train(StoryCorpus.Lines(300_000), 512);
        Assert.Equal(Model512, again);
    }

    [Fact]
    public void Two_megabyte_corpus_trains()
    {
        var sw = Stopwatch.StartNew();
        byte[] model = SentencePieceBpeTrainer.Train(StoryCorpus.Lines(2_000_000, seed: 11), 512);
        output.WriteLine($"2 MB corpus, 512 pieces: {sw.ElapsedMilliseconds} ms, model {model.Length} bytes");
        Assert.Equal(512, LlamaTokenizer.FromBytes(model).VocabSize);
    }

    [Fact]
    public void Rare_characters_beyond_the_budget_fall_back_to_bytes()
    {
        // 300 distinct CJK characters cannot all get pieces in a 300-piece vocabulary.
        var lines = Enumerable.Range(0, 300).Select(i => $"word {(char)(0x4E00 + i)} again and again").ToList();
        byte[] model = SentencePieceBpeTrainer.Train(lines, 300);
        var tok = LlamaTokenizer.FromBytes(model);
        Assert.Equal(300, tok.VocabSize);
        foreach (string line in lines.Take(20)) Assert.Equal(line, tok.Decode(tok.Encode(line)));
    }

    [Fact]
    public void Bad_arguments_are_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => SentencePieceBpeTrainer.Train(["hello"], 259));
        Assert.Throws<ArgumentException>(() => SentencePieceBpeTrainer.Train(["", ""], 300));
        var e = Assert.Throws<InvalidOperationException>(() => SentencePieceBpeTrainer.Train(["ab"], 400));
        Assert.Contains("too small", e.Message);
    }
}

public class UserDefinedPieceTests
{
    [Fact]
    public void User_defined_pieces_are_matched_first_and_never_merged()
    {
        var trained = SentencePieceModel.Parse(SentencePieceBpeTrainer.Train(StoryCorpus.Lines(50_000), 400));
        var pieces = trained.Pieces.ToList();
        pieces.Add(new("<|tag|>", 0, SentencePieceType.UserDefined));
        var model = new SentencePieceModel
        {
            Pieces = pieces, ModelType = SentencePieceModel.ModelTypeBpe, ByteFallback = true,
            NormalizerName = "identity", RemoveExtraWhitespaces = false,
        };
        var tok = LlamaTokenizer.FromBytes(model.ToBytes());
        int tag = tok.PieceToId("<|tag|>");
        Assert.Equal(400, tag);
        int[] ids = tok.Encode("the<|tag|>cat <|tag", addBos: false);
        Assert.Single(ids, tag);
        Assert.Equal("the<|tag|>cat <|tag", tok.Decode(ids));
    }
}
