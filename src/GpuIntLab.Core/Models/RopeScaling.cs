namespace GpuIntLab.Core.Models;

/// <summary>
/// A checkpoint's <c>rope_scaling</c> (Llama 3.x): the inverse frequencies theta^(-2i/d) are rewritten as
/// transformers' <c>_compute_llama3_parameters</c> does. With wavelength w = 2 pi / inv_freq:
/// w &lt; original / high: kept; w &gt; original / low: divided by factor; in between: (1 - s) f / factor + s f
/// with s = (original / w - low) / (high - low). Only the <c>llama3</c> type exists here.
/// Build it through <see cref="Create"/>, which validates; the table builders validate again because the
/// record's positional constructor is public.
/// </summary>
public sealed record RopeScaling(string Type, double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings)
{
    /// <summary>The one supported <c>rope_type</c> (transformers' spelling).</summary>
    public const string Llama3Type = "llama3";

    /// <summary>
    /// Validated scaling: type "llama3", factor finite and &gt;= 1, 0 &lt; low_freq_factor &lt; high_freq_factor
    /// (both finite), original_max_position_embeddings &gt; 0. Throws <see cref="ArgumentException"/> naming the
    /// rope_scaling field and the problem; the config parser adds the file name.
    /// </summary>
    public static RopeScaling Create(string type, double factor, double lowFreqFactor, double highFreqFactor, int originalMaxPositionEmbeddings)
    {
        var scaling = new RopeScaling(type, factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings);
        scaling.Validate();
        return scaling;
    }

    /// <summary>
    /// Throws <see cref="ArgumentException"/> with the first problem found (see <see cref="Create"/>). No parameter
    /// name is attached, so the message stays one clean line for the parser to prefix with the file name.
    /// </summary>
    public void Validate()
    {
        if (Type != Llama3Type)
        {
            throw new ArgumentException($"rope_scaling type '{Type}' is not supported (only '{Llama3Type}')");
        }

        if (!double.IsFinite(Factor) || Factor < 1)
        {
            throw new ArgumentException($"rope_scaling.factor must be a finite number >= 1, got {Factor:R}");
        }

        if (!double.IsFinite(LowFreqFactor) || LowFreqFactor <= 0)
        {
            throw new ArgumentException($"rope_scaling.low_freq_factor must be a finite number > 0, got {LowFreqFactor:R}");
        }

        // high > low also keeps the interpolation's denominator (high - low) away from zero
        if (!double.IsFinite(HighFreqFactor) || HighFreqFactor <= LowFreqFactor)
        {
            throw new ArgumentException(
                $"rope_scaling.high_freq_factor must be a finite number > low_freq_factor ({LowFreqFactor:R}), got {HighFreqFactor:R}");
        }

        if (OriginalMaxPositionEmbeddings <= 0)
        {
            throw new ArgumentException(
                $"rope_scaling.original_max_position_embeddings must be > 0, got {OriginalMaxPositionEmbeddings}");
        }
    }
}
