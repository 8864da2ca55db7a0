using System.Diagnostics;
using GpuIntLab.Backends;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Core.Tokenization;
using GpuIntLab.Oracle;

namespace GpuIntLab.Experiments;

/// <summary>A slice of the experiment matrix: cell k belongs to shard k mod Count.</summary>
public sealed record Shard(int Index, int Count)
{
    public static readonly Shard All = new(0, 1);

    public static Shard Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int i) || !int.TryParse(parts[1], out int n) || n < 1 || i < 0 || i >= n)
            throw new ExperimentSpecException($"--shard: expected i/N with 0 <= i < N (e.g. 0/4), got '{text}'");
        return new Shard(i, n);
    }

    public bool Owns(int cell) => cell % Count == Index;
    public override string ToString() => $"{Index}/{Count}";
}

/// <summary>A progress report: which cell, which phase, how far.</summary>
public sealed record RunProgress(int Cell, int CellCount, string Backend, string Scheme, string Prompt, string Phase, int TokensDone, int TokensTotal, double? TokensPerSecond);

public sealed record RunOptions
{
    public string? ModelOverride { get; init; }
    public Shard Shard { get; init; } = Shard.All;
    public string ResultsDirectory { get; init; } = "results/runs";
    public string Command { get; init; } = "";
    public Action<RunProgress>? Progress { get; init; }
    /// <summary>Backend lookup; the catalog by default (tests substitute failing or fake backends).</summary>
    public Func<string, IEngineProvider?> FindBackend { get; init; } = BackendCatalog.Find;
    public IEnumerable<string> KnownBackends { get; init; } = BackendCatalog.All.Select(p => p.Name);
    /// <summary>Where the oracle's corpus baselines are cached; null: a <c>cache/oracle-baseline</c> folder beside the runs folder.</summary>
    public string? CacheDirectory { get; init; }
}

/// <summary>What a run wrote.</summary>
public sealed record RunSummary(string RunId, string ResultsFile, List<ResultRecord> Records)
{
    /// <summary>The corpus lines (one per backend x scheme evaluated) and the paired verdicts between them.</summary>
    public List<CorpusRecord> Corpus { get; init; } = [];
    public List<PairedRecord> Paired { get; init; } = [];
}

/// <summary>
/// Runs an experiment: the oracle's greedy ids and logits per prompt are the baseline; each backend x
/// scheme x prompt cell records free-running match, teacher-forced agreement, KL, logit error and
/// tokens/sec. A backend that is unavailable or fails writes an error record and the run goes on.
/// </summary>
public sealed class ExperimentRunner
{
    private sealed record OracleBaseline(int[] Ids, double[][] Logits);

    public RunSummary Run(ExperimentSpec spec, RunOptions options)
    {
        // Everything that can fail on bad input fails here, before any work.
        spec.Validate();
        var units = spec.ResolveBackends(options.FindBackend, options.KnownBackends);
        string modelDir = spec.ResolveModel(options.ModelOverride);
        ResultsStore.PrepareFolder(options.ResultsDirectory, "results folder");
        using var checkpoint = LlamaCheckpoint.Open(modelDir);
        var tokenizer = checkpoint.LoadTokenizer();
        var prompts = spec.Prompts.Select(p => (Spec: p, Ids: Encode(p.Text, p.Ids, tokenizer, modelDir, $"prompt '{p.Name}'"))).ToList();
        var corpusChunks = spec.Corpus?.Load(spec.SourcePath, checkpoint.Config, tokenizer);
        var calibration = spec.CalibrationPrompts.Select((t, i) => Encode(t, null, tokenizer, modelDir, $"calibration prompt {i}")).ToList();
        SpecChecks.CheckAgainstModel(spec, checkpoint.Config, prompts, calibration);

        string runId = ResultsStore.NewRunId(spec.Name, options.Shard);
        var records = new List<ResultRecord>();
        using var writer = ResultsStore.CreateRunFile(options.ResultsDirectory, runId);
        string resultsFile = writer.Path;
        void Emit(ResultRecord r) { records.Add(r); writer.Write(r); }
        // Every record carries new_tokens, so tables can tell cells of differently defined runs apart (errors included).
        ResultRecord Base(string type) => new() { Type = type, RunId = runId, Experiment = spec.Name, TimestampUtc = DateTime.UtcNow.ToString("o"), NewTokens = spec.NewTokens };

        var header = Base("run");
        header.SpecPath = spec.SourcePath; header.Model = modelDir; header.Command = options.Command;
        header.Shard = options.Shard.ToString(); header.Environment = RunEnvironment.Capture(spec.SourcePath);
        Emit(header);

        int cellCount = units.Count * prompts.Count;
        var baselines = new Dictionary<string, OracleBaseline>();
        OracleEngine? oracle = null;
        OracleEngine Oracle() => oracle ??= new OracleEngine(checkpoint, spec.Threads > 0 ? spec.Threads : Environment.ProcessorCount);
        var corpus = corpusChunks == null ? null : new CorpusEvaluation(corpusChunks, spec.Corpus!.ResolvePath(spec.SourcePath),
            OracleBaselineCache.ModelContentHash(modelDir), options.CacheDirectory ?? Path.Combine(options.ResultsDirectory, "..", "cache", "oracle-baseline"),
            options.Shard, Oracle);
        var corpusRecords = new List<CorpusRecord>();
        try
        {
            OracleBaseline Baseline(int promptIndex)
            {
                var (p, ids) = prompts[promptIndex];
                if (baselines.TryGetValue(p.Name, out var b)) return b;
                var exact = Oracle();
                options.Progress?.Invoke(new RunProgress(-1, cellCount, "oracle", "baseline", p.Name, "baseline", 0, spec.NewTokens, null));
                var logits = new List<double[]>();
                var generated = Greedy.Generate(exact, ids, spec.NewTokens, onToken: (_, l) => logits.Add(l));
                exact.Reset();
                return baselines[p.Name] = new OracleBaseline(generated.ToArray(), logits.ToArray());
            }

            for (int u = 0; u < units.Count; u++)
            {
                var (provider, scheme, kvCache) = units[u];
                // Every line names its KV cache: the spec's choice, else the backend's own ("native" for backends with one cache).
                string kvIdentity = kvCache ?? (provider is IKvCacheFormats own ? own.KvCacheFormats[0] : "native");
                var weightScheme = WeightSchemeIdentity.For(provider.Name, scheme);
                var cells = Enumerable.Range(0, prompts.Count).Where(pi => options.Shard.Owns(u * prompts.Count + pi)).ToList();
                bool corpusHere = corpus is { OwnedChunks.Count: > 0 };
                if (cells.Count == 0 && !corpusHere) continue;
                ResultRecord Error(int promptIndex, string message)
                {
                    var e = Base("error");
                    e.Backend = provider.Name; e.Scheme = scheme; e.KvCache = kvIdentity; e.WeightScheme = weightScheme; e.Prompt = prompts[promptIndex].Spec.Name; e.Error = message;
                    return e;
                }

                var availability = provider.CheckAvailability(spec.Accelerator);
                if (!availability.IsAvailable)
                {
                    string reason = availability.Reason.StartsWith("unavailable", StringComparison.Ordinal) ? availability.Reason : "unavailable: " + availability.Reason;
                    foreach (int pi in cells) Emit(Error(pi, reason));
                    continue;
                }
                IInferenceEngine engine;
                try { engine = provider.Create(checkpoint, spec.EngineOptionsFor(scheme, calibration, kvCache)); }
                catch (Exception ex) when (ex is not OutOfMemoryException)
                {
                    foreach (int pi in cells) Emit(Error(pi, $"failed to load: {ex.GetType().Name}: {ex.Message}"));
                    continue;
                }
                using (engine)
                {
                    foreach (int pi in cells)
                    {
                        int cell = u * prompts.Count + pi;
                        try { var measured = MeasureCell(spec, engine, prompts[pi].Spec, prompts[pi].Ids, Baseline(pi), Base("result"), cell, cellCount, scheme, options.Progress); measured.KvCache = kvIdentity; measured.WeightScheme = weightScheme; Emit(measured); }
                        catch (Exception ex) when (ex is not OutOfMemoryException)
                        {
                            Emit(Error(pi, $"{ex.GetType().Name}: {ex.Message}"));
                        }
                    }
                    if (corpusHere)
                    {
                        int corpusCell = cellCount + u;
                        try
                        {
                            var c = corpus!.Evaluate(engine, provider.Name, scheme, (done, total) =>
                                options.Progress?.Invoke(new RunProgress(corpusCell, cellCount + units.Count, provider.Name, scheme, "corpus", "chunks", done, total, null)));
                            c.KvCache = kvIdentity; c.WeightScheme = weightScheme; c.RunId = runId; c.Experiment = spec.Name; c.TimestampUtc = DateTime.UtcNow.ToString("o"); c.Shard = options.Shard.ToString();
                            corpusRecords.Add(c); writer.Write(c);
                        }
                        catch (Exception ex) when (ex is not OutOfMemoryException and not ExperimentSpecException)
                        {
                            var e = Base("error");
                            e.Backend = provider.Name; e.Scheme = scheme; e.KvCache = kvIdentity; e.WeightScheme = weightScheme; e.Prompt = "corpus"; e.Error = $"{ex.GetType().Name}: {ex.Message}";
                            Emit(e);
                        }
                    }
                }
            }
        }
        finally { oracle?.Dispose(); }
        var paired = PairedRecord.Selected(corpusRecords, spec.PlannedComparisons);
        foreach (var p in paired) { p.RunId = runId; p.TimestampUtc = DateTime.UtcNow.ToString("o"); writer.Write(p); }
        return new RunSummary(runId, resultsFile, records) { Corpus = corpusRecords, Paired = paired };
    }

    private static int[] Encode(string? text, int[]? ids, ITokenizer? tokenizer, string modelDir, string what)
    {
        if (ids != null) return ids;
        if (tokenizer == null) throw new ExperimentSpecException($"{modelDir}: no tokenizer.model or tokenizer.json, so {what} cannot be encoded from text (give 'ids')");
        return tokenizer.Encode(text!);
    }

    private static ResultRecord MeasureCell(ExperimentSpec spec, IInferenceEngine engine, PromptSpec prompt, int[] promptIds, OracleBaseline oracle,
        ResultRecord record, int cell, int cellCount, string scheme, Action<RunProgress>? progress)
    {
        string backend = engine.Info.Name;
        int n = spec.NewTokens;
        void Report(string phase, int done, double? rate) => progress?.Invoke(new RunProgress(cell, cellCount, backend, scheme, prompt.Name, phase, done, n, rate));

        // Free-running greedy runs: warm-up runs first (not timed), then timed repetitions.
        var prefillRates = new List<double>();
        var decodeRates = new List<double>();
        int[]? generated = null;
        bool deterministic = true;
        for (int rep = 0; rep < spec.Warmup + spec.Repetitions; rep++)
        {
            bool timed = rep >= spec.Warmup;
            string phase = timed ? $"run {rep - spec.Warmup + 1}/{spec.Repetitions}" : "warm-up";
            engine.Reset();
            var clock = Stopwatch.StartNew();
            var logits = engine.Prefill(promptIds);
            double prefill = clock.Elapsed.TotalSeconds;
            var ids = new List<int>(n);
            clock.Restart();
            for (int i = 0; i < n; i++)
            {
                int next = Greedy.ArgMax(logits);
                ids.Add(next);
                Report(phase, i + 1, i > 0 ? i / clock.Elapsed.TotalSeconds : null);
                if (i < n - 1) logits = engine.Decode(next);
            }
            double decode = clock.Elapsed.TotalSeconds;
            if (generated == null) generated = ids.ToArray();
            else if (!generated.SequenceEqual(ids)) deterministic = false;
            if (timed)
            {
                prefillRates.Add(promptIds.Length / prefill);
                if (n > 1) decodeRates.Add((n - 1) / decode);
            }
        }

        // Teacher-forced pass: fed the oracle's tokens, compared step by step with the oracle's logits.
        engine.Reset();
        var backendLogits = new double[n][];
        backendLogits[0] = engine.Prefill(promptIds);
        for (int i = 1; i < n; i++)
        {
            backendLogits[i] = engine.Decode(oracle.Ids[i - 1]);
            Report("teacher-forced", i + 1, null);
        }
        int tfMatches = 0; double klSum = 0, klMax = 0, maxError = 0;
        for (int i = 0; i < n; i++)
        {
            if (Greedy.ArgMax(backendLogits[i]) == oracle.Ids[i]) tfMatches++;
            double kl = TokenMetrics.KlDivergence(oracle.Logits[i], backendLogits[i]);
            klSum += kl; klMax = Math.Max(klMax, kl);
            maxError = Math.Max(maxError, TokenMetrics.MaxAbsDifference(oracle.Logits[i], backendLogits[i]));
        }

        var (matches, firstDivergence) = TokenMetrics.FreeRunning(oracle.Ids, generated!);
        record.Backend = backend; record.Scheme = scheme; record.Prompt = prompt.Name;
        record.Accelerator = engine.Info.Accelerator; record.Format = engine.Info.Format;
        record.Precisions = new Dictionary<string, string>(engine.Info.Precisions);
        record.PromptIds = promptIds; record.OracleIds = oracle.Ids; record.GeneratedIds = generated;
        record.NewTokens = n; record.GreedyMatches = matches; record.FirstDivergence = firstDivergence;
        // Up to the first divergence both runs saw the same context, so the teacher-forced logits there are the free run's.
        if (firstDivergence is int d && d < n)
            record.NearTie = NearTie.At(d, oracle.Logits[d], backendLogits[d], oracle.Ids[d], generated![d]);
        record.TeacherForcedMatches = tfMatches;
        record.KlMean = klSum / n; record.KlMax = klMax; record.MaxAbsLogitError = maxError;
        if (prompt.ExpectedIds != null)
        {
            record.ExpectedIds = prompt.ExpectedIds;
            record.ExpectedMatches = TokenMetrics.FreeRunning(prompt.ExpectedIds, generated!).Matches;
        }
        record.PrefillTokensPerSec = RateStats.Of(prefillRates);
        record.DecodeTokensPerSec = RateStats.Of(decodeRates);
        record.DeterministicAcrossRepetitions = deterministic;
        return record;
    }
}
