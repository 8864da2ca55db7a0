using GpuIntLab.Core.Formats.WeightOnly;
using Xunit;

namespace GpuIntLab.Tests.Quantization;

/// <summary>
/// INT4 weight-only RTN, GPTQ and AWQ against references written here separately: the grids from the reference
/// repositories' formulas, GPTQ as a non-lazy column loop with a Gauss-Jordan inverse and a direct upper Cholesky,
/// AWQ as a brute-force search over the same ratio grid.
/// </summary>
public class Int4WeightOnlyTests
{
    // ---- independent references ----

    /// <summary>(scale, zero) of IST-DASLab/gptq find_params (sym quirk included) with the scale rounded to float.</summary>
    private static (float Scale, double Zero) GptqParams(IReadOnlyList<double> x, bool sym)
    {
        double xmin = Math.Min(0, x.Min()), xmax = Math.Max(0, x.Max());
        if (sym)
        {
            xmax = Math.Max(-xmin, xmax);
            if (xmin < 0) xmin = -xmax;
        }
        if (xmin == 0 && xmax == 0) { xmin = -1; xmax = 1; }
        float scale = (float)((xmax - xmin) / 15);
        return (scale, sym ? 8 : Math.Round(-xmin / scale, MidpointRounding.ToEven));
    }

    /// <summary>(scale, zero) of llm-awq pseudo_quantize_tensor.</summary>
    private static (float Scale, double Zero) AwqParams(IReadOnlyList<double> x, bool sym)
    {
        if (sym) return ((float)(Math.Max(x.Max(Math.Abs), 1e-5) / 7), 8);
        float scale = (float)(Math.Max(x.Max() - x.Min(), 1e-5) / 15);
        return (scale, Math.Clamp(-Math.Round(x.Min() / scale, MidpointRounding.ToEven), 0, 15));
    }

    private static int Code(double w, (float Scale, double Zero) p) =>
        (int)Math.Clamp(Math.Round(w / p.Scale, MidpointRounding.ToEven) + p.Zero, 0, 15);

    private static double[] Random(int count, int seed, double spread = 1)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (random.NextDouble() * 2 - 1) * spread).ToArray();
    }

    /// <summary>Correlated activations: x = z · A with A a random mixing matrix plus a few loud channels.</summary>
    private static double[] CorrelatedActivations(int tokens, int cols, int seed)
    {
        var random = new Random(seed);
        double[] mix = Random(cols * cols, seed + 1);
        for (int i = 0; i < cols; i++) mix[i * cols + i] += 2;
        var x = new double[tokens * cols];
        var z = new double[cols];
        for (int t = 0; t < tokens; t++)
        {
            for (int i = 0; i < cols; i++) z[i] = random.NextDouble() * 2 - 1;
            for (int j = 0; j < cols; j++)
            {
                double sum = 0;
                for (int i = 0; i < cols; i++) sum += z[i] * mix[i * cols + j];
                x[t * cols + j] = sum * (j % 13 == 0 ? 8 : 1);
            }
        }
        return x;
    }

    private static double OutputError(double[] x, int tokens, int cols, double[] w, double[] wq, int rows)
    {
        double total = 0;
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++)
            {
                double d = 0;
                for (int c = 0; c < cols; c++) d += x[t * cols + c] * (wq[r * cols + c] - w[r * cols + c]);
                total += d * d;
            }
        return total / ((double)tokens * rows);
    }

    /// <summary>
    /// GPTQ written out directly: H, dead columns, act-order (stable), damping, H⁻¹ by Gauss-Jordan, its upper
    /// Cholesky factor by the row formula, then a plain column loop that updates every later column immediately;
    /// group grids are read from the weights as they stood at the start of each lazy block (the reference's quirk).
    /// Returns codes in original column order.
    /// </summary>
    private static int[] ReferenceGptq(double[] weights, int rows, int cols, double[] x, int tokens, int groupSize,
        int blockSize, bool sym, bool actOrder, double percDamp)
    {
        int n = cols;
        var h = new double[n, n];
        for (int t = 0; t < tokens; t++)
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) h[i, j] += 2.0 / tokens * x[t * n + i] * x[t * n + j];
        var w = new double[rows, n];
        for (int r = 0; r < rows; r++) for (int c = 0; c < n; c++) w[r, c] = weights[r * n + c];
        for (int i = 0; i < n; i++)
            if (h[i, i] == 0) { h[i, i] = 1; for (int r = 0; r < rows; r++) w[r, i] = 0; }
        int[] perm = Enumerable.Range(0, n).OrderByDescending(i => h[i, i]).ThenBy(i => i).ToArray();
        if (!actOrder) perm = Enumerable.Range(0, n).ToArray();
        var hp = new double[n, n];
        var wp = new double[rows, n];
        for (int a = 0; a < n; a++) for (int b = 0; b < n; b++) hp[a, b] = h[perm[a], perm[b]];
        for (int r = 0; r < rows; r++) for (int a = 0; a < n; a++) wp[r, a] = w[r, perm[a]];
        double damp = percDamp * Enumerable.Range(0, n).Average(i => hp[i, i]);
        for (int i = 0; i < n; i++) hp[i, i] += damp;

        // Gauss-Jordan inverse.
        var aug = new double[n, 2 * n];
        for (int i = 0; i < n; i++) { for (int j = 0; j < n; j++) aug[i, j] = hp[i, j]; aug[i, n + i] = 1; }
        for (int col = 0; col < n; col++)
        {
            int pivot = Enumerable.Range(col, n - col).MaxBy(r => Math.Abs(aug[r, col]));
            for (int j = 0; j < 2 * n; j++) (aug[col, j], aug[pivot, j]) = (aug[pivot, j], aug[col, j]);
            double p = aug[col, col];
            for (int j = 0; j < 2 * n; j++) aug[col, j] /= p;
            for (int r = 0; r < n; r++)
            {
                if (r == col) continue;
                double f = aug[r, col];
                for (int j = 0; j < 2 * n; j++) aug[r, j] -= f * aug[col, j];
            }
        }
        // Upper Cholesky U of A = H⁻¹ (A = UᵀU): U[i,i] = sqrt(A[i,i] - Σ_k<i U[k,i]²), U[i,j] = (A[i,j] - Σ_k<i U[k,i]U[k,j]) / U[i,i].
        var u = new double[n, n];
        for (int i = 0; i < n; i++)
        {
            double diagonal = aug[i, n + i];
            for (int k = 0; k < i; k++) diagonal -= u[k, i] * u[k, i];
            u[i, i] = Math.Sqrt(diagonal);
            for (int j = i + 1; j < n; j++)
            {
                double sum = aug[i, n + j];
                for (int k = 0; k < i; k++) sum -= u[k, i] * u[k, j];
                u[i, j] = sum / u[i, i];
            }
        }

        var codes = new int[rows, n];
        var snapshot = new double[rows, n];
        var grids = new (float Scale, double Zero)[rows];
        for (int i = 0; i < n; i++)
        {
            if (i % blockSize == 0) Array.Copy(wp, snapshot, wp.Length);
            if (i % groupSize == 0)
                for (int r = 0; r < rows; r++)
                    grids[r] = GptqParams(Enumerable.Range(i, Math.Min(groupSize, n - i)).Select(c => snapshot[r, c]).ToArray(), sym);
            for (int r = 0; r < rows; r++)
            {
                int code = Code(wp[r, i], grids[r]);
                codes[r, i] = code;
                double err = (wp[r, i] - grids[r].Scale * (code - grids[r].Zero)) / u[i, i];
                for (int j = i + 1; j < n; j++) wp[r, j] -= err * u[i, j];
            }
        }
        var result = new int[rows * n];
        for (int r = 0; r < rows; r++) for (int a = 0; a < n; a++) result[r * n + perm[a]] = codes[r, a];
        return result;
    }

    // ---- tests ----

    [Fact]
    public void Quantization_Int4_RtnMatchesBothReferenceGrids()
    {
        int rows = 5, cols = 300; // a short last group
        double[] w = Random(rows * cols, 1, 0.05);
        for (int c = 128; c < 256; c++) w[2 * cols + c] = Math.Abs(w[2 * cols + c]); // a non-negative group (sym quirk)
        for (int c = 0; c < 128; c++) w[3 * cols + c] = 0;                          // a zero group
        foreach (var grid in new[] { Int4GridRule.Gptq, Int4GridRule.Awq })
            foreach (bool sym in new[] { false, true })
            {
                var q = Int4Rtn.Quantize(w, rows, cols, 128, sym, grid);
                Assert.Equal(3, q.GroupCount);
                for (int r = 0; r < rows; r++)
                    for (int g = 0; g < 3; g++)
                    {
                        var group = Enumerable.Range(g * 128, Math.Min(128, cols - g * 128)).Select(c => w[r * cols + c]).ToArray();
                        var p = grid == Int4GridRule.Gptq ? GptqParams(group, sym) : AwqParams(group, sym);
                        Assert.Equal(p.Scale, q.Scales[r * 3 + g]);
                        Assert.Equal(p.Zero, q.Zeros[r * 3 + g]);
                        for (int i = 0; i < group.Length; i++)
                        {
                            int c = g * 128 + i;
                            Assert.Equal(Code(group[i], p), q.Codes[r * cols + c]);
                            Assert.Equal((double)p.Scale * (Code(group[i], p) - p.Zero), q.Dequantize(r, c));
                        }
                    }
            }
        // Hand-computed: GPTQ symmetric grid on {-1.875, 1.875, 0.5}: s = 3.75/15 = 0.25 (exact), z = 8;
        // -1.875 -> -7.5 -> -8 -> code 0; +1.875 -> 7.5 -> 8 -> 16, clamped to 15 (value 1.75); 0.5 -> 2 -> 10.
        var hand = Int4Rtn.Quantize([-1.875, 1.875, 0.5], 1, 3, 128, symmetric: true);
        Assert.Equal([0, 15, 10], hand.Codes);
        Assert.Equal(0.25f, hand.Scales[0]);
        Assert.Equal(1.75, hand.Dequantize(0, 1));
        Assert.Contains("not finite", Assert.Throws<ArgumentException>(() => Int4Rtn.Quantize([double.NaN], 1, 1)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => Int4Rtn.Quantize([1.0], 1, 1, groupSize: 0));
    }

    public static TheoryData<int, int, bool, bool> GptqCases() => new()
    {
        { 16, 16, false, false },
        { 16, 16, true, true },
        { 8, 16, false, false },   // group < block: stale group columns (the reference's quirk)
        { 8, 16, true, true },
        { 16, 8, false, true },    // group > block
        { 48, 48, false, false },  // one group per row
    };

    [Theory]
    [MemberData(nameof(GptqCases))]
    public void Quantization_Gptq_MatchesDirectReference(int groupSize, int blockSize, bool sym, bool actOrder)
    {
        int rows = 6, cols = 48, tokens = 96;
        double[] w = Random(rows * cols, 7, 0.1);
        double[] x = CorrelatedActivations(tokens, cols, 8);
        for (int t = 0; t < tokens; t++) x[t * cols + 5] = 0; // a dead input channel
        var result = Gptq.Quantize(w, rows, cols, x, tokens, new GptqOptions(groupSize, sym, blockSize, 0.01, actOrder));
        int[] expected = ReferenceGptq(w, rows, cols, x, tokens, groupSize, blockSize, sym, actOrder, 0.01);
        Assert.Equal(expected, result.Matrix.Codes.Select(c => (int)c));
        Assert.All(Enumerable.Range(0, rows), r => Assert.Equal(0, result.Matrix.Dequantize(r, 5)));
        if (!actOrder) Assert.Equal(Enumerable.Range(0, cols).Select(c => c / groupSize), result.Matrix.GroupOfColumn);
        else Assert.Equal(Enumerable.Range(0, cols / groupSize).SelectMany(g => Enumerable.Repeat(g, groupSize)).Order(),
            result.Matrix.GroupOfColumn.Order());
    }

    [Fact]
    public void Quantization_Gptq_BeatsRtnOnCorrelatedInputs()
    {
        int rows = 16, cols = 128, tokens = 400;
        double[] w = Random(rows * cols, 11, 0.05);
        double[] x = CorrelatedActivations(tokens, cols, 12);
        foreach (bool sym in new[] { false, true })
            foreach (bool actOrder in new[] { false, true })
            {
                var gptq = Gptq.Quantize(w, rows, cols, x, tokens, new GptqOptions(32, sym, 32, 0.01, actOrder));
                var rtn = Int4Rtn.Quantize(w, rows, cols, 32, sym);
                double gptqError = OutputError(x, tokens, cols, w, gptq.Matrix.DequantizeAll(), rows);
                double rtnError = OutputError(x, tokens, cols, w, rtn.DequantizeAll(), rows);
                Assert.True(gptqError < 0.8 * rtnError, $"sym {sym} act-order {actOrder}: GPTQ {gptqError} vs RTN {rtnError}");
                Assert.All(gptq.Matrix.Codes, c => Assert.InRange(c, 0, 15));
                Assert.True(gptq.Loss > 0);
            }
        Assert.Contains("PercentDamp", Assert.Throws<InvalidOperationException>(() =>
            Gptq.QuantizeWithHessian(new double[8], 2, 4, Enumerable.Repeat(1.0, 16).ToArray(), new GptqOptions(4, PercentDamp: 0))).Message);
    }

    [Fact]
    public void Quantization_Awq_ChoosesTheBruteForceBestScale()
    {
        int cols = 64, tokens = 80;
        double[] x = Random(tokens * cols, 22);
        for (int t = 0; t < tokens; t++) { x[t * cols + 3] *= 100; x[t * cols + 40] *= 30; } // salient channels
        var weights = new List<(double[] Weights, int Rows)> { (Random(12 * cols, 23, 0.1), 12), (Random(4 * cols, 24, 0.1), 4) };
        var options = new AwqOptions(GroupSize: 32);
        var result = Awq.Quantize(weights, cols, x, tokens, options);

        // Brute force: every ratio k/20, s by the formula, W' = Q_awq(W s)/s per matrix, MSE over all outputs.
        double[] meanAbs = Enumerable.Range(0, cols).Select(c => Enumerable.Range(0, tokens).Average(t => Math.Abs(x[t * cols + c]))).ToArray();
        var losses = new double[20];
        for (int k = 0; k < 20; k++)
        {
            double[] raw = meanAbs.Select(m => Math.Max(Math.Pow(m, k / 20.0), 1e-4)).ToArray();
            double norm = Math.Sqrt(raw.Max() * raw.Min());
            float[] s = raw.Select(v => (float)(v / norm)).ToArray();
            if (k == result.BestRatioIndex) Assert.Equal(s, result.ChannelScales);
            double squares = 0; long count = 0;
            foreach (var (w, rows) in weights)
            {
                var wq = new double[w.Length];
                for (int r = 0; r < rows; r++)
                    for (int g = 0; g < cols / 32; g++)
                    {
                        var group = Enumerable.Range(g * 32, 32).Select(c => w[r * cols + c] * s[c]).ToArray();
                        var p = AwqParams(group, false);
                        for (int i = 0; i < 32; i++) wq[r * cols + g * 32 + i] = p.Scale * (Code(group[i], p) - p.Zero) / s[g * 32 + i];
                    }
                squares += OutputError(x, tokens, cols, w, wq, rows) * tokens * rows;
                count += tokens * rows;
            }
            losses[k] = squares / count;
            Assert.Equal(losses[k], result.LossPerRatio[k], 1e-9 * losses[k]);
        }
        int best = Array.IndexOf(losses, losses.Min());
        Assert.Equal(best, result.BestRatioIndex);
        Assert.True(result.BestRatioIndex > 0, "salient channels should move AWQ away from plain RTN");
        Assert.True(result.LossPerRatio[result.BestRatioIndex] < result.LossPerRatio[0]);
        Assert.Equal(result.ChannelScales, result.Matrices[0].ChannelScales);
    }
}
