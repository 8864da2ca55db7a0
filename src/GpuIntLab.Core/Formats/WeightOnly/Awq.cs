namespace GpuIntLab.Core.Formats.WeightOnly;

/// <summary>AWQ settings; the defaults are llm-awq's (<c>auto_scale.py</c>, <c>quantizer.py</c>) with group 128.</summary>
/// <param name="GroupSize">Input columns per group (128).</param>
/// <param name="Symmetric">AWQ's zero_point=False grid instead of its default asymmetric one.</param>
/// <param name="GridPoints">Number of ratios searched, ratio = k / GridPoints for k = 0..GridPoints-1 (20: 0, 0.05, ..., 0.95).</param>
/// <param name="Grid">The INT4 grid rule for the search and the final quantization (AWQ's own by default).</param>
public sealed record AwqOptions(int GroupSize = 128, bool Symmetric = false, int GridPoints = 20,
    Int4GridRule Grid = Int4GridRule.Awq);

/// <summary>
/// An AWQ result: the quantized matrices (codes of W·s, <see cref="Int4Matrix.ChannelScales"/> = s), the chosen
/// per-input-channel scale s, the chosen ratio and the output MSE of every ratio tried.
/// </summary>
public sealed record AwqResult(Int4Matrix[] Matrices, float[] ChannelScales, int BestRatioIndex, double BestRatio, double[] LossPerRatio);

/// <summary>
/// AWQ (Lin et al., MLSys 2024), the activation-aware scale search of <c>mit-han-lab/llm-awq
/// awq/quantize/auto_scale.py::auto_scale_block</c> (the original variant, not AutoAWQ's duo_scaling), followed by
/// round-to-nearest:
/// <list type="number">
/// <item>x_mean_c = mean over tokens of |x_c| (the reference's <c>get_act_scale</c>: a mean despite its name).</item>
/// <item>For ratio = k / GridPoints, k = 0..GridPoints-1: s_c = max(x_mean_c^ratio, 1e-4), then
/// s /= sqrt(max(s) · min(s)); s is rounded to float32 (what a backend stores); W'ᵢ = Q(Wᵢ · s) / s for every weight
/// matrix sharing the input; loss = mean over tokens and all their outputs of (X W'ᵀ - X Wᵀ)². The first strictly
/// smallest loss wins (ratio 0 is s = 1, plain RTN, so AWQ's loss never exceeds RTN's on the calibration set).</item>
/// <item>Result: Q(Wᵢ · s) with the channel scale s.</item>
/// </list>
/// x_mean^ratio uses Math.Pow, whose last ulp is the platform libm's (the scales may differ by an ulp across platforms).
/// <see cref="Quantize"/> measures the loss at the outputs of the linears themselves (the reference's choice for down
/// and o, whose inspected module is the linear); <see cref="SearchScales"/> takes the loss as a function, so a caller
/// measures it where the reference does for q/k/v (the self_attn output) and gate/up (the MLP output).
/// <see cref="SearchClip"/> is the reference's clip search (<c>auto_clip.py::auto_clip_layer</c>).
/// <para>
/// The caller's part (the backends' <c>Int4Calibration</c> does it, with the loss at the reference's modules and
/// <see cref="SearchClip"/> after the scales are applied). Pass every linear that shares one input together (they get one s): in a Llama block
/// (input_layernorm → q, k, v), (post_attention_layernorm → gate, up), (up → down), and (v → o) only when v's and o's
/// shapes match (multi-head attention; grouped-query models such as TinyLlama, 4 kv heads, skip it, as the reference
/// does). Fold 1/s into the operator that produces the input: for q/k/v divide input_layernorm's weight by s, for
/// gate/up divide post_attention_layernorm's weight, for down divide the rows of up_proj's weight by s before up_proj is
/// itself quantized (the reference applies every scale of a block first and quantizes afterwards), for o divide v's
/// rows. Calibrate each block on the full-precision outputs of the previous block (AWQ does not propagate quantized
/// activations, unlike GPTQ): 128 samples of 512 tokens in the reference (pile-val, seed 42).
/// </para>
/// </summary>
public static class Awq
{
    /// <summary>Lower clamp of s before normalisation (the reference's 1e-4).</summary>
    public const double MinScale = 1e-4;

    /// <summary>
    /// AWQ for the weight matrices <paramref name="weights"/> (each row-major [rowsᵢ, cols]) that share the input whose
    /// calibration activations are <paramref name="activations"/> [tokens, cols].
    /// </summary>
    public static AwqResult Quantize(IReadOnlyList<(double[] Weights, int Rows)> weights, int cols,
        ReadOnlySpan<double> activations, int tokens, AwqOptions options)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(options);
        if (weights.Count == 0) throw new ArgumentException("AWQ needs at least one weight matrix", nameof(weights));
        foreach (var (w, rows) in weights) Int4Checks.Matrix(w, rows, cols, nameof(weights));
        Int4Checks.Matrix(activations, tokens, cols, nameof(activations));
        Int4Checks.GroupSize(options.GroupSize);
        if (options.GridPoints <= 0) throw new ArgumentOutOfRangeException(nameof(options), options.GridPoints, "AwqOptions.GridPoints must be >= 1");

        double[] x = activations.ToArray();
        var meanAbs = MeanAbs(x, tokens, cols);

        var reference = new double[weights.Count][];
        for (int m = 0; m < weights.Count; m++) reference[m] = Outputs(x, tokens, cols, weights[m].Weights, weights[m].Rows);

        var search = SearchScales(meanAbs, options.GridPoints, s =>
        {
            double squares = 0;
            long count = 0;
            for (int m = 0; m < weights.Count; m++)
            {
                var (w, rows) = weights[m];
                Int4Matrix q = QuantizeScaled(w, rows, cols, s, options);
                double[] candidate = Outputs(x, tokens, cols, q.DequantizeAll(), rows);
                for (int i = 0; i < candidate.Length; i++)
                {
                    double diff = candidate[i] - reference[m][i];
                    squares += diff * diff;
                }
                count += candidate.Length;
            }
            return squares / count;
        });

        var matrices = new Int4Matrix[weights.Count];
        for (int m = 0; m < weights.Count; m++) matrices[m] = QuantizeScaled(weights[m].Weights, weights[m].Rows, cols, search.Scales, options);
        return new AwqResult(matrices, search.Scales, search.BestIndex, (double)search.BestIndex / options.GridPoints, search.Losses);
    }

    /// <summary>x_mean_c = mean over tokens of |x_c| (the reference's <c>get_act_scale</c>) of [tokens, cols] activations.</summary>
    public static double[] MeanAbs(ReadOnlySpan<double> activations, int tokens, int cols)
    {
        Int4Checks.Matrix(activations, tokens, cols, nameof(activations));
        var meanAbs = new double[cols];
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < cols; c++) meanAbs[c] += Math.Abs(activations[t * cols + c]);
        for (int c = 0; c < cols; c++) meanAbs[c] /= tokens;
        return meanAbs;
    }

    /// <summary>
    /// The reference's grid search (<c>_search_module_scale</c>): for ratio = k / gridPoints, s = <see cref="ScalesFor"/>,
    /// loss = <paramref name="lossOfScales"/>(s); the first strictly smallest loss wins (<c>loss &lt; best_error</c>).
    /// The caller's loss quantizes W·s, divides by s and measures the inspected module's output MSE against the
    /// unquantized output.
    /// </summary>
    public static (int BestIndex, float[] Scales, double[] Losses) SearchScales(ReadOnlySpan<double> meanAbs, int gridPoints, Func<float[], double> lossOfScales)
    {
        ArgumentNullException.ThrowIfNull(lossOfScales);
        if (gridPoints <= 0) throw new ArgumentOutOfRangeException(nameof(gridPoints), gridPoints, "AwqOptions.GridPoints must be >= 1");
        var losses = new double[gridPoints];
        int best = -1;
        double bestLoss = double.PositiveInfinity;
        float[]? bestScales = null;
        for (int k = 0; k < gridPoints; k++)
        {
            float[] s = ScalesFor(meanAbs, (double)k / gridPoints);
            losses[k] = lossOfScales(s);
            if (losses[k] < bestLoss) { bestLoss = losses[k]; best = k; bestScales = s; }
        }
        if (bestScales is null)
            throw new InvalidOperationException("AWQ found no finite loss; the activations or weights overflow float64");
        return (best, bestScales, losses);
    }

    /// <summary>W · diag(s): column c of row-major [rows, cols] multiplied by s_c (float64 products of the float32 s).</summary>
    public static double[] ScaleColumns(ReadOnlySpan<double> weights, int rows, int cols, ReadOnlySpan<float> s)
    {
        var scaled = new double[rows * cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) scaled[r * cols + c] = weights[r * cols + c] * s[c];
        return scaled;
    }

    /// <summary>
    /// The reference's clip search (<c>auto_clip.py::auto_clip_layer</c>, n_grid 20, max_shrink 0.5, n_sample_token 512):
    /// per (output row r, group g), with amax = max |W[r, g]|, try max_val = amax · (1 - i/20) for i = 0..9; the
    /// candidate group is clamp(W[r, g], -max_val, max_val) quantized by <paramref name="options"/>' grid; its error is
    /// the mean over the sampled tokens of (Σ_{c∈g} x_c q_c - Σ_{c∈g} x_c w_c)² (the group's partial output); the
    /// first strictly smaller error than the best so far (initially 1e9, the reference's) wins. Tokens are sampled with
    /// stride max(1, tokens / 512) from the first (the reference's <c>[0::n_token // 512]</c>, which fails below 512
    /// tokens; stride 1 there). A partial last group (cols not a multiple of the group size, which the reference
    /// refuses) is searched over its own columns. Returns max_val [rows, groupCount].
    /// </summary>
    public static double[] SearchClip(ReadOnlySpan<double> weights, int rows, int cols, ReadOnlySpan<double> activations, int tokens, AwqOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Int4Checks.Matrix(weights, rows, cols, nameof(weights));
        Int4Checks.Matrix(activations, tokens, cols, nameof(activations));
        Int4Checks.GroupSize(options.GroupSize);
        int stride = Math.Max(1, tokens / ClipSampleTokens);
        int samples = (tokens + stride - 1) / stride;
        int groupSize = options.GroupSize, groupCount = (cols + groupSize - 1) / groupSize;
        double[] w = weights.ToArray(), x = activations.ToArray();
        var best = new double[rows * groupCount];
        Parallel.For(0, rows, r =>
        {
            var candidate = new double[groupSize];
            var original = new double[samples];
            for (int g = 0; g < groupCount; g++)
            {
                int start = g * groupSize, length = Math.Min(groupSize, cols - start);
                ReadOnlySpan<double> group = w.AsSpan(r * cols + start, length);
                for (int s = 0; s < samples; s++) original[s] = GroupDot(x.AsSpan(s * stride * cols + start, length), group);
                double amax = 0;
                foreach (double v in group) amax = Math.Max(amax, Math.Abs(v));
                double bestError = ClipInitialError, bestMax = amax;
                for (int i = 0; i < ClipShrinkSteps; i++)
                {
                    double maxVal = amax * (1 - (double)i / ClipGridPoints);
                    for (int c = 0; c < length; c++) candidate[c] = Math.Clamp(group[c], -maxVal, maxVal);
                    var grid = Int4GroupGrid.Find(candidate.AsSpan(0, length), options.Symmetric, options.Grid);
                    for (int c = 0; c < length; c++) candidate[c] = grid.RoundTrip(candidate[c]);
                    double error = 0;
                    for (int s = 0; s < samples; s++)
                    {
                        double diff = GroupDot(x.AsSpan(s * stride * cols + start, length), candidate.AsSpan(0, length)) - original[s];
                        error += diff * diff;
                    }
                    error /= samples;
                    if (error < bestError) { bestError = error; bestMax = maxVal; }
                }
                best[r * groupCount + g] = bestMax;
            }
        });
        return best;
    }

    /// <summary>The reference's <c>apply_clip</c>: W[r, g] clamped to ±maxVal[r, g].</summary>
    public static double[] ApplyClip(ReadOnlySpan<double> weights, int rows, int cols, ReadOnlySpan<double> maxVal, int groupSize)
    {
        Int4Checks.Matrix(weights, rows, cols, nameof(weights));
        Int4Checks.GroupSize(groupSize);
        int groupCount = (cols + groupSize - 1) / groupSize;
        if (maxVal.Length != rows * groupCount) throw new ArgumentException($"maxVal has {maxVal.Length} entries, [{rows}, {groupCount}] needs {rows * groupCount}", nameof(maxVal));
        var clipped = new double[rows * cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                double m = maxVal[r * groupCount + c / groupSize];
                clipped[r * cols + c] = Math.Clamp(weights[r * cols + c], -m, m);
            }
        return clipped;
    }

    /// <summary>The clip search's grid (n_grid), steps tried (max_shrink · n_grid), token sample cap and initial error.</summary>
    public const int ClipGridPoints = 20, ClipShrinkSteps = 10, ClipSampleTokens = 512;
    private const double ClipInitialError = 1e9;

    private static double GroupDot(ReadOnlySpan<double> x, ReadOnlySpan<double> w)
    {
        double s = 0;
        for (int i = 0; i < x.Length; i++) s += x[i] * w[i];
        return s;
    }

    /// <summary>s_c = max(x_mean_c^ratio, 1e-4) / sqrt(max s · min s), rounded to float32.</summary>
    public static float[] ScalesFor(ReadOnlySpan<double> meanAbs, double ratio)
    {
        var raw = new double[meanAbs.Length];
        double max = double.NegativeInfinity, min = double.PositiveInfinity;
        for (int c = 0; c < raw.Length; c++)
        {
            raw[c] = Math.Max(Math.Pow(meanAbs[c], ratio), MinScale);
            max = Math.Max(max, raw[c]);
            min = Math.Min(min, raw[c]);
        }
        double normaliser = Math.Sqrt(max * min);
        var s = new float[raw.Length];
        for (int c = 0; c < raw.Length; c++) s[c] = (float)(raw[c] / normaliser);
        return s;
    }

    private static Int4Matrix QuantizeScaled(double[] w, int rows, int cols, float[] s, AwqOptions options)
    {
        var scaled = new double[w.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) scaled[r * cols + c] = w[r * cols + c] * s[c];
        return Int4Rtn.QuantizeUnchecked(scaled, rows, cols, options.GroupSize, options.Symmetric, options.Grid, s);
    }

    /// <summary>Y = X Wᵀ, [tokens, rows].</summary>
    private static double[] Outputs(double[] x, int tokens, int cols, double[] w, int rows)
    {
        var y = new double[tokens * rows];
        for (int t = 0; t < tokens; t++)
        {
            ReadOnlySpan<double> xt = x.AsSpan(t * cols, cols);
            for (int r = 0; r < rows; r++)
            {
                ReadOnlySpan<double> wr = w.AsSpan(r * cols, cols);
                double sum = 0;
                for (int c = 0; c < cols; c++) sum += xt[c] * wr[c];
                y[t * rows + r] = sum;
            }
        }
        return y;
    }
}
