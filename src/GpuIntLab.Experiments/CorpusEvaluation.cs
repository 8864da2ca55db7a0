using System.Diagnostics;
using GpuIntLab.Core.FixedPoint;
using GpuIntLab.Core.Inference;
using GpuIntLab.Oracle;

namespace GpuIntLab.Experiments;

/// <summary>
/// The corpus part of a run: the oracle's baseline per chunk (from the on-disk cache, computed once on a miss),
/// then each backend x scheme evaluated teacher-forced on the chunks this shard owns (chunk k belongs to shard
/// k mod N, the same chunks for every backend, so pairs are on the same positions), and where the backend and the
/// oracle both expose their intermediate values (<see cref="IObservableEngine"/>), the per-(layer, stage) error.
/// </summary>
public sealed class CorpusEvaluation
{
    private readonly CorpusChunks _chunks;
    private readonly OracleBaselineCache _cache;
    private readonly Func<IInferenceEngine> _oracle;
    private readonly HashSet<int> _baselineSeen = [];
    private readonly string _corpusName;
    private readonly string _modelHash;

    public IReadOnlyList<int> OwnedChunks { get; }
    public int CacheHits { get; private set; }
    public int CacheMisses { get; private set; }
    public CorpusChunks Chunks => _chunks;

    /// <param name="oracle">The run's oracle engine (created on first use); it must be an <see cref="OracleEngine"/> to compute baselines.</param>
    public CorpusEvaluation(CorpusChunks chunks, string corpusName, string modelHash, string cacheDirectory, Shard shard, Func<IInferenceEngine> oracle)
    {
        _chunks = chunks; _corpusName = corpusName; _modelHash = modelHash; _oracle = oracle;
        _cache = new OracleBaselineCache(cacheDirectory, modelHash);
        OwnedChunks = Enumerable.Range(0, chunks.Count).Where(shard.Owns).ToList();
    }

    /// <summary>The tokens each scored position predicts.</summary>
    public ReadOnlySpan<int> Targets(int chunk) => _chunks.Chunks[chunk].AsSpan(_chunks.FirstScored + 1);

    /// <summary>The oracle's raw Q16.48 logits at the chunk's scored positions (cached on disk).</summary>
    public long[][] BaselineRaw(int chunk)
    {
        var tokens = _chunks.Chunks[chunk];
        var raw = _cache.GetOrCompute(tokens, _chunks.FirstScored, () => ComputeBaseline(tokens), out bool hit);
        if (_baselineSeen.Add(chunk)) { if (hit) CacheHits++; else CacheMisses++; }
        return raw;
    }

    private long[][] ComputeBaseline(int[] tokens)
    {
        var oracle = _oracle() as OracleEngine ?? throw new InvalidOperationException("the corpus baseline needs the Q16.48 oracle engine");
        int first = _chunks.FirstScored;
        var rows = new List<long[]>(_chunks.ScoredPerChunk);
        oracle.Reset();
        oracle.Prefill(tokens.AsSpan(0, first + 1));
        rows.Add((long[])oracle.LastRawLogits.Clone());
        for (int p = first + 1; p < tokens.Length - 1; p++) rows.Add((long[])oracle.DecodeRaw(tokens[p]).Clone());
        oracle.Reset();
        return [.. rows];
    }

    /// <summary>Base log-probabilities in float64 from the exact raw logits.</summary>
    public double[][] BaseLogProbs(int chunk) =>
        BaselineRaw(chunk).Select(row => TokenMetrics.LogSoftmax(Array.ConvertAll(row, Q48.ToDouble))).ToArray();

    /// <summary>Evaluates one engine on the owned chunks; fills everything but the run/experiment identity.</summary>
    public CorpusRecord Evaluate(IInferenceEngine engine, string backend, string scheme, Action<int, int>? progress = null)
    {
        var scores = new List<ChunkScore>(OwnedChunks.Count);
        StageErrorAccumulator? attribution = null;
        IInferenceEngine? observedOracle = null;
        // Attribution needs both sides' intermediates; the oracle against itself would only measure zero.
        if (engine is IObservableEngine && backend != "oracle" && _oracle() is IObservableEngine)
        {
            observedOracle = _oracle();
            attribution = new StageErrorAccumulator(engine.Config.NumHiddenLayers);
        }
        double engineSeconds = 0;
        long tokensFed = 0;
        int done = 0;
        foreach (int k in OwnedChunks)
        {
            var baseLogProbs = BaseLogProbs(k);
            var clock = new Stopwatch();
            var logits = TeacherForced(engine, _chunks.Chunks[k], _chunks.FirstScored, observedOracle, attribution, clock);
            engineSeconds += clock.Elapsed.TotalSeconds;
            tokensFed += _chunks.Context - 1;
            scores.Add(ChunkScore.Of(k, baseLogProbs, logits, Targets(k)));
            progress?.Invoke(++done, OwnedChunks.Count);
        }
        engine.Reset();
        observedOracle?.Reset();
        var record = new CorpusRecord
        {
            Backend = backend, Scheme = scheme, Accelerator = engine.Info.Accelerator, Corpus = _corpusName,
            CorpusHash = _chunks.CorpusHash, ModelHash = _modelHash, Context = _chunks.Context, ChunksTotal = _chunks.Count,
            EvalTokensPerSec = engineSeconds > 0 ? tokensFed / engineSeconds : null,
            BaselineCacheHits = CacheHits, BaselineCacheMisses = CacheMisses,
            Attribution = attribution?.Matrix,
        };
        record.Fill(scores);
        return record;
    }

    /// <summary>
    /// Reset, prefill the context (positions 0..first), then decode the rest token by token, collecting the logits
    /// at every scored position. With an observed oracle, each decode step runs on the oracle first and then on the
    /// engine, whose intermediates are compared as they arrive (the prefill is not attributed: only the scored steps).
    /// </summary>
    public static List<double[]> TeacherForced(IInferenceEngine engine, int[] chunk, int first,
        IInferenceEngine? oracle = null, StageErrorAccumulator? attribution = null, Stopwatch? clock = null)
    {
        var logits = new List<double[]>(chunk.Length - 1 - first);
        engine.Reset();
        oracle?.Reset();
        oracle?.Prefill(chunk.AsSpan(0, first + 1));
        clock?.Start();
        logits.Add(engine.Prefill(chunk.AsSpan(0, first + 1)));
        clock?.Stop();
        for (int p = first + 1; p < chunk.Length - 1; p++)
        {
            if (oracle is IObservableEngine o && engine is IObservableEngine e && attribution != null)
            {
                attribution.BeginStep();
                o.Observer = attribution.OracleObserver;
                try { oracle.Decode(chunk[p]); } finally { o.Observer = null; }
                e.Observer = attribution.BackendObserver;
                clock?.Start();
                try { logits.Add(engine.Decode(chunk[p])); } finally { e.Observer = null; clock?.Stop(); }
            }
            else
            {
                clock?.Start();
                logits.Add(engine.Decode(chunk[p]));
                clock?.Stop();
            }
        }
        return logits;
    }
}
