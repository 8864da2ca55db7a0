namespace GpuIntLab.Experiments;

/// <summary>How a backend's tokens and distributions compare with the oracle's (DESIGN section 8).</summary>
public static class TokenMetrics
{
    /// <summary>Positions where both greedy runs chose the same token, and the first position where they did not (null if none).</summary>
    public static (int Matches, int? FirstDivergence) FreeRunning(IReadOnlyList<int> oracle, IReadOnlyList<int> backend)
    {
        int n = Math.Min(oracle.Count, backend.Count);
        int matches = 0; int? first = null;
        for (int i = 0; i < n; i++)
        {
            if (oracle[i] == backend[i]) matches++;
            else first ??= i;
        }
        if (first == null && oracle.Count != backend.Count) first = n;
        return (matches, first);
    }

    /// <summary>log-softmax of logits, computed stably in float64.</summary>
    public static double[] LogSoftmax(ReadOnlySpan<double> logits)
    {
        double max = double.NegativeInfinity;
        foreach (var v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (var v in logits) sum += Math.Exp(v - max);
        double lse = max + Math.Log(sum);
        var result = new double[logits.Length];
        for (int i = 0; i < logits.Length; i++) result[i] = logits[i] - lse;
        return result;
    }

    /// <summary>KL(P_oracle || P_backend) in nats over the full vocabulary.</summary>
    public static double KlDivergence(ReadOnlySpan<double> oracleLogits, ReadOnlySpan<double> backendLogits)
    {
        var lp = LogSoftmax(oracleLogits);
        var lq = LogSoftmax(backendLogits);
        double kl = 0;
        for (int i = 0; i < lp.Length; i++)
        {
            double p = Math.Exp(lp[i]);
            if (p > 0) kl += p * (lp[i] - lq[i]);
        }
        return Math.Max(0, kl);
    }

    public static double MaxAbsDifference(ReadOnlySpan<double> a, ReadOnlySpan<double> b)
    {
        double max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    /// <summary>Indices of the k largest logits, largest first (ties: lower index first).</summary>
    public static int[] TopK(ReadOnlySpan<double> logits, int k)
    {
        var best = new List<int>(k + 1);
        for (int i = 0; i < logits.Length; i++)
        {
            int at = best.Count;
            while (at > 0 && logits[best[at - 1]] < logits[i]) at--;
            if (at < k) { best.Insert(at, i); if (best.Count > k) best.RemoveAt(k); }
        }
        return best.ToArray();
    }
}

/// <summary>
/// The near-tie rule at a first divergence: does each side's token lie in the other's top-N, and by how
/// much did the oracle prefer its own token over the backend's? A near tie flags a divergence that is
/// a coin flip rather than a kernel error.
/// </summary>
public sealed record NearTie(int Position, int OracleToken, int BackendToken, bool BackendTokenInOracleTopN, bool OracleTokenInBackendTopN, double OracleMargin)
{
    public const int N = 5;

    public bool IsNearTie => BackendTokenInOracleTopN && OracleTokenInBackendTopN;

    public static NearTie At(int position, ReadOnlySpan<double> oracleLogits, ReadOnlySpan<double> backendLogits, int oracleToken, int backendToken) =>
        new(position, oracleToken, backendToken,
            TokenMetrics.TopK(oracleLogits, N).Contains(backendToken),
            TokenMetrics.TopK(backendLogits, N).Contains(oracleToken),
            oracleLogits[oracleToken] - oracleLogits[backendToken]);
}

/// <summary>Median and spread of repeated timings.</summary>
public sealed record RateStats(double Median, double Min, double Max, int Samples)
{
    public static RateStats? Of(IReadOnlyList<double> values)
    {
        if (values.Count == 0) return null;
        var sorted = values.Order().ToArray();
        int n = sorted.Length;
        double median = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
        return new RateStats(median, sorted[0], sorted[^1], n);
    }
}
