using System.Text.Json;
using GpuIntLab.Core.Formats;

namespace GpuIntLab.Core.Models;

/// <summary>A tensor to write: name, dtype, shape and its little-endian bytes.</summary>
public sealed record TensorToWrite(string Name, TensorDtype Dtype, int[] Shape, byte[] Data);

/// <summary>
/// Writes safetensors files the way the HF tooling does: tensors in the given order, data packed
/// back to back, a compact JSON header ending with <c>"__metadata__"</c>, padded with spaces to a
/// multiple of 8 bytes. Byte-for-byte reproducible, so generated checkpoints can be hash-checked.
/// </summary>
public static class SafetensorsWriter
{
    public static void Write(string path, IReadOnlyList<TensorToWrite> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        foreach (var t in tensors)
        {
            long expected = ByteLength(t.Dtype, t.Shape);
            if (t.Data.Length != expected)
                throw new ArgumentException($"tensor '{t.Name}': {t.Data.Length} bytes for shape [{string.Join(", ", t.Shape)}] of {t.Dtype} (expected {expected})");
        }
        var byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Write(path, tensors.Select(t => (t.Name, t.Dtype, t.Shape)).ToList(), (name, stream) => stream.Write(byName[name].Data), metadata);
    }

    /// <summary>The bytes a tensor of this dtype and shape takes.</summary>
    public static long ByteLength(TensorDtype dtype, int[] shape) => shape.Aggregate(1L, (a, b) => checked(a * b)) * TensorDtypeInfo.SizeOf(dtype);

    /// <summary>
    /// Streaming form: the header is built from names, dtypes and shapes alone, then <paramref name="writeData"/>
    /// writes each tensor's bytes in order, so no more than one tensor need be in memory at a time.
    /// </summary>
    public static void Write(string path, IReadOnlyList<(string Name, TensorDtype Dtype, int[] Shape)> tensors, Action<string, Stream> writeData,
        IReadOnlyDictionary<string, string>? metadata = null)
    {
        using var stream = new MemoryStream();
        using (var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = false }))
        {
            json.WriteStartObject();
            long offset = 0;
            foreach (var t in tensors)
            {
                long length = ByteLength(t.Dtype, t.Shape);
                json.WritePropertyName(t.Name);
                json.WriteStartObject();
                json.WriteString("dtype", TensorDtypeInfo.SafetensorsName(t.Dtype));
                json.WriteStartArray("shape");
                foreach (int d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + length);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += length;
            }
            json.WritePropertyName("__metadata__");
            json.WriteStartObject();
            foreach (var (k, v) in metadata ?? new Dictionary<string, string> { ["format"] = "pt" }) json.WriteString(k, v);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        var header = new List<byte>(stream.ToArray());
        while (header.Count % 8 != 0) header.Add((byte)' ');

        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!);
        using var file = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Count);
        file.Write(len);
        file.Write(header.ToArray());
        foreach (var t in tensors)
        {
            long before = file.Position;
            writeData(t.Name, file);
            long expected = ByteLength(t.Dtype, t.Shape);
            if (file.Position - before != expected)
                throw new InvalidOperationException($"tensor '{t.Name}': {file.Position - before} bytes written for shape [{string.Join(", ", t.Shape)}] of {t.Dtype} (expected {expected})");
        }
    }
}
