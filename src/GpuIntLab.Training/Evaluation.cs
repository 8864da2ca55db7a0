using System.Numerics;

namespace GpuIntLab.Training;

/// <summary>Held-out loss, the unigram baseline, greedy next-token margins and greedy samples.</summary>
public static class Evaluation
{
    /// <summary>
    /// Mean next-token loss over the first windows of the held-out stream, taken back to back
    /// (window i covers tokens [i·seq, i·seq + seq]). The count is rounded up to whole batches and
    /// capped by the stream's length.
    /// </summary>
    public static double HeldOutLoss<T>(TrainableLlama<T> model, int[] stream, int seq, int windows, int batch)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int available = (stream.Length - 1) / seq;
        batch = Math.Max(1, Math.Min(batch, available));
        int batches = Math.Max(1, Math.Min((windows + batch - 1) / batch, available / batch));
        var tokens = new int[batch * (seq + 1)];
        double total = 0;
        for (int bi = 0; bi < batches; bi++)
        {
            for (int b = 0; b < batch; b++)
                Array.Copy(stream, (bi * batch + b) * seq, tokens, b * (seq + 1), seq + 1);
            total += model.Loss(tokens, batch, seq, backward: false);
        }
        return total / batches;
    }

    /// <summary>
    /// Cross-entropy (nats/token) of the held-out targets under the train stream's unigram distribution
    /// (add-one smoothed): the loss of a model that ignores context. Targets are every held-out token
    /// after the first, as the windows of <see cref="HeldOutLoss"/> predict them.
    /// </summary>
    public static double UnigramLoss(int[] train, int[] heldOut, int vocabSize)
    {
        var counts = new long[vocabSize];
        foreach (int t in train) counts[t]++;
        double denom = train.Length + vocabSize;
        double total = 0;
        for (int i = 1; i < heldOut.Length; i++) total -= Math.Log((counts[heldOut[i]] + 1) / denom);
        return total / (heldOut.Length - 1);
    }

    /// <summary>Top-1 minus top-2 logit at every position of the given held-out windows, sorted ascending.</summary>
    public static double[] GreedyMargins<T>(TrainableLlama<T> model, int[] stream, int seq, int windows)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int V = model.Config.VocabSize;
        var margins = new List<double>();
        int available = (stream.Length - 1) / seq;
        for (int w = 0; w < Math.Min(windows, available); w++)
        {
            var logits = model.Logits(stream.AsSpan(w * seq, seq));
            for (int p = 0; p < seq; p++)
            {
                double best = double.NegativeInfinity, second = double.NegativeInfinity;
                for (int j = 0; j < V; j++)
                {
                    double x = double.CreateChecked(logits[p * V + j]);
                    if (x > best) { second = best; best = x; }
                    else if (x > second) second = x;
                }
                margins.Add(best - second);
            }
        }
        margins.Sort();
        return [.. margins];
    }

    /// <summary>The q-th percentile (0..100) of sorted values, linear interpolation.</summary>
    public static double Percentile(double[] sorted, double q)
    {
        if (sorted.Length == 0) return double.NaN;
        double pos = q / 100 * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos), hi = Math.Min(sorted.Length - 1, lo + 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }

    /// <summary>Greedy continuation of a text prompt, decoded, stopping at EOS.</summary>
    public static string Continue<T>(TrainableLlama<T> model, ITrainingTokenizer tokenizer, string prompt, int maxNew)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var ids = tokenizer.Encode(prompt);
        var gen = model.Greedy(ids, maxNew, tokenizer.EosId);
        if (gen.Count > 0 && gen[^1] == tokenizer.EosId) gen.RemoveAt(gen.Count - 1);
        // Decode prompt and continuation together so a piece's leading space is rendered correctly.
        string all = tokenizer.Decode([.. ids.Skip(1), .. gen]);
        string head = tokenizer.Decode(ids.AsSpan(1));
        return all.StartsWith(head, StringComparison.Ordinal) ? all[head.Length..] : all;
    }
}
