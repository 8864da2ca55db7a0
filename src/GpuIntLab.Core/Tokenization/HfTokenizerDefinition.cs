using System.Buffers;
using System.Text.Json;

namespace GpuIntLab.Core.Tokenization;

/// <summary>One entry of tokenizer.json's added_tokens.</summary>
internal sealed record AddedTokenEntry(int Id, string Content, bool Special, bool LeftStrip, bool RightStrip, bool Normalized);

/// <summary>
/// What <see cref="ByteLevelBpeTokenizer"/> needs from tokenizer.json (+ tokenizer_config.json,
/// generation_config.json), checked field by field: anything the encoder would not reproduce exactly
/// is refused with the file, the field and the reason.
/// </summary>
internal sealed class HfTokenizerDefinition
{
    public required string Source { get; init; }
    public required Dictionary<string, int> Vocab { get; init; }
    /// <summary>(left id, right id) -> (rank, merged id).</summary>
    public required Dictionary<long, (int Rank, int Merged)> Merges { get; init; }
    public required bool IgnoreMerges { get; init; }
    public required bool Nfc { get; init; }
    public required List<PreTokenizerStep> PreTokenizer { get; init; }
    public required List<AddedTokenEntry> AddedTokens { get; init; }
    public required int[] PrefixIds { get; init; }
    public required int[] SuffixIds { get; init; }
    public required int[] EosIds { get; init; }

    public static HfTokenizerDefinition Parse(byte[] json, string source, byte[]? configJson, string configSource, byte[]? generationJson, string generationSource)
    {
        using var doc = ParseJson(json, source);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw Fail(source, "the file is not a JSON object");
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw Fail(source, "no 'model' object: not an HF tokenizer.json");

        string modelType = OptionalString(model, "type", source, "model.type") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "?");
        if (modelType != "BPE")
            throw Fail(source, $"model.type is '{modelType}'; only BPE tokenizer.json files are supported (a SentencePiece model needs its tokenizer.model)");
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() != 0)
            throw Fail(source, "model.dropout is set; BPE dropout (random merges) is not supported");
        foreach (string affix in (string[])["continuing_subword_prefix", "end_of_word_suffix"])
            if (!string.IsNullOrEmpty(OptionalString(model, affix, source, "model." + affix)))
                throw Fail(source, $"model.{affix} is set; only byte-level BPE without word affixes is supported");
        if (OptionalBool(model, "byte_fallback", source, "model.byte_fallback") == true)
            throw Fail(source, "model.byte_fallback is true: that is a SentencePiece-style BPE (Metaspace), not byte-level; use the model's tokenizer.model");
        bool ignoreMerges = OptionalBool(model, "ignore_merges", source, "model.ignore_merges") ?? false;

        var vocab = ParseVocab(model, source);
        var merges = ParseMerges(model, vocab, source);
        bool nfc = ParseNormalizer(root, source);
        var preTokenizer = ParsePreTokenizer(root, source);
        CheckDecoder(root, source);
        var added = ParseAddedTokens(root, source, nfc);

        using var config = configJson is null ? null : ParseJson(configJson, configSource);
        using var generation = generationJson is null ? null : ParseJson(generationJson, generationSource);
        int ResolveToken(string content, string where)
        {
            foreach (var t in added) if (t.Content == content) return t.Id;
            if (vocab.TryGetValue(content, out int id)) return id;
            throw Fail(where, $"token '{content}' is neither an added token nor in the vocabulary of '{source}'");
        }
        var (prefix, suffix) = ParsePostProcessor(root, source, config?.RootElement, configSource, ResolveToken);
        var eos = new List<int>();
        if (config is not null && TokenContent(config.RootElement, "eos_token", configSource) is string eosToken)
            eos.Add(ResolveToken(eosToken, configSource + ": eos_token"));
        if (generation is not null && generation.RootElement.ValueKind == JsonValueKind.Object
            && generation.RootElement.TryGetProperty("eos_token_id", out var genEos))
        {
            foreach (var e in genEos.ValueKind == JsonValueKind.Array ? genEos.EnumerateArray().ToArray() : [genEos])
            {
                if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int id) || id < 0)
                    throw Fail(generationSource, $"eos_token_id: {e.GetRawText()} is not a token id");
                if (!eos.Contains(id)) eos.Add(id);
            }
        }

        return new HfTokenizerDefinition
        {
            Source = source, Vocab = vocab, Merges = merges, IgnoreMerges = ignoreMerges, Nfc = nfc,
            PreTokenizer = preTokenizer, AddedTokens = added, PrefixIds = prefix, SuffixIds = suffix, EosIds = eos.ToArray(),
        };
    }

    private static JsonDocument ParseJson(byte[] json, string source)
    {
        try
        {
            return JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new TokenizerLoadException($"'{source}' is not valid JSON: {e.Message}", e);
        }
    }

    private static TokenizerLoadException Fail(string source, string problem) => new($"'{source}': {problem}");

    private static string? OptionalString(JsonElement obj, string name, string source, string field)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.String) throw Fail(source, $"{field} must be a string, not {v.ValueKind}");
        return v.GetString();
    }

    private static bool? OptionalBool(JsonElement obj, string name, string source, string field)
    {
        if (!obj.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Fail(source, $"{field} must be true or false, not {v.GetRawText()}");
        return v.GetBoolean();
    }

    private static Dictionary<string, int> ParseVocab(JsonElement model, string source)
    {
        if (!model.TryGetProperty("vocab", out var v) || v.ValueKind != JsonValueKind.Object)
            throw Fail(source, "model.vocab must be an object of token -> id");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var p in v.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetInt32(out int id) || id < 0)
                throw Fail(source, $"model.vocab['{p.Name}']: {p.Value.GetRawText()} is not a token id");
            if (!vocab.TryAdd(p.Name, id)) throw Fail(source, $"model.vocab: token '{p.Name}' appears twice");
        }
        if (vocab.Count == 0) throw Fail(source, "model.vocab is empty");
        return vocab;
    }

    /// <summary>
    /// Both forms HF writes: "left right" strings (older files) and ["left", "right"] pairs. Read with a
    /// Utf8JsonReader over the array's raw bytes into one reused buffer: a few hundred thousand merges
    /// would otherwise cost several strings each.
    /// </summary>
    private static Dictionary<long, (int, int)> ParseMerges(JsonElement model, Dictionary<string, int> vocab, string source)
    {
        if (!model.TryGetProperty("merges", out var m) || m.ValueKind != JsonValueKind.Array)
            throw Fail(source, "model.merges must be an array");
        var merges = new Dictionary<long, (int, int)>(m.GetArrayLength(), PairKeyComparer.Instance);
        var lookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        var reader = new Utf8JsonReader(System.Runtime.InteropServices.JsonMarshal.GetRawUtf8Value(m));
        reader.Read(); // StartArray
        char[] buffer = new char[256];
        int rank = 0;
        TokenizerLoadException Bad(string problem) => Fail(source, $"model.merges[{rank}]: {problem}");

        // Copies the current string token into buffer at offset; returns its length.
        int CopyString(ref Utf8JsonReader r, int offset)
        {
            if (r.TokenType != JsonTokenType.String) throw Bad("is neither \"left right\" nor [\"left\", \"right\"]");
            int max = r.HasValueSequence ? (int)r.ValueSequence.Length : r.ValueSpan.Length;
            if (buffer.Length < offset + max) Array.Resize(ref buffer, Math.Max(buffer.Length * 2, offset + max));
            return r.CopyString(buffer.AsSpan(offset));
        }

        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            int leftLength, length;
            if (reader.TokenType == JsonTokenType.String)
            {
                length = CopyString(ref reader, 0);
                var text = buffer.AsSpan(0, length);
                leftLength = text.IndexOf(' ');
                if (leftLength <= 0 || leftLength == length - 1 || text[(leftLength + 1)..].IndexOf(' ') >= 0)
                    throw Bad($"'{text}' is not two tokens separated by one space");
                // Close the gap so that buffer[0..length-1] is the merged token.
                text[(leftLength + 1)..].CopyTo(buffer.AsSpan(leftLength));
                length--;
            }
            else if (reader.TokenType == JsonTokenType.StartArray)
            {
                reader.Read();
                leftLength = CopyString(ref reader, 0);
                reader.Read();
                length = leftLength + CopyString(ref reader, leftLength);
                if (!reader.Read() || reader.TokenType != JsonTokenType.EndArray) throw Bad("a pair must have exactly two strings");
            }
            else
            {
                throw Bad("is neither \"left right\" nor [\"left\", \"right\"]");
            }
            var left = buffer.AsSpan(0, leftLength);
            var right = buffer.AsSpan(leftLength, length - leftLength);
            if (!lookup.TryGetValue(left, out int leftId)) throw Bad($"'{left}' is not in model.vocab");
            if (!lookup.TryGetValue(right, out int rightId)) throw Bad($"'{right}' is not in model.vocab");
            if (!lookup.TryGetValue(buffer.AsSpan(0, length), out int merged))
                throw Bad($"the merge of '{left}' and '{right}' is not in model.vocab");
            // A pair listed twice keeps its later rank, as the Rust library's HashMap collect does.
            merges[ByteLevelBpeTokenizer.PairKey(leftId, rightId)] = (rank, merged);
            rank++;
        }
        return merges;
    }

    /// <summary>Only NFC (Qwen) or none; true when NFC applies.</summary>
    private static bool ParseNormalizer(JsonElement root, string source)
    {
        if (!root.TryGetProperty("normalizer", out var n) || n.ValueKind == JsonValueKind.Null) return false;
        bool nfc = false;
        void Visit(JsonElement e, string field)
        {
            string type = OptionalString(e, "type", source, field + ".type") ?? "?";
            switch (type)
            {
                case "NFC": nfc = true; break;
                case "Sequence":
                    if (!e.TryGetProperty("normalizers", out var list) || list.ValueKind != JsonValueKind.Array)
                        throw Fail(source, $"{field}.normalizers must be an array");
                    int i = 0;
                    foreach (var inner in list.EnumerateArray()) Visit(inner, $"{field}.normalizers[{i++}]");
                    break;
                default:
                    throw Fail(source, $"{field}.type '{type}' is not supported (only NFC)");
            }
        }
        Visit(n, "normalizer");
        return nfc;
    }

    private static List<PreTokenizerStep> ParsePreTokenizer(JsonElement root, string source)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var p) || p.ValueKind == JsonValueKind.Null)
            throw Fail(source, "pre_tokenizer is null: not a byte-level BPE tokenizer (a ByteLevel pre-tokenizer is required)");
        var steps = new List<PreTokenizerStep>();
        void Visit(JsonElement e, string field)
        {
            string type = OptionalString(e, "type", source, field + ".type") ?? "?";
            switch (type)
            {
                case "Sequence":
                    if (!e.TryGetProperty("pretokenizers", out var list) || list.ValueKind != JsonValueKind.Array)
                        throw Fail(source, $"{field}.pretokenizers must be an array");
                    int i = 0;
                    foreach (var inner in list.EnumerateArray()) Visit(inner, $"{field}.pretokenizers[{i++}]");
                    break;
                case "Split":
                    string behavior = OptionalString(e, "behavior", source, field + ".behavior") ?? "?";
                    if (behavior != "Isolated") throw Fail(source, $"{field}.behavior '{behavior}' is not supported (only Isolated)");
                    if (OptionalBool(e, "invert", source, field + ".invert") == true) throw Fail(source, $"{field}.invert = true is not supported");
                    if (!e.TryGetProperty("pattern", out var pattern) || pattern.ValueKind != JsonValueKind.Object)
                        throw Fail(source, $"{field}.pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}");
                    string regex = OptionalString(pattern, "Regex", source, field + ".pattern.Regex")
                        ?? System.Text.RegularExpressions.Regex.Escape(OptionalString(pattern, "String", source, field + ".pattern.String")
                            ?? throw Fail(source, $"{field}.pattern must be {{\"Regex\": ...}} or {{\"String\": ...}}"));
                    try
                    {
                        steps.Add(new IsolatedSplitStep(new CodePointRegex(regex)));
                    }
                    catch (ArgumentException ex)
                    {
                        throw Fail(source, $"{field}.pattern: .NET cannot compile the regex: {ex.Message}");
                    }
                    break;
                case "Digits":
                    bool individual = OptionalBool(e, "individual_digits", source, field + ".individual_digits") ?? false;
                    steps.Add(new IsolatedSplitStep(new CodePointRegex(individual ? @"\p{N}" : @"\p{N}+")));
                    break;
                case "ByteLevel":
                    steps.Add(new ByteLevelStep(
                        OptionalBool(e, "add_prefix_space", source, field + ".add_prefix_space") ?? true,
                        OptionalBool(e, "use_regex", source, field + ".use_regex") ?? true));
                    break;
                default:
                    throw Fail(source, $"{field}.type '{type}' is not supported (Sequence, Split, Digits, ByteLevel are)");
            }
        }
        Visit(p, "pre_tokenizer");
        int byteLevel = steps.FindIndex(s => s is ByteLevelStep);
        if (byteLevel < 0) throw Fail(source, "pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer");
        if (byteLevel != steps.Count - 1 || steps.Count(s => s is ByteLevelStep) > 1)
            throw Fail(source, "pre_tokenizer: ByteLevel must be the last step, and only one (splits after the byte mapping are not supported)");
        return steps;
    }

    private static void CheckDecoder(JsonElement root, string source)
    {
        if (!root.TryGetProperty("decoder", out var d) || d.ValueKind != JsonValueKind.Object)
            throw Fail(source, "decoder is missing: a ByteLevel decoder is required");
        string type = OptionalString(d, "type", source, "decoder.type") ?? "?";
        if (type != "ByteLevel") throw Fail(source, $"decoder.type '{type}' is not supported (only ByteLevel)");
    }

    private static List<AddedTokenEntry> ParseAddedTokens(JsonElement root, string source, bool hasNormalizer)
    {
        var list = new List<AddedTokenEntry>();
        if (!root.TryGetProperty("added_tokens", out var a) || a.ValueKind == JsonValueKind.Null) return list;
        if (a.ValueKind != JsonValueKind.Array) throw Fail(source, "added_tokens must be an array");
        int i = 0;
        foreach (var t in a.EnumerateArray())
        {
            string field = $"added_tokens[{i++}]";
            if (t.ValueKind != JsonValueKind.Object) throw Fail(source, $"{field} must be an object");
            if (!t.TryGetProperty("id", out var idElement) || !idElement.TryGetInt32(out int id) || id < 0)
                throw Fail(source, $"{field}.id must be a token id");
            string content = OptionalString(t, "content", source, field + ".content") ?? "";
            if (content.Length == 0) throw Fail(source, $"{field}.content is empty");
            if (OptionalBool(t, "single_word", source, field + ".single_word") == true)
                throw Fail(source, $"{field} ('{content}'): single_word = true is not supported");
            bool normalized = OptionalBool(t, "normalized", source, field + ".normalized") ?? !(OptionalBool(t, "special", source, field + ".special") ?? false);
            list.Add(new AddedTokenEntry(id, content,
                OptionalBool(t, "special", source, field + ".special") ?? false,
                OptionalBool(t, "lstrip", source, field + ".lstrip") ?? false,
                OptionalBool(t, "rstrip", source, field + ".rstrip") ?? false,
                normalized && hasNormalizer));
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in list)
            if (!seen.Add(t.Content)) throw Fail(source, $"added_tokens: '{t.Content}' appears twice");
        return list;
    }

    /// <summary>
    /// The ids put around the text when special tokens are asked for: the post_processor's
    /// TemplateProcessing "single" template (special tokens before and after $A), or, with no template,
    /// tokenizer_config.json's add_bos_token/bos_token and add_eos_token/eos_token.
    /// </summary>
    private static (int[] Prefix, int[] Suffix) ParsePostProcessor(JsonElement root, string source, JsonElement? config, string configSource,
        Func<string, string, int> resolve)
    {
        JsonElement? template = null;
        void Visit(JsonElement e, string field)
        {
            string type = OptionalString(e, "type", source, field + ".type") ?? "?";
            switch (type)
            {
                case "ByteLevel": break; // offsets only
                case "TemplateProcessing":
                    if (template is not null) throw Fail(source, $"{field}: more than one TemplateProcessing");
                    template = e;
                    break;
                case "Sequence":
                    if (!e.TryGetProperty("processors", out var list) || list.ValueKind != JsonValueKind.Array)
                        throw Fail(source, $"{field}.processors must be an array");
                    int i = 0;
                    foreach (var inner in list.EnumerateArray()) Visit(inner, $"{field}.processors[{i++}]");
                    break;
                default:
                    throw Fail(source, $"{field}.type '{type}' is not supported (ByteLevel, TemplateProcessing, Sequence are)");
            }
        }
        if (root.TryGetProperty("post_processor", out var p) && p.ValueKind != JsonValueKind.Null) Visit(p, "post_processor");

        if (template is JsonElement t)
        {
            if (!t.TryGetProperty("single", out var single) || single.ValueKind != JsonValueKind.Array)
                throw Fail(source, "post_processor TemplateProcessing.single must be an array");
            t.TryGetProperty("special_tokens", out var specials);
            var prefix = new List<int>();
            var suffix = new List<int>();
            bool seenSequence = false;
            foreach (var item in single.EnumerateArray())
            {
                if (item.TryGetProperty("Sequence", out _)) { seenSequence = true; continue; }
                if (!item.TryGetProperty("SpecialToken", out var st) || OptionalString(st, "id", source, "TemplateProcessing.single[].SpecialToken.id") is not string name)
                    throw Fail(source, $"post_processor TemplateProcessing.single: {item.GetRawText()} is neither a Sequence nor a SpecialToken");
                int[] ids;
                if (specials.ValueKind == JsonValueKind.Object && specials.TryGetProperty(name, out var entry)
                    && entry.TryGetProperty("ids", out var idList) && idList.ValueKind == JsonValueKind.Array)
                    ids = idList.EnumerateArray().Select(x => x.TryGetInt32(out int v) && v >= 0 ? v
                        : throw Fail(source, $"post_processor special_tokens['{name}'].ids: {x.GetRawText()} is not a token id")).ToArray();
                else
                    ids = [resolve(name, source + ": post_processor")];
                (seenSequence ? suffix : prefix).AddRange(ids);
            }
            return (prefix.ToArray(), suffix.ToArray());
        }

        if (config is not JsonElement c || c.ValueKind != JsonValueKind.Object) return ([], []);
        int[] Optional(string flag, string tokenField)
        {
            if (OptionalBool(c, flag, configSource, flag) != true) return [];
            string content = TokenContent(c, tokenField, configSource) ?? throw Fail(configSource, $"{flag} is true but {tokenField} is not set");
            return [resolve(content, configSource + ": " + tokenField)];
        }
        return (Optional("add_bos_token", "bos_token"), Optional("add_eos_token", "eos_token"));
    }

    /// <summary>A tokenizer_config.json token field: a string, or an AddedToken object with "content".</summary>
    private static string? TokenContent(JsonElement config, string field, string source)
    {
        if (config.ValueKind != JsonValueKind.Object || !config.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind == JsonValueKind.String) return v.GetString();
        if (v.ValueKind == JsonValueKind.Object && v.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String)
            return content.GetString();
        throw Fail(source, $"{field} must be a string or an object with \"content\"");
    }
}

/// <summary>
/// Hashes a (left id, right id) pair key with a multiplicative mix: long's own hash is the XOR of its
/// halves, and XOR of two ids below 2^18 puts a few hundred thousand merges into far fewer buckets.
/// </summary>
internal sealed class PairKeyComparer : IEqualityComparer<long>
{
    public static readonly PairKeyComparer Instance = new();
    public bool Equals(long x, long y) => x == y;
    public int GetHashCode(long key) => (int)((ulong)key * 0x9E3779B97F4A7C15UL >> 32);
}

/// <summary>One pre-tokenizer step: turns the pieces so far into finer pieces.</summary>
internal abstract class PreTokenizerStep
{
    public abstract List<string> Apply(List<string> pieces);

    /// <summary>HF's Isolated split: every match is a piece, and so is each stretch between matches.</summary>
    protected static void SplitIsolated(string piece, CodePointRegex regex, List<string> output)
    {
        int pos = 0;
        foreach (var (start, length) in regex.Matches(piece))
        {
            if (start > pos) output.Add(piece[pos..start]);
            output.Add(piece.Substring(start, length));
            pos = start + length;
        }
        if (pos < piece.Length) output.Add(piece[pos..]);
    }
}

internal sealed class IsolatedSplitStep(CodePointRegex regex) : PreTokenizerStep
{
    public override List<string> Apply(List<string> pieces)
    {
        var output = new List<string>(pieces.Count * 4);
        foreach (var p in pieces) SplitIsolated(p, regex, output);
        return output;
    }
}

/// <summary>ByteLevel as a pre-tokenizer: the optional prefix space (per piece, as the Rust library adds it)
/// and GPT-2's split when use_regex; the byte mapping itself is done by the encoder afterwards.</summary>
internal sealed class ByteLevelStep(bool addPrefixSpace, bool useRegex) : PreTokenizerStep
{
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    private static readonly CodePointRegex s_gpt2 = new(Gpt2Pattern);

    public override List<string> Apply(List<string> pieces)
    {
        if (!addPrefixSpace && !useRegex) return pieces;
        var output = new List<string>(pieces.Count * 4);
        foreach (var p in pieces)
        {
            string piece = addPrefixSpace && !p.StartsWith(' ') ? " " + p : p;
            if (useRegex) SplitIsolated(piece, s_gpt2, output);
            else output.Add(piece);
        }
        return output;
    }
}

/// <summary>Finds added tokens in text: leftmost match first, the longest among those starting there
/// (the Rust library's leftmost-longest Aho-Corasick), with lstrip/rstrip whitespace taken along.</summary>
internal sealed class AddedTokenMatcher
{
    private readonly Dictionary<char, AddedTokenEntry[]> _byFirstChar;
    private readonly SearchValues<char> _firstChars;

    public AddedTokenMatcher(IEnumerable<AddedTokenEntry> tokens)
    {
        _byFirstChar = tokens.GroupBy(t => t.Content[0])
            .ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());
        _firstChars = SearchValues.Create(_byFirstChar.Keys.ToArray());
    }

    public List<(int Start, int End, int Id)> Find(string text)
    {
        var found = new List<(int, int, int)>();
        int pos = 0, previousEnd = 0;
        while (pos < text.Length)
        {
            int at = text.AsSpan(pos).IndexOfAny(_firstChars);
            if (at < 0) break;
            at += pos;
            AddedTokenEntry? match = null;
            foreach (var t in _byFirstChar[text[at]])
            {
                if (text.AsSpan(at).StartsWith(t.Content, StringComparison.Ordinal))
                {
                    match = t;
                    break;
                }
            }
            if (match is null) { pos = at + 1; continue; }
            int start = at, end = at + match.Content.Length;
            if (match.LeftStrip) while (start > previousEnd && char.IsWhiteSpace(text[start - 1])) start--;
            if (match.RightStrip) while (end < text.Length && char.IsWhiteSpace(text[end])) end++;
            found.Add((start, end, match.Id));
            pos = previousEnd = end;
        }
        return found;
    }
}
