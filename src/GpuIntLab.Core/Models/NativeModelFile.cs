using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using GpuIntLab.Core.Formats;

namespace GpuIntLab.Core.Models;

/// <summary>
/// The lab's native integer model file (<c>.q48</c>): config, tokenizer and every weight as exact integers
/// in one memory-mapped file, so a model reloads with no floating-point value involved.
/// <code>
/// offset 0   16 bytes  magic "GPUINTLAB-Q48v1\n"
/// offset 16  u64 LE    header length H
/// offset 24  32 bytes  SHA-256 of the header bytes
/// offset 56  H bytes   header: UTF-8 JSON {"format_version":1,"config":"&lt;config.json text&gt;",
///                      "tokenizer":{"offset","length","sha256"}|null,
///                      "tensors":[{"name","encoding":"M8E8"|"Q48","shape":[..],"offset","length","sha256"}]}
/// then     data      each blob 64-byte aligned; offsets are from the start of the file
/// </code>
/// Encodings: <c>M8E8</c> (2 bytes: sign | e(8) | m(7), raw = ±(128+m)·2^(e-86), 0x0000 = 0) for tensors whose
/// every Q16.48 value has at most 8 significant bits (all bf16 checkpoints), else <c>Q48</c> (raw int64 LE).
/// Opening checks the magic, the header checksum, every range against the file size, and every blob's SHA-256.
/// </summary>
public sealed unsafe class NativeModelFile : ITensorStore
{
    public static readonly byte[] Magic = "GPUINTLAB-Q48v1\n"u8.ToArray();
    private const int Alignment = 64;
    private const int HeaderStart = 56;

    private readonly MemoryMappedFile _map;
    private readonly Microsoft.Win32.SafeHandles.SafeFileHandle? _file;  // positional reads (Read)
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private bool _disposed;

    public string Path { get; }
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }
    public string ConfigJson { get; }
    public byte[]? TokenizerModel { get; }

    public static bool IsNativeFile(string path)
    {
        if (!File.Exists(path)) return false;
        using var f = File.OpenRead(path);
        var head = new byte[Magic.Length];
        return f.Read(head, 0, head.Length) == head.Length && head.AsSpan().SequenceEqual(Magic);
    }

    private NativeModelFile(string path)
    {
        Path = path;
        long length = new FileInfo(path).Length;
        string Bad(string problem) => $"{path}: corrupt native model file: {problem}";
        if (length < HeaderStart) throw new ModelLoadException(Bad($"{length} bytes is shorter than the {HeaderStart}-byte preamble (truncated?)"));
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;
        try
        {
            var all = new ReadOnlySpan<byte>(_base, (int)Math.Min(length, int.MaxValue));
            if (!all[..Magic.Length].SequenceEqual(Magic)) throw new ModelLoadException(Bad("wrong magic (not a .q48 file)"));
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(all[16..]);
            if (headerLength == 0 || headerLength > (ulong)(length - HeaderStart)) throw new ModelLoadException(Bad($"header length {headerLength} does not fit in {length} bytes (truncated?)"));
            var header = new ReadOnlySpan<byte>(_base + HeaderStart, (int)headerLength);
            if (!SHA256.HashData(header).AsSpan().SequenceEqual(all.Slice(24, 32))) throw new ModelLoadException(Bad("header checksum mismatch"));

            using var doc = JsonDocument.Parse(header.ToArray());
            var root = doc.RootElement;
            if (root.GetProperty("format_version").GetInt32() != 1) throw new ModelLoadException(Bad("unsupported format_version"));
            ConfigJson = root.GetProperty("config").GetString() ?? throw new ModelLoadException(Bad("no config"));
            var blobs = new List<(string Name, long Offset, long Length, string Sha)>();
            if (root.GetProperty("tokenizer") is { ValueKind: JsonValueKind.Object } tok)
                blobs.Add(("tokenizer", tok.GetProperty("offset").GetInt64(), tok.GetProperty("length").GetInt64(), tok.GetProperty("sha256").GetString()!));
            var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            foreach (var t in root.GetProperty("tensors").EnumerateArray())
            {
                string name = t.GetProperty("name").GetString()!;
                var dtype = t.GetProperty("encoding").GetString() switch
                {
                    "M8E8" => TensorDtype.M8E8,
                    "Q48" => TensorDtype.Q48,
                    var other => throw new ModelLoadException(Bad($"tensor '{name}' has unknown encoding '{other}'")),
                };
                var shape = t.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()).ToArray();
                var info = new TensorInfo(name, dtype, shape, t.GetProperty("offset").GetInt64(), t.GetProperty("length").GetInt64(), path);
                if (info.ByteLength != info.ElementCount * TensorDtypeInfo.SizeOf(dtype)) throw new ModelLoadException(Bad($"tensor '{name}' length {info.ByteLength} does not match its shape"));
                tensors[name] = info;
                blobs.Add((name, info.DataOffset, info.ByteLength, t.GetProperty("sha256").GetString()!));
            }
            foreach (var (name, offset, len, _) in blobs)
                // Compared without adding offset + len, which wraps round for an offset near 2^63 and would pass.
                if (offset < HeaderStart + (long)headerLength || offset > length || len < 0 || len > length - offset)
                    throw new ModelLoadException(Bad($"'{name}' claims {len} bytes at offset {offset} but the file has {length} (truncated?)"));
            // Every blob's checksum, in parallel: a flipped bit anywhere is reported, never computed with.
            // Read through the file handle, not the mapping, so verifying does not fault the whole file into the process.
            string? mismatch = null;
            Parallel.ForEach(blobs, b =>
            {
                if (Sha256Of(_file!, b.Offset, b.Length) != b.Sha) mismatch = b.Name;
            });
            if (mismatch != null) throw new ModelLoadException(Bad($"checksum mismatch in '{mismatch}'"));
            Tensors = tensors;
            int tokenizerIndex = blobs.FindIndex(b => b.Name == "tokenizer");
            TokenizerModel = tokenizerIndex < 0 ? null
                : new ReadOnlySpan<byte>(_base + blobs[tokenizerIndex].Offset, (int)blobs[tokenizerIndex].Length).ToArray();
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            Dispose();
            throw new ModelLoadException(Bad($"malformed header ({e.Message})"), e);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private static string Sha256Of(Microsoft.Win32.SafeHandles.SafeFileHandle file, long offset, long length)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        for (long done = 0; done < length;)
        {
            int want = (int)Math.Min(buffer.Length, length - done);
            int read = RandomAccess.Read(file, buffer.AsSpan(0, want), offset + done);
            if (read <= 0) throw new IOException("unexpected end of file");
            hash.AppendData(buffer, 0, read);
            done += read;
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    public static NativeModelFile Open(string path)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"{path}: file not found");
        try { return new NativeModelFile(path); }
        catch (IOException e) { throw new ModelLoadException($"{path}: cannot read: {e.Message}", e); }
    }

    public ReadOnlySpan<byte> GetBytes(TensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new ReadOnlySpan<byte>(_base + tensor.DataOffset, checked((int)tensor.ByteLength));
    }

    public byte* GetPointer(TensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _base + tensor.DataOffset;
    }

    public void Read(TensorInfo tensor, long offset, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        SafetensorsFile.ReadAt(_file!, Path, tensor, tensor.DataOffset, offset, destination);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
        _file?.Dispose();
    }

    /// <summary>Writes the checkpoint as a native file: M8E8 where every value fits, Q48 otherwise. Returns the encoding chosen per tensor.</summary>
    public static Dictionary<string, TensorDtype> Write(LlamaCheckpoint checkpoint, string outputPath)
    {
        var blobs = new List<(string Name, TensorDtype Encoding, int[] Shape, byte[] Data)>();
        var chosen = new Dictionary<string, TensorDtype>(StringComparer.Ordinal);
        bool includeLmHead = checkpoint.LmHead.Name == LlamaCheckpoint.LmHeadName;
        foreach (var (name, _) in LlamaCheckpoint.ExpectedTensors(checkpoint.Config, includeLmHead))
        {
            var info = checkpoint.Info(name);
            long[] raws = checkpoint.ReadQ48(info);
            var m8e8 = new byte[raws.Length * 2];
            bool fits = true;
            for (int i = 0; i < raws.Length && fits; i++)
            {
                if (ExactConversion.TryQ48ToM8E8(raws[i]) is ushort code) BinaryPrimitives.WriteUInt16LittleEndian(m8e8.AsSpan(2 * i), code);
                else fits = false;
            }
            byte[] data;
            if (fits) data = m8e8;
            else
            {
                data = new byte[raws.Length * 8];
                for (int i = 0; i < raws.Length; i++) BinaryPrimitives.WriteInt64LittleEndian(data.AsSpan(8 * i), raws[i]);
            }
            chosen[name] = fits ? TensorDtype.M8E8 : TensorDtype.Q48;
            blobs.Add((name, chosen[name], info.Shape, data));
        }
        byte[]? tokenizer = checkpoint.TokenizerPath != null ? File.ReadAllBytes(checkpoint.TokenizerPath) : checkpoint.TokenizerModel;
        string configJson = checkpoint.ConfigJson;

        // Lay out: header size is needed for offsets, so build the header twice (offsets fixed-width enough after one pass).
        long Align(long v) => (v + Alignment - 1) / Alignment * Alignment;
        byte[] BuildHeader(long dataStart)
        {
            using var ms = new MemoryStream();
            using (var w = new Utf8JsonWriter(ms))
            {
                long offset = dataStart;
                w.WriteStartObject();
                w.WriteNumber("format_version", 1);
                w.WriteString("config", configJson);
                if (tokenizer != null)
                {
                    w.WriteStartObject("tokenizer");
                    w.WriteNumber("offset", offset); w.WriteNumber("length", tokenizer.Length);
                    w.WriteString("sha256", Convert.ToHexStringLower(SHA256.HashData(tokenizer)));
                    w.WriteEndObject();
                    offset = Align(offset + tokenizer.Length);
                }
                else w.WriteNull("tokenizer");
                w.WriteStartArray("tensors");
                foreach (var b in blobs)
                {
                    w.WriteStartObject();
                    w.WriteString("name", b.Name);
                    w.WriteString("encoding", TensorDtypeInfo.SafetensorsName(b.Encoding));
                    w.WriteStartArray("shape"); foreach (int d in b.Shape) w.WriteNumberValue(d); w.WriteEndArray();
                    w.WriteNumber("offset", offset); w.WriteNumber("length", b.Data.Length);
                    w.WriteString("sha256", Convert.ToHexStringLower(SHA256.HashData(b.Data)));
                    w.WriteEndObject();
                    offset = Align(offset + b.Data.Length);
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            return ms.ToArray();
        }
        long start = Align(HeaderStart + BuildHeader(0).Length + 4096); // room for the offsets' digits to grow
        byte[] header = BuildHeader(start);
        if (HeaderStart + header.Length > start) throw new InvalidOperationException("native header layout overflow");

        string tmp = outputPath + ".tmp";
        using (var f = File.Create(tmp))
        {
            f.Write(Magic);
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            f.Write(len);
            f.Write(SHA256.HashData(header));
            f.Write(header);
            void PadTo(long position) { while (f.Position < position) f.WriteByte(0); }
            PadTo(start);
            if (tokenizer != null) { f.Write(tokenizer); PadTo(Align(f.Position)); }
            foreach (var b in blobs) { f.Write(b.Data); PadTo(Align(f.Position)); }
        }
        File.Move(tmp, outputPath, overwrite: true);
        return chosen;
    }
}
