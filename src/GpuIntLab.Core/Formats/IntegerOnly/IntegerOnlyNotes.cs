using System.Globalization;

namespace GpuIntLab.Core.Formats.IntegerOnly;

/// <summary>What the integer-only engines (CPU reference and ILGPU) record about themselves in every result.</summary>
public static class IntegerOnlyNotes
{
    public const string Format = "int8 x int8 -> int32, int32 activations at 2^-16";
    public const string Scheme = "w8a8-integer-only";

    /// <summary>The precision notes, one line per algorithm (the same for both engines: they compute the same bits).</summary>
    public static Dictionary<string, string> Precisions(IntegerOnlyModel model)
    {
        string F(int v) => v.ToString(CultureInfo.InvariantCulture);
        return new Dictionary<string, string>
        {
            ["floating point"] = "none in the step: weights, norm weights, biases, eps and 1/sqrt(head_dim) quantised at load; logits int32 -> float64 at the output only",
            ["weights"] = "int8 per output channel, amax/127, RNE; scale as a 16-bit dyadic m/2^e; embedding int8 per row the same way (a tied head shares it)",
            ["activations"] = "int32 at 2^-16 between ops (residual stream, linear outputs, q/k/v, attention, SwiGLU, logits), saturating adds; "
                + "int8 codes at each linear input, dynamic per token, dyadic scale m/2^e with m in [128, 256) (smallest m covering amax/127, integer ceiling division), RNE integer division",
            ["matmul"] = "DI-MatMul: exact int32 sum of int8 x int8, requantised RNE(acc * m_x * m_w / 2^(e_x + e_w - 16)) in int64; bias int32 at 2^-16 added after (dynamic s_x makes I-BERT's s_x*s_w bias scale per token)",
            ["rmsnorm"] = "integer: row prescaled by 2^k to max |x| in [2^22, 2^23), int64 sum of squares, RNE mean + eps (dyadic " + F(model.Epsilon.Multiplier) + "/2^" + F(model.Epsilon.Exponent)
                + "), I-BERT Newton i-sqrt with up to 8 extra bits, one RNE division per element, gamma int16 codes per vector shift; q/k norm (Qwen3) the same per head",
            ["rope"] = "oracle's exact Q16.48 cos/sin table rounded to int32 at 2^-30; rotate-half, exact int64 sums, RNE to 2^-16",
            ["attention"] = "q, k, v int8 per token and head (dynamic dyadic scales; the KV cache stores int8 codes + scales); scores int32 q.k requantised with 1/sqrt(d) = "
                + F(model.AttentionScale.Multiplier) + "/2^" + F(model.AttentionScale.Exponent) + " to 2^-16",
            ["softmax"] = "DI-ClippedSoftmax shape: max subtracted, clipped at max - " + F(IntegerExp.ClipMagnitude)
                + ", integer exp at 2^-30 (I-BERT i-exp / I-LLM DI-Exp base-2 decomposition: exact 2^-32 ln2 step, quartic 2^f in Q30, rel. error <= 3.9e-6), int64 sum, probabilities RNE(e * 2^16 / sum) (16-bit)",
            ["attention output"] = "sum of p * v_code * m_v aligned to 2^-32 in int64 (per-token value scales), RNE to 2^-16",
            ["swiglu"] = "DI-Sigmoid from the same integer exp (e0/(e0+e(-x)), RNE division, 2^-30), silu = RNE(x * sigma), times up, RNE to 2^-16",
        };
    }
}
