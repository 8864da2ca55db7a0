using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Engines;

/// <summary>The lab's own trained model (experiments/models/tinystories-512) under the oracle and the float64 engine.</summary>
public class EmbeddedModelTests(ITestOutputHelper output)
{
    public static string ModelDir
    {
        get
        {
            // The tests run from tests/GpuIntLab.Tests/bin/<config>/net10.0: the repository root is five levels up.
            string dir = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../../experiments/models/tinystories-512"));
            Assert.True(Directory.Exists(dir), $"embedded model not found at {dir}");
            return dir;
        }
    }

    /// <summary>Story prompts as ids of the embedded tokenizer (BOS first), as experiments/default.json encodes them.</summary>
    public static readonly int[][] Prompts =
    [
        [1, 325, 339, 368, 298, 261, 377, 476, 398, 288, 261, 430, 367, 353, 347, 471, 472],
        [1, 297, 338, 281, 279, 265, 261, 384, 282, 471, 301, 266, 267, 455, 321, 264, 291, 296, 465, 299, 472],
        [1, 357, 308, 476, 261, 401, 262, 462, 374, 475, 452, 268, 264, 268, 473, 464, 472],
        [1, 334, 467, 461, 444, 268, 310, 426, 261, 336, 311, 281, 374, 436, 310, 408, 472],
    ];

    /// <summary>Golden determinism hash of the oracle on the embedded model (4 prompts, 8 greedy tokens each).</summary>
    public const string EmbeddedGolden = "82a84e0c0b0a0803d28c2890caac378435489e5230cffc41fec63898c959fe45";

    [Fact]
    public void TokenizerEncodesTheDefaultPromptsAsPinned()
    {
        using var checkpoint = LlamaCheckpoint.Open(ModelDir);
        var tokenizer = checkpoint.LoadTokenizer()!;
        Assert.Equal(Prompts[0], tokenizer.Encode("Once upon a time, there was a girl named Lily."));
        Assert.Equal(Prompts[3], tokenizer.Encode("Mia wanted to make a cake for her mom."));
    }

    [Fact]
    public void DeterminismHashIsPinnedAtOneThreadAndAllCores()
    {
        using var checkpoint = LlamaCheckpoint.Open(ModelDir);
        string one = DeterminismGate.Hash(checkpoint, Prompts, newTokens: 8, threads: 1);
        string all = DeterminismGate.Hash(checkpoint, Prompts, newTokens: 8, threads: Math.Max(2, Environment.ProcessorCount));
        output.WriteLine($"embedded model gate hash: {one}");
        Assert.Equal(EmbeddedGolden, one);
        Assert.Equal(EmbeddedGolden, all);
    }

    [Fact]
    public void OracleAgreesWithTheFloat64EngineAndWritesStoryText()
    {
        using var checkpoint = LlamaCheckpoint.Open(ModelDir);
        using var oracle = new OracleEngine(checkpoint, 2);
        using var reference = new ReferenceEngine(checkpoint, 2);
        double worst = 0;
        foreach (var prompt in Prompts)
        {
            var a = Greedy.Generate(oracle, prompt, 20, onToken: (_, _) => { });
            oracle.Reset();
            var logitsA = new List<double[]>(); var logitsB = new List<double[]>();
            Greedy.Generate(oracle, prompt, 20, onToken: (_, l) => logitsA.Add(l));
            var b = Greedy.Generate(reference, prompt, 20, onToken: (_, l) => logitsB.Add(l));
            oracle.Reset(); reference.Reset();
            Assert.Equal(b, a);
            for (int i = 0; i < logitsA.Count; i++)
                for (int v = 0; v < logitsA[i].Length; v++) worst = Math.Max(worst, Math.Abs(logitsA[i][v] - logitsB[i][v]));
        }
        output.WriteLine($"embedded model, oracle vs float64 engine over 4 prompts x 20 tokens: max |logit diff| {worst:E2}");
        Assert.True(worst <= 1e-9, $"max |logit diff| {worst:E3}");

        var text = checkpoint.LoadTokenizer()!.Decode(Greedy.Generate(oracle, Prompts[0], 20).ToArray());
        output.WriteLine(text);
        Assert.Contains(" ", text);
        Assert.Matches("[a-z]+ [a-z]+", text);
    }
}
