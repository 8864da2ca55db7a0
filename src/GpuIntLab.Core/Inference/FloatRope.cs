using GpuIntLab.Core.Models;

namespace GpuIntLab.Core.Inference;

/// <summary>
/// RoPE for the floating-point engines, in one place: the inverse frequencies theta^(-2i/head_dim) in float64
/// (not HF's float32, as the conformance references compute them), rewritten for Llama 3's <c>llama3</c> scaling
/// exactly as transformers' <c>_compute_llama3_parameters</c> does, and cos/sin tables built position by position.
/// </summary>
public static class FloatRope
{
    public static double[] InverseFrequencies(LlamaConfig c)
    {
        int half = c.HeadDim / 2;
        var inv = new double[half];
        for (int i = 0; i < half; i++) inv[i] = Math.Pow(c.RopeTheta, -2.0 * i / c.HeadDim);
        if (c.RopeScaling is { } s)
        {
            double lowWavelength = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
            double highWavelength = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
            for (int i = 0; i < half; i++)
            {
                double wavelength = 2 * Math.PI / inv[i];
                if (wavelength < highWavelength) continue;                       // high frequencies: kept
                if (wavelength > lowWavelength) { inv[i] /= s.Factor; continue; } // low frequencies: divided by factor
                double smooth = (s.OriginalMaxPositionEmbeddings / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                inv[i] = (1 - smooth) * inv[i] / s.Factor + smooth * inv[i];
            }
        }
        return inv;
    }

    /// <summary>cos and sin of pos * inv_freq[i] for positions [from, to), row-major [position, head_dim/2], rounded to float32.</summary>
    public static (float[] Cos, float[] Sin) SingleTables(double[] inverseFrequencies, int from, int to)
    {
        int half = inverseFrequencies.Length;
        var cos = new float[(long)(to - from) * half];
        var sin = new float[cos.Length];
        for (int p = from; p < to; p++)
            for (int i = 0; i < half; i++)
            {
                double angle = p * inverseFrequencies[i];
                cos[(long)(p - from) * half + i] = (float)Math.Cos(angle);
                sin[(long)(p - from) * half + i] = (float)Math.Sin(angle);
            }
        return (cos, sin);
    }
}
