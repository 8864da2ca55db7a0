using System.Text.Json;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Tokenization;

namespace GpuIntLab.Core.Models;

/// <summary>The tensors of one transformer block, by their HF names, in the order HF writes them.</summary>
public enum LayerWeight
{
    InputNorm,
    Q,
    /// <summary>q_proj bias (Qwen2; Llama with attention_bias).</summary>
    QBias,
    K,
    KBias,
    V,
    VBias,
    O,
    /// <summary>o_proj bias (Llama with attention_bias only).</summary>
    OBias,
    /// <summary>Per-head RMSNorm weight of q over head_dim (Qwen3).</summary>
    QNorm,
    KNorm,
    PostAttentionNorm,
    Gate,
    Up,
    Down,
}

/// <summary>
/// An HF Llama folder: <c>config.json</c>, one or more <c>*.safetensors</c> (sharded through
/// <c>model.safetensors.index.json</c>) and usually <c>tokenizer.model</c>. Tensors stay memory-mapped;
/// every expected tensor is checked for presence, shape and dtype against the config at open time,
/// so an engine never meets a malformed weight halfway through a forward pass.
/// </summary>
public sealed class LlamaCheckpoint : IDisposable
{
    private readonly List<ITensorStore> _files;
    private readonly Dictionary<string, (TensorInfo Info, ITensorStore File)> _tensors;

    /// <summary>The model folder, or the native .q48 file.</summary>
    public string Folder { get; }
    public LlamaConfig Config { get; }
    /// <summary>The config.json text as the model ships it.</summary>
    public string ConfigJson { get; }
    /// <summary>Path of tokenizer.model, or null when the folder has none (or the model is a native file).</summary>
    public string? TokenizerPath { get; }
    /// <summary>tokenizer.model bytes embedded in a native file, or null.</summary>
    public byte[]? TokenizerModel { get; }
    public bool IsNative { get; }

    private LlamaCheckpoint(string folder, LlamaConfig config, string configJson, List<ITensorStore> files, byte[]? embeddedTokenizer = null)
    {
        Folder = folder;
        Config = config;
        ConfigJson = configJson;
        _files = files;
        _tensors = new Dictionary<string, (TensorInfo, ITensorStore)>(StringComparer.Ordinal);
        foreach (var f in files)
            foreach (var t in f.Tensors.Values)
                if (!_tensors.TryAdd(t.Name, (t, f)))
                    throw new ModelLoadException($"{f.Path}: tensor '{t.Name}' also appears in {_tensors[t.Name].File.Path}");
        IsNative = files.Count == 1 && files[0] is NativeModelFile;
        TokenizerModel = embeddedTokenizer;
        string tok = Path.Combine(folder, "tokenizer.model");
        TokenizerPath = !IsNative && File.Exists(tok) ? tok : null;
    }

    /// <summary>
    /// The model's tokenizer, or null: tokenizer.model or tokenizer.json beside the weights (see
    /// <see cref="TokenizerLoader.FindTokenizerFile"/>), or the tokenizer.model embedded in a native file.
    /// </summary>
    public ITokenizer? LoadTokenizer()
    {
        var tokenizer = TokenizerModel != null ? LlamaTokenizer.FromBytes(TokenizerModel, sourceName: Folder + " (embedded tokenizer.model)")
            : IsNative ? null
            : TokenizerLoader.TryLoad(Folder);
        if (tokenizer != null) CheckVocabulary(tokenizer);
        return tokenizer;
    }

    /// <summary>
    /// A tokenizer that can produce ids the model has no row for is the wrong tokenizer: refused here, not mid-generation.
    /// A SentencePiece model must match the vocabulary exactly; a tokenizer.json may be smaller (Qwen pads its embedding
    /// to 151936 rows for 151669 tokens).
    /// </summary>
    private void CheckVocabulary(ITokenizer tokenizer)
    {
        bool sentencePiece = tokenizer is LlamaTokenizer;
        if (tokenizer.VocabSize > Config.VocabSize || (sentencePiece && tokenizer.VocabSize != Config.VocabSize))
            throw new ModelLoadException($"{Folder}: the tokenizer has {tokenizer.VocabSize} tokens but config.json's vocab_size is {Config.VocabSize}: they belong to different models");
    }

    public static string LayerTensorName(int layer, LayerWeight w) => $"model.layers.{layer}." + w switch
    {
        LayerWeight.InputNorm => "input_layernorm.weight",
        LayerWeight.Q => "self_attn.q_proj.weight",
        LayerWeight.QBias => "self_attn.q_proj.bias",
        LayerWeight.K => "self_attn.k_proj.weight",
        LayerWeight.KBias => "self_attn.k_proj.bias",
        LayerWeight.V => "self_attn.v_proj.weight",
        LayerWeight.VBias => "self_attn.v_proj.bias",
        LayerWeight.O => "self_attn.o_proj.weight",
        LayerWeight.OBias => "self_attn.o_proj.bias",
        LayerWeight.QNorm => "self_attn.q_norm.weight",
        LayerWeight.KNorm => "self_attn.k_norm.weight",
        LayerWeight.PostAttentionNorm => "post_attention_layernorm.weight",
        LayerWeight.Gate => "mlp.gate_proj.weight",
        LayerWeight.Up => "mlp.up_proj.weight",
        LayerWeight.Down => "mlp.down_proj.weight",
        _ => throw new ArgumentOutOfRangeException(nameof(w)),
    };

    public const string EmbeddingName = "model.embed_tokens.weight";
    public const string FinalNormName = "model.norm.weight";
    public const string LmHeadName = "lm_head.weight";

    /// <summary>The expected shape of a layer weight, [out, in] for linear layers as HF stores them.</summary>
    public static int[] ExpectedShape(LlamaConfig c, LayerWeight w) => w switch
    {
        LayerWeight.InputNorm or LayerWeight.PostAttentionNorm or LayerWeight.OBias => [c.HiddenSize],
        LayerWeight.Q => [c.QDim, c.HiddenSize],
        LayerWeight.QBias => [c.QDim],
        LayerWeight.K or LayerWeight.V => [c.KvDim, c.HiddenSize],
        LayerWeight.KBias or LayerWeight.VBias => [c.KvDim],
        LayerWeight.O => [c.HiddenSize, c.QDim],
        LayerWeight.QNorm or LayerWeight.KNorm => [c.HeadDim],
        LayerWeight.Gate or LayerWeight.Up => [c.IntermediateSize, c.HiddenSize],
        LayerWeight.Down => [c.HiddenSize, c.IntermediateSize],
        _ => throw new ArgumentOutOfRangeException(nameof(w)),
    };

    /// <summary>Whether a block of this config has the tensor (biases and q/k norms depend on the family).</summary>
    public static bool HasLayerWeight(LlamaConfig c, LayerWeight w) => w switch
    {
        LayerWeight.QBias or LayerWeight.KBias or LayerWeight.VBias => c.QkvBias,
        LayerWeight.OBias => c.OutputBias,
        LayerWeight.QNorm or LayerWeight.KNorm => c.QkNorm,
        _ => true,
    };

    /// <summary>Every tensor the model needs, with its expected shape, in HF order.</summary>
    public static IEnumerable<(string Name, int[] Shape)> ExpectedTensors(LlamaConfig c, bool includeLmHead)
    {
        yield return (EmbeddingName, [c.VocabSize, c.HiddenSize]);
        for (int l = 0; l < c.NumHiddenLayers; l++)
            foreach (var w in Enum.GetValues<LayerWeight>())
                if (HasLayerWeight(c, w)) yield return (LayerTensorName(l, w), ExpectedShape(c, w));
        yield return (FinalNormName, [c.HiddenSize]);
        if (includeLmHead) yield return (LmHeadName, [c.VocabSize, c.HiddenSize]);
    }

    /// <summary>Opens an HF model folder or a native .q48 file.</summary>
    public static LlamaCheckpoint Open(string folder)
    {
        if (string.IsNullOrWhiteSpace(folder)) throw new ModelLoadException("model folder not given");
        if (File.Exists(folder))
        {
            if (!NativeModelFile.IsNativeFile(folder))
                throw new ModelLoadException($"{folder}: expected a model folder (config.json + *.safetensors) or a native .q48 file, got another kind of file");
            var native = NativeModelFile.Open(folder);
            try
            {
                var nativeCheckpoint = new LlamaCheckpoint(folder, LlamaConfig.Parse(native.ConfigJson, folder + " (embedded config.json)"), native.ConfigJson, [native], native.TokenizerModel);
                nativeCheckpoint.Validate();
                return nativeCheckpoint;
            }
            catch { native.Dispose(); throw; }
        }
        if (!Directory.Exists(folder)) throw new ModelLoadException($"{folder}: model folder not found");
        string configPath = Path.Combine(folder, "config.json");
        var config = LlamaConfig.Load(configPath);

        var files = new List<ITensorStore>();
        try
        {
            foreach (var path in ShardPaths(folder)) files.Add(SafetensorsFile.Open(path));
            var checkpoint = new LlamaCheckpoint(folder, config, File.ReadAllText(configPath), files);
            checkpoint.Validate();
            return checkpoint;
        }
        catch
        {
            foreach (var f in files) f.Dispose();
            throw;
        }
    }

    private static List<string> ShardPaths(string folder)
    {
        string index = Path.Combine(folder, SafetensorsIndex.FileName);
        if (File.Exists(index)) return SafetensorsIndex.ShardPaths(folder, index);
        var all = Directory.GetFiles(folder, "*.safetensors").Order(StringComparer.Ordinal).ToList();
        if (all.Count == 0) throw new ModelLoadException($"{folder}: no *.safetensors file found");
        return all;
    }

    private void Validate()
    {
        bool hasLmHead = _tensors.ContainsKey(LmHeadName);
        if (!hasLmHead && !Config.TieWordEmbeddings)
            throw new ModelLoadException($"{Folder}: tensor '{LmHeadName}' is missing and config.json does not set tie_word_embeddings");
        // A file that holds an lm_head the config says to ignore would run a different model than it ships: refuse.
        if (hasLmHead && Config.TieWordEmbeddings)
            throw new ModelLoadException($"{_tensors[LmHeadName].File.Path}: tensor '{LmHeadName}' is present but config.json sets tie_word_embeddings true (the head would be dropped): fix one of them");
        var expected = ExpectedTensors(Config, includeLmHead: !Config.TieWordEmbeddings).ToList();
        foreach (var (name, shape) in expected)
        {
            if (!_tensors.TryGetValue(name, out var entry))
                throw new ModelLoadException($"{Folder}: tensor '{name}' is missing from the safetensors files");
            if (!entry.Info.Shape.SequenceEqual(shape))
                throw new ModelLoadException($"{entry.File.Path}: tensor '{name}' has shape {entry.Info.ShapeText} but config.json implies [{string.Join(", ", shape)}]");
        }
        // Tensors the config does not account for (more layers than num_hidden_layers, biases the family has none of,
        // q/k norms of another architecture) mean the config describes another model: refuse, naming one.
        var names = expected.Select(e => e.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var (name, entry) in _tensors.OrderBy(t => t.Key, StringComparer.Ordinal))
            if (!names.Contains(name) && !IgnorableTensor(name))
                throw new ModelLoadException($"{entry.File.Path}: tensor '{name}' is not part of the model config.json describes ({Config.Family}, {Config.NumHiddenLayers} layers, q/k/v bias {(Config.QkvBias ? "yes" : "no")}, q/k norm {(Config.QkNorm ? "yes" : "no")})");
    }

    /// <summary>Buffers some exporters save beside the weights (rotary inv_freq); they are recomputed, never read.</summary>
    private static bool IgnorableTensor(string name) => name.EndsWith(".rotary_emb.inv_freq", StringComparison.Ordinal);

    public TensorInfo Info(string name) =>
        _tensors.TryGetValue(name, out var e) ? e.Info : throw new ModelLoadException($"{Folder}: tensor '{name}' not found");

    /// <summary>The output projection: lm_head, or the embeddings when they are tied.</summary>
    public TensorInfo LmHead => Info(Config.TieWordEmbeddings ? EmbeddingName : LmHeadName);

    public TensorInfo Layer(int layer, LayerWeight w) => Info(LayerTensorName(layer, w));

    /// <summary>The layer tensor when this config has it (biases, q/k norms), else null.</summary>
    public TensorInfo? OptionalLayer(int layer, LayerWeight w) => HasLayerWeight(Config, w) ? Layer(layer, w) : null;

    public ReadOnlySpan<byte> Bytes(TensorInfo t) => _tensors[t.Name].File.GetBytes(t);

    public unsafe byte* Pointer(TensorInfo t) => _tensors[t.Name].File.GetPointer(t);

    /// <summary>Copies bytes of a tensor with a file read, bypassing the mapping (see <see cref="ITensorStore.Read"/>).</summary>
    public void ReadBytes(TensorInfo t, long offset, Span<byte> destination) => _tensors[t.Name].File.Read(t, offset, destination);

    /// <summary>The tensor as exact float64 values (boundary use: float64 engine, quantizers); a non-finite value is refused, naming the tensor.</summary>
    public double[] ReadDouble(TensorInfo t)
    {
        var result = new double[t.ElementCount];
        ExactConversion.ToDouble(t.Dtype, Bytes(t), result);
        for (long i = 0; i < result.LongLength; i++)
            if (!double.IsFinite(result[i]))
                throw new ModelLoadException($"{t.FilePath}: tensor '{t.Name}' element {i} is {result[i]}: weights must be finite");
        return result;
    }

    public float[] ReadSingle(TensorInfo t)
    {
        var d = ReadDouble(t);
        var f = new float[d.Length];
        for (int i = 0; i < d.Length; i++) f[i] = (float)d[i];
        return f;
    }

    /// <summary>The tensor as Q16.48 raws, converted exactly; a value out of range names the tensor and file.</summary>
    public long[] ReadQ48(TensorInfo t)
    {
        var result = new long[t.ElementCount];
        try { ExactConversion.ToQ48(t.Dtype, Bytes(t), result, t.Name); }
        catch (WeightRangeException e) { throw new ModelLoadException($"{t.FilePath}: {e.Message}", e); }
        return result;
    }

    public IEnumerable<TensorInfo> AllTensors => _tensors.Values.Select(v => v.Info);

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
