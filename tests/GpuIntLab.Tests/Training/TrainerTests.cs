using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;
using GpuIntLab.Training;
using Xunit;

namespace GpuIntLab.Tests.Training;

/// <summary>The corpus, the training loop and the export on a tiny configuration (seconds in all).</summary>
public class TrainerTests
{
    private static TrainOptions Tiny(int steps = 40, int threads = 2) => new()
    {
        Seed = 42, CorpusChars = 60_000, HeldOutFraction = 0.05, Hidden = 16, Layers = 2, Heads = 4, KvHeads = 2, Intermediate = 40,
        Context = 32, SeqLen = 16, Batch = 4, Steps = steps, WarmupSteps = 5, LearningRate = 1e-2, EvalEvery = 0, EvalWindows = 8,
        LogEvery = 1000, Threads = threads,
    };

    private static TokenData Data(TrainOptions o) =>
        TokenData.Build(StoryCorpus.Generate(o.Seed, o.CorpusChars), o.HeldOutFraction, new ByteTokenizer());

    [Fact]
    public void Corpus_is_determined_by_the_seed_and_varied()
    {
        var a = StoryCorpus.Generate(7, 200_000);
        var b = StoryCorpus.Generate(7, 200_000);
        var c = StoryCorpus.Generate(8, 200_000);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.True(a.Sum(s => s.Length) >= 200_000);
        Assert.All(a, s => Assert.DoesNotContain('\n', s));
        // Variety: nearly every story is distinct, and the vocabulary is far beyond a single template's.
        Assert.True(a.Distinct().Count() >= a.Count * 0.99, "stories repeat");
        int words = a.SelectMany(s => s.Split(' ', '.', ',', '!', '?', '"')).Where(w => w.Length > 0).Distinct().Count();
        Assert.True(words > 300, $"only {words} distinct words");
        Assert.Contains(a, s => s.Contains("\" said ", StringComparison.Ordinal) || s.Contains("said, \"", StringComparison.Ordinal));
    }

    [Fact]
    public void Same_seed_gives_identical_weights_whatever_the_thread_count()
    {
        var o = Tiny(steps: 12);
        var data = Data(o);
        var r1 = Trainer.Train(o, data, 259);
        var r2 = Trainer.Train(o, data, 259);
        var r3 = Trainer.Train(o with { Threads = 1 }, data, 259);
        Assert.Equal(r1.Model.Params, r2.Model.Params);
        Assert.Equal(r1.Model.Params, r3.Model.Params);
        var other = Trainer.Train(o with { Seed = 43 }, data, 259);
        Assert.NotEqual(r1.Model.Params, other.Model.Params);
    }

    [Fact]
    public void Loss_decreases_on_a_tiny_run()
    {
        var o = Tiny(steps: 60);
        var data = Data(o);
        var untrained = new TrainableLlama<float>(o.ModelConfig(259));
        untrained.Initialize(o.Seed, o.InitStd);
        double before = Evaluation.HeldOutLoss(untrained, data.HeldOut, o.SeqLen, o.EvalWindows, o.Batch);
        var r = Trainer.Train(o, data, 259);
        Assert.InRange(before, Math.Log(259) - 0.1, Math.Log(259) + 0.1); // small init: near uniform
        Assert.True(r.FinalHeldOutLoss < before - 1.5, $"held-out loss {before:F3} -> {r.FinalHeldOutLoss:F3}");
        double unigram = Evaluation.UnigramLoss(data.Train, data.HeldOut, 259);
        Assert.True(r.FinalHeldOutLoss < unigram, $"held-out {r.FinalHeldOutLoss:F3} not below unigram {unigram:F3}");
    }

    [Fact]
    public void Time_budget_and_max_steps_stop_the_run()
    {
        var o = Tiny(steps: 1000);
        var data = Data(o);
        Assert.Equal(3, Trainer.Train(o with { MaxSteps = 3 }, data, 259).StepsDone);
        var budgeted = Trainer.Train(o with { TimeBudgetSeconds = 0.5 }, data, 259);
        Assert.InRange(budgeted.StepsDone, 1, 999);
        Assert.StartsWith("time budget", budgeted.StopReason);
        // A budget-stopped run is replayed exactly by --max-steps.
        var replay = Trainer.Train(o with { MaxSteps = budgeted.StepsDone }, data, 259);
        Assert.Equal(budgeted.Model.Params, replay.Model.Params);
    }

    [Fact]
    public void Exported_folder_opens_as_a_BF16_Llama_checkpoint()
    {
        var o = Tiny(steps: 3);
        var model = Trainer.Train(o, Data(o), 259).Model;
        string dir = Path.Combine(Path.GetTempPath(), "gpuintlab-export-" + Guid.NewGuid().ToString("N"));
        try
        {
            CheckpointExporter.Export(model, dir, new ByteTokenizer());
            using var ckpt = LlamaCheckpoint.Open(dir);
            Assert.Equal(model.Config with { TorchDtype = "bfloat16" }, ckpt.Config);
            Assert.False(ckpt.Config.TieWordEmbeddings);
            Assert.True(ckpt.Config.NumKeyValueHeads < ckpt.Config.NumAttentionHeads);
            var expected = LlamaCheckpoint.ExpectedTensors(ckpt.Config, includeLmHead: true).ToList();
            Assert.Equal(expected.Count, ckpt.AllTensors.Count());
            foreach (var (name, shape) in expected)
            {
                var info = ckpt.Info(name);
                Assert.Equal(TensorDtype.BF16, info.Dtype);
                Assert.Equal(shape, info.Shape);
                var t = model.Tensor(name);
                var values = ckpt.ReadDouble(info);
                for (int i = 0; i < t.Length; i++)
                    Assert.Equal(ExactConversion.Bf16ToDouble(ExactConversion.DoubleToBf16(model.Params[t.Offset + i])), values[i]);
            }
            Assert.True(File.Exists(Path.Combine(dir, "tokenizer_config.json")));
            Assert.Contains("LlamaTokenizer", File.ReadAllText(Path.Combine(dir, "tokenizer_config.json")));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void Margins_and_percentiles_are_well_formed()
    {
        var o = Tiny(steps: 5);
        var data = Data(o);
        var model = Trainer.Train(o, data, 259).Model;
        var m = Evaluation.GreedyMargins(model, data.HeldOut, o.SeqLen, 3);
        Assert.Equal(3 * o.SeqLen, m.Length);
        Assert.All(m, x => Assert.True(x >= 0));
        Assert.True(m.SequenceEqual(m.Order()));
        Assert.Equal(2.5, Evaluation.Percentile([1, 2, 3, 4], 50));
        Assert.Equal(1, Evaluation.Percentile([1, 2, 3, 4], 0));
    }
}
