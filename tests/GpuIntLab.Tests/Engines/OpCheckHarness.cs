using GpuIntLab.Backends;
using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

namespace GpuIntLab.Tests.Engines;

/// <summary>How an engine under test represents numbers, which decides how its ops are compared with the oracle's.</summary>
public enum OpFormat
{
    /// <summary>Q16.48 like the oracle: every op must match bit for bit (raw integers).</summary>
    Exact,
    /// <summary>float64 everywhere (the reference engine).</summary>
    Float64,
    /// <summary>FP16 linears (half weights and activations, float32 accumulation), float32 glue.</summary>
    Fp16,
    /// <summary>INT8 W8A8 linears (int32 accumulation, float rescale), float32 glue.</summary>
    Int8,
    /// <summary>FP8 E4M3 linears (float32 accumulation), float32 glue.</summary>
    Fp8,
}

/// <summary>One engine whose ops are checked against the oracle's: its name, number format and linear scheme.</summary>
public sealed record OpEngine(string Name, OpFormat Format, QuantScheme Scheme, Func<LlamaCheckpoint, LlamaEngine> Create)
{
    public override string ToString() => Name;

    /// <summary>Unit roundoff of the engine's non-linear glue (norms, RoPE, softmax, SwiGLU, residual, bias adds).</summary>
    public double GlueRoundoff => Format switch
    {
        OpFormat.Exact => 0,
        OpFormat.Float64 => Math.ScaleB(1, -53),
        _ => Math.ScaleB(1, -24),
    };

    private static LlamaEngine Ilgpu(LlamaCheckpoint checkpoint, string provider, string scheme) =>
        (LlamaEngine)BackendCatalog.Find(provider)!.Create(checkpoint, new EngineOptions(scheme, "cpu", Threads: 2, CalibrationPrompts: DeterminismGate.Llama2Prompts));

    /// <summary>Every engine of the one Llama step, each linear scheme separately.</summary>
    public static readonly OpEngine[] All =
    [
        new("reference", OpFormat.Float64, QuantScheme.PerTensor, c => new ReferenceEngine(c, threads: 2)),
        new("ilgpu-int64", OpFormat.Exact, QuantScheme.PerTensor, c => Ilgpu(c, "ilgpu-int64", "exact")),
        new("ilgpu-fp16", OpFormat.Fp16, QuantScheme.PerTensor, c => Ilgpu(c, "ilgpu-fp16", "fp16")),
        new("ilgpu-int8/per-tensor", OpFormat.Int8, QuantScheme.PerTensor, c => Ilgpu(c, "ilgpu-int8", "per-tensor")),
        new("ilgpu-int8/per-channel", OpFormat.Int8, QuantScheme.PerChannel, c => Ilgpu(c, "ilgpu-int8", "per-channel")),
        new("ilgpu-int8/smoothquant", OpFormat.Int8, QuantScheme.SmoothQuant, c => Ilgpu(c, "ilgpu-int8", "smoothquant")),
        new("ilgpu-fp8/per-tensor", OpFormat.Fp8, QuantScheme.PerTensor, c => Ilgpu(c, "ilgpu-fp8", "per-tensor")),
        new("ilgpu-fp8/per-channel", OpFormat.Fp8, QuantScheme.PerChannel, c => Ilgpu(c, "ilgpu-fp8", "per-channel")),
    ];

    /// <summary>
    /// The engines run on a family model: the exact and float64 engines and the FP16 engine for the float32 glue
    /// (what the families add is glue: biases, q/k norm, head_dim != hidden/heads, llama3-scaled RoPE; the glue code is
    /// the same for every ILGPU float format), plus INT8 on Qwen2, whose biases follow a quantized linear. Every format
    /// and scheme runs on the Llama 2 conformance model; keeping the families to these keeps the file near 40 s.
    /// </summary>
    public static OpEngine[] Families(string model) =>
        [.. All.Where(e => e.Name is "reference" or "ilgpu-int64" or "ilgpu-fp16" || (model == "tiny-qwen2" && e.Name == "ilgpu-int8/per-channel"))];
}

/// <summary>
/// Error bounds of one linear layer y = W x (+ b) in an engine's format, derived from the format's rounding rules
/// (not fitted to measurements). For output row r, with per-element input and weight rounding errors dx_j and dw_rj
/// (in the space the kernel multiplies: the SmoothQuant-migrated x/s_j and W*s_j for that scheme):
///   |y_r - y~_r| &lt;= sum_j |w_rj| dx_j + (|x_j| + dx_j) dw_rj            (first and second operand rounding)
///                  + g * sum_j (|w_rj| + dw_rj)(|x_j| + dx_j)             (accumulation: g = n u for a sequential float sum)
///                  + 2 u (sum_j |w_rj x_j| + |b_r|)                       (output rescale / bias add, each one rounding)
///                  + sum_j |w_rj| e_j                                       (error e_j the input already carries, e.g. the final norm's)
///                  + 4 * 2^-48                                              (the oracle's one RNE per output, and its bias add is exact)
/// </summary>
public sealed class LinearBounds(OpEngine engine, IReadOnlyDictionary<string, float[]>? calibration)
{
    private static readonly double U32 = Math.ScaleB(1, -24), Q48Ulp = Math.ScaleB(1, -48);

    /// <summary>Per-row bound for weights [rows, cols] (the engine's float32 view of the checkpoint) applied to x.</summary>
    public double[] Rows(string tensorName, float[] weights, int rows, int cols, ReadOnlySpan<double> x, float[]? bias = null, ReadOnlySpan<double> inputError = default)
    {
        var bound = new double[rows];
        double u = engine.GlueRoundoff;
        // The migrated input x' = x / s_j and weights W' = W * s_j (SmoothQuant); identity otherwise.
        float[]? smooth = engine.Format == OpFormat.Int8 && engine.Scheme == QuantScheme.SmoothQuant
            ? Quantizer.SmoothFactors(weights, rows, cols, calibration!.TryGetValue(tensorName, out var m) ? m : new float[cols], 0.5f)
            : null;
        var xs = new double[cols];
        for (int j = 0; j < cols; j++) xs[j] = smooth is null ? x[j] : x[j] / smooth[j];
        double xMax = xs.Max(Math.Abs);
        var dx = new double[cols];
        for (int j = 0; j < cols; j++) dx[j] = InputRounding(xs[j], xMax, smooth is not null);
        double gamma = engine.Format switch
        {
            OpFormat.Exact => 0,
            OpFormat.Int8 => 0,                       // int32 sums of int8 products are exact
            OpFormat.Float64 => cols * u,
            _ => cols * U32,                          // float32 sequential accumulation of exact products
        };
        double tensorMax = 0;
        if (engine.Scheme == QuantScheme.PerTensor && engine.Format is OpFormat.Int8 or OpFormat.Fp8)
            for (int i = 0; i < weights.Length; i++) tensorMax = Math.Max(tensorMax, Math.Abs((double)weights[i]));
        for (int r = 0; r < rows; r++)
        {
            var w = weights.AsSpan(r * cols, cols);
            double rowMax = tensorMax;
            if (engine.Scheme != QuantScheme.PerTensor || engine.Format is not (OpFormat.Int8 or OpFormat.Fp8))
                for (int j = 0; j < cols; j++) rowMax = Math.Max(rowMax, Math.Abs((double)w[j] * (smooth is null ? 1 : smooth[j])));
            double first = 0, second = 0, magnitude = 0, exact = 0, carried = 0;
            for (int j = 0; j < cols; j++)
            {
                double wj = Math.Abs((double)w[j] * (smooth is null ? 1 : smooth[j])), xj = Math.Abs(xs[j]);
                double dw = WeightRounding(wj, rowMax, smooth is not null);
                first += wj * dx[j];
                second += (xj + dx[j]) * dw;
                magnitude += (wj + dw) * (xj + dx[j]);
                exact += Math.Abs(w[j] * x[j]);
                if (!inputError.IsEmpty) carried += Math.Abs(w[j]) * inputError[j];
            }
            double b = bias is null ? 0 : Math.Abs(bias[r]);
            bound[r] = first + second + gamma * magnitude + 2 * u * (exact + b) + carried + 4 * Q48Ulp;
        }
        return bound;
    }

    /// <summary>
    /// |x - x~| for one activation: FP16 RNE (relative 2^-11, half the smallest subnormal 2^-25 below);
    /// INT8 per-token absmax/127 step, RNE of the float32 quotient (half a step, plus one float32 rounding of x/scale, plus
    /// one of the SmoothQuant division x/s_j); E4M3 per-token absmax/448, RNE to 3 mantissa bits (relative 2^-4,
    /// absolute 2^-10 steps below the normal range), plus the float32 quotient's rounding.
    /// </summary>
    private double InputRounding(double x, double xMax, bool smoothed)
    {
        double a = Math.Abs(x);
        switch (engine.Format)
        {
            case OpFormat.Fp16: return Math.ScaleB(1, -11) * a + Math.ScaleB(1, -25);
            case OpFormat.Int8:
            {
                double scale = xMax / 127 * (1 + U32);
                return scale / 2 + 2 * U32 * a + (smoothed ? U32 * a : 0);
            }
            case OpFormat.Fp8:
            {
                double scale = xMax / 448 * (1 + U32);
                return Math.ScaleB(1, -4) * a + Math.ScaleB(1, -10) * scale + 2 * U32 * a;
            }
            default: return 0;
        }
    }

    /// <summary>
    /// |w - w~| for one weight with the largest |w| of its scale block (tensor or row): FP16 as above; INT8
    /// scale = absmax/127, |w - code*scale| &lt;= scale/2 (Quantizer's stated rule) plus the float32 rounding of w*s_j
    /// (SmoothQuant); E4M3 relative 2^-4, absolute 2^-10 * scale below the normal range (Quantizer's stated rule).
    /// </summary>
    private double WeightRounding(double w, double blockMax, bool smoothed) => engine.Format switch
    {
        OpFormat.Fp16 => Math.ScaleB(1, -11) * w + Math.ScaleB(1, -25),
        OpFormat.Int8 => blockMax / 127 * (1 + U32) / 2 + (smoothed ? U32 * w : 0),
        OpFormat.Fp8 => Math.ScaleB(1, -4) * w + Math.ScaleB(1, -10) * blockMax / 448 * (1 + U32),
        _ => 0,
    };
}

/// <summary>Worst measured error of one op of one engine, next to the bound at that element.</summary>
public sealed class OpRecord
{
    public double WorstError, BoundAtWorst, WorstRatio;
    public long Elements, Failures;
    public string FirstFailure = "";
}

/// <summary>
/// Runs ops of an engine and of the oracle side by side on the same seeded inputs and compares the outputs:
/// bit for bit (raw Q16.48) for exact engines, within a per-element bound otherwise. Output buffers are
/// poisoned first (NaN, or a raw sentinel for Q16.48) so an op that writes nothing or too little is caught.
/// </summary>
public sealed class OpCheckSession(OpEngine engine, ILlamaOps ops, OracleEngine oracle)
{
    private const long EngineSentinel = 0x3A5A_5A5A_5A5A_5A5A, OracleSentinel = -0x3C3C_3C3C_3C3C_3C3C;
    private readonly IExactLlamaOps _oracle = oracle;

    public OpEngine Engine => engine;
    public SortedDictionary<string, OpRecord> Records { get; } = new(StringComparer.Ordinal);

    public void Begin(int position)
    {
        ops.Begin(1, position);
        _oracle.Begin(1, position);
    }

    /// <summary>Writes the same values (exact in float32 and in Q16.48) into both engines.</summary>
    public void Write(StepBuffer buffer, double[] values)
    {
        ops.Write(buffer, values);
        _oracle.Write(buffer, values);
    }

    public void Poison(StepBuffer buffer, int count)
    {
        if (ops is IExactLlamaOps exact) exact.WriteRaw(buffer, Enumerable.Repeat(EngineSentinel, count).ToArray());
        else ops.Write(buffer, Enumerable.Repeat(double.NaN, count).ToArray());
        _oracle.WriteRaw(buffer, Enumerable.Repeat(OracleSentinel, count).ToArray());
    }

    /// <summary>Runs one op on both engines.</summary>
    public void Run(Action<ILlamaOps> op)
    {
        op(ops);
        op(_oracle);
    }

    /// <summary>The oracle's output (float64 view of its Q16.48 values).</summary>
    public double[] Oracle(StepBuffer buffer, int count)
    {
        var values = new double[count];
        _oracle.Read(buffer, values);
        return values;
    }

    /// <summary>Compares a buffer: bit for bit for exact engines; |engine - oracle| &lt;= bound(i, oracle value) otherwise.</summary>
    public void Compare(string op, StepBuffer buffer, int count, Func<int, double> bound)
    {
        if (!Records.TryGetValue(op, out var record)) Records[op] = record = new OpRecord();
        if (ops is IExactLlamaOps exact)
        {
            var mine = new long[count];
            var theirs = new long[count];
            exact.ReadRaw(buffer, mine);
            _oracle.ReadRaw(buffer, theirs);
            for (int i = 0; i < count; i++)
            {
                record.Elements++;
                double error = Math.Abs((double)(Int128)mine[i] - theirs[i]) * Math.ScaleB(1, -48);
                if (error > record.WorstError) record.WorstError = error;
                if (mine[i] == theirs[i]) continue;
                if (record.Failures++ == 0) record.FirstFailure = $"{buffer}[{i}]: raw {mine[i]} vs oracle {theirs[i]}";
            }
            return;
        }
        var values = new double[count];
        ops.Read(buffer, values);
        var expected = Oracle(buffer, count);
        for (int i = 0; i < count; i++)
        {
            record.Elements++;
            double error = Math.Abs(values[i] - expected[i]), limit = bound(i);
            double ratio = double.IsNaN(error) ? double.PositiveInfinity : error / limit;
            if (ratio > record.WorstRatio || record.Elements == 1)
            {
                record.WorstRatio = ratio;
                record.WorstError = error;
                record.BoundAtWorst = limit;
            }
            if (error <= limit) continue;
            if (record.Failures++ == 0) record.FirstFailure = $"{buffer}[{i}]: {values[i]:R} vs oracle {expected[i]:R}, |error| {error:E3} > bound {limit:E3}";
        }
    }
}

/// <summary>Seeded inputs at the scale the model produces: N(0, sigma) with sigma the RMS the oracle's own run shows at that stage.</summary>
public sealed class OpInputs(int seed)
{
    private readonly Random _random = new(seed);
    private static readonly double Smallest = Math.ScaleB(1, -24);

    /// <summary>
    /// Gaussian values rounded to float32 and flushed to 0 below 2^-24, so every value is exact both in float32
    /// (what the float engines store) and in Q16.48 (a float32 of magnitude &gt;= 2^-24 has no bit below 2^-47):
    /// every engine starts each op from the very same numbers.
    /// </summary>
    public double[] Draw(int count, double sigma)
    {
        var values = new double[count];
        for (int i = 0; i < count; i++)
        {
            double u1 = 1 - _random.NextDouble(), u2 = _random.NextDouble();
            double v = (float)(sigma * Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
            values[i] = Math.Abs(v) < Smallest ? 0 : v;
        }
        return values;
    }
}

/// <summary>The RMS of every stage over a short oracle run (max over layers): the scale of realistic op inputs.</summary>
public sealed class StageScales : IStepObserver
{
    private readonly Dictionary<StepStage, double> _rms = [];

    public double this[StepStage stage] => _rms.TryGetValue(stage, out var v) && v > 0 ? v : 1.0;

    public void Observe(int layer, StepStage stage, int tokens, ReadOnlySpan<double> values)
    {
        double sum = 0;
        foreach (var v in values) sum += v * v;
        double rms = Math.Sqrt(sum / values.Length);
        _rms[stage] = Math.Max(rms, _rms.GetValueOrDefault(stage));
    }

    public static StageScales Measure(OracleEngine oracle, ReadOnlySpan<int> tokens)
    {
        var scales = new StageScales();
        oracle.Observer = scales;
        oracle.Reset();
        oracle.Prefill(tokens);
        oracle.Observer = null;
        oracle.Reset();
        return scales;
    }
}

/// <summary>The Q16.48 unit, for bounds that allow the oracle its own rounding.</summary>
internal static class OracleRounding
{
    public static readonly double Ulp = Math.ScaleB(1, -Q48.FracBits);
}
