namespace GpuIntLab.Core.Tokenization;

/// <summary>
/// What engines, the CLI and the runner need from a model's tokenizer, whichever kind the model ships:
/// SentencePiece <c>tokenizer.model</c> (<see cref="LlamaTokenizer"/>) or HF byte-level BPE
/// <c>tokenizer.json</c> (<see cref="ByteLevelBpeTokenizer"/>). <see cref="TokenizerLoader"/> picks one.
/// </summary>
public interface ITokenizer
{
    /// <summary>One more than the largest token id the tokenizer knows.</summary>
    int VocabSize { get; }

    /// <summary>The id <see cref="Encode(string, bool)"/> puts first when asked for special tokens, or null when the model adds none.</summary>
    int? BosTokenId { get; }

    /// <summary>The ids that end a generation (the tokenizer's EOS, plus generation_config.json's where a model has more).</summary>
    IReadOnlyList<int> EosTokenIds { get; }

    /// <summary>Encodes with the special tokens the model itself adds (e.g. BOS for Llama).</summary>
    int[] Encode(string text);

    /// <summary>Encodes <paramref name="text"/>; with <paramref name="addSpecialTokens"/> false the ids are the text's alone.</summary>
    int[] Encode(string text, bool addSpecialTokens);

    /// <summary>The text of <paramref name="ids"/>; bytes that are not valid UTF-8 become U+FFFD.</summary>
    string Decode(ReadOnlySpan<int> ids);

    /// <summary>A decoder fed one id at a time whose outputs, concatenated with its final flush, equal <see cref="Decode"/>.</summary>
    ITokenStreamDecoder CreateStreamingDecoder();
}

/// <summary>Incremental decode: text is released only when its UTF-8 is complete.</summary>
public interface ITokenStreamDecoder
{
    /// <summary>The text that <paramref name="id"/> completes (possibly "").</summary>
    string Push(int id);

    /// <summary>Ends the sequence: bytes of an incomplete character still held become U+FFFD.</summary>
    string Flush();
}
