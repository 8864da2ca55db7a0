using System.Text;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Tokenization;

/// <summary>Random strings against Microsoft.ML.Tokenizers: any difference must be the equal-score tie rule alone.</summary>
public class LlamaTokenizerFuzzTests(ITestOutputHelper output)
{
    private static readonly string[] Pool =
    [
        "a", "b", "e", "t", "h", " ", " ", "  ", "\n", "\t", "=", "-", ".", "!", "?", "1", "0", "9", "é", "ü", "ß", "日", "本", "語",
        "中", "東", "京", "п", "р", "и", "😀", "🙂", "👍🏽", "\u200d", "<s>", "</s>", "the", "ing", "tion", "aaa", "ab", "ba", "龘", "\ue000",
    ];

    [Fact]
    public void Random_strings_differ_from_the_library_only_by_the_tie_rule()
    {
        var tok = TokenizerTestData.Llama2;
        var lib = TokenizerTestData.Library;
        var rng = new Random(20261124);
        int differ = 0;
        for (int n = 0; n < 2000; n++)
        {
            var sb = new StringBuilder();
            int parts = rng.Next(1, 25);
            for (int i = 0; i < parts; i++) sb.Append(Pool[rng.Next(Pool.Length)]);
            string text = sb.ToString();
            int[] ours = tok.Encode(text);
            int[] theirs = lib.EncodeToIds(text).ToArray();
            int[] rightmost = tok.EncodeWithRightmostTies(text, addBos: true);
            Assert.True(rightmost.SequenceEqual(theirs), $"'{TokenizerTestData.Label(text)}': library [{string.Join(' ', theirs)}] vs rightmost-tie [{string.Join(' ', rightmost)}]");
            if (!ours.SequenceEqual(theirs)) differ++;
            Assert.Equal(text, tok.Decode(ours));
        }
        output.WriteLine($"{differ} of 2000 random strings hit an equal-score tie where the library differs");
    }
}
