using System.Numerics;

namespace GpuIntLab.Core.Formats.LowBit;

/// <summary>
/// An OCP microscaling block format (OCP MX spec v1.0): blocks of <see cref="BlockSize"/> consecutive elements along
/// the contraction (K) dimension share one E8M0 scale; decode is v_i = 2^(scale - 127) * element_i.
/// The scale rule is not part of the format (<see cref="MxScaleRule"/>); a scheme is (format, rule).
/// </summary>
public sealed record MxFormat(string Name, MiniFloatFormat Element, int BlockSize)
{
    /// <summary>MXFP8 with E4M3 elements, block 32.</summary>
    public static readonly MxFormat Mxfp8E4M3 = new("mxfp8-e4m3", MiniFloatFormat.E4M3, 32);
    /// <summary>MXFP8 with E5M2 elements, block 32.</summary>
    public static readonly MxFormat Mxfp8E5M2 = new("mxfp8-e5m2", MiniFloatFormat.E5M2, 32);
    /// <summary>MXFP6 with E2M3 elements, block 32.</summary>
    public static readonly MxFormat Mxfp6E2M3 = new("mxfp6-e2m3", MiniFloatFormat.E2M3, 32);
    /// <summary>MXFP6 with E3M2 elements, block 32.</summary>
    public static readonly MxFormat Mxfp6E3M2 = new("mxfp6-e3m2", MiniFloatFormat.E3M2, 32);
    /// <summary>MXFP4 (E2M1 elements), block 32.</summary>
    public static readonly MxFormat Mxfp4 = new("mxfp4", MiniFloatFormat.E2M1, 32);

    /// <summary>The five MX formats of the spec's concrete list.</summary>
    public static IReadOnlyList<MxFormat> All { get; } = [Mxfp8E4M3, Mxfp8E5M2, Mxfp6E2M3, Mxfp6E3M2, Mxfp4];
}

/// <summary>
/// A vector quantized to an MX format: one element code per value (unpacked, one per byte; packing is not part of the
/// spec) and one E8M0 scale byte per block. The last block may be shorter than the block size: that is the same as
/// microxcaling's zero padding, because zeros change neither the block's amax nor encode to anything but 0.
/// A block whose scale is the NaN byte decodes to NaN everywhere (spec); its element codes are 0.
/// </summary>
public sealed record MxVector(MxFormat Format, MxScaleRule Rule, int Length, byte[] Codes, byte[] Scales)
{
    /// <summary>Number of blocks, ceil(Length / BlockSize).</summary>
    public int BlockCount => Scales.Length;

    /// <summary>Exact value of element <paramref name="index"/> as a double (element * 2^(scale-127); NaN for a NaN block).</summary>
    public double ValueAt(int index)
    {
        byte scale = Scales[index / Format.BlockSize];
        if (scale == E8M0.NaNCode) return double.NaN;
        return Math.ScaleB((double)Format.Element.Decode(Codes[index]), E8M0.UnbiasedExponent(scale));
    }

    /// <summary>Exact values as doubles (every MX value fits a double exactly).</summary>
    public double[] DequantizeExact()
    {
        var values = new double[Length];
        for (int i = 0; i < Length; i++) values[i] = ValueAt(i);
        return values;
    }

    /// <summary>
    /// Values as float32, element * 2^(scale-127) in float arithmetic. Exact except where the true value lies outside
    /// float32's range: only scales above 2^111 (E5M2) / 2^119 (E4M3) can overflow to infinity.
    /// </summary>
    public void Dequantize(Span<float> destination)
    {
        if (destination.Length < Length) throw new ArgumentException("destination too short", nameof(destination));
        for (int i = 0; i < Length; i++)
            destination[i] = Format.Element.Decode(Codes[i]) * E8M0.Decode(Scales[i / Format.BlockSize]);
    }
}

/// <summary>
/// MX quantization (per block: amax, E8M0 scale by the rule, elements by RNE with satfinite) and the exact block
/// dot product.
/// <para>
/// Elements: P_i = Encode(V_i * 2^(127 - scale)) in float32 (torchao and TransformerEngine multiply by the exact
/// power-of-two reciprocal). The product is exact except when it falls below 2^-126, where every element format
/// rounds to 0 anyway (half their smallest subnormal is at least 2^-17), so the codes equal the exact-arithmetic
/// RNE of V_i / X. Under <see cref="MxScaleRule.Rceil"/> scale byte 0 uses TransformerEngine's multiplier 1.0
/// (<see cref="E8M0.EncodeMultiplier"/>).
/// </para>
/// </summary>
public static class MxCodec
{
    /// <summary>Quantizes <paramref name="values"/> (any length; a NaN or infinity follows the rule, see <see cref="E8M0.ScaleFor"/>).</summary>
    public static MxVector Quantize(ReadOnlySpan<float> values, MxFormat format, MxScaleRule rule)
    {
        ArgumentNullException.ThrowIfNull(format);
        int blockSize = format.BlockSize;
        int blockCount = (values.Length + blockSize - 1) / blockSize;
        var codes = new byte[values.Length];
        var scales = new byte[blockCount];
        for (int block = 0; block < blockCount; block++)
        {
            int start = block * blockSize;
            ReadOnlySpan<float> blockValues = values.Slice(start, Math.Min(blockSize, values.Length - start));
            float amax = 0f;
            bool sawNaN = false;
            foreach (float v in blockValues)
            {
                if (float.IsNaN(v)) sawNaN = true;
                else amax = MathF.Max(amax, MathF.Abs(v));
            }
            byte scale = E8M0.ScaleFor(sawNaN ? float.NaN : amax, format.Element, rule);
            scales[block] = scale;
            if (scale == E8M0.NaNCode) continue; // the whole block decodes as NaN; element codes stay 0
            float multiplier = E8M0.EncodeMultiplier(scale, rule);
            for (int i = 0; i < blockValues.Length; i++) codes[start + i] = format.Element.Encode(blockValues[i] * multiplier);
        }
        return new MxVector(format, rule, values.Length, codes, scales);
    }

    /// <summary>
    /// The exact dot product Σ_i a_i b_i of two MX vectors of equal length and block size (element formats may differ):
    /// per block an integer sum of element products (elements as integer multiples of their smallest subnormal), then
    /// the blocks combined exactly with their scale exponents. NaN when a block of either operand has a NaN scale.
    /// Elements must be finite (the quantizer never produces infinite or NaN element codes).
    /// </summary>
    public static ExactDyadic ExactDot(MxVector a, MxVector b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        if (a.Length != b.Length) throw new ArgumentException($"lengths differ: {a.Length} and {b.Length}", nameof(b));
        if (a.Format.BlockSize != b.Format.BlockSize)
            throw new ArgumentException($"block sizes differ: {a.Format.BlockSize} and {b.Format.BlockSize}", nameof(b));
        int blockSize = a.Format.BlockSize;
        int unitExponentA = ElementUnitExponent(a.Format.Element), unitExponentB = ElementUnitExponent(b.Format.Element);
        // Everything is accumulated at the lowest possible weight 2^(-127-127 + unitA + unitB).
        BigInteger total = BigInteger.Zero;
        for (int block = 0; block < a.BlockCount; block++)
        {
            byte scaleA = a.Scales[block], scaleB = b.Scales[block];
            if (scaleA == E8M0.NaNCode || scaleB == E8M0.NaNCode) return ExactDyadic.NaN;
            Int128 blockSum = 0;
            int end = Math.Min(a.Length, (block + 1) * blockSize);
            for (int i = block * blockSize; i < end; i++)
                blockSum += (Int128)ElementInteger(a.Format.Element, a.Codes[i]) * ElementInteger(b.Format.Element, b.Codes[i]);
            total += (BigInteger)blockSum << (scaleA + scaleB);
        }
        return new ExactDyadic(total, -2 * E8M0.Bias + unitExponentA + unitExponentB, false);
    }

    /// <summary>log2 of the element format's smallest subnormal (its value unit), e.g. -1 for E2M1.</summary>
    internal static int ElementUnitExponent(MiniFloatFormat element) => 1 - element.Bias - element.MantissaBits;

    /// <summary>The element's value as an integer multiple of the smallest subnormal (sign included).</summary>
    internal static long ElementInteger(MiniFloatFormat element, byte code)
    {
        float value = element.Decode(code);
        if (!float.IsFinite(value))
            throw new ArgumentException($"{element.Name} code 0x{code:X2} is not finite; exact dot products need finite elements", nameof(code));
        int mantissaMask = (1 << element.MantissaBits) - 1;
        int exponentField = (code >> element.MantissaBits) & ((1 << element.ExponentBits) - 1);
        long magnitude = exponentField == 0
            ? code & mantissaMask
            : (long)((code & mantissaMask) | (1 << element.MantissaBits)) << (exponentField - 1);
        return (code & element.SignBit) != 0 ? -magnitude : magnitude;
    }
}
