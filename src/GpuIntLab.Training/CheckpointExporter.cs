using System.Text.Json;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Training;

/// <summary>
/// Writes a trained model as TinyLlama ships: config.json (torch_dtype bfloat16), model.safetensors
/// with every tensor in BF16 under its HF name in HF order, tokenizer.model and tokenizer_config.json.
/// Uses the Core checkpoint writer and the exact round-to-nearest-even BF16 conversion.
/// </summary>
public static class CheckpointExporter
{
    public static void Export(TrainableLlama<float> model, string folder, ITrainingTokenizer tokenizer)
    {
        Directory.CreateDirectory(folder);
        var config = model.Config;
        File.WriteAllText(Path.Combine(folder, "config.json"), config.ToJson("bfloat16") + "\n");
        var tensors = new List<TensorToWrite>();
        foreach (var t in model.Tensors)
        {
            var values = new double[t.Length];
            for (int i = 0; i < t.Length; i++) values[i] = model.Params[t.Offset + i];
            var bytes = new byte[t.Length * 2];
            ExactConversion.FromDouble(TensorDtype.BF16, values, bytes);
            tensors.Add(new TensorToWrite(t.Name, TensorDtype.BF16, t.Shape, bytes));
        }
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), tensors);
        if (tokenizer.ModelProto is { } proto) File.WriteAllBytes(Path.Combine(folder, "tokenizer.model"), proto);
        File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), TokenizerConfigJson(config) + "\n");
    }

    /// <summary>A tokenizer_config.json shaped like TinyLlama's (LlamaTokenizer, BOS added, no EOS added).</summary>
    public static string TokenizerConfigJson(LlamaConfig config)
    {
        var o = new Dictionary<string, object?>
        {
            ["add_bos_token"] = true,
            ["add_eos_token"] = false,
            ["bos_token"] = "<s>",
            ["eos_token"] = "</s>",
            ["unk_token"] = "<unk>",
            ["pad_token"] = null,
            ["clean_up_tokenization_spaces"] = false,
            ["legacy"] = false,
            ["model_max_length"] = config.MaxPositionEmbeddings,
            ["sp_model_kwargs"] = new Dictionary<string, object>(),
            ["tokenizer_class"] = "LlamaTokenizer",
        };
        return JsonSerializer.Serialize(o, new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Rounds every parameter to its BF16 value in place, so evaluation sees exactly the exported weights.</summary>
    public static void RoundToBf16(float[] parameters)
    {
        for (int i = 0; i < parameters.Length; i++)
            parameters[i] = (float)ExactConversion.Bf16ToDouble(ExactConversion.DoubleToBf16(parameters[i]));
    }
}
