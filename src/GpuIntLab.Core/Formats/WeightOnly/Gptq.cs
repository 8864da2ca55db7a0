namespace GpuIntLab.Core.Formats.WeightOnly;

/// <summary>GPTQ settings; the defaults are the reference's (IST-DASLab/gptq <c>fasterquant</c>, AutoGPTQ) with group 128.</summary>
/// <param name="GroupSize">Input columns per group (128). The column count gives one group per row.</param>
/// <param name="Symmetric">Symmetric grid (z = 8) instead of asymmetric.</param>
/// <param name="BlockSize">Columns per lazy batch update (128).</param>
/// <param name="PercentDamp">Damping λ = PercentDamp * mean(diag H) added to the diagonal (0.01).</param>
/// <param name="ActOrder">Process columns by decreasing diag(H) ("desc_act"); groups are then consecutive in that order.</param>
public sealed record GptqOptions(int GroupSize = 128, bool Symmetric = false, int BlockSize = 128,
    double PercentDamp = 0.01, bool ActOrder = false);

/// <summary>A GPTQ result: the quantized matrix and the reference's loss Σ (w - q)^2 / Hinv_ii^2 / 2.</summary>
public sealed record GptqResult(Int4Matrix Matrix, double Loss);

/// <summary>
/// Accumulates GPTQ's Hessian H = (2/N) Σ_tokens x xᵀ over calibration batches (the reference's <c>add_batch</c>, in
/// float64 instead of its float32 running mean: the same matrix up to rounding).
/// </summary>
public sealed class GptqHessian
{
    private readonly double[] _sum;

    /// <summary>An empty accumulator for a layer with <paramref name="inputs"/> input features.</summary>
    public GptqHessian(int inputs)
    {
        if (inputs <= 0) throw new ArgumentOutOfRangeException(nameof(inputs), inputs, "a layer has at least one input feature");
        Inputs = inputs;
        _sum = new double[inputs * inputs];
    }

    /// <summary>Input features (the Hessian is Inputs x Inputs).</summary>
    public int Inputs { get; }
    /// <summary>Tokens added so far.</summary>
    public long Tokens { get; private set; }

    /// <summary>Adds <paramref name="tokens"/> activation rows (row-major [tokens, Inputs]) of the layer's input.</summary>
    public void Add(ReadOnlySpan<double> activations, int tokens)
    {
        Int4Checks.Matrix(activations, tokens, Inputs, nameof(activations));
        int n = Inputs;
        for (int t = 0; t < tokens; t++)
        {
            ReadOnlySpan<double> x = activations.Slice(t * n, n);
            for (int i = 0; i < n; i++)
            {
                double xi = x[i];
                if (xi == 0) continue;
                Span<double> row = _sum.AsSpan(i * n, n);
                for (int j = i; j < n; j++) row[j] += xi * x[j];
            }
        }
        Tokens += tokens;
    }

    /// <summary>H = (2/N) Σ x xᵀ, row-major, symmetric. Requires at least one token.</summary>
    public double[] Build()
    {
        if (Tokens == 0) throw new InvalidOperationException("no calibration tokens were added to the GPTQ Hessian");
        int n = Inputs;
        var h = new double[n * n];
        double factor = 2.0 / Tokens;
        for (int i = 0; i < n; i++)
            for (int j = i; j < n; j++)
                h[i * n + j] = h[j * n + i] = _sum[i * n + j] * factor;
        return h;
    }
}

/// <summary>
/// GPTQ (Frantar et al., ICLR 2023), following the reference <c>IST-DASLab/gptq gptq.py::GPTQ.fasterquant</c> step by
/// step, in float64:
/// <list type="number">
/// <item>Dead inputs: where H_ii = 0, set H_ii = 1 and W[:, i] = 0.</item>
/// <item>act-order: permutation by decreasing diag(H), ties by increasing column index (torch.argsort is not stable;
/// a fixed tie-break keeps the result deterministic), applied to W's columns and to H.</item>
/// <item>Damping: H += PercentDamp * mean(diag H) * I.</item>
/// <item>Hinv = upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), from the lower Cholesky factor of H and its inverse
/// (torch's <c>cholesky(cholesky_inverse(cholesky(H)), upper=True)</c>). A Hessian that is not positive definite after
/// damping is an InvalidOperationException suggesting more damping or calibration tokens.</item>
/// <item>Columns in lazy blocks of BlockSize: at the first column of each group, the group's grid is found on the
/// current outer W[:, g : g + GroupSize] (which is updated only at block ends: with GroupSize = BlockSize, both
/// aligned, that is the up-to-date group; with a smaller group it reads stale columns, the reference's quirk, kept).
/// For column i: q = quant(w_i), err = (w_i - q) / U_ii, W_block[:, i:] -= err U[i, i:]; after the block,
/// W[:, end:] -= Err U[block, end:].</item>
/// <item>Codes are returned in the original column order with g_idx (<see cref="Int4Matrix.GroupOfColumn"/>).</item>
/// </list>
/// <para>
/// The caller's part (the reference's <c>llama.py</c>; the backends' <c>Int4Calibration</c> does it): quantize the decoder layers in order and calibrate each linear
/// on the inputs produced by the already-quantized previous layers (sequential); within a layer, q/k/v share one
/// Hessian (their common input), then o, then gate/up (shared input), then down ("true sequential" recomputes the
/// inputs of o after q/k/v are quantized, and of down after gate/up). Record nsamples, seqlen, seed, PercentDamp,
/// BlockSize, GroupSize, Symmetric and ActOrder with the result. Bitwise equality with the torch/GPU reference is not
/// expected (float32 and a different summation order); the codes agree for a large majority of weights.
/// </para>
/// </summary>
public static class Gptq
{
    /// <summary>GPTQ from calibration activations <paramref name="activations"/> [tokens, cols] of the layer's input.</summary>
    public static GptqResult Quantize(ReadOnlySpan<double> weights, int rows, int cols,
        ReadOnlySpan<double> activations, int tokens, GptqOptions options)
    {
        var hessian = new GptqHessian(cols);
        hessian.Add(activations, tokens);
        return QuantizeWithHessian(weights, rows, cols, hessian.Build(), options);
    }

    /// <summary>GPTQ from a ready Hessian <paramref name="hessian"/> [cols, cols] (e.g. from <see cref="GptqHessian"/>).</summary>
    public static GptqResult QuantizeWithHessian(ReadOnlySpan<double> weights, int rows, int cols,
        ReadOnlySpan<double> hessian, GptqOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        Int4Checks.Matrix(weights, rows, cols, nameof(weights));
        Int4Checks.Matrix(hessian, cols, cols, nameof(hessian));
        Int4Checks.GroupSize(options.GroupSize);
        if (options.BlockSize <= 0) throw new ArgumentOutOfRangeException(nameof(options), options.BlockSize, "GptqOptions.BlockSize must be >= 1");
        if (!(options.PercentDamp >= 0) || !double.IsFinite(options.PercentDamp))
            throw new ArgumentOutOfRangeException(nameof(options), options.PercentDamp, "GptqOptions.PercentDamp must be finite and >= 0");

        int n = cols;
        double[] w = weights.ToArray();
        double[] h = hessian.ToArray();
        for (int i = 0; i < n; i++)
        {
            if (h[i * n + i] != 0) continue;
            h[i * n + i] = 1;
            for (int r = 0; r < rows; r++) w[r * n + i] = 0;
        }

        int[] perm = Enumerable.Range(0, n).ToArray();
        if (options.ActOrder)
        {
            Array.Sort(perm, (a, b) =>
            {
                int byDiagonal = h[b * n + b].CompareTo(h[a * n + a]);
                return byDiagonal != 0 ? byDiagonal : a.CompareTo(b);
            });
            w = PermuteColumns(w, rows, n, perm);
            h = PermuteSymmetric(h, n, perm);
        }

        double meanDiagonal = 0;
        for (int i = 0; i < n; i++) meanDiagonal += h[i * n + i];
        double damp = options.PercentDamp * (meanDiagonal / n);
        for (int i = 0; i < n; i++) h[i * n + i] += damp;

        double[] u = UpperCholeskyOfInverse(h, n);

        int groupSize = options.GroupSize, groupCount = (n + groupSize - 1) / groupSize;
        var permutedCodes = new byte[rows * n];
        var scales = new float[rows * groupCount];
        var zeros = new byte[rows * groupCount];
        var grids = new Int4GroupGrid[rows];
        double loss = 0;
        int blockSize = options.BlockSize;
        for (int blockStart = 0; blockStart < n; blockStart += blockSize)
        {
            int blockEnd = Math.Min(blockStart + blockSize, n), count = blockEnd - blockStart;
            var block = new double[rows * count];
            for (int r = 0; r < rows; r++) Array.Copy(w, r * n + blockStart, block, r * count, count);
            var errors = new double[rows * count];
            for (int i = 0; i < count; i++)
            {
                int column = blockStart + i;
                if (column % groupSize == 0)
                {
                    int group = column / groupSize, length = Math.Min(groupSize, n - column);
                    for (int r = 0; r < rows; r++)
                    {
                        grids[r] = Int4GroupGrid.Find(w.AsSpan(r * n + column, length), options.Symmetric, Int4GridRule.Gptq);
                        scales[r * groupCount + group] = grids[r].Scale;
                        zeros[r * groupCount + group] = (byte)grids[r].Zero;
                    }
                }
                double d = u[column * n + column];
                for (int r = 0; r < rows; r++)
                {
                    double value = block[r * count + i];
                    int code = grids[r].Code(value);
                    permutedCodes[r * n + column] = (byte)code;
                    double residual = value - grids[r].Value(code);
                    loss += residual * residual / (d * d) / 2;
                    double error = residual / d;
                    errors[r * count + i] = error;
                    for (int j = i; j < count; j++) block[r * count + j] -= error * u[column * n + blockStart + j];
                }
            }
            // Lazy batch update of everything after the block: W[:, blockEnd:] -= Err · U[block, blockEnd:].
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < count; i++)
                {
                    double error = errors[r * count + i];
                    if (error == 0) continue;
                    int uRow = (blockStart + i) * n;
                    for (int j = blockEnd; j < n; j++) w[r * n + j] -= error * u[uRow + j];
                }
        }

        var codes = new byte[rows * n];
        var groupOfColumn = new int[n];
        for (int k = 0; k < n; k++)
        {
            int original = perm[k];
            groupOfColumn[original] = k / groupSize;
            for (int r = 0; r < rows; r++) codes[r * n + original] = permutedCodes[r * n + k];
        }
        var matrix = new Int4Matrix(rows, n, groupSize, options.Symmetric, Int4GridRule.Gptq, codes, scales, zeros, groupOfColumn, null);
        return new GptqResult(matrix, loss);
    }

    private static double[] PermuteColumns(double[] w, int rows, int n, int[] perm)
    {
        var result = new double[w.Length];
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < n; k++) result[r * n + k] = w[r * n + perm[k]];
        return result;
    }

    private static double[] PermuteSymmetric(double[] h, int n, int[] perm)
    {
        var result = new double[h.Length];
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++) result[a * n + b] = h[perm[a] * n + perm[b]];
        return result;
    }

    /// <summary>U upper triangular with H⁻¹ = UᵀU, via L = chol(H), H⁻¹ = L⁻ᵀL⁻¹, U = chol(H⁻¹)ᵀ.</summary>
    internal static double[] UpperCholeskyOfInverse(double[] h, int n)
    {
        double[] l = LowerCholesky(h, n, "the damped GPTQ Hessian");
        // L⁻¹ row by row: row r = (e_r - Σ_{k<r} L[r,k] · row k of L⁻¹) / L[r,r] (contiguous rows).
        var lInverse = new double[n * n];
        for (int r = 0; r < n; r++)
        {
            Span<double> row = lInverse.AsSpan(r * n, r + 1);
            row[r] = 1;
            for (int k = 0; k < r; k++)
            {
                double factor = l[r * n + k];
                if (factor == 0) continue;
                ReadOnlySpan<double> rowK = lInverse.AsSpan(k * n, k + 1);
                for (int c = 0; c <= k; c++) row[c] -= factor * rowK[c];
            }
            double pivot = l[r * n + r];
            for (int c = 0; c <= r; c++) row[c] /= pivot;
        }
        // H⁻¹ = L⁻ᵀ L⁻¹ = Σ_k (row k of L⁻¹)ᵀ (row k of L⁻¹); upper triangle accumulated, then mirrored.
        var inverse = new double[n * n];
        for (int k = 0; k < n; k++)
        {
            ReadOnlySpan<double> rowK = lInverse.AsSpan(k * n, k + 1);
            for (int i = 0; i <= k; i++)
            {
                double a = rowK[i];
                if (a == 0) continue;
                Span<double> target = inverse.AsSpan(i * n, k + 1);
                for (int j = i; j <= k; j++) target[j] += a * rowK[j];
            }
        }
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++) inverse[j * n + i] = inverse[i * n + j];
        double[] lower = LowerCholesky(inverse, n, "the inverse of the damped GPTQ Hessian");
        var upper = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = i; j < n; j++) upper[i * n + j] = lower[j * n + i];
        return upper;
    }

    private static double[] LowerCholesky(double[] a, int n, string what)
    {
        var l = new double[n * n];
        for (int j = 0; j < n; j++)
        {
            double diagonal = a[j * n + j];
            for (int k = 0; k < j; k++) diagonal -= l[j * n + k] * l[j * n + k];
            if (!(diagonal > 0))
                throw new InvalidOperationException($"{what} is not positive definite (pivot {j} = {diagonal}); raise PercentDamp or add calibration tokens");
            double pivot = Math.Sqrt(diagonal);
            l[j * n + j] = pivot;
            for (int i = j + 1; i < n; i++)
            {
                double sum = a[i * n + j];
                for (int k = 0; k < j; k++) sum -= l[i * n + k] * l[j * n + k];
                l[i * n + j] = sum / pivot;
            }
        }
        return l;
    }
}
