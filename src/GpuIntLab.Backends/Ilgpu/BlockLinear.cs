using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Formats.LowBit;
using GpuIntLab.Core.Formats.WeightOnly;
using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// A weight matrix in a block-scaled format as the device stores it: one code per weight (row-major [Rows, Cols]
/// here, transposed on upload), the element decode table, one float32 decode scale (and for INT4 one zero point) per
/// (row, block of <see cref="BlockSize"/> input columns), and for AWQ a per-input-column divisor applied to the input.
/// The dequantized weight is (Table[code] - zero) * scale in float32, the value of the codecs' float32 dequantization.
/// </summary>
public sealed record BlockWeights(int Rows, int Cols, int BlockSize, byte[] Codes, float[] Table, float[] Scales,
    float[]? Zeros, float[]? InputDivisors)
{
    public int Blocks => (Cols + BlockSize - 1) / BlockSize;

    /// <summary>
    /// g_idx: the scale/zero group of each input column when it is not column / BlockSize (GPTQ act-order, whose groups
    /// are consecutive in the permuted order); null for contiguous groups. The kernel then reads the group of each
    /// column from it, as AutoGPTQ's g_idx kernels do (exllama and Marlin instead permute the input and the rows once).
    /// </summary>
    public int[]? GroupOfColumn { get; init; }

    /// <summary>INT4 g128 (RTN, GPTQ with or without act-order, AWQ): codes 0..15, table 0..15, fp32 group scales and zero points.</summary>
    public static BlockWeights FromInt4(Int4Matrix m)
    {
        ArgumentNullException.ThrowIfNull(m);
        bool contiguous = true;
        for (int c = 0; c < m.Cols; c++) contiguous &= m.GroupOfColumn[c] == c / m.GroupSize;
        var table = new float[16];
        for (int i = 0; i < 16; i++) table[i] = i;
        return new BlockWeights(m.Rows, m.Cols, m.GroupSize, m.Codes, table, m.Scales, Array.ConvertAll(m.Zeros, z => (float)z), m.ChannelScales)
        {
            GroupOfColumn = contiguous ? null : m.GroupOfColumn,
        };
    }

    /// <summary>An MX format, one MX vector per output row (blocks along K), scale E8M0 decoded to its float power of two.</summary>
    public static BlockWeights FromMx(float[] weights, int rows, int cols, MxFormat format, MxScaleRule rule)
    {
        var codes = new byte[rows * cols];
        int blocks = (cols + format.BlockSize - 1) / format.BlockSize;
        var scales = new float[rows * blocks];
        for (int r = 0; r < rows; r++)
        {
            var v = MxCodec.Quantize(weights.AsSpan(r * cols, cols), format, rule);
            v.Codes.CopyTo(codes, r * cols);
            for (int b = 0; b < blocks; b++) scales[r * blocks + b] = E8M0.Decode(v.Scales[b]);
        }
        return new BlockWeights(rows, cols, format.BlockSize, codes, format.Element.DecodeTable.ToArray(), scales, null, null);
    }

    /// <summary>NVFP4: one global encode scale from the whole tensor's amax, E4M3 block scales folded into float32 decode scales.</summary>
    public static BlockWeights FromNvfp4(float[] weights, int rows, int cols)
    {
        float global = Nvfp4Codec.GlobalEncodeScale(Nvfp4Codec.Amax(weights));
        var codes = new byte[rows * cols];
        int blocks = (cols + Nvfp4Vector.BlockSize - 1) / Nvfp4Vector.BlockSize;
        var scales = new float[rows * blocks];
        for (int r = 0; r < rows; r++)
        {
            var v = Nvfp4Codec.Quantize(weights.AsSpan(r * cols, cols), global);
            v.Codes.CopyTo(codes, r * cols);
            for (int b = 0; b < blocks; b++) scales[r * blocks + b] = v.BlockDecodeScale(b);
        }
        return new BlockWeights(rows, cols, Nvfp4Vector.BlockSize, codes, MiniFloatFormat.E2M1.DecodeTable.ToArray(), scales, null, null);
    }
}

/// <summary>How a block-format linear layer turns its float32 input into the values its matvec multiplies.</summary>
public abstract record InputQuantizer
{
    /// <summary>Rounded to IEEE half (RNE), after the AWQ divisor when the weights carry one: W4A16's half activations.</summary>
    public sealed record Fp16 : InputQuantizer;
    /// <summary>Rounded to bfloat16 (RNE).</summary>
    public sealed record Bf16 : InputQuantizer;
    /// <summary>Quantized per block of the MX format with the scale rule, then dequantized exactly (W+A).</summary>
    public sealed record Mx(MxFormat Format, MxScaleRule Rule) : InputQuantizer;
    /// <summary>NVFP4 with a dynamic global scale from the vector's amax (per token), then dequantized (W4A4).</summary>
    public sealed record Nvfp4 : InputQuantizer;

    /// <summary>The values the matvec sees for input <paramref name="x"/> (the CPU codecs' result; the device must equal it).</summary>
    public float[] Reference(ReadOnlySpan<float> x, float[]? divisors)
    {
        var result = new float[x.Length];
        switch (this)
        {
            case Fp16:
                var scaled = x.ToArray();
                if (divisors != null) for (int j = 0; j < scaled.Length; j++) scaled[j] /= divisors[j];
                var bits = new ushort[scaled.Length];
                Core.Formats.Fp16.FromFloat(scaled, bits);
                for (int j = 0; j < bits.Length; j++) result[j] = (float)BitConverter.UInt16BitsToHalf(bits[j]);
                break;
            case Bf16:
                for (int j = 0; j < x.Length; j++) result[j] = Core.Formats.LowBit.Bf16.RoundToBf16(x[j]);
                break;
            case Mx mx:
                MxCodec.Quantize(x, mx.Format, mx.Rule).Dequantize(result);
                break;
            case Nvfp4:
                Nvfp4Codec.Quantize(x, Nvfp4Codec.GlobalEncodeScale(Nvfp4Codec.Amax(x))).Dequantize(result);
                break;
            default:
                throw new InvalidOperationException(GetType().Name);
        }
        return result;
    }
}

/// <summary>Compiled block-format kernels of one accelerator, the decode tables they need and the input scratch.</summary>
public sealed class BlockFormat : IDisposable
{
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<float>> InputBf16;
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, ArrayView<float>> InputFp16;
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int, int, float> InputMx;
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int> Nvfp4Global;
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int> InputNvfp4;
    internal readonly Action<Index1D, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, ArrayView<int>, int, ArrayView<float>, ArrayView<float>, int, int, int> MatVec;
    internal readonly Action<Index1D, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, int, int> MatVecBf16;
    internal readonly MemoryBuffer1D<float, Stride1D.Dense> Input, Scratch, E2M1Table, E4M3Table, None;
    internal readonly MemoryBuffer1D<int, Stride1D.Dense> NoGroupIndex;
    private readonly Dictionary<MiniFloatFormat, MemoryBuffer1D<float, Stride1D.Dense>> _tables = [];
    public Accelerator Accelerator { get; }

    public BlockFormat(Accelerator accelerator, int maxCols)
    {
        Accelerator = accelerator;
        InputBf16 = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>>(BlockKernels.InputBf16);
        InputFp16 = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, ArrayView<float>>(BlockKernels.InputFp16);
        InputMx = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int, int, float>(BlockKernels.InputMx);
        Nvfp4Global = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(BlockKernels.Nvfp4GlobalScale);
        InputNvfp4 = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(BlockKernels.InputNvfp4);
        MatVec = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, ArrayView<int>, int, ArrayView<float>, ArrayView<float>, int, int, int>(BlockKernels.MatVecBlock);
        MatVecBf16 = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, int, int>(BlockKernels.MatVecBf16);
        Input = accelerator.Allocate1D<float>(maxCols);
        Scratch = accelerator.Allocate1D<float>(1);
        None = accelerator.Allocate1D<float>(1);
        NoGroupIndex = accelerator.Allocate1D<int>(1);
        E2M1Table = Table(MiniFloatFormat.E2M1);
        E4M3Table = Table(MiniFloatFormat.E4M3);
    }

    internal MemoryBuffer1D<float, Stride1D.Dense> Table(MiniFloatFormat element)
    {
        if (!_tables.TryGetValue(element, out var buffer))
            _tables[element] = buffer = Accelerator.Allocate1D(element.DecodeTable.ToArray());
        return buffer;
    }

    /// <summary>A block-scaled linear layer whose input goes through <paramref name="input"/>.</summary>
    public IDeviceLinear Create(BlockWeights weights, InputQuantizer input) => new Linear(this, weights, input);

    /// <summary>A BF16 linear layer: weights rounded once (RNE) to bf16, input rounded to bf16, float32 accumulation.</summary>
    public IDeviceLinear CreateBf16(float[] weights, int rows, int cols)
    {
        var bits = new ushort[weights.Length];
        Core.Formats.LowBit.Bf16.FromFloat(weights, bits);
        return new Bf16Linear(this, Layout.Transpose(bits, rows, cols), rows, cols);
    }

    public void Dispose()
    {
        Input.Dispose(); Scratch.Dispose(); None.Dispose(); NoGroupIndex.Dispose();
        foreach (var t in _tables.Values) t.Dispose();
    }

    /// <summary>Writes the quantized input into <see cref="Input"/> and returns its view.</summary>
    internal ArrayView<float> Quantize(InputQuantizer input, ArrayView<float> x, int cols, MemoryBuffer1D<float, Stride1D.Dense>? divisors)
    {
        var xq = Input.View.SubView(0, cols);
        x = x.SubView(0, cols);
        switch (input)
        {
            case InputQuantizer.Fp16:
                InputFp16(cols, x, divisors?.View ?? None.View, divisors != null ? 1 : 0, xq);
                break;
            case InputQuantizer.Bf16:
                InputBf16(cols, x, xq);
                break;
            case InputQuantizer.Mx mx:
                var e = mx.Format.Element;
                InputMx((cols + mx.Format.BlockSize - 1) / mx.Format.BlockSize, x, xq, Table(e).View, cols, mx.Format.BlockSize,
                    e.MaxMagnitudeCode, e.SignBit, mx.Rule == MxScaleRule.Rceil ? 1 : 0, e.EmaxElement, 1f / e.MaxNormal);
                break;
            case InputQuantizer.Nvfp4:
                Nvfp4Global(1, x, Scratch.View, cols);
                InputNvfp4((cols + Nvfp4Vector.BlockSize - 1) / Nvfp4Vector.BlockSize, x, xq, Scratch.View, E2M1Table.View, E4M3Table.View, cols);
                break;
            default:
                throw new ArgumentException($"unknown input quantizer {input}", nameof(input));
        }
        return xq;
    }

    private sealed class Linear : IDeviceLinear
    {
        private readonly BlockFormat _f;
        private readonly InputQuantizer _input;
        private readonly MemoryBuffer1D<byte, Stride1D.Dense> _codes;
        private readonly MemoryBuffer1D<float, Stride1D.Dense> _table, _scales;
        private readonly MemoryBuffer1D<float, Stride1D.Dense>? _zeros, _divisors;
        private readonly MemoryBuffer1D<int, Stride1D.Dense>? _groupOfColumn;
        private readonly int _blockSize;
        public int Rows { get; }
        public int Cols { get; }
        public long WeightBytes => _codes.LengthInBytes + _scales.LengthInBytes + (_zeros?.LengthInBytes ?? 0) + (_divisors?.LengthInBytes ?? 0) + (_groupOfColumn?.LengthInBytes ?? 0);

        public Linear(BlockFormat f, BlockWeights w, InputQuantizer input)
        {
            if (w.InputDivisors != null && input is not InputQuantizer.Fp16)
                throw new ArgumentException("AWQ input divisors need the fp16 input (W4A16)", nameof(input));
            _f = f; _input = input; Rows = w.Rows; Cols = w.Cols; _blockSize = w.BlockSize;
            var acc = f.Accelerator;
            _codes = acc.Allocate1D(Layout.Transpose(w.Codes, w.Rows, w.Cols));
            _table = acc.Allocate1D(w.Table);
            _scales = acc.Allocate1D(Layout.Transpose(w.Scales, w.Rows, w.Blocks));
            if (w.Zeros != null) _zeros = acc.Allocate1D(Layout.Transpose(w.Zeros, w.Rows, w.Blocks));
            if (w.InputDivisors != null) _divisors = acc.Allocate1D(w.InputDivisors);
            if (w.GroupOfColumn != null) _groupOfColumn = acc.Allocate1D(w.GroupOfColumn);
        }

        public void Apply(ArrayView<float> x, ArrayView<float> y)
        {
            var xq = _f.Quantize(_input, x, Cols, _divisors);
            _f.MatVec(Rows, _codes.View, _table.View, _scales.View, _zeros?.View ?? _f.None.View, _zeros != null ? 1 : 0,
                _groupOfColumn?.View ?? _f.NoGroupIndex.View, _groupOfColumn != null ? 1 : 0, xq, y, Rows, Cols, _blockSize);
        }

        public void Dispose() { _codes.Dispose(); _table.Dispose(); _scales.Dispose(); _zeros?.Dispose(); _divisors?.Dispose(); _groupOfColumn?.Dispose(); }
    }

    private sealed class Bf16Linear(BlockFormat f, ushort[] bits, int rows, int cols) : IDeviceLinear
    {
        private readonly MemoryBuffer1D<ushort, Stride1D.Dense> _w = f.Accelerator.Allocate1D(bits);
        public int Rows => rows;
        public int Cols => cols;
        public long WeightBytes => _w.LengthInBytes;
        public void Apply(ArrayView<float> x, ArrayView<float> y)
        {
            var xq = f.Quantize(new InputQuantizer.Bf16(), x, cols, null);
            f.MatVecBf16(rows, _w.View, xq, y, rows, cols);
        }
        public void Dispose() => _w.Dispose();
    }
}
