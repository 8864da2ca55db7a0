using System.CommandLine;
using System.Diagnostics;
using System.Runtime.Intrinsics;
using System.Text.Json;
using GpuIntLab.Core.Models;
using GpuIntLab.Experiments;
using GpuIntLab.Oracle;

namespace GpuIntLab.Cli.Commands;

/// <summary>
/// <c>gpuintlab bench-oracle</c>: the oracle's decode speed against this machine's memory-bandwidth roofline,
/// measured in the same run: a streaming read of a large buffer gives the bandwidth; the weight bytes the
/// oracle reads per token divided by it give the roofline tokens/sec.
/// </summary>
public static class BenchOracleCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder or .q48 file", Required = true };
        var tokens = new Option<int>("--tokens") { Description = "Decode steps to time", DefaultValueFactory = _ => 8 };
        var threads = new Option<string>("--threads") { Description = "Comma-separated thread counts to measure", DefaultValueFactory = _ => $"1,{Environment.ProcessorCount}" };
        var json = new Option<string?>("--json-out") { Description = "Also write the measurements as JSON here" };
        var context = new Option<int>("--context") { Description = "Prompt tokens prefilled before the timed decode steps (attention grows with it)", DefaultValueFactory = _ => 0 };
        var command = new Command("bench-oracle", "Measure oracle decode tokens/sec, the machine's read bandwidth, the roofline ratio and peak memory.")
        {
            model, tokens, threads, json, context,
        };
        command.SetAction(parse => Run(parse.GetValue(model)!, parse.GetValue(tokens), parse.GetValue(threads)!, parse.GetValue(json), parse.GetValue(context)));
        return command;
    }

    /// <summary>
    /// Best-of-5 single-pass sum of a 1 GiB buffer with all cores, in GB/s. The buffer is native memory, freed on
    /// return, so it never adds to the peak working set of the oracle runs measured around it.
    /// </summary>
    public static unsafe double MeasureReadBandwidth(int threads)
    {
        const long bytes = 1L << 30;
        long count = bytes / 8;
        var buffer = (nint)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)bytes);
        try
        {
            Parallel.For(0, threads, t => { ulong* p = (ulong*)buffer; for (long i = count * t / threads; i < count * (t + 1) / threads; i++) p[i] = (ulong)i; });
            double best = 0;
            for (int rep = 0; rep < 5; rep++)
            {
                var clock = Stopwatch.StartNew();
                var partial = new ulong[threads];
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                {
                    var v = (Vector256<ulong>*)buffer;
                    long start = count / 4 * t / threads, end = count / 4 * (t + 1) / threads;
                    Vector256<ulong> a0 = default, a1 = default, a2 = default, a3 = default;
                    long i = start;
                    for (; i + 4 <= end; i += 4) { a0 += v[i]; a1 += v[i + 1]; a2 += v[i + 2]; a3 += v[i + 3]; }
                    for (; i < end; i++) a0 += v[i];
                    partial[t] = Vector256.Sum(a0 + a1 + a2 + a3);
                });
                best = Math.Max(best, bytes / clock.Elapsed.TotalSeconds / 1e9);
                GC.KeepAlive(partial);
            }
            return best;
        }
        finally { System.Runtime.InteropServices.NativeMemory.Free((void*)buffer); }
    }

    private static Dictionary<string, object> TimeDecode(LlamaCheckpoint checkpoint, int threads, int tokens, int context)
    {
        var load = Stopwatch.StartNew();
        using var oracle = new OracleEngine(checkpoint, threads);
        double loadSeconds = load.Elapsed.TotalSeconds;
        var result = new Dictionary<string, object> { ["threads"] = threads, ["load_seconds"] = loadSeconds };
        if (context > 0)
        {
            // A fixed, deterministic prompt of ordinary token ids (BOS then a cycle over the vocabulary's middle).
            var prompt = Enumerable.Range(0, context).Select(i => i == 0 ? 1 : 100 + i % Math.Max(1, checkpoint.Config.VocabSize - 200)).ToArray();
            var prefill = Stopwatch.StartNew();
            oracle.Prefill(prompt);
            result["prefill_tokens_per_sec"] = context / prefill.Elapsed.TotalSeconds;
        }
        else oracle.DecodeRaw(1); // warm-up step (position 0)
        var steps = new List<double>();
        var clock = Stopwatch.StartNew();
        int next = 1;
        for (int i = 0; i < tokens; i++)
        {
            var step = Stopwatch.StartNew();
            next = DeterminismGate.ArgMax(oracle.DecodeRaw(next));
            steps.Add(step.Elapsed.TotalMilliseconds);
        }
        result["decode_tokens_per_sec"] = tokens / clock.Elapsed.TotalSeconds;
        steps.Sort();
        result["step_ms_min"] = steps[0];
        result["step_ms_median"] = steps[steps.Count / 2];
        return result;
    }

    private static int Run(string modelPath, int tokens, string threadList, string? jsonOut, int context)
    {
        if (tokens < 1) throw new UserInputException("--tokens: must be at least 1");
        if (context < 0) throw new UserInputException("--context: must not be negative");
        var threadCounts = threadList.Split(',').Select(t => int.TryParse(t, out int n) && n > 0 ? n : throw new UserInputException($"--threads: '{t}' is not a positive integer")).ToArray();
        if (jsonOut != null) OutputPaths.CheckFile(jsonOut, "--json-out", OutputPaths.ModelInputs(modelPath));
        using var checkpoint = LlamaCheckpoint.Open(modelPath);
        var c = checkpoint.Config;
        long weightBytes = checkpoint.AllTensors.Where(t => t.Name != LlamaCheckpoint.EmbeddingName || checkpoint.LmHead.Name == t.Name)
            .Sum(t => t.ByteLength);
        Console.WriteLine($"model: {modelPath} ({c.ParameterCount / 1e6:F0}M parameters, {weightBytes / 1e9:F2} GB of weights read per token, embeddings excluded)");
        // The bandwidth is measured before and after the decode runs and the higher kept: on a shared machine that
        // makes the roofline the strictest of the two, never a lucky low.
        double bandwidthBefore = MeasureReadBandwidth(Environment.ProcessorCount);
        var results = new List<Dictionary<string, object>>();
        foreach (int t in threadCounts)
        {
            results.Add(TimeDecode(checkpoint, t, tokens, context));
            // The engine's transcoded weights are garbage now: collect them before the next engine loads its own,
            // so the peak below is one engine's, as in any single run.
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
        }
        // Peak memory of the oracle's runs (the bandwidth buffers are native and freed: they peak at 1 GiB, below any 1B model).
        long peak = Process.GetCurrentProcess().PeakWorkingSet64;
        double bandwidthAfter = MeasureReadBandwidth(Environment.ProcessorCount);
        double bandwidth = Math.Max(bandwidthBefore, bandwidthAfter);
        double roofline = bandwidth * 1e9 / weightBytes;
        Console.WriteLine($"read bandwidth ({Environment.ProcessorCount} threads, best of 5 x 1 GiB, before {bandwidthBefore:F1} / after {bandwidthAfter:F1}): {bandwidth:F1} GB/s -> roofline {roofline:F2} tok/s for {weightBytes / 1e9:F2} GB a token");
        foreach (var r in results)
        {
            double rate = (double)r["decode_tokens_per_sec"];
            r["roofline_fraction"] = rate / roofline;
            string at = context > 0 ? $" at position {context} (prefill {r["prefill_tokens_per_sec"]:F2} tok/s)" : "";
            Console.WriteLine($"oracle decode, {r["threads"]} thread(s){at}: {rate:F3} tok/s = {100 * rate / roofline:F1}% of the roofline ({rate * weightBytes / 1e9:F2} GB/s of weights; step min {r["step_ms_min"]:F1} ms, median {r["step_ms_median"]:F1} ms; engine load {r["load_seconds"]:F2} s)");
        }
        long onDisk = checkpoint.IsNative ? new FileInfo(modelPath).Length : Directory.GetFiles(modelPath, "*.safetensors").Sum(f => new FileInfo(f).Length);
        Console.WriteLine($"peak working set of the oracle run: {peak / 1e9:F2} GB ({(double)peak / onDisk:F2}x the {onDisk / 1e9:F2} GB checkpoint)");
        if (jsonOut != null)
        {
            var env = RunEnvironment.Capture(Directory.GetCurrentDirectory());
            File.WriteAllText(jsonOut, JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["model"] = modelPath, ["context"] = context, ["parameters"] = c.ParameterCount, ["weight_bytes_per_token"] = weightBytes,
                ["read_bandwidth_gbps"] = bandwidth, ["read_bandwidth_before_gbps"] = bandwidthBefore, ["read_bandwidth_after_gbps"] = bandwidthAfter, ["roofline_tokens_per_sec"] = roofline, ["runs"] = results,
                ["peak_working_set_bytes"] = peak, ["checkpoint_bytes"] = onDisk, ["environment"] = env,
            }, new JsonSerializerOptions { WriteIndented = true }));
        }
        return 0;
    }
}
