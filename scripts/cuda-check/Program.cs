// GPU check of the native CUDA backend (run by scripts/gpu-check.sh on a device machine):
//  1. kernel checks against CPU references (CudaSelfCheck: INT8/INT64 bit-exact, FP16/FP8 rel L2 <= 1e-5);
//  2. cuda-int64 vs the oracle on the small seeded model: SHA-256 of raw logits, prefill + 12 decodes;
//  3. token match vs the oracle on the small model (20 greedy tokens, 4 gate prompts), every backend x scheme;
//  4. TinyLlama-shaped seeded model: batch-1 decode tokens/s per backend x scheme, achieved weight GB/s,
//     measured device-to-device copy GB/s and the roofline ratio.
// Writes cuda-check.json into the folder given as the first argument; prints a table last.
using System.Diagnostics;
using System.Text.Json;
using GpuIntLab.Backends.Cuda;
using GpuIntLab.Core.Formats;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Oracle;

string outDir = args.Length > 0 ? args[0] : ".";
int tinyLayers = args.Length > 1 ? int.Parse(args[1]) : 22;
Directory.CreateDirectory(outDir);
var report = new Dictionary<string, object?>();
var lines = new List<string>();
void Log(string s) { Console.WriteLine(s); Console.Out.Flush(); }

var avail = CudaRuntime.Availability;
Log($"availability: {avail.Reason}");
report["availability"] = avail.Reason;
if (!avail.IsAvailable) { File.WriteAllText(Path.Combine(outDir, "cuda-check.json"), JsonSerializer.Serialize(report)); return 2; }

bool allPass = true;
// 1. kernels
using (var dev = new CudaDevice())
{
    var checks = CudaSelfCheck.RunKernelChecks(dev);
    foreach (var c in checks) Log($"{(c.Pass ? "PASS" : "FAIL")} {c.Name}: {c.Metric} = {c.Value:G4} (bound {c.Bound:G4})");
    report["kernel_checks"] = checks;
    int fails = checks.Count(c => !c.Pass);
    allPass &= fails == 0;
    lines.Add($"kernel checks: {checks.Count - fails}/{checks.Count} pass");
    double copy = CudaSelfCheck.CopyBandwidthGBps(dev);
    report["copy_GBps"] = copy;
    lines.Add($"device-to-device copy: {copy:F0} GB/s (read + write)");
}
double copyGBps = (double)report["copy_GBps"]!;

// 2 + 3. small model
string small = Path.Combine(Path.GetTempPath(), "gpuintlab-cuda-check", "small");
SeededCheckpointWriter.Write(small, SeededCheckpointWriter.ConformanceConfig(), new(TensorDtype.BF16));
int[][] prompts = [[1, 450, 7483, 310, 3444, 338], [1, 9038, 2501, 263, 931], [1, 29896, 29974, 29896, 29922], [1, 450, 6593, 310, 2834, 338]];
var combos = CudaProvider.All.SelectMany(p => p.Schemes.Select(s => (p, s))).ToList();
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
        lines.Add($"cuda-int64 vs oracle hash: {(same ? "IDENTICAL" : "DIFFERENT")} ({a[..16]} / {b[..16]}), graph replays {gpu.GraphReplays}");
    }
    catch (Exception e) { allPass = false; lines.Add($"cuda-int64 hash: ERROR {e.GetType().Name}: {e.Message}"); Log(e.ToString()); }

    var matches = new List<object>();
    foreach (var (p, s) in combos)
    {
        var av = p.CheckAvailability("cuda");
        if (!av.IsAvailable) { lines.Add($"token match {p.Name}/{s}: skipped ({av.Reason})"); continue; }
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
            lines.Add($"token match {p.Name}/{s}: {match}/{prompts.Length * 20} (free-running prefix vs oracle)");
            if (p.Name == "cuda-int64" && match != prompts.Length * 20) allPass = false;
        }
        catch (Exception ex) { allPass = false; lines.Add($"token match {p.Name}/{s}: ERROR {ex.GetType().Name}: {ex.Message}"); Log(ex.ToString()); }
    }
    report["token_match_small"] = matches;
}

// 4. TinyLlama-shaped speed
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
        var av = p.CheckAvailability("cuda");
        if (!av.IsAvailable) { lines.Add($"speed {p.Name}/{s}: skipped ({av.Reason})"); continue; }
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
            double bytesPerWeight = p.Format switch { CudaFormat.Fp16 => 2, CudaFormat.Int64 => 8, _ => 1 };
            double gbps = linearParams * bytesPerWeight / med / 1e9;
            speeds.Add(new { backend = p.Name, scheme = s, tok_per_s = 1 / med, median_ms = med * 1e3, weight_GBps = gbps, roofline = gbps / copyGBps, load_s = load });
            lines.Add($"speed {p.Name}/{s}: {1 / med:F1} tok/s ({med * 1e3:F2} ms/token), weights {gbps:F0} GB/s = {gbps / copyGBps:P0} of copy bandwidth (load {load:F0} s)");
        }
        catch (Exception ex) { allPass = false; lines.Add($"speed {p.Name}/{s}: ERROR {ex.GetType().Name}: {ex.Message}"); Log(ex.ToString()); }
    }
}
report["speed_tinyllama"] = speeds;
File.WriteAllText(Path.Combine(outDir, "cuda-check.json"), JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }));
Log("");
Log("==== summary ====");
foreach (var l in lines) Log(l);
Log(allPass ? "RESULT: PASS" : "RESULT: FAIL");
return allPass ? 0 : 1;
