using GpuIntLab.Core.Tokenization;

namespace GpuIntLab.Training;

/// <summary>A SentencePiece tokenizer (as shipped in tokenizer.model) seen through <see cref="ITrainingTokenizer"/>.</summary>
public sealed class SentencePieceTrainingTokenizer(byte[] modelProto) : ITrainingTokenizer
{
    private readonly LlamaTokenizer _tokenizer = LlamaTokenizer.FromBytes(modelProto);

    public int VocabSize => _tokenizer.VocabSize;
    public int BosId => _tokenizer.BosId;
    public int EosId => _tokenizer.EosId;
    public byte[]? ModelProto { get; } = modelProto;
    public int[] Encode(string text) => _tokenizer.Encode(text);
    public string Decode(ReadOnlySpan<int> ids) => _tokenizer.Decode(ids);
}

/// <summary>Builds the run's tokenizer.</summary>
public static class TokenizerFactory
{
    /// <summary>Byte-fallback SentencePiece BPE of <paramref name="vocabSize"/> pieces trained on the stories.</summary>
    public static ITrainingTokenizer TrainBpe(IReadOnlyList<string> stories, int vocabSize) =>
        new SentencePieceTrainingTokenizer(SentencePieceBpeTrainer.Train(stories, vocabSize));
}
