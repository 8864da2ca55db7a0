using System.IO.MemoryMappedFiles;
using System.Text.Json;
using GpuIntLab.Core.Formats;

namespace GpuIntLab.Core.Models;

/// <summary>One tensor's entry in a safetensors header.</summary>
public sealed record TensorInfo(string Name, TensorDtype Dtype, int[] Shape, long DataOffset, long ByteLength, string FilePath)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// A memory-mapped safetensors file: an 8-byte little-endian header length, a JSON header naming each
/// tensor's dtype, shape and byte range, then the raw little-endian data. Nothing is read whole:
/// tensor bytes are served straight from the mapping. Every structural problem is reported as a
/// <see cref="ModelLoadException"/> naming the file.
/// </summary>
public sealed unsafe class SafetensorsFile : ITensorStore
{
    private const long MaxHeaderBytes = 100L * 1024 * 1024;
    private readonly MemoryMappedFile? _map;
    private readonly Microsoft.Win32.SafeHandles.SafeFileHandle? _file;  // positional reads (Read)
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private readonly long _dataStart;

    public string Path { get; }
    public long FileLength { get; }
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    private SafetensorsFile(string path)
    {
        Path = path;
        if (!File.Exists(path)) throw new ModelLoadException($"{path}: file not found");
        FileLength = new FileInfo(path).Length;
        if (FileLength < 8) throw new ModelLoadException($"{path}: malformed safetensors: file is {FileLength} bytes, shorter than the 8-byte header length");
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;

        ulong headerLength = *(ulong*)_base; // little-endian on every platform .NET runs on here
        if (headerLength == 0 || headerLength > MaxHeaderBytes || (long)headerLength > FileLength - 8)
            throw new ModelLoadException($"{path}: malformed safetensors: header length {headerLength} does not fit in a file of {FileLength} bytes");
        _dataStart = 8 + (long)headerLength;
        var headerBytes = new ReadOnlySpan<byte>(_base + 8, (int)headerLength);
        (Tensors, Metadata) = ParseHeader(path, headerBytes, FileLength - _dataStart);
    }

    public static SafetensorsFile Open(string path)
    {
        try { return new SafetensorsFile(path); }
        catch (IOException e) { throw new ModelLoadException($"{path}: cannot read: {e.Message}", e); }
        catch (UnauthorizedAccessException e) { throw new ModelLoadException($"{path}: cannot read: {e.Message}", e); }
    }

    private static (Dictionary<string, TensorInfo>, Dictionary<string, string>) ParseHeader(string path, ReadOnlySpan<byte> header, long dataLength)
    {
        // The JSON reader checks UTF-8 only when a string is read, and then throws a non-JSON exception: check it all first.
        if (System.Text.Unicode.Utf8.IsValid(header) is false)
            throw new ModelLoadException($"{path}: malformed safetensors: header is not valid UTF-8");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header.ToArray()); }
        catch (JsonException e) { throw new ModelLoadException($"{path}: malformed safetensors: header is not valid JSON ({e.Message})", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelLoadException($"{path}: malformed safetensors: header is not a JSON object");
            if (JsonStrings.FirstUndecodable(doc.RootElement) is string undecodable)
                throw new ModelLoadException($"{path}: malformed safetensors: header {undecodable} is not valid Unicode text (a lone surrogate escape)");
            var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var ranges = new List<(long Start, long End, string Name)>();
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                if (prop.Name == "__metadata__")
                {
                    if (prop.Value.ValueKind == JsonValueKind.Object)
                        foreach (var m in prop.Value.EnumerateObject()) metadata[m.Name] = m.Value.ToString();
                    continue;
                }
                tensors[prop.Name] = ParseTensor(path, prop.Name, prop.Value, dataLength);
                ranges.Add((tensors[prop.Name].DataOffset, tensors[prop.Name].DataOffset + tensors[prop.Name].ByteLength, prop.Name));
            }
            ranges.Sort((a, b) => a.Start.CompareTo(b.Start));
            for (int i = 1; i < ranges.Count; i++)
                if (ranges[i].Start < ranges[i - 1].End)
                    throw new ModelLoadException($"{path}: malformed safetensors: tensors '{ranges[i - 1].Name}' and '{ranges[i].Name}' overlap");
            return (tensors, metadata);
        }
    }

    private static TensorInfo ParseTensor(string path, string name, JsonElement e, long dataLength)
    {
        string Where() => $"{path}: malformed safetensors: tensor '{name}'";
        if (e.ValueKind != JsonValueKind.Object) throw new ModelLoadException($"{Where()} entry is not an object");
        if (!e.TryGetProperty("dtype", out var dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw new ModelLoadException($"{Where()} has no dtype");
        string dtypeName = dtypeEl.GetString()!;
        var dtype = TensorDtypeInfo.TryParse(dtypeName)
            ?? throw new ModelLoadException($"{path}: tensor '{name}' has dtype {dtypeName}, which is not supported (supported: BF16, F16, F32)");
        if (!e.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw new ModelLoadException($"{Where()} has no shape");
        var shape = new List<int>();
        foreach (var d in shapeEl.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt32(out int v) || v < 0)
                throw new ModelLoadException($"{Where()} has an invalid shape dimension {d}");
            shape.Add(v);
        }
        if (!e.TryGetProperty("data_offsets", out var offEl) || offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw new ModelLoadException($"{Where()} has no [begin, end] data_offsets");
        // TryGetInt64 throws on a non-number, so the kind is checked first: a string offset is a malformed field, not a crash.
        if (offEl[0].ValueKind != JsonValueKind.Number || offEl[1].ValueKind != JsonValueKind.Number
            || !offEl[0].TryGetInt64(out long begin) || !offEl[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new ModelLoadException($"{Where()} has invalid data_offsets {offEl} (expected two integers 0 <= begin <= end)");
        if (end > dataLength)
            throw new ModelLoadException($"{Where()} data ends at byte {end} but the file holds only {dataLength} data bytes (truncated file?)");
        long expected;
        try { expected = checked(shape.Aggregate(1L, (a, b) => checked(a * b)) * TensorDtypeInfo.SizeOf(dtype)); }
        catch (OverflowException) { throw new ModelLoadException($"{Where()} has shape [{string.Join(", ", shape)}], more than 2^63 bytes of {dtypeName}"); }
        if (end - begin != expected)
            throw new ModelLoadException($"{Where()} spans {end - begin} bytes but shape [{string.Join(", ", shape)}] of {dtypeName} needs {expected}");
        return new TensorInfo(name, dtype, shape.ToArray(), begin, end - begin, path);
    }

    /// <summary>The tensor's raw little-endian bytes, straight from the mapping (valid while this file is open).</summary>
    public ReadOnlySpan<byte> GetBytes(TensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (tensor.ByteLength > int.MaxValue)
            throw new NotSupportedException($"{Path}: tensor '{tensor.Name}' is {tensor.ByteLength} bytes; spans over 2 GiB are not supported");
        return new ReadOnlySpan<byte>(_base + _dataStart + tensor.DataOffset, (int)tensor.ByteLength);
    }

    /// <summary>Pointer to the tensor's first byte (for native consumers that read rows in parallel).</summary>
    public byte* GetPointer(TensorInfo tensor)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _base + _dataStart + tensor.DataOffset;
    }

    public void Read(TensorInfo tensor, long offset, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ReadAt(_file!, Path, tensor, _dataStart + tensor.DataOffset, offset, destination);
    }

    /// <summary>Positional read of a tensor's bytes (see <see cref="ITensorStore.Read"/>); thread-safe.</summary>
    internal static void ReadAt(Microsoft.Win32.SafeHandles.SafeFileHandle handle, string path, TensorInfo tensor, long fileOffset, long offset, Span<byte> destination)
    {
        if (offset < 0 || offset + destination.Length > tensor.ByteLength)
            throw new ArgumentOutOfRangeException(nameof(offset), $"{path}: bytes [{offset}, {offset + destination.Length}) are outside tensor '{tensor.Name}' ({tensor.ByteLength} bytes)");
        while (destination.Length > 0)
        {
            int read = RandomAccess.Read(handle, destination, fileOffset + offset);
            if (read <= 0) throw new ModelLoadException($"{path}: unexpected end of file reading tensor '{tensor.Name}' (truncated?)");
            destination = destination[read..];
            offset += read;
        }
    }

    private bool _disposed;
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view?.SafeMemoryMappedViewHandle.ReleasePointer();
        _view?.Dispose();
        _map?.Dispose();
        _file?.Dispose();
    }
}
