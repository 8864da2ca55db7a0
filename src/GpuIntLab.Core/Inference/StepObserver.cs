namespace GpuIntLab.Core.Inference;

/// <summary>
/// The stages of one Llama step whose outputs an observer can see, in the order the step produces them.
/// Every engine names its intermediate values with these, so any engine's stage can be set beside the oracle's.
/// </summary>
public enum StepStage
{
    /// <summary>input_layernorm output, [T, hidden].</summary>
    AttentionNorm,
    /// <summary>q projection (+ bias), before q-norm and RoPE, [T, heads * head_dim].</summary>
    Q,
    /// <summary>k projection (+ bias), before k-norm and RoPE, [T, kv_heads * head_dim].</summary>
    K,
    /// <summary>v projection (+ bias), [T, kv_heads * head_dim].</summary>
    V,
    /// <summary>q after the per-head q_norm (Qwen3) and RoPE, [T, heads * head_dim].</summary>
    QRope,
    /// <summary>k after the per-head k_norm (Qwen3) and RoPE (what the KV cache stores), [T, kv_heads * head_dim].</summary>
    KRope,
    /// <summary>attention output (softmax(q k^T / sqrt(d)) v, all heads), before o_proj, [T, heads * head_dim].</summary>
    Attention,
    /// <summary>o_proj output, [T, hidden].</summary>
    AttentionOut,
    /// <summary>hidden state after the attention residual add, [T, hidden].</summary>
    AttentionResidual,
    /// <summary>post_attention_layernorm output, [T, hidden].</summary>
    MlpNorm,
    /// <summary>silu(gate) * up, [T, intermediate].</summary>
    SwiGlu,
    /// <summary>down_proj output, [T, hidden].</summary>
    MlpOut,
    /// <summary>hidden state after the MLP residual add, [T, hidden].</summary>
    MlpResidual,
    /// <summary>final norm of the last token, [1, hidden] (layer = -1).</summary>
    FinalNorm,
    /// <summary>logits of the last token, [1, vocab] (layer = -1).</summary>
    Logits,
}

/// <summary>
/// Sees the intermediate values of a step as they are produced (a caller compares them with another engine's).
/// Values are row-major [tokens, width], converted to float64 at the boundary; the span is only valid during the call.
/// Layer is -1 for the stages after the last layer.
/// </summary>
public interface IStepObserver
{
    void Observe(int layer, StepStage stage, int tokens, ReadOnlySpan<double> values);
}

/// <summary>An engine that can report its intermediate values to an observer (null: none, and no cost).</summary>
public interface IObservableEngine
{
    IStepObserver? Observer { get; set; }
}
