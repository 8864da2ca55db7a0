using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using GpuIntLab.Tests.Engines;
using Xunit;

namespace GpuIntLab.Tests.Models;

/// <summary>The native .q48 format: exact round trip (same determinism hash), clear errors on corruption.</summary>
public class NativeModelFileTests
{
    private static readonly Lazy<string> s_native = new(() =>
    {
        string path = Path.Combine(TestData.TempDir("native"), "model.q48");
        using var checkpoint = LlamaCheckpoint.Open(TestData.ConformanceBf16);
        var encodings = NativeModelFile.Write(checkpoint, path);
        Assert.All(encodings.Values, e => Assert.Equal(TensorDtype.M8E8, e));
        return path;
    });

    [Fact]
    public void SameHashFromTheFolderAndFromTheNativeFile()
    {
        using var native = LlamaCheckpoint.Open(s_native.Value);
        Assert.True(native.IsNative);
        Assert.Equal(DeterminismGateTests.ConformanceGolden, DeterminismGate.Hash(native, DeterminismGate.Llama2Prompts, newTokens: 4, threads: 2));
        // The embedded tokenizer encodes like the folder's.
        Assert.Equal([1, 450, 7483, 310, 3444, 338], native.LoadTokenizer()!.Encode("The capital of France is"));
    }

    /// <summary>The positional reads the oracle transcodes from return the mapped bytes, for both store kinds, and refuse ranges outside the tensor.</summary>
    [Fact]
    public void FileReadsMatchTheMappedBytes()
    {
        foreach (var source in new[] { TestData.ConformanceF16Sharded, s_native.Value })
        {
            using var checkpoint = LlamaCheckpoint.Open(source);
            foreach (var tensor in checkpoint.AllTensors)
            {
                var mapped = checkpoint.Bytes(tensor).ToArray();
                var read = new byte[mapped.Length];
                checkpoint.ReadBytes(tensor, 0, read);
                Assert.Equal(mapped, read);
                if (mapped.Length > 10)
                {
                    var middle = new byte[7];
                    checkpoint.ReadBytes(tensor, 3, middle);
                    Assert.Equal(mapped.AsSpan(3, 7).ToArray(), middle);
                }
                var e = Assert.Throws<ArgumentOutOfRangeException>(() => checkpoint.ReadBytes(tensor, 1, new byte[mapped.Length]));
                Assert.Contains(tensor.Name, e.Message);
            }
        }
    }

    [Fact]
    public void BF16F16AndF32FoldersExportTheSameBytes()
    {
        string dir = TestData.TempDir("native3");
        string[] sources = [TestData.ConformanceF16Sharded, TestData.ConformanceF32];
        for (int i = 0; i < sources.Length; i++)
        {
            using var checkpoint = LlamaCheckpoint.Open(sources[i]);
            NativeModelFile.Write(checkpoint, Path.Combine(dir, $"m{i}.q48"));
        }
        // config.json differs only in torch_dtype, so compare the tensors, not whole files.
        using var a = LlamaCheckpoint.Open(Path.Combine(dir, "m0.q48"));
        using var b = LlamaCheckpoint.Open(Path.Combine(dir, "m1.q48"));
        using var c = LlamaCheckpoint.Open(s_native.Value);
        foreach (var t in c.AllTensors)
        {
            Assert.True(a.Bytes(a.Info(t.Name)).SequenceEqual(c.Bytes(t)), t.Name);
            Assert.True(b.Bytes(b.Info(t.Name)).SequenceEqual(c.Bytes(t)), t.Name);
        }
    }

    [Fact]
    public void NonBf16ValuesFallBackToRawQ48AndStayExact()
    {
        // An f32 weight with more than 8 significant bits cannot be M8E8: the tensor is stored as raw Q16.48.
        string dir = TestData.TempDir("nativeq48");
        foreach (var f in Directory.GetFiles(TestData.ConformanceF32)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        string st = Path.Combine(dir, "model.safetensors");
        var bytes = File.ReadAllBytes(st);
        using (var original = SafetensorsFile.Open(st))
        {
            var norm = original.Tensors[LlamaCheckpoint.FinalNormName];
            long at = 8 + (long)BitConverter.ToUInt64(bytes, 0) + norm.DataOffset;
            BitConverter.GetBytes(BitConverter.SingleToUInt32Bits(1.0f + MathF.ScaleB(1, -20))).CopyTo(bytes, at);
        }
        File.WriteAllBytes(st, bytes);
        string path = Path.Combine(dir, "m.q48");
        using var folder = LlamaCheckpoint.Open(dir);
        var encodings = NativeModelFile.Write(folder, path);
        Assert.Equal(TensorDtype.Q48, encodings[LlamaCheckpoint.FinalNormName]);
        using var native = LlamaCheckpoint.Open(path);
        Assert.Equal(folder.ReadQ48(folder.Info(LlamaCheckpoint.FinalNormName)), native.ReadQ48(native.Info(LlamaCheckpoint.FinalNormName)));
        Assert.Equal(DeterminismGate.Hash(folder, [[1, 450]], 2, 1), DeterminismGate.Hash(native, [[1, 450]], 2, 1));
    }

    private static string CorruptCopy(Action<byte[]> corrupt)
    {
        var bytes = File.ReadAllBytes(s_native.Value);
        corrupt(bytes);
        string path = Path.Combine(TestData.TempDir("corrupt"), "bad.q48");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Fact]
    public void CorruptionIsReportedClearly()
    {
        var e1 = Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(CorruptCopy(b => b[^100] ^= 1)).Dispose());
        Assert.Contains("checksum mismatch in 'lm_head.weight'", e1.Message);
        var e2 = Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(CorruptCopy(b => b[60] ^= 1)).Dispose());
        Assert.Contains("header checksum mismatch", e2.Message);
        string truncated = CorruptCopy(_ => { });
        File.WriteAllBytes(truncated, File.ReadAllBytes(truncated)[..5000]);
        var e3 = Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(truncated).Dispose());
        Assert.Contains("truncated", e3.Message);
        Assert.Contains("bad.q48", e3.Message);
        string other = Path.Combine(TestData.TempDir("other"), "x.bin");
        File.WriteAllText(other, "hello");
        Assert.Contains("another kind of file", Assert.Throws<ModelLoadException>(() => LlamaCheckpoint.Open(other).Dispose()).Message);
    }

    [Fact]
    public void M8E8EncodingAgreesWithBf16ForEveryPattern()
    {
        for (int bits = 0; bits < 65536; bits++)
        {
            long raw;
            try { raw = ExactConversion.Bf16ToQ48((ushort)bits); }
            catch (WeightRangeException) { continue; }
            var code = ExactConversion.TryQ48ToM8E8(raw);
            if (code is ushort c) Assert.Equal(raw, ExactConversion.M8E8ToQ48(c));
            else Assert.True(raw != 0 && Math.Abs(raw) < 128, $"bf16 0x{bits:X4} -> raw {raw} not encodable");
        }
    }
}
