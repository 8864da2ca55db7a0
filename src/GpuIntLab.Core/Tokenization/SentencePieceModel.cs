using Google.Protobuf;

namespace GpuIntLab.Core.Tokenization;

/// <summary>ModelProto.SentencePiece.Type (sentencepiece_model.proto).</summary>
public enum SentencePieceType
{
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// <summary>Raised when a <c>tokenizer.model</c> cannot be read or is not a model this tokenizer handles.</summary>
public sealed class TokenizerLoadException : Exception
{
    public TokenizerLoadException(string message) : base(message) { }
    public TokenizerLoadException(string message, Exception inner) : base(message, inner) { }
}

/// <summary>One entry of ModelProto.pieces.</summary>
public readonly record struct SentencePieceEntry(string Piece, float Score, SentencePieceType Type);

/// <summary>
/// The parts of SentencePiece's ModelProto that encoding and decoding depend on, read and written
/// with Google.Protobuf's CodedInputStream / CodedOutputStream (no generated code).
/// Field numbers (sentencepiece_model.proto): ModelProto {1 pieces, 2 trainer_spec, 3 normalizer_spec};
/// SentencePiece {1 piece, 2 score, 3 type}; TrainerSpec {3 model_type, 4 vocab_size, 10 character_coverage,
/// 20 max_sentencepiece_length, 22 split_by_whitespace, 24 treat_whitespace_as_suffix, 25 split_digits,
/// 35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id, 44 unk_surface, 45..48 unk/bos/eos/pad piece};
/// NormalizerSpec {1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
/// 5 escape_whitespaces}. Absent fields take the proto2 defaults declared there.
/// </summary>
public sealed class SentencePieceModel
{
    public const int ModelTypeUnigram = 1;
    public const int ModelTypeBpe = 2;

    public required IReadOnlyList<SentencePieceEntry> Pieces { get; init; }

    // TrainerSpec (defaults from sentencepiece_model.proto)
    public int ModelType { get; init; } = ModelTypeUnigram;
    public int TrainerVocabSize { get; init; } = 8000;
    public float CharacterCoverage { get; init; } = 0.9995f;
    public int MaxPieceLength { get; init; } = 16;
    public bool SplitByWhitespace { get; init; } = true;
    public bool TreatWhitespaceAsSuffix { get; init; }
    public bool SplitDigits { get; init; }
    public bool ByteFallback { get; init; }
    public int UnkId { get; init; }
    public int BosId { get; init; } = 1;
    public int EosId { get; init; } = 2;
    public int PadId { get; init; } = -1;
    public string UnkSurface { get; init; } = " \u2047 ";
    public string UnkPiece { get; init; } = "<unk>";
    public string BosPiece { get; init; } = "<s>";
    public string EosPiece { get; init; } = "</s>";
    public string PadPiece { get; init; } = "<pad>";

    // NormalizerSpec
    public string NormalizerName { get; init; } = "";
    public byte[] PrecompiledCharsmap { get; init; } = [];
    public bool AddDummyPrefix { get; init; } = true;
    public bool RemoveExtraWhitespaces { get; init; } = true;
    public bool EscapeWhitespaces { get; init; } = true;

    /// <summary>Parses a serialized ModelProto. Throws <see cref="TokenizerLoadException"/> on malformed input.</summary>
    public static SentencePieceModel Parse(byte[] data, string sourceName = "<bytes>")
    {
        ArgumentNullException.ThrowIfNull(data);
        try
        {
            return ParseCore(data);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new TokenizerLoadException($"'{sourceName}' is not a valid SentencePiece ModelProto (malformed protobuf: {e.Message})", e);
        }
    }

    private static SentencePieceModel ParseCore(byte[] data)
    {
        var pieces = new List<SentencePieceEntry>();
        byte[]? trainer = null, normalizer = null;
        var input = new CodedInputStream(data);
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            int field = WireFormat.GetTagFieldNumber(tag);
            bool delimited = WireFormat.GetTagWireType(tag) == WireFormat.WireType.LengthDelimited;
            if (field == 1 && delimited) pieces.Add(ParsePiece(input.ReadBytes().ToByteArray()));
            else if (field == 2 && delimited) trainer = input.ReadBytes().ToByteArray();
            else if (field == 3 && delimited) normalizer = input.ReadBytes().ToByteArray();
            else input.SkipLastField();
        }

        int modelType = ModelTypeUnigram, trainerVocab = 8000, maxLen = 16, unk = 0, bos = 1, eos = 2, pad = -1;
        float coverage = 0.9995f;
        bool splitWs = true, wsSuffix = false, splitDigits = false, byteFallback = false;
        string unkSurface = " \u2047 ", unkPiece = "<unk>", bosPiece = "<s>", eosPiece = "</s>", padPiece = "<pad>";
        if (trainer is not null)
        {
            var t = new CodedInputStream(trainer);
            while ((tag = t.ReadTag()) != 0)
            {
                var wt = WireFormat.GetTagWireType(tag);
                bool v = wt == WireFormat.WireType.Varint, s = wt == WireFormat.WireType.LengthDelimited, f32 = wt == WireFormat.WireType.Fixed32;
                switch (WireFormat.GetTagFieldNumber(tag))
                {
                    case 3 when v: modelType = t.ReadEnum(); break;
                    case 4 when v: trainerVocab = t.ReadInt32(); break;
                    case 10 when f32: coverage = t.ReadFloat(); break;
                    case 20 when v: maxLen = t.ReadInt32(); break;
                    case 22 when v: splitWs = t.ReadBool(); break;
                    case 24 when v: wsSuffix = t.ReadBool(); break;
                    case 25 when v: splitDigits = t.ReadBool(); break;
                    case 35 when v: byteFallback = t.ReadBool(); break;
                    case 40 when v: unk = t.ReadInt32(); break;
                    case 41 when v: bos = t.ReadInt32(); break;
                    case 42 when v: eos = t.ReadInt32(); break;
                    case 43 when v: pad = t.ReadInt32(); break;
                    case 44 when s: unkSurface = t.ReadString(); break;
                    case 45 when s: unkPiece = t.ReadString(); break;
                    case 46 when s: bosPiece = t.ReadString(); break;
                    case 47 when s: eosPiece = t.ReadString(); break;
                    case 48 when s: padPiece = t.ReadString(); break;
                    default: t.SkipLastField(); break;
                }
            }
        }

        string name = "";
        byte[] charsmap = [];
        bool dummy = true, removeExtra = true, escape = true;
        if (normalizer is not null)
        {
            var n = new CodedInputStream(normalizer);
            while ((tag = n.ReadTag()) != 0)
            {
                var wt = WireFormat.GetTagWireType(tag);
                bool v = wt == WireFormat.WireType.Varint, s = wt == WireFormat.WireType.LengthDelimited;
                switch (WireFormat.GetTagFieldNumber(tag))
                {
                    case 1 when s: name = n.ReadString(); break;
                    case 2 when s: charsmap = n.ReadBytes().ToByteArray(); break;
                    case 3 when v: dummy = n.ReadBool(); break;
                    case 4 when v: removeExtra = n.ReadBool(); break;
                    case 5 when v: escape = n.ReadBool(); break;
                    default: n.SkipLastField(); break;
                }
            }
        }

        return new SentencePieceModel
        {
            Pieces = pieces,
            ModelType = modelType, TrainerVocabSize = trainerVocab, CharacterCoverage = coverage, MaxPieceLength = maxLen,
            SplitByWhitespace = splitWs, TreatWhitespaceAsSuffix = wsSuffix, SplitDigits = splitDigits, ByteFallback = byteFallback,
            UnkId = unk, BosId = bos, EosId = eos, PadId = pad,
            UnkSurface = unkSurface, UnkPiece = unkPiece, BosPiece = bosPiece, EosPiece = eosPiece, PadPiece = padPiece,
            NormalizerName = name, PrecompiledCharsmap = charsmap,
            AddDummyPrefix = dummy, RemoveExtraWhitespaces = removeExtra, EscapeWhitespaces = escape,
        };
    }

    private static SentencePieceEntry ParsePiece(byte[] data)
    {
        var input = new CodedInputStream(data);
        string piece = "";
        float score = 0;
        int type = (int)SentencePieceType.Normal;
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            var wt = WireFormat.GetTagWireType(tag);
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1 when wt == WireFormat.WireType.LengthDelimited: piece = input.ReadString(); break;
                case 2 when wt == WireFormat.WireType.Fixed32: score = input.ReadFloat(); break;
                case 3 when wt == WireFormat.WireType.Varint: type = input.ReadEnum(); break;
                default: input.SkipLastField(); break;
            }
        }
        return new SentencePieceEntry(piece, score, (SentencePieceType)type);
    }

    /// <summary>Serializes this model as a ModelProto, fields in ascending order (deterministic bytes).</summary>
    public byte[] ToBytes()
    {
        var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        foreach (var p in Pieces)
        {
            var pb = Message(po =>
            {
                po.WriteTag(1, WireFormat.WireType.LengthDelimited); po.WriteString(p.Piece);
                po.WriteTag(2, WireFormat.WireType.Fixed32); po.WriteFloat(p.Score);
                if (p.Type != SentencePieceType.Normal) { po.WriteTag(3, WireFormat.WireType.Varint); po.WriteEnum((int)p.Type); }
            });
            o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteBytes(ByteString.CopyFrom(pb));
        }

        var trainer = Message(t =>
        {
            void Int(int f, int value) { t.WriteTag(f, WireFormat.WireType.Varint); t.WriteInt32(value); }
            void Bool(int f, bool value) { t.WriteTag(f, WireFormat.WireType.Varint); t.WriteBool(value); }
            void Str(int f, string value) { t.WriteTag(f, WireFormat.WireType.LengthDelimited); t.WriteString(value); }
            t.WriteTag(3, WireFormat.WireType.Varint); t.WriteEnum(ModelType);
            Int(4, TrainerVocabSize);
            t.WriteTag(10, WireFormat.WireType.Fixed32); t.WriteFloat(CharacterCoverage);
            Int(20, MaxPieceLength);
            Bool(22, SplitByWhitespace);
            Bool(24, TreatWhitespaceAsSuffix);
            Bool(25, SplitDigits);
            Bool(35, ByteFallback);
            Int(40, UnkId); Int(41, BosId); Int(42, EosId); Int(43, PadId);
            Str(44, UnkSurface); Str(45, UnkPiece); Str(46, BosPiece); Str(47, EosPiece); Str(48, PadPiece);
        });
        o.WriteTag(2, WireFormat.WireType.LengthDelimited); o.WriteBytes(ByteString.CopyFrom(trainer));

        var norm = Message(n =>
        {
            n.WriteTag(1, WireFormat.WireType.LengthDelimited); n.WriteString(NormalizerName);
            n.WriteTag(2, WireFormat.WireType.LengthDelimited); n.WriteBytes(ByteString.CopyFrom(PrecompiledCharsmap));
            n.WriteTag(3, WireFormat.WireType.Varint); n.WriteBool(AddDummyPrefix);
            n.WriteTag(4, WireFormat.WireType.Varint); n.WriteBool(RemoveExtraWhitespaces);
            n.WriteTag(5, WireFormat.WireType.Varint); n.WriteBool(EscapeWhitespaces);
        });
        o.WriteTag(3, WireFormat.WireType.LengthDelimited); o.WriteBytes(ByteString.CopyFrom(norm));
        o.Flush();
        return ms.ToArray();
    }

    private static byte[] Message(Action<CodedOutputStream> write)
    {
        var ms = new MemoryStream();
        var o = new CodedOutputStream(ms);
        write(o);
        o.Flush();
        return ms.ToArray();
    }
}
