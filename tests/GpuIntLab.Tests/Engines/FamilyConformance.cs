using System.IO.Compression;
using System.Text.Json;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Tests.Engines;

/// <summary>One model of the families conformance set: its checkpoint folder (rebuilt from the seeded rule) and reference cases.</summary>
public sealed record FamilyModel(string Name, string Folder, ulong Seed, ReferenceCase[] Cases, bool BosPrepended)
{
    public ReferenceCase Case(string name) => Cases.Single(c => c.Name == name);
    public override string ToString() => Name;
}

/// <summary>
/// The outside reference for Llama 3 / Qwen2 / Qwen3 (<c>shared/conformance/families</c>, carried in Data/conformance/families):
/// the three tiny checkpoints are rebuilt once per test run from the documented rule (seeds 20261201-3, linear weights
/// 1/512, biases and embeddings 1/256) and checked against the published SHA-256 sums before any engine sees them.
/// </summary>
public static class FamilyConformance
{
    public static readonly string[] Names = ["tiny-llama3", "tiny-qwen2", "tiny-qwen3"];
    private static string DataDir => Path.Combine(TestData.ConformanceDir, "families");

    private static readonly Dictionary<string, ulong> s_seeds = new()
    {
        ["tiny-llama3"] = 20261201, ["tiny-qwen2"] = 20261202, ["tiny-qwen3"] = 20261203,
    };

    private static readonly Lazy<Dictionary<string, FamilyModel>> s_models = new(Build, LazyThreadSafetyMode.ExecutionAndPublication);

    public static FamilyModel Model(string name) => s_models.Value[name];

    /// <summary>The published sums, "hash  relative/path" per line.</summary>
    public static Dictionary<string, string> PublishedSums() =>
        File.ReadAllLines(Path.Combine(DataDir, "SHA256SUMS")).Where(l => l.Length > 0)
            .Select(l => l.Split("  ", 2)).ToDictionary(p => p[1], p => p[0]);

    private static Dictionary<string, FamilyModel> Build()
    {
        var sums = PublishedSums();
        var result = new Dictionary<string, FamilyModel>();
        foreach (var name in Names)
        {
            string source = Path.Combine(DataDir, name);
            string folder = Path.Combine(TestData.RunRoot, "families", name);
            if (Directory.Exists(folder)) Directory.Delete(folder, true);
            var config = LlamaConfig.Load(Path.Combine(source, "config.json"));
            bool tied = config.TieWordEmbeddings;
            SeededCheckpointWriter.Write(folder, config, new SeededCheckpointLayout(TensorDtype.BF16, Tied: tied), s_seeds[name], rule: SeededRule.Families);
            // The folder holds the shipped config.json byte for byte, not our re-serialisation of it.
            File.Copy(Path.Combine(source, "config.json"), Path.Combine(folder, "config.json"), overwrite: true);
            string actual = TestData.Sha256(Path.Combine(folder, "model.safetensors"));
            if (actual != sums[$"{name}/model.safetensors"])
                throw new InvalidOperationException($"{name}/model.safetensors rebuilt from the rule has SHA-256 {actual}, not the published {sums[$"{name}/model.safetensors"]}");
            TokenizerFiles.CopyInto(name, folder);
            using var gz = new GZipStream(File.OpenRead(Path.Combine(source, "reference.json.gz")), CompressionMode.Decompress);
            using var doc = JsonDocument.Parse(gz);
            result[name] = new FamilyModel(name, folder, s_seeds[name], ConformanceReference.ParseCases(doc.RootElement.GetProperty("cases")),
                doc.RootElement.GetProperty("bos_prepended").GetBoolean());
        }
        return result;
    }
}

/// <summary>Places a family's tokenizer files into a checkpoint folder (llama3's for tiny-llama3, qwen3's for both Qwen models), when the test data carries them.</summary>
public static class TokenizerFiles
{
    public static string Family(string model) => model == "tiny-llama3" ? "llama3" : "qwen3";

    public static void CopyInto(string model, string folder)
    {
        string dir = Path.Combine(TestData.ConformanceDir, "families", "tokenizers", Family(model));
        string gz = Path.Combine(dir, "tokenizer.json.gz");
        if (!File.Exists(gz)) return;
        using (var input = new GZipStream(File.OpenRead(gz), CompressionMode.Decompress))
        using (var output = File.Create(Path.Combine(folder, "tokenizer.json")))
            input.CopyTo(output);
        string config = Path.Combine(dir, "tokenizer_config.json");
        if (File.Exists(config)) File.Copy(config, Path.Combine(folder, "tokenizer_config.json"), overwrite: true);
    }
}
