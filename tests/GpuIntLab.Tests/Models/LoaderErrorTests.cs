using System.Buffers.Binary;
using System.Text;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;
using Xunit;

namespace GpuIntLab.Tests.Models;

/// <summary>Bad input gets one clear error naming the file and the problem.</summary>
public class LoaderErrorTests
{
    private static string CopyOfConformance(string name)
    {
        string dir = TestData.TempDir(name);
        foreach (var f in Directory.GetFiles(TestData.ConformanceBf16)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static ModelLoadException Fails(string folder) => Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(folder).Dispose());

    [Fact]
    public void MissingFolder()
    {
        var e = Fails("/nonexistent/model");
        Assert.Contains("/nonexistent/model", e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void MissingConfig()
    {
        string dir = CopyOfConformance("noconfig");
        File.Delete(Path.Combine(dir, "config.json"));
        var e = Fails(dir);
        Assert.Contains("config.json", e.Message);
    }

    [Fact]
    public void MissingSafetensors()
    {
        string dir = CopyOfConformance("noweights");
        File.Delete(Path.Combine(dir, "model.safetensors"));
        Assert.Contains("no *.safetensors", Fails(dir).Message);
    }

    [Fact]
    public void UnsupportedArchitecture()
    {
        string dir = CopyOfConformance("arch");
        string path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("LlamaForCausalLM", "GemmaForCausalLM").Replace("\"llama\"", "\"gemma\""));
        var e = Fails(dir);
        Assert.Contains("unsupported architecture", e.Message);
        Assert.Contains("GemmaForCausalLM", e.Message);
    }

    [Fact]
    public void RopeScalingIsRefused()
    {
        string dir = CopyOfConformance("ropescaling");
        string path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}"));
        Assert.Contains("rope_scaling", Fails(dir).Message);
    }

    [Fact]
    public void ShapeThatDoesNotMatchTheConfig()
    {
        string dir = CopyOfConformance("shape");
        string path = Path.Combine(dir, "config.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"intermediate_size\": 172", "\"intermediate_size\": 128"));
        var e = Fails(dir);
        Assert.Contains("mlp.gate_proj.weight", e.Message);
        Assert.Contains("[172, 64]", e.Message);
    }

    [Fact]
    public void TruncatedFile()
    {
        string dir = CopyOfConformance("truncated");
        string path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..(bytes.Length - 1000)]);
        var e = Fails(dir);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void HeaderLengthLargerThanFile()
    {
        string dir = CopyOfConformance("headerlen");
        string path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)bytes.Length * 2);
        File.WriteAllBytes(path, bytes);
        Assert.Contains("header length", Fails(dir).Message);
    }

    [Fact]
    public void HeaderThatIsNotJson()
    {
        string dir = CopyOfConformance("notjson");
        string path = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(path);
        bytes[8] = (byte)'#';
        File.WriteAllBytes(path, bytes);
        Assert.Contains("not valid JSON", Fails(dir).Message);
    }

    [Fact]
    public void TinyFile()
    {
        string dir = CopyOfConformance("tiny");
        File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), [1, 2, 3]);
        Assert.Contains("shorter than", Fails(dir).Message);
    }

    private static void WriteSingleTensorFile(string path, string dtype, int[] shape, byte[] data)
    {
        string header = $"{{\"w\":{{\"dtype\":\"{dtype}\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[0,{data.Length}]}}}}";
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)h.Length);
        h.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + h.Length);
        File.WriteAllBytes(path, bytes);
    }

    [Fact]
    public void UnsupportedDtype()
    {
        string path = Path.Combine(TestData.TempDir("dtype"), "x.safetensors");
        WriteSingleTensorFile(path, "I8", [4], new byte[4]);
        var e = Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path));
        Assert.Contains("I8", e.Message);
        Assert.Contains("not supported", e.Message);
    }

    [Fact]
    public void ByteLengthThatDoesNotMatchTheShape()
    {
        string path = Path.Combine(TestData.TempDir("span"), "x.safetensors");
        WriteSingleTensorFile(path, "F32", [3], new byte[8]);
        Assert.Contains("needs 12", Assert.Throws<ModelLoadException>(() => SafetensorsFile.Open(path)).Message);
    }

    [Fact]
    public void MissingShardNamedInIndex()
    {
        string dir = TestData.TempDir("shard");
        foreach (var f in Directory.GetFiles(TestData.ConformanceF16Sharded)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        File.Delete(Path.Combine(dir, "model-00002-of-00002.safetensors"));
        Assert.Contains("model-00002-of-00002.safetensors", Fails(dir).Message);
    }

    [Fact]
    public void WeightOutsideTheQ48RangeNamesTheTensor()
    {
        string path = Path.Combine(TestData.TempDir("range"), "x.safetensors");
        var data = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(data, BitConverter.SingleToUInt32Bits(1.5f));
        BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(4), BitConverter.SingleToUInt32Bits(40000f));
        WriteSingleTensorFile(path, "F32", [2], data);
        using var file = SafetensorsFile.Open(path);
        var tensor = file.Tensors["w"];
        var values = new long[2];
        var e = Assert.Throws<WeightRangeException>(() => ExactConversion.ToQ48(tensor.Dtype, file.GetBytes(tensor), values, tensor.Name));
        Assert.Contains("'w' element 1", e.Message);
        Assert.Contains("Q16.48 range", e.Message);
    }
}

/// <summary>Checkpoint-level quirks the config alone cannot show: each refused, naming the file and tensor.</summary>
public class CheckpointQuirkTests
{
    private static string Copy(string name)
    {
        string dir = TestData.TempDir(name);
        foreach (var f in Directory.GetFiles(TestData.ConformanceBf16)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    private static void Edit(string dir, string from, string to)
    {
        string path = Path.Combine(dir, "config.json");
        string text = File.ReadAllText(path);
        Assert.Contains(from, text);
        File.WriteAllText(path, text.Replace(from, to));
    }

    [Fact]
    public void TiedConfigBesideAnLmHeadIsRefused()
    {
        string dir = Copy("tied-with-head");
        Edit(dir, "\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true");
        var e = Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(dir).Dispose());
        Assert.Contains("lm_head.weight", e.Message);
        Assert.Contains("tie_word_embeddings", e.Message);
    }

    [Fact]
    public void FewerLayersInTheConfigThanInTheFileIsRefused()
    {
        string dir = Copy("extra-layers");
        Edit(dir, "\"num_hidden_layers\": 3", "\"num_hidden_layers\": 2");
        var e = Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(dir).Dispose());
        Assert.Contains("model.layers.2.", e.Message);
    }

    [Fact]
    public void NonFiniteWeightsAreRefusedByTheFloat64EngineToo()
    {
        string dir = TestData.TempDir("nonfinite");
        SeededCheckpointWriter.Write(dir, SeededCheckpointWriter.ConformanceConfig(), new SeededCheckpointLayout(GpuIntLab.Core.Formats.TensorDtype.F32));
        // Put +Inf into the first element of the final norm (F32 little-endian), located through the header.
        string file = Path.Combine(dir, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(file);
        long headerLength = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        string header = System.Text.Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        int at = header.IndexOf("\"model.norm.weight\"", StringComparison.Ordinal);
        int offsets = header.IndexOf("data_offsets\":[", at, StringComparison.Ordinal) + "data_offsets\":[".Length;
        long start = long.Parse(header[offsets..header.IndexOf(',', offsets)], System.Globalization.CultureInfo.InvariantCulture);
        System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)(8 + headerLength + start)), float.PositiveInfinity);
        File.WriteAllBytes(file, bytes);
        using var opened = LlamaCheckpoint.Open(dir);
        var e = Assert.Throws<ModelLoadException>(() => new GpuIntLab.Oracle.ReferenceEngine(opened).Dispose());
        Assert.Contains("model.norm.weight", e.Message);
        Assert.Contains("finite", e.Message);
    }

    /// <summary>Sets every element of an F32 tensor of a safetensors file in place.</summary>
    private static void FillF32(string file, string tensor, float value)
    {
        byte[] bytes = File.ReadAllBytes(file);
        long headerLength = (long)System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        string header = System.Text.Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        int at = header.IndexOf($"\"{tensor}\"", StringComparison.Ordinal);
        int offsets = header.IndexOf("data_offsets\":[", at, StringComparison.Ordinal) + "data_offsets\":[".Length;
        int comma = header.IndexOf(',', offsets);
        long start = long.Parse(header[offsets..comma], System.Globalization.CultureInfo.InvariantCulture);
        long end = long.Parse(header[(comma + 1)..header.IndexOf(']', comma)], System.Globalization.CultureInfo.InvariantCulture);
        for (long i = start; i < end; i += 4) System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)(8 + headerLength + i)), value);
        File.WriteAllBytes(file, bytes);
    }

    /// <summary>Weights in range whose activations leave it: the oracle names the engine, layer and op, and the CLI prints one error line, exit 2.</summary>
    [Fact]
    public void Q48OverflowNamesTheLayerAndOp()
    {
        string dir = TestData.TempDir("overflow");
        SeededCheckpointWriter.Write(dir, SeededCheckpointWriter.ConformanceConfig(), new SeededCheckpointLayout(GpuIntLab.Core.Formats.TensorDtype.F32), tokenizerModelPath: TestData.Llama2TokenizerPath);
        FillF32(Path.Combine(dir, "model.safetensors"), "model.layers.0.input_layernorm.weight", 29952f);
        using (var checkpoint = LlamaCheckpoint.Open(dir))
        using (var oracle = new GpuIntLab.Oracle.OracleEngine(checkpoint))
        {
            var e = Assert.Throws<GpuIntLab.Core.FixedPoint.Q48OverflowException>(() => oracle.Decode(1));
            Assert.StartsWith("oracle: layer 0 input_layernorm: ", e.Message);
        }
        var (code, _, stderr) = GpuIntLab.Tests.Cli.CliRunner.Run("generate", "--model", dir, "--prompt-ids", "1 450", "--max-new-tokens", "2");
        Assert.Equal(2, code);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("layer 0 input_layernorm", stderr);
    }
}
