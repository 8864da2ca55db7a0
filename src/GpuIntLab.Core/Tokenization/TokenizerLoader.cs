namespace GpuIntLab.Core.Tokenization;

/// <summary>Finds and loads the tokenizer of a model folder, whichever kind it ships.</summary>
public static class TokenizerLoader
{
    public const string SentencePieceFileName = "tokenizer.model";
    public const string HfJsonFileName = "tokenizer.json";

    /// <summary>
    /// The file the folder's tokenizer is read from, or null when it has neither. tokenizer.model wins
    /// when both are present: HF repos ship both only for SentencePiece models (Llama 2, TinyLlama), whose
    /// tokenizer.json is a Metaspace/byte-fallback conversion that <see cref="LlamaTokenizer"/> already
    /// reproduces exactly from the original; byte-level BPE models (Llama 3, Qwen, SmolLM2) ship only
    /// tokenizer.json.
    /// </summary>
    public static string? FindTokenizerFile(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        string model = Path.Combine(folder, SentencePieceFileName);
        if (File.Exists(model)) return model;
        string json = Path.Combine(folder, HfJsonFileName);
        return File.Exists(json) ? json : null;
    }

    /// <summary>The folder's tokenizer, or null when it has no tokenizer.model or tokenizer.json.</summary>
    public static ITokenizer? TryLoad(string folder)
    {
        string? file = FindTokenizerFile(folder);
        if (file is null) return null;
        return Path.GetFileName(file) == SentencePieceFileName ? LlamaTokenizer.Load(file) : ByteLevelBpeTokenizer.Load(file);
    }

    /// <summary>The folder's tokenizer; a folder with neither file is an error naming it.</summary>
    public static ITokenizer Load(string folder)
    {
        if (!Directory.Exists(folder)) throw new TokenizerLoadException($"tokenizer folder not found: '{Path.GetFullPath(folder)}'");
        return TryLoad(folder) ?? throw new TokenizerLoadException(
            $"'{Path.GetFullPath(folder)}' has no {HfJsonFileName} or {SentencePieceFileName}: no tokenizer to load");
    }
}
