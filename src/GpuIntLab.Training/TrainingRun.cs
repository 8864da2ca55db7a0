using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace GpuIntLab.Training;

/// <summary>The measured facts of a finished run, as the model's README records them.</summary>
public sealed record RunReport(
    TrainOptions Options, long Parameters, int StepsDone, string StopReason, double WallSeconds, double TotalSeconds,
    double TokensPerSecond, double TrainLoss, double HeldOutLoss, double HeldOutLossFloat32, double UnigramLoss,
    double[] MarginPercentiles, int MarginCount, IReadOnlyList<(string Prompt, string Continuation)> Samples,
    int Stories, long CorpusChars, long TrainTokens, long HeldOutTokens, string Machine, string Date);

/// <summary>
/// One whole run: generate the corpus, train the tokenizer, encode, train the model, round it to
/// BF16 and evaluate what is shipped (train and held-out loss, unigram baseline, margins, greedy
/// samples), then write the model folder with its README.
/// </summary>
public static class TrainingRun
{
    public static readonly double[] MarginQuantiles = [1, 5, 10, 25, 50, 75, 90];
    public static readonly string[] SamplePrompts =
    [
        "Once upon a time, there was a little girl named Lily.",
        "Tom and his dog went to the park.",
        "One day, Ben found a shiny",
        "\"I lost my ball,\" said",
        "The little bird was sad because",
    ];

    public static RunReport Run(TrainOptions o, string outDir, Func<IReadOnlyList<string>, ITrainingTokenizer> makeTokenizer,
        string command, Action<string> log)
    {
        var total = Stopwatch.StartNew();
        log($"corpus: generating ~{o.CorpusChars:N0} characters of stories (seed {o.Seed})");
        var stories = StoryCorpus.Generate(o.Seed, o.CorpusChars);
        if (stories.Count < 2) throw new TrainingInputException($"--corpus-chars: {o.CorpusChars} characters make {stories.Count} story; training and held-out need one each");
        int trainStories = stories.Count - Math.Max(1, (int)Math.Round(stories.Count * o.HeldOutFraction));
        log($"corpus: {stories.Count:N0} stories; training the tokenizer on the {trainStories:N0} train stories");
        var tokenizer = makeTokenizer(stories.Take(trainStories).ToList());
        var data = TokenData.Build(stories, o.HeldOutFraction, tokenizer);
        log($"tokens: train {data.Train.Length:N0} ({(double)data.TrainChars / data.Train.Length:F2} chars/token), held-out {data.HeldOut.Length:N0}; vocab {tokenizer.VocabSize}");

        var result = Trainer.Train(o, data, tokenizer.VocabSize, log);
        var model = result.Model;
        double heldOut32 = result.FinalHeldOutLoss;
        CheckpointExporter.RoundToBf16(model.Params);
        log("evaluating the BF16-rounded weights (what is shipped)");
        double trainLoss = Evaluation.HeldOutLoss(model, data.Train, o.SeqLen, o.EvalWindows, o.Batch);
        double heldOut = Evaluation.HeldOutLoss(model, data.HeldOut, o.SeqLen, o.EvalWindows, o.Batch);
        double unigram = Evaluation.UnigramLoss(data.Train, data.HeldOut, tokenizer.VocabSize);
        var margins = Evaluation.GreedyMargins(model, data.HeldOut, o.SeqLen, Math.Min(o.EvalWindows, 32));
        var percentiles = MarginQuantiles.Select(q => Evaluation.Percentile(margins, q)).ToArray();
        var samples = SamplePrompts.Select(p => (p, Evaluation.Continue(model, tokenizer, p, 80))).ToList();
        log($"train loss {trainLoss:F4}, held-out {heldOut:F4} (float32 before rounding {heldOut32:F4}), unigram baseline {unigram:F4}");
        log("margins: " + string.Join(", ", MarginQuantiles.Select((q, i) => $"p{q} {percentiles[i]:F2}")));
        foreach (var (p, c) in samples) log($"sample: {p} >>> {c}");

        var report = new RunReport(o, model.ParameterCount, result.StepsDone, result.StopReason, result.WallSeconds, total.Elapsed.TotalSeconds,
            result.TokensPerSecond, trainLoss, heldOut, heldOut32, unigram, percentiles, margins.Length, samples,
            stories.Count, stories.Sum(s => (long)s.Length), data.Train.Length, data.HeldOut.Length,
            MachineDescription(), DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture));
        CheckpointExporter.Export(model, outDir, tokenizer);
        File.WriteAllText(Path.Combine(outDir, "README.md"), Readme(report, command, Path.GetFileName(Path.TrimEndingDirectorySeparator(outDir))));
        log($"wrote {outDir}");
        return report;
    }

    public static string MachineDescription()
    {
        string cpu = "unknown CPU";
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            if (line is not null) cpu = line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return $"{cpu}, {Environment.ProcessorCount} logical cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}";
    }

    private static string Readme(RunReport r, string command, string name)
    {
        var o = r.Options;
        var c = o.ModelConfig(o.VocabSize);
        var sb = new StringBuilder();
        sb.AppendLine($"# {name}");
        sb.AppendLine();
        sb.AppendLine("A small Llama-family model trained by this project, from scratch, on text this project generates itself");
        sb.AppendLine("(`StoryCorpus`: seeded children's stories), with a byte-fallback BPE tokenizer it also trains itself.");
        sb.AppendLine("Same layout and features as TinyLlama: grouped-query attention (fewer kv heads than heads), rotate-half RoPE,");
        sb.AppendLine("RMSNorm, SwiGLU MLP, untied lm_head; weights in BF16 (TinyLlama's dtype) under HF tensor names.");
        sb.AppendLine();
        sb.AppendLine("## How it was made");
        sb.AppendLine();
        sb.AppendLine("```");
        sb.AppendLine(command);
        sb.AppendLine("```");
        sb.AppendLine();
        sb.AppendLine("From a checkout: `dotnet run --project src/GpuIntLab.Cli -c Release -- train` followed by the same options. No download: the corpus, the tokenizer and the weights all come from the seed.");
        sb.AppendLine();
        sb.AppendLine($"- Trainer: `src/GpuIntLab.Training` (float32 on the CPU, hand-written backward pass, AdamW), fully seeded: the same options give the same weights, whatever the thread count.");
        if (r.StopReason.StartsWith("time budget", StringComparison.Ordinal))
            sb.AppendLine($"- The time budget ended the run, so the step count depended on the machine's speed; `--time-budget 0 --max-steps {r.StepsDone}` with the options above replays it exactly.");
        sb.AppendLine($"- Seed {o.Seed}; corpus {r.Stories:N0} stories, {r.CorpusChars:N0} characters; last {o.HeldOutFraction:P0} of stories held out.");
        sb.AppendLine($"- Tokens: train {r.TrainTokens:N0}, held-out {r.HeldOutTokens:N0}; vocab {c.VocabSize}.");
        sb.AppendLine($"- Model: hidden {c.HiddenSize}, {c.NumHiddenLayers} layers, {c.NumAttentionHeads} heads / {c.NumKeyValueHeads} kv heads (head dim {c.HeadDim}), intermediate {c.IntermediateSize}, context {c.MaxPositionEmbeddings}; **{r.Parameters:N0} parameters**.");
        sb.AppendLine($"- Training: {r.StepsDone} steps of {o.Batch} x {o.SeqLen} tokens (planned {o.Steps}; stop: {r.StopReason}); AdamW (beta 0.9/0.95, weight decay {o.WeightDecay} on matrices), peak lr {o.LearningRate:G3}, {o.WarmupSteps} warm-up steps, cosine to {o.MinLearningRateFraction:P0}, grad clip {o.GradClip}, init std {o.InitStd}.");
        sb.AppendLine($"- Wall time: training {Trainer.Fmt(r.WallSeconds)} ({r.TokensPerSecond:F0} tokens/s), whole command {Trainer.Fmt(r.TotalSeconds)}.");
        sb.AppendLine($"- Machine: {r.Machine} (shared with other work during the run). Date: {r.Date}.");
        sb.AppendLine();
        sb.AppendLine("## Quality (BF16 weights as shipped, float32 forward of the trainer)");
        sb.AppendLine();
        sb.AppendLine("| measure | nats/token |");
        sb.AppendLine("|---|---|");
        sb.AppendLine($"| train loss ({o.EvalWindows} windows of {o.SeqLen}) | {r.TrainLoss:F4} |");
        sb.AppendLine($"| held-out loss ({o.EvalWindows} windows of {o.SeqLen}) | {r.HeldOutLoss:F4} |");
        sb.AppendLine($"| held-out loss, float32 weights before BF16 rounding | {r.HeldOutLossFloat32:F4} |");
        sb.AppendLine($"| unigram baseline (held-out under train token frequencies) | {r.UnigramLoss:F4} |");
        sb.AppendLine($"| uniform over the vocabulary | {Math.Log(c.VocabSize):F4} |");
        sb.AppendLine();
        sb.AppendLine($"Greedy next-token margin (top-1 minus top-2 logit) over {r.MarginCount:N0} held-out positions:");
        sb.AppendLine();
        sb.AppendLine("| " + string.Join(" | ", MarginQuantiles.Select(q => $"p{q}")) + " |");
        sb.AppendLine("|" + string.Concat(MarginQuantiles.Select(_ => "---|")));
        sb.AppendLine("| " + string.Join(" | ", r.MarginPercentiles.Select(m => m.ToString("F3", CultureInfo.InvariantCulture))) + " |");
        sb.AppendLine();
        sb.AppendLine("## Greedy continuations (80 tokens at most, stop at `</s>`)");
        sb.AppendLine();
        foreach (var (p, cont) in r.Samples)
        {
            sb.AppendLine($"- **{p}**{cont}");
        }
        sb.AppendLine();
        return sb.ToString();
    }
}
