namespace GpuIntLab.Core.Models;

/// <summary>
/// A RoPE frequency rewrite from config.json's <c>rope_scaling</c> (or v5 <c>rope_parameters</c>). Only Llama 3's
/// <c>llama3</c> rule is supported (transformers' <c>_compute_llama3_parameters</c>).
/// </summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings)
{
    /// <summary>Validates the llama3 parameters (factor &gt;= 1, 0 &lt; low &lt; high, original &gt; 0); throws ArgumentException naming the field.</summary>
    public static RopeScaling Llama3(double factor, double lowFreqFactor, double highFreqFactor, int originalMaxPositionEmbeddings)
    {
        if (!(factor >= 1 && factor <= 1e6)) throw new ArgumentException($"factor must be in [1, 1e6], got {factor}");
        if (!(lowFreqFactor > 0 && lowFreqFactor <= 1e6)) throw new ArgumentException($"low_freq_factor must be in (0, 1e6], got {lowFreqFactor}");
        if (!(highFreqFactor > lowFreqFactor && highFreqFactor <= 1e6)) throw new ArgumentException($"high_freq_factor must be greater than low_freq_factor ({lowFreqFactor}) and at most 1e6, got {highFreqFactor}");
        if (originalMaxPositionEmbeddings <= 0) throw new ArgumentException($"original_max_position_embeddings must be positive, got {originalMaxPositionEmbeddings}");
        return new RopeScaling("llama3", factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings);
    }
}
