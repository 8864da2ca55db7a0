using System.Collections.Concurrent;
using System.Text;

namespace GpuIntLab.Core.Tokenization;

/// <summary>
/// HF <c>tokenizer.json</c> byte-level BPE (GPT-2 lineage: Llama 3, Qwen2/2.5/3, SmolLM2), encoding as
/// the Rust <c>tokenizers</c> library does:
/// <list type="number">
/// <item>added tokens are cut out of the raw text as whole strings, leftmost first and longest among those
/// starting at the same place (non-normalized ones on the raw text, normalized ones after the normalizer;
/// lstrip/rstrip take the whitespace beside the token with it);</item>
/// <item>each remaining piece is normalized (NFC where the file asks, <see cref="UnicodeNfc"/>), split by
/// the pre-tokenizer steps (<c>Split</c> regex, isolated; <c>Digits</c>; <c>ByteLevel</c>, with GPT-2's
/// regex when use_regex) with code-point regex semantics (<see cref="CodePointRegex"/>), and its UTF-8
/// bytes mapped to GPT-2's printable byte alphabet;</item>
/// <item>each pre-token is one id when ignore_merges is set and the vocabulary holds it whole; otherwise
/// the adjacent pair with the lowest merge rank is merged repeatedly, equal ranks leftmost first.</item>
/// </list>
/// Special tokens added on request come from the post_processor's TemplateProcessing, else from
/// tokenizer_config.json's add_bos_token / add_eos_token. Decoding reverses the byte alphabet and reads
/// the bytes as UTF-8 with each maximal invalid subsequence replaced by U+FFFD (Rust's from_utf8_lossy).
/// Microsoft.ML.Tokenizers 2.0.1 is not used here: its pre-tokenizers run .NET regex over UTF-16 code
/// units and it has no NFC without ICU, which the project's invariant-globalization builds lack.
/// </summary>
public sealed class ByteLevelBpeTokenizer : ITokenizer
{
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocab;
    private readonly Dictionary<long, (int Rank, int Merged)> _merges;
    private readonly bool _ignoreMerges;
    private readonly bool _nfc;
    private readonly AddedTokenMatcher? _rawAddedTokens;        // added tokens with normalized = false
    private readonly AddedTokenMatcher? _normalizedAddedTokens; // added tokens with normalized = true
    private readonly IReadOnlyList<PreTokenizerStep> _preTokenizer;
    private readonly int[] _prefixIds, _suffixIds;
    private readonly byte[]?[] _tokenBytes;   // per id, what the ByteLevel decoder turns the token into; null: no token
    private readonly bool[] _isSpecial;
    private readonly int[] _byteSymbolIds = new int[256];
    private readonly ConcurrentDictionary<string, int[]> _wordCache = new(StringComparer.Ordinal);
    private const int WordCacheLimit = 100_000;

    internal ByteLevelBpeTokenizer(HfTokenizerDefinition d)
    {
        Source = d.Source;
        _vocab = d.Vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _merges = d.Merges;
        _ignoreMerges = d.IgnoreMerges;
        _nfc = d.Nfc;
        _preTokenizer = d.PreTokenizer;
        _prefixIds = d.PrefixIds;
        _suffixIds = d.SuffixIds;
        EosTokenIds = d.EosIds;
        BosTokenId = _prefixIds.Length > 0 ? _prefixIds[0] : null;

        int size = 0;
        foreach (int id in d.Vocab.Values) size = Math.Max(size, id + 1);
        foreach (var t in d.AddedTokens) size = Math.Max(size, t.Id + 1);
        VocabSize = size;
        _tokenBytes = new byte[]?[size];
        _isSpecial = new bool[size];
        foreach (var (token, id) in d.Vocab) _tokenBytes[id] = ByteLevelAlphabet.TokenBytes(token);
        foreach (var t in d.AddedTokens)
        {
            _tokenBytes[t.Id] = ByteLevelAlphabet.TokenBytes(t.Content);
            _isSpecial[t.Id] = t.Special;
        }
        for (int b = 0; b < 256; b++)
        {
            if (!d.Vocab.TryGetValue(ByteLevelAlphabet.ByteToChar[b].ToString(), out _byteSymbolIds[b]))
                throw new TokenizerLoadException($"'{Source}': the vocabulary lacks the byte-level symbol of byte 0x{b:X2} ('{ByteLevelAlphabet.ByteToChar[b]}'), so some text cannot be encoded");
        }
        var raw = d.AddedTokens.Where(t => !t.Normalized).ToList();
        var normalized = d.AddedTokens.Where(t => t.Normalized).ToList();
        _rawAddedTokens = raw.Count > 0 ? new AddedTokenMatcher(raw) : null;
        _normalizedAddedTokens = normalized.Count > 0 ? new AddedTokenMatcher(normalized) : null;
    }

    /// <summary>Loads <c>tokenizer.json</c>, reading <c>tokenizer_config.json</c> and <c>generation_config.json</c> beside it when present.</summary>
    public static ByteLevelBpeTokenizer Load(string tokenizerJsonPath)
    {
        ArgumentNullException.ThrowIfNull(tokenizerJsonPath);
        string dir = Path.GetDirectoryName(Path.GetFullPath(tokenizerJsonPath))!;
        byte[] json = ReadFile(tokenizerJsonPath, "tokenizer.json");
        string configPath = Path.Combine(dir, "tokenizer_config.json");
        string generationPath = Path.Combine(dir, "generation_config.json");
        return FromJson(json, tokenizerJsonPath,
            File.Exists(configPath) ? ReadFile(configPath, "tokenizer_config.json") : null, configPath,
            File.Exists(generationPath) ? ReadFile(generationPath, "generation_config.json") : null, generationPath);
    }

    /// <summary>Builds the tokenizer from the bytes of tokenizer.json and, optionally, tokenizer_config.json and generation_config.json.</summary>
    public static ByteLevelBpeTokenizer FromJson(byte[] tokenizerJson, string sourceName = "tokenizer.json",
        byte[]? tokenizerConfigJson = null, string configSourceName = "tokenizer_config.json",
        byte[]? generationConfigJson = null, string generationSourceName = "generation_config.json")
    {
        ArgumentNullException.ThrowIfNull(tokenizerJson);
        var definition = HfTokenizerDefinition.Parse(tokenizerJson, sourceName, tokenizerConfigJson, configSourceName, generationConfigJson, generationSourceName);
        return new ByteLevelBpeTokenizer(definition);
    }

    private static byte[] ReadFile(string path, string what)
    {
        try
        {
            return File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new TokenizerLoadException($"{what} not found: '{Path.GetFullPath(path)}'", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TokenizerLoadException($"cannot read {what} '{Path.GetFullPath(path)}': {e.Message}", e);
        }
    }

    /// <summary>Where the tokenizer was read from (for messages).</summary>
    public string Source { get; }
    public int VocabSize { get; }
    public int? BosTokenId { get; }
    public IReadOnlyList<int> EosTokenIds { get; }
    /// <summary>Ids put before the text by <see cref="Encode(string, bool)"/> with special tokens.</summary>
    public IReadOnlyList<int> PrefixIds => _prefixIds;
    /// <summary>Ids put after the text by <see cref="Encode(string, bool)"/> with special tokens.</summary>
    public IReadOnlyList<int> SuffixIds => _suffixIds;

    /// <summary>True when <paramref name="id"/> is an added token marked special (BOS, EOS, chat markers).</summary>
    public bool IsSpecial(int id) => (uint)id < (uint)VocabSize && _isSpecial[id];

    // ---------------------------------------------------------------- encode

    public int[] Encode(string text) => Encode(text, addSpecialTokens: true);

    public int[] Encode(string text, bool addSpecialTokens)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (addSpecialTokens) ids.AddRange(_prefixIds);
        text = ReplaceLoneSurrogates(text);
        foreach (var part in Split(text, _rawAddedTokens))
        {
            if (part.TokenId >= 0) { ids.Add(part.TokenId); continue; }
            string normalized = _nfc ? UnicodeNfc.Normalize(part.Text!) : part.Text!;
            foreach (var inner in Split(normalized, _normalizedAddedTokens))
            {
                if (inner.TokenId >= 0) ids.Add(inner.TokenId);
                else EncodeNormalized(inner.Text!, ids);
            }
        }
        if (addSpecialTokens) ids.AddRange(_suffixIds);
        return ids.ToArray();
    }

    /// <summary>Text reaches the Rust library as UTF-8, which has no lone surrogates: they become U+FFFD, as UTF-8 encoding makes them.</summary>
    private static string ReplaceLoneSurrogates(string text)
    {
        if (text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0) return text;
        var chars = text.ToCharArray();
        for (int i = 0; i < chars.Length; i++)
        {
            if (char.IsHighSurrogate(chars[i]) && i + 1 < chars.Length && char.IsLowSurrogate(chars[i + 1])) i++;
            else if (char.IsSurrogate(chars[i])) chars[i] = '\uFFFD';
        }
        return new string(chars);
    }

    private readonly record struct Part(string? Text, int TokenId);

    private static IEnumerable<Part> Split(string text, AddedTokenMatcher? matcher)
    {
        if (matcher is null)
        {
            if (text.Length != 0) yield return new Part(text, -1);
            yield break;
        }
        int pos = 0;
        foreach (var (start, end, id) in matcher.Find(text))
        {
            if (start > pos) yield return new Part(text[pos..start], -1);
            yield return new Part(null, id);
            pos = end;
        }
        if (pos < text.Length) yield return new Part(text[pos..], -1);
    }

    private void EncodeNormalized(string text, List<int> output)
    {
        var pieces = new List<string> { text };
        foreach (var step in _preTokenizer) pieces = step.Apply(pieces);
        foreach (var piece in pieces) EncodeWord(ByteLevelAlphabet.Map(piece), output);
    }

    /// <summary>BPE of one pre-token written in the byte-level alphabet.</summary>
    private void EncodeWord(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }
        if (_wordCache.TryGetValue(word, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        var ids = MergeWord(word);
        if (_wordCache.Count >= WordCacheLimit) _wordCache.Clear();
        _wordCache.TryAdd(word, ids);
        output.AddRange(ids);
    }

    /// <summary>
    /// HF's Word::merge_all: a queue of (rank, position) with the lowest rank first, ties leftmost; an entry
    /// whose pair has changed since it was queued is dropped.
    /// </summary>
    private int[] MergeWord(string word)
    {
        int n = word.Length;
        var ids = new int[n];
        var prev = new int[n];
        var next = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++)
        {
            char c = word[i];
            if (c >= ByteLevelAlphabet.CharToByte.Length || ByteLevelAlphabet.CharToByte[c] < 0)
                throw new InvalidOperationException($"internal: '{c}' is not in the byte-level alphabet");
            ids[i] = _byteSymbolIds[ByteLevelAlphabet.CharToByte[c]];
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }
        var queue = new PriorityQueue<(int Pos, int Merged), long>();
        void Consider(int left)
        {
            if (left < 0 || next[left] < 0) return;
            if (_merges.TryGetValue(PairKey(ids[left], ids[next[left]]), out var m))
                queue.Enqueue((left, m.Merged), ((long)m.Rank << 32) | (uint)left);
        }
        for (int i = 0; i + 1 < n; i++) Consider(i);
        while (queue.TryDequeue(out var top, out _))
        {
            int left = top.Pos;
            if (!alive[left] || next[left] < 0) continue;
            int right = next[left];
            if (!_merges.TryGetValue(PairKey(ids[left], ids[right]), out var m) || m.Merged != top.Merged) continue;
            ids[left] = m.Merged;
            alive[right] = false;
            next[left] = next[right];
            if (next[right] >= 0) prev[next[right]] = left;
            Consider(prev[left]);
            Consider(left);
        }
        var result = new List<int>(n);
        for (int i = 0; i >= 0; i = next[i]) result.Add(ids[i]);
        return result.ToArray();
    }

    internal static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    // ---------------------------------------------------------------- decode

    /// <summary>
    /// The text of <paramref name="ids"/> as HF's <c>decode(ids, skip_special_tokens=False)</c> gives it (no
    /// clean-up of spaces): every token, special ones included, through the ByteLevel decoder. A
    /// non-negative id with no token is skipped, as the Rust library skips it.
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids) => Decode(ids, skipSpecialTokens: false);

    /// <summary><see cref="Decode(ReadOnlySpan{int})"/>, leaving out special added tokens when <paramref name="skipSpecialTokens"/>.</summary>
    public string Decode(ReadOnlySpan<int> ids, bool skipSpecialTokens)
    {
        var bytes = new List<byte>(ids.Length * 4);
        foreach (int id in ids)
        {
            var b = TokenBytes(id);
            if (b is null || (skipSpecialTokens && _isSpecial[id])) continue;
            bytes.AddRange(b);
        }
        return Encoding.UTF8.GetString(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(bytes));
    }

    private byte[]? TokenBytes(int id)
    {
        if (id < 0) throw new ArgumentOutOfRangeException(nameof(id), id, $"token id {id} is negative");
        return id < _tokenBytes.Length ? _tokenBytes[id] : null;
    }

    public ITokenStreamDecoder CreateStreamingDecoder() => new StreamingDecoder(this);

    /// <summary>Holds the bytes of an incomplete UTF-8 character until the token completing it arrives.</summary>
    private sealed class StreamingDecoder(ByteLevelBpeTokenizer tokenizer) : ITokenStreamDecoder
    {
        private readonly List<byte> _pending = new(8);

        public string Push(int id)
        {
            var b = tokenizer.TokenBytes(id);
            if (b is null) return "";
            _pending.AddRange(b);
            return Drain(final: false);
        }

        public string Flush() => Drain(final: true);

        private string Drain(bool final)
        {
            if (_pending.Count == 0) return "";
            var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_pending);
            var sb = new StringBuilder(span.Length);
            int offset = 0;
            while (offset < span.Length)
            {
                var status = Rune.DecodeFromUtf8(span[offset..], out Rune rune, out int consumed);
                if (status == System.Buffers.OperationStatus.Done) sb.Append(rune.ToString());
                else if (status == System.Buffers.OperationStatus.NeedMoreData && !final) break;
                else sb.Append('\uFFFD'); // one per maximal invalid subsequence, as from_utf8_lossy
                offset += consumed;
            }
            _pending.RemoveRange(0, offset);
            return sb.ToString();
        }
    }
}

/// <summary>GPT-2's reversible map from bytes to printable characters (bytes_to_unicode).</summary>
internal static class ByteLevelAlphabet
{
    public static readonly char[] ByteToChar = BuildByteToChar();
    /// <summary>Byte of each alphabet character, -1 for characters outside the alphabet.</summary>
    public static readonly short[] CharToByte = BuildCharToByte();

    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int extra = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            map[b] = printable ? (char)b : (char)(256 + extra++);
        }
        return map;
    }

    private static short[] BuildCharToByte()
    {
        var map = new short[256 + 68];
        Array.Fill(map, (short)-1);
        for (int b = 0; b < 256; b++) map[ByteToChar[b]] = (short)b;
        return map;
    }

    /// <summary>The UTF-8 bytes of <paramref name="text"/> written in the alphabet.</summary>
    public static string Map(string text)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(text);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>What the ByteLevel decoder makes of a token: its alphabet characters as bytes, or, when a
    /// character lies outside the alphabet, the token's own UTF-8 (HF's fallback).</summary>
    public static byte[] TokenBytes(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            char c = token[i];
            if (c >= CharToByte.Length || CharToByte[c] < 0) return Encoding.UTF8.GetBytes(token);
            bytes[i] = (byte)CharToByte[c];
        }
        return bytes;
    }
}
