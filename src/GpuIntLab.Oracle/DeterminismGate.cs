using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Oracle;

/// <summary>
/// The determinism gate: greedy generation from a fixed prompt set, hashing the oracle's raw int64
/// logits of every step (prompt positions included) with SHA-256. Any change to any bit of any
/// logit changes the hash, so a committed golden value pins the oracle's arithmetic.
/// </summary>
public static class DeterminismGate
{
    /// <summary>The reference C lab's four gate prompts as Llama 2 ids (SentencePiece's "1+1="), and BOS alone.</summary>
    public static readonly int[][] Llama2Prompts =
    [
        [1, 450, 7483, 310, 3444, 338],
        [1, 9038, 2501, 263, 931],
        [1, 29871, 29896, 29974, 29896, 29922],
        [1, 450, 6593, 310, 2834, 338],
        [1],
    ];

    public static string Hash(LlamaCheckpoint checkpoint, IReadOnlyList<int[]> prompts, int newTokens, int threads)
    {
        using var oracle = new OracleEngine(checkpoint, threads);
        return Hash(oracle, prompts, newTokens);
    }

    /// <summary>The same hash for any exact engine (the oracle, the ILGPU and CUDA INT64 backends): one gate for all.</summary>
    public static string Hash(IRawLogitsEngine engine, IReadOnlyList<int[]> prompts, int newTokens)
    {
        using var hash = new LogitsHash();
        foreach (var prompt in prompts)
        {
            engine.Reset();
            long[] logits = [];
            foreach (int token in prompt) { engine.Decode(token); logits = engine.LastRawLogits; hash.Append(logits); }
            for (int i = 0; i < newTokens; i++)
            {
                engine.Decode(ArgMax(logits));
                logits = engine.LastRawLogits;
                hash.Append(logits);
            }
        }
        return hash.Finish();
    }

    /// <summary>Greedy choice on raw integers: the first index of the largest value (no float64 involved).</summary>
    public static int ArgMax(ReadOnlySpan<long> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
}
