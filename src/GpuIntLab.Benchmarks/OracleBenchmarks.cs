using BenchmarkDotNet.Attributes;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

namespace GpuIntLab.Benchmarks;

/// <summary>
/// A one-layer model with TinyLlama-1.1B's widths (hidden 2048, MLP 5632, 32 heads / 4 kv heads, vocab 32000),
/// seeded by the conformance rule, written once to a temp folder: its tensors have TinyLlama's matvec shapes.
/// </summary>
internal static class TinyLlamaWidthModel
{
    private static readonly Lazy<string> s_folder = new(() =>
    {
        string dir = Path.Combine(Path.GetTempPath(), "gpuintlab-bench", "tinyllama-width-1layer");
        if (!File.Exists(Path.Combine(dir, "model.safetensors")))
            SeededCheckpointWriter.Write(dir, SeededCheckpointWriter.TinyLlamaShapedConfig(layers: 1), new SeededCheckpointLayout(TensorDtype.BF16));
        return dir;
    });

    public static LlamaCheckpoint Open() => LlamaCheckpoint.Open(s_folder.Value);
}

/// <summary>The oracle's exact Q16.48 matvec at TinyLlama's shapes (bf16 weights read from the mapping).</summary>
[MemoryDiagnoser]
public class OracleMatVecBenchmarks
{
    private LlamaCheckpoint _checkpoint = null!;
    private ExactMatrix _matrix = null!;
    private long[] _x = null!, _y = null!;

    [Params("q_proj 2048x2048", "gate_proj 5632x2048", "down_proj 2048x5632", "lm_head 32000x2048")]
    public string Shape { get; set; } = "";

    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _checkpoint = TinyLlamaWidthModel.Open();
        var tensor = Shape.Split(' ')[0] switch
        {
            "q_proj" => _checkpoint.Layer(0, LayerWeight.Q),
            "gate_proj" => _checkpoint.Layer(0, LayerWeight.Gate),
            "down_proj" => _checkpoint.Layer(0, LayerWeight.Down),
            _ => _checkpoint.LmHead,
        };
        _matrix = ExactMatrix.Load(_checkpoint, tensor);
        var rng = new Random(7);
        _x = Enumerable.Range(0, _matrix.Cols).Select(_ => rng.NextInt64(-(1L << 50), 1L << 50)).ToArray();
        _y = new long[_matrix.Rows];
    }

    [Benchmark]
    public void MatVec() => _matrix.MatVec(_y, _x, Threads);

    [GlobalCleanup]
    public void Cleanup() => _checkpoint.Dispose();
}

/// <summary>Each integer nonlinear function, per call, over a spread of arguments.</summary>
public class Q48FunctionBenchmarks
{
    private readonly long[] _args = Enumerable.Range(0, 1024).Select(i => (long)(i - 512) << 42).ToArray(); // [-8, 8)
    private readonly long[] _positive = Enumerable.Range(1, 1024).Select(i => (long)i << 40).ToArray();     // (0, 4]
    private readonly long[] _softmaxOut = new long[1024];

    [Benchmark(OperationsPerInvoke = 1024)] public long Exp() { long s = 0; foreach (var a in _args) s += Q48.Exp(a); return s; }
    [Benchmark(OperationsPerInvoke = 1024)] public long Log() { long s = 0; foreach (var a in _positive) s += Q48.Log(a); return s; }
    [Benchmark(OperationsPerInvoke = 1024)] public long Rsqrt() { long s = 0; foreach (var a in _positive) s += Q48.Rsqrt(a); return s; }
    [Benchmark(OperationsPerInvoke = 1024)] public long Sqrt() { long s = 0; foreach (var a in _positive) s += Q48.Sqrt(a); return s; }
    [Benchmark(OperationsPerInvoke = 1024)] public long SinCos() { long s = 0; foreach (var a in _args) { Q48.SinCos(a, out long si, out long co); s += si + co; } return s; }
    [Benchmark(OperationsPerInvoke = 1024)] public long Silu() { long s = 0; foreach (var a in _args) s += Q48.Silu(a); return s; }
    [Benchmark(OperationsPerInvoke = 1024)] public long Mul() { long s = 0; foreach (var a in _args) s += Q48.Mul(a, a); return s; }
    [Benchmark(OperationsPerInvoke = 1024)] public void Softmax1024() => Q48.Softmax(_args, _softmaxOut);
}

/// <summary>One full oracle decode step of the one-layer TinyLlama-width model (lm_head dominates: 65M of its 110M weights).</summary>
public class OracleDecodeStepBenchmarks
{
    private LlamaCheckpoint _checkpoint = null!;
    private OracleEngine _oracle = null!;

    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _checkpoint = TinyLlamaWidthModel.Open();
        _oracle = new OracleEngine(_checkpoint, Threads);
    }

    [Benchmark]
    public long DecodeStep()
    {
        if (_oracle.Position > 64) _oracle.Reset();
        return _oracle.DecodeRaw(1 + _oracle.Position)[0];
    }

    [GlobalCleanup]
    public void Cleanup() { _oracle.Dispose(); _checkpoint.Dispose(); }
}
