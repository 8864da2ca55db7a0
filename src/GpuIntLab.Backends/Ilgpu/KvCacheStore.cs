using GpuIntLab.Core.Formats.LowBit;
using GpuIntLab.Core.Models;
using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// The K and V caches of <see cref="IlgpuFloatEngine"/>, every layer, in one KV-cache format: the store of a step's
/// roped K and V rows and the two attention reads over them (scores, weighted values). The caches are
/// <see cref="GrowableBuffer{T}"/>s sized by positions, so the device memory a format saves is allocated, not just
/// reported: <see cref="DeviceBytes"/> is what the buffers hold now.
/// </summary>
internal abstract class KvCacheStore : IDisposable
{
    private readonly List<IDisposable> _owned = [];
    private readonly List<(Func<long> Bytes, Func<int> Positions, Func<int, bool> Ensure)> _buffers = [];
    private readonly int _initialPositions;

    /// <param name="initialPositions">Positions allocated before the first growth (tests take few, to grow early).</param>
    protected KvCacheStore(Accelerator accelerator, LlamaConfig config, string format, int initialPositions)
    {
        Accelerator = accelerator;
        Config = config;
        Format = format;
        _initialPositions = initialPositions;
    }

    protected Accelerator Accelerator { get; }
    protected LlamaConfig Config { get; }

    /// <summary>The format's name as a spec gives it.</summary>
    public string Format { get; }

    /// <summary>The precision note the engine reports for its cache.</summary>
    public abstract string Description { get; }

    /// <summary>Positions every layer's cache holds now (the buffers start alike and grow together).</summary>
    public int Positions => _buffers.Min(b => b.Positions());

    /// <summary>Device bytes of the position-sized buffers now, all layers (codes and per-token parameters).</summary>
    public long DeviceBytes => _buffers.Sum(b => b.Bytes());

    /// <summary>Device bytes of the format's state that does not grow with the context (fp8's scales and decode table).</summary>
    public long FixedBytes { get; protected set; }

    /// <summary>Bytes one position takes in one layer, K and V together, from the allocations themselves.</summary>
    public long BytesPerToken => DeviceBytes / ((long)Config.NumHiddenLayers * Positions);

    /// <summary>Positions a cache holds before it first grows (as every <see cref="GrowableBuffer{T}"/> of the engine).</summary>
    public const int DefaultInitialPositions = 64;

    /// <summary>Creates the store of a format (<see cref="KvCacheKernels.Formats"/>), room for <see cref="DefaultInitialPositions"/> to start.</summary>
    public static KvCacheStore Create(string format, Accelerator accelerator, LlamaConfig config) => Create(format, accelerator, config, DefaultInitialPositions);

    /// <summary>Creates the store of a format with room for <paramref name="initialPositions"/> to start.</summary>
    public static KvCacheStore Create(string format, Accelerator accelerator, LlamaConfig config, int initialPositions) => format switch
    {
        "float32" => new Float32KvCacheStore(accelerator, config, initialPositions),
        "fp8-e4m3" => new Fp8KvCacheStore(accelerator, config, initialPositions),
        "int8" => new Int8KvCacheStore(accelerator, config, initialPositions),
        _ => throw new ArgumentException($"unknown kv_cache '{format}' (expected {string.Join(", ", KvCacheKernels.Formats)})", nameof(format)),
    };

    /// <summary>A position-sized buffer this store owns; every one grows with <see cref="Ensure"/>.</summary>
    protected GrowableBuffer<T> PerPosition<T>(long elementsPerPosition) where T : unmanaged
    {
        var buffer = Own(new GrowableBuffer<T>(Accelerator, elementsPerPosition, _initialPositions));
        _buffers.Add((() => buffer.LengthInBytes, () => buffer.Positions, buffer.Ensure));
        return buffer;
    }

    protected T Own<T>(T resource) where T : IDisposable { _owned.Add(resource); return resource; }

    /// <summary>Makes room for <paramref name="positions"/> positions in every layer (contents kept).</summary>
    public void Ensure(int positions)
    {
        foreach (var buffer in _buffers) buffer.Ensure(positions);
    }

    /// <summary>Writes layer <paramref name="layer"/>'s K and V rows (kvDim floats each, roped) at <paramref name="position"/>.</summary>
    public abstract void Store(int layer, ArrayView<float> k, ArrayView<float> v, int position);

    /// <summary>scores[h, t] = (q_h . k_t) * scale for t &lt; n, heads x n.</summary>
    public abstract void Scores(int layer, ArrayView<float> q, ArrayView<float> scores, int n, float scale);

    /// <summary>output[h, i] = sum_t p[h, t] * v_t[kvHead(h), i].</summary>
    public abstract void AttentionOutput(int layer, ArrayView<float> p, ArrayView<float> output, int n);

    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
    }
}

/// <summary>float32 rows, stored and read as they are.</summary>
internal sealed class Float32KvCacheStore : KvCacheStore
{
    private readonly GrowableBuffer<float>[] _keys, _values;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int> _copy;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, float> _scores;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int> _output;

    public Float32KvCacheStore(Accelerator accelerator, LlamaConfig config, int initialPositions) : base(accelerator, config, "float32", initialPositions)
    {
        _keys = new GrowableBuffer<float>[config.NumHiddenLayers];
        _values = new GrowableBuffer<float>[config.NumHiddenLayers];
        for (int l = 0; l < _keys.Length; l++) { _keys[l] = PerPosition<float>(config.KvDim); _values[l] = PerPosition<float>(config.KvDim); }
        _copy = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(FloatKernels.CopyTo);
        _scores = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, float>(FloatKernels.Scores);
        _output = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(FloatKernels.AttentionOutput);
    }

    public override string Description => "float32 on the device, 4 bytes a value";

    public override void Store(int layer, ArrayView<float> k, ArrayView<float> v, int position)
    {
        int kv = Config.KvDim;
        _copy(kv, k, _keys[layer].View, position * kv);
        _copy(kv, v, _values[layer].View, position * kv);
    }

    public override void Scores(int layer, ArrayView<float> q, ArrayView<float> scores, int n, float scale)
        => _scores(Config.NumAttentionHeads * n, q, _keys[layer].View, scores, n, Config.HeadDim, Config.KvDim, Config.GroupSize, scale);

    public override void AttentionOutput(int layer, ArrayView<float> p, ArrayView<float> output, int n)
        => _output(Config.QDim, p, _values[layer].View, output, n, Config.HeadDim, Config.KvDim, Config.GroupSize);
}

/// <summary>One E4M3 byte a value, one float32 scale per layer for K and one for V (vLLM calculate_kv_scales).</summary>
internal sealed class Fp8KvCacheStore : KvCacheStore
{
    private const float KScaleConstant = 200f, VScaleConstant = 100f; // vLLM envs K_SCALE_CONSTANT, V_SCALE_CONSTANT
    private readonly GrowableBuffer<byte>[] _keys, _values;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> _scales, _e4m3;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<float>, int, int, float> _scale;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<byte>, int, ArrayView<float>, int, ArrayView<float>> _store;
    private readonly Action<Index1D, ArrayView<float>, Fp8Rows, ArrayView<float>, int, int, int, float> _scores;
    private readonly Action<Index1D, ArrayView<float>, Fp8Rows, ArrayView<float>, int, int, int> _output;

    public Fp8KvCacheStore(Accelerator accelerator, LlamaConfig config, int initialPositions) : base(accelerator, config, "fp8-e4m3", initialPositions)
    {
        _keys = new GrowableBuffer<byte>[config.NumHiddenLayers];
        _values = new GrowableBuffer<byte>[config.NumHiddenLayers];
        for (int l = 0; l < _keys.Length; l++) { _keys[l] = PerPosition<byte>(config.KvDim); _values[l] = PerPosition<byte>(config.KvDim); }
        _scales = Own(accelerator.Allocate1D<float>(2L * config.NumHiddenLayers)); // [layer][k, v]
        _e4m3 = Own(accelerator.Allocate1D(MiniFloatFormat.E4M3.DecodeTable.ToArray()));
        FixedBytes = _scales.LengthInBytes + _e4m3.LengthInBytes;
        _scale = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, float>(KvCacheKernels.Fp8Scale);
        _store = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<byte>, int, ArrayView<float>, int, ArrayView<float>>(KvCacheKernels.Fp8Store);
        _scores = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, Fp8Rows, ArrayView<float>, int, int, int, float>(KvCacheKernels.Scores);
        _output = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, Fp8Rows, ArrayView<float>, int, int, int>(KvCacheKernels.AttentionOutput);
    }

    public override string Description => "fp8-e4m3 as vLLM (calculate_kv_scales): per layer k_scale = max|K|/200, v_scale = max|V|/100 from the first token of each sequence (this engine steps one token at a time; vLLM computes them once, on its first forward batch), write e4m3(x / scale) RNE satfinite, held as 1-byte codes, read fp16(e4m3 * scale) in the attention kernels";

    public override void Store(int layer, ArrayView<float> k, ArrayView<float> v, int position)
    {
        int kv = Config.KvDim;
        if (position == 0)
        {
            _scale(1, k, _scales.View, 2 * layer, kv, KScaleConstant);
            _scale(1, v, _scales.View, 2 * layer + 1, kv, VScaleConstant);
        }
        _store(kv, k, _keys[layer].View, position * kv, _scales.View, 2 * layer, _e4m3.View);
        _store(kv, v, _values[layer].View, position * kv, _scales.View, 2 * layer + 1, _e4m3.View);
    }

    private Fp8Rows Rows(GrowableBuffer<byte> codes, int slot) => new(codes.View, _scales.View, slot, _e4m3.View, Config.KvDim, Config.HeadDim);

    public override void Scores(int layer, ArrayView<float> q, ArrayView<float> scores, int n, float scale)
        => _scores(Config.NumAttentionHeads * n, q, Rows(_keys[layer], 2 * layer), scores, n, Config.HeadDim, Config.GroupSize, scale);

    public override void AttentionOutput(int layer, ArrayView<float> p, ArrayView<float> output, int n)
        => _output(Config.QDim, p, Rows(_values[layer], 2 * layer + 1), output, n, Config.HeadDim, Config.GroupSize);
}

/// <summary>One byte a value plus a float32 scale and zero point per position and kv head (LMDeploy quant_policy=8).</summary>
internal sealed class Int8KvCacheStore : KvCacheStore
{
    private readonly GrowableBuffer<byte>[] _keys, _values;
    private readonly GrowableBuffer<float>[] _keyParameters, _valueParameters;
    private readonly Action<Index1D, ArrayView<float>, ArrayView<byte>, int, ArrayView<float>, int, int> _store;
    private readonly Action<Index1D, ArrayView<float>, Int8Rows, ArrayView<float>, int, int, int, float> _scores;
    private readonly Action<Index1D, ArrayView<float>, Int8Rows, ArrayView<float>, int, int, int> _output;

    public Int8KvCacheStore(Accelerator accelerator, LlamaConfig config, int initialPositions) : base(accelerator, config, "int8", initialPositions)
    {
        int layers = config.NumHiddenLayers;
        _keys = new GrowableBuffer<byte>[layers]; _values = new GrowableBuffer<byte>[layers];
        _keyParameters = new GrowableBuffer<float>[layers]; _valueParameters = new GrowableBuffer<float>[layers];
        for (int l = 0; l < layers; l++)
        {
            _keys[l] = PerPosition<byte>(config.KvDim); _values[l] = PerPosition<byte>(config.KvDim);
            _keyParameters[l] = PerPosition<float>(2L * config.NumKeyValueHeads); _valueParameters[l] = PerPosition<float>(2L * config.NumKeyValueHeads);
        }
        _store = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<byte>, int, ArrayView<float>, int, int>(KvCacheKernels.Int8Store);
        _scores = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, Int8Rows, ArrayView<float>, int, int, int, float>(KvCacheKernels.Scores);
        _output = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, Int8Rows, ArrayView<float>, int, int, int>(KvCacheKernels.AttentionOutput);
    }

    public override string Description => "int8 per token per kv head, asymmetric as LMDeploy (s = (max-min)/255, zp = min), held as 1-byte codes with s and zp as float32 per token per kv head, read q*s + min in float32 in the attention kernels";

    public override void Store(int layer, ArrayView<float> k, ArrayView<float> v, int position)
    {
        int kv = Config.KvDim, heads = Config.NumKeyValueHeads;
        _store(heads, k, _keys[layer].View, position * kv, _keyParameters[layer].View, position * 2 * heads, Config.HeadDim);
        _store(heads, v, _values[layer].View, position * kv, _valueParameters[layer].View, position * 2 * heads, Config.HeadDim);
    }

    private Int8Rows Rows(GrowableBuffer<byte> codes, GrowableBuffer<float> parameters) => new(codes.View, parameters.View, Config.NumKeyValueHeads, Config.HeadDim);

    public override void Scores(int layer, ArrayView<float> q, ArrayView<float> scores, int n, float scale)
        => _scores(Config.NumAttentionHeads * n, q, Rows(_keys[layer], _keyParameters[layer]), scores, n, Config.HeadDim, Config.GroupSize, scale);

    public override void AttentionOutput(int layer, ArrayView<float> p, ArrayView<float> output, int n)
        => _output(Config.QDim, p, Rows(_values[layer], _valueParameters[layer]), output, n, Config.HeadDim, Config.GroupSize);
}
