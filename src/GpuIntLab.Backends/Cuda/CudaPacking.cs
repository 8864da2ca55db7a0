using System.Runtime.InteropServices;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;

namespace GpuIntLab.Backends.Cuda;

/// <summary>
/// Host-side packing: the exact bytes uploaded to the device for each format, in the layout the kernels
/// assume. Pure functions (no GPU), unit-tested against <see cref="Quantizer"/> and the Q16.48 library.
/// </summary>
public static class CudaPacking
{
    /// <summary>An uploaded linear layer: weights [Rows, Cols] row-major as bytes, and its scales.</summary>
    /// <param name="Weights">FP16: half bits little-endian; INT8: two's complement codes; E4M3: codes; Q48: int64 raws.</param>
    /// <param name="Scales">Weight scales (1 = per tensor, Rows = per channel); empty for FP16 / Q48.</param>
    /// <param name="PerRow">1 when Scales has one entry per output row (the kernels' per_row argument).</param>
    /// <param name="Smooth">SmoothQuant factors (length Cols) the activation is divided by, else null.</param>
    public sealed record PackedMatrix(int Rows, int Cols, byte[] Weights, float[] Scales, int PerRow, float[]? Smooth);

    /// <summary>FP16: each float weight rounded to half (RNE, <see cref="Fp16.FromFloat(float)"/>), row-major.</summary>
    public static PackedMatrix PackFp16(ReadOnlySpan<float> w, int rows, int cols)
    {
        var bits = new ushort[w.Length];
        Fp16.FromFloat(w, bits);
        return new PackedMatrix(rows, cols, MemoryMarshal.AsBytes(bits.AsSpan()).ToArray(), [], 0, null);
    }

    /// <summary>INT8 / E4M3: the Quantizer's codes byte for byte, its scales, the per-row flag and the smooth factors.</summary>
    public static PackedMatrix PackQuantized(QuantizedMatrix m)
    {
        if (m.Codes.Length != m.Rows * m.Cols) throw new ArgumentException("codes length != rows * cols", nameof(m));
        int perRow = m.Scheme == QuantScheme.PerTensor ? 0 : 1;
        if (m.WeightScales.Length != (perRow == 1 ? m.Rows : 1)) throw new ArgumentException("scale count does not match the scheme", nameof(m));
        return new PackedMatrix(m.Rows, m.Cols, (byte[])m.Codes.Clone(), (float[])m.WeightScales.Clone(), perRow,
            m.SmoothFactors is null ? null : (float[])m.SmoothFactors.Clone());
    }

    /// <summary>Q16.48: the raws as little-endian int64, row-major.</summary>
    public static PackedMatrix PackQ48(long[] raws, int rows, int cols)
    {
        if (raws.Length != rows * cols) throw new ArgumentException("length != rows * cols", nameof(raws));
        return new PackedMatrix(rows, cols, MemoryMarshal.AsBytes(raws.AsSpan()).ToArray(), [], 0, null);
    }

    /// <summary>Number of u64 words of the table kernels/q48_math.cuh reads (TAB_WORDS).</summary>
    public const int Q48TableWords = 533;

    /// <summary>
    /// The exp tables of GpuIntLab.Core.FixedPoint.Q48Constants in the layout of q48_math.cuh: Pow2Frac[256]
    /// and ExpCoef[9] as (lo, hi) u64 pairs, ExpStepQ110 as a pair, ExpInvStepQ54. Read from the C# library's own
    /// arrays (Core grants this assembly its internals) so the device uses exactly the oracle's constants.
    /// </summary>
    public static ulong[] Q48Tables()
    {
        var pow2 = Q48Constants.Pow2Frac;
        var coef = InverseFactorialsQ126(8);
        var step = Q48Constants.ExpStepQ110;
        var invStep = Q48Constants.ExpInvStepQ54;
        if (pow2.Length != 256 || coef.Length != 9) throw new InvalidOperationException($"unexpected Q48 table sizes {pow2.Length}, {coef.Length}");
        var t = new ulong[Q48TableWords];
        for (int i = 0; i < 256; i++) { t[2 * i] = (ulong)pow2[i]; t[2 * i + 1] = (ulong)(pow2[i] >> 64); }
        for (int k = 0; k < 9; k++) { t[512 + 2 * k] = (ulong)coef[k]; t[512 + 2 * k + 1] = (ulong)(coef[k] >> 64); }
        t[530] = (ulong)step; t[531] = (ulong)((UInt128)step >> 64);
        t[532] = (ulong)invStep;
        return t;
    }

    /// <summary>
    /// 1/k! in Q2.126, rounded to nearest: the Taylor coefficients q48_math.cuh's exp uses. (The C# library's
    /// exp has since moved to a shorter tail polynomial; both are correctly rounded, 0 ulp from the BigInteger
    /// reference on every sweep point, so they agree except within ~2^-24 ulp of a rounding tie.)
    /// </summary>
    internal static UInt128[] InverseFactorialsQ126(int maxK)
    {
        var c = new UInt128[maxK + 1];
        var factorial = System.Numerics.BigInteger.One;
        for (int k = 0; k <= maxK; k++)
        {
            if (k > 0) factorial *= k;
            var q = System.Numerics.BigInteger.DivRem(System.Numerics.BigInteger.One << 126, factorial, out var r);
            if (2 * r >= factorial) q += 1;
            c[k] = (UInt128)q;
        }
        return c;
    }
}
