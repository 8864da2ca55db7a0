using System.Diagnostics;
using GpuIntLab.Backends;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Core.Tokenization;
using GpuIntLab.Oracle;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Ilgpu;

/// <summary>
/// Opt-in report (GPUINTLAB_ILGPU_REPORT=1, minutes on the CPU accelerator): every ILGPU backend x scheme against
/// the oracle on the conformance model with the gate prompts: free-running greedy match, teacher-forced top-1,
/// max |logit error|, and ms/token. GPUINTLAB_ILGPU_ACCELERATOR picks the accelerator (default cpu).
/// </summary>
public class IlgpuAgreementReport(ITestOutputHelper output)
{
    [SkippableFact]
    public void AgreementWithTheOracleOnTheGatePrompts()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("GPUINTLAB_ILGPU_REPORT") == "1", "opt-in report: set GPUINTLAB_ILGPU_REPORT=1");
        Report(TestData.ConformanceBf16, DeterminismGate.Llama2Prompts, newTokens: 4);
    }

    [SkippableFact]
    public void AgreementWithTheOracleOnTheClearMarginModel()
    {
        Skip.IfNot(Environment.GetEnvironmentVariable("GPUINTLAB_ILGPU_REPORT") == "1", "opt-in report: set GPUINTLAB_ILGPU_REPORT=1");
        Report(IlgpuEngineTests.ClearMarginModel(), IlgpuEngineTests.ClearMarginPrompts, newTokens: 8, calibration: [[1, 10, 200, 37, 5, 99, 140], [1, 77, 3, 250, 18]]);
    }

    /// <summary>
    /// The project's trained model (folder in GPUINTLAB_ILGPU_MODEL, e.g. experiments/models/tinystories-512) with
    /// the default experiment's 4 story prompts x 20 tokens and its 3 calibration prompts for SmoothQuant.
    /// </summary>
    [SkippableFact]
    public void AgreementWithTheOracleOnTheTrainedModel()
    {
        string? folder = Environment.GetEnvironmentVariable("GPUINTLAB_ILGPU_MODEL");
        Skip.If(string.IsNullOrEmpty(folder) || Environment.GetEnvironmentVariable("GPUINTLAB_ILGPU_REPORT") != "1",
            "opt-in report: set GPUINTLAB_ILGPU_REPORT=1 and GPUINTLAB_ILGPU_MODEL to a model folder");
        var tokenizer = LlamaTokenizer.Load(Path.Combine(folder!, "tokenizer.model"));
        int[][] prompts = new[] { "Once upon a time, there was a girl named Lily.", "Sam found a shiny red ball in the garden.",
            "One day, a big storm came to the town.", "Mia wanted to make a cake for her mom." }.Select(tokenizer.Encode).ToArray();
        int[][] calibration = new[] { "Tom and his dog went to the park. They played with a ball all day.",
            "Ben had a little boat. He took it to the pond with his dad.", "\"Can I help you?\" asked Anna. Her friend smiled and said yes." }.Select(tokenizer.Encode).ToArray();
        using (var checkpoint = LlamaCheckpoint.Open(folder!))
        using (var int64 = (GpuIntLab.Backends.Ilgpu.IlgpuInt64Engine)BackendCatalog.Find("ilgpu-int64")!.Create(checkpoint, new EngineOptions("exact", "cpu")))
        {
            string oracleHash = DeterminismGate.Hash(checkpoint, prompts, newTokens: 8, threads: 2);
            string deviceHash = IlgpuEngineTests.GateHash(int64, prompts, newTokens: 8);
            output.WriteLine($"determinism hash (4 prompts x 8 tokens): oracle {oracleHash}, ilgpu-int64 {deviceHash}");
            Assert.Equal(oracleHash, deviceHash);
        }
        Report(folder!, prompts, newTokens: 20, calibration);
    }

    /// <param name="calibration">SmoothQuant calibration prompts (null: the provider's default, the gate prompts).</param>
    private void Report(string folder, int[][] prompts, int newTokens, int[][]? calibration = null)
    {
        string accelerator = Environment.GetEnvironmentVariable("GPUINTLAB_ILGPU_ACCELERATOR") ?? "cpu";
        using var checkpoint = LlamaCheckpoint.Open(folder);
        using var oracle = new OracleEngine(checkpoint, threads: 2);
        var oracleIds = new List<List<int>>();
        var oracleLogits = new List<List<double[]>>();
        foreach (var p in prompts)
        {
            oracle.Reset();
            var logits = new List<double[]>();
            oracleIds.Add(Greedy.Generate(oracle, p, newTokens, onToken: (_, l) => logits.Add(l)));
            oracleLogits.Add(logits);
        }
        double minMargin = oracleLogits.SelectMany(l => l).Min(l => { var t = l.OrderDescending().Take(2).ToArray(); return t[0] - t[1]; });
        output.WriteLine($"{Path.GetFileName(folder)}: {prompts.Length} prompts x {newTokens} tokens; oracle min top-2 margin {minMargin:E2}");
        foreach (var provider in BackendCatalog.All.Where(p => p.Name.StartsWith("ilgpu-", StringComparison.Ordinal)))
            foreach (var scheme in provider.Schemes)
            {
                using var engine = provider.Create(checkpoint, new EngineOptions(scheme, accelerator, Threads: 2, CalibrationPrompts: calibration));
                int greedy = 0, top1 = 0, total = 0, tokens = 0; double maxErr = 0;
                var sw = Stopwatch.StartNew();
                for (int i = 0; i < prompts.Length; i++)
                {
                    engine.Reset();
                    var ids = Greedy.Generate(engine, prompts[i], newTokens);
                    greedy += ids.Zip(oracleIds[i], (a, b) => a == b ? 1 : 0).Sum();
                    engine.Reset();
                    var logits = engine.Prefill(prompts[i]);
                    for (int t = 0; t < newTokens; t++)
                    {
                        if (Greedy.ArgMax(logits) == oracleIds[i][t]) top1++;
                        maxErr = Math.Max(maxErr, logits.Zip(oracleLogits[i][t], (a, b) => Math.Abs(a - b)).Max());
                        if (t < newTokens - 1) logits = engine.Decode(oracleIds[i][t]);
                    }
                    total += newTokens;
                    tokens += 2 * (prompts[i].Length + newTokens - 1);
                }
                output.WriteLine($"{provider.Name}/{scheme}: greedy {greedy}/{total}, teacher-forced top-1 {top1}/{total}, max |logit - oracle| {maxErr:E2}, {sw.Elapsed.TotalMilliseconds / tokens:F0} ms/token ({engine.Info.Accelerator})");
            }
    }
}
