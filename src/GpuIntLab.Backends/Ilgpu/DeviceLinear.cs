using GpuIntLab.Core.Formats;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>Device weight layout: matrices are stored column-major ([cols, rows]) so one-thread-per-row kernels read coalesced.</summary>
public static class Layout
{
    /// <summary>Row-major [rows, cols] to column-major (= row-major [cols, rows]).</summary>
    public static T[] Transpose<T>(T[] w, int rows, int cols)
    {
        if (w.Length != (long)rows * cols) throw new ArgumentException($"{w.Length} elements for shape [{rows}, {cols}]", nameof(w));
        var t = new T[w.Length];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                t[(long)c * rows + r] = w[(long)r * cols + c];
        return t;
    }
}

/// <summary>A linear layer y = W x held on the device in one format; float32 vectors in and out.</summary>
public interface IDeviceLinear : IDisposable
{
    int Rows { get; }
    int Cols { get; }
    /// <summary>Device bytes of the weights and their scales.</summary>
    long WeightBytes { get; }
    void Apply(ArrayView<float> x, ArrayView<float> y);
}

/// <summary>Compiled FP16 kernels of one accelerator, plus a scratch buffer for the half activations.</summary>
public sealed class Fp16Format : IDisposable
{
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<ushort>> ToHalf;
    internal readonly Action<Index1D, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, int, int> MatVec;
    internal readonly MemoryBuffer1D<ushort, Stride1D.Dense> Scratch;
    public Accelerator Accelerator { get; }

    public Fp16Format(Accelerator accelerator, int maxCols)
    {
        Accelerator = accelerator;
        ToHalf = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<ushort>>(Fp16Kernels.ToHalf);
        MatVec = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, int, int>(Fp16Kernels.MatVec);
        Scratch = accelerator.Allocate1D<ushort>(maxCols);
    }

    /// <summary>Weights rounded once to half (RNE) from their exact values.</summary>
    public IDeviceLinear Create(float[] weights, int rows, int cols)
    {
        var bits = new ushort[weights.Length];
        Fp16.FromFloat(weights, bits);
        return new Linear(this, Layout.Transpose(bits, rows, cols), rows, cols);
    }

    public void Dispose() => Scratch.Dispose();

    private sealed class Linear(Fp16Format f, ushort[] bits, int rows, int cols) : IDeviceLinear
    {
        private readonly MemoryBuffer1D<ushort, Stride1D.Dense> _w = f.Accelerator.Allocate1D(bits);
        public int Rows => rows;
        public int Cols => cols;
        public long WeightBytes => _w.LengthInBytes;
        public void Apply(ArrayView<float> x, ArrayView<float> y)
        {
            var xh = f.Scratch.View.SubView(0, cols);
            f.ToHalf(cols, x.SubView(0, cols), xh);
            f.MatVec(rows, _w.View, xh, y, rows, cols);
        }
        public void Dispose() => _w.Dispose();
    }
}

/// <summary>Compiled INT8 kernels of one accelerator and scratch buffers for the activation codes.</summary>
public sealed class Int8Format : IDisposable
{
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int> Prepare;
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, int> Quantize;
    internal readonly Action<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int, int> MatVec;
    internal readonly MemoryBuffer1D<float, Stride1D.Dense> Smoothed, Scale, NoSmooth;
    internal readonly MemoryBuffer1D<int, Stride1D.Dense> Packed;
    public Accelerator Accelerator { get; }

    public Int8Format(Accelerator accelerator, int maxCols)
    {
        Accelerator = accelerator;
        Prepare = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int>(Int8Kernels.Prepare);
        Quantize = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, int>(Int8Kernels.Quantize);
        (UseTensorCores, DotProduct) = ChooseDotProduct(accelerator);
        bool noDp4a = accelerator is CudaAccelerator c && c.Architecture is { } arch && (arch.Major < 6 || (arch.Major == 6 && arch.Minor < 1));
        MatVec = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int, int>(
            UseTensorCores ? Int8Kernels.MatVecMma : noDp4a ? Int8Kernels.MatVecScalar : Int8Kernels.MatVec);
        Smoothed = accelerator.Allocate1D<float>(maxCols);
        Scale = accelerator.Allocate1D<float>(1);
        NoSmooth = accelerator.Allocate1D<float>(1);
        Packed = accelerator.Allocate1D<int>((maxCols + 3) / 4);
    }

    /// <summary>Which int8 dot product the kernels use here (for EngineInfo.Precisions).</summary>
    public string DotProduct { get; }

    /// <summary>True when the matvec runs mma.sync s8 tensor-core instructions (one warp per 16 rows).</summary>
    public bool UseTensorCores { get; }

    /// <summary>Threads to launch for a matvec of <paramref name="rows"/> rows.</summary>
    internal int Threads(int rows) => UseTensorCores ? (rows + 15) / 16 * 32 : rows;

    /// <summary>
    /// On CUDA (sm_80+), tries the mma.sync s8 kernel in a throw-away context (a failed compile poisons its
    /// context) on a random matrix against the exact integer result; on success the engine uses it, otherwise
    /// dp4a. Elsewhere the scalar path. The choice and the reason are reported.
    /// </summary>
    private static (bool, string) ChooseDotProduct(Accelerator accelerator)
    {
        if (accelerator is not ILGPU.Runtime.Cuda.CudaAccelerator cuda)
            return (false, "scalar int8 x int8 multiply-add, int32 accumulation (CPU accelerator: CudaAsm unsupported)");
        const string dp4a = "dp4a.s32.s32 (inline PTX), int32 accumulation";
        if (cuda.Architecture is { } arch && (arch.Major < 6 || (arch.Major == 6 && arch.Minor < 1)))
            return (false, $"scalar int8 x int8 multiply-add, int32 accumulation (sm_{arch.Major}{arch.Minor}: no dp4a, no s8 mma)");
        if (cuda.Architecture is { } arch2 && arch2.Major < 8)
            return (false, $"{dp4a} (sm_{arch2.Major}{arch2.Minor}: no m16n8k32 s8 mma)");
        try
        {
            string? failure = TensorCoreSelfTest(cuda.DeviceId);
            return failure == null
                ? (true, "tensor cores: mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 (inline PTX, activation as column 0 of B), int32 accumulation; self-test passed")
                : (false, $"{dp4a} (mma.sync s8 self-test failed: {failure})");
        }
        catch (Exception e)
        {
            return (false, $"{dp4a} (mma.sync s8 kernel failed to compile or run: {e.GetType().Name}: {e.Message})");
        }
    }

    /// <summary>Runs MatVecMma in a fresh context on device <paramref name="deviceId"/>; null when it equals the exact result.</summary>
    private static string? TensorCoreSelfTest(int deviceId)
    {
        const int rows = 40, cols = 200;
        var rng = new Random(5);
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() * 2 - 1);
        var x = new float[cols];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        var m = Quantizer.Quantize(w, rows, cols, QuantFormat.Int8, QuantScheme.PerChannel);
        var expect = new double[rows];
        Quantizer.ReferenceMatVec(m, x, expect);
        var qa = new sbyte[cols];
        float sa = Quantizer.QuantizeActivationsInt8(x, qa);
        int words = (cols + 3) / 4;
        var packedA = new int[words];
        for (int c = 0; c < cols; c++) packedA[c / 4] |= (qa[c] & 0xFF) << (8 * (c % 4));

        using var context = Context.Create(b => b.Cuda());
        using var acc = ILGPU.Runtime.Cuda.CudaContextExtensions.CreateCudaAccelerator(context, deviceId);
        var kernel = acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>, ArrayView<int>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int, int>(Int8Kernels.MatVecMma);
        using var wd = acc.Allocate1D(Pack(m));
        using var ad = acc.Allocate1D(packedA);
        using var sw = acc.Allocate1D(m.WeightScales);
        using var sad = acc.Allocate1D(new[] { sa });
        using var yd = acc.Allocate1D<float>(rows);
        kernel((rows + 15) / 16 * 32, wd.View, ad.View, sw.View, 1, sad.View, yd.View, rows, words);
        acc.Synchronize();
        var y = yd.GetAsArray1D();
        for (int r = 0; r < rows; r++)
            if (Math.Abs(y[r] - expect[r]) > Math.ScaleB(1, -23) * Math.Abs(expect[r]))
                return $"row {r}: {y[r]} vs exact {expect[r]}";
        return null;
    }

    public IDeviceLinear Create(QuantizedMatrix m) => new Linear(this, m);

    public void Dispose() { Smoothed.Dispose(); Scale.Dispose(); NoSmooth.Dispose(); Packed.Dispose(); }

    /// <summary>Int8 codes of W [rows, cols] packed 4 to an int (rows padded to whole words), stored column-major [words, rows].</summary>
    public static int[] Pack(QuantizedMatrix m)
    {
        int words = (m.Cols + 3) / 4;
        var packed = new int[m.Rows * words];
        var codes = m.Int8Codes;
        for (int r = 0; r < m.Rows; r++)
            for (int c = 0; c < m.Cols; c++)
                packed[(c / 4) * m.Rows + r] |= (codes[r * m.Cols + c] & 0xFF) << (8 * (c % 4));
        return packed;
    }

    private sealed class Linear : IDeviceLinear
    {
        private readonly Int8Format _f;
        private readonly MemoryBuffer1D<int, Stride1D.Dense> _w;
        private readonly MemoryBuffer1D<float, Stride1D.Dense> _scales;
        private readonly MemoryBuffer1D<float, Stride1D.Dense>? _smooth;
        private readonly int _words;
        public int Rows { get; }
        public int Cols { get; }
        public long WeightBytes => _w.LengthInBytes + _scales.LengthInBytes + (_smooth?.LengthInBytes ?? 0);

        public Linear(Int8Format f, QuantizedMatrix m)
        {
            if (m.Format != QuantFormat.Int8) throw new ArgumentException("not an int8 matrix", nameof(m));
            _f = f; Rows = m.Rows; Cols = m.Cols; _words = (m.Cols + 3) / 4;
            _w = f.Accelerator.Allocate1D(Pack(m));
            _scales = f.Accelerator.Allocate1D(m.WeightScales);
            if (m.SmoothFactors != null) _smooth = f.Accelerator.Allocate1D(m.SmoothFactors);
        }

        public void Apply(ArrayView<float> x, ArrayView<float> y)
        {
            var xs = _f.Smoothed.View.SubView(0, Cols);
            var packed = _f.Packed.View.SubView(0, _words);
            _f.Prepare(1, x, _smooth?.View ?? _f.NoSmooth.View, _smooth != null ? 1 : 0, xs, _f.Scale.View, Cols);
            _f.Quantize(_words, xs, _f.Scale.View, packed, Cols);
            _f.MatVec(_f.Threads(Rows), _w.View, packed, _scales.View, _scales.Length > 1 ? 1 : 0, _f.Scale.View, y, Rows, _words);
        }

        public void Dispose() { _w.Dispose(); _scales.Dispose(); _smooth?.Dispose(); }
    }
}

/// <summary>Compiled FP8 E4M3 kernels of one accelerator, the decode table and activation scratch.</summary>
public sealed class Fp8Format : IDisposable
{
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int> Prepare;
    internal readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<byte>> Quantize;
    internal readonly Action<Index1D, ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int, int> MatVec;
    internal readonly MemoryBuffer1D<float, Stride1D.Dense> Table, Scale;
    internal readonly MemoryBuffer1D<byte, Stride1D.Dense> Codes;
    public Accelerator Accelerator { get; }

    public Fp8Format(Accelerator accelerator, int maxCols)
    {
        Accelerator = accelerator;
        Prepare = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(Fp8Kernels.Prepare);
        Quantize = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<byte>>(Fp8Kernels.Quantize);
        MatVec = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<byte>, ArrayView<byte>, ArrayView<float>, ArrayView<float>, int, ArrayView<float>, ArrayView<float>, int, int>(Fp8Kernels.MatVec);
        Table = accelerator.Allocate1D(E4M3.CopyDecodeTable());
        Scale = accelerator.Allocate1D<float>(1);
        Codes = accelerator.Allocate1D<byte>(maxCols);
    }

    public IDeviceLinear Create(QuantizedMatrix m) => new Linear(this, m);

    public void Dispose() { Table.Dispose(); Scale.Dispose(); Codes.Dispose(); }

    private sealed class Linear : IDeviceLinear
    {
        private readonly Fp8Format _f;
        private readonly MemoryBuffer1D<byte, Stride1D.Dense> _w;
        private readonly MemoryBuffer1D<float, Stride1D.Dense> _scales;
        public int Rows { get; }
        public int Cols { get; }
        public long WeightBytes => _w.LengthInBytes + _scales.LengthInBytes;

        public Linear(Fp8Format f, QuantizedMatrix m)
        {
            if (m.Format != QuantFormat.E4M3) throw new ArgumentException("not an E4M3 matrix", nameof(m));
            _f = f; Rows = m.Rows; Cols = m.Cols;
            _w = f.Accelerator.Allocate1D(Layout.Transpose(m.Codes, m.Rows, m.Cols));
            _scales = f.Accelerator.Allocate1D(m.WeightScales);
        }

        public void Apply(ArrayView<float> x, ArrayView<float> y)
        {
            var codes = _f.Codes.View.SubView(0, Cols);
            _f.Prepare(1, x, _f.Scale.View, Cols);
            _f.Quantize(Cols, x, _f.Scale.View, codes);
            _f.MatVec(Rows, _w.View, codes, _f.Table.View, _scales.View, _scales.Length > 1 ? 1 : 0, _f.Scale.View, y, Rows, Cols);
        }

        public void Dispose() { _w.Dispose(); _scales.Dispose(); }
    }
}
