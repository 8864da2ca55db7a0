using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using GpuIntLab.Core.Models;
using GpuIntLab.Core.Tokenization;

namespace GpuIntLab.Experiments;

/// <summary>
/// The spec's optional <c>corpus</c>: a text file (encoded with the model's tokenizer, no BOS) or a JSON array
/// of token ids, evaluated teacher-forced in chunks of <see cref="Context"/> tokens.
/// </summary>
public sealed class CorpusSpec
{
    public const int DefaultContext = 512;

    /// <summary>Text file, relative to the spec file or absolute.</summary>
    [JsonPropertyName("text")] public string? Text { get; set; }
    /// <summary>JSON file holding one array of token ids, relative to the spec file or absolute.</summary>
    [JsonPropertyName("ids")] public string? Ids { get; set; }
    /// <summary>Chunk length C in tokens, BOS included (llama.cpp's -c).</summary>
    [JsonPropertyName("context")] public int Context { get; set; } = DefaultContext;
    /// <summary>Use at most this many corpus tokens (from the start); null: all.</summary>
    [JsonPropertyName("max_tokens")] public int? MaxTokens { get; set; }

    /// <summary>Checks what can be checked without the model: exactly one source, sizes in range.</summary>
    public void Validate(string specPath)
    {
        if ((Text == null) == (Ids == null)) throw new ExperimentSpecException($"{specPath}: corpus needs exactly one of 'text' or 'ids'");
        if (Context < 4) throw new ExperimentSpecException($"{specPath}: corpus.context must be at least 4 (got {Context})");
        if (MaxTokens is int m && m < 1) throw new ExperimentSpecException($"{specPath}: corpus.max_tokens must be at least 1 (got {m})");
    }

    /// <summary>The corpus file's full path (relative paths are against the spec's folder).</summary>
    public string ResolvePath(string specPath)
    {
        string raw = Text ?? Ids!;
        return Path.IsPathRooted(raw) ? raw : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(specPath) ?? ".", raw));
    }

    /// <summary>Reads and tokenizes the corpus and cuts it into chunks for this model; every problem names the spec file and field.</summary>
    public CorpusChunks Load(string specPath, LlamaConfig config, ITokenizer? tokenizer)
    {
        Validate(specPath);
        string field = Text != null ? "corpus.text" : "corpus.ids";
        string file = ResolvePath(specPath);
        if (!File.Exists(file)) throw new ExperimentSpecException($"{specPath}: {field}: file '{file}' not found");
        if (Context > config.MaxPositionEmbeddings)
            throw new ExperimentSpecException($"{specPath}: corpus.context {Context} exceeds the model's context of {config.MaxPositionEmbeddings}");
        int[] ids;
        if (Text != null)
        {
            if (tokenizer == null) throw new ExperimentSpecException($"{specPath}: corpus.text needs the model's tokenizer (tokenizer.model or tokenizer.json) (give 'ids' instead)");
            ids = tokenizer.Encode(File.ReadAllText(file), addSpecialTokens: false);
        }
        else
        {
            try { ids = JsonSerializer.Deserialize<int[]>(File.ReadAllText(file)) ?? throw new JsonException("null"); }
            catch (JsonException e) { throw new ExperimentSpecException($"{specPath}: corpus.ids: '{file}' is not a JSON array of token ids ({e.Message})"); }
        }
        for (int i = 0; i < ids.Length; i++)
            if ((uint)ids[i] >= (uint)config.VocabSize)
                throw new ExperimentSpecException($"{specPath}: {field}: token id {ids[i]} at index {i} of '{file}' is outside the vocabulary [0, {config.VocabSize})");
        if (MaxTokens is int max && ids.Length > max) ids = ids[..max];
        int? bos = config.BosTokenId >= 0 && config.BosTokenId < config.VocabSize ? config.BosTokenId : null;
        var chunks = CorpusChunks.Cut(ids, Context, bos);
        if (chunks.Count == 0)
            throw new ExperimentSpecException($"{specPath}: {field}: '{file}' gives {ids.Length} tokens, fewer than one chunk of corpus.context {Context} needs ({CorpusChunks.CorpusTokensPerChunk(Context, bos)})");
        return chunks;
    }
}

/// <summary>
/// llama.cpp's perplexity / KL chunking: non-overlapping chunks of C tokens, each BOS (when the model has one)
/// followed by the next C-1 corpus tokens (C without BOS); the first half (C/2 tokens) is context only, and every
/// prediction whose target lies in the second half is scored: logits after positions C/2 .. C-2 predicting the
/// tokens at C/2+1 .. C-1, so C-1-C/2 scored positions a chunk. A partial last chunk is dropped.
/// (llama.cpp overwrites the first corpus token of each C-token slice with BOS; here BOS is added in front, so
/// no corpus token is skipped. The scored positions are the same in number and place.)
/// </summary>
public sealed class CorpusChunks
{
    public int Context { get; }
    public int? Bos { get; }
    /// <summary>Each chunk's C token ids, BOS first when the model has one.</summary>
    public IReadOnlyList<int[]> Chunks { get; }
    /// <summary>SHA-256 of the corpus tokens used (after max_tokens and dropping the partial chunk), for cache keys.</summary>
    public string CorpusHash { get; }

    private CorpusChunks(int context, int? bos, List<int[]> chunks)
    {
        Context = context; Bos = bos; Chunks = chunks;
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var c in chunks) hash.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(c.AsSpan()));
        CorpusHash = Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    public int Count => Chunks.Count;
    /// <summary>Context tokens fed before the first scored prediction: positions 0 .. C/2 (the logits after C/2 predict token C/2+1).</summary>
    public int FirstScored => Context / 2;
    /// <summary>Predictions scored per chunk.</summary>
    public int ScoredPerChunk => Context - 1 - FirstScored;

    public static int CorpusTokensPerChunk(int context, int? bos) => bos.HasValue ? context - 1 : context;

    public static CorpusChunks Cut(IReadOnlyList<int> corpus, int context, int? bos)
    {
        if (context < 4) throw new ArgumentOutOfRangeException(nameof(context), context, "a chunk needs at least 4 tokens");
        int per = CorpusTokensPerChunk(context, bos);
        var chunks = new List<int[]>();
        for (int start = 0; start + per <= corpus.Count; start += per)
        {
            var chunk = new int[context];
            int at = 0;
            if (bos is int b) chunk[at++] = b;
            for (int i = 0; i < per; i++) chunk[at++] = corpus[start + i];
            chunks.Add(chunk);
        }
        return new CorpusChunks(context, bos, chunks);
    }
}
