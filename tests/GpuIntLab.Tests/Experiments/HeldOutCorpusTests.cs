using System.Text.Json;
using GpuIntLab.Core.Tokenization;
using GpuIntLab.Training;
using Xunit;

namespace GpuIntLab.Tests.Experiments;

/// <summary>The committed held-out corpus is what its generator (experiments/corpora/make-stories-heldout.cs) writes.</summary>
public class HeldOutCorpusTests
{
    private static string Repo(params string[] parts)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir != null && !File.Exists(Path.Combine(dir.FullName, "GpuIntLab.sln"))) dir = dir.Parent;
        return Path.Combine([dir!.FullName, .. parts]);
    }

    [Fact]
    public void CommittedCorpusIsSeed1414StoriesInTheTrainingStreamFormat()
    {
        var stories = StoryCorpus.Generate(1414, 8000);
        Assert.Equal(string.Join("\n", stories) + "\n", File.ReadAllText(Repo("experiments", "corpora", "stories-heldout.txt")));
        var tokenizer = LlamaTokenizer.Load(Repo("experiments", "models", "tinystories-512", "tokenizer.model"));
        var ids = JsonSerializer.Deserialize<int[]>(File.ReadAllText(Repo("experiments", "corpora", "stories-heldout.json")))!;
        var expected = new List<int>();
        foreach (var s in stories) { expected.AddRange(tokenizer.Encode(s, addBos: true)); expected.Add(tokenizer.EosId); }
        Assert.Equal(expected, ids);
        // Not the training seed: the model's first story of seed 1 is not among these.
        Assert.DoesNotContain(StoryCorpus.Generate(1, 1)[0], stories);
    }

    [Fact]
    public void DefaultExperimentEvaluatesSixChunksOfTheHeldOutCorpus()
    {
        var spec = GpuIntLab.Experiments.ExperimentSpec.Load(Repo("experiments", "default.json"));
        spec.Validate();
        using var checkpoint = GpuIntLab.Core.Models.LlamaCheckpoint.Open(spec.ResolveModel(null));
        var chunks = spec.Corpus!.Load(spec.SourcePath, checkpoint.Config, checkpoint.LoadTokenizer());
        Assert.Equal(6, chunks.Count);
        Assert.Equal(63, chunks.ScoredPerChunk);
        Assert.All(chunks.Chunks, c => Assert.Equal(checkpoint.Config.BosTokenId, c[0]));
    }
}
