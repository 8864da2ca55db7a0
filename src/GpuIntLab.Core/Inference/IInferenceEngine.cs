using GpuIntLab.Core.Models;

namespace GpuIntLab.Core.Inference;

/// <summary>What an engine is, for results to say exactly what was measured.</summary>
/// <param name="Name">Short engine id, e.g. "oracle", "reference", "ilgpu-fp16".</param>
/// <param name="Format">Number format of the linear layers, e.g. "Q16.48", "float64", "fp16".</param>
/// <param name="Scheme">Quantization scheme, e.g. "exact", "per-tensor", "per-channel".</param>
/// <param name="Accelerator">Where it runs, e.g. "cpu (2 threads)" or a device name.</param>
/// <param name="Precisions">Which ops ran in which precision, e.g. "matmul" -> "int64 x int64 -> int128, RNE once".</param>
public sealed record EngineInfo(string Name, string Format, string Scheme, string Accelerator, IReadOnlyDictionary<string, string> Precisions);

/// <summary>
/// The one contract every engine implements (the oracle, the float64 reference and every backend),
/// so the experiment runner treats all alike. Engines keep a KV cache: <see cref="Prefill"/> appends a
/// run of tokens, <see cref="Decode"/> appends one; both return the next-token logits after the last
/// token, as float64 at the boundary.
/// </summary>
public interface IInferenceEngine : IDisposable
{
    EngineInfo Info { get; }
    LlamaConfig Config { get; }

    /// <summary>Tokens in the KV cache (the position the next token will take).</summary>
    int Position { get; }

    /// <summary>Empties the KV cache.</summary>
    void Reset();

    /// <summary>Appends the tokens to the cache and returns the logits after the last one.</summary>
    double[] Prefill(ReadOnlySpan<int> tokens);

    /// <summary>Appends one token and returns the logits after it.</summary>
    double[] Decode(int token);
}

/// <summary>Checks shared by every engine: token ids in range, context not exceeded.</summary>
public static class EngineGuards
{
    public static void CheckTokens(LlamaConfig config, ReadOnlySpan<int> tokens, int position)
    {
        for (int i = 0; i < tokens.Length; i++)
            if ((uint)tokens[i] >= (uint)config.VocabSize)
                throw new TokenInputException($"token id {tokens[i]} at index {i} is outside the vocabulary [0, {config.VocabSize})");
        if (position + tokens.Length > config.MaxPositionEmbeddings)
            throw new TokenInputException($"{position + tokens.Length} tokens exceed the model's context of {config.MaxPositionEmbeddings} (max_position_embeddings)");
    }
}

/// <summary>Prefill for engines that run one token per step: checks, then steps through the prompt, logits only at the end.</summary>
public static class StepwisePrefill
{
    /// <param name="step">Runs one token; computes and returns logits only when asked.</param>
    public static double[] Run(LlamaConfig config, ReadOnlySpan<int> tokens, int position, Func<int, bool, double[]?> step)
    {
        EngineGuards.CheckTokens(config, tokens, position);
        if (tokens.Length == 0) throw new ArgumentException("prefill needs at least one token", nameof(tokens));
        for (int i = 0; i < tokens.Length - 1; i++) step(tokens[i], false);
        return step(tokens[^1], true) ?? throw new InvalidOperationException("the engine's step returned no logits");
    }
}

/// <summary>Token ids outside the vocabulary, or more tokens than the context holds. The message is the whole story (no parameter suffix).</summary>
public sealed class TokenInputException(string message) : ArgumentOutOfRangeException(null, message)
{
    public override string Message => base.Message.Split(Environment.NewLine)[0];
}

/// <summary>Greedy decoding over any engine.</summary>
public static class Greedy
{
    public static int ArgMax(ReadOnlySpan<double> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    /// <summary>Prefills the prompt, then generates <paramref name="newTokens"/> greedy tokens (stopping early at <paramref name="stopToken"/> if given).</summary>
    public static List<int> Generate(IInferenceEngine engine, ReadOnlySpan<int> prompt, int newTokens, int? stopToken = null, Action<int, double[]>? onToken = null)
    {
        var generated = new List<int>(newTokens);
        if (newTokens <= 0) return generated;
        var logits = engine.Prefill(prompt);
        for (int i = 0; i < newTokens; i++)
        {
            int next = ArgMax(logits);
            generated.Add(next);
            onToken?.Invoke(next, logits);
            if (next == stopToken || i == newTokens - 1) break;
            logits = engine.Decode(next);
        }
        return generated;
    }
}
