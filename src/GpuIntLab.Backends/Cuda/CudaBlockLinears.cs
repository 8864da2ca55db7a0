using GpuIntLab.Core.Formats.LowBit;

namespace GpuIntLab.Backends.Cuda;

/// <summary>How a block-format linear turns its float32 input [T, K] into the operand its kernel multiplies.</summary>
public abstract record CudaLinearInput
{
    /// <summary>bf16 bits (input_bf16): the BF16 linear's operand.</summary>
    public sealed record Bf16Bits : CudaLinearInput;
    /// <summary>IEEE half bits after the AWQ divisor when the weights carry one (input_f16): W4A16.</summary>
    public sealed record Fp16 : CudaLinearInput;
    /// <summary>bf16-rounded values as float32 (input_bf16_f32): MX / NVFP4 weight-only.</summary>
    public sealed record Bf16Float : CudaLinearInput;
    /// <summary>MX quantize-dequantize per block with the scale rule (input_mx): MX W+A.</summary>
    public sealed record Mx(MxFormat Format, MxScaleRule Rule) : CudaLinearInput;
    /// <summary>NVFP4 quantize-dequantize with a per-token global scale (input_nvfp4): W4A4.</summary>
    public sealed record Nvfp4 : CudaLinearInput;
}

/// <summary>One uploaded block-format linear layer (device pointers into its <see cref="CudaBlockLinears"/>' device).</summary>
public sealed class CudaBlockLinear
{
    internal enum Kernel { Bf16, Int4, Block }
    internal Kernel Kind { get; init; }
    internal CudaLinearInput Input { get; init; } = new CudaLinearInput.Bf16Bits();
    internal ulong Weights { get; init; }
    internal ulong Scales { get; init; }
    internal ulong Zeros { get; init; }
    internal ulong Divisors { get; init; }
    internal int ScaleF16 { get; init; }
    internal int GroupSize { get; init; }
    internal PackedBlock? Block { get; init; }
    public int Rows { get; init; }
    public int Cols { get; init; }
    /// <summary>Device bytes of the weights and their scales, zero points and divisors.</summary>
    public long DeviceBytes { get; init; }
}

/// <summary>
/// Uploads and runs the linear layers of kernels/block.cu for one CUDA float engine: BF16 (GEMV for one token,
/// mma.sync bf16 GEMM for more), INT4 W4A16 and MX / NVFP4 (one GEMV per token, blockIdx.y). Owns the operand
/// scratch buffers ([maxBatch, maxCols] half / bf16 bits and float32).
/// </summary>
public sealed class CudaBlockLinears
{
    private readonly CudaDevice _dev;
    private readonly CudaModule _module;
    private readonly ulong _bits, _floats;

    public CudaBlockLinears(CudaDevice device, CudaModule module, int maxBatch, long maxCols)
    {
        _dev = device; _module = module;
        _bits = device.Alloc((ulong)(maxBatch * maxCols * 2));
        _floats = device.Alloc((ulong)(maxBatch * maxCols * 4));
    }

    public CudaBlockLinear UploadBf16(float[] weights, int rows, int cols)
    {
        var bits = CudaBlockPacking.PackBf16(weights);
        return new CudaBlockLinear { Kind = CudaBlockLinear.Kernel.Bf16, Rows = rows, Cols = cols, Weights = _dev.Upload<ushort>(bits), DeviceBytes = 2L * bits.Length };
    }

    public CudaBlockLinear UploadInt4(PackedInt4 p) => new()
    {
        Kind = CudaBlockLinear.Kernel.Int4, Input = new CudaLinearInput.Fp16(), Rows = p.Rows, Cols = p.Cols, GroupSize = p.GroupSize,
        Weights = _dev.Upload<byte>(p.Codes),
        Scales = p.Scales32 is not null ? _dev.Upload<float>(p.Scales32) : _dev.Upload<ushort>(p.Scales16!),
        ScaleF16 = p.Scales32 is null ? 1 : 0,
        Zeros = _dev.Upload<byte>(p.Zeros),
        Divisors = p.InputDivisors is null ? 0 : _dev.Upload<float>(p.InputDivisors),
        DeviceBytes = p.DeviceBytes,
    };

    /// <summary>The float32 operand scratch [maxBatch, maxCols] the last Run of a block-scaled layer quantized into (self-checks read it).</summary>
    internal ulong FloatOperand => _floats;

    /// <param name="input">Bf16Float (weight-only) or the matching W+A quantizer (Mx, Nvfp4).</param>
    public CudaBlockLinear UploadBlock(PackedBlock p, CudaLinearInput input)
    {
        if (input is not (CudaLinearInput.Bf16Float or CudaLinearInput.Mx or CudaLinearInput.Nvfp4))
            throw new ArgumentException($"a block-scaled linear takes float32 operands (Bf16Float, Mx or Nvfp4), not {input.GetType().Name}", nameof(input));
        return new CudaBlockLinear
        {
            Kind = CudaBlockLinear.Kernel.Block, Input = input, Rows = p.Rows, Cols = p.Cols, Block = p,
            Weights = _dev.Upload<byte>(p.Codes), Scales = _dev.Upload<byte>(p.Scales), DeviceBytes = p.DeviceBytes,
        };
    }

    /// <summary>y[t, :] = W x[t, :] for t &lt; <paramref name="tokens"/>: the input kernel, then the layer's GEMV / GEMM.</summary>
    public void Run(CudaBlockLinear l, ulong x, int tokens, ulong y)
    {
        int n = l.Rows, k = l.Cols, count = tokens * k;
        var grid = Grid(Ceil(n, 8), tokens);
        var elementwise = Grid(Math.Min(Ceil(count, 256), 4096), 1);
        switch (l.Kind)
        {
            case CudaBlockLinear.Kernel.Bf16:
                _module.Launch("input_bf16", elementwise, 256, 0, x, _bits, count);
                if (tokens == 1) _module.Launch("gemv_bf16", grid, 256, 0, l.Weights, _bits, y, n, k);
                else _module.Launch("gemm_bf16_mma", Grid(Ceil(n, 32), Ceil(tokens, 16)), 128, 0, _bits, l.Weights, y, tokens, n, k);
                break;
            case CudaBlockLinear.Kernel.Int4:
                _module.Launch("input_f16", elementwise, 256, 0, x, l.Divisors, l.Divisors == 0 ? 0 : 1, _bits, count, k);
                _module.Launch("gemv_int4", grid, 256, 0, l.Weights, l.Scales, l.ScaleF16, l.Zeros, _bits, y, n, k, l.GroupSize);
                break;
            default:
                Quantize(l.Input, x, tokens, k);
                var b = l.Block!;
                _module.Launch("gemv_block", grid, 256, 0, l.Weights, b.CodeBits, l.Scales, b.ScaleKind, b.GlobalDecode, b.BlockSize,
                    b.Element.ExponentBits, b.Element.MantissaBits, b.Element.Bias, _floats, y, n, k);
                break;
        }
    }

    private void Quantize(CudaLinearInput input, ulong x, int tokens, int k)
    {
        int count = tokens * k;
        switch (input)
        {
            case CudaLinearInput.Bf16Float:
                _module.Launch("input_bf16_f32", Grid(Math.Min(Ceil(count, 256), 4096), 1), 256, 0, x, _floats, count);
                break;
            case CudaLinearInput.Mx mx:
            {
                var e = CudaElement.From(mx.Format.Element);
                int blocks = tokens * Ceil(k, mx.Format.BlockSize);
                _module.Launch("input_mx", Grid(Math.Min(Ceil(blocks, 256), 4096), 1), 256, 0, x, _floats, tokens, k, mx.Format.BlockSize,
                    e.ExponentBits, e.MantissaBits, e.Bias, e.MaxCode, e.SignBit, e.NaNCode, mx.Rule == MxScaleRule.Rceil ? 1 : 0, e.EmaxElement, e.ReciprocalOfMax);
                break;
            }
            case CudaLinearInput.Nvfp4:
                _module.Launch("input_nvfp4", Grid(tokens, 1), 256, 0, x, _floats, k);
                break;
            default:
                throw new ArgumentException($"no float32 operand quantizer for {input.GetType().Name}", nameof(input));
        }
    }

    private static (uint, uint) Grid(long x, long y) => ((uint)x, (uint)y);
    private static int Ceil(int a, int b) => (a + b - 1) / b;
}
