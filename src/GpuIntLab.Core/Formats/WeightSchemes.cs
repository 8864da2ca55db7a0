namespace GpuIntLab.Core.Formats;

/// <summary>
/// The identity and storage cost of one weight-quantization scheme, as results and backends name it.
/// Storage is counted as checkpoints store it (packed elements along K, per-block scales, packed zero points,
/// per-tensor scalars, g_idx), not as the CPU codecs hold it in memory (one code per byte, float32 scales).
/// </summary>
/// <param name="Name">Stable scheme name, e.g. "mxfp4", "int4-g128-gptq-asym".</param>
/// <param name="Element">Element encoding: "bf16", "int8", "e4m3", "e2m1", "uint4", ...</param>
/// <param name="BlockSize">Elements per scale along K; 0 = one scale per output row; -1 = one scale per tensor; no scale for 16-bit.</param>
/// <param name="ScaleEncoding">"e8m0", "e4m3+fp32", "fp16", "fp32" or "none".</param>
/// <param name="ScaleRule">How the scale is chosen: "ocp-floor" / "rceil" (MX, <see cref="LowBit.MxScaleRule"/>),
/// "transformer-engine" (NVFP4, <see cref="LowBit.Nvfp4Codec"/>), "minmax" (INT4 RTN on GPTQ's min/max grid,
/// <see cref="WeightOnly.Int4Rtn"/>), "gptq" (<see cref="WeightOnly.Gptq"/>), "awq" (<see cref="WeightOnly.Awq"/>, its own
/// grid), "absmax" and "smoothquant" (<see cref="Quantizer"/>), or "none".</param>
/// <param name="ElementBits">Bits per stored element.</param>
/// <param name="ScaleBits">Bits per block / row / tensor scale.</param>
/// <param name="ZeroBits">Bits per block zero point (asymmetric INT4: a packed 4-bit qzero), else 0.</param>
/// <param name="TensorScalarBits">Bits stored once per tensor besides the block scales (NVFP4's fp32 global scale).</param>
/// <param name="PerInputColumnBits">Bits per input column (GPTQ act-order's int32 g_idx; SmoothQuant's fp32 factors).</param>
public sealed record WeightScheme(string Name, string Element, int BlockSize, string ScaleEncoding, string ScaleRule,
    int ElementBits, int ScaleBits, int ZeroBits = 0, int TensorScalarBits = 0, int PerInputColumnBits = 0)
{
    /// <summary>
    /// Bits per weight independent of the shape: element bits plus the block's scale and zero bits spread over the
    /// block (e.g. 4.25 for MXFP4, 4.5 for NVFP4, 4.15625 for asymmetric INT4 g128); for per-row and per-tensor scales
    /// and the per-tensor / per-column extras, which depend on the shape, see <see cref="BitsPerWeight"/>.
    /// </summary>
    public double NominalBitsPerWeight => BlockSize > 0 ? ElementBits + (double)(ScaleBits + ZeroBits) / BlockSize : ElementBits;

    /// <summary>Bytes to store a [rows, cols] weight (y = W x, cols = K) under this scheme, exactly.</summary>
    public long StorageBytes(int rows, int cols)
    {
        if (rows <= 0 || cols <= 0) throw new ArgumentException($"bad shape [{rows}, {cols}]");
        long elementBytes = rows * CeilDiv((long)cols * ElementBits, 8);
        long scalesPerRow = BlockSize switch
        {
            > 0 => CeilDiv(cols, BlockSize),
            0 => 1,
            _ => 0,
        };
        long scaleBits = BlockSize == -1 ? ScaleBits : rows * scalesPerRow * ScaleBits;
        long zeroBytes = rows * CeilDiv(scalesPerRow * ZeroBits, 8);
        return elementBytes + CeilDiv(scaleBits, 8) + zeroBytes + CeilDiv(TensorScalarBits, 8) + CeilDiv((long)cols * PerInputColumnBits, 8);
    }

    /// <summary>Storage bits per weight for a [rows, cols] matrix (the scale, zero and per-tensor overheads included).</summary>
    public double BitsPerWeight(int rows, int cols) => StorageBytes(rows, cols) * 8.0 / ((double)rows * cols);

    private static long CeilDiv(long a, long b) => (a + b - 1) / b;
}

/// <summary>The shape of a Llama decoder model, for memory per scheme.</summary>
public sealed record LlamaShape(string Name, int Hidden, int Intermediate, int Layers, int Vocab, int KvHeads, int HeadDim, bool TiedEmbeddings)
{
    /// <summary>TinyLlama-1.1B: hidden 2048, intermediate 5632, 22 layers, vocab 32000, 4 kv heads of 64, untied lm_head.</summary>
    public static readonly LlamaShape TinyLlama1B = new("TinyLlama-1.1B", 2048, 5632, 22, 32000, 4, 64, false);

    /// <summary>The seven linears of one decoder layer as (name, rows = out, cols = in).</summary>
    public IReadOnlyList<(string Name, int Rows, int Cols)> LayerLinears =>
    [
        ("q_proj", Hidden, Hidden), ("k_proj", KvHeads * HeadDim, Hidden), ("v_proj", KvHeads * HeadDim, Hidden),
        ("o_proj", Hidden, Hidden), ("gate_proj", Intermediate, Hidden), ("up_proj", Intermediate, Hidden),
        ("down_proj", Hidden, Intermediate),
    ];
}

/// <summary>Model memory under one scheme: the quantized decoder linears and everything else kept in 16 bits.</summary>
public sealed record SchemeMemory(WeightScheme Scheme, long LinearBytes, long OtherBytes, double LinearBitsPerWeight)
{
    /// <summary>Total weight bytes.</summary>
    public long TotalBytes => LinearBytes + OtherBytes;
}

/// <summary>
/// The lab's weight schemes (the 2023 rows and the 2025-2026 formats of issue 15) and their memory on a Llama shape.
/// </summary>
public static class WeightSchemeCatalog
{
    /// <summary>Every scheme; MX formats appear once per scale rule (the rule does not change the storage).</summary>
    public static IReadOnlyList<WeightScheme> All { get; } = Build();

    /// <summary>The scheme named <paramref name="name"/>, or null.</summary>
    public static WeightScheme? Find(string name) => All.FirstOrDefault(s => s.Name == name);

    /// <summary>The scheme named <paramref name="name"/>; an ArgumentException listing the names otherwise.</summary>
    public static WeightScheme Get(string name) =>
        Find(name)
        ?? throw new ArgumentException($"unknown weight scheme '{name}'; known: {string.Join(", ", All.Select(s => s.Name))}", nameof(name));

    private static List<WeightScheme> Build()
    {
        var list = new List<WeightScheme>
        {
            // The exact engines: the oracle holds Q16.48 int64 weights, the float64 engine float64.
            new("q16.48", "int64", -1, "none", "none", 64, 0),
            new("float64", "float64", -1, "none", "none", 64, 0),
            new("fp16", "fp16", -1, "none", "none", 16, 0),
            new("bf16", "bf16", -1, "none", "none", 16, 0),
            new("int8-per-tensor", "int8", -1, "fp32", "absmax", 8, 32),
            new("int8-per-channel", "int8", 0, "fp32", "absmax", 8, 32),
            new("int8-smoothquant", "int8", 0, "fp32", "smoothquant", 8, 32, PerInputColumnBits: 32),
            new("fp8-e4m3-per-tensor", "e4m3", -1, "fp32", "absmax", 8, 32),
            new("fp8-e4m3-per-channel", "e4m3", 0, "fp32", "absmax", 8, 32),
        };
        foreach (var rule in new[] { "ocp-floor", "rceil" })
        {
            list.Add(new($"mxfp8-e4m3-{rule}", "e4m3", 32, "e8m0", rule, 8, 8));
            list.Add(new($"mxfp8-e5m2-{rule}", "e5m2", 32, "e8m0", rule, 8, 8));
            list.Add(new($"mxfp6-e2m3-{rule}", "e2m3", 32, "e8m0", rule, 6, 8));
            list.Add(new($"mxfp6-e3m2-{rule}", "e3m2", 32, "e8m0", rule, 6, 8));
            list.Add(new($"mxfp4-{rule}", "e2m1", 32, "e8m0", rule, 4, 8));
        }
        list.Add(new("nvfp4", "e2m1", 16, "e4m3+fp32", "transformer-engine", 4, 8, TensorScalarBits: 32));
        foreach (var method in new[] { "rtn", "gptq", "awq" })
        {
            string rule = method == "rtn" ? "minmax" : method;
            list.Add(new($"int4-g128-{method}-sym", "int4", 128, "fp16", rule, 4, 16));
            list.Add(new($"int4-g128-{method}-asym", "uint4", 128, "fp16", rule, 4, 16, ZeroBits: 4));
        }
        list.Add(new("int4-g128-gptq-act-sym", "int4", 128, "fp16", "gptq", 4, 16, PerInputColumnBits: 32));
        list.Add(new("int4-g128-gptq-act-asym", "uint4", 128, "fp16", "gptq", 4, 16, ZeroBits: 4, PerInputColumnBits: 32));
        return list;
    }

    /// <summary>
    /// Weight memory of <paramref name="shape"/> under <paramref name="scheme"/>: every decoder linear quantized; the
    /// embedding, the lm_head (unless tied) and the RMSNorm weights stay in 16 bits, as the GPTQ, AWQ, torchao and
    /// llm-compressor recipes leave them (the exact schemes, q16.48 and float64, hold them in 8 bytes too).
    /// </summary>
    public static SchemeMemory Memory(LlamaShape shape, WeightScheme scheme)
    {
        ArgumentNullException.ThrowIfNull(shape);
        ArgumentNullException.ThrowIfNull(scheme);
        long linearBytes = 0, linearWeights = 0;
        foreach (var (_, rows, cols) in shape.LayerLinears)
        {
            linearBytes += scheme.StorageBytes(rows, cols);
            linearWeights += (long)rows * cols;
        }
        linearBytes *= shape.Layers;
        linearWeights *= shape.Layers;
        long embeddings = (long)shape.Vocab * shape.Hidden * (shape.TiedEmbeddings ? 1 : 2);
        long norms = (long)shape.Hidden * (2L * shape.Layers + 1);
        // The exact engines hold every tensor in their own 8-byte format; the quantized schemes keep the rest in 16 bits.
        long otherBytes = (scheme.ElementBits > 16 ? scheme.ElementBits / 8 : 2) * (embeddings + norms);
        return new SchemeMemory(scheme, linearBytes, otherBytes, linearBytes * 8.0 / linearWeights);
    }

    /// <summary>A Markdown table of <see cref="Memory"/> for every scheme (for the README).</summary>
    public static string MemoryTable(LlamaShape shape)
    {
        var lines = new List<string>
        {
            $"| scheme ({shape.Name}) | element | block | scale | bits/weight (linears) | linears MiB | total MiB |",
            "|---|---|---|---|---|---|---|",
        };
        foreach (var scheme in All)
        {
            var m = Memory(shape, scheme);
            string block = scheme.BlockSize switch { > 0 => scheme.BlockSize.ToString(), 0 => "row", _ => "tensor" };
            lines.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"| {scheme.Name} | {scheme.Element} | {block} | {scheme.ScaleEncoding} | {m.LinearBitsPerWeight:F3} | {m.LinearBytes / 1048576.0:F1} | {m.TotalBytes / 1048576.0:F1} |"));
        }
        return string.Join('\n', lines);
    }
}
