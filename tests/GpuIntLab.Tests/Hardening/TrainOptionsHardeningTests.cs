using GpuIntLab.Training;
using Xunit;

namespace GpuIntLab.Tests.Hardening;

/// <summary>Training options that cannot work are refused before any corpus, tokenizer or step, naming the option and the reason.</summary>
public class TrainOptionsHardeningTests
{
    public static TheoryData<string, string, string> Cases => new()
    {
        // option values (name=value;...), tokenizer kind, expected fragment of the message
        { "VocabSize=1", "bpe", "--vocab: 1 leaves no room" },
        { "KvHeads=4", "bpe", "--kv-heads: 4 does not divide --heads 6" },
        { "", "wordpiece", "--tokenizer: unknown kind 'wordpiece'" },
        { "SeqLen=512", "bpe", "--seq-len: 512 is longer than --context 256" },
        { "Batch=0", "bpe", "--batch: must be at least 1, got 0" },
        { "CorpusChars=0", "bpe", "--corpus-chars: must be at least 1, got 0" },
        { "Heads=5", "bpe", "--heads: 5 does not divide --hidden 192" },
        { "Hidden=180;Heads=4;KvHeads=2", "bpe", "the head size 180/4 = 45 must be even" },
        { "LearningRate=-0.001", "bpe", "--lr: must be a positive number" },
        { "Steps=0", "bytes", "--steps: must be at least 1" },
    };

    private static TrainOptions With(string assignments)
    {
        var o = new TrainOptions();
        foreach (var a in assignments.Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            var (name, value) = (a.Split('=')[0], a.Split('=')[1]);
            o = name switch
            {
                "VocabSize" => o with { VocabSize = int.Parse(value) },
                "KvHeads" => o with { KvHeads = int.Parse(value) },
                "Heads" => o with { Heads = int.Parse(value) },
                "Hidden" => o with { Hidden = int.Parse(value) },
                "SeqLen" => o with { SeqLen = int.Parse(value) },
                "Batch" => o with { Batch = int.Parse(value) },
                "CorpusChars" => o with { CorpusChars = long.Parse(value) },
                "Steps" => o with { Steps = int.Parse(value) },
                "LearningRate" => o with { LearningRate = double.Parse(value, System.Globalization.CultureInfo.InvariantCulture) },
                _ => throw new ArgumentException(name),
            };
        }
        return o;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ImpossibleOptionsAreRefusedWithTheReason(string assignments, string tokenizer, string expected)
    {
        var e = Assert.Throws<TrainingInputException>(() => TrainOptionsCheck.Validate(With(assignments), tokenizer, 512));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void TheDefaultsPass() => TrainOptionsCheck.Validate(new TrainOptions(), "bpe", 512);
}
