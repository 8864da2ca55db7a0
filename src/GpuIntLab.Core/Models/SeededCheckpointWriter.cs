using System.Buffers.Binary;
using GpuIntLab.Core.Formats;

namespace GpuIntLab.Core.Models;

/// <summary>How a seeded checkpoint is laid out on disk.</summary>
public sealed record SeededCheckpointLayout(TensorDtype Dtype, int Shards = 1, bool Tied = false);

/// <summary>
/// The value scales of a seeded rule: non-norm values are k / 2^log2 with k = r % 511 - 255, the power chosen by the
/// tensor's kind. <see cref="Llama2Conformance"/> is <c>shared/conformance/README.md</c>'s rule;
/// <see cref="Families"/> is <c>shared/conformance/families/README.md</c>'s (linear weights 1/512, biases 1/256).
/// </summary>
public sealed record SeededRule(int EmbeddingLog2, int LinearLog2, int LmHeadLog2, int BiasLog2)
{
    public static readonly SeededRule Llama2Conformance = new(EmbeddingLog2: 8, LinearLog2: 12, LmHeadLog2: 9, BiasLog2: 8);
    public static readonly SeededRule Families = new(EmbeddingLog2: 8, LinearLog2: 9, LmHeadLog2: 9, BiasLog2: 8);
}

/// <summary>
/// Writes an HF Llama folder whose weights follow the conformance set's generation rule
/// (<c>shared/conformance/README.md</c>): one splitmix64 stream, <c>r = z &gt;&gt; 32</c> per value, tensors in
/// HF order; norm weights <c>(64 + r % 129) / 128</c>, others <c>k = r % 511 - 255</c> scaled by 1/256
/// (embeddings), 1/4096 (linear layers), 1/512 (lm_head). Every value has at most 8 significant bits,
/// so BF16, F16 and F32 folders hold the same numbers. With the conformance config and seed this
/// reproduces the conformance checkpoints byte for byte; with a TinyLlama config it makes a
/// realistic-size model for speed measurements.
/// </summary>
public static class SeededCheckpointWriter
{
    public const ulong ConformanceSeed = 20261124;

    /// <summary>The conformance set's tiny GQA config (hidden 64, 4 heads, 2 kv heads, 3 layers, Llama 2 vocab).</summary>
    public static LlamaConfig ConformanceConfig(bool tied = false) => new()
    {
        HiddenSize = 64,
        IntermediateSize = 172,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        NumHiddenLayers = 3,
        VocabSize = 32000,
        MaxPositionEmbeddings = 2048,
        RmsNormEps = 1e-5,
        RopeTheta = 10000.0,
        TieWordEmbeddings = tied,
    };

    /// <summary>TinyLlama-1.1B's shapes (hidden 2048, 32 heads, 4 kv heads, 22 layers, 5632 MLP, vocab 32000).</summary>
    public static LlamaConfig TinyLlamaShapedConfig(int layers = 22) => new()
    {
        HiddenSize = 2048,
        IntermediateSize = 5632,
        NumAttentionHeads = 32,
        NumKeyValueHeads = 4,
        NumHiddenLayers = layers,
        VocabSize = 32000,
        MaxPositionEmbeddings = 2048,
        RmsNormEps = 1e-5,
        RopeTheta = 10000.0,
        TieWordEmbeddings = false,
    };

    private sealed class SplitMix64(ulong seed)
    {
        private ulong _state = seed;
        public uint NextR()
        {
            _state += 0x9E3779B97F4A7C15UL;
            ulong z = _state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            return (uint)(z >> 32);
        }
    }

    /// <summary>Writes config.json and the safetensors file(s) into <paramref name="folder"/>; copies a tokenizer if given.</summary>
    public static void Write(string folder, LlamaConfig config, SeededCheckpointLayout layout, ulong seed = ConformanceSeed, string? tokenizerModelPath = null, SeededRule? rule = null)
    {
        rule ??= SeededRule.Llama2Conformance;
        Directory.CreateDirectory(folder);
        var rng = new SplitMix64(seed);
        // The stream always draws lm_head last, so a tied folder differs only by omitting it (its draws, last, are never needed).
        var tensors = LlamaCheckpoint.ExpectedTensors(config with { TieWordEmbeddings = false }, includeLmHead: true)
            .Where(t => !(layout.Tied && t.Name == LlamaCheckpoint.LmHeadName))
            .Select(t => (t.Name, layout.Dtype, t.Shape)).ToList();
        var shapes = tensors.ToDictionary(t => t.Name, t => t.Shape, StringComparer.Ordinal);
        // Tensors are generated one at a time, in stream order, as the files are written: memory holds one tensor, not the model.
        void Generate(string name, Stream destination)
        {
            var shape = shapes[name];
            long count = shape.Aggregate(1L, (a, b) => a * b);
            var data = new byte[count * TensorDtypeInfo.SizeOf(layout.Dtype)];
            bool isNorm = name.EndsWith("layernorm.weight", StringComparison.Ordinal) || name.EndsWith("_norm.weight", StringComparison.Ordinal)
                || name == LlamaCheckpoint.FinalNormName;
            int log2 = name == LlamaCheckpoint.EmbeddingName ? rule.EmbeddingLog2 : name == LlamaCheckpoint.LmHeadName ? rule.LmHeadLog2
                : name.EndsWith(".bias", StringComparison.Ordinal) ? rule.BiasLog2 : rule.LinearLog2;
            for (long i = 0; i < count; i++)
            {
                uint r = rng.NextR();
                // value = numerator / 2^k, exact in every dtype used here.
                int numerator; int log2Denominator;
                if (isNorm) { numerator = 64 + (int)(r % 129); log2Denominator = 7; }
                else { numerator = (int)(r % 511) - 255; log2Denominator = log2; }
                WriteExact(layout.Dtype, data, i, numerator, log2Denominator);
            }
            destination.Write(data);
        }

        string dtypeName = layout.Dtype switch { TensorDtype.BF16 => "bfloat16", TensorDtype.F16 => "float16", _ => "float32" };
        File.WriteAllText(Path.Combine(folder, "config.json"), (config with { TieWordEmbeddings = layout.Tied }).ToJson(dtypeName));
        if (layout.Shards <= 1)
        {
            SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), tensors, Generate);
        }
        else
        {
            int per = (tensors.Count + layout.Shards - 1) / layout.Shards;
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int s = 0; s < layout.Shards; s++)
            {
                string file = $"model-{s + 1:D5}-of-{layout.Shards:D5}.safetensors";
                var part = tensors.Skip(s * per).Take(per).ToList();
                SafetensorsWriter.Write(Path.Combine(folder, file), part, Generate);
                foreach (var t in part) weightMap[t.Name] = file;
            }
            var index = new Dictionary<string, object>
            {
                ["metadata"] = new Dictionary<string, long> { ["total_size"] = TotalBytes(config, layout) },
                ["weight_map"] = weightMap,
            };
            File.WriteAllText(Path.Combine(folder, "model.safetensors.index.json"),
                System.Text.Json.JsonSerializer.Serialize(index, new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        }
        if (tokenizerModelPath != null) File.Copy(tokenizerModelPath, Path.Combine(folder, "tokenizer.model"), overwrite: true);
    }

    /// <summary>The weight bytes <see cref="Write"/> writes for this config and layout (checked: a shape that overflows throws).</summary>
    public static long TotalBytes(LlamaConfig config, SeededCheckpointLayout layout) =>
        LlamaCheckpoint.ExpectedTensors(config with { TieWordEmbeddings = false }, includeLmHead: !layout.Tied)
            .Sum(t => SafetensorsWriter.ByteLength(layout.Dtype, t.Shape));

    private static void WriteExact(TensorDtype dtype, byte[] data, long index, int numerator, int log2Denominator)
    {
        switch (dtype)
        {
            case TensorDtype.BF16:
                BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan((int)(index * 2)), (ushort)(BitConverter.SingleToUInt32Bits(Scale(numerator, log2Denominator)) >> 16));
                break;
            case TensorDtype.F16:
                BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan((int)(index * 2)), BitConverter.HalfToUInt16Bits((Half)Scale(numerator, log2Denominator)));
                break;
            default:
                BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan((int)(index * 4)), BitConverter.SingleToUInt32Bits(Scale(numerator, log2Denominator)));
                break;
        }
    }

    // Exact: a 9-bit integer times a power of two is representable in float32, bf16 (8 bits: the
    // rule's values have at most 8 significant bits) and f16 (normal range for these magnitudes).
    private static float Scale(int numerator, int log2Denominator) => MathF.ScaleB(numerator, -log2Denominator);
}
