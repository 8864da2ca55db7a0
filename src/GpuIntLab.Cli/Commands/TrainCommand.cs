using System.CommandLine;
using GpuIntLab.Training;

namespace GpuIntLab.Cli.Commands;

public static class TrainCommand
{
    public static Command Create()
    {
        var d = new TrainOptions();
        var command = new Command("train", "Train the project's own Llama-family model from scratch on its generated story corpus (float32, CPU) and write an HF folder (BF16).");
        var output = new Option<string>("--output") { Description = "Model folder to write", DefaultValueFactory = _ => "experiments/models/tinystories-512" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of corpus, initialisation and batch order", DefaultValueFactory = _ => d.Seed };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps (the lr schedule spans these)", DefaultValueFactory = _ => d.Steps };
        var budget = new Option<double>("--time-budget") { Description = "Stop after this many seconds of training (0: none)", DefaultValueFactory = _ => 0 };
        var maxSteps = new Option<int>("--max-steps") { Description = "Stop after this many steps, the schedule still spanning --steps (0: all); replays a time-budgeted run", DefaultValueFactory = _ => 0 };
        var target = new Option<double>("--target-loss") { Description = "Stop once held-out loss reaches this (0: none)", DefaultValueFactory = _ => 0 };
        var corpus = new Option<long>("--corpus-chars") { Description = "Characters of generated stories", DefaultValueFactory = _ => d.CorpusChars };
        var vocab = new Option<int>("--vocab") { Description = "Tokenizer vocabulary size", DefaultValueFactory = _ => d.VocabSize };
        var tokenizer = new Option<string>("--tokenizer") { Description = "bpe (SentencePiece BPE trained on the corpus) or bytes (byte ids, for quick checks)", DefaultValueFactory = _ => "bpe" };
        var hidden = new Option<int>("--hidden") { DefaultValueFactory = _ => d.Hidden };
        var layers = new Option<int>("--layers") { DefaultValueFactory = _ => d.Layers };
        var heads = new Option<int>("--heads") { DefaultValueFactory = _ => d.Heads };
        var kvHeads = new Option<int>("--kv-heads") { DefaultValueFactory = _ => d.KvHeads };
        var inter = new Option<int>("--intermediate") { DefaultValueFactory = _ => d.Intermediate };
        var context = new Option<int>("--context") { Description = "max_position_embeddings", DefaultValueFactory = _ => d.Context };
        var seqLen = new Option<int>("--seq-len") { Description = "Training window length", DefaultValueFactory = _ => d.SeqLen };
        var batch = new Option<int>("--batch") { DefaultValueFactory = _ => d.Batch };
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => d.LearningRate };
        var warmup = new Option<int>("--warmup") { DefaultValueFactory = _ => d.WarmupSteps };
        var evalEvery = new Option<int>("--eval-every") { DefaultValueFactory = _ => d.EvalEvery };
        var threads = new Option<int>("--threads") { DefaultValueFactory = _ => d.Threads };
        foreach (var opt in new Option[] { output, seed, steps, maxSteps, budget, target, corpus, vocab, tokenizer, hidden, layers, heads, kvHeads, inter, context, seqLen, batch, lr, warmup, evalEvery, threads })
            command.Options.Add(opt);
        command.SetAction(parse =>
        {
            var o = new TrainOptions
            {
                Seed = parse.GetValue(seed), Steps = parse.GetValue(steps), TimeBudgetSeconds = parse.GetValue(budget), MaxSteps = parse.GetValue(maxSteps), TargetLoss = parse.GetValue(target),
                CorpusChars = parse.GetValue(corpus), VocabSize = parse.GetValue(vocab), Hidden = parse.GetValue(hidden), Layers = parse.GetValue(layers),
                Heads = parse.GetValue(heads), KvHeads = parse.GetValue(kvHeads), Intermediate = parse.GetValue(inter), Context = parse.GetValue(context),
                SeqLen = parse.GetValue(seqLen), Batch = parse.GetValue(batch), LearningRate = parse.GetValue(lr), WarmupSteps = parse.GetValue(warmup),
                EvalEvery = parse.GetValue(evalEvery), Threads = parse.GetValue(threads),
            };
            string kind = parse.GetValue(tokenizer)!;
            // Everything that can be refused is refused here, before the corpus, the tokenizer or any step.
            TrainOptionsCheck.Validate(o, kind, kind == "bytes" ? new ByteTokenizer().VocabSize : o.VocabSize);
            string outDir = parse.GetValue(output)!;
            OutputPaths.CheckFolder(outDir, "--output");
            Func<IReadOnlyList<string>, ITrainingTokenizer> make = kind switch
            {
                "bytes" => _ => new ByteTokenizer(),
                _ => stories =>
                {
                    try { return TokenizerFactory.TrainBpe(stories, o.VocabSize); }
                    catch (InvalidOperationException e) when (e.Message.StartsWith("the corpus is too small", StringComparison.Ordinal))
                    {
                        throw new TrainingInputException($"--corpus-chars/--vocab: {e.Message}");
                    }
                },
            };
            string line = "gpuintlab " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1));
            TrainingRun.Run(o, outDir, make, line, Console.WriteLine);
            return 0;
        });
        return command;
    }
}
