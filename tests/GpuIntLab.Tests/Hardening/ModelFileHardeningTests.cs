using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.RegularExpressions;
using GpuIntLab.Core.Models;
using Xunit;

namespace GpuIntLab.Tests.Hardening;

/// <summary>Hostile safetensors headers, index files and .q48 ranges: one ModelLoadException naming file and field, never another exception.</summary>
public class ModelFileHardeningTests
{
    /// <summary>A safetensors file with the given header text (as given, not re-encoded) and zeroed data bytes.</summary>
    internal static string WriteRaw(string name, byte[] header, int dataBytes)
    {
        string path = Path.Combine(TestData.TempDir(name), "x.safetensors");
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static ModelLoadException OpenFails(string path) => Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path).Dispose());

    [Fact]
    public void DataOffsetsAsStringsNameTheFieldAndTensor()
    {
        var e = OpenFails(WriteRaw("offstr", Encoding.UTF8.GetBytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}"), 8));
        Assert.Contains("x.safetensors", e.Message);
        Assert.Contains("'w'", e.Message);
        Assert.Contains("data_offsets", e.Message);
    }

    [Fact]
    public void InvalidUtf8InTheHeaderIsAMalformedHeader()
    {
        var header = Encoding.UTF8.GetBytes("{\"wx\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}");
        header[3] = 0xFF; // the 'x' of the tensor name becomes a byte that never occurs in UTF-8
        var e = OpenFails(WriteRaw("utf8", header, 8));
        Assert.Contains("x.safetensors", e.Message);
        Assert.Contains("UTF-8", e.Message);
    }

    [Fact]
    public void ShapeWhoseByteCountOverflowsIsNotReportedAsANegativeSize()
    {
        // 2^31-1 cubed is about 2^93 elements: the product wraps round in 64 bits.
        var e = OpenFails(WriteRaw("bigshape", Encoding.UTF8.GetBytes("{\"w\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,8]}}"), 8));
        Assert.Contains("2^63 bytes", e.Message);
        Assert.DoesNotContain("-", e.Message.Split("x.safetensors")[1].Replace("2^63", ""));
    }

    private static string ShardedCopy(string name, Func<string, string> editIndex)
    {
        string dir = Path.Combine(TestData.TempDir(name), "model");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(TestData.ConformanceF16Sharded)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        string index = Path.Combine(dir, SafetensorsIndex.FileName);
        File.WriteAllText(index, editIndex(File.ReadAllText(index)));
        return dir;
    }

    [Theory]
    [InlineData("../escape.safetensors")]
    [InlineData("sub/../../escape.safetensors")]
    [InlineData("/tmp/escape.safetensors")]
    public void IndexShardNamesCannotLeaveTheModelFolder(string shard)
    {
        string dir = ShardedCopy("escape", text => text.Replace("\"model-00002-of-00002.safetensors\"", $"\"{shard}\""));
        // The escaping target exists, so only the name check can stop it.
        File.Copy(Path.Combine(dir, "model-00002-of-00002.safetensors"), Path.Combine(Path.GetDirectoryName(dir)!, "escape.safetensors"));
        var e = Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(dir).Dispose());
        Assert.Contains(SafetensorsIndex.FileName, e.Message);
        Assert.Contains(shard, e.Message);
        Assert.Contains("not a file name inside the model folder", e.Message);
    }

    [Fact]
    public void WeightMapValueThatIsANumberNamesTheEntry()
    {
        string dir = ShardedCopy("mapnumber", text => Regex.Replace(text, "\"model-00002-of-00002.safetensors\"", "5"));
        var e = Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(dir).Dispose());
        Assert.Contains(SafetensorsIndex.FileName, e.Message);
        Assert.Contains("weight_map entry", e.Message);
        Assert.Contains("number 5", e.Message);
    }

    [Fact]
    public void EmptyWeightMapIsReportedAsSuchNotAsAMissingTensor()
    {
        string dir = ShardedCopy("mapempty", _ => "{\"metadata\": {}, \"weight_map\": {}}");
        var e = Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(dir).Dispose());
        Assert.Contains("'weight_map' is empty", e.Message);
        Assert.DoesNotContain("lm_head", e.Message);
    }

    [Fact]
    public void Q48RangeWhoseEndOverflowsIsRefusedByTheRangeCheck()
    {
        string source = Path.Combine(TestData.TempDir("q48range"), "m.q48");
        using (var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16)) NativeModelFile.Write(checkpoint, source);
        var bytes = File.ReadAllBytes(source);
        const int preamble = 56;
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(16));
        string header = Encoding.UTF8.GetString(bytes, preamble, headerLength);
        // offset + length wraps round to a negative number, which an added-up check lets through.
        string hostile = new Regex("\"offset\":\\d+").Replace(header, $"\"offset\":{long.MaxValue - 8}", 1);
        var newHeader = Encoding.UTF8.GetBytes(hostile);
        var file = new byte[preamble + newHeader.Length + bytes.Length - preamble - headerLength];
        bytes.AsSpan(0, 16).CopyTo(file);
        BinaryPrimitives.WriteUInt64LittleEndian(file.AsSpan(16), (ulong)newHeader.Length);
        SHA256.HashData(newHeader).CopyTo(file, 24);
        newHeader.CopyTo(file, preamble);
        bytes.AsSpan(preamble + headerLength).CopyTo(file.AsSpan(preamble + newHeader.Length));
        string path = Path.Combine(Path.GetDirectoryName(source)!, "hostile.q48");
        File.WriteAllBytes(path, file);
        var e = Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(path).Dispose());
        Assert.Contains("hostile.q48", e.Message);
        Assert.Contains($"at offset {long.MaxValue - 8}", e.Message);
    }
}
