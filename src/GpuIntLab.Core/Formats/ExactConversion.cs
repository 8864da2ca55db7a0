using System.Buffers.Binary;

namespace GpuIntLab.Core.Formats;

/// <summary>
/// Exact conversion of bf16 / f16 / f32 bit patterns to Q16.48 raw integers (value = raw / 2^48),
/// by integer bit manipulation only: sign, exponent, mantissa, shift. Bits below 2^-48 are rounded
/// to nearest, ties to even. Values of magnitude 32768 or more, infinities and NaNs cannot be
/// represented and throw <see cref="WeightRangeException"/>: the caller names the tensor.
/// </summary>
public static class ExactConversion
{
    public const int FracBits = 48;

    /// <summary>Q16.48 raw of the value (-1)^sign * mantissa * 2^exponent2 (mantissa an integer).</summary>
    /// <returns>false when the value is outside the Q16.48 range.</returns>
    private static bool TryScale(bool negative, ulong mantissa, int exponent2, out long raw)
    {
        raw = 0;
        if (mantissa == 0) return true;
        int shift = exponent2 + FracBits; // raw = mantissa * 2^shift
        ulong magnitude;
        if (shift >= 0)
        {
            // Value must stay below 2^15 in magnitude: raw below 2^63.
            int bits = 64 - System.Numerics.BitOperations.LeadingZeroCount(mantissa);
            if (bits + shift > 63) return false;
            magnitude = mantissa << shift;
        }
        else
        {
            int right = -shift;
            if (right >= 64)
            {
                // Everything is below half an ulp unless right == 64 and the top bit... mantissa < 2^53 so below half.
                magnitude = 0;
            }
            else
            {
                ulong kept = mantissa >> right;
                ulong dropped = mantissa & ((1UL << right) - 1);
                ulong half = 1UL << (right - 1);
                if (dropped > half || (dropped == half && (kept & 1) == 1)) kept++;
                magnitude = kept;
            }
            if (magnitude > long.MaxValue) return false;
        }
        raw = negative ? -(long)magnitude : (long)magnitude;
        return true;
    }

    /// <summary>Decodes an IEEE-style binary format into (negative, integer mantissa, exponent).</summary>
    private static bool TryDecode(uint bits, int exponentBits, int mantissaBits, out bool negative, out ulong mantissa, out int exponent2)
    {
        int bias = (1 << (exponentBits - 1)) - 1;
        uint expMask = (1u << exponentBits) - 1;
        negative = ((bits >> (exponentBits + mantissaBits)) & 1) != 0;
        uint e = (bits >> mantissaBits) & expMask;
        ulong m = bits & ((1u << mantissaBits) - 1);
        if (e == expMask)
        {
            mantissa = 0; exponent2 = 0;
            return false; // infinity or NaN
        }
        if (e == 0)
        {
            mantissa = m; exponent2 = 1 - bias - mantissaBits; // subnormal
        }
        else
        {
            mantissa = m | (1UL << mantissaBits); exponent2 = (int)e - bias - mantissaBits;
        }
        return true;
    }

    private static long Convert(uint bits, int exponentBits, int mantissaBits, string kind)
    {
        if (!TryDecode(bits, exponentBits, mantissaBits, out bool negative, out ulong mantissa, out int exponent2))
            throw new WeightRangeException($"{kind} 0x{bits:X} is infinite or NaN");
        if (!TryScale(negative, mantissa, exponent2, out long raw))
            throw new WeightRangeException($"{kind} 0x{bits:X} = {ToDoubleForMessage(negative, mantissa, exponent2)} is outside the Q16.48 range (|x| < 32768)");
        return raw;
    }

    // Boundary helper: only used to make an error message readable.
    private static double ToDoubleForMessage(bool negative, ulong mantissa, int exponent2)
        => (negative ? -1.0 : 1.0) * mantissa * Math.Pow(2, exponent2);

    public static long Bf16ToQ48(ushort bits) => Convert(bits, 8, 7, "bf16");

    /// <summary>Decodes the native <see cref="TensorDtype.M8E8"/> integer encoding (integer operations only).</summary>
    public static long M8E8ToQ48(ushort code)
    {
        if (code == 0) return 0;
        int e = (code >> 7) & 0xFF;
        if (e < 86 || e > 141) throw new WeightRangeException($"m8e8 code 0x{code:X4} has exponent field {e} outside [86, 141]");
        long magnitude = (long)(128 + (code & 0x7F)) << (e - 86);
        return (code & 0x8000) != 0 ? -magnitude : magnitude;
    }

    /// <summary>Encodes a Q16.48 raw as <see cref="TensorDtype.M8E8"/> when it has at most 8 significant bits and magnitude &gt;= 128 ulp; null otherwise.</summary>
    public static ushort? TryQ48ToM8E8(long raw)
    {
        if (raw == 0) return 0;
        if (raw == long.MinValue) return null;
        ulong v = (ulong)Math.Abs(raw);
        int length = 64 - System.Numerics.BitOperations.LeadingZeroCount(v);
        if (length < 8) return null;
        int shift = length - 8;
        if ((v & ((1UL << shift) - 1)) != 0) return null;
        int m = (int)(v >> shift) - 128;
        int e = shift + 86;
        return (ushort)((raw < 0 ? 0x8000 : 0) | (e << 7) | m);
    }
    public static long F16ToQ48(ushort bits) => Convert(bits, 5, 10, "f16");
    public static long F32ToQ48(uint bits) => Convert(bits, 8, 23, "f32");

    /// <summary>Converts a little-endian tensor payload to Q16.48 raws.</summary>
    public static void ToQ48(TensorDtype dtype, ReadOnlySpan<byte> source, Span<long> destination, string tensorName)
    {
        int size = TensorDtypeInfo.SizeOf(dtype);
        if (source.Length != destination.Length * size)
            throw new ArgumentException($"{tensorName}: {source.Length} bytes for {destination.Length} values of {dtype}");
        int i = 0;
        try
        {
            switch (dtype)
            {
                case TensorDtype.BF16:
                    for (; i < destination.Length; i++) destination[i] = Bf16ToQ48(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
                    break;
                case TensorDtype.F16:
                    for (; i < destination.Length; i++) destination[i] = F16ToQ48(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
                    break;
                case TensorDtype.F32:
                    for (; i < destination.Length; i++) destination[i] = F32ToQ48(BinaryPrimitives.ReadUInt32LittleEndian(source[(4 * i)..]));
                    break;
                case TensorDtype.M8E8:
                    for (; i < destination.Length; i++) destination[i] = M8E8ToQ48(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
                    break;
                case TensorDtype.Q48:
                    for (; i < destination.Length; i++) destination[i] = BinaryPrimitives.ReadInt64LittleEndian(source[(8 * i)..]);
                    break;
            }
        }
        catch (WeightRangeException e)
        {
            throw new WeightRangeException($"tensor '{tensorName}' element {i}: {e.Message}");
        }
    }

    // ---- Boundary: exact widening to IEEE double (every bf16/f16/f32 value is a double) ----

    public static double Bf16ToDouble(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);
    public static double F16ToDouble(ushort bits) => (double)BitConverter.UInt16BitsToHalf(bits);
    public static double F32ToDouble(uint bits) => BitConverter.UInt32BitsToSingle(bits);

    /// <summary>Widens a little-endian tensor payload to float64 (exact).</summary>
    public static void ToDouble(TensorDtype dtype, ReadOnlySpan<byte> source, Span<double> destination)
    {
        int size = TensorDtypeInfo.SizeOf(dtype);
        if (source.Length != destination.Length * size)
            throw new ArgumentException($"{source.Length} bytes for {destination.Length} values of {dtype}");
        switch (dtype)
        {
            case TensorDtype.BF16:
                for (int i = 0; i < destination.Length; i++) destination[i] = Bf16ToDouble(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
                break;
            case TensorDtype.F16:
                for (int i = 0; i < destination.Length; i++) destination[i] = F16ToDouble(BinaryPrimitives.ReadUInt16LittleEndian(source[(2 * i)..]));
                break;
            case TensorDtype.F32:
                for (int i = 0; i < destination.Length; i++) destination[i] = F32ToDouble(BinaryPrimitives.ReadUInt32LittleEndian(source[(4 * i)..]));
                break;
            case TensorDtype.M8E8:
            case TensorDtype.Q48:
                // Boundary: integer-encoded weights widen to double through their exact Q16.48 raw.
                var raws = new long[destination.Length];
                ToQ48(dtype, source, raws, "(native)");
                for (int i = 0; i < destination.Length; i++) destination[i] = raws[i] * (1.0 / (1L << FracBits));
                break;
        }
    }

    /// <summary>Narrows float64 to a storage dtype with round-to-nearest-even (used when writing checkpoints).</summary>
    public static void FromDouble(TensorDtype dtype, ReadOnlySpan<double> source, Span<byte> destination)
    {
        switch (dtype)
        {
            case TensorDtype.BF16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], DoubleToBf16(source[i]));
                break;
            case TensorDtype.F16:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(destination[(2 * i)..], BitConverter.HalfToUInt16Bits((Half)source[i]));
                break;
            case TensorDtype.F32:
                for (int i = 0; i < source.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(destination[(4 * i)..], BitConverter.SingleToUInt32Bits((float)source[i]));
                break;
            default:
                throw new ArgumentException($"{dtype} is an integer encoding: convert through Q16.48 instead", nameof(dtype));
        }
    }

    /// <summary>float64 to bf16, round to nearest even (a float32 intermediate rounded to odd keeps the double rounding correct).</summary>
    public static ushort DoubleToBf16(double value)
    {
        // Round double -> bf16 directly: work on double bits to avoid double rounding through float32.
        float f = (float)value;
        if ((double)f != value)
        {
            // Not exactly representable in f32: round to odd in f32 first so the second rounding is correct.
            uint fb = BitConverter.SingleToUInt32Bits(f);
            bool truncatedTowardZero = Math.Abs((double)f) < Math.Abs(value);
            uint odd = (fb & 1) == 1 ? fb : (truncatedTowardZero ? fb + 1 : fb - 1);
            f = BitConverter.UInt32BitsToSingle(odd);
        }
        uint bits = BitConverter.SingleToUInt32Bits(f);
        if ((bits & 0x7F800000) == 0x7F800000) return (ushort)((bits >> 16) | ((bits & 0xFFFF) != 0 ? 0x40u : 0u));
        uint rounding = 0x7FFF + ((bits >> 16) & 1);
        return (ushort)((bits + rounding) >> 16);
    }
}

/// <summary>A weight that cannot be represented in Q16.48 (too large, infinite or NaN).</summary>
public sealed class WeightRangeException(string message) : Exception(message);
