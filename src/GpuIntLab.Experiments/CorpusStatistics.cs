using System.Text.Json.Serialization;

namespace GpuIntLab.Experiments;

/// <summary>
/// One chunk's sufficient statistics for one backend against the base (the oracle) on that chunk's scored
/// positions. Sums, not means, so chunks from shards merge by concatenation and every uncertainty is recomputed
/// exactly from the merged set; the per-position KL values are kept for percentiles and the CDF.
/// </summary>
public sealed class ChunkScore
{
    [JsonPropertyName("chunk")] public int Chunk { get; set; }
    [JsonPropertyName("n")] public int Positions { get; set; }
    [JsonPropertyName("kl_sum")] public double KlSum { get; set; }
    [JsonPropertyName("kl_sq_sum")] public double KlSquareSum { get; set; }
    [JsonPropertyName("same_top1")] public int SameTop1 { get; set; }
    /// <summary>Sum of -log p_base(actual next token).</summary>
    [JsonPropertyName("nll_base_sum")] public double NllBaseSum { get; set; }
    /// <summary>Sum of -log p_backend(actual next token).</summary>
    [JsonPropertyName("nll_sum")] public double NllSum { get; set; }
    /// <summary>Sum of p_backend(next) - p_base(next).</summary>
    [JsonPropertyName("dp_sum")] public double DpSum { get; set; }
    [JsonPropertyName("dp_sq_sum")] public double DpSquareSum { get; set; }
    /// <summary>KL(base || backend) at each scored position, in order.</summary>
    [JsonPropertyName("kl")] public double[] Kl { get; set; } = [];

    /// <summary>Scores one chunk from the base's log-probabilities and the backend's logits at each scored position.</summary>
    public static ChunkScore Of(int chunk, IReadOnlyList<double[]> baseLogProbs, IReadOnlyList<double[]> backendLogits, ReadOnlySpan<int> targets)
    {
        if (baseLogProbs.Count != backendLogits.Count || baseLogProbs.Count != targets.Length)
            throw new ArgumentException("base, backend and targets must cover the same positions");
        var score = new ChunkScore { Chunk = chunk, Positions = targets.Length, Kl = new double[targets.Length] };
        for (int i = 0; i < targets.Length; i++)
        {
            var lp = baseLogProbs[i];
            var lq = TokenMetrics.LogSoftmax(backendLogits[i]);
            double kl = 0;
            for (int v = 0; v < lp.Length; v++)
            {
                double p = Math.Exp(lp[v]);
                if (p > 0) kl += p * (lp[v] - lq[v]);
            }
            kl = Math.Max(0, kl);
            int t = targets[i];
            double dp = Math.Exp(lq[t]) - Math.Exp(lp[t]);
            score.Kl[i] = kl;
            score.KlSum += kl; score.KlSquareSum += kl * kl;
            if (ArgMax(lp) == ArgMax(lq)) score.SameTop1++;
            score.NllBaseSum -= lp[t]; score.NllSum -= lq[t];
            score.DpSum += dp; score.DpSquareSum += dp * dp;
        }
        return score;
    }

    // log-softmax is monotone, so the argmax of log-probs is the argmax of logits (first index on ties).
    private static int ArgMax(double[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }
}

/// <summary>A mean with its standard error over chunks and llama.cpp's naive per-position standard error.</summary>
public sealed record Estimate(double Mean, double Se, double NaiveSe);

/// <summary>Everything the corpus record reports, computed from a set of chunk scores.</summary>
public sealed record CorpusSummary(int Chunks, int TokensScored, Estimate Kl, double KlP50, double KlP90, double KlP99, double KlP999, double KlMax,
    Estimate SameTop1, double Ppl, double PplBase, double PplRatio, (double Low, double High) PplRatioCi95, Estimate LogPplRatio,
    Estimate Dp, double DpRms, double DpRmsSe);

/// <summary>A paired comparison of two backends on the same chunks: mean difference (A - B) with a 95% interval over chunks.</summary>
public sealed record PairedDifference(int Chunks, int Positions, double Difference, double Se, double Low, double High)
{
    /// <summary>Whether the 95% interval excludes zero.</summary>
    public bool Significant => Low > 0 || High < 0;

    /// <summary>Two-sided p-value of "no difference" (paired t over chunks, Chunks - 1 df), the same test as the interval.</summary>
    public double PValue => Se > 0 ? StudentT.TwoSidedP(Difference / Se, Chunks - 1) : Difference == 0 ? 1 : 0;
}

/// <summary>
/// The corpus statistics. Positions of one chunk share their context, so they are not independent: every
/// uncertainty is computed between chunks, treating each chunk as one sample (a cluster-robust ratio estimator:
/// for a total mean m = sum S_c / sum n_c, SE^2 = K/(K-1) * sum_c (S_c - m n_c)^2 / (sum n_c)^2, which for chunks of
/// equal size is the plain standard error of the K chunk means), and intervals use Student's t with K-1 degrees of
/// freedom. llama.cpp's naive figure (every position independent: sqrt((mean(x^2) - mean^2) / (N-1))) is kept
/// beside it for comparison.
/// </summary>
public static class CorpusStatistics
{
    public const string SeMethod = "between-chunk (cluster-robust ratio estimator over chunks, each chunk one sample; 95% intervals with Student t, K-1 df); *_naive_se: llama.cpp's per-position formula";
    public const string PercentileMethod = "linear interpolation between order statistics: x[floor(h)] + (h - floor(h)) (x[floor(h)+1] - x[floor(h)]), h = (N-1) p (numpy's default)";

    public static CorpusSummary Summarize(IReadOnlyList<ChunkScore> chunks)
    {
        if (chunks.Count == 0) throw new ArgumentException("no chunks to summarize", nameof(chunks));
        int n = chunks.Sum(c => c.Positions);
        var kl = chunks.SelectMany(c => c.Kl).Order().ToArray();
        var klEstimate = Mean(chunks, c => c.KlSum, c => c.KlSquareSum);
        // same_top1 is 0/1 per position, so its sum of squares is its sum.
        var sameEstimate = Mean(chunks, c => c.SameTop1, c => c.SameTop1);
        var logRatio = Mean(chunks, c => c.NllSum - c.NllBaseSum, _ => double.NaN);
        double t = StudentT.Quantile975(chunks.Count - 1);
        var dp = Mean(chunks, c => c.DpSum, c => c.DpSquareSum);
        var dpSquare = Mean(chunks, c => c.DpSquareSum, _ => double.NaN);
        double dpRms = Math.Sqrt(dpSquare.Mean);
        // Delta method: d sqrt(x) = dx / (2 sqrt(x)).
        double dpRmsSe = dpRms > 0 ? dpSquare.Se / (2 * dpRms) : 0;
        return new CorpusSummary(chunks.Count, n, klEstimate,
            Percentile(kl, 0.5), Percentile(kl, 0.9), Percentile(kl, 0.99), Percentile(kl, 0.999), kl[^1],
            sameEstimate,
            Math.Exp(chunks.Sum(c => c.NllSum) / n), Math.Exp(chunks.Sum(c => c.NllBaseSum) / n),
            Math.Exp(logRatio.Mean), (Math.Exp(logRatio.Mean - t * logRatio.Se), Math.Exp(logRatio.Mean + t * logRatio.Se)), logRatio,
            dp, dpRms, dpRmsSe);
    }

    /// <summary>Total mean of a per-position quantity from per-chunk sums, its between-chunk SE, and the naive SE (NaN when no sum of squares is given).</summary>
    public static Estimate Mean(IReadOnlyList<ChunkScore> chunks, Func<ChunkScore, double> sum, Func<ChunkScore, double> squareSum)
    {
        int k = chunks.Count;
        double n = chunks.Sum(c => c.Positions);
        double mean = chunks.Sum(sum) / n;
        double se = 0;
        if (k > 1)
        {
            double acc = 0;
            foreach (var c in chunks) { double r = sum(c) - mean * c.Positions; acc += r * r; }
            se = Math.Sqrt(k / (k - 1.0) * acc) / n;
        }
        double naive = double.NaN;
        if (n > 1)
        {
            double meanSquare = chunks.Sum(squareSum) / n;
            naive = Math.Sqrt(Math.Max(0, meanSquare - mean * mean) / (n - 1));
        }
        return new Estimate(mean, se, naive);
    }

    /// <summary>Percentile p in [0, 1] of sorted values (see <see cref="PercentileMethod"/>).</summary>
    public static double Percentile(double[] sorted, double p)
    {
        if (sorted.Length == 0) throw new ArgumentException("no values", nameof(sorted));
        double h = (sorted.Length - 1) * p;
        int lo = (int)Math.Floor(h);
        if (lo >= sorted.Length - 1) return sorted[^1];
        return sorted[lo] + (h - lo) * (sorted[lo + 1] - sorted[lo]);
    }

    /// <summary>
    /// Mean over positions of (A - B) for a per-chunk sum, on the chunks both have (paired by chunk index), with the
    /// between-chunk SE of the difference and a 95% t interval. Null when fewer than two chunks are shared.
    /// </summary>
    public static PairedDifference? Paired(IReadOnlyList<ChunkScore> a, IReadOnlyList<ChunkScore> b, Func<ChunkScore, double> sum)
    {
        var byChunk = b.ToDictionary(c => c.Chunk);
        var shared = new List<ChunkScore>();
        foreach (var ca in a)
        {
            if (!byChunk.TryGetValue(ca.Chunk, out var cb)) continue;
            if (ca.Positions != cb.Positions) throw new InvalidOperationException($"chunk {ca.Chunk} scored {ca.Positions} positions in one record and {cb.Positions} in the other");
            shared.Add(new ChunkScore { Chunk = ca.Chunk, Positions = ca.Positions, KlSum = sum(ca) - sum(cb) });
        }
        if (shared.Count < 2) return null;
        var d = Mean(shared, c => c.KlSum, _ => double.NaN);
        double t = StudentT.Quantile975(shared.Count - 1);
        return new PairedDifference(shared.Count, shared.Sum(c => c.Positions), d.Mean, d.Se, d.Mean - t * d.Se, d.Mean + t * d.Se);
    }

    /// <summary>"A lower than B", "A higher than B", or "no difference at this corpus size".</summary>
    public static string Verdict(PairedDifference? d, string a, string b) => d switch
    {
        null => "too few shared chunks",
        { High: < 0 } => $"{a} lower than {b}",
        { Low: > 0 } => $"{a} higher than {b}",
        _ => "no difference at this corpus size",
    };
}

/// <summary>Student's t distribution: the two-sided 95% quantile t_{0.975, df}.</summary>
public static class StudentT
{
    // Tabulated t_{0.975} for df 1..30 (standard tables, 4 significant figures).
    private static readonly double[] s_table =
    [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];

    /// <summary>t_{0.975, df}; beyond df 30 the Cornish-Fisher expansion around z = 1.959964 (error below 1e-4 there).</summary>
    public static double Quantile975(int df)
    {
        if (df < 1) return double.PositiveInfinity;
        if (df <= s_table.Length) return s_table[df - 1];
        const double z = 1.959963984540054;
        double v = df, z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
        return z + (z3 + z) / (4 * v) + (5 * z5 + 16 * z3 + 3 * z) / (96 * v * v) + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * v * v * v);
    }

    /// <summary>
    /// Two-sided p-value P(|T| &gt;= |t|) of Student's t with <paramref name="df"/> degrees of freedom:
    /// I_{df/(df+t^2)}(df/2, 1/2), the regularized incomplete beta function (continued fraction, relative error ~1e-12).
    /// </summary>
    public static double TwoSidedP(double t, int df)
    {
        if (df < 1) throw new ArgumentOutOfRangeException(nameof(df), df, "needs at least one degree of freedom");
        if (double.IsNaN(t)) return double.NaN;
        if (double.IsInfinity(t)) return 0;
        return RegularizedIncompleteBeta(df / (df + t * t), df / 2.0, 0.5);
    }

    /// <summary>I_x(a, b) by the continued fraction of Numerical Recipes (betacf, modified Lentz), using the symmetry for x past the mean.</summary>
    private static double RegularizedIncompleteBeta(double x, double a, double b)
    {
        if (x <= 0) return 0;
        if (x >= 1) return 1;
        double lnFront = LogGamma(a + b) - LogGamma(a) - LogGamma(b) + a * Math.Log(x) + b * Math.Log(1 - x);
        if (x < (a + 1) / (a + b + 2)) return Math.Exp(lnFront) * BetaContinuedFraction(x, a, b) / a;
        return 1 - Math.Exp(lnFront) * BetaContinuedFraction(1 - x, b, a) / b;
    }

    private static double BetaContinuedFraction(double x, double a, double b)
    {
        const double tiny = 1e-300;
        double c = 1, d = 1 - (a + b) * x / (a + 1);
        if (Math.Abs(d) < tiny) d = tiny;
        d = 1 / d;
        double h = d;
        for (int m = 1; m <= 10000; m++)
        {
            int m2 = 2 * m;
            double aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2));
            d = 1 + aa * d; if (Math.Abs(d) < tiny) d = tiny;
            c = 1 + aa / c; if (Math.Abs(c) < tiny) c = tiny;
            d = 1 / d; h *= d * c;
            aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1));
            d = 1 + aa * d; if (Math.Abs(d) < tiny) d = tiny;
            c = 1 + aa / c; if (Math.Abs(c) < tiny) c = tiny;
            d = 1 / d;
            double step = d * c;
            h *= step;
            if (Math.Abs(step - 1) < 1e-15) return h;
        }
        throw new InvalidOperationException($"incomplete beta continued fraction did not converge (x={x}, a={a}, b={b})");
    }

    /// <summary>ln Gamma(x) for x &gt; 0 (Lanczos, g = 7, 9 terms; relative error ~1e-15).</summary>
    private static double LogGamma(double x)
    {
        double[] g = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
            12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
        if (x < 0.5) return Math.Log(Math.PI / Math.Abs(Math.Sin(Math.PI * x))) - LogGamma(1 - x);
        x -= 1;
        double sum = g[0];
        for (int i = 1; i < g.Length; i++) sum += g[i] / (x + i);
        double t = x + 7.5;
        return 0.5 * Math.Log(2 * Math.PI) + (x + 0.5) * Math.Log(t) - t + Math.Log(sum);
    }
}

/// <summary>Holm's step-down correction: which of m comparisons stay significant at family-wise level alpha.</summary>
public static class Holm
{
    /// <summary>For each p-value, whether Holm's procedure at family-wise error <paramref name="alpha"/> rejects its null.</summary>
    public static bool[] Rejects(IReadOnlyList<double> pValues, double alpha = 0.05)
    {
        var order = Enumerable.Range(0, pValues.Count).OrderBy(i => pValues[i]).ToArray();
        var rejects = new bool[pValues.Count];
        for (int k = 0; k < order.Length; k++)
        {
            // The k-th smallest p (0-based) is compared with alpha / (m - k); the first failure stops the procedure.
            if (!(pValues[order[k]] <= alpha / (order.Length - k))) break;
            rejects[order[k]] = true;
        }
        return rejects;
    }
}
