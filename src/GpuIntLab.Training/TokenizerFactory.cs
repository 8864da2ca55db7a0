namespace GpuIntLab.Training;

/// <summary>Builds the run's tokenizer.</summary>
public static class TokenizerFactory
{
    /// <summary>Byte-fallback SentencePiece BPE trained on the stories (the tokenizer branch's trainer).</summary>
    public static ITrainingTokenizer TrainBpe(IReadOnlyList<string> stories, int vocabSize) =>
        throw new NotSupportedException("the SentencePiece BPE trainer is not merged yet; use --tokenizer bytes");
}
