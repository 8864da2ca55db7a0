using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace GpuIntLab.Experiments;

/// <summary>
/// The oracle's baseline for corpus chunks, cached on disk so adding a backend does not rerun the oracle.
/// One file per chunk, named by the SHA-256 of its key: the model's content hash, the chunk's token ids (BOS
/// included, so the corpus and the context length are in it), the first scored position, and
/// <see cref="OracleVersion"/>. What is stored is the oracle's raw Q16.48 logits (int64, exactly what the oracle
/// computed) at every scored position: 8 bytes x vocab a position, so the stored baseline is the oracle's output
/// bit for bit and adds no KL at all (the log-probabilities are computed from it in float64 when read). That is
/// 4 KiB a position for a 512-token vocabulary, 250 KiB for a 32,000-token one (64 MiB for one 512-token chunk's
/// 255 positions). A file carries its key and a SHA-256 of its contents; a truncated or altered file is refused
/// with an error naming it, never silently recomputed or used.
/// </summary>
public sealed class OracleBaselineCache(string directory, string modelHash)
{
    /// <summary>Bump when the oracle's arithmetic changes (its determinism hash moves): every cached baseline is then a miss.</summary>
    public const int OracleVersion = 1;

    private static readonly byte[] s_magic = "GILOBL01"u8.ToArray();

    public string Directory { get; } = directory;

    public static string Key(string modelHash, ReadOnlySpan<int> chunk, int firstScored, int oracleVersion = OracleVersion)
    {
        var sb = new StringBuilder();
        sb.Append("oracle-baseline raw-q16.48 v").Append(oracleVersion).Append("; model ").Append(modelHash)
          .Append("; first-scored ").Append(firstScored).Append("; tokens ").Append(chunk.Length).Append(':');
        foreach (int t in chunk) sb.Append(' ').Append(t);
        return sb.ToString();
    }

    public string PathFor(string key) =>
        Path.Combine(Directory, Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..40] + ".q48base");

    /// <summary>The cached raw logits of the chunk's scored positions, or computed (and stored) on a miss.</summary>
    public long[][] GetOrCompute(ReadOnlySpan<int> chunk, int firstScored, Func<long[][]> compute, out bool hit)
    {
        string key = Key(modelHash, chunk, firstScored);
        string path = PathFor(key);
        if (File.Exists(path))
        {
            hit = true;
            return Read(path, key);
        }
        hit = false;
        var logits = compute();
        Write(path, key, logits);
        return logits;
    }

    public static void Write(string path, string key, long[][] logits)
    {
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        int vocab = logits.Length == 0 ? 0 : logits[0].Length;
        byte[] keyBytes = Encoding.UTF8.GetBytes(key);
        var bytes = new byte[s_magic.Length + 4 + keyBytes.Length + 8 + 8L * logits.Length * vocab + 32];
        var span = bytes.AsSpan();
        int at = 0;
        s_magic.CopyTo(span); at += s_magic.Length;
        BinaryPrimitives.WriteInt32LittleEndian(span[at..], keyBytes.Length); at += 4;
        keyBytes.CopyTo(span[at..]); at += keyBytes.Length;
        BinaryPrimitives.WriteInt32LittleEndian(span[at..], logits.Length); at += 4;
        BinaryPrimitives.WriteInt32LittleEndian(span[at..], vocab); at += 4;
        foreach (var row in logits)
        {
            if (row.Length != vocab) throw new ArgumentException("every position needs the same vocabulary size", nameof(logits));
            foreach (long v in row) { BinaryPrimitives.WriteInt64LittleEndian(span[at..], v); at += 8; }
        }
        SHA256.HashData(span[..at], span[at..]);
        // Write aside and move into place, so a reader never sees half a file from an interrupted run.
        string temp = path + $".{Environment.ProcessId}.tmp";
        File.WriteAllBytes(temp, bytes);
        File.Move(temp, path, overwrite: true);
    }

    public static long[][] Read(string path, string expectedKey)
    {
        ExperimentSpecException Corrupt(string why) =>
            new($"{path}: corrupted oracle baseline cache file ({why}); delete it and rerun to recompute it");
        byte[] bytes = File.ReadAllBytes(path);
        var span = bytes.AsSpan();
        if (bytes.Length < s_magic.Length + 4 + 8 + 32 || !span[..s_magic.Length].SequenceEqual(s_magic)) throw Corrupt("not a baseline file or truncated");
        if (!SHA256.HashData(span[..^32]).AsSpan().SequenceEqual(span[^32..])) throw Corrupt("checksum mismatch");
        int at = s_magic.Length;
        int keyLength = BinaryPrimitives.ReadInt32LittleEndian(span[at..]); at += 4;
        if (keyLength < 0 || at + keyLength + 8 > bytes.Length - 32) throw Corrupt("bad key length");
        string key = Encoding.UTF8.GetString(span.Slice(at, keyLength)); at += keyLength;
        if (key != expectedKey) throw Corrupt("its key is not the one its name stands for");
        int positions = BinaryPrimitives.ReadInt32LittleEndian(span[at..]); at += 4;
        int vocab = BinaryPrimitives.ReadInt32LittleEndian(span[at..]); at += 4;
        if (positions < 0 || vocab < 0 || at + 8L * positions * vocab != bytes.Length - 32) throw Corrupt("size does not match its header");
        var logits = new long[positions][];
        for (int p = 0; p < positions; p++)
        {
            logits[p] = new long[vocab];
            for (int v = 0; v < vocab; v++) { logits[p][v] = BinaryPrimitives.ReadInt64LittleEndian(span[at..]); at += 8; }
        }
        return logits;
    }

    /// <summary>SHA-256 over the model's files (a .q48 file, or every file directly in the folder: name, length, bytes).</summary>
    public static string ModelContentHash(string modelPath)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        IEnumerable<string> files = File.Exists(modelPath) ? [modelPath] : System.IO.Directory.GetFiles(modelPath).Order(StringComparer.Ordinal);
        var buffer = new byte[1 << 20];
        Span<byte> length = stackalloc byte[8];
        foreach (var file in files)
        {
            hash.AppendData(Encoding.UTF8.GetBytes(Path.GetFileName(file) + "\n"));
            using var stream = File.OpenRead(file);
            BinaryPrimitives.WriteInt64LittleEndian(length, stream.Length);
            hash.AppendData(length);
            int read;
            while ((read = stream.Read(buffer)) > 0) hash.AppendData(buffer.AsSpan(0, read));
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}
