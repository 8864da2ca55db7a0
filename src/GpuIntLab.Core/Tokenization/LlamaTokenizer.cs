using System.Text;
using MlLlamaTokenizer = Microsoft.ML.Tokenizers.LlamaTokenizer;

namespace GpuIntLab.Core.Tokenization;

/// <summary>
/// Exact SentencePiece BPE tokenizer for Llama-family <c>tokenizer.model</c> files.
/// <para>
/// Encode follows sentencepiece's normalizer.cc + bpe_model.cc + sentencepiece_processor.cc: identity
/// normalization, dummy prefix, ' ' escaped to U+2581; the text is split into characters
/// (user-defined pieces first, frozen), then the adjacent pair whose concatenation is a vocabulary piece
/// with the highest score is merged repeatedly, equal scores leftmost first (a priority queue over
/// linked symbols, O(n log n)); pieces still unknown become &lt;0xNN&gt; byte pieces of their UTF-8 when
/// byte_fallback is set, else one &lt;unk&gt; per run.
/// </para>
/// <para>
/// Microsoft.ML.Tokenizers' own <c>LlamaTokenizer</c> is not used on the encode path: version 2.0.1 merges
/// equal-score pairs rightmost first and returns no BOS for empty text. It stays in the picture as the
/// independent cross-check (<see cref="CreateLibraryTokenizer"/>; the tests compare encode and decode
/// against it) and as the loader the project's trained models must also satisfy.
/// </para>
/// </summary>
public sealed class LlamaTokenizer : ITokenizer
{
    private const char SpaceSymbol = '\u2581';

    private readonly SentencePieceModel _model;
    private readonly byte[] _modelBytes;
    private readonly string[] _pieces;
    private readonly float[] _scores;
    private readonly SentencePieceType[] _types;
    private readonly string[] _surfaces;     // piece with U+2581 -> ' ' (normal / user-defined / unused pieces)
    private readonly short[] _byteValue;     // 0..255 for BYTE pieces, -1 otherwise
    private readonly int[] _byteIds = new int[256];
    // pieces_ in sentencepiece: NORMAL, USER_DEFINED, UNUSED (mergeable); reserved: CONTROL, UNKNOWN, BYTE.
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _normal;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _reserved;
    private readonly Dictionary<char, List<string>>? _userDefinedByFirstChar; // longest first
    private readonly bool _hasUnused;

    private LlamaTokenizer(SentencePieceModel model, byte[] modelBytes, bool addBos, string source)
    {
        _model = model;
        _modelBytes = modelBytes;
        AddBos = addBos;
        int n = model.Pieces.Count;
        if (n == 0) throw new TokenizerLoadException($"'{source}' holds no sentence pieces: not a SentencePiece model");
        if (model.ModelType != SentencePieceModel.ModelTypeBpe)
            throw new TokenizerLoadException($"'{source}' is not a BPE model (TrainerSpec.model_type = {model.ModelType}; BPE is 2)");
        if (model.TreatWhitespaceAsSuffix)
            throw new TokenizerLoadException($"'{source}': treat_whitespace_as_suffix is not supported");
        if (model.PrecompiledCharsmap.Length != 0)
            throw new TokenizerLoadException($"'{source}': normalizer '{model.NormalizerName}' has a precompiled charsmap; only identity normalization is supported");

        _pieces = new string[n];
        _scores = new float[n];
        _types = new SentencePieceType[n];
        _surfaces = new string[n];
        _byteValue = new short[n];
        Array.Fill(_byteIds, -1);
        var normal = new Dictionary<string, int>(n, StringComparer.Ordinal);
        var reserved = new Dictionary<string, int>(StringComparer.Ordinal);
        int unk = -1;
        for (int i = 0; i < n; i++)
        {
            var p = model.Pieces[i];
            if (string.IsNullOrEmpty(p.Piece)) throw new TokenizerLoadException($"'{source}': piece {i} is empty");
            if (!Enum.IsDefined(p.Type)) throw new TokenizerLoadException($"'{source}': piece {i} has unknown type {(int)p.Type}");
            _pieces[i] = p.Piece;
            _scores[i] = p.Score;
            _types[i] = p.Type;
            _surfaces[i] = p.Piece.Replace(SpaceSymbol, ' ');
            _byteValue[i] = -1;
            bool isNormal = p.Type is SentencePieceType.Normal or SentencePieceType.UserDefined or SentencePieceType.Unused;
            if (!(isNormal ? normal : reserved).TryAdd(p.Piece, i))
                throw new TokenizerLoadException($"'{source}': piece '{p.Piece}' (id {i}) is defined twice");
            if (p.Type == SentencePieceType.Unknown)
            {
                if (unk >= 0) throw new TokenizerLoadException($"'{source}': more than one UNKNOWN piece");
                unk = i;
            }
            if (p.Type == SentencePieceType.Byte)
            {
                int b = ParseBytePiece(p.Piece);
                if (b < 0) throw new TokenizerLoadException($"'{source}': BYTE piece {i} '{p.Piece}' is not of the form <0xNN>");
                _byteValue[i] = (short)b;
                _byteIds[b] = i;
            }
            if (p.Type == SentencePieceType.UserDefined)
            {
                _userDefinedByFirstChar ??= [];
                if (!_userDefinedByFirstChar.TryGetValue(p.Piece[0], out var list)) _userDefinedByFirstChar[p.Piece[0]] = list = [];
                list.Add(p.Piece);
            }
            if (p.Type == SentencePieceType.Unused) _hasUnused = true;
        }
        if (_userDefinedByFirstChar is not null)
            foreach (var list in _userDefinedByFirstChar.Values) list.Sort((a, b) => b.Length.CompareTo(a.Length));
        if (unk < 0) throw new TokenizerLoadException($"'{source}': no UNKNOWN (<unk>) piece");
        if (model.UnkId != unk) throw new TokenizerLoadException($"'{source}': TrainerSpec.unk_id = {model.UnkId} but the UNKNOWN piece is id {unk}");
        if (model.ByteFallback && Array.IndexOf(_byteIds, -1) >= 0)
            throw new TokenizerLoadException($"'{source}': byte_fallback is set but some of the 256 <0xNN> pieces are missing");
        CheckSpecialId(model.BosId, "bos_id", n, source);
        CheckSpecialId(model.EosId, "eos_id", n, source);
        _normal = normal.GetAlternateLookup<ReadOnlySpan<char>>();
        _reserved = reserved.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    private static void CheckSpecialId(int id, string name, int n, string source)
    {
        if (id < -1 || id >= n) throw new TokenizerLoadException($"'{source}': TrainerSpec.{name} = {id} is outside the vocabulary of {n}");
    }

    private static int ParseBytePiece(string piece)
    {
        if (piece.Length != 6 || !piece.StartsWith("<0x", StringComparison.Ordinal) || piece[5] != '>') return -1;
        return int.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out int b) ? b : -1;
    }

    /// <summary>Loads a SentencePiece <c>tokenizer.model</c> (BPE, identity normalization).</summary>
    public static LlamaTokenizer Load(string tokenizerModelPath, bool addBos = true)
    {
        ArgumentNullException.ThrowIfNull(tokenizerModelPath);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(tokenizerModelPath);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new TokenizerLoadException($"tokenizer model not found: '{Path.GetFullPath(tokenizerModelPath)}'", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TokenizerLoadException($"cannot read tokenizer model '{Path.GetFullPath(tokenizerModelPath)}': {e.Message}", e);
        }
        return FromBytes(bytes, addBos, tokenizerModelPath);
    }

    /// <summary>Builds the tokenizer from a serialized ModelProto (e.g. <see cref="SentencePieceBpeTrainer.Train"/>'s output).</summary>
    public static LlamaTokenizer FromBytes(byte[] modelProto, bool addBos = true, string sourceName = "<bytes>")
    {
        ArgumentNullException.ThrowIfNull(modelProto);
        var model = SentencePieceModel.Parse(modelProto, sourceName);
        return new LlamaTokenizer(model, modelProto, addBos, sourceName);
    }

    public SentencePieceModel Model => _model;
    public int VocabSize => _pieces.Length;
    public int BosId => _model.BosId;
    public int EosId => _model.EosId;
    public int UnkId => _model.UnkId;
    public bool AddBos { get; }
    int? ITokenizer.BosTokenId => BosId >= 0 ? BosId : null;
    IReadOnlyList<int> ITokenizer.EosTokenIds => EosId >= 0 ? [EosId] : [];
    ITokenStreamDecoder ITokenizer.CreateStreamingDecoder() => CreateStreamingDecoder();

    /// <summary>Microsoft.ML.Tokenizers' LlamaTokenizer over the same model bytes (for cross-checks; see class remarks).</summary>
    public MlLlamaTokenizer CreateLibraryTokenizer(bool addBos = true)
    {
        using var ms = new MemoryStream(_modelBytes, writable: false);
        return MlLlamaTokenizer.Create(ms, addBos, addEndOfSentence: false);
    }

    public SentencePieceType PieceType(int id) { ValidateId(id); return _types[id]; }
    public float Score(int id) { ValidateId(id); return _scores[id]; }

    public string IdToPiece(int id)
    {
        ValidateId(id);
        return _pieces[id];
    }

    /// <summary>SentencePiece's PieceToId: reserved pieces first, then normal ones, else unk.</summary>
    public int PieceToId(ReadOnlySpan<char> piece)
    {
        if (_reserved.TryGetValue(piece, out int id)) return id;
        if (_normal.TryGetValue(piece, out id)) return id;
        return UnkId;
    }

    public void ValidateIds(ReadOnlySpan<int> ids)
    {
        foreach (int id in ids) ValidateId(id);
    }

    private void ValidateId(int id)
    {
        if ((uint)id >= (uint)_pieces.Length)
            throw new ArgumentOutOfRangeException(nameof(id), id, $"token id {id} is outside the vocabulary (size {_pieces.Length}, valid ids 0..{_pieces.Length - 1})");
    }

    // ---------------------------------------------------------------- encode

    public int[] Encode(string text) => Encode(text, AddBos);

    public int[] Encode(string text, bool addBos)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos && BosId >= 0) ids.Add(BosId);
        string normalized = Normalize(text);
        if (normalized.Length != 0) EncodeNormalized(normalized, ids);
        return ids.ToArray();
    }

    /// <summary>sentencepiece's Normalizer::Normalize for an empty precompiled charsmap (identity).</summary>
    internal string Normalize(string text)
    {
        if (text.Length == 0) return "";
        bool removeExtra = _model.RemoveExtraWhitespaces, escape = _model.EscapeWhitespaces;
        char space = escape ? SpaceSymbol : ' ';
        int i = 0;
        if (removeExtra) while (i < text.Length && text[i] == ' ') i++;
        if (i == text.Length) return "";
        var sb = new StringBuilder(text.Length + 1);
        if (_model.AddDummyPrefix) sb.Append(space);
        bool prevSpace = removeExtra;
        for (; i < text.Length; i++)
        {
            char c = text[i];
            if (c == ' ')
            {
                if (prevSpace) continue;
                sb.Append(space);
                prevSpace = removeExtra;
                continue;
            }
            prevSpace = false;
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                sb.Append(c).Append(text[i + 1]);
                i++;
            }
            else if (char.IsSurrogate(c))
            {
                sb.Append('\uFFFD'); // a lone surrogate has no UTF-8 form; sentencepiece maps malformed input to U+FFFD
            }
            else
            {
                sb.Append(c);
            }
        }
        if (removeExtra)
            while (sb.Length > 0 && sb[^1] == space) sb.Length--;
        return sb.ToString();
    }

    private readonly struct Candidate(int left, int right, int size)
    {
        public readonly int Left = left, Right = right, Size = size;
    }

    /// <summary>Highest score first; equal scores: leftmost first (sentencepiece's SymbolPairComparator).</summary>
    private sealed class AgendaOrder(bool rightmostTies) : IComparer<(float Score, int Left)>
    {
        public static readonly AgendaOrder Leftmost = new(false);
        public static readonly AgendaOrder Rightmost = new(true);
        public int Compare((float Score, int Left) a, (float Score, int Left) b)
        {
            int c = b.Score.CompareTo(a.Score);
            if (c != 0) return c;
            return rightmostTies ? b.Left.CompareTo(a.Left) : a.Left.CompareTo(b.Left);
        }
    }

    /// <summary>
    /// Test hook: the same encode with equal-score merges taken rightmost first (Microsoft.ML.Tokenizers
    /// 2.0.1's order), to show that the tie rule is the only difference from the library.
    /// </summary>
    internal int[] EncodeWithRightmostTies(string text, bool addBos)
    {
        var ids = new List<int>();
        if (addBos && BosId >= 0) ids.Add(BosId);
        string normalized = Normalize(text);
        if (normalized.Length != 0) EncodeNormalized(normalized, ids, AgendaOrder.Rightmost);
        return ids.ToArray();
    }

    private void EncodeNormalized(string s, List<int> output) => EncodeNormalized(s, output, AgendaOrder.Leftmost);

    private void EncodeNormalized(string s, List<int> output, AgendaOrder order)
    {
        // Symbols: [start, start + len) of s; linked list via prev/next; merged-away symbols get len 0.
        int cap = s.Length;
        var start = new int[cap];
        var len = new int[cap];
        var prev = new int[cap];
        var next = new int[cap];
        bool[]? freeze = _userDefinedByFirstChar is null ? null : new bool[cap];
        int count = 0;
        for (int pos = 0; pos < s.Length;)
        {
            int l = char.IsHighSurrogate(s[pos]) && pos + 1 < s.Length && char.IsLowSurrogate(s[pos + 1]) ? 2 : 1;
            if (_userDefinedByFirstChar is not null && _userDefinedByFirstChar.TryGetValue(s[pos], out var candidates))
            {
                foreach (var u in candidates)
                {
                    if (string.CompareOrdinal(s, pos, u, 0, u.Length) == 0 && pos + u.Length <= s.Length)
                    {
                        l = u.Length;
                        freeze![count] = true;
                        break;
                    }
                }
            }
            start[count] = pos;
            len[count] = l;
            prev[count] = count - 1;
            pos += l;
            next[count] = pos < s.Length ? count + 1 : -1;
            count++;
        }

        Dictionary<string, (string Left, string Right)>? revMerge = null;
        var agenda = new PriorityQueue<Candidate, (float, int)>(order);

        void MaybeAdd(int left, int right)
        {
            if (left < 0 || right < 0) return;
            if (freeze is not null && (freeze[left] || freeze[right])) return;
            var piece = s.AsSpan(start[left], len[left] + len[right]);
            if (!_normal.TryGetValue(piece, out int id)) return;
            agenda.Enqueue(new Candidate(left, right, piece.Length), (_scores[id], left));
            if (_types[id] == SentencePieceType.Unused)
            {
                revMerge ??= new Dictionary<string, (string, string)>(StringComparer.Ordinal);
                revMerge[piece.ToString()] = (s.Substring(start[left], len[left]), s.Substring(start[right], len[right]));
            }
        }

        for (int i = 1; i < count; i++) MaybeAdd(i - 1, i);

        while (agenda.TryDequeue(out var top, out _))
        {
            int l = top.Left, r = top.Right;
            if (len[l] == 0 || len[r] == 0 || len[l] + len[r] != top.Size) continue; // stale entry
            len[l] += len[r];
            next[l] = next[r];
            if (next[r] >= 0) prev[next[r]] = l;
            len[r] = 0;
            MaybeAdd(prev[l], l);
            MaybeAdd(l, next[l]);
        }

        bool prevUnk = false;
        for (int i = 0; i != -1; i = next[i])
        {
            var piece = s.AsSpan(start[i], len[i]);
            if (_hasUnused && revMerge is not null) Resegment(piece.ToString(), revMerge, output, ref prevUnk);
            else Emit(piece, output, ref prevUnk);
        }
    }

    private void Resegment(string piece, Dictionary<string, (string Left, string Right)> revMerge, List<int> output, ref bool prevUnk)
    {
        int id = PieceToId(piece);
        if (_types[id] == SentencePieceType.Unused && revMerge.TryGetValue(piece, out var parts))
        {
            Resegment(parts.Left, revMerge, output, ref prevUnk);
            Resegment(parts.Right, revMerge, output, ref prevUnk);
            return;
        }
        Emit(piece, output, ref prevUnk);
    }

    /// <summary>sentencepiece_processor.cc PopulateSentencePieceText: byte fallback, or one unk per run of unknowns.</summary>
    private void Emit(ReadOnlySpan<char> piece, List<int> output, ref bool prevUnk)
    {
        int id = PieceToId(piece);
        bool isUnk = _types[id] == SentencePieceType.Unknown;
        if (isUnk && _model.ByteFallback)
        {
            Span<byte> buf = stackalloc byte[piece.Length * 3];
            int nb = Encoding.UTF8.GetBytes(piece, buf);
            for (int k = 0; k < nb; k++) output.Add(_byteIds[buf[k]]);
        }
        else if (!(isUnk && prevUnk))
        {
            output.Add(id);
        }
        prevUnk = isUnk;
    }

    // ---------------------------------------------------------------- decode

    /// <summary>
    /// SentencePiece's DecodeIds: control pieces are invisible, runs of byte pieces are assembled as UTF-8
    /// (each invalid byte becomes U+FFFD), U+2581 becomes ' ', and the leading space of the first piece is
    /// dropped (the dummy prefix).
    /// </summary>
    public string Decode(ReadOnlySpan<int> ids)
    {
        ValidateIds(ids);
        var d = new StreamingDecoder(this);
        var sb = new StringBuilder(ids.Length * 4);
        foreach (int id in ids) sb.Append(d.Push(id));
        sb.Append(d.Flush());
        return sb.ToString();
    }

    /// <summary>
    /// Text of <paramref name="id"/> when it follows <paramref name="previousId"/> (llama2.c-style streaming):
    /// control pieces give "", the leading space of a piece right after BOS (or any control piece, or at the
    /// start: previousId &lt; 0) is dropped like SentencePiece's dummy prefix. A byte piece gives its character
    /// when it is a whole UTF-8 character (ASCII); a byte that is part of a multi-byte character cannot be
    /// decoded without the bytes around it and gives "" (use <see cref="CreateStreamingDecoder"/> for exact
    /// streaming of byte-fallback output).
    /// </summary>
    public string DecodeNext(int previousId, int id)
    {
        ValidateId(id);
        if (previousId >= 0) ValidateId(previousId);
        switch (_types[id])
        {
            case SentencePieceType.Control: return "";
            case SentencePieceType.Unknown: return _model.UnkSurface;
            case SentencePieceType.Byte:
                int b = _byteValue[id];
                return b < 0x80 ? ((char)b).ToString() : "";
        }
        string surface = _surfaces[id];
        bool atStart = previousId < 0 || _types[previousId] == SentencePieceType.Control;
        if (atStart && (_model.AddDummyPrefix || _model.RemoveExtraWhitespaces) && _pieces[id][0] == SpaceSymbol)
            return surface[1..];
        return surface;
    }

    /// <summary>A stateful decoder whose concatenated outputs equal <see cref="Decode"/> of the whole sequence.</summary>
    public StreamingDecoder CreateStreamingDecoder() => new(this);

    /// <summary>Incremental SentencePiece decode: buffers incomplete UTF-8 from byte pieces.</summary>
    public sealed class StreamingDecoder : ITokenStreamDecoder
    {
        private readonly LlamaTokenizer _t;
        private readonly List<byte> _pending = new(4);
        private bool _textEmitted;   // any visible text produced so far
        private bool _bosWsSeen;     // the previous non-byte piece consumed the dummy-prefix space
        private bool _isBosWs = true; // still expecting the dummy-prefix space (sentencepiece's is_bos_ws)

        internal StreamingDecoder(LlamaTokenizer tokenizer) => _t = tokenizer;

        /// <summary>Returns the text that <paramref name="id"/> completes (possibly "").</summary>
        public string Push(int id)
        {
            _t.ValidateId(id);
            int b = _t._byteValue[id];
            if (b >= 0)
            {
                _pending.Add((byte)b);
                return DrainBytes(final: false);
            }
            string text = DrainBytes(final: true);
            if (_bosWsSeen || _textEmitted) _isBosWs = false;
            bool isBosWs = _isBosWs;
            string surface;
            _bosWsSeen = false;
            switch (_t._types[id])
            {
                case SentencePieceType.Control: surface = ""; break;
                case SentencePieceType.Unknown: surface = _t._model.UnkSurface; break;
                default:
                    surface = _t._surfaces[id];
                    if (isBosWs && (_t._model.AddDummyPrefix || _t._model.RemoveExtraWhitespaces) && _t._pieces[id][0] == SpaceSymbol)
                    {
                        surface = surface[1..];
                        _bosWsSeen = !_t._model.RemoveExtraWhitespaces;
                    }
                    break;
            }
            if (surface.Length != 0) _textEmitted = true;
            return text.Length == 0 ? surface : text + surface;
        }

        /// <summary>Ends the sequence: any incomplete UTF-8 left over becomes U+FFFD per byte.</summary>
        public string Flush() => DrainBytes(final: true);

        private string DrainBytes(bool final)
        {
            if (_pending.Count == 0) return "";
            var sb = new StringBuilder();
            var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_pending);
            int offset = 0;
            while (offset < span.Length)
            {
                var status = Rune.DecodeFromUtf8(span[offset..], out Rune rune, out int consumed);
                if (status == System.Buffers.OperationStatus.Done)
                {
                    sb.Append(rune.ToString());
                    offset += consumed;
                }
                else if (status == System.Buffers.OperationStatus.NeedMoreData && !final)
                {
                    break; // wait for the rest of this character
                }
                else
                {
                    sb.Append('\uFFFD'); // sentencepiece: one replacement character per invalid byte
                    offset += 1;
                }
            }
            _pending.RemoveRange(0, offset);
            if (sb.Length != 0) _textEmitted = true;
            return sb.ToString();
        }
    }
}
