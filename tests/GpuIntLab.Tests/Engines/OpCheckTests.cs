using System.Diagnostics;
using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Engines;

/// <summary>
/// Op-level checks in the spirit of llama.cpp's test-backend-ops: every op of every engine of the one Llama step,
/// run alone on seeded inputs next to the oracle's same op. Q16.48 engines must match bit for bit; the others
/// within a per-element bound derived from their format (see each bound's comment and <see cref="LinearBounds"/>).
/// Models: the Llama 2 conformance checkpoint and the Qwen2 (q/k/v biases), Qwen3 (q/k norm, head_dim 32) and
/// Llama 3 (llama3-scaled RoPE) families.
/// </summary>
public class OpCheckTests(ITestOutputHelper output)
{
    private static readonly double U32 = Math.ScaleB(1, -24);

    /// <summary>The oracle's own error allowance for one output: 32 Q16.48 ulps per unit of the op's magnitude.</summary>
    private static double OracleAllowance(double magnitude) => 32 * OracleRounding.Ulp * (1 + magnitude);

    public static TheoryData<string> Models() => new("conformance", "tiny-qwen2", "tiny-qwen3", "tiny-llama3");

    private static (string Folder, int[] Tokens) Model(string name) => name == "conformance"
        ? (TestData.ConformanceBf16, DeterminismGate.Llama2Prompts[0])
        : (FamilyConformance.Model(name).Folder, FamilyConformance.Model(name).Case("greedy-0").InputIds);

    [Theory]
    [MemberData(nameof(Models))]
    public void EveryOpOfEveryEngineMatchesTheOracle(string modelName)
    {
        var clock = Stopwatch.StartNew();
        var (folder, tokens) = Model(modelName);
        using var checkpoint = LlamaCheckpoint.Open(folder);
        using var oracle = new OracleEngine(checkpoint, threads: 2);
        var scales = StageScales.Measure(oracle, tokens.AsSpan(0, Math.Min(8, tokens.Length)));
        var engines = modelName == "conformance" ? OpEngine.All : OpEngine.Families(modelName);
        // SmoothQuant's bound needs its smoothing factors, which come from the same calibration the provider runs.
        var calibration = engines.Any(e => e.Scheme == Core.Formats.QuantScheme.SmoothQuant)
            ? IlgpuProvider.Calibrate(checkpoint, DeterminismGate.Llama2Prompts, threads: 2) : null;
        output.WriteLine($"{modelName}: oracle, scales and calibration in {clock.Elapsed.TotalSeconds:F2} s");
        var failures = new List<string>();
        clock = Stopwatch.StartNew();
        foreach (var engine in engines)
        {
            var engineClock = Stopwatch.StartNew();
            using var instance = engine.Create(checkpoint);
            double created = engineClock.Elapsed.TotalSeconds;
            var session = new OpCheckSession(engine, instance.Ops, oracle);
            CheckEveryOp(session, checkpoint, scales, new LinearBounds(engine, calibration), seed: 1234);
            output.WriteLine($"{modelName} {engine.Name}: created in {created:F2} s, checked in {engineClock.Elapsed.TotalSeconds - created:F2} s");
            foreach (var (op, r) in session.Records)
            {
                string measured = engine.Format == OpFormat.Exact
                    ? $"max |diff| {r.WorstError:E2} (bit-exact required)"
                    : $"worst |err| {r.WorstError:E2} vs bound {r.BoundAtWorst:E2} (ratio {r.WorstRatio:F3})";
                output.WriteLine($"{modelName,-12} {engine.Name,-24} {op,-26} {measured} over {r.Elements} elements");
                if (r.Failures > 0) failures.Add($"{modelName} {engine.Name} {op}: {r.Failures} of {r.Elements} outside; first {r.FirstFailure}");
            }
        }
        output.WriteLine($"{modelName}: {engines.Length} engines in {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    /// <summary>Every op at every layer (RoPE at several positions, attention at several cache lengths), then the head.</summary>
    private static void CheckEveryOp(OpCheckSession s, LlamaCheckpoint checkpoint, StageScales scale, LinearBounds linear, int seed)
    {
        var c = checkpoint.Config;
        var inputs = new OpInputs(seed);
        double u = s.Engine.GlueRoundoff;
        int d = c.HiddenSize, hd = c.HeadDim;
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            foreach (var norm in new[] { LayerWeight.InputNorm, LayerWeight.PostAttentionNorm })
                CheckRmsNorm(s, checkpoint, inputs, scale, l, norm);

            // QkvProjection: three linears of the same normed input (+ Qwen2 biases).
            var normed = inputs.Draw(d, scale[StepStage.AttentionNorm]);
            s.Begin(0);
            s.Write(StepBuffer.Normed, normed);
            s.Poison(StepBuffer.Q, c.QDim); s.Poison(StepBuffer.K, c.KvDim); s.Poison(StepBuffer.V, c.KvDim);
            s.Run(o => o.QkvProjection(l));
            foreach (var (buffer, weight, bias, rows) in new[]
            {
                (StepBuffer.Q, LayerWeight.Q, LayerWeight.QBias, c.QDim), (StepBuffer.K, LayerWeight.K, LayerWeight.KBias, c.KvDim),
                (StepBuffer.V, LayerWeight.V, LayerWeight.VBias, c.KvDim),
            })
            {
                var bound = LinearRows(linear, checkpoint, l, weight, bias, rows, normed);
                s.Compare(checkpoint.OptionalLayer(l, bias) is null ? "QkvProjection" : "QkvProjection+bias", buffer, rows, i => bound[i]);
            }

            if (c.QkNorm)
            {
                // Per-head RMSNorm over head_dim, in place: same derivation as RmsNorm with n = head_dim.
                var q = inputs.Draw(c.QDim, scale[StepStage.Q]);
                var k = inputs.Draw(c.KvDim, scale[StepStage.K]);
                s.Begin(0);
                s.Write(StepBuffer.Q, q); s.Write(StepBuffer.K, k);
                s.Run(o => o.QkNorm(l));
                var qOut = s.Oracle(StepBuffer.Q, c.QDim);
                var kOut = s.Oracle(StepBuffer.K, c.KvDim);
                s.Compare("QkNorm", StepBuffer.Q, c.QDim, i => NormBound(u, hd, qOut[i]));
                s.Compare("QkNorm", StepBuffer.K, c.KvDim, i => NormBound(u, hd, kOut[i]));
            }

            // RoPE at the first positions and far out (5000: where llama3 scaling bends the low frequencies).
            foreach (int position in new[] { 0, 3, 5000 }.Where(p => p < c.MaxPositionEmbeddings))
            {
                var q = inputs.Draw(c.QDim, scale[StepStage.QRope]);
                var k = inputs.Draw(c.KvDim, scale[StepStage.KRope]);
                s.Begin(position);
                s.Write(StepBuffer.Q, q); s.Write(StepBuffer.K, k); s.Write(StepBuffer.V, inputs.Draw(c.KvDim, scale[StepStage.V]));
                s.Run(o => o.RopeAndStore(l, position));
                string op = position >= 1000 ? "RopeAndStore@5000" : "RopeAndStore";
                s.Compare(op, StepBuffer.Q, c.QDim, i => RopeBound(u, hd, position, q, i));
                s.Compare(op, StepBuffer.K, c.KvDim, i => RopeBound(u, hd, position, k, i));
            }

            foreach (int length in new[] { 1, 6, 37 }) CheckAttention(s, c, inputs, scale, l, length);

            // OutputProjection: attention output x W_o^T (+ o bias where the family has one).
            var attention = inputs.Draw(c.QDim, scale[StepStage.Attention]);
            s.Begin(0);
            s.Write(StepBuffer.Attention, attention);
            s.Poison(StepBuffer.Projected, d);
            s.Run(o => o.OutputProjection(l));
            var oBound = LinearRows(linear, checkpoint, l, LayerWeight.O, LayerWeight.OBias, d, attention);
            s.Compare("OutputProjection", StepBuffer.Projected, d, i => oBound[i]);

            foreach (var block in new[] { LayerWeight.O, LayerWeight.Down })
            {
                // AddResidual: one float32 (float64) rounding of an exact sum, which Q16.48 holds exactly.
                var hidden = inputs.Draw(d, scale[StepStage.AttentionResidual]);
                var projected = inputs.Draw(d, scale[block == LayerWeight.O ? StepStage.AttentionOut : StepStage.MlpOut]);
                s.Begin(0);
                s.Write(StepBuffer.Hidden, hidden); s.Write(StepBuffer.Projected, projected);
                s.Run(o => o.AddResidual(l, block));
                s.Compare("AddResidual", StepBuffer.Hidden, d, i => u * Math.Abs(hidden[i] + projected[i]) + OracleAllowance(Math.Abs(hidden[i] + projected[i])));
            }

            CheckSwiGlu(s, checkpoint, inputs, scale, linear, l);

            // DownProjection: SwiGLU output x W_down^T.
            var swiGlu = inputs.Draw(c.IntermediateSize, scale[StepStage.SwiGlu]);
            s.Begin(0);
            s.Write(StepBuffer.SwiGlu, swiGlu);
            s.Poison(StepBuffer.Projected, d);
            s.Run(o => o.DownProjection(l));
            var downBound = LinearRows(linear, checkpoint, l, LayerWeight.Down, null, d, swiGlu);
            s.Compare("DownProjection", StepBuffer.Projected, d, i => downBound[i]);
        }
        CheckFinalNormAndHead(s, checkpoint, inputs, scale, linear);
    }

    /// <summary>
    /// RMSNorm bound, relative to the exact output y_i = w_i x_i / rms: the float sum of n squares carries at most n u
    /// relative error, halved by the square root; rsqrt (Newton on sqrt, within ~1 ulp), the /n, the + eps and the
    /// final reciprocal add 4 u; the two products w * (x * inv) add 2 u: (n/2 + 8) u |y_i|, plus the oracle's rounding.
    /// </summary>
    private static double NormBound(double u, int n, double y) => (n / 2.0 + 8) * u * Math.Abs(y) + OracleAllowance(Math.Abs(y));

    private static void CheckRmsNorm(OpCheckSession s, LlamaCheckpoint checkpoint, OpInputs inputs, StageScales scale, int layer, LayerWeight norm)
    {
        int d = checkpoint.Config.HiddenSize;
        s.Begin(0);
        s.Write(StepBuffer.Hidden, inputs.Draw(d, scale[StepStage.AttentionResidual]));
        s.Poison(StepBuffer.Normed, d);
        s.Run(o => o.RmsNorm(layer, norm));
        var y = s.Oracle(StepBuffer.Normed, d);
        s.Compare(norm == LayerWeight.InputNorm ? "RmsNorm(input)" : "RmsNorm(post-attention)", StepBuffer.Normed, d, i => NormBound(s.Engine.GlueRoundoff, d, y[i]));
    }

    /// <summary>
    /// RoPE bound for output i of a head (pair a = x_i, b = x_(i +- half)): cos and sin each rounded once to the engine's
    /// float (u relative), two products and one add/subtract (u each): 4 u (|a| + |b|). The oracle's and the float
    /// engines' angles pos * inv_freq differ by the Q16.48 rounding of inv_freq times pos (2^-49 pos) plus a few ulp
    /// of its integer sin/cos: (pos + 16) 2^-48 (|a| + |b|).
    /// </summary>
    private static double RopeBound(double u, int headDim, int position, double[] x, int i)
    {
        int half = headDim / 2, offset = i % headDim;
        int partner = offset < half ? i + half : i - half;
        double pair = Math.Abs(x[i]) + Math.Abs(x[partner]);
        return (4 * u + (position + 16) * OracleRounding.Ulp) * pair + OracleAllowance(pair);
    }

    /// <summary>
    /// Attention over a cache of <paramref name="length"/> positions filled by RopeAndStore with seeded q/k/v, then a fresh
    /// seeded (already rotated) q at the last position so both engines attend with the same query.
    /// Bound per output (head h, element i), with V = max |v| of the head's cache and for each position j
    ///   ds_j = scale * sum_i |q_i| ((hd + 2) u |k_ji| + dk_ji)   (float dot of hd products, the scale product; dk: the
    ///                                                              cache's RoPE error, sqrt2 times RopeBound's pair term)
    /// softmax turns score errors into relative probability errors of at most 2 max ds (e^(2 ds) - 1, taken with a
    /// factor 1 + 2 ds), the exp polynomial (degree 7 on |r| &lt;= ln2/2, truncation below u) and its steps ~8 u, the sum
    /// of n terms n u, the division u; the p.v sum adds n u relative to sum p |v| &lt;= V:
    ///   |out - out~| &lt;= V (2 ds (1 + 2 ds) + (2 n + 12) u), plus the oracle's ulps on each of its n probabilities.
    /// </summary>
    private static void CheckAttention(OpCheckSession s, LlamaConfig c, OpInputs inputs, StageScales scale, int layer, int length)
    {
        double u = s.Engine.GlueRoundoff;
        int hd = c.HeadDim, kvDim = c.KvDim;
        var keys = new double[length][];
        var values = new double[length][];
        for (int p = 0; p < length; p++)
        {
            s.Begin(p);
            s.Write(StepBuffer.Q, inputs.Draw(c.QDim, scale[StepStage.QRope]));
            s.Write(StepBuffer.K, inputs.Draw(kvDim, scale[StepStage.KRope]));
            values[p] = inputs.Draw(kvDim, scale[StepStage.V]);
            s.Write(StepBuffer.V, values[p]);
            s.Run(o => o.RopeAndStore(layer, p));
            keys[p] = s.Oracle(StepBuffer.K, kvDim);
        }
        int last = length - 1;
        var query = inputs.Draw(c.QDim, scale[StepStage.QRope]);
        s.Write(StepBuffer.Q, query);
        s.Poison(StepBuffer.Attention, c.QDim);
        s.Run(o => o.Attention(layer, last));
        double attentionScale = 1 / Math.Sqrt(hd);
        var bound = new double[c.QDim];
        for (int h = 0; h < c.NumAttentionHeads; h++)
        {
            int kv = h / c.GroupSize * hd;
            double v = 0, ds = 0;
            for (int j = 0; j < length; j++)
            {
                double dot = 0, err = 0;
                for (int i = 0; i < hd; i++)
                {
                    int partner = i < hd / 2 ? i + hd / 2 : i - hd / 2;
                    double k = Math.Abs(keys[j][kv + i]), pair = k + Math.Abs(keys[j][kv + partner]);
                    double q = Math.Abs(query[h * hd + i]);
                    dot += q * k;
                    err += q * ((hd + 2) * u * k + Math.Sqrt(2) * (4 * u + (j + 16) * OracleRounding.Ulp) * pair);
                    v = Math.Max(v, Math.Abs(values[j][kv + i]));
                }
                // The oracle's score: the exact dot rounded once, times its Q16.48 scale (a few ulp relative).
                ds = Math.Max(ds, attentionScale * err + 4 * OracleRounding.Ulp * (1 + attentionScale * dot));
            }
            double head = v * (2 * ds * (1 + 2 * ds) + (2 * length + 12) * u) + OracleAllowance(length * v);
            for (int i = 0; i < hd; i++) bound[h * hd + i] = head;
        }
        s.Compare($"Attention(n={length})", StepBuffer.Attention, c.QDim, i => bound[i]);
    }

    /// <summary>
    /// GateUpSwiGlu: with the linear bounds Eg, Eu of gate and up (LinearBounds) and exact g, up (float64 from the
    /// checkpoint weights), silu' is at most 1.1 in magnitude, so
    ///   |out - out~| &lt;= 1.1 Eg (|up| + Eu) + |silu(g)| Eu + 12 u |silu(g) up|
    /// where 12 u covers exp (~8 u), 1 + e, the division and the product.
    /// </summary>
    private static void CheckSwiGlu(OpCheckSession s, LlamaCheckpoint checkpoint, OpInputs inputs, StageScales scale, LinearBounds linear, int layer)
    {
        var c = checkpoint.Config;
        int d = c.HiddenSize, ff = c.IntermediateSize;
        double u = s.Engine.GlueRoundoff;
        var normed = inputs.Draw(d, scale[StepStage.MlpNorm]);
        s.Begin(0);
        s.Write(StepBuffer.Normed, normed);
        s.Poison(StepBuffer.SwiGlu, ff);
        s.Run(o => o.GateUpSwiGlu(layer));
        var gateWeights = checkpoint.ReadSingle(checkpoint.Layer(layer, LayerWeight.Gate));
        var upWeights = checkpoint.ReadSingle(checkpoint.Layer(layer, LayerWeight.Up));
        var gateBound = linear.Rows(LlamaCheckpoint.LayerTensorName(layer, LayerWeight.Gate), gateWeights, ff, d, normed);
        var upBound = linear.Rows(LlamaCheckpoint.LayerTensorName(layer, LayerWeight.Up), upWeights, ff, d, normed);
        var bound = new double[ff];
        for (int r = 0; r < ff; r++)
        {
            double g = 0, up = 0;
            for (int j = 0; j < d; j++) { g += gateWeights[r * d + j] * normed[j]; up += upWeights[r * d + j] * normed[j]; }
            double silu = g / (1 + Math.Exp(-g));
            bound[r] = 1.1 * gateBound[r] * (Math.Abs(up) + upBound[r]) + Math.Abs(silu) * upBound[r] + 12 * u * Math.Abs(silu * up)
                + OracleAllowance(Math.Abs(silu * up) + Math.Abs(up) + Math.Abs(g));
        }
        s.Compare("GateUpSwiGlu", StepBuffer.SwiGlu, ff, i => bound[i]);
    }

    /// <summary>FinalNormAndHead: the normed token (RMSNorm bound) and the logits (lm_head bound, carrying the norm's error in its input).</summary>
    private static void CheckFinalNormAndHead(OpCheckSession s, LlamaCheckpoint checkpoint, OpInputs inputs, StageScales scale, LinearBounds linear)
    {
        var c = checkpoint.Config;
        int d = c.HiddenSize, vocab = c.VocabSize;
        double u = s.Engine.GlueRoundoff;
        s.Begin(0);
        s.Write(StepBuffer.Hidden, inputs.Draw(d, scale[StepStage.MlpResidual]));
        s.Poison(StepBuffer.Normed, d);
        s.Poison(StepBuffer.Logits, vocab);
        s.Run(o => o.FinalNormAndHead());
        var normed = s.Oracle(StepBuffer.Normed, d);
        var normError = normed.Select(y => NormBound(u, d, y)).ToArray();
        s.Compare("FinalNorm", StepBuffer.Normed, d, i => normError[i]);
        var head = checkpoint.LmHead;
        var bound = linear.Rows(head.Name == LlamaCheckpoint.EmbeddingName ? LlamaCheckpoint.LmHeadName : head.Name,
            checkpoint.ReadSingle(head), vocab, d, normed, inputError: normError);
        s.Compare("Head(logits)", StepBuffer.Logits, vocab, i => bound[i]);
    }

    private static double[] LinearRows(LinearBounds linear, LlamaCheckpoint checkpoint, int layer, LayerWeight weight, LayerWeight? bias, int rows, double[] x)
    {
        var info = checkpoint.Layer(layer, weight);
        var biasInfo = bias is { } b ? checkpoint.OptionalLayer(layer, b) : null;
        return linear.Rows(info.Name, checkpoint.ReadSingle(info), rows, x.Length, x, biasInfo is null ? null : checkpoint.ReadSingle(biasInfo));
    }

    /// <summary>What an observer saw: layer, stage, rows, width.</summary>
    private sealed class StageLog : IStepObserver
    {
        public readonly List<(int Layer, StepStage Stage, int Tokens, int Width, bool Finite)> Seen = [];

        public void Observe(int layer, StepStage stage, int tokens, ReadOnlySpan<double> values)
        {
            bool finite = true;
            foreach (var v in values) finite &= double.IsFinite(v);
            Seen.Add((layer, stage, tokens, values.Length / tokens, finite && values.Length % tokens == 0));
        }
    }

    /// <summary>
    /// The step observer sees every stage once per layer in the step's order, then the final norm and the logits,
    /// each with the width the config gives (Qwen3: head_dim 32, so q is 128 wide while hidden is 64), for the oracle
    /// (one 3-token step) and an ILGPU engine (three 1-token steps, logits after the last only).
    /// </summary>
    [Fact]
    public void ObserverSeesEveryStageOncePerLayerInOrderWithItsWidth()
    {
        var model = FamilyConformance.Model("tiny-qwen3");
        using var checkpoint = LlamaCheckpoint.Open(model.Folder);
        var c = checkpoint.Config;
        int[] prompt = model.Case("greedy-0").InputIds[..3];
        // Widths written out from the config fields, not from LlamaStep.Width.
        int hidden = c.HiddenSize, q = c.NumAttentionHeads * c.HeadDim, kv = c.NumKeyValueHeads * c.HeadDim;
        Assert.NotEqual(hidden, q);
        var layerStages = new (StepStage, int)[]
        {
            (StepStage.AttentionNorm, hidden), (StepStage.Q, q), (StepStage.K, kv), (StepStage.V, kv), (StepStage.QRope, q),
            (StepStage.KRope, kv), (StepStage.Attention, q), (StepStage.AttentionOut, hidden), (StepStage.AttentionResidual, hidden),
            (StepStage.MlpNorm, hidden), (StepStage.SwiGlu, c.IntermediateSize), (StepStage.MlpOut, hidden), (StepStage.MlpResidual, hidden),
        };
        Assert.Equal(Enum.GetValues<StepStage>().Length, layerStages.Length + 2);
        List<(int, StepStage, int, int, bool)> Expected(int tokens, bool logits)
        {
            var list = new List<(int, StepStage, int, int, bool)>();
            for (int l = 0; l < c.NumHiddenLayers; l++) list.AddRange(layerStages.Select(x => (l, x.Item1, tokens, x.Item2, true)));
            if (logits) { list.Add((-1, StepStage.FinalNorm, 1, hidden, true)); list.Add((-1, StepStage.Logits, 1, c.VocabSize, true)); }
            return list;
        }

        using var oracle = new OracleEngine(checkpoint, threads: 2);
        var oracleLog = new StageLog();
        oracle.Observer = oracleLog;
        var oracleLogits = oracle.Prefill(prompt);
        Assert.Equal(Expected(3, logits: true), oracleLog.Seen);

        using var fp16 = OpEngine.All.Single(e => e.Name == "ilgpu-fp16").Create(checkpoint);
        var fp16Log = new StageLog();
        fp16.Observer = fp16Log;
        fp16.Prefill(prompt);
        var expected = Expected(1, logits: false);
        expected.AddRange(Expected(1, logits: false));
        expected.AddRange(Expected(1, logits: true));
        Assert.Equal(expected, fp16Log.Seen);
        output.WriteLine($"oracle: {oracleLog.Seen.Count} observations, ilgpu-fp16: {fp16Log.Seen.Count}; oracle logit[0] {oracleLogits[0]:E3}");
    }
}
