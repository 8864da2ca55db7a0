using System.Globalization;
using System.Text;

namespace GpuIntLab.Core.Tokenization;

/// <summary>Options of <see cref="SentencePieceBpeTrainer"/>; defaults follow SentencePiece / Llama 2.</summary>
public sealed class SentencePieceTrainerOptions
{
    /// <summary>Share of the corpus' characters (by frequency) that get a piece; the rarest rest go to byte fallback.</summary>
    public double CharacterCoverage { get; init; } = 0.9995;
    /// <summary>Longest piece, in Unicode characters (SentencePiece's max_sentencepiece_length).</summary>
    public int MaxPieceLength { get; init; } = 16;
    /// <summary>Digits never merge with anything (Llama 2's split_digits).</summary>
    public bool SplitDigits { get; init; } = true;
}

/// <summary>
/// A byte-fallback SentencePiece BPE trainer writing a <c>tokenizer.model</c> (ModelProto) that
/// <see cref="LlamaTokenizer"/> and Microsoft.ML.Tokenizers' <c>LlamaTokenizer.Create</c> both load.
/// <para>
/// Lines are normalized as the encoder does (dummy prefix, ' ' to U+2581) and split into words that start
/// at each U+2581. BPE then repeatedly merges the most frequent adjacent pair inside words (ties: the
/// ordinally smallest merged string, then the smaller symbol ids), under SentencePiece-like piece rules:
/// U+2581 only at the start of a piece, no piece mixing letters, digits and other characters, digits
/// alone when <see cref="SentencePieceTrainerOptions.SplitDigits"/>, at most MaxPieceLength characters.
/// </para>
/// <para>
/// Pieces: &lt;unk&gt; (0, UNKNOWN), &lt;s&gt; (1, CONTROL), &lt;/s&gt; (2, CONTROL), &lt;0x00&gt;..&lt;0xFF&gt; (BYTE), then
/// the merged pieces in merge order with score -rank, then the corpus characters by descending frequency,
/// their scores continuing the sequence (as SentencePiece lays out Llama 2's model).
/// </para>
/// </summary>
public static class SentencePieceBpeTrainer
{
    private const char SpaceSymbol = '\u2581';
    private const int ReservedPieces = 3 + 256;

    private enum CharClass : byte { Space, Digit, Letter, Other }

    private sealed class Symbols
    {
        public readonly List<string> Text = [];
        public readonly List<CharClass> Class = [];   // class of the non-space part (Space when only "▁")
        public readonly List<bool> StartsWithSpace = [];
        public readonly List<int> RuneLength = [];
        public readonly Dictionary<string, int> ByText = new(StringComparer.Ordinal);

        public int Add(string text, CharClass cls, bool startsWithSpace, int runeLength)
        {
            int id = Text.Count;
            Text.Add(text); Class.Add(cls); StartsWithSpace.Add(startsWithSpace); RuneLength.Add(runeLength);
            ByText.Add(text, id);
            return id;
        }
    }

    public static byte[] Train(IEnumerable<string> corpusLines, int vocabSize, SentencePieceTrainerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(corpusLines);
        options ??= new SentencePieceTrainerOptions();
        if (vocabSize <= ReservedPieces)
            throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, $"vocabSize must exceed the {ReservedPieces} reserved pieces (<unk>, <s>, </s>, 256 bytes)");
        if (options.CharacterCoverage is <= 0 or > 1)
            throw new ArgumentOutOfRangeException(nameof(options), options.CharacterCoverage, "CharacterCoverage must be in (0, 1]");
        if (options.MaxPieceLength < 2)
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxPieceLength, "MaxPieceLength must be at least 2");

        // 1. Word frequencies.
        var wordCounts = CountWords(corpusLines);
        if (wordCounts.Count == 0) throw new ArgumentException("the corpus holds no text", nameof(corpusLines));

        // 2. Characters: by frequency, covered up to CharacterCoverage and within the vocabulary budget.
        var charCounts = new Dictionary<string, long>(StringComparer.Ordinal);
        long totalChars = 0;
        foreach (var (word, count) in wordCounts)
            foreach (Rune r in word.EnumerateRunes())
            {
                string c = r.ToString();
                charCounts[c] = charCounts.GetValueOrDefault(c) + count;
                totalChars += count;
            }
        var chars = charCounts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        int slots = vocabSize - ReservedPieces;
        int keep = 0;
        long covered = 0;
        while (keep < chars.Count && keep < slots && (keep == 0 || covered < options.CharacterCoverage * totalChars))
            covered += chars[keep++].Value;
        var symbols = new Symbols();
        var keptChars = new List<(string Char, long Count)>(keep);
        for (int i = 0; i < keep; i++)
        {
            string c = chars[i].Key;
            symbols.Add(c, Classify(c), c[0] == SpaceSymbol, 1);
            keptChars.Add((c, chars[i].Value));
        }
        int mergesWanted = slots - keep;

        // 3. Words as symbol sequences; uncovered characters split a word (they are byte-fallback only).
        var words = new List<int[]>();
        var freqs = new List<long>();
        {
            var segments = new Dictionary<string, long>(StringComparer.Ordinal);
            var sb = new StringBuilder();
            foreach (var (word, count) in wordCounts)
            {
                sb.Clear();
                foreach (Rune r in word.EnumerateRunes())
                {
                    string c = r.ToString();
                    if (symbols.ByText.ContainsKey(c)) { sb.Append(c); continue; }
                    if (sb.Length > 0) { string s = sb.ToString(); segments[s] = segments.GetValueOrDefault(s) + count; sb.Clear(); }
                }
                if (sb.Length > 0) { string s = sb.ToString(); segments[s] = segments.GetValueOrDefault(s) + count; }
            }
            foreach (var (seg, count) in segments.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                var seq = new List<int>(seg.Length);
                foreach (Rune r in seg.EnumerateRunes()) seq.Add(symbols.ByText[r.ToString()]);
                if (seq.Count < 2) continue; // a single symbol never takes part in a merge
                words.Add(seq.ToArray());
                freqs.Add(count);
            }
        }

        // 4. BPE merges with incremental pair counts.
        var pairCount = new Dictionary<(int A, int B), long>();
        var pairWords = new Dictionary<(int A, int B), List<int>>();
        for (int w = 0; w < words.Count; w++)
        {
            var seq = words[w];
            for (int i = 0; i + 1 < seq.Length; i++)
            {
                var p = (seq[i], seq[i + 1]);
                if (!CanMerge(symbols, p.Item1, p.Item2, options)) continue;
                pairCount[p] = pairCount.GetValueOrDefault(p) + freqs[w];
                if (!pairWords.TryGetValue(p, out var list)) pairWords[p] = list = [];
                if (list.Count == 0 || list[^1] != w) list.Add(w);
            }
        }

        var merged = new List<int>(mergesWanted);
        var stamp = new int[words.Count];
        int round = 0;
        while (merged.Count < mergesWanted)
        {
            (int A, int B) best = (-1, -1);
            long bestCount = 0;
            foreach (var (p, count) in pairCount)
            {
                if (count <= 0) continue;
                if (count > bestCount || (count == bestCount && PairBefore(symbols, p, best)))
                {
                    best = p;
                    bestCount = count;
                }
            }
            if (bestCount == 0)
                throw new InvalidOperationException(
                    $"the corpus is too small for vocabSize {vocabSize}: no pair is left to merge after {merged.Count} of {mergesWanted} merges " +
                    $"({ReservedPieces} reserved + {keep} characters + {merged.Count} merged pieces)");

            string text = symbols.Text[best.A] + symbols.Text[best.B];
            if (!symbols.ByText.TryGetValue(text, out int id))
            {
                var cls = symbols.Class[best.A] == CharClass.Space ? symbols.Class[best.B] : symbols.Class[best.A];
                id = symbols.Add(text, cls, symbols.StartsWithSpace[best.A], symbols.RuneLength[best.A] + symbols.RuneLength[best.B]);
                merged.Add(id);
            }

            round++;
            var affected = pairWords[best];
            pairWords.Remove(best);
            foreach (int w in affected)
            {
                if (stamp[w] == round) continue;
                stamp[w] = round;
                var seq = words[w];
                if (!Contains(seq, best)) continue;
                long f = freqs[w];
                for (int i = 0; i + 1 < seq.Length; i++)
                {
                    var p = (seq[i], seq[i + 1]);
                    if (pairCount.TryGetValue(p, out long c))
                    {
                        if (c - f <= 0) pairCount.Remove(p); else pairCount[p] = c - f;
                    }
                }
                var next = new List<int>(seq.Length);
                for (int i = 0; i < seq.Length; i++)
                {
                    if (i + 1 < seq.Length && seq[i] == best.A && seq[i + 1] == best.B) { next.Add(id); i++; }
                    else next.Add(seq[i]);
                }
                var ns = next.ToArray();
                words[w] = ns;
                for (int i = 0; i + 1 < ns.Length; i++)
                {
                    var p = (ns[i], ns[i + 1]);
                    if (!CanMerge(symbols, p.Item1, p.Item2, options)) continue;
                    pairCount[p] = pairCount.GetValueOrDefault(p) + f;
                    if (ns[i] == id || ns[i + 1] == id)
                    {
                        if (!pairWords.TryGetValue(p, out var list)) pairWords[p] = list = [];
                        if (list.Count == 0 || list[^1] != w) list.Add(w);
                    }
                }
            }
            pairCount.Remove(best);
        }

        // 5. The ModelProto.
        var pieces = new List<SentencePieceEntry>(vocabSize)
        {
            new("<unk>", 0, SentencePieceType.Unknown),
            new("<s>", 0, SentencePieceType.Control),
            new("</s>", 0, SentencePieceType.Control),
        };
        for (int b = 0; b < 256; b++) pieces.Add(new($"<0x{b:X2}>", 0, SentencePieceType.Byte));
        int rank = 0;
        foreach (int id in merged) pieces.Add(new(symbols.Text[id], -rank++, SentencePieceType.Normal));
        foreach (var (c, _) in keptChars) pieces.Add(new(c, -rank++, SentencePieceType.Normal));
        if (pieces.Count != vocabSize) throw new InvalidOperationException($"internal error: {pieces.Count} pieces for vocabSize {vocabSize}");

        var model = new SentencePieceModel
        {
            Pieces = pieces,
            ModelType = SentencePieceModel.ModelTypeBpe,
            TrainerVocabSize = vocabSize,
            CharacterCoverage = (float)options.CharacterCoverage,
            MaxPieceLength = options.MaxPieceLength,
            SplitByWhitespace = true,
            TreatWhitespaceAsSuffix = false,
            SplitDigits = options.SplitDigits,
            ByteFallback = true,
            UnkId = 0, BosId = 1, EosId = 2, PadId = -1,
            NormalizerName = "identity",
            PrecompiledCharsmap = [],
            AddDummyPrefix = true,
            RemoveExtraWhitespaces = false,
            EscapeWhitespaces = true,
        };
        return model.ToBytes();
    }

    private static Dictionary<string, long> CountWords(IEnumerable<string> lines)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        var lookup = counts.GetAlternateLookup<ReadOnlySpan<char>>();
        var buffer = new StringBuilder();
        foreach (string? line in lines)
        {
            if (string.IsNullOrEmpty(line)) continue;
            string normalized = Normalize(line, buffer);
            int start = 0;
            for (int i = 1; i <= normalized.Length; i++)
            {
                if (i < normalized.Length && normalized[i] != SpaceSymbol) continue;
                var word = normalized.AsSpan(start, i - start);
                if (lookup.TryGetValue(word, out long c)) lookup[word] = c + 1;
                else lookup[word] = 1;
                start = i;
            }
        }
        return counts;
    }

    /// <summary>The encoder's normalization for Llama's spec: dummy prefix, ' ' to U+2581, lone surrogates to U+FFFD.</summary>
    private static string Normalize(string line, StringBuilder sb)
    {
        sb.Clear();
        sb.Append(SpaceSymbol);
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (c == ' ') sb.Append(SpaceSymbol);
            else if (char.IsHighSurrogate(c) && i + 1 < line.Length && char.IsLowSurrogate(line[i + 1])) { sb.Append(c).Append(line[++i]); }
            else if (char.IsSurrogate(c)) sb.Append('\uFFFD');
            else sb.Append(c);
        }
        return sb.ToString();
    }

    private static CharClass Classify(string c)
    {
        if (c[0] == SpaceSymbol) return CharClass.Space;
        Rune r = Rune.GetRuneAt(c, 0);
        if (Rune.IsDigit(r)) return CharClass.Digit;
        if (Rune.IsLetter(r)) return CharClass.Letter;
        return Rune.GetUnicodeCategory(r) switch
        {
            UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark => CharClass.Letter,
            _ => CharClass.Other,
        };
    }

    private static bool CanMerge(Symbols s, int a, int b, SentencePieceTrainerOptions o)
    {
        if (s.StartsWithSpace[b]) return false;                         // U+2581 only at the start of a piece
        if (s.RuneLength[a] + s.RuneLength[b] > o.MaxPieceLength) return false;
        CharClass ca = s.Class[a], cb = s.Class[b];
        if (o.SplitDigits && (ca == CharClass.Digit || cb == CharClass.Digit)) return false;
        return ca == CharClass.Space || ca == cb;
    }

    /// <summary>Tie-break between equally frequent pairs: smaller merged string (ordinal), then smaller ids.</summary>
    private static bool PairBefore(Symbols s, (int A, int B) p, (int A, int B) q)
    {
        if (q.A < 0) return true;
        string pa = s.Text[p.A], pb = s.Text[p.B], qa = s.Text[q.A], qb = s.Text[q.B];
        int c = CompareConcat(pa, pb, qa, qb);
        if (c != 0) return c < 0;
        return p.A != q.A ? p.A < q.A : p.B < q.B;
    }

    private static int CompareConcat(string a1, string b1, string a2, string b2)
    {
        int n1 = a1.Length + b1.Length, n2 = a2.Length + b2.Length;
        for (int i = 0; i < Math.Min(n1, n2); i++)
        {
            char x = i < a1.Length ? a1[i] : b1[i - a1.Length];
            char y = i < a2.Length ? a2[i] : b2[i - a2.Length];
            if (x != y) return x.CompareTo(y);
        }
        return n1.CompareTo(n2);
    }

    private static bool Contains(int[] seq, (int A, int B) p)
    {
        for (int i = 0; i + 1 < seq.Length; i++)
            if (seq[i] == p.A && seq[i + 1] == p.B) return true;
        return false;
    }
}
