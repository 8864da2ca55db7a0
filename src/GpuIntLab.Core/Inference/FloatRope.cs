using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Core.Inference;

/// <summary>
/// The float RoPE tables of the float engines (the exact oracle has <see cref="RopeTable"/>). Inverse
/// frequencies in float64 as transformers writes them, inv_freq[i] = 1 / theta^(2i / headDim), then the llama3
/// rewrite of <c>_compute_llama3_parameters</c> in float64 with its operations in its order (the conformance
/// reference's float64 math; transformers itself computes in float32). Angle = pos * inv_freq[i] in float64;
/// cos/sin by libm in float64, and the float32 table is those doubles rounded once. Rows are computed on first
/// use and cached in blocks, safe for concurrent readers; <see cref="CopyRows(int, int, Span{float}, Span{float})"/>
/// fills a whole table for an upload without caching.
/// </summary>
public sealed class FloatRope
{
    private readonly double[] _inverseFrequencies;
    private readonly RopeRowCache<double> _rows64;
    private readonly RopeRowCache<float> _rows32;

    /// <summary>
    /// headDim even in [2, 1024], maxPositions in [1, 2^24] and theta finite and &gt; 1 (the exact table's
    /// limits, so both engines refuse the same configs); the scaling is validated again.
    /// </summary>
    public FloatRope(int headDim, int maxPositions, double theta, RopeScaling? scaling = null)
    {
        if (maxPositions <= 0 || maxPositions > (1 << 24))
        {
            throw new ArgumentOutOfRangeException(nameof(maxPositions), maxPositions, "maxPositions must be in [1, 2^24]");
        }

        _inverseFrequencies = InverseFrequencies(headDim, theta, scaling);
        HeadDim = headDim;
        MaxPositions = maxPositions;
        Scaling = scaling;
        int half = headDim / 2;
        _rows64 = new RopeRowCache<double>(half, maxPositions, FillRows);
        _rows32 = new RopeRowCache<float>(half, maxPositions, FillRows);
    }

    public int HeadDim { get; }

    public int MaxPositions { get; }

    public RopeScaling? Scaling { get; }

    /// <summary>inv_freq[i] (after the llama3 rewrite when scaled), i in [0, HeadDim/2).</summary>
    public double InverseFrequency(int i) => _inverseFrequencies[i];

    /// <summary>cos(position * inv_freq[i]) for i in [0, HeadDim/2), float64.</summary>
    public ReadOnlySpan<double> Cos(int position) => _rows64.Cos(position);

    /// <summary>sin(position * inv_freq[i]) for i in [0, HeadDim/2), float64.</summary>
    public ReadOnlySpan<double> Sin(int position) => _rows64.Sin(position);

    /// <summary>The float64 cos row rounded once to float32.</summary>
    public ReadOnlySpan<float> CosF32(int position) => _rows32.Cos(position);

    /// <summary>The float64 sin row rounded once to float32.</summary>
    public ReadOnlySpan<float> SinF32(int position) => _rows32.Sin(position);

    /// <summary>Rows [firstPosition, firstPosition + count), row-major HeadDim/2 per row, float64, not cached.</summary>
    public void CopyRows(int firstPosition, int count, Span<double> cos, Span<double> sin) => _rows64.CopyRows(firstPosition, count, cos, sin);

    /// <summary>Rows [firstPosition, firstPosition + count), row-major HeadDim/2 per row, float32, not cached.</summary>
    public void CopyRows(int firstPosition, int count, Span<float> cos, Span<float> sin) => _rows32.CopyRows(firstPosition, count, cos, sin);

    /// <summary>
    /// inv_freq[i] = 1 / theta^(2i / headDim) in float64, rewritten by a llama3 <paramref name="scaling"/> as
    /// transformers does: wavelen = 2 pi / f; wavelen &gt; original / low: f / factor; wavelen in
    /// [original / high, original / low]: (1 - s) f / factor + s f with s = (original / wavelen - low) / (high - low).
    /// </summary>
    public static double[] InverseFrequencies(int headDim, double theta, RopeScaling? scaling)
    {
        if (headDim <= 0 || (headDim & 1) != 0 || headDim > 1024)
        {
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "headDim must be even, in [2, 1024]");
        }

        if (!double.IsFinite(theta) || theta <= 1)
        {
            throw new ArgumentOutOfRangeException(nameof(theta), theta, "rope theta must be finite and > 1");
        }

        scaling?.Validate();
        var inverse = new double[headDim / 2];
        for (int i = 0; i < inverse.Length; i++)
        {
            double f = 1.0 / Math.Pow(theta, (double)(2 * i) / headDim);
            inverse[i] = scaling == null ? f : Llama3(f, scaling);
        }

        return inverse;
    }

    // transformers' _compute_llama3_parameters for one frequency, same operations in the same order
    private static double Llama3(double inverseFrequency, RopeScaling scaling)
    {
        double original = scaling.OriginalMaxPositionEmbeddings;
        double lowFreqWavelength = original / scaling.LowFreqFactor;
        double highFreqWavelength = original / scaling.HighFreqFactor;
        double wavelength = 2 * Math.PI / inverseFrequency;
        double rewritten = wavelength > lowFreqWavelength ? inverseFrequency / scaling.Factor : inverseFrequency;
        double smooth = ((original / wavelength) - scaling.LowFreqFactor) / (scaling.HighFreqFactor - scaling.LowFreqFactor);
        double smoothed = ((1 - smooth) * rewritten / scaling.Factor) + (smooth * rewritten);
        bool medium = !(wavelength < highFreqWavelength) && !(wavelength > lowFreqWavelength);
        return medium ? smoothed : rewritten;
    }

    private void FillRows(int firstPosition, int count, Span<double> cos, Span<double> sin)
    {
        int half = _inverseFrequencies.Length;
        for (int row = 0; row < count; row++)
        {
            double pos = firstPosition + row;
            for (int i = 0; i < half; i++)
            {
                double angle = pos * _inverseFrequencies[i];
                cos[(row * half) + i] = Math.Cos(angle);
                sin[(row * half) + i] = Math.Sin(angle);
            }
        }
    }

    private void FillRows(int firstPosition, int count, Span<float> cos, Span<float> sin)
    {
        int half = _inverseFrequencies.Length;
        for (int row = 0; row < count; row++)
        {
            double pos = firstPosition + row;
            for (int i = 0; i < half; i++)
            {
                double angle = pos * _inverseFrequencies[i];
                cos[(row * half) + i] = (float)Math.Cos(angle);
                sin[(row * half) + i] = (float)Math.Sin(angle);
            }
        }
    }
}
