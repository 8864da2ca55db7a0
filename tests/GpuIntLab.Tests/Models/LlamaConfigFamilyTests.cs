using System.Text.Json.Nodes;
using GpuIntLab.Core.Models;
using Xunit;

namespace GpuIntLab.Tests.Models;

/// <summary>
/// config.json of every family in both transformers forms, and every refusal: each bad value gets one
/// ModelLoadException naming the file and the field, never a silent default.
/// </summary>
public class LlamaConfigFamilyTests
{
    private const string Path = "/models/x/config.json";

    /// <summary>Qwen2.5-0.5B's config as transformers v4 writes it (values from shared/research/model-families.md).</summary>
    private static JsonObject Qwen25() => JsonNode.Parse("""
        {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
         "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
         "max_window_layers": 21, "rope_theta": 1000000.0, "sliding_window": 32768, "use_sliding_window": false,
         "tie_word_embeddings": true, "vocab_size": 151936, "rms_norm_eps": 1e-06, "bos_token_id": 151643,
         "eos_token_id": 151645, "hidden_act": "silu", "torch_dtype": "bfloat16"}
        """)!.AsObject();

    /// <summary>Llama-3.2-1B-Instruct's config (eos list, llama3 rope_scaling, head_dim).</summary>
    private static JsonObject Llama32() => JsonNode.Parse("""
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
         "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
         "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true,
         "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "attention_bias": false, "mlp_bias": false,
         "hidden_act": "silu", "torch_dtype": "bfloat16",
         "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
        """)!.AsObject();

    private static LlamaConfig Parse(JsonObject o) => LlamaConfig.Parse(o.ToJsonString(), Path);

    private static string Refused(JsonObject o, params string[] mentions)
    {
        var e = Assert.Throws<ModelLoadException>(() => Parse(o));
        Assert.Contains(Path, e.Message);
        foreach (var m in mentions) Assert.Contains(m, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Fact]
    public void Qwen25IsReadWithItsImpliedBiasAndNoSlidingWindow()
    {
        var c = Parse(Qwen25());
        Assert.Equal(ModelFamily.Qwen2, c.Family);
        Assert.True(c.QkvBias);
        Assert.False(c.OutputBias);
        Assert.Equal(64, c.HeadDim);
        Assert.Equal(151643, c.BosTokenId);
        Assert.Equal([151645], c.EosTokenIds);
        Assert.Null(c.RopeScaling);
    }

    [Fact]
    public void Llama32ReadsTheEosListAndTheLlama3Rewrite()
    {
        var c = Parse(Llama32());
        Assert.Equal([128001, 128008, 128009], c.EosTokenIds);
        Assert.Equal(new RopeScaling("llama3", 32, 1, 4, 8192), c.RopeScaling);
        Assert.Equal(64, c.HeadDim);
        Assert.Equal(c, Parse(Llama32())); // value equality, eos list included
    }

    [Fact]
    public void TransformersV5FormIsReadLikeV4()
    {
        var v5 = Qwen25();
        v5.Remove("rope_theta");
        v5.Remove("torch_dtype");
        v5["rope_parameters"] = new JsonObject { ["rope_theta"] = 1000000.0, ["rope_type"] = "default" };
        v5["dtype"] = "bfloat16";
        Assert.Equal(Parse(Qwen25()), Parse(v5));

        var llama = Llama32();
        var scaling = llama["rope_scaling"]!.AsObject().DeepClone().AsObject();
        scaling["rope_theta"] = 500000.0;
        llama.Remove("rope_scaling");
        llama.Remove("rope_theta");
        llama["rope_parameters"] = scaling;
        Assert.Equal(Parse(Llama32()), Parse(llama));
    }

    [Fact]
    public void MissingRopeThetaIsAnErrorNotTenThousand()
    {
        var o = Qwen25();
        o.Remove("rope_theta");
        Refused(o, "rope_theta");
    }

    [Fact]
    public void AbsentBosAndEosAreNoneNotLlama2Ids()
    {
        var o = Qwen25();
        o.Remove("bos_token_id");
        o.Remove("eos_token_id");
        var c = Parse(o);
        Assert.Null(c.BosTokenId);
        Assert.Empty(c.EosTokenIds);
    }

    [Theory]
    [InlineData("model_type", "\"qwen3\"", "model_type")]
    [InlineData("architectures", "[\"GemmaForCausalLM\"]", "GemmaForCausalLM")]
    [InlineData("use_sliding_window", "true", "use_sliding_window")]
    [InlineData("hidden_act", "5", "hidden_act")]
    [InlineData("hidden_act", "\"gelu\"", "hidden_act")]
    [InlineData("num_key_value_heads", "\"2\"", "num_key_value_heads")]
    [InlineData("num_key_value_heads", "3", "num_key_value_heads")]
    [InlineData("attention_bias", "\"yes\"", "attention_bias")]
    [InlineData("attention_bias", "true", "attention_bias")]
    [InlineData("mlp_bias", "true", "mlp_bias")]
    [InlineData("max_position_embeddings", "2147483647", "max_position_embeddings")]
    [InlineData("max_position_embeddings", "1e8", "max_position_embeddings")]
    [InlineData("rope_theta", "1e300", "rope_theta")]
    [InlineData("rope_theta", "0.5", "rope_theta")]
    [InlineData("rms_norm_eps", "1e300", "rms_norm_eps")]
    [InlineData("rms_norm_eps", "0", "rms_norm_eps")]
    [InlineData("eos_token_id", "[151645, \"x\"]", "eos_token_id")]
    [InlineData("bos_token_id", "999999999", "bos_token_id")]
    [InlineData("tie_word_embeddings", "\"true\"", "tie_word_embeddings")]
    [InlineData("head_dim", "33", "head_dim")]
    [InlineData("final_logit_softcapping", "30.0", "final_logit_softcapping")]
    [InlineData("partial_rotary_factor", "0.5", "partial_rotary_factor")]
    [InlineData("rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4.0}", "yarn")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 0.5, \"low_freq_factor\": 1, \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}", "factor")]
    [InlineData("rope_scaling", "{\"rope_type\": \"llama3\", \"factor\": 8}", "low_freq_factor")]
    public void BadValuesAreRefusedNamingTheField(string field, string json, string mention)
    {
        var o = Qwen25();
        o[field] = JsonNode.Parse(json);
        Refused(o, mention);
    }

    [Fact]
    public void MistralSlidingWindowShorterThanTheContextIsRefused()
    {
        var o = Llama32();
        o["architectures"] = new JsonArray("MistralForCausalLM");
        o["model_type"] = "mistral";
        o.Remove("rope_scaling");
        o["sliding_window"] = 4096;
        Refused(o, "sliding_window", "4096");
        o["sliding_window"] = null;
        Assert.Equal(ModelFamily.Mistral, Parse(o).Family);
    }

    [Fact]
    public void Qwen3HasQkNormAndItsOwnHeadDim()
    {
        var o = Qwen25();
        o["architectures"] = new JsonArray("Qwen3ForCausalLM");
        o["model_type"] = "qwen3";
        o["head_dim"] = 128;
        var c = Parse(o);
        Assert.True(c.QkNorm);
        Assert.False(c.QkvBias);
        Assert.Equal(14 * 128, c.QDim);
    }

    [Fact]
    public void WrittenConfigReadsBackEqual()
    {
        foreach (var c in new[] { Parse(Qwen25()), Parse(Llama32()) })
            Assert.Equal(c with { TorchDtype = "bfloat16" }, LlamaConfig.Parse(c.ToJson("bfloat16"), Path));
    }
}
