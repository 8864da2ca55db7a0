using GpuIntLab.Core.Models;

namespace GpuIntLab.Training;

/// <summary>Training options or data that cannot give a usable model; the message names the option and the reason.</summary>
public sealed class TrainingInputException(string message) : Exception(message);

/// <summary>
/// Refuses, before any corpus is generated, every training option that cannot work: shapes the model loader would
/// refuse (so training never writes a model that <c>generate</c> then rejects), windows longer than the context,
/// empty batches or corpora, and a learning-rate schedule that cannot move.
/// </summary>
public static class TrainOptionsCheck
{
    /// <summary>The byte-fallback BPE reserves &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt; and 256 byte pieces; --vocab must leave room for merges.</summary>
    public const int BpeReservedPieces = 3 + 256;

    public static void Validate(TrainOptions o, string tokenizerKind, int tokenizerVocab)
    {
        void Require(bool ok, string message) { if (!ok) throw new TrainingInputException(message); }
        Require(tokenizerKind is "bpe" or "bytes", $"--tokenizer: unknown kind '{tokenizerKind}' (known: bpe, bytes)");
        if (tokenizerKind == "bpe")
            Require(o.VocabSize > BpeReservedPieces, $"--vocab: {o.VocabSize} leaves no room for merges; the BPE tokenizer reserves {BpeReservedPieces} pieces (<unk>, <s>, </s>, 256 bytes), so give more than {BpeReservedPieces}");
        foreach (var (value, option) in new[] { (o.Hidden, "--hidden"), (o.Layers, "--layers"), (o.Heads, "--heads"), (o.KvHeads, "--kv-heads"),
                     (o.Intermediate, "--intermediate"), (o.Context, "--context"), (o.SeqLen, "--seq-len"), (o.Batch, "--batch"),
                     (o.Steps, "--steps"), (o.EvalEvery, "--eval-every"), (o.Threads, "--threads") })
            Require(value >= 1, $"{option}: must be at least 1, got {value}");
        Require(o.Hidden % o.Heads == 0, $"--heads: {o.Heads} does not divide --hidden {o.Hidden}");
        Require(o.Heads % o.KvHeads == 0, $"--kv-heads: {o.KvHeads} does not divide --heads {o.Heads}");
        Require(o.Hidden / o.Heads % 2 == 0, $"--hidden/--heads: the head size {o.Hidden}/{o.Heads} = {o.Hidden / o.Heads} must be even for RoPE");
        Require(o.SeqLen <= o.Context, $"--seq-len: {o.SeqLen} is longer than --context {o.Context} (the model could not run the windows it is trained on)");
        Require(o.CorpusChars >= 1, $"--corpus-chars: must be at least 1, got {o.CorpusChars}");
        Require(double.IsFinite(o.LearningRate) && o.LearningRate > 0, $"--lr: must be a positive number, got {o.LearningRate}");
        Require(o.WarmupSteps >= 0, $"--warmup: must be 0 or more, got {o.WarmupSteps}");
        Require(o.MaxSteps >= 0, $"--max-steps: must be 0 (all) or more, got {o.MaxSteps}");
        Require(double.IsFinite(o.TimeBudgetSeconds) && o.TimeBudgetSeconds >= 0, $"--time-budget: must be 0 (none) or more seconds, got {o.TimeBudgetSeconds}");
        Require(double.IsFinite(o.TargetLoss) && o.TargetLoss >= 0, $"--target-loss: must be 0 (none) or more, got {o.TargetLoss}");
        // Last, the loader's own checks on the config.json training would write: one rule for both sides.
        try { LlamaConfig.Parse(o.ModelConfig(tokenizerVocab).ToJson("bfloat16"), "the model these options describe"); }
        catch (ModelLoadException e) { throw new TrainingInputException($"the options describe a model the loader refuses: {e.Message}"); }
    }
}
