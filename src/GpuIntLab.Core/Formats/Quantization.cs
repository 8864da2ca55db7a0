using System.Runtime.InteropServices;

namespace GpuIntLab.Core.Formats;

/// <summary>Element format of quantized weights and activations.</summary>
public enum QuantFormat
{
    /// <summary>Symmetric int8, codes in [-127, 127] (never -128), stored as two's complement bytes.</summary>
    Int8,
    /// <summary>FP8 E4M3 (OCP E4M3FN, see <see cref="E4M3"/>), stored as codes.</summary>
    E4M3,
}

/// <summary>How scales are assigned. The scheme is part of a result's identity.</summary>
public enum QuantScheme
{
    /// <summary>One weight scale for the whole matrix; activations one dynamic scale per vector (token).</summary>
    PerTensor,
    /// <summary>One weight scale per output row; activations one dynamic scale per vector (token).</summary>
    PerChannel,
    /// <summary>SmoothQuant migration (Int8 only) followed by per-channel weights and per-token activations.</summary>
    SmoothQuant,
}

/// <summary>
/// A quantized weight matrix W[Rows, Cols] for y = W x (Rows = output features, Cols = input features).
/// </summary>
/// <param name="Codes">Row-major [Rows, Cols]. Int8: two's complement bytes (reinterpret as sbyte,
/// see <see cref="Int8Codes"/>), values in [-127, 127]. E4M3: codes (never NaN).</param>
/// <param name="WeightScales">Length 1 (PerTensor) or Rows (PerChannel, SmoothQuant). Dequantized
/// weight = code value * scale. Always finite and &gt; 0 (an all-zero tensor/row gets scale 1).</param>
/// <param name="SmoothFactors">SmoothQuant only (length Cols, finite, &gt; 0): the stored codes
/// represent W'[:, j] = W[:, j] * s_j, so the activation must be divided by s_j before quantization.
/// Null for the other schemes.</param>
public sealed record QuantizedMatrix(int Rows, int Cols, QuantFormat Format, QuantScheme Scheme,
    byte[] Codes, float[] WeightScales, float[]? SmoothFactors)
{
    /// <summary>Int8 codes as signed bytes (same memory as <see cref="Codes"/>).</summary>
    public ReadOnlySpan<sbyte> Int8Codes => MemoryMarshal.Cast<byte, sbyte>(Codes);

    /// <summary>Scale of output row <paramref name="row"/> (the single scale for PerTensor).</summary>
    public float ScaleOfRow(int row) => WeightScales.Length == 1 ? WeightScales[0] : WeightScales[row];

    /// <summary>Value of code (r, c) as a number (int8 integer or E4M3 value), before scaling.</summary>
    public double CodeValue(int row, int col)
    {
        byte b = Codes[row * Cols + col];
        return Format == QuantFormat.Int8 ? (sbyte)b : E4M3.Decode(b);
    }

    /// <summary>
    /// Dequantized stored weight (float64, exact: code value * scale). For SmoothQuant this is
    /// the smoothed weight W'[r, c]; divide by SmoothFactors[c] for the original-space weight.
    /// </summary>
    public double Dequantize(int row, int col) => CodeValue(row, col) * ScaleOfRow(row);
}

/// <summary>
/// Host-side quantization used by every low-precision backend, plus float64 references of the
/// backend-side (activation) half. Rules, all deterministic and platform independent:
/// <list type="bullet">
/// <item><b>Int8 weights.</b> Symmetric. scale = (float)(absmax / 127) where absmax is the maximum
/// |w| over the tensor (PerTensor) or over the output row (PerChannel, SmoothQuant); the division
/// is done in float64 and rounded once to float. code = clamp(RNE(w / scale), -127, 127) with the
/// quotient evaluated as (double)w / (double)scale: for float operands this decides every tie
/// exactly, so the code is the true round-to-nearest-even of w / scale. -128 is never produced.
/// Consequence: |w - code * scale| &lt;= scale / 2 for every element.</item>
/// <item><b>E4M3 weights.</b> scale = (float)(absmax / 448) (per tensor or per row);
/// code = <see cref="E4M3.Encode(double)"/>((double)w / (double)scale) — RNE, saturating at 448.
/// Consequence: relative error &lt;= 2^-4 for |w / scale| &gt;= 2^-6 (normals), absolute error
/// &lt;= 2^-10 * scale below that (subnormals).</item>
/// <item><b>All-zero tensor or row:</b> scale 1 (never 0, so a kernel may divide by it), codes 0.</item>
/// <item><b>Activations</b> (per vector = per token; dynamic): see
/// <see cref="QuantizeActivationsInt8"/> and <see cref="QuantizeActivationsE4M3"/>. These are
/// defined in float32 arithmetic so that a GPU kernel can reproduce the codes bit for bit.</item>
/// <item><b>SmoothQuant</b> (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training
/// Quantization for Large Language Models"): per input channel j,
/// s_j = max|X_j|^alpha / max|W[:, j]|^(1 - alpha), computed in float64 with the caller's
/// calibration activation absmax (activationAbsMax[j]) and the column absmax of W, then clamped
/// to at least 1e-5 (as the reference implementation does) and rounded to float. For alpha = 0.5
/// (the default), 0 and 1 the factor uses only correctly rounded operations (sqrt, division), so it
/// is bit-identical on every platform; other alphas use Math.Pow (platform libm, last ulp may vary). If either
/// max|X_j| or max|W[:, j]| is 0 the channel is left alone: s_j = 1. W'[:, j] = (float)(W[:, j] * s_j)
/// (product in float64, rounded once to float, as a checkpoint transform would store it) and W' is
/// quantized per output channel as above. <b>Placement:</b> the reference divides the activation
/// explicitly, x'_j = x_j / s_j in float32 (IEEE division), before per-token quantization of x';
/// it does not fold 1/s into the preceding RMSNorm weight. A backend that folds it must be
/// compared with a tolerance, not bit for bit. SmoothQuant is valid only with Int8.</item>
/// </list>
/// </summary>
public static class Quantizer
{
    /// <summary>Symmetric int8 range limit (codes in [-127, 127]).</summary>
    public const int Int8Max = 127;

    /// <summary>Largest Cols for which the int32 accumulation of an int8 dot product cannot
    /// overflow: Cols * 127 * 127 &lt;= int.MaxValue.</summary>
    public const int MaxInt8Cols = int.MaxValue / (127 * 127); // 133144

    /// <summary>Lower clamp of SmoothQuant factors (the reference implementation's 1e-5).</summary>
    public const double MinSmoothFactor = 1e-5;

    /// <summary>
    /// Quantizes a row-major weight matrix [rows, cols] (y = W x). See the class docs for every rule.
    /// </summary>
    /// <param name="activationAbsMax">SmoothQuant only: calibration max |x_j| per input channel
    /// (length cols, finite, &gt;= 0). Must be empty for the other schemes.</param>
    /// <param name="alpha">SmoothQuant migration strength in [0, 1] (0.5 = the paper's default).</param>
    /// <exception cref="ArgumentException">bad shape, non-finite weights, SmoothQuant with E4M3,
    /// missing/extra calibration data, alpha outside [0, 1], Int8 with cols &gt; <see cref="MaxInt8Cols"/>.</exception>
    public static QuantizedMatrix Quantize(ReadOnlySpan<float> weights, int rows, int cols, QuantFormat format,
        QuantScheme scheme, ReadOnlySpan<float> activationAbsMax = default, float alpha = 0.5f)
    {
        if (rows <= 0 || cols <= 0) throw new ArgumentException($"bad shape [{rows}, {cols}]");
        if ((long)rows * cols != weights.Length)
            throw new ArgumentException($"weights has {weights.Length} elements, shape [{rows}, {cols}] needs {(long)rows * cols}", nameof(weights));
        if (format != QuantFormat.Int8 && format != QuantFormat.E4M3) throw new ArgumentOutOfRangeException(nameof(format));
        if (format == QuantFormat.Int8 && cols > MaxInt8Cols)
            throw new ArgumentException($"int8 with {cols} input features could overflow an int32 accumulator (limit {MaxInt8Cols})", nameof(cols));
        for (int i = 0; i < weights.Length; i++)
            if (!float.IsFinite(weights[i])) throw new ArgumentException($"weight {i} is not finite ({weights[i]})", nameof(weights));

        float[]? smooth = null;
        ReadOnlySpan<float> w = weights;
        switch (scheme)
        {
            case QuantScheme.PerTensor:
            case QuantScheme.PerChannel:
                if (!activationAbsMax.IsEmpty)
                    throw new ArgumentException("activationAbsMax is only used by SmoothQuant", nameof(activationAbsMax));
                break;
            case QuantScheme.SmoothQuant:
                if (format != QuantFormat.Int8) throw new ArgumentException("SmoothQuant is defined only for Int8", nameof(scheme));
                if (activationAbsMax.Length != cols)
                    throw new ArgumentException($"SmoothQuant needs activationAbsMax of length {cols}, got {activationAbsMax.Length}", nameof(activationAbsMax));
                if (!(alpha >= 0f && alpha <= 1f)) throw new ArgumentException($"alpha {alpha} outside [0, 1]", nameof(alpha));
                smooth = SmoothFactors(weights, rows, cols, activationAbsMax, alpha);
                var smoothed = new float[weights.Length];
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < cols; c++)
                        smoothed[r * cols + c] = (float)((double)weights[r * cols + c] * smooth[c]);
                w = smoothed;
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(scheme));
        }

        double limit = format == QuantFormat.Int8 ? Int8Max : E4M3.MaxValue;
        var codes = new byte[weights.Length];
        float[] scales;
        if (scheme == QuantScheme.PerTensor)
        {
            scales = [ScaleFor(AbsMax(w), limit)];
            QuantizeBlock(w, codes, scales[0], format);
        }
        else
        {
            scales = new float[rows];
            for (int r = 0; r < rows; r++)
            {
                var row = w.Slice(r * cols, cols);
                scales[r] = ScaleFor(AbsMax(row), limit);
                QuantizeBlock(row, codes.AsSpan(r * cols, cols), scales[r], format);
            }
        }
        return new QuantizedMatrix(rows, cols, format, scheme, codes, scales, smooth);
    }

    /// <summary>
    /// SmoothQuant factors s_j = max|X_j|^alpha / max|W[:, j]|^(1 - alpha) (see the class docs for the
    /// guards). Exposed so that a backend folding 1/s into a norm weight uses the same numbers.
    /// </summary>
    public static float[] SmoothFactors(ReadOnlySpan<float> weights, int rows, int cols, ReadOnlySpan<float> activationAbsMax, float alpha)
    {
        if (activationAbsMax.Length != cols) throw new ArgumentException("activationAbsMax length != cols", nameof(activationAbsMax));
        if ((long)rows * cols != weights.Length) throw new ArgumentException("shape mismatch", nameof(weights));
        var s = new float[cols];
        for (int c = 0; c < cols; c++)
        {
            float xm = activationAbsMax[c];
            if (!float.IsFinite(xm) || xm < 0f)
                throw new ArgumentException($"activationAbsMax[{c}] = {xm} must be finite and >= 0", nameof(activationAbsMax));
            double wm = 0;
            for (int r = 0; r < rows; r++) wm = Math.Max(wm, Math.Abs((double)weights[r * cols + c]));
            if (xm == 0f || wm == 0) { s[c] = 1f; continue; }
            // alpha 0.5 / 1 / 0 use only correctly rounded IEEE operations (platform independent);
            // other alphas go through Math.Pow, whose last ulp is the platform libm's.
            double v = alpha switch
            {
                0.5f => Math.Sqrt(xm) / Math.Sqrt(wm),
                1f => xm,
                0f => 1.0 / wm,
                _ => Math.Pow(xm, alpha) / Math.Pow(wm, 1.0 - alpha),
            };
            v = Math.Max(v, MinSmoothFactor);
            float f = (float)v;
            if (!float.IsFinite(f)) throw new ArgumentException($"SmoothQuant factor of channel {c} overflows float ({v})");
            s[c] = f;
        }
        return s;
    }

    private static float AbsMax(ReadOnlySpan<float> v)
    {
        float m = 0f;
        foreach (float x in v) m = Math.Max(m, Math.Abs(x));
        return m;
    }

    /// <summary>Weight scale: (float)(absmax / limit) in float64, or 1 for an all-zero block.</summary>
    private static float ScaleFor(float absMax, double limit)
    {
        if (absMax == 0f) return 1f;
        float s = (float)(absMax / limit);
        // absmax >= 2^-149, limit <= 448: s >= 2^-158 could underflow to 0 only for absurd inputs.
        if (!(s > 0f)) throw new ArgumentException($"weight absmax {absMax} too small to scale");
        return s;
    }

    private static void QuantizeBlock(ReadOnlySpan<float> w, Span<byte> codes, float scale, QuantFormat format)
    {
        double s = scale;
        if (format == QuantFormat.Int8)
        {
            for (int i = 0; i < w.Length; i++)
            {
                double q = Math.Round(w[i] / s, MidpointRounding.ToEven);
                codes[i] = (byte)(sbyte)Math.Clamp(q, -Int8Max, Int8Max);
            }
        }
        else
        {
            for (int i = 0; i < w.Length; i++) codes[i] = E4M3.Encode(w[i] / s);
        }
    }

    /// <summary>
    /// Dynamic per-vector (per-token) int8 activation quantization, in float32 arithmetic so a
    /// kernel can match it bit for bit: absmax = max |x_i| (exact); scale = absmax / 127f (IEEE
    /// float division, round to nearest), or 1 if absmax is 0; q_i = clamp(RNE(x_i / scale), -127, 127)
    /// with x_i / scale an IEEE float32 division (CUDA: <c>__fdiv_rn</c> or <c>/</c> without fast
    /// math, then <c>__float2int_rn</c>; RNE, not round-half-away). Returns the scale.
    /// </summary>
    /// <exception cref="ArgumentException">non-finite input, or q shorter than x.</exception>
    public static float QuantizeActivationsInt8(ReadOnlySpan<float> x, Span<sbyte> q)
    {
        if (q.Length < x.Length) throw new ArgumentException("destination too short", nameof(q));
        float absMax = FiniteAbsMax(x);
        float scale = absMax == 0f ? 1f : absMax / 127f;
        for (int i = 0; i < x.Length; i++)
        {
            float t = MathF.Round(x[i] / scale, MidpointRounding.ToEven);
            q[i] = (sbyte)Math.Clamp(t, -127f, 127f);
        }
        return scale;
    }

    /// <summary>
    /// Dynamic per-vector (per-token) E4M3 activation quantization, float32 arithmetic:
    /// scale = absmax / 448f (IEEE float division), or 1 if absmax is 0;
    /// code_i = <see cref="E4M3.Encode(float)"/>(x_i / scale) with an IEEE float32 division
    /// (CUDA: <c>__nv_cvt_float_to_fp8(x / scale, __NV_SATFINITE, __NV_E4M3)</c>). Returns the scale.
    /// </summary>
    /// <exception cref="ArgumentException">non-finite input, or q shorter than x.</exception>
    public static float QuantizeActivationsE4M3(ReadOnlySpan<float> x, Span<byte> q)
    {
        if (q.Length < x.Length) throw new ArgumentException("destination too short", nameof(q));
        float absMax = FiniteAbsMax(x);
        float scale = absMax == 0f ? 1f : absMax / 448f;
        for (int i = 0; i < x.Length; i++) q[i] = E4M3.Encode(x[i] / scale);
        return scale;
    }

    private static float FiniteAbsMax(ReadOnlySpan<float> x)
    {
        float m = 0f;
        for (int i = 0; i < x.Length; i++)
        {
            if (!float.IsFinite(x[i])) throw new ArgumentException($"activation {i} is not finite ({x[i]})", nameof(x));
            m = Math.Max(m, Math.Abs(x[i]));
        }
        return m;
    }

    /// <summary>
    /// The activation vector a backend must quantize: x itself, or for SmoothQuant x'_j = x_j / s_j
    /// (IEEE float32 division).
    /// </summary>
    public static float[] SmoothedActivations(QuantizedMatrix m, ReadOnlySpan<float> x)
    {
        if (x.Length != m.Cols) throw new ArgumentException($"x has {x.Length} elements, matrix has {m.Cols} columns", nameof(x));
        var xs = x.ToArray();
        if (m.Scheme == QuantScheme.SmoothQuant)
        {
            var s = m.SmoothFactors ?? throw new ArgumentException("SmoothQuant matrix without SmoothFactors", nameof(m));
            for (int j = 0; j < xs.Length; j++) xs[j] /= s[j];
        }
        return xs;
    }

    /// <summary>
    /// float64 reference of the quantized matvec y = W x: exactly what a correct kernel computes
    /// before its own final rounding of y.
    /// <list type="bullet">
    /// <item>Int8: x' = <see cref="SmoothedActivations"/>(x); (q_a, s_a) = <see cref="QuantizeActivationsInt8"/>(x');
    /// acc_r = sum_j q_w[r, j] * q_a[j] as an exact integer (an int32 kernel accumulator cannot overflow:
    /// Cols &lt;= <see cref="MaxInt8Cols"/>); y_r = acc_r * (s_w[r] * s_a), where the scale product is
    /// exact in float64 and the final product is rounded once.</item>
    /// <item>E4M3: (c_a, s_a) = <see cref="QuantizeActivationsE4M3"/>(x); y_r = (sum_j dec(c_w[r, j]) * dec(c_a[j]))
    /// * (s_w[r] * s_a). Each E4M3 x E4M3 product is exact in float64 and is a multiple of 2^-18 below
    /// 2^18, so the float64 sum is exact for Cols &lt;= 2^17 (summation order irrelevant); then one rounding.</item>
    /// </list>
    /// </summary>
    public static void ReferenceMatVec(QuantizedMatrix m, ReadOnlySpan<float> x, Span<double> y)
    {
        ArgumentNullException.ThrowIfNull(m);
        if (x.Length != m.Cols) throw new ArgumentException($"x has {x.Length} elements, matrix has {m.Cols} columns", nameof(x));
        if (y.Length != m.Rows) throw new ArgumentException($"y has {y.Length} elements, matrix has {m.Rows} rows", nameof(y));
        if (m.Codes.Length != m.Rows * m.Cols) throw new ArgumentException("Codes length != Rows * Cols", nameof(m));
        int expectScales = m.Scheme == QuantScheme.PerTensor ? 1 : m.Rows;
        if (m.WeightScales.Length != expectScales) throw new ArgumentException($"expected {expectScales} weight scales", nameof(m));
        if (m.Scheme == QuantScheme.SmoothQuant && m.SmoothFactors?.Length != m.Cols)
            throw new ArgumentException("SmoothQuant matrix needs Cols smooth factors", nameof(m));
        int cols = m.Cols;

        if (m.Format == QuantFormat.Int8)
        {
            var xs = SmoothedActivations(m, x);
            var qa = new sbyte[cols];
            double sa = QuantizeActivationsInt8(xs, qa);
            var qw = m.Int8Codes;
            for (int r = 0; r < m.Rows; r++)
            {
                long acc = 0;
                var row = qw.Slice(r * cols, cols);
                for (int j = 0; j < cols; j++) acc += row[j] * qa[j];
                y[r] = acc * ((double)m.ScaleOfRow(r) * sa);
            }
        }
        else
        {
            if (m.Scheme == QuantScheme.SmoothQuant) throw new ArgumentException("SmoothQuant is defined only for Int8", nameof(m));
            var qa = new byte[cols];
            double sa = QuantizeActivationsE4M3(x, qa);
            var table = E4M3.DecodeTable;
            for (int r = 0; r < m.Rows; r++)
            {
                double acc = 0;
                var row = m.Codes.AsSpan(r * cols, cols);
                for (int j = 0; j < cols; j++) acc += (double)table[row[j]] * table[qa[j]];
                y[r] = acc * ((double)m.ScaleOfRow(r) * sa);
            }
        }
    }
}
