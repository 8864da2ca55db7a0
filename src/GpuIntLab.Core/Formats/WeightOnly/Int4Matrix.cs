namespace GpuIntLab.Core.Formats.WeightOnly;

/// <summary>How an INT4 group's scale and zero point are derived from its weights; named after the reference each matches.</summary>
public enum Int4GridRule
{
    /// <summary>
    /// IST-DASLab/gptq <c>quant.py::Quantizer.find_params</c> (also AutoGPTQ, GPTQModel): xmin = min(0, min w),
    /// xmax = max(0, max w) (the range always contains 0). Asymmetric: s = (xmax - xmin)/15, z = RNE(-xmin/s).
    /// Symmetric: xmax = max(|xmin|, xmax), xmin = -xmax only when xmin &lt; 0, s = (xmax - xmin)/15, z = 8; so a
    /// group with no negative weight keeps xmin = 0 (the reference's quirk, reproduced), and +amax lands on 7.5 steps,
    /// rounds to 8 and clamps to 15: the grid is -8s..7s. A group of zeros uses xmin = -1, xmax = 1.
    /// </summary>
    Gptq,
    /// <summary>
    /// mit-han-lab/llm-awq <c>quantizer.py::pseudo_quantize_tensor</c>: asymmetric (AWQ's default) s = max(max w - min w,
    /// 1e-5)/15, z = clamp(-RNE(min w / s), 0, 15), the range not forced to contain 0; symmetric s = max(amax, 1e-5)/7,
    /// codes clamp(RNE(w/s), -8, 7), stored here with z = 8.
    /// </summary>
    Awq,
}

/// <summary>
/// An INT4 weight-only matrix W[Rows, Cols] (y = W x), quantized in groups of <see cref="GroupSize"/> input columns
/// (along K) per output row: w ≈ scale * (code - zero), code in [0, 15].
/// </summary>
/// <param name="Codes">Row-major [Rows, Cols], original column order, values 0..15 (one per byte; pack two per byte or
/// eight per int32 LSB first, as GPTQ checkpoints do, when uploading).</param>
/// <param name="Scales">[Rows, GroupCount] float32 scales, always &gt; 0. The references keep float32 scales during
/// quantization; checkpoints store them as fp16, which a backend may round to (relative change at most 2^-11).</param>
/// <param name="Zeros">[Rows, GroupCount] zero points 0..15 (8 for the symmetric grids). Stored as "gptq_v2"
/// (the zero itself), not GPTQ v1's z - 1.</param>
/// <param name="GroupOfColumn">g_idx: the group of each input column. Column c / GroupSize without act-order; with
/// GPTQ act-order, the position of c in the permuted order / GroupSize (AutoGPTQ's <c>g_idx</c> with desc_act).</param>
/// <param name="ChannelScales">AWQ only (length Cols, float32, &gt; 0): the codes quantize W[:, c] * s_c, so the
/// original-space weight is the dequantized value / s_c; equivalently the input x_c must be divided by s_c, which AWQ
/// folds into the previous operator (see <see cref="Awq"/>). Null for RTN and GPTQ.</param>
public sealed record Int4Matrix(int Rows, int Cols, int GroupSize, bool Symmetric, Int4GridRule Grid,
    byte[] Codes, float[] Scales, byte[] Zeros, int[] GroupOfColumn, float[]? ChannelScales)
{
    /// <summary>Number of groups per row, ceil(Cols / GroupSize).</summary>
    public int GroupCount => (Cols + GroupSize - 1) / GroupSize;

    /// <summary>Dequantized stored weight scale * (code - zero), in the quantized space (W * s for AWQ), float64, exact.</summary>
    public double DequantizeStored(int row, int col)
    {
        int index = row * GroupCount + GroupOfColumn[col];
        return (double)Scales[index] * (Codes[row * Cols + col] - Zeros[index]);
    }

    /// <summary>Dequantized weight in the original space (divided by the AWQ channel scale when there is one).</summary>
    public double Dequantize(int row, int col)
    {
        double stored = DequantizeStored(row, col);
        return ChannelScales is null ? stored : stored / ChannelScales[col];
    }

    /// <summary>The whole dequantized matrix in the original space, row-major [Rows, Cols].</summary>
    public double[] DequantizeAll()
    {
        var result = new double[Rows * Cols];
        for (int r = 0; r < Rows; r++)
            for (int c = 0; c < Cols; c++)
                result[r * Cols + c] = Dequantize(r, c);
        return result;
    }
}

/// <summary>One group's quantization grid: w ≈ Scale * (clamp(RNE(w / Scale) + Zero, 0, 15) - Zero).</summary>
public readonly record struct Int4GroupGrid(float Scale, int Zero)
{
    /// <summary>Largest code.</summary>
    public const int MaxCode = 15;

    /// <summary>The code of <paramref name="weight"/> on this grid (quotient in float64, RNE as torch.round).</summary>
    public int Code(double weight) => (int)Math.Clamp(Math.Round(weight / Scale, MidpointRounding.ToEven) + Zero, 0, MaxCode);

    /// <summary>The dequantized value of a code.</summary>
    public double Value(int code) => (double)Scale * (code - Zero);

    /// <summary>Round trip of one weight (GPTQ's <c>quantize</c>).</summary>
    public double RoundTrip(double weight) => Value(Code(weight));

    /// <summary>
    /// The grid of one group of weights under <paramref name="rule"/> (see <see cref="Int4GridRule"/>). The scale is
    /// computed in float64 and rounded once to float32, and the zero point is derived from that stored scale, so the
    /// values GPTQ's error feedback sees are the ones a backend dequantizes.
    /// </summary>
    public static Int4GroupGrid Find(ReadOnlySpan<double> group, bool symmetric, Int4GridRule rule)
    {
        if (group.IsEmpty) throw new ArgumentException("a group has at least one weight", nameof(group));
        double min = double.PositiveInfinity, max = double.NegativeInfinity;
        foreach (double w in group)
        {
            if (!double.IsFinite(w)) throw new ArgumentException($"weight {w} is not finite", nameof(group));
            min = Math.Min(min, w);
            max = Math.Max(max, w);
        }
        switch (rule)
        {
            case Int4GridRule.Gptq:
            {
                double xmin = Math.Min(min, 0), xmax = Math.Max(max, 0);
                if (symmetric)
                {
                    xmax = Math.Max(Math.Abs(xmin), xmax);
                    if (xmin < 0) xmin = -xmax;
                }
                if (xmin == 0 && xmax == 0) { xmin = -1; xmax = 1; }
                float scale = (float)((xmax - xmin) / MaxCode);
                int zero = symmetric ? 8 : (int)Math.Round(-xmin / scale, MidpointRounding.ToEven);
                return new Int4GroupGrid(scale, zero);
            }
            case Int4GridRule.Awq:
            {
                if (symmetric)
                {
                    double amax = Math.Max(Math.Abs(min), Math.Abs(max));
                    return new Int4GroupGrid((float)(Math.Max(amax, 1e-5) / 7), 8);
                }
                float scale = (float)(Math.Max(max - min, 1e-5) / MaxCode);
                int zero = (int)Math.Clamp(-Math.Round(min / scale, MidpointRounding.ToEven), 0, MaxCode);
                return new Int4GroupGrid(scale, zero);
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(rule), rule, "unknown INT4 grid rule");
        }
    }
}

/// <summary>Shared argument checks of the INT4 quantizers.</summary>
internal static class Int4Checks
{
    public static void Matrix(ReadOnlySpan<double> values, int rows, int cols, string name)
    {
        if (rows <= 0 || cols <= 0) throw new ArgumentException($"{name}: bad shape [{rows}, {cols}]", name);
        if ((long)rows * cols != values.Length)
            throw new ArgumentException($"{name} has {values.Length} elements, shape [{rows}, {cols}] needs {(long)rows * cols}", name);
        for (int i = 0; i < values.Length; i++)
            if (!double.IsFinite(values[i])) throw new ArgumentException($"{name}[{i / cols}, {i % cols}] is not finite ({values[i]})", name);
    }

    public static void GroupSize(int groupSize)
    {
        if (groupSize <= 0) throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, "the group size must be >= 1 (use the column count for one group per row)");
    }
}

/// <summary>
/// Round-to-nearest INT4 weight-only quantization: per (output row, group of <c>groupSize</c> input columns), the grid
/// of <see cref="Int4GroupGrid.Find"/> from the original weights, then code = clamp(RNE(w/s) + z, 0, 15).
/// </summary>
public static class Int4Rtn
{
    /// <summary>Quantizes row-major <paramref name="weights"/> [rows, cols].</summary>
    public static Int4Matrix Quantize(ReadOnlySpan<double> weights, int rows, int cols, int groupSize = 128,
        bool symmetric = false, Int4GridRule grid = Int4GridRule.Gptq)
    {
        Int4Checks.Matrix(weights, rows, cols, nameof(weights));
        Int4Checks.GroupSize(groupSize);
        return QuantizeUnchecked(weights, rows, cols, groupSize, symmetric, grid, channelScales: null);
    }

    internal static Int4Matrix QuantizeUnchecked(ReadOnlySpan<double> weights, int rows, int cols, int groupSize,
        bool symmetric, Int4GridRule grid, float[]? channelScales)
    {
        int groupCount = (cols + groupSize - 1) / groupSize;
        var codes = new byte[rows * cols];
        var scales = new float[rows * groupCount];
        var zeros = new byte[rows * groupCount];
        for (int r = 0; r < rows; r++)
            for (int g = 0; g < groupCount; g++)
            {
                int start = g * groupSize, length = Math.Min(groupSize, cols - start);
                ReadOnlySpan<double> group = weights.Slice(r * cols + start, length);
                var gridOfGroup = Int4GroupGrid.Find(group, symmetric, grid);
                scales[r * groupCount + g] = gridOfGroup.Scale;
                zeros[r * groupCount + g] = (byte)gridOfGroup.Zero;
                for (int i = 0; i < length; i++) codes[r * cols + start + i] = (byte)gridOfGroup.Code(group[i]);
            }
        var groupOfColumn = new int[cols];
        for (int c = 0; c < cols; c++) groupOfColumn[c] = c / groupSize;
        return new Int4Matrix(rows, cols, groupSize, symmetric, grid, codes, scales, zeros, groupOfColumn, channelScales);
    }
}
