using System.Numerics;

namespace GpuIntLab.Core.Formats.LowBit;

/// <summary>
/// A vector quantized to NVIDIA NVFP4: E2M1 element codes (one per byte, unpacked), one E4M3 block scale byte per 16
/// elements along K, and the tensor's float32 global encode scale S_enc (TransformerEngine's convention: the
/// encode direction, 2688 / amax_tensor; ModelOpt stores the decode direction amax/2688 instead).
/// Decoded value: e2m1(code) * (fp32(block scale) * fl32(1 / S_enc)), in float32, the multiplier TransformerEngine's
/// dequantization uses.
/// </summary>
public sealed record Nvfp4Vector(int Length, byte[] Codes, byte[] BlockScales, float GlobalEncodeScale)
{
    /// <summary>Block size along K.</summary>
    public const int BlockSize = 16;

    /// <summary>The float32 decode multiplier of block <paramref name="block"/>: fp32(s_b) * fl32(1 / S_enc).</summary>
    public float BlockDecodeScale(int block) => E4M3.Decode(BlockScales[block]) * (1f / GlobalEncodeScale);

    /// <summary>Decoded values, float32 (see the type's docs).</summary>
    public void Dequantize(Span<float> destination)
    {
        if (destination.Length < Length) throw new ArgumentException("destination too short", nameof(destination));
        for (int i = 0; i < Length; i++)
            destination[i] = MiniFloatFormat.E2M1.Decode(Codes[i]) * BlockDecodeScale(i / BlockSize);
    }
}

/// <summary>
/// NVFP4 quantization exactly as TransformerEngine computes it (<c>transformer_engine/common/cast/nvfp4/core_nvfp4.cuh</c>,
/// the implementation other libraries test against bit for bit), all in float32 with its expression order:
/// <list type="number">
/// <item>Global encode scale: S_enc = fl32(2688 / amax_tensor) (2688 = 448 * 6), capped at float.MaxValue; 1.0 when
/// amax_tensor is 0 or S_enc underflows to 0 (<c>compute_global_encode_scaling_factor_FP4</c>).</item>
/// <item>Block scale: s_b = E4M3_satfinite_RNE(min(block_amax * (S_enc * fl32(1/6)), float.MaxValue))
/// (<c>compute_decoding_scaling_factor</c>). Tiny blocks may get a subnormal E4M3 scale or 0x00.</item>
/// <item>Elements: q = E2M1_satfinite_RNE(x * min(1 / (fp32(s_b) * fl32(1 / S_enc)), float.MaxValue)). A block whose
/// scale is 0 therefore multiplies by float.MaxValue; its codes may be non-zero but decode to 0 (vLLM's fast path
/// writes zeros instead; the decoded values agree).</item>
/// </list>
/// NaN inputs are refused (E2M1 has no NaN; TE's behaviour there is not specified).
/// </summary>
public static class Nvfp4Codec
{
    /// <summary>2688 = 448 (E4M3 max) * 6 (E2M1 max).</summary>
    public const float ScaleProductMax = 448f * 6f;

    /// <summary>TransformerEngine's global encode scale for a tensor whose largest magnitude is <paramref name="tensorAmax"/>.</summary>
    public static float GlobalEncodeScale(float tensorAmax)
    {
        if (float.IsNaN(tensorAmax) || tensorAmax < 0)
            throw new ArgumentOutOfRangeException(nameof(tensorAmax), tensorAmax, "the tensor amax is a magnitude (>= 0, not NaN)");
        float scale = MathF.Min(ScaleProductMax / tensorAmax, float.MaxValue);
        if (tensorAmax == 0f || scale == 0f) return 1f;
        return scale;
    }

    /// <summary>Largest magnitude of <paramref name="values"/>; ArgumentException naming the index of a NaN.</summary>
    public static float Amax(ReadOnlySpan<float> values)
    {
        float amax = 0f;
        for (int i = 0; i < values.Length; i++)
        {
            if (float.IsNaN(values[i])) throw new ArgumentException($"value {i} is NaN; NVFP4 has no NaN encoding", nameof(values));
            amax = MathF.Max(amax, MathF.Abs(values[i]));
        }
        return amax;
    }

    /// <summary>
    /// Quantizes one row (any length; the last block may be short) with the tensor's global encode scale
    /// <paramref name="globalEncodeScale"/> (from <see cref="GlobalEncodeScale"/> of the whole tensor's amax; every row
    /// of a weight matrix shares it).
    /// </summary>
    public static Nvfp4Vector Quantize(ReadOnlySpan<float> values, float globalEncodeScale)
    {
        if (!(globalEncodeScale > 0) || !float.IsFinite(globalEncodeScale))
            throw new ArgumentOutOfRangeException(nameof(globalEncodeScale), globalEncodeScale, "the global encode scale must be finite and > 0");
        int blockCount = (values.Length + Nvfp4Vector.BlockSize - 1) / Nvfp4Vector.BlockSize;
        var codes = new byte[values.Length];
        var scales = new byte[blockCount];
        float globalDecodeScale = 1f / globalEncodeScale;
        float blockScaleFactor = globalEncodeScale * (1f / 6f);
        for (int block = 0; block < blockCount; block++)
        {
            int start = block * Nvfp4Vector.BlockSize;
            ReadOnlySpan<float> blockValues = values.Slice(start, Math.Min(Nvfp4Vector.BlockSize, values.Length - start));
            float blockAmax = Amax(blockValues);
            byte scaleCode = E4M3.Encode(MathF.Min(blockAmax * blockScaleFactor, float.MaxValue));
            scales[block] = scaleCode;
            float elementMultiplier = MathF.Min(1f / (E4M3.Decode(scaleCode) * globalDecodeScale), float.MaxValue);
            for (int i = 0; i < blockValues.Length; i++)
                codes[start + i] = MiniFloatFormat.E2M1.Encode(blockValues[i] * elementMultiplier);
        }
        return new Nvfp4Vector(values.Length, codes, scales, globalEncodeScale);
    }

    /// <summary>
    /// The exact block part of an NVFP4 dot product, Σ_blocks s_a s_b Σ_i q_a q_b, as an exact dyadic rational
    /// (elements are multiples of 0.5 and E4M3 scales of 2^-9). The GEMM's remaining factor
    /// alpha = 1/(S_enc,a * S_enc,b) is not dyadic; multiply it in once at the end (the one inexact step).
    /// </summary>
    public static ExactDyadic ExactBlockDot(Nvfp4Vector a, Nvfp4Vector b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Length != b.Length) throw new ArgumentException($"lengths differ: {a.Length} and {b.Length}", nameof(b));
        BigInteger total = BigInteger.Zero;
        for (int block = 0; block < a.BlockScales.Length; block++)
        {
            long blockSum = 0; // |q| <= 12 half-units: 16 products of at most 144
            int end = Math.Min(a.Length, (block + 1) * Nvfp4Vector.BlockSize);
            for (int i = block * Nvfp4Vector.BlockSize; i < end; i++)
                blockSum += MxCodec.ElementInteger(MiniFloatFormat.E2M1, a.Codes[i]) * MxCodec.ElementInteger(MiniFloatFormat.E2M1, b.Codes[i]);
            long scaleProduct = MxCodec.ElementInteger(MiniFloatFormat.E4M3, a.BlockScales[block])
                              * MxCodec.ElementInteger(MiniFloatFormat.E4M3, b.BlockScales[block]);
            total += (BigInteger)blockSum * scaleProduct;
        }
        // element unit 2^-1 each, E4M3 scale unit 2^-9 each.
        return new ExactDyadic(total, -1 - 1 - 9 - 9, false);
    }
}
