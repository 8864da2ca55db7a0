using GpuIntLab.Core.Formats.LowBit;
using GpuIntLab.Core.Formats.WeightOnly;

namespace GpuIntLab.Backends.Cuda;

/// <summary>A mini-float element format as kernels/block.cu and lowbit.cuh take it (the <see cref="MiniFloatFormat"/> fields).</summary>
public sealed record CudaElement(int ExponentBits, int MantissaBits, int Bias, int MaxCode, int SignBit, int NaNCode, int EmaxElement, float ReciprocalOfMax)
{
    public static CudaElement From(MiniFloatFormat f) =>
        new(f.ExponentBits, f.MantissaBits, f.Bias, f.MaxMagnitudeCode, f.SignBit, f.NaNCode, f.EmaxElement, 1f / f.MaxNormal);
}

/// <summary>
/// An INT4 weight-only matrix as gemv_int4 reads it: codes two per byte, row by row ([Rows, ceil(Cols/2)], the low
/// nibble is the even column), one scale per (row, group) in float32 (<see cref="Scales32"/>) or IEEE half bits
/// (<see cref="Scales16"/>, as GPTQ checkpoints store them), one zero-point byte per (row, group), and AWQ's
/// per-input-column divisors (applied to the input by input_f16), else null.
/// </summary>
public sealed record PackedInt4(int Rows, int Cols, int GroupSize, byte[] Codes, float[]? Scales32, ushort[]? Scales16, byte[] Zeros, float[]? InputDivisors)
{
    public int RowBytes => (Cols + 1) / 2;
    public int GroupCount => (Cols + GroupSize - 1) / GroupSize;
    /// <summary>Device bytes of codes, scales, zero points and divisors.</summary>
    public long DeviceBytes => Codes.LongLength + (Scales32?.LongLength * 4 ?? 0) + (Scales16?.LongLength * 2 ?? 0) + Zeros.LongLength + (InputDivisors?.LongLength * 4 ?? 0);
}

/// <summary>
/// An MX or NVFP4 matrix as gemv_block reads it: element codes (4-bit formats two per byte, low nibble first; 8- and
/// 6-bit formats one per byte), row by row, and one scale byte per (row, block of <see cref="BlockSize"/> columns):
/// E8M0 (<see cref="ScaleKind"/> 0, MX) or E4M3 (1, NVFP4, whose decode scale is fp32(E4M3) * <see cref="GlobalDecode"/>).
/// </summary>
public sealed record PackedBlock(int Rows, int Cols, int BlockSize, MiniFloatFormat Element, int CodeBits, byte[] Codes, byte[] Scales, int ScaleKind, float GlobalDecode)
{
    public int RowBytes => CodeBits == 4 ? (Cols + 1) / 2 : Cols;
    public int BlockCount => (Cols + BlockSize - 1) / BlockSize;
    public long DeviceBytes => Codes.LongLength + Scales.LongLength;
}

/// <summary>
/// Host-side packing of the issue-15 formats into the device layouts of kernels/block.cu, and the kernels'
/// dequantization rule applied on the host to the packed bytes (what a kernel computes for each weight), so tests can
/// show that the bytes uploaded decode to exactly the Core codecs' values. Pure functions, no GPU.
/// </summary>
public static class CudaBlockPacking
{
    /// <summary>BF16 weights: each float rounded once (RNE, <see cref="Bf16.FromFloat(float)"/>), row-major.</summary>
    public static ushort[] PackBf16(ReadOnlySpan<float> weights)
    {
        var bits = new ushort[weights.Length];
        Bf16.FromFloat(weights, bits);
        return bits;
    }

    /// <summary>Two 4-bit codes per byte, row by row (a row of odd length ends with a half-used byte), low nibble first.</summary>
    public static byte[] PackNibbles(ReadOnlySpan<byte> codes, int rows, int cols)
    {
        if ((long)rows * cols != codes.Length) throw new ArgumentException($"{codes.Length} codes do not make [{rows}, {cols}]", nameof(codes));
        int rowBytes = (cols + 1) / 2;
        var packed = new byte[(long)rows * rowBytes];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                byte code = codes[r * cols + c];
                if (code > 15) throw new ArgumentException($"code [{r}, {c}] = {code} does not fit 4 bits", nameof(codes));
                packed[(long)r * rowBytes + c / 2] |= (byte)(code << (4 * (c & 1)));
            }
        return packed;
    }

    /// <summary>Code [row, col] of a nibble-packed matrix (the kernels' extraction).</summary>
    public static int Nibble(byte[] packed, int rowBytes, int row, int col) => (packed[(long)row * rowBytes + col / 2] >> (4 * (col & 1))) & 15;

    /// <summary>
    /// An <see cref="Int4Matrix"/> (RTN, GPTQ without act-order, AWQ) in gemv_int4's layout. <paramref name="fp16Scales"/>
    /// rounds the scales to half (RNE) as checkpoints store them (relative change at most 2^-11); otherwise the
    /// codec's float32 scales are kept and the kernel's weights are the codec's values exactly.
    /// </summary>
    public static PackedInt4 PackInt4(Int4Matrix m, bool fp16Scales = false)
    {
        ArgumentNullException.ThrowIfNull(m);
        for (int c = 0; c < m.Cols; c++)
            if (m.GroupOfColumn[c] != c / m.GroupSize)
                throw new ArgumentException("act-order (permuted g_idx) INT4 matrices are not supported by gemv_int4 (groups must be consecutive columns)", nameof(m));
        ushort[]? half = null;
        if (fp16Scales)
        {
            half = new ushort[m.Scales.Length];
            Core.Formats.Fp16.FromFloat(m.Scales, half);
        }
        return new PackedInt4(m.Rows, m.Cols, m.GroupSize, PackNibbles(m.Codes, m.Rows, m.Cols), fp16Scales ? null : (float[])m.Scales.Clone(), half,
            (byte[])m.Zeros.Clone(), m.ChannelScales is null ? null : (float[])m.ChannelScales.Clone());
    }

    /// <summary>One weight as gemv_int4 computes it: float32 (code - zero) * scale, in the quantized space (before AWQ's divisor).</summary>
    public static float DequantizeStored(PackedInt4 p, int row, int col)
    {
        int g = row * p.GroupCount + col / p.GroupSize;
        float scale = p.Scales32 is not null ? p.Scales32[g] : (float)BitConverter.UInt16BitsToHalf(p.Scales16![g]);
        return (Nibble(p.Codes, p.RowBytes, row, col) - (float)p.Zeros[g]) * scale;
    }

    /// <summary>
    /// An MX matrix: each row one <see cref="MxCodec.Quantize"/> vector (blocks of 32 along K), its codes (4-bit elements
    /// packed) and E8M0 scale bytes.
    /// </summary>
    public static PackedBlock PackMx(ReadOnlySpan<float> weights, int rows, int cols, MxFormat format, MxScaleRule rule)
    {
        ArgumentNullException.ThrowIfNull(format);
        if ((long)rows * cols != weights.Length) throw new ArgumentException($"{weights.Length} weights do not make [{rows}, {cols}]", nameof(weights));
        var codes = new byte[(long)rows * cols];
        int blocks = (cols + format.BlockSize - 1) / format.BlockSize;
        var scales = new byte[(long)rows * blocks];
        for (int r = 0; r < rows; r++)
        {
            var v = MxCodec.Quantize(weights.Slice(r * cols, cols), format, rule);
            v.Codes.CopyTo(codes, (long)r * cols);
            v.Scales.CopyTo(scales, (long)r * blocks);
        }
        int bits = format.Element.BitWidth == 4 ? 4 : 8;
        return new PackedBlock(rows, cols, format.BlockSize, format.Element, bits, bits == 4 ? PackNibbles(codes, rows, cols) : codes, scales, 0, 1f);
    }

    /// <summary>NVFP4: the global encode scale from the whole tensor's amax (TransformerEngine), each row quantized with it; E2M1 codes packed.</summary>
    public static PackedBlock PackNvfp4(ReadOnlySpan<float> weights, int rows, int cols)
    {
        if ((long)rows * cols != weights.Length) throw new ArgumentException($"{weights.Length} weights do not make [{rows}, {cols}]", nameof(weights));
        float global = Nvfp4Codec.GlobalEncodeScale(Nvfp4Codec.Amax(weights));
        var codes = new byte[(long)rows * cols];
        int blocks = (cols + Nvfp4Vector.BlockSize - 1) / Nvfp4Vector.BlockSize;
        var scales = new byte[(long)rows * blocks];
        for (int r = 0; r < rows; r++)
        {
            var v = Nvfp4Codec.Quantize(weights.Slice(r * cols, cols), global);
            v.Codes.CopyTo(codes, (long)r * cols);
            v.BlockScales.CopyTo(scales, (long)r * blocks);
        }
        return new PackedBlock(rows, cols, Nvfp4Vector.BlockSize, MiniFloatFormat.E2M1, 4, PackNibbles(codes, rows, cols), scales, 1, 1f / global);
    }

    /// <summary>One weight as gemv_block computes it: element value * block decode scale, float32.</summary>
    public static float Dequantize(PackedBlock p, int row, int col)
    {
        int code = p.CodeBits == 4 ? Nibble(p.Codes, p.RowBytes, row, col) : p.Codes[(long)row * p.RowBytes + col];
        byte s = p.Scales[(long)row * p.BlockCount + col / p.BlockSize];
        float scale = p.ScaleKind == 0 ? E8M0.Decode(s) : Core.Formats.E4M3.Decode(s) * p.GlobalDecode;
        return p.Element.Decode(code) * scale;
    }
}
