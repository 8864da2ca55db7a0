using System.Text.Json;

namespace GpuIntLab.Core.Models;

/// <summary>
/// The hyper-parameters of an HF <c>LlamaForCausalLM</c> checkpoint, read from <c>config.json</c>.
/// Only plain Llama is accepted (silu MLP, no biases, no RoPE scaling): anything else is refused with
/// a message naming the file and the field rather than run with silently wrong math.
/// </summary>
public sealed record LlamaConfig
{
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int VocabSize { get; init; }
    public required int MaxPositionEmbeddings { get; init; }
    /// <summary>Epsilon of RMSNorm as the config states it (a decimal/double value; engines convert it at load).</summary>
    public required double RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    public int BosTokenId { get; init; } = 1;
    public int EosTokenId { get; init; } = 2;
    public string? TorchDtype { get; init; }

    public int HeadDim => HiddenSize / NumAttentionHeads;
    public int KvDim => HeadDim * NumKeyValueHeads;
    /// <summary>Query heads that share one key/value head (grouped-query attention).</summary>
    public int GroupSize => NumAttentionHeads / NumKeyValueHeads;

    public long ParameterCount =>
        (long)VocabSize * HiddenSize * (TieWordEmbeddings ? 1 : 2)
        + HiddenSize
        + (long)NumHiddenLayers * (2L * HiddenSize
            + (long)HiddenSize * HiddenSize * 2 + 2L * HiddenSize * KvDim
            + 3L * HiddenSize * IntermediateSize);

    public static LlamaConfig Load(string path)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"{path}: file not found (a model folder needs config.json)");
        string text;
        try { text = File.ReadAllText(path); }
        catch (IOException e) { throw new ModelLoadException($"{path}: cannot read: {e.Message}", e); }
        return Parse(text, path);
    }

    public static LlamaConfig Parse(string json, string path)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new ModelLoadException($"{path}: not valid JSON ({e.Message})", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ModelLoadException($"{path}: not a JSON object");

            bool isLlama = root.TryGetProperty("architectures", out var arch) && arch.ValueKind == JsonValueKind.Array
                && arch.EnumerateArray().Any(a => a.ValueKind == JsonValueKind.String && a.GetString() == "LlamaForCausalLM");
            string? modelType = root.TryGetProperty("model_type", out var mt) && mt.ValueKind == JsonValueKind.String ? mt.GetString() : null;
            if (!isLlama && modelType != "llama")
            {
                string archText = root.TryGetProperty("architectures", out var a2) ? a2.ToString() : "(none)";
                throw new ModelLoadException($"{path}: unsupported architecture {archText} (model_type {modelType ?? "(none)"}): only LlamaForCausalLM is supported");
            }

            int Int(string name)
            {
                if (!root.TryGetProperty(name, out var v)) throw new ModelLoadException($"{path}: missing field '{name}'");
                if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i) || i <= 0)
                    throw new ModelLoadException($"{path}: field '{name}' must be a positive integer, got {v}");
                return i;
            }
            double Real(string name, double? fallback)
            {
                if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
                    return fallback ?? throw new ModelLoadException($"{path}: missing field '{name}'");
                if (v.ValueKind != JsonValueKind.Number || !(v.GetDouble() > 0))
                    throw new ModelLoadException($"{path}: field '{name}' must be a positive number, got {v}");
                return v.GetDouble();
            }
            bool Bool(string name, bool fallback) =>
                root.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;
            int? OptInt(string name) =>
                root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : null;

            if (root.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind != JsonValueKind.Null)
                throw new ModelLoadException($"{path}: rope_scaling {rs} is not supported (plain RoPE only)");
            if (root.TryGetProperty("hidden_act", out var act) && act.GetString() != "silu")
                throw new ModelLoadException($"{path}: hidden_act '{act}' is not supported (silu only)");
            if (Bool("attention_bias", false)) throw new ModelLoadException($"{path}: attention_bias true is not supported");
            if (Bool("mlp_bias", false)) throw new ModelLoadException($"{path}: mlp_bias true is not supported");

            int heads = Int("num_attention_heads");
            var config = new LlamaConfig
            {
                HiddenSize = Int("hidden_size"),
                IntermediateSize = Int("intermediate_size"),
                NumAttentionHeads = heads,
                NumKeyValueHeads = OptInt("num_key_value_heads") ?? heads,
                NumHiddenLayers = Int("num_hidden_layers"),
                VocabSize = Int("vocab_size"),
                MaxPositionEmbeddings = Int("max_position_embeddings"),
                RmsNormEps = Real("rms_norm_eps", 1e-6),
                RopeTheta = Real("rope_theta", 10000.0),
                TieWordEmbeddings = Bool("tie_word_embeddings", false),
                BosTokenId = OptInt("bos_token_id") ?? 1,
                EosTokenId = OptInt("eos_token_id") ?? 2,
                TorchDtype = root.TryGetProperty("torch_dtype", out var td) && td.ValueKind == JsonValueKind.String ? td.GetString() : null,
            };
            if (config.HiddenSize % heads != 0)
                throw new ModelLoadException($"{path}: hidden_size {config.HiddenSize} is not a multiple of num_attention_heads {heads}");
            if (config.NumKeyValueHeads <= 0 || heads % config.NumKeyValueHeads != 0)
                throw new ModelLoadException($"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {config.NumKeyValueHeads}");
            if (config.HeadDim % 2 != 0)
                throw new ModelLoadException($"{path}: head dimension {config.HeadDim} must be even for RoPE");
            return config;
        }
    }

    /// <summary>Writes the HF-style config.json for this configuration.</summary>
    public string ToJson(string torchDtype)
    {
        var o = new Dictionary<string, object?>
        {
            ["architectures"] = new[] { "LlamaForCausalLM" },
            ["model_type"] = "llama",
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
            ["num_hidden_layers"] = NumHiddenLayers,
            ["vocab_size"] = VocabSize,
            ["max_position_embeddings"] = MaxPositionEmbeddings,
            ["rms_norm_eps"] = RmsNormEps,
            ["rope_theta"] = RopeTheta,
            ["rope_scaling"] = null,
            ["hidden_act"] = "silu",
            ["attention_bias"] = false,
            ["mlp_bias"] = false,
            ["tie_word_embeddings"] = TieWordEmbeddings,
            ["bos_token_id"] = BosTokenId,
            ["eos_token_id"] = EosTokenId,
            ["torch_dtype"] = torchDtype,
        };
        return JsonSerializer.Serialize(o, new JsonSerializerOptions { WriteIndented = true });
    }
}
