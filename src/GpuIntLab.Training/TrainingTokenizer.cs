namespace GpuIntLab.Training;

/// <summary>What the trainer needs from a tokenizer: ids with BOS first, decoding, and the special ids.</summary>
public interface ITrainingTokenizer
{
    int VocabSize { get; }
    int BosId { get; }
    int EosId { get; }
    /// <summary>Ids of the text, BOS first.</summary>
    int[] Encode(string text);
    string Decode(ReadOnlySpan<int> ids);
    /// <summary>The serialized SentencePiece ModelProto to ship as tokenizer.model, or null when there is none (tests).</summary>
    byte[]? ModelProto { get; }
}

/// <summary>
/// Byte-level ids laid out as a byte-fallback SentencePiece vocabulary starts: 0 &lt;unk&gt;, 1 &lt;s&gt;, 2 &lt;/s&gt;,
/// then &lt;0x00&gt;..&lt;0xFF&gt; at 3..258. Used by the tests (no tokenizer training needed).
/// </summary>
public sealed class ByteTokenizer : ITrainingTokenizer
{
    public int VocabSize => 259;
    public int BosId => 1;
    public int EosId => 2;
    public byte[]? ModelProto => null;

    public int[] Encode(string text)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        var ids = new int[bytes.Length + 1];
        ids[0] = BosId;
        for (int i = 0; i < bytes.Length; i++) ids[i + 1] = 3 + bytes[i];
        return ids;
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var bytes = new List<byte>();
        foreach (int id in ids) if (id >= 3 && id < 259) bytes.Add((byte)(id - 3));
        return System.Text.Encoding.UTF8.GetString(bytes.ToArray());
    }
}
