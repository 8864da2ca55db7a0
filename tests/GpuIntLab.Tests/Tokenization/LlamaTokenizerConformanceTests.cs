using GpuIntLab.Core.Tokenization;
using Xunit;

namespace GpuIntLab.Tests.Tokenization;

/// <summary>Every case of llama2-tokenizer-cases.json (Google SentencePiece's own ids) must match exactly.</summary>
public class LlamaTokenizerConformanceTests
{
    public static TheoryData<int, string> CaseRows()
    {
        var rows = new TheoryData<int, string>();
        foreach (var c in TokenizerTestData.Cases) rows.Add(c.Index, TokenizerTestData.Label(c.Text));
        return rows;
    }

    [Theory]
    [MemberData(nameof(CaseRows))]
    public void Encode_matches_SentencePiece(int index, string label)
    {
        var c = TokenizerTestData.Cases[index];
        var tok = TokenizerTestData.Llama2;
        int[] ids = tok.Encode(c.Text);
        Assert.True(c.Ids.SequenceEqual(ids),
            $"case {index} '{label}': expected [{string.Join(' ', c.Ids)}] got [{string.Join(' ', ids)}] ({string.Join(' ', ids.Select(tok.IdToPiece))})");
        Assert.Equal(c.Pieces, ids.Select(tok.IdToPiece).ToArray());
    }

    [Theory]
    [MemberData(nameof(CaseRows))]
    public void Decode_restores_text(int index, string label)
    {
        var c = TokenizerTestData.Cases[index];
        Assert.True(c.Text == TokenizerTestData.Llama2.Decode(c.Ids), $"case {index} '{label}'");
    }

    [Fact]
    public void Conformance_file_has_49_cases() => Assert.Equal(49, TokenizerTestData.Cases.Length);

    [Theory]
    [InlineData("What is the capital of France?", new[] { 1, 1724, 338, 278, 7483, 310, 3444, 29973 })]
    [InlineData("1+1=", new[] { 1, 29871, 29896, 29974, 29896, 29922 })]
    public void Design_facts(string text, int[] expected) => Assert.Equal(expected, TokenizerTestData.Llama2.Encode(text));

    [Fact]
    public void Special_ids_and_vocab()
    {
        var t = TokenizerTestData.Llama2;
        Assert.Equal(32000, t.VocabSize);
        Assert.Equal((1, 2, 0), (t.BosId, t.EosId, t.UnkId));
        Assert.True(t.AddBos);
        Assert.Equal([1], t.Encode(""));
        Assert.Empty(t.Encode("", addBos: false));
        Assert.Equal(t.Encode("Hello world")[1..], t.Encode("Hello world", addBos: false));
    }

    /// <summary>The library agrees everywhere except the cases the conformance file records for it.</summary>
    [Fact]
    public void Library_differs_only_where_recorded()
    {
        var lib = TokenizerTestData.Library;
        foreach (var c in TokenizerTestData.Cases)
        {
            int[] libIds = lib.EncodeToIds(c.Text).ToArray();
            Assert.True((c.MlIds ?? c.Ids).SequenceEqual(libIds), $"library on '{TokenizerTestData.Label(c.Text)}': [{string.Join(' ', libIds)}]");
        }
    }
}
