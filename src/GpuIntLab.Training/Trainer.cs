using System.Diagnostics;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Training;

/// <summary>Everything that determines a training run. The same options and seed give the same weights.</summary>
public sealed record TrainOptions
{
    public ulong Seed { get; init; } = 1;
    /// <summary>Characters of generated story text (train and held-out together).</summary>
    public long CorpusChars { get; init; } = 4_000_000;
    /// <summary>Fraction of stories (the last ones) held out from training.</summary>
    public double HeldOutFraction { get; init; } = 0.02;
    public int VocabSize { get; init; } = 512;
    public int Hidden { get; init; } = 192;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 6;
    public int KvHeads { get; init; } = 2;
    public int Intermediate { get; init; } = 512;
    public int Context { get; init; } = 256;
    public int SeqLen { get; init; } = 128;
    public int Batch { get; init; } = 16;
    public int Steps { get; init; } = 1000;
    public double LearningRate { get; init; } = 2e-3;
    public double MinLearningRateFraction { get; init; } = 0.1;
    public int WarmupSteps { get; init; } = 50;
    public double WeightDecay { get; init; } = 0.1;
    public double GradClip { get; init; } = 1.0;
    public double InitStd { get; init; } = 0.02;
    /// <summary>Stop early once this much wall time has passed (the schedule still assumes <see cref="Steps"/>); 0 = none.</summary>
    public double TimeBudgetSeconds { get; init; }
    /// <summary>Stop after this many steps although the schedule assumes <see cref="Steps"/> (0 = run them all): replays a time-budgeted run exactly.</summary>
    public int MaxSteps { get; init; }
    /// <summary>Stop early once the held-out loss is at or below this; 0 = none.</summary>
    public double TargetLoss { get; init; }
    public int EvalEvery { get; init; } = 100;
    /// <summary>Held-out windows of <see cref="SeqLen"/> tokens used for periodic and final evaluation.</summary>
    public int EvalWindows { get; init; } = 64;
    public int LogEvery { get; init; } = 10;
    public int Threads { get; init; } = Environment.ProcessorCount;

    public LlamaConfig ModelConfig(int vocabSize) => new()
    {
        HiddenSize = Hidden, IntermediateSize = Intermediate, NumAttentionHeads = Heads, NumKeyValueHeads = KvHeads,
        NumHiddenLayers = Layers, VocabSize = vocabSize, MaxPositionEmbeddings = Context, RmsNormEps = 1e-5,
        RopeTheta = 10000.0, TieWordEmbeddings = false, BosTokenId = 1, EosTokenIds = [2], TorchDtype = "bfloat16",
    };
}

/// <summary>The token streams of a run: stories encoded BOS-first with EOS appended, concatenated in order.</summary>
public sealed record TokenData(int[] Train, int[] HeldOut, int TrainStories, int HeldOutStories, long TrainChars, long HeldOutChars)
{
    public static TokenData Build(IReadOnlyList<string> stories, double heldOutFraction, ITrainingTokenizer tokenizer)
    {
        int held = Math.Max(1, (int)Math.Round(stories.Count * heldOutFraction));
        int train = stories.Count - held;
        var encoded = new int[stories.Count][];
        Parallel.For(0, stories.Count, i => encoded[i] = [.. tokenizer.Encode(stories[i]), tokenizer.EosId]);
        int[] Concat(int from, int to) => encoded[from..to].SelectMany(x => x).ToArray();
        return new TokenData(Concat(0, train), Concat(train, stories.Count), train, held,
            stories.Take(train).Sum(s => (long)s.Length), stories.Skip(train).Sum(s => (long)s.Length));
    }
}

public sealed record TrainLogEntry(int Step, double Loss, double HeldOutLoss, double LearningRate, double TokensPerSecond, double ElapsedSeconds);

public sealed record TrainResult(
    TrainableLlama<float> Model, int StepsDone, string StopReason, double FinalTrainLoss, double FinalHeldOutLoss,
    double WallSeconds, double TokensPerSecond, IReadOnlyList<TrainLogEntry> Log);

/// <summary>
/// The training loop: seeded init, batches of random windows from the train stream (seeded), linear
/// warm-up then cosine decay to a floor, global-norm clipping, AdamW. Progress lines report step,
/// loss, learning rate, tokens/sec, elapsed and time left; periodic held-out evaluation.
/// </summary>
public static class Trainer
{
    public static double LearningRateAt(TrainOptions o, int step)
    {
        if (step < o.WarmupSteps) return o.LearningRate * (step + 1) / o.WarmupSteps;
        double progress = Math.Min(1.0, (double)(step - o.WarmupSteps) / Math.Max(1, o.Steps - o.WarmupSteps));
        double min = o.LearningRate * o.MinLearningRateFraction;
        return min + (o.LearningRate - min) * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }

    public static TrainResult Train(TrainOptions o, TokenData data, int vocabSize, Action<string>? log = null)
    {
        log ??= _ => { };
        Kernels<float>.Parallelism = new ParallelOptions { MaxDegreeOfParallelism = o.Threads };
        if (data.Train.Length < o.SeqLen + 2 || data.HeldOut.Length < o.SeqLen + 2)
            throw new TrainingInputException($"--corpus-chars/--seq-len: the corpus gives {data.Train.Length} training and {data.HeldOut.Length} held-out tokens; each needs more than one window of --seq-len {o.SeqLen} + 1 tokens");
        var model = new TrainableLlama<float>(o.ModelConfig(vocabSize));
        model.Initialize(o.Seed, o.InitStd);
        var opt = new AdamW<float>(model.Tensors, model.ParameterCount) { WeightDecay = o.WeightDecay };
        var batchRng = SeededRandom.Derive(o.Seed, 1000);
        var tokens = new int[o.Batch * (o.SeqLen + 1)];
        var entries = new List<TrainLogEntry>();
        var clock = Stopwatch.StartNew();
        double ema = double.NaN, lastTrainLoss = double.NaN, heldOut = double.NaN;
        long tokensSeen = 0;
        string reason = "steps";
        int step = 0;
        log($"model: {model.ParameterCount:N0} parameters; train stream {data.Train.Length:N0} tokens, held-out {data.HeldOut.Length:N0}; "
            + $"batch {o.Batch} x {o.SeqLen} = {o.Batch * o.SeqLen} tokens/step; {o.Steps} steps; threads {o.Threads}");
        for (; step < o.Steps; step++)
        {
            for (int b = 0; b < o.Batch; b++)
            {
                int start = batchRng.Next(data.Train.Length - o.SeqLen - 1);
                Array.Copy(data.Train, start, tokens, b * (o.SeqLen + 1), o.SeqLen + 1);
            }
            double loss = model.Loss(tokens, o.Batch, o.SeqLen, backward: true);
            AdamW<float>.ClipGlobalNorm(model.Grads, o.GradClip);
            double lr = LearningRateAt(o, step);
            opt.Step(model.Params, model.Grads, lr);
            tokensSeen += o.Batch * o.SeqLen;
            lastTrainLoss = loss;
            ema = double.IsNaN(ema) ? loss : 0.95 * ema + 0.05 * loss;
            if (!double.IsFinite(loss)) { reason = "diverged (loss not finite)"; step++; break; }

            bool last = step + 1 == o.Steps;
            bool evalNow = o.EvalEvery > 0 && ((step + 1) % o.EvalEvery == 0 || last);
            if (evalNow) heldOut = Evaluation.HeldOutLoss(model, data.HeldOut, o.SeqLen, o.EvalWindows, o.Batch);
            double elapsed = clock.Elapsed.TotalSeconds;
            double tps = tokensSeen / Math.Max(1e-9, elapsed);
            if ((step + 1) % o.LogEvery == 0 || evalNow || step == 0)
            {
                double left = (o.Steps - step - 1) * elapsed / (step + 1);
                if (o.TimeBudgetSeconds > 0) left = Math.Min(left, Math.Max(0, o.TimeBudgetSeconds - elapsed));
                entries.Add(new TrainLogEntry(step + 1, loss, evalNow ? heldOut : double.NaN, lr, tps, elapsed));
                log($"step {step + 1,6}/{o.Steps}  loss {loss:F4} (avg {ema:F4})" + (evalNow ? $"  held-out {heldOut:F4}" : "")
                    + $"  lr {lr:E2}  {tps,7:F0} tok/s  elapsed {Fmt(elapsed)}  left {Fmt(left)}");
            }
            if (o.TargetLoss > 0 && evalNow && heldOut <= o.TargetLoss) { reason = $"target held-out loss {o.TargetLoss} reached"; step++; break; }
            if (o.MaxSteps > 0 && step + 1 >= o.MaxSteps && !last) { reason = $"max steps {o.MaxSteps} reached"; step++; break; }
            if (o.TimeBudgetSeconds > 0 && elapsed >= o.TimeBudgetSeconds) { reason = $"time budget {o.TimeBudgetSeconds:F0} s reached"; step++; break; }
        }
        double wall = clock.Elapsed.TotalSeconds;
        double finalHeld = Evaluation.HeldOutLoss(model, data.HeldOut, o.SeqLen, o.EvalWindows, o.Batch);
        log($"stopped after {step} steps ({reason}); wall {Fmt(wall)}; last train loss {lastTrainLoss:F4}, held-out {finalHeld:F4}");
        return new TrainResult(model, step, reason, lastTrainLoss, finalHeld, wall, tokensSeen / Math.Max(1e-9, wall), entries);
    }

    public static string Fmt(double seconds)
    {
        var t = TimeSpan.FromSeconds(Math.Max(0, seconds));
        return t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:D2}m{t.Seconds:D2}s" : $"{t.Minutes}m{t.Seconds:D2}s";
    }
}
