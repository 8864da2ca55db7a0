using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>
/// A positive real scale as the dyadic m / 2^e. Built here, at load time, from float64 (the one place the
/// integer-only path may use floating point besides the logits it outputs).
/// </summary>
public readonly record struct DyadicScale(int Multiplier, int Exponent)
{
    /// <summary>
    /// The dyadic nearest to <paramref name="value"/> &gt;= 0 with an m of exactly <paramref name="bits"/> bits
    /// (m in [2^(bits-1), 2^bits), RNE of the scaled value): relative error at most 2^-bits. Zero gives (0, 0).
    /// </summary>
    public static DyadicScale FromReal(double value, int bits)
    {
        if (!(value >= 0) || double.IsInfinity(value)) throw new ArgumentOutOfRangeException(nameof(value), value, "a dyadic scale needs a finite value >= 0");
        if (value == 0) return new DyadicScale(0, 0);
        int exponent = bits - 1 - Math.ILogB(value);
        double m = Math.Round(Math.ScaleB(value, exponent), MidpointRounding.ToEven);
        if (m >= Math.ScaleB(1, bits)) { m /= 2; exponent--; }
        return new DyadicScale((int)m, exponent);
    }

    public double ToDouble() => Math.ScaleB(Multiplier, -Exponent);
}

/// <summary>
/// An int8 matrix [rows, cols] row-major with one dyadic scale per row (output channel): codes RNE(w / (amax/127))
/// with amax the row's largest |w| (I-BERT's and I-LLM's symmetric per-channel rule), the scale amax/127 as a 16-bit
/// dyadic. A zero row has codes 0 and scale (0, 0).
/// </summary>
public sealed class Int8Matrix
{
    public int Rows { get; }
    public int Cols { get; }
    public sbyte[] Codes { get; }
    public int[] Multipliers { get; }
    public int[] Exponents { get; }

    private Int8Matrix(int rows, int cols, sbyte[] codes, int[] multipliers, int[] exponents)
    {
        Rows = rows; Cols = cols; Codes = codes; Multipliers = multipliers; Exponents = exponents;
    }

    public static Int8Matrix Quantize(ReadOnlySpan<double> weights, int rows, int cols)
    {
        if (weights.Length != (long)rows * cols) throw new ArgumentException($"{weights.Length} weights for a [{rows}, {cols}] matrix", nameof(weights));
        var codes = new sbyte[weights.Length];
        var multipliers = new int[rows];
        var exponents = new int[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = weights.Slice(r * cols, cols);
            double amax = 0;
            foreach (double w in row) amax = Math.Max(amax, Math.Abs(w));
            if (amax == 0) continue;
            double scale = amax / DyadicQuantization.MaxCode;
            for (int j = 0; j < cols; j++)
                codes[r * cols + j] = (sbyte)Math.Clamp(Math.Round(row[j] / scale, MidpointRounding.ToEven), -DyadicQuantization.MaxCode, DyadicQuantization.MaxCode);
            var dyadic = DyadicScale.FromReal(scale, DyadicQuantization.WeightMultiplierBits);
            multipliers[r] = dyadic.Multiplier;
            exponents[r] = dyadic.Exponent;
        }
        return new Int8Matrix(rows, cols, codes, multipliers, exponents);
    }

    /// <summary>The codes column-major [cols, rows] (the device matvec reads a column per step: coalesced across rows).</summary>
    public sbyte[] TransposedCodes()
    {
        var t = new sbyte[Codes.Length];
        for (int r = 0; r < Rows; r++)
            for (int j = 0; j < Cols; j++) t[(long)j * Rows + r] = Codes[(long)r * Cols + j];
        return t;
    }
}

/// <summary>
/// An integer vector code / 2^FracBits. Biases: int32 at the activation scale 2^-16 (added after the requantisation;
/// see <see cref="IntegerOnlyModel"/>). Norm weights (gamma): int16 codes with the largest |gamma| in [2^14, 2^15).
/// </summary>
public sealed record FixedVector(int[] Codes, int FracBits)
{
    public static FixedVector Bias(ReadOnlySpan<double> values)
    {
        var codes = new int[values.Length];
        for (int i = 0; i < codes.Length; i++) codes[i] = ToActivation(values[i]);
        return new FixedVector(codes, DyadicQuantization.ActivationFracBits);
    }

    public static FixedVector NormWeight(ReadOnlySpan<double> values)
    {
        double amax = 0;
        foreach (double v in values) amax = Math.Max(amax, Math.Abs(v));
        int fracBits = amax == 0 ? 0 : 14 - Math.ILogB(amax);
        var codes = new int[values.Length];
        for (int i = 0; i < codes.Length; i++) codes[i] = (int)Math.Round(Math.ScaleB(values[i], fracBits), MidpointRounding.ToEven);
        return new FixedVector(codes, fracBits);
    }

    /// <summary>A real value as int32 at 2^-16: RNE, saturated (the boundary conversion of biases and of op-check inputs).</summary>
    public static int ToActivation(double value)
    {
        if (double.IsNaN(value)) throw new ArgumentException("NaN cannot enter the integer-only path", nameof(value));
        return (int)Math.Clamp(Math.Round(Math.ScaleB(value, DyadicQuantization.ActivationFracBits), MidpointRounding.ToEven), int.MinValue, int.MaxValue);
    }

    /// <summary>int32 at 2^-16 as float64 (exact): the dequantised views and the output logits.</summary>
    public static double ToDouble(int value) => Math.ScaleB(value, -DyadicQuantization.ActivationFracBits);
}

/// <summary>
/// RoPE cos/sin rows at 2^-30 (int32), derived in integers from the oracle's exact Q16.48 <see cref="RopeTable"/>
/// (RNE of the 2^-48 value to 2^-30); rows are made as the context grows, from <paramref name="initialPositions"/>
/// by doubling.
/// </summary>
public sealed class IntegerRopeTable(LlamaConfig config, int initialPositions = 64)
{
    private readonly RopeTable _exact = new(config.HeadDim, config.MaxPositionEmbeddings, config.RopeTheta, config.RopeScaling);
    private readonly int _half = config.HeadDim / 2;
    private int[] _cos = [], _sin = [];

    /// <summary>Positions whose rows are made.</summary>
    public int Positions { get; private set; }

    /// <summary>Makes rows for positions [0, positions) (grown by doubling, capped at the model's context).</summary>
    public void Ensure(int positions)
    {
        if (positions <= Positions) return;
        int capacity = Math.Max(Math.Max(1, initialPositions), Positions);
        while (capacity < positions) capacity *= 2;
        capacity = Math.Min(capacity, Math.Max(positions, config.MaxPositionEmbeddings));
        var cos = new long[(long)(capacity - Positions) * _half];
        var sin = new long[cos.Length];
        _exact.CopyRows(Positions, capacity - Positions, cos, sin);
        Array.Resize(ref _cos, capacity * _half);
        Array.Resize(ref _sin, capacity * _half);
        int shift = Q48.FracBits - IntegerAttention.RopeFracBits;
        for (int i = 0; i < cos.Length; i++)
        {
            _cos[Positions * _half + i] = (int)IntegerArithmetic.RoundShift(cos[i], shift);
            _sin[Positions * _half + i] = (int)IntegerArithmetic.RoundShift(sin[i], shift);
        }
        Positions = capacity;
    }

    public ReadOnlySpan<int> Cos(int position) => _cos.AsSpan(position * _half, _half);
    public ReadOnlySpan<int> Sin(int position) => _sin.AsSpan(position * _half, _half);

    /// <summary>All made rows, [Positions, head_dim/2] (for upload to a device).</summary>
    public int[] AllCos => _cos;
    public int[] AllSin => _sin;
}

/// <summary>
/// A checkpoint quantised for the integer-only path, once at load (the engines share it): every linear and lm_head
/// as <see cref="Int8Matrix"/>, the embedding as an <see cref="Int8Matrix"/> too (per row; a tied head is the same
/// object), norm weights and biases as <see cref="FixedVector"/>s, and the scalar constants as dyadics.
/// Bias treatment: I-BERT adds an int32 bias at the accumulator scale s_x * s_w; here s_x is dynamic per token, so
/// that scale would need a run-time division per output; the bias is instead int32 at the output scale 2^-16 and
/// added after the requantisation (one rounding of the bias at load, none at run time).
/// </summary>
public sealed class IntegerOnlyModel
{
    public LlamaConfig Config { get; }
    public Int8Matrix Embedding { get; }
    public ModelWeights<Int8Matrix, FixedVector> Weights { get; }
    public bool TiedHead { get; }

    /// <summary>rms_norm_eps as a 30-bit dyadic.</summary>
    public DyadicScale Epsilon { get; }

    /// <summary>1/sqrt(head_dim) as a 16-bit dyadic.</summary>
    public DyadicScale AttentionScale { get; }

    public IntegerOnlyModel(LlamaCheckpoint checkpoint)
    {
        Config = checkpoint.Config;
        if (Config.HiddenSize > IntegerRmsNorm.MaxRowLength || Config.HeadDim > 512)
            throw new ArgumentException($"{checkpoint.Folder}: the integer-only path takes hidden_size <= {IntegerRmsNorm.MaxRowLength} and head_dim <= 512 (int64 bounds of its sums)");
        TiedHead = checkpoint.LmHead.Name == LlamaCheckpoint.EmbeddingName;
        var embeddingInfo = checkpoint.Info(LlamaCheckpoint.EmbeddingName);
        Embedding = Int8Matrix.Quantize(checkpoint.ReadDouble(embeddingInfo), embeddingInfo.Shape[0], embeddingInfo.Shape[1]);
        Weights = LlamaWeights.Load(checkpoint,
            t => t.Name == LlamaCheckpoint.EmbeddingName ? Embedding : Int8Matrix.Quantize(checkpoint.ReadDouble(t), t.Shape[0], t.Shape[1]),
            t => t.Name.EndsWith(".bias", StringComparison.Ordinal) ? FixedVector.Bias(checkpoint.ReadDouble(t)) : FixedVector.NormWeight(checkpoint.ReadDouble(t)));
        Epsilon = DyadicScale.FromReal(Config.RmsNormEps, 30);
        AttentionScale = DyadicScale.FromReal(1.0 / Math.Sqrt(Config.HeadDim), 16);
    }
}
