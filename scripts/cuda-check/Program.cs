// GPU check of the native CUDA backend (run by scripts/gpu-check.sh on a device machine):
//  1. module kinds (CUBIN/PTX) and kernel checks against CPU references (CudaSelfCheck: INT8/INT64
//     bit-exact, FP16 GEMM rel L2 within its accumulation-model bound, others 1e-5), copy bandwidth;
//  2. cuda-int64 vs the oracle on the small seeded model: SHA-256 of raw logits, prefill + 12 decodes; and
//     token match vs the oracle on the small model (20 greedy tokens, 4 gate prompts), every backend x scheme;
//  3. the experiment runner on experiments/gpu-check.json (the embedded tinystories-512 model, every native
//     CUDA and ILGPU-on-CUDA backend): token match and KL per backend as the runner's JSON lines in OUT/runs/;
//  4. TinyLlama-shaped seeded model: batch-1 decode tokens/s per backend x scheme, achieved weight GB/s,
//     measured device-to-device copy GB/s and the roofline ratio;
//  5. (run right after 2) the families tiny-llama3 / tiny-qwen2 / tiny-qwen3: cuda-int64 vs the oracle hash across
//     a KV-cache growth, float backends' top-1 agreement with the oracle.
// Every step is guarded: an exception is recorded (summary line + JSON) and the next step runs. Summary lines
// are also printed as they happen, so a run killed by its time limit still leaves them in the streamed log.
// At the end: the summary and RESULT first, then OUT/cuda-check.json (NaN/Infinity written as strings).
// Arguments: OUT [tiny-layers=22] [spec=experiments/gpu-check.json] [steps=1,2,3,4,5]
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using GpuIntLab.Backends.Cuda;
using GpuIntLab.Experiments;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

string outDir = args.Length > 0 ? args[0] : ".";
int tinyLayers = args.Length > 1 ? int.Parse(args[1]) : 22;
string specPath = args.Length > 2 ? args[2] : Path.Combine("experiments", "gpu-check.json");
var steps = (args.Length > 3 ? args[3] : "1,2,3,4,5").Split(',').Select(int.Parse).ToHashSet();
Directory.CreateDirectory(outDir);
var report = new Dictionary<string, object?>();
var lines = new List<string>();
var jsonOptions = new JsonSerializerOptions { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };
void Log(string s) { Console.WriteLine(s); Console.Out.Flush(); }
void Summary(string s) { lines.Add(s); Log("summary: " + s); }
void WriteJson() => File.WriteAllText(Path.Combine(outDir, "cuda-check.json"), JsonSerializer.Serialize(report, jsonOptions));
bool allPass = true;
// One step: its failure is recorded and the next step still runs.
void Step(int number, string name, Action body)
{
    if (!steps.Contains(number)) { Log($"== step {number} ({name}): not requested"); return; }
    Log($"== step {number}: {name}");
    var sw = Stopwatch.StartNew();
    try { body(); }
    catch (Exception e)
    {
        allPass = false;
        report[$"step{number}_error"] = $"{e.GetType().Name}: {e.Message}";
        Summary($"step {number} ({name}): ERROR {e.GetType().Name}: {e.Message}");
        Log(e.ToString());
    }
    Log($"== step {number} took {sw.Elapsed.TotalSeconds:F1} s");
}

var avail = CudaRuntime.Availability;
Log($"availability: {avail.Reason}");
report["availability"] = avail.Reason;
if (!avail.IsAvailable) { WriteJson(); return 2; }

// 1. kernels
double copyGBps = double.NaN;
Step(1, "modules and kernel checks", () =>
{
    using var dev = new CudaDevice();
    var modules = new List<object>();
    foreach (var file in KernelSources.Files())
    {
        var m = dev.Compile(file);
        int spills = m.Resources.Values.Count(r => r.Spills);
        modules.Add(new { file, kind = m.Compiled.Kind, kernels = m.Resources.Values });
        Summary($"module {file}: {m.Compiled.Kind}, {m.Resources.Count} kernels with ptxas reports, {spills} with spills");
    }
    report["modules"] = modules;
    var checks = CudaSelfCheck.RunKernelChecks(dev);
    foreach (var c in checks) Log($"{(c.Pass ? "PASS" : "FAIL")} {c.Name}: {c.Metric} = {c.Value:G4} (bound {c.Bound:G4})");
    report["kernel_checks"] = checks;
    int fails = checks.Count(c => !c.Pass);
    allPass &= fails == 0;
    // The first few failures in the summary; all of them are in the log above and in the JSON.
    Summary($"kernel checks: {checks.Count - fails}/{checks.Count} pass" + (fails > 0 ? ": FAIL " + string.Join("; ", checks.Where(c => !c.Pass).Take(5).Select(c => $"{c.Name} {c.Value:G3} > {c.Bound:G3}")) + (fails > 5 ? $"; and {fails - 5} more" : "") : ""));
    copyGBps = CudaSelfCheck.CopyBandwidthGBps(dev);
    report["copy_GBps"] = copyGBps;
    Summary($"device-to-device copy: {copyGBps:F0} GB/s (read + write)");
});

// 2 + 3. small model
int[][] prompts = [[1, 450, 7483, 310, 3444, 338], [1, 9038, 2501, 263, 931], [1, 29896, 29974, 29896, 29922], [1, 450, 6593, 310, 2834, 338]];
// The issue-15 backends run a few schemes each (their schemes share kernels: every scheme would not fit a GPU slot).
string[] blockSchemes = ["bf16", "int4-g128-rtn-asym", "mxfp8-e4m3-rceil-w8a8", "mxfp4-ocp-floor-weight-only", "nvfp4-w4a4"];
var combos = CudaProvider.All.SelectMany(p => p.Schemes.Where(s => p is not CudaKvProvider || blockSchemes.Contains(s)).Select(s => (p, s))).ToList();
Step(2, "small model: int64 hash and token match", () =>
{
string small = Path.Combine(Path.GetTempPath(), "gpuintlab-cuda-check", "small");
SeededCheckpointWriter.Write(small, SeededCheckpointWriter.ConformanceConfig(), new(TensorDtype.BF16));
using (var ckpt = LlamaCheckpoint.Open(small))
{
    var oracleIds = new List<List<int>>();
    using (var oracle = new OracleEngine(ckpt, Environment.ProcessorCount))
        foreach (var pr in prompts) { oracle.Reset(); oracleIds.Add(Greedy.Generate(oracle, pr, 20)); }

    // hash
    try
    {
        using var oracle = new OracleEngine(ckpt, Environment.ProcessorCount);
        using var gpu = (CudaInt64Engine)CudaProvider.All.Single(p => p.Name == "cuda-int64").Create(ckpt, new EngineOptions("exact"));
        using var h1 = new LogitsHash(); using var h2 = new LogitsHash();
        oracle.Prefill(prompts[0]); gpu.Prefill(prompts[0]); h1.Append(oracle.LastRawLogits); h2.Append(gpu.LastRawLogits);
        for (int i = 0; i < 12; i++)
        {
            int next = Greedy.ArgMax(Array.ConvertAll(oracle.LastRawLogits, v => (double)v));
            oracle.DecodeRaw(next); gpu.Decode(next); h1.Append(oracle.LastRawLogits); h2.Append(gpu.LastRawLogits);
        }
        string a = h1.Finish(), b = h2.Finish();
        bool same = a == b;
        allPass &= same;
        report["int64_hash"] = new { oracle = a, cuda = b, identical = same, graph_replays = gpu.GraphReplays };
        Summary($"cuda-int64 vs oracle hash: {(same ? "IDENTICAL" : "DIFFERENT")} ({a[..16]} / {b[..16]}), graph replays {gpu.GraphReplays}");
    }
    catch (Exception e) { allPass = false; Summary($"cuda-int64 hash: ERROR {e.GetType().Name}: {e.Message}"); Log(e.ToString()); }

    var matches = new List<object>();
    foreach (var (p, s) in combos)
    {
        var av = p.CheckAvailability("cuda");
        if (!av.IsAvailable) { Summary($"token match {p.Name}/{s}: skipped ({av.Reason})"); continue; }
        try
        {
            using var e = p.Create(ckpt, new EngineOptions(s));
            int match = 0, total = 0;
            for (int i = 0; i < prompts.Length; i++)
            {
                e.Reset();
                var ids = Greedy.Generate(e, prompts[i], 20);
                for (int j = 0; j < ids.Count && j < oracleIds[i].Count; j++) { total++; if (ids[j] == oracleIds[i][j]) match++; else break; }
                total += 20 - Math.Min(20, ids.Count);
            }
            matches.Add(new { backend = p.Name, scheme = s, match, of = prompts.Length * 20 });
            Summary($"token match {p.Name}/{s}: {match}/{prompts.Length * 20} (free-running prefix vs oracle)");
            if (p.Name == "cuda-int64" && match != prompts.Length * 20) allPass = false;
        }
        catch (Exception ex) { allPass = false; Summary($"token match {p.Name}/{s}: ERROR {ex.GetType().Name}: {ex.Message}"); Log(ex.ToString()); }
    }
    report["token_match_small"] = matches;
}
});

// 5. the families (Llama 3 rope_scaling, Qwen2 biases, Qwen3 q/k norm and q width != hidden), run right after step 2:
// cuda-int64 vs the oracle (SHA-256 of raw logits over a 60-token prefill and 10 greedy decodes, which cross the
// KV caches' first growth at 64 positions and so a graph re-capture), and every float backend's top-1 agreement
// with the oracle on the same teacher-forced tokens (reported, not judged).
Step(5, "families: int64 hash and float top-1", () =>
{
    string familiesData = Path.Combine("tests", "GpuIntLab.Tests", "Data", "conformance", "families");
    var familyResults = new List<object>();
    ulong seed = 20261201; // the published families' seeds, in this order
    foreach (var name in new[] { "tiny-llama3", "tiny-qwen2", "tiny-qwen3" })
    {
        var config = LlamaConfig.Load(Path.Combine(familiesData, name, "config.json"));
        string folder = Path.Combine(Path.GetTempPath(), "gpuintlab-cuda-check", name);
        SeededCheckpointWriter.Write(folder, config, new SeededCheckpointLayout(TensorDtype.BF16, Tied: config.TieWordEmbeddings), seed++, rule: SeededRule.Families);
        using var ckpt = LlamaCheckpoint.Open(folder);
        var prompt = Enumerable.Range(0, 60).Select(i => (int)((long)(i + 1) * 7919 % config.VocabSize)).ToArray();
        var oracleLogits = new List<long[]>();
        var oracleTokens = new List<int>();
        using (var oracle = new OracleEngine(ckpt, Environment.ProcessorCount))
        {
            oracle.Prefill(prompt); oracleLogits.Add(oracle.LastRawLogits);
            for (int i = 0; i < 10; i++)
            {
                int next = Greedy.ArgMax(Array.ConvertAll(oracle.LastRawLogits, v => (double)v));
                oracleTokens.Add(next);
                oracle.DecodeRaw(next); oracleLogits.Add(oracle.LastRawLogits);
            }
        }
        using var expected = new LogitsHash();
        foreach (var l in oracleLogits) expected.Append(l);
        string want = expected.Finish();
        foreach (var (p, s) in combos)
        {
            if (!p.CheckAvailability("cuda").IsAvailable) continue;
            try
            {
                using var e = p.Create(ckpt, new EngineOptions(s));
                if (e is CudaInt64Engine gpu)
                {
                    using var got = new LogitsHash();
                    gpu.Prefill(prompt); got.Append(gpu.LastRawLogits);
                    foreach (var t in oracleTokens) { gpu.Decode(t); got.Append(gpu.LastRawLogits); }
                    string have = got.Finish();
                    bool same = have == want;
                    allPass &= same;
                    familyResults.Add(new { model = name, backend = p.Name, scheme = s, identical = same, oracle = want, cuda = have, graph_captures = gpu.GraphCaptures, graph_replays = gpu.GraphReplays });
                    Summary($"{name} cuda-int64 vs oracle hash: {(same ? "IDENTICAL" : "DIFFERENT")} ({want[..16]} / {have[..16]}), graphs captured {gpu.GraphCaptures}, replayed {gpu.GraphReplays}");
                }
                else
                {
                    var floatLogits = new List<double[]> { e.Prefill(prompt) };
                    foreach (var t in oracleTokens) floatLogits.Add(e.Decode(t));
                    int agree = 0;
                    for (int i = 0; i < floatLogits.Count; i++)
                        if (Greedy.ArgMax(floatLogits[i]) == Greedy.ArgMax(Array.ConvertAll(oracleLogits[i], v => (double)v))) agree++;
                    familyResults.Add(new { model = name, backend = p.Name, scheme = s, top1_agree = agree, of = floatLogits.Count });
                    Summary($"{name} {p.Name}/{s}: top-1 agrees with the oracle on {agree}/{floatLogits.Count} steps");
                }
            }
            catch (Exception ex) { allPass = false; Summary($"{name} {p.Name}/{s}: ERROR {ex.GetType().Name}: {ex.Message}"); Log(ex.ToString()); }
        }
    }
    report["families"] = familyResults;
});

// 3. the experiment runner: native CUDA and ILGPU-on-CUDA backends on the embedded model, as JSON lines
Step(3, "experiment runner (CUDA + ILGPU on CUDA)", () =>
{
    var spec = ExperimentSpec.Load(specPath);
    var summary = new ExperimentRunner().Run(spec, new RunOptions
    {
        ResultsDirectory = Path.Combine(outDir, "runs"),
        Command = "CudaCheck " + string.Join(' ', args),
        Progress = p => { if (p.Phase == "done" || p.TokensDone == 0) Log($"runner: {p.Backend}/{p.Scheme} {p.Prompt} [{p.Phase}]"); },
    });
    report["runner_results_file"] = summary.ResultsFile;
    foreach (var g in summary.Records.Where(r => r.Type is "result" or "error").GroupBy(r => (r.Backend, Scheme: ResultTables.SchemeLabel(r.Scheme!, r.KvCache)))) // KV-cache variants are rows of their own
    {
        var errors = g.Where(r => r.Type == "error").ToList();
        var results = g.Where(r => r.Type == "result").ToList();
        if (errors.Count > 0) Summary($"runner {g.Key.Backend}/{g.Key.Scheme}: {errors.Count} errors, first: {errors[0].Error}");
        if (results.Count > 0)
            Summary($"runner {g.Key.Backend}/{g.Key.Scheme}: greedy match {results.Sum(r => r.GreedyMatches ?? 0)}/{results.Sum(r => r.NewTokens ?? 0)}, mean KL {results.Average(r => r.KlMean ?? double.NaN):G3}");
        if (g.Key.Backend is "cuda-int64" or "ilgpu-int64" && (errors.Count > 0 || results.Any(r => r.GreedyMatches != r.NewTokens))) allPass = false;
    }
    Summary($"runner records: {summary.ResultsFile}");
});

// 4. TinyLlama-shaped speed
Step(4, "TinyLlama-shaped decode speed", () =>
{
string tiny = Path.Combine(Path.GetTempPath(), "gpuintlab-cuda-check", $"tinyllama-{tinyLayers}");
var sw = Stopwatch.StartNew();
var cfg = SeededCheckpointWriter.TinyLlamaShapedConfig(tinyLayers);
if (!File.Exists(Path.Combine(tiny, "config.json"))) SeededCheckpointWriter.Write(tiny, cfg, new(TensorDtype.BF16));
Log($"TinyLlama-shaped model ({tinyLayers} layers) written in {sw.Elapsed.TotalSeconds:F1} s");
long linearParams = (long)tinyLayers * (2L * cfg.HiddenSize * cfg.HiddenSize + 2L * cfg.HiddenSize * cfg.KvDim + 3L * cfg.HiddenSize * cfg.IntermediateSize)
                    + (long)cfg.VocabSize * cfg.HiddenSize;
var speeds = new List<object>();
using (var ckpt = LlamaCheckpoint.Open(tiny))
{
    foreach (var (p, s) in combos)
    {
        if (p.Name == "cuda-int8" && s != "per-channel" || p.Name == "cuda-fp8" && s != "per-channel") continue; // one scheme each: same kernels
        if (p.Name is "cuda-mx" or "cuda-nvfp4") continue; // host packing of 1.1B weights into MX / NVFP4 takes minutes of the slot; W4A16 and BF16 stand for the new GEMVs
        var av = p.CheckAvailability("cuda");
        if (!av.IsAvailable) { Summary($"speed {p.Name}/{s}: skipped ({av.Reason})"); continue; }
        try
        {
            sw.Restart();
            using var e = p.Create(ckpt, new EngineOptions(s));
            double load = sw.Elapsed.TotalSeconds;
            var logits = e.Prefill([1, 450, 7483, 310, 3444, 338]);
            int tok = Greedy.ArgMax(logits);
            for (int i = 0; i < 4; i++) tok = Greedy.ArgMax(e.Decode(tok)); // warm-up (graph capture)
            var times = new List<double>();
            for (int i = 0; i < 64; i++) { var t0 = Stopwatch.GetTimestamp(); tok = Greedy.ArgMax(e.Decode(tok)); times.Add(Stopwatch.GetElapsedTime(t0).TotalSeconds); }
            double med = CudaSelfCheck.Median(times);
            double bytesPerWeight = e is CudaFloatEngine f ? (double)f.LinearWeightBytes / linearParams : 8;
            double gbps = linearParams * bytesPerWeight / med / 1e9;
            speeds.Add(new { backend = p.Name, scheme = s, tok_per_s = 1 / med, median_ms = med * 1e3, weight_GBps = gbps, roofline = gbps / copyGBps, load_s = load });
            Summary($"speed {p.Name}/{s}: {1 / med:F1} tok/s ({med * 1e3:F2} ms/token), weights {gbps:F0} GB/s = {gbps / copyGBps:P0} of copy bandwidth (load {load:F0} s)");
        }
        catch (Exception ex) { allPass = false; Summary($"speed {p.Name}/{s}: ERROR {ex.GetType().Name}: {ex.Message}"); Log(ex.ToString()); }
    }
}
report["speed_tinyllama"] = speeds;
});

// The summary and verdict first: nothing after this can lose them.
Log("");
Log("==== summary ====");
foreach (var l in lines) Log(l);
Log(allPass ? "RESULT: PASS" : "RESULT: FAIL");
try { WriteJson(); }
catch (Exception e) { Log($"cuda-check.json not written: {e.GetType().Name}: {e.Message}"); return 1; }
return allPass ? 0 : 1;
