using System.Text.Json.Serialization;
using GpuIntLab.Core.Inference;

namespace GpuIntLab.Experiments;

/// <summary>
/// Where precision is lost: per (layer, stage), the pooled relative error of a backend's intermediate values
/// against the oracle's on the same tokens, sqrt(sum ||backend - oracle||^2 / sum ||oracle||^2) over every
/// observed step (pooled rather than a mean of per-step ratios, so a step whose oracle value is near zero
/// cannot dominate). Kept as the two sums so shards merge by addition.
/// </summary>
public sealed class StageErrorMatrix
{
    /// <summary>Column names: <see cref="StepStage"/> names in step order.</summary>
    [JsonPropertyName("stages")] public string[] Stages { get; set; } = Enum.GetNames<StepStage>();
    /// <summary>Row labels: layers 0..L-1, then -1 for the stages after the last layer (final norm, logits).</summary>
    [JsonPropertyName("layers")] public int[] Layers { get; set; } = [];
    /// <summary>[row][stage] sum of squared differences (0 where not observed).</summary>
    [JsonPropertyName("err_sq_sum")] public double[][] ErrorSquareSum { get; set; } = [];
    /// <summary>[row][stage] sum of squared oracle values.</summary>
    [JsonPropertyName("ref_sq_sum")] public double[][] ReferenceSquareSum { get; set; } = [];
    /// <summary>[row][stage] values compared (0: the stage was not observed there).</summary>
    [JsonPropertyName("count")] public long[][] Count { get; set; } = [];

    public static StageErrorMatrix Empty(int layers)
    {
        int rows = layers + 1, cols = Enum.GetValues<StepStage>().Length;
        return new StageErrorMatrix
        {
            Layers = [.. Enumerable.Range(0, layers), -1],
            ErrorSquareSum = Enumerable.Range(0, rows).Select(_ => new double[cols]).ToArray(),
            ReferenceSquareSum = Enumerable.Range(0, rows).Select(_ => new double[cols]).ToArray(),
            Count = Enumerable.Range(0, rows).Select(_ => new long[cols]).ToArray(),
        };
    }

    /// <summary>The row of a layer (-1: the final row), or -1 when the layer is outside the model.</summary>
    public int Row(int layer) => layer < 0 ? Layers.Length - 1 : layer < Layers.Length - 1 ? layer : -1;

    /// <summary>Relative error at a cell, null where nothing was observed (0/0 counts as 0 when values were compared).</summary>
    public double? RelativeError(int row, int stage)
    {
        if (Count[row][stage] == 0) return null;
        double reference = ReferenceSquareSum[row][stage], error = ErrorSquareSum[row][stage];
        if (reference == 0) return error == 0 ? 0 : double.PositiveInfinity;
        return Math.Sqrt(error / reference);
    }

    /// <summary>The cell with the largest relative error, or null when nothing was observed.</summary>
    public (int Layer, string Stage, double RelativeError)? Worst()
    {
        (int, string, double)? worst = null;
        for (int r = 0; r < Layers.Length; r++)
            for (int s = 0; s < Stages.Length; s++)
                if (RelativeError(r, s) is double e && (worst == null || e > worst.Value.Item3)) worst = (Layers[r], Stages[s], e);
        return worst;
    }

    public void Add(StageErrorMatrix other)
    {
        if (!other.Layers.SequenceEqual(Layers) || !other.Stages.SequenceEqual(Stages)) throw new InvalidOperationException("attribution matrices of different shapes cannot be merged");
        for (int r = 0; r < Layers.Length; r++)
            for (int s = 0; s < Stages.Length; s++)
            {
                ErrorSquareSum[r][s] += other.ErrorSquareSum[r][s];
                ReferenceSquareSum[r][s] += other.ReferenceSquareSum[r][s];
                Count[r][s] += other.Count[r][s];
            }
    }
}

/// <summary>
/// Runs beside two engines fed the same tokens: the oracle's observer records each (layer, stage) value of a step,
/// then the backend's observer compares its values with them as they arrive. Engines that batch a prefill may
/// report several tokens in one call where another reports one token a call, so a step's rows are compared from
/// the end: the trailing rows the two have in common (per-layer stages: all tokens of the step; the final norm and
/// logits: the last token).
/// </summary>
public sealed class StageErrorAccumulator
{
    private readonly Dictionary<(int Layer, StepStage Stage), (int Tokens, double[] Values)> _oracleStep = [];

    public StageErrorMatrix Matrix { get; }

    public StageErrorAccumulator(int layers) => Matrix = StageErrorMatrix.Empty(layers);

    /// <summary>Give this to the oracle before its step.</summary>
    public IStepObserver OracleObserver => new Recorder(this);
    /// <summary>Give this to the backend for the same step, after the oracle's.</summary>
    public IStepObserver BackendObserver => new Comparer(this);

    /// <summary>Forgets the recorded oracle step (call before each oracle step).</summary>
    public void BeginStep() => _oracleStep.Clear();

    private void Record(int layer, StepStage stage, int tokens, ReadOnlySpan<double> values)
    {
        // Several calls for one stage within a step (a prefill fed in pieces) append rows.
        if (_oracleStep.TryGetValue((layer, stage), out var had))
            _oracleStep[(layer, stage)] = (had.Tokens + tokens, [.. had.Values, .. values]);
        else
            _oracleStep[(layer, stage)] = (tokens, values.ToArray());
    }

    private void Compare(int layer, StepStage stage, int tokens, ReadOnlySpan<double> values)
    {
        if (!_oracleStep.TryGetValue((layer, stage), out var oracle) || tokens == 0 || oracle.Tokens == 0) return;
        int width = values.Length / tokens;
        if (width * tokens != values.Length || oracle.Values.Length != oracle.Tokens * width)
            throw new InvalidOperationException($"layer {layer} {stage}: the backend reports rows of {values.Length / Math.Max(1, tokens)} values, the oracle of {oracle.Values.Length / oracle.Tokens}");
        int rows = Math.Min(tokens, oracle.Tokens);
        var mine = values[^(rows * width)..];
        var theirs = oracle.Values.AsSpan(oracle.Values.Length - rows * width);
        double err = 0, reference = 0;
        for (int i = 0; i < mine.Length; i++)
        {
            double d = mine[i] - theirs[i];
            err += d * d; reference += theirs[i] * theirs[i];
        }
        int row = Matrix.Row(layer), col = (int)stage;
        if (row < 0) throw new InvalidOperationException($"layer {layer} is outside the model's {Matrix.Layers.Length - 1} layers");
        Matrix.ErrorSquareSum[row][col] += err;
        Matrix.ReferenceSquareSum[row][col] += reference;
        Matrix.Count[row][col] += mine.Length;
    }

    private sealed class Recorder(StageErrorAccumulator owner) : IStepObserver
    {
        public void Observe(int layer, StepStage stage, int tokens, ReadOnlySpan<double> values) => owner.Record(layer, stage, tokens, values);
    }

    private sealed class Comparer(StageErrorAccumulator owner) : IStepObserver
    {
        public void Observe(int layer, StepStage stage, int tokens, ReadOnlySpan<double> values) => owner.Compare(layer, stage, tokens, values);
    }
}
