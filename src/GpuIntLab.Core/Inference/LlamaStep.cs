using GpuIntLab.Core.Models;

namespace GpuIntLab.Core.Inference;

/// <summary>
/// The activation buffers of one step, each row-major [tokens, width]. Every engine holds these in its own number
/// format and place (int64 arrays, float64 arrays, device memory); the step only names them.
/// </summary>
public enum StepBuffer
{
    /// <summary>The residual stream x, [T, hidden].</summary>
    Hidden,
    /// <summary>Output of the current RMSNorm, [T, hidden].</summary>
    Normed,
    /// <summary>Queries, [T, heads * head_dim].</summary>
    Q,
    /// <summary>Keys of the new tokens, [T, kv_heads * head_dim].</summary>
    K,
    /// <summary>Values of the new tokens, [T, kv_heads * head_dim].</summary>
    V,
    /// <summary>Attention output of all heads, [T, heads * head_dim].</summary>
    Attention,
    /// <summary>silu(gate) * up, [T, intermediate].</summary>
    SwiGlu,
    /// <summary>Output of o_proj or down_proj, added to the residual stream, [T, hidden].</summary>
    Projected,
    /// <summary>Logits of the last token, [1, vocab].</summary>
    Logits,
}

/// <summary>
/// The operations of a Llama step, implemented once per engine in its number format. Ops are as coarse as the
/// fastest engine fuses them (q/k/v in one pass, gate/up with SwiGLU), and each reads and writes named
/// <see cref="StepBuffer"/>s of the current run of <c>tokens</c> tokens set by <see cref="Begin"/>.
/// </summary>
public interface ILlamaOps
{
    /// <summary>Starts a step of <paramref name="tokens"/> tokens at positions position..position+T-1 (sizes scratch, grows the KV cache).</summary>
    void Begin(int tokens, int position);

    /// <summary>Hidden = embedding rows of the tokens.</summary>
    void Embed(ReadOnlySpan<int> tokens);

    /// <summary>Normed = RMSNorm(Hidden) with the layer's input_layernorm (attention) or post_attention_layernorm (mlp) weight.</summary>
    void RmsNorm(int layer, LayerWeight norm);

    /// <summary>Q, K, V = Normed x W^T (+ bias where the family has one).</summary>
    void QkvProjection(int layer);

    /// <summary>Q and K, each head RMS-normalised over head_dim with q_norm / k_norm (Qwen3).</summary>
    void QkNorm(int layer);

    /// <summary>Rotates Q and K (HF rotate-half RoPE) at their positions and appends K and V to the layer's cache.</summary>
    void RopeAndStore(int layer, int position);

    /// <summary>Attention = causal softmax(Q K^T / sqrt(head_dim)) V over the cache, grouped-query heads.</summary>
    void Attention(int layer, int position);

    /// <summary>Projected = Attention x W_o^T (+ bias).</summary>
    void OutputProjection(int layer);

    /// <summary>Hidden += Projected (the residual add after the attention or the MLP block).</summary>
    void AddResidual(int layer, LayerWeight block);

    /// <summary>SwiGlu = silu(Normed x W_gate^T) * (Normed x W_up^T).</summary>
    void GateUpSwiGlu(int layer);

    /// <summary>Projected = SwiGlu x W_down^T.</summary>
    void DownProjection(int layer);

    /// <summary>Logits = lm_head(RMSNorm(last token of Hidden) with model.norm); Normed's first row holds the normed token.</summary>
    void FinalNormAndHead();

    /// <summary>Copies a buffer of the current step to float64, [tokens, width] (observers and op checks; may synchronize a device).</summary>
    void Read(StepBuffer buffer, Span<double> destination);

    /// <summary>Sets a buffer of the current step from float64 values, converted as the engine converts its inputs (op checks).</summary>
    void Write(StepBuffer buffer, ReadOnlySpan<double> values);
}

/// <summary>Ops of an exact Q16.48 engine: buffers can be read and written as raw integers, so ops compare bit for bit.</summary>
public interface IExactLlamaOps : ILlamaOps
{
    void ReadRaw(StepBuffer buffer, Span<long> destination);
    void WriteRaw(StepBuffer buffer, ReadOnlySpan<long> values);

    /// <summary>The float64 view of a raw buffer, for the exact engines' <see cref="ILlamaOps.Read"/>.</summary>
    static void ReadAsDoubles(IExactLlamaOps ops, StepBuffer buffer, Span<double> destination)
    {
        var raw = new long[destination.Length];
        ops.ReadRaw(buffer, raw);
        for (int i = 0; i < raw.Length; i++) destination[i] = GpuIntLab.Core.FixedPoint.Q48.ToDouble(raw[i]);
    }

    /// <summary>Float64 values converted as the oracle converts inputs, for the exact engines' <see cref="ILlamaOps.Write"/>.</summary>
    static void WriteFromDoubles(IExactLlamaOps ops, StepBuffer buffer, ReadOnlySpan<double> values)
    {
        var raw = new long[values.Length];
        for (int i = 0; i < raw.Length; i++) raw[i] = GpuIntLab.Core.FixedPoint.Q48.FromDouble(values[i]);
        ops.WriteRaw(buffer, raw);
    }
}

/// <summary>
/// The one Llama step (llama2.c's forward, for every engine): embed, then per layer
/// [norm, q/k/v (+bias), q/k norm, RoPE + KV store, attention, o, residual, norm, gate/up + SwiGLU, down, residual],
/// then the final norm and the head, over the engine's <see cref="ILlamaOps"/>.
/// </summary>
public static class LlamaStep
{
    /// <summary>Runs <paramref name="tokens"/> through the model at positions position.., appending to the KV cache.</summary>
    public static void Run(ILlamaOps ops, LlamaConfig c, ReadOnlySpan<int> tokens, int position, bool computeLogits, IStepObserver? observer = null)
    {
        int n = tokens.Length;
        var seen = observer is null ? null : new StageReader(ops, c, observer, n);
        ops.Begin(n, position);
        // Token embeddings into the residual stream.
        ops.Embed(tokens);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            // Attention block: pre-norm.
            ops.RmsNorm(l, LayerWeight.InputNorm);
            seen?.Show(l, StepStage.AttentionNorm, StepBuffer.Normed);
            // q, k, v projections of the normed stream (with the bias of Qwen2 / attention_bias).
            ops.QkvProjection(l);
            seen?.Show(l, StepStage.Q, StepBuffer.Q);
            seen?.Show(l, StepStage.K, StepBuffer.K);
            seen?.Show(l, StepStage.V, StepBuffer.V);
            // Qwen3: each query and key head RMS-normalised before RoPE.
            if (c.QkNorm) ops.QkNorm(l);
            // RoPE on q and k at their positions; k and v appended to this layer's cache.
            ops.RopeAndStore(l, position);
            seen?.Show(l, StepStage.QRope, StepBuffer.Q);
            seen?.Show(l, StepStage.KRope, StepBuffer.K);
            // Causal grouped-query attention over every cached position.
            ops.Attention(l, position);
            seen?.Show(l, StepStage.Attention, StepBuffer.Attention);
            // Output projection and the residual add.
            ops.OutputProjection(l);
            seen?.Show(l, StepStage.AttentionOut, StepBuffer.Projected);
            ops.AddResidual(l, LayerWeight.O);
            seen?.Show(l, StepStage.AttentionResidual, StepBuffer.Hidden);

            // MLP block: pre-norm.
            ops.RmsNorm(l, LayerWeight.PostAttentionNorm);
            seen?.Show(l, StepStage.MlpNorm, StepBuffer.Normed);
            // SwiGLU: silu(gate(x)) * up(x).
            ops.GateUpSwiGlu(l);
            seen?.Show(l, StepStage.SwiGlu, StepBuffer.SwiGlu);
            // Down projection and the residual add.
            ops.DownProjection(l);
            seen?.Show(l, StepStage.MlpOut, StepBuffer.Projected);
            ops.AddResidual(l, LayerWeight.Down);
            seen?.Show(l, StepStage.MlpResidual, StepBuffer.Hidden);
        }
        if (!computeLogits) return;
        // Final norm of the last token and the head (lm_head, or the embeddings when tied).
        ops.FinalNormAndHead();
        seen?.Show(-1, StepStage.FinalNorm, StepBuffer.Normed, rows: 1);
        seen?.Show(-1, StepStage.Logits, StepBuffer.Logits, rows: 1);
    }

    /// <summary>Width of a buffer's rows for a config.</summary>
    public static int Width(LlamaConfig c, StepBuffer buffer) => buffer switch
    {
        StepBuffer.Hidden or StepBuffer.Normed or StepBuffer.Projected => c.HiddenSize,
        StepBuffer.Q or StepBuffer.Attention => c.QDim,
        StepBuffer.K or StepBuffer.V => c.KvDim,
        StepBuffer.SwiGlu => c.IntermediateSize,
        StepBuffer.Logits => c.VocabSize,
        _ => throw new ArgumentOutOfRangeException(nameof(buffer)),
    };

    /// <summary>Reads buffers for an observer (only when one is attached: the step pays nothing otherwise).</summary>
    private sealed class StageReader(ILlamaOps ops, LlamaConfig c, IStepObserver observer, int tokens)
    {
        private double[] _values = [];

        public void Show(int layer, StepStage stage, StepBuffer buffer, int? rows = null)
        {
            int count = (rows ?? tokens) * Width(c, buffer);
            if (_values.Length < count) _values = new double[count];
            var span = _values.AsSpan(0, count);
            ops.Read(buffer, span);
            observer.Observe(layer, stage, rows ?? tokens, span);
        }
    }
}

/// <summary>An engine whose logits are exact Q16.48 integers (the oracle and the INT64 backends): one hash serves them all.</summary>
public interface IRawLogitsEngine : IInferenceEngine
{
    /// <summary>Raw Q16.48 logits of the last step that computed logits.</summary>
    long[] LastRawLogits { get; }
}

/// <summary>
/// The engine skeleton every Llama engine shares: position, Reset / Prefill / Decode with the token and context
/// guards, prefill in runs of at most <see cref="MaxStepTokens"/> tokens (1 for one-token engines), logits only
/// after the last run, and the observer hook. Engines supply their <see cref="ILlamaOps"/> and logit read-out.
/// </summary>
public abstract class LlamaEngine : IInferenceEngine, IObservableEngine
{
    protected LlamaEngine(LlamaConfig config) => Config = config;

    public abstract EngineInfo Info { get; }
    public LlamaConfig Config { get; }
    public int Position { get; private set; }
    public IStepObserver? Observer { get; set; }

    /// <summary>The engine's implementation of the step's ops (public for op-level checks; the step itself is the normal entry).</summary>
    public abstract ILlamaOps Ops { get; }

    /// <summary>Tokens one step may take (prefill is split into runs of this size).</summary>
    protected virtual int MaxStepTokens => 1;

    public virtual void Reset() => Position = 0;

    public double[] Prefill(ReadOnlySpan<int> tokens)
    {
        EngineGuards.CheckTokens(Config, tokens, Position);
        if (tokens.Length == 0) throw new ArgumentException("prefill needs at least one token", nameof(tokens));
        CheckContext(Position + tokens.Length);
        for (int start = 0; start < tokens.Length; start += MaxStepTokens)
        {
            int count = Math.Min(MaxStepTokens, tokens.Length - start);
            Step(tokens.Slice(start, count), computeLogits: start + count == tokens.Length);
        }
        return ReadLogits();
    }

    public double[] Decode(int token)
    {
        EngineGuards.CheckTokens(Config, [token], Position);
        CheckContext(Position + 1);
        Step([token], computeLogits: true);
        return ReadLogits();
    }

    /// <summary>
    /// Refuses, before any step runs, a context the engine cannot hold although the model allows it (a device's
    /// shared-memory limit on attention): a prompt is refused whole, never after part of it moved the position.
    /// </summary>
    protected virtual void CheckContext(int positions) { }

    private OpTracker? _tracker;

    /// <summary>Runs one step and advances the position (the CUDA engines override it to replay a captured graph).</summary>
    protected virtual void Step(ReadOnlySpan<int> tokens, bool computeLogits)
    {
        var ops = _tracker ??= new OpTracker(Ops);
        try { LlamaStep.Run(ops, Config, tokens, Position, computeLogits, Observer); }
        catch (GpuIntLab.Core.FixedPoint.Q48OverflowException e)
        {
            // A value left the Q16.48 range: say where in the model, once (the arithmetic only knows its operands).
            throw new GpuIntLab.Core.FixedPoint.Q48OverflowException($"{Info.Name}: {ops.Where}: {e.Message}", e);
        }
        Position += tokens.Length;
    }

    /// <summary>Moves the position after a step an override ran itself.</summary>
    protected void Advance(int tokens) => Position += tokens;

    /// <summary>The logits of the last step that computed them, as float64.</summary>
    protected abstract double[] ReadLogits();

    public abstract void Dispose();
}

/// <summary>Forwards every op and remembers the last one begun (layer and op), so an error can say where in the model it happened.</summary>
internal sealed class OpTracker(ILlamaOps inner) : ILlamaOps
{
    private int _layer = -1;
    private string _op = "";

    public string Where => _layer < 0 ? _op : $"layer {_layer} {_op}";

    private void At(int layer, string op) { _layer = layer; _op = op; }

    public void Begin(int tokens, int position) { At(-1, "step start"); inner.Begin(tokens, position); }
    public void Embed(ReadOnlySpan<int> tokens) { At(-1, "embedding"); inner.Embed(tokens); }
    public void RmsNorm(int layer, LayerWeight norm) { At(layer, norm == LayerWeight.InputNorm ? "input_layernorm" : "post_attention_layernorm"); inner.RmsNorm(layer, norm); }
    public void QkvProjection(int layer) { At(layer, "q/k/v projection"); inner.QkvProjection(layer); }
    public void QkNorm(int layer) { At(layer, "q/k norm"); inner.QkNorm(layer); }
    public void RopeAndStore(int layer, int position) { At(layer, "RoPE"); inner.RopeAndStore(layer, position); }
    public void Attention(int layer, int position) { At(layer, "attention"); inner.Attention(layer, position); }
    public void OutputProjection(int layer) { At(layer, "o_proj"); inner.OutputProjection(layer); }
    public void AddResidual(int layer, LayerWeight block) { At(layer, block == LayerWeight.O ? "attention residual" : "mlp residual"); inner.AddResidual(layer, block); }
    public void GateUpSwiGlu(int layer) { At(layer, "gate/up + SwiGLU"); inner.GateUpSwiGlu(layer); }
    public void DownProjection(int layer) { At(layer, "down_proj"); inner.DownProjection(layer); }
    public void FinalNormAndHead() { At(-1, "final norm + lm_head"); inner.FinalNormAndHead(); }
    public void Read(StepBuffer buffer, Span<double> destination) => inner.Read(buffer, destination);
    public void Write(StepBuffer buffer, ReadOnlySpan<double> values) => inner.Write(buffer, values);
}

/// <summary>The weights of one block as an engine holds them (TLinear: a matrix in the engine's format; TVector: a vector).</summary>
public sealed record LayerWeights<TLinear, TVector>(
    TVector InputNorm, TLinear Q, TVector? QBias, TLinear K, TVector? KBias, TLinear V, TVector? VBias,
    TLinear O, TVector? OBias, TVector? QNorm, TVector? KNorm,
    TVector PostNorm, TLinear Gate, TLinear Up, TLinear Down);

/// <summary>All blocks, the final norm and the head (the embedding matrix itself when tied).</summary>
public sealed record ModelWeights<TLinear, TVector>(LayerWeights<TLinear, TVector>[] Layers, TVector FinalNorm, TLinear LmHead);

/// <summary>
/// The one weight loader: walks a checkpoint's tensors in HF order and builds every engine's weights through its
/// two factories. The head is <see cref="LlamaCheckpoint.LmHead"/> (the embeddings when tied; a factory that
/// wants to share the embedding matrix recognises its name). Optional tensors (biases, q/k norms) are default
/// when the family has none.
/// </summary>
public static class LlamaWeights
{
    public static ModelWeights<TLinear, TVector> Load<TLinear, TVector>(LlamaCheckpoint checkpoint,
        Func<TensorInfo, TLinear> linear, Func<TensorInfo, TVector> vector)
    {
        var c = checkpoint.Config;
        var layers = new LayerWeights<TLinear, TVector>[c.NumHiddenLayers];
        for (int l = 0; l < layers.Length; l++)
        {
            TLinear M(LayerWeight w) => linear(checkpoint.Layer(l, w));
            TVector V(LayerWeight w) => vector(checkpoint.Layer(l, w));
            TVector? Optional(LayerWeight w) => checkpoint.OptionalLayer(l, w) is { } t ? vector(t) : default;
            layers[l] = new LayerWeights<TLinear, TVector>(
                V(LayerWeight.InputNorm), M(LayerWeight.Q), Optional(LayerWeight.QBias), M(LayerWeight.K), Optional(LayerWeight.KBias),
                M(LayerWeight.V), Optional(LayerWeight.VBias), M(LayerWeight.O), Optional(LayerWeight.OBias),
                Optional(LayerWeight.QNorm), Optional(LayerWeight.KNorm),
                V(LayerWeight.PostAttentionNorm), M(LayerWeight.Gate), M(LayerWeight.Up), M(LayerWeight.Down));
        }
        return new ModelWeights<TLinear, TVector>(layers, vector(checkpoint.Info(LlamaCheckpoint.FinalNormName)), linear(checkpoint.LmHead));
    }
}
