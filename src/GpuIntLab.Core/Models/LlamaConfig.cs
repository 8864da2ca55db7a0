using System.Text.Json;

namespace GpuIntLab.Core.Models;

/// <summary>The architectures that share the Llama step (each adds at most a feature to it).</summary>
public enum ModelFamily
{
    /// <summary>LlamaForCausalLM: Llama 2, TinyLlama, Llama 3.x (llama3 RoPE scaling), SmolLM2.</summary>
    Llama,
    /// <summary>Qwen2ForCausalLM (Qwen2, Qwen2.5): q/k/v projections with bias.</summary>
    Qwen2,
    /// <summary>Qwen3ForCausalLM: per-head RMSNorm of q and k (q_norm, k_norm) before RoPE.</summary>
    Qwen3,
    /// <summary>MistralForCausalLM: Llama math; a sliding window shorter than the context is refused.</summary>
    Mistral,
}

/// <summary>
/// The hyper-parameters of an HF checkpoint of a Llama-family model, read from <c>config.json</c> in the form
/// transformers v4 writes (<c>rope_theta</c>, <c>rope_scaling</c>, <c>torch_dtype</c>) or v5 writes
/// (<c>rope_parameters</c>, <c>dtype</c>). Every value the math depends on is read or refused: nothing the model
/// needs is silently defaulted. The few documented defaults are transformers' own (<c>head_dim</c> =
/// hidden/heads, <c>num_key_value_heads</c> = heads, <c>tie_word_embeddings</c> false, no BOS/EOS when absent).
/// Anything the step cannot compute (other architectures, biases on the MLP, other RoPE rewrites, a sliding
/// window shorter than the context, soft-capping) is refused with one message naming the file and the field.
/// </summary>
public sealed record LlamaConfig
{
    public ModelFamily Family { get; init; } = ModelFamily.Llama;
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
    /// <summary>The RoPE frequency rewrite (Llama 3.x), or null for plain RoPE.</summary>
    public RopeScaling? RopeScaling { get; init; }
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>BOS id, or null when the model has none (Qwen prompts get no BOS).</summary>
    public int? BosTokenId { get; init; } = 1;
    private readonly TokenIdList _eosTokenIds = new([2]);
    /// <summary>End-of-sequence ids (Llama 3.2 has three); empty when the config names none. Compared by value.</summary>
    public IReadOnlyList<int> EosTokenIds { get => _eosTokenIds; init => _eosTokenIds = new TokenIdList(value); }
    public string? TorchDtype { get; init; }

    private readonly int? _headDim;
    /// <summary>Width of one attention head: the <c>head_dim</c> field, else hidden/heads (transformers' rule).</summary>
    public int HeadDim { get => _headDim ?? HiddenSize / NumAttentionHeads; init => _headDim = value; }

    /// <summary>Bias on q_proj, k_proj and v_proj (Qwen2 always; Llama with attention_bias).</summary>
    public bool QkvBias { get; init; }
    /// <summary>Bias on o_proj (Llama with attention_bias; never Qwen2).</summary>
    public bool OutputBias { get; init; }
    /// <summary>Per-head RMSNorm of q and k over head_dim before RoPE (Qwen3).</summary>
    public bool QkNorm { get; init; }

    /// <summary>Width of all query heads together (hidden_size except where head_dim says otherwise, e.g. Qwen3).</summary>
    public int QDim => HeadDim * NumAttentionHeads;
    public int KvDim => HeadDim * NumKeyValueHeads;
    /// <summary>Query heads that share one key/value head (grouped-query attention).</summary>
    public int GroupSize => NumAttentionHeads / NumKeyValueHeads;
    /// <summary>The first end-of-sequence id (generation stops at any of <see cref="EosTokenIds"/>), or null.</summary>
    public int? EosTokenId => EosTokenIds.Count > 0 ? EosTokenIds[0] : null;

    public long ParameterCount =>
        (long)VocabSize * HiddenSize * (TieWordEmbeddings ? 1 : 2)
        + HiddenSize
        + (long)NumHiddenLayers * (2L * HiddenSize
            + 2L * HiddenSize * QDim + 2L * HiddenSize * KvDim
            + 3L * HiddenSize * IntermediateSize
            + (QkvBias ? QDim + 2L * KvDim : 0) + (OutputBias ? HiddenSize : 0) + (QkNorm ? 2L * HeadDim : 0));

    /// <summary>Upper bound on max_position_embeddings (the RoPE tables and KV caches are sized from it lazily, but positions are int).</summary>
    public const int MaxContext = 1 << 24;

    public static LlamaConfig Load(string path)
    {
        if (!File.Exists(path)) throw new ModelLoadException($"{path}: file not found (a model folder needs config.json)");
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ModelLoadException($"{path}: cannot read: {e.Message}", e); }
        return Parse(text, path);
    }

    private static readonly Dictionary<string, (string ModelType, ModelFamily Family)> s_architectures = new(StringComparer.Ordinal)
    {
        ["LlamaForCausalLM"] = ("llama", ModelFamily.Llama),
        ["Qwen2ForCausalLM"] = ("qwen2", ModelFamily.Qwen2),
        ["Qwen3ForCausalLM"] = ("qwen3", ModelFamily.Qwen3),
        ["MistralForCausalLM"] = ("mistral", ModelFamily.Mistral),
    };

    /// <summary>The architectures this lab runs, for messages and the README.</summary>
    public static IEnumerable<string> SupportedArchitectures => s_architectures.Keys;

    public static LlamaConfig Parse(string json, string path)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new ModelLoadException($"{path}: not valid JSON ({e.Message.Split('\n')[0]})", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ModelLoadException($"{path}: not a JSON object");
            if (JsonStrings.FirstUndecodable(root) is string undecodable) throw new ModelLoadException($"{path}: {undecodable} is not valid Unicode text (a lone surrogate escape)");
            ModelLoadException Bad(string field, string problem) => new($"{path}: field '{field}' {problem}");
            JsonElement? Field(JsonElement obj, string name) =>
                obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

            // Architecture: the architectures list and model_type must name the same supported family.
            string? archName = null;
            if (Field(root, "architectures") is { } archs)
            {
                if (archs.ValueKind != JsonValueKind.Array || archs.GetArrayLength() != 1 || archs[0].ValueKind != JsonValueKind.String)
                    throw Bad("architectures", $"must be a list of one architecture name, got {Short(archs)}");
                archName = archs[0].GetString()!;
            }
            string? modelType = null;
            if (Field(root, "model_type") is { } mt)
            {
                if (mt.ValueKind != JsonValueKind.String) throw Bad("model_type", $"must be a string, got {Short(mt)}");
                modelType = mt.GetString();
            }
            string supported = string.Join(", ", s_architectures.Keys);
            ModelFamily family;
            if (archName != null)
            {
                if (!s_architectures.TryGetValue(archName, out var known))
                    throw new ModelLoadException($"{path}: unsupported architecture '{archName}' (supported: {supported})");
                if (modelType != null && modelType != known.ModelType)
                    throw Bad("model_type", $"is '{modelType}' but architectures names {archName} (model_type '{known.ModelType}')");
                family = known.Family;
            }
            else if (modelType != null)
            {
                var match = s_architectures.Values.Where(v => v.ModelType == modelType).ToList();
                if (match.Count == 0) throw new ModelLoadException($"{path}: unsupported model_type '{modelType}' (supported: {supported})");
                family = match[0].Family;
            }
            else throw new ModelLoadException($"{path}: neither 'architectures' nor 'model_type' is given (supported: {supported})");

            int Int(JsonElement obj, string name, string display, int min, int max, int? fallback = null)
            {
                if (Field(obj, name) is not { } v)
                    return fallback ?? throw new ModelLoadException($"{path}: missing field '{display}'");
                if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long i))
                    throw Bad(display, $"must be an integer, got {Short(v)}");
                if (i < min || i > max) throw Bad(display, $"must be in [{min}, {max}], got {i}");
                return (int)i;
            }
            double Real(JsonElement obj, string name, string display, double minExclusive, double max)
            {
                if (Field(obj, name) is not { } v) throw new ModelLoadException($"{path}: missing field '{display}'");
                if (v.ValueKind != JsonValueKind.Number) throw Bad(display, $"must be a number, got {Short(v)}");
                double d = v.GetDouble();
                if (!(d > minExclusive && d <= max)) throw Bad(display, $"must be in ({minExclusive}, {max}], got {Short(v)}");
                return d;
            }
            bool? Bool(string name)
            {
                if (Field(root, name) is not { } v) return null;
                if (v.ValueKind is not (JsonValueKind.True or JsonValueKind.False)) throw Bad(name, $"must be true or false, got {Short(v)}");
                return v.GetBoolean();
            }
            int? TokenId(string name)
            {
                if (Field(root, name) is not { } v) return null;
                if (v.ValueKind == JsonValueKind.Array)
                    throw Bad(name, "must be one token id here (a list is only allowed for eos_token_id)");
                return Int(root, name, name, 0, int.MaxValue);
            }

            if (Field(root, "hidden_act") is { } act && (act.ValueKind != JsonValueKind.String || act.GetString() != "silu"))
                throw Bad("hidden_act", $"is {Short(act)}: only \"silu\" is supported");
            if (Bool("mlp_bias") == true) throw Bad("mlp_bias", "is true: biases on the MLP projections are not supported");
            foreach (var softCap in new[] { "final_logit_softcapping", "attn_logit_softcapping" })
                if (Field(root, softCap) is { } cap) throw Bad(softCap, $"is {Short(cap)}: logit soft-capping is not supported");
            if (Field(root, "partial_rotary_factor") is { } prf && !(prf.ValueKind == JsonValueKind.Number && prf.GetDouble() == 1.0))
                throw Bad("partial_rotary_factor", $"is {Short(prf)}: only full rotary embeddings (1.0) are supported");

            int heads = Int(root, "num_attention_heads", "num_attention_heads", 1, 1 << 16);
            int hidden = Int(root, "hidden_size", "hidden_size", 1, 1 << 20);
            int maxPositions = Int(root, "max_position_embeddings", "max_position_embeddings", 1, MaxContext);

            // RoPE: v5 puts theta and the rewrite in rope_parameters; v4 has rope_theta and rope_scaling.
            JsonElement? ropeParameters = Field(root, "rope_parameters");
            if (ropeParameters is { ValueKind: not JsonValueKind.Object } rpBad) throw Bad("rope_parameters", $"must be an object, got {Short(rpBad)}");
            double theta = ropeParameters is { } rp && Field(rp, "rope_theta") != null
                ? Real(rp, "rope_theta", "rope_parameters.rope_theta", 1, 1e18)
                : Field(root, "rope_theta") != null ? Real(root, "rope_theta", "rope_theta", 1, 1e18)
                : throw new ModelLoadException($"{path}: missing field 'rope_theta' (nor rope_parameters.rope_theta): the RoPE base must be stated, not assumed");
            RopeScaling? scaling = null;
            var (scalingObject, scalingField) = Field(root, "rope_scaling") is { } rs ? (rs, "rope_scaling") : ropeParameters is { } rp2 ? (rp2, "rope_parameters") : ((JsonElement?)null, "");
            if (scalingObject is { } so)
            {
                if (so.ValueKind != JsonValueKind.Object) throw Bad(scalingField, $"must be an object or null, got {Short(so)}");
                string typeKey = Field(so, "rope_type") != null ? "rope_type" : "type";
                string? type = Field(so, typeKey) is { ValueKind: JsonValueKind.String } t ? t.GetString() : null;
                if (type == null && scalingField == "rope_scaling") throw Bad("rope_scaling.rope_type", "is missing");
                if (type is "llama3")
                {
                    try
                    {
                        scaling = RopeScaling.Create(RopeScaling.Llama3Type, Real(so, "factor", $"{scalingField}.factor", 0, 1e6), Real(so, "low_freq_factor", $"{scalingField}.low_freq_factor", 0, 1e6),
                            Real(so, "high_freq_factor", $"{scalingField}.high_freq_factor", 0, 1e6),
                            Int(so, "original_max_position_embeddings", $"{scalingField}.original_max_position_embeddings", 1, MaxContext));
                    }
                    catch (ArgumentException e) { throw Bad(scalingField, e.Message); }
                }
                else if (type is not (null or "default"))
                    throw Bad($"{scalingField}.{typeKey}", $"is '{type}': only 'default' and 'llama3' RoPE are supported");
            }

            // Sliding windows: harmless only when no layer uses one or the window covers the whole context.
            if (family == ModelFamily.Qwen2 || family == ModelFamily.Qwen3)
            {
                if (Bool("use_sliding_window") == true)
                    throw Bad("use_sliding_window", "is true: sliding-window attention is not supported (every released Qwen2.5/Qwen3 sets it false)");
            }
            else if (Field(root, "sliding_window") != null)
            {
                int w = Int(root, "sliding_window", "sliding_window", 1, int.MaxValue);
                if (w < maxPositions)
                    throw Bad("sliding_window", $"is {w}, shorter than max_position_embeddings {maxPositions}: sliding-window attention is not supported (lower max_position_embeddings to {w} to run within the window)");
            }

            bool attentionBias = Bool("attention_bias") ?? false;
            if (family == ModelFamily.Qwen2 && attentionBias)
                throw Bad("attention_bias", "is true, but Qwen2 has a fixed bias layout (q/k/v only): remove the field or set it false");
            var eos = new List<int>();
            if (Field(root, "eos_token_id") is { } eosField)
            {
                if (eosField.ValueKind == JsonValueKind.Array)
                {
                    foreach (var e in eosField.EnumerateArray())
                        eos.Add(e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id) && id >= 0 ? id : throw Bad("eos_token_id", $"must hold token ids, got {Short(e)}"));
                }
                else eos.Add(Int(root, "eos_token_id", "eos_token_id", 0, int.MaxValue));
            }
            string? dtype = null;
            foreach (var name in new[] { "torch_dtype", "dtype" })
                if (Field(root, name) is { } dt)
                {
                    if (dt.ValueKind != JsonValueKind.String) throw Bad(name, $"must be a string, got {Short(dt)}");
                    dtype ??= dt.GetString();
                }

            var config = new LlamaConfig
            {
                Family = family,
                HiddenSize = hidden,
                IntermediateSize = Int(root, "intermediate_size", "intermediate_size", 1, 1 << 22),
                NumAttentionHeads = heads,
                NumKeyValueHeads = Int(root, "num_key_value_heads", "num_key_value_heads", 1, heads, fallback: heads),
                NumHiddenLayers = Int(root, "num_hidden_layers", "num_hidden_layers", 1, 4096),
                VocabSize = Int(root, "vocab_size", "vocab_size", 1, 1 << 24),
                MaxPositionEmbeddings = maxPositions,
                RmsNormEps = Real(root, "rms_norm_eps", "rms_norm_eps", 0, 1),
                RopeTheta = theta,
                RopeScaling = scaling,
                TieWordEmbeddings = Bool("tie_word_embeddings") ?? false,
                BosTokenId = TokenId("bos_token_id"),
                EosTokenIds = eos,
                TorchDtype = dtype,
                QkvBias = family == ModelFamily.Qwen2 || attentionBias,
                OutputBias = family != ModelFamily.Qwen2 && attentionBias,
                QkNorm = family == ModelFamily.Qwen3,
            };
            // head_dim is stored only when the file states it, so a config equals the one it was written from.
            if (Field(root, "head_dim") != null) config = config with { HeadDim = Int(root, "head_dim", "head_dim", 2, 1024) };
            if (Field(root, "head_dim") == null && hidden % heads != 0)
                throw new ModelLoadException($"{path}: hidden_size {hidden} is not a multiple of num_attention_heads {heads} (and no head_dim is given)");
            if (heads % config.NumKeyValueHeads != 0)
                throw new ModelLoadException($"{path}: num_attention_heads {heads} is not a multiple of num_key_value_heads {config.NumKeyValueHeads}");
            if (config.HeadDim % 2 != 0)
                throw Bad("head_dim", $"is {config.HeadDim}: the head dimension must be even for RoPE");
            if ((long)config.QDim * hidden > int.MaxValue || (long)config.IntermediateSize * hidden > int.MaxValue || (long)config.VocabSize * hidden > int.MaxValue)
                throw new ModelLoadException($"{path}: a weight matrix of this config has more than 2^31-1 elements (hidden_size {hidden}, intermediate_size {config.IntermediateSize}, vocab_size {config.VocabSize})");
            if (config.BosTokenId is int bos && bos >= config.VocabSize) throw Bad("bos_token_id", $"is {bos}, outside the vocabulary [0, {config.VocabSize})");
            foreach (int e in eos) if (e >= config.VocabSize) throw Bad("eos_token_id", $"holds {e}, outside the vocabulary [0, {config.VocabSize})");
            return config;
        }
    }

    private static string Short(JsonElement v)
    {
        string text = v.GetRawText();
        return text.Length <= 60 ? text : text[..57] + "...";
    }

    /// <summary>Writes the HF-style config.json (transformers v4 form) for this configuration.</summary>
    public string ToJson(string torchDtype)
    {
        var (architecture, modelType) = Family switch
        {
            ModelFamily.Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
            ModelFamily.Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
            ModelFamily.Mistral => ("MistralForCausalLM", "mistral"),
            _ => ("LlamaForCausalLM", "llama"),
        };
        var o = new Dictionary<string, object?>
        {
            ["architectures"] = new[] { architecture },
            ["model_type"] = modelType,
            ["hidden_size"] = HiddenSize,
            ["intermediate_size"] = IntermediateSize,
            ["num_attention_heads"] = NumAttentionHeads,
            ["num_key_value_heads"] = NumKeyValueHeads,
        };
        if (_headDim != null) o["head_dim"] = HeadDim;
        o["num_hidden_layers"] = NumHiddenLayers;
        o["vocab_size"] = VocabSize;
        o["max_position_embeddings"] = MaxPositionEmbeddings;
        o["rms_norm_eps"] = RmsNormEps;
        o["rope_theta"] = RopeTheta;
        o["rope_scaling"] = RopeScaling is { } s
            ? new Dictionary<string, object> { ["factor"] = s.Factor, ["low_freq_factor"] = s.LowFreqFactor, ["high_freq_factor"] = s.HighFreqFactor,
                ["original_max_position_embeddings"] = s.OriginalMaxPositionEmbeddings, ["rope_type"] = s.Type }
            : null;
        o["hidden_act"] = "silu";
        if (Family != ModelFamily.Qwen2) o["attention_bias"] = QkvBias;
        if (Family is ModelFamily.Llama or ModelFamily.Mistral) o["mlp_bias"] = false;
        if (Family is ModelFamily.Qwen2 or ModelFamily.Qwen3) o["use_sliding_window"] = false;
        o["tie_word_embeddings"] = TieWordEmbeddings;
        o["bos_token_id"] = BosTokenId;
        o["eos_token_id"] = EosTokenIds.Count == 1 ? EosTokenIds[0] : EosTokenIds.Count == 0 ? null : EosTokenIds;
        o["torch_dtype"] = torchDtype;
        return JsonSerializer.Serialize(o, new JsonSerializerOptions { WriteIndented = true });
    }
}

/// <summary>A list of token ids with value equality, so configs holding one compare by their contents.</summary>
public sealed class TokenIdList(IEnumerable<int> ids) : IReadOnlyList<int>, IEquatable<TokenIdList>
{
    private readonly int[] _ids = ids.ToArray();
    public int this[int index] => _ids[index];
    public int Count => _ids.Length;
    public IEnumerator<int> GetEnumerator() => ((IEnumerable<int>)_ids).GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    public bool Equals(TokenIdList? other) => other is not null && _ids.AsSpan().SequenceEqual(other._ids);
    public override bool Equals(object? obj) => Equals(obj as TokenIdList);
    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (int id in _ids) hash.Add(id);
        return hash.ToHashCode();
    }
    public override string ToString() => "[" + string.Join(", ", _ids) + "]";
}
