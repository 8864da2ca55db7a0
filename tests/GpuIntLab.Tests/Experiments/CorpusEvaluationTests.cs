using System.Text.Json;
using GpuIntLab.Backends;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Experiments;
using GpuIntLab.Oracle;
using Xunit;

namespace GpuIntLab.Tests.Experiments;

/// <summary>Chunking, the baseline cache, the stage-error attribution, and the corpus part of a run on the conformance model.</summary>
public class CorpusEvaluationTests
{
    private static LlamaConfig Config(int vocab, int layers = 1, int context = 64) => new()
    {
        HiddenSize = 8, IntermediateSize = 16, NumAttentionHeads = 2, NumKeyValueHeads = 1, NumHiddenLayers = layers,
        VocabSize = vocab, MaxPositionEmbeddings = context, RmsNormEps = 1e-5, RopeTheta = 10000, TieWordEmbeddings = false,
    };

    [Fact]
    public void ChunkingFollowsTheHandCountedExample()
    {
        // 11 corpus tokens 10..20, C = 6 with BOS 1: each chunk is BOS + 5 corpus tokens, so two chunks; token 20 is
        // the partial third chunk and is dropped. First scored = 3: the logits after positions 3 and 4 predict the
        // tokens at 4 and 5, two scored positions a chunk.
        int[] corpus = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20];
        var c = CorpusChunks.Cut(corpus, 6, bos: 1);
        Assert.Equal(2, c.Count);
        Assert.Equal([1, 10, 11, 12, 13, 14], c.Chunks[0]);
        Assert.Equal([1, 15, 16, 17, 18, 19], c.Chunks[1]);
        Assert.Equal(3, c.FirstScored);
        Assert.Equal(2, c.ScoredPerChunk);

        // Without BOS, C = 7: one chunk of 7 corpus tokens (10..16), the other 4 dropped; first scored 3, three scored.
        var n = CorpusChunks.Cut(corpus, 7, bos: null);
        Assert.Equal(1, n.Count);
        Assert.Equal([10, 11, 12, 13, 14, 15, 16], n.Chunks[0]);
        Assert.Equal(3, n.ScoredPerChunk);
        Assert.NotEqual(c.CorpusHash, n.CorpusHash);
    }

    /// <summary>Records what it is fed; its logits say which call produced them.</summary>
    private sealed class RecordingEngine(LlamaConfig config) : IInferenceEngine
    {
        public List<string> Calls { get; } = [];
        public EngineInfo Info { get; } = new("recording", "none", "none", "none", new Dictionary<string, string>());
        public LlamaConfig Config => config;
        public int Position { get; private set; }
        public void Reset() { Position = 0; Calls.Add("reset"); }
        public double[] Prefill(ReadOnlySpan<int> tokens) { Position += tokens.Length; Calls.Add("prefill " + string.Join(' ', tokens.ToArray())); return new double[4]; }
        public double[] Decode(int token) { Position++; Calls.Add($"decode {token}"); return new double[4]; }
        public void Dispose() { }
    }

    [Fact]
    public void TeacherForcedPrefillsTheFirstHalfThenDecodesEachScoredPosition()
    {
        var engine = new RecordingEngine(Config(4));
        var logits = CorpusEvaluation.TeacherForced(engine, [1, 10, 11, 12, 13, 14], first: 3);
        Assert.Equal(2, logits.Count);
        Assert.Equal(["reset", "prefill 1 10 11 12", "decode 13"], engine.Calls);
    }

    private static string WriteSpec(string dir, object corpus, string model)
    {
        string path = Path.Combine(dir, "spec.json");
        File.WriteAllText(path, JsonSerializer.Serialize(new
        {
            name = "corpus-test", model, prompts = new[] { new { name = "bos", ids = new[] { 1 } } }, new_tokens = 2,
            backends = new[] { new { name = "oracle" } }, repetitions = 1, warmup = 0, corpus,
        }));
        return path;
    }

    [Fact]
    public void BadCorpusSpecsFailWithTheFileAndField()
    {
        string dir = TestData.TempDir("corpus-spec");
        var config = Config(100);
        File.WriteAllText(Path.Combine(dir, "ids.json"), "[1, 2, 3, 4, 5, 6, 7, 8, 9]");
        File.WriteAllText(Path.Combine(dir, "bad.json"), "{\"not\": \"an array\"}");
        File.WriteAllText(Path.Combine(dir, "far.json"), "[1, 2, 300]");
        string Error(object corpus)
        {
            string spec = WriteSpec(dir, corpus, TestData.ConformanceBf16);
            var e = Assert.Throws<ExperimentSpecException>(() =>
            {
                var s = ExperimentSpec.Load(spec);
                s.Validate();
                s.Corpus!.Load(s.SourcePath, config, null);
            });
            Assert.Contains(spec, e.Message);
            return e.Message;
        }
        Assert.Contains("exactly one of 'text' or 'ids'", Error(new { text = "a.txt", ids = "ids.json" }));
        Assert.Contains("corpus.context must be at least 4", Error(new { ids = "ids.json", context = 2 }));
        Assert.Contains("corpus.max_tokens must be at least 1", Error(new { ids = "ids.json", context = 4, max_tokens = 0 }));
        Assert.Contains("exceeds the model's context of 64", Error(new { ids = "ids.json", context = 128 }));
        Assert.Contains("not found", Error(new { ids = "missing.json", context = 4 }));
        Assert.Contains("corpus.ids", Error(new { ids = "bad.json", context = 4 }));
        Assert.Contains("token id 300 at index 2", Error(new { ids = "far.json", context = 4 }));
        Assert.Contains("fewer than one chunk", Error(new { ids = "ids.json", context = 32 }));
        File.WriteAllText(Path.Combine(dir, "a.txt"), "some text");
        Assert.Contains("corpus.text needs the model's tokenizer", Error(new { text = "a.txt", context = 4 }));
    }

    [Fact]
    public void BaselineCacheHitsMissesOnAnyKeyChangeAndRefusesCorruptFiles()
    {
        string dir = TestData.TempDir("baseline-cache");
        int computed = 0;
        long[][] Compute() { computed++; return [[1, -2, long.MaxValue], [long.MinValue, 0, 5]]; }
        int[] chunk = [1, 5, 6, 7, 8, 9];
        var cache = new OracleBaselineCache(dir, "model-a");

        var first = cache.GetOrCompute(chunk, 3, Compute, out bool hit1);
        var second = cache.GetOrCompute(chunk, 3, Compute, out bool hit2);
        Assert.False(hit1);
        Assert.True(hit2);
        Assert.Equal(1, computed);
        Assert.Equal(first, second);

        // Each part of the key: model, chunk tokens (corpus and context), first scored position, oracle version.
        new OracleBaselineCache(dir, "model-b").GetOrCompute(chunk, 3, Compute, out bool hitModel);
        cache.GetOrCompute([1, 5, 6, 7, 8, 10], 3, Compute, out bool hitCorpus);
        cache.GetOrCompute([1, 5, 6, 7, 8, 9, 11], 3, Compute, out bool hitContext);
        cache.GetOrCompute(chunk, 2, Compute, out bool hitFirst);
        Assert.False(hitModel || hitCorpus || hitContext || hitFirst);
        Assert.Equal(5, computed);
        Assert.NotEqual(cache.PathFor(OracleBaselineCache.Key("model-a", chunk, 3)),
            cache.PathFor(OracleBaselineCache.Key("model-a", chunk, 3, OracleBaselineCache.OracleVersion + 1)));

        // One flipped bit, or a truncated file: refused with the file named.
        string path = cache.PathFor(OracleBaselineCache.Key("model-a", chunk, 3));
        byte[] bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 0x10;
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<ExperimentSpecException>(() => cache.GetOrCompute(chunk, 3, Compute, out _));
        Assert.Contains(path, e.Message);
        Assert.Contains("checksum mismatch", e.Message);
        File.WriteAllBytes(path, bytes[..20]);
        Assert.Contains(path, Assert.Throws<ExperimentSpecException>(() => cache.GetOrCompute(chunk, 3, Compute, out _)).Message);
        Assert.Equal(5, computed);
    }

    /// <summary>A fake engine that reports hand-made intermediates: the oracle's are exact, the backend's carry a known relative error per stage.</summary>
    private sealed class ObservableFake(LlamaConfig config, Func<int, StepStage, double> relativeError) : IInferenceEngine, IObservableEngine
    {
        public IStepObserver? Observer { get; set; }
        public EngineInfo Info { get; } = new("fake", "none", "none", "none", new Dictionary<string, string>());
        public LlamaConfig Config => config;
        public int Position { get; private set; }
        public void Reset() => Position = 0;
        public double[] Prefill(ReadOnlySpan<int> tokens) { foreach (int t in tokens) Decode(t); return new double[config.VocabSize]; }

        public double[] Decode(int token)
        {
            Position++;
            for (int layer = 0; layer < config.NumHiddenLayers; layer++)
                foreach (var stage in new[] { StepStage.Q, StepStage.SwiGlu })
                    Observe(layer, stage, token);
            Observe(-1, StepStage.Logits, token);
            return new double[config.VocabSize];
        }

        // Values (3, 4) * token: norm 5 * token; the backend's are scaled by (1 + e), a relative error of exactly e.
        private void Observe(int layer, StepStage stage, int token)
        {
            double scale = token * (1 + relativeError(layer, stage));
            Observer?.Observe(layer, stage, 1, [3 * scale, 4 * scale]);
        }

        public void Dispose() { }
    }

    [Fact]
    public void AttributionFindsTheStageWhereTheFakeBackendLosesPrecision()
    {
        var config = Config(4, layers: 3);
        var oracle = new ObservableFake(config, (_, _) => 0);
        var backend = new ObservableFake(config, (layer, stage) => (layer, stage) switch
        {
            (1, StepStage.SwiGlu) => 0.02,
            (-1, StepStage.Logits) => 0.005,
            _ => 1e-4,
        });
        var acc = new StageErrorAccumulator(config.NumHiddenLayers);
        CorpusEvaluation.TeacherForced(backend, [1, 2, 3, 2, 1, 3, 2, 1], first: 4, oracle, acc);
        var m = acc.Matrix;
        Assert.Equal([0, 1, 2, -1], m.Layers);
        Assert.Equal(0.02, m.RelativeError(1, (int)StepStage.SwiGlu)!.Value, 12);
        Assert.Equal(1e-4, m.RelativeError(0, (int)StepStage.Q)!.Value, 12);
        Assert.Equal(0.005, m.RelativeError(m.Row(-1), (int)StepStage.Logits)!.Value, 12);
        Assert.Null(m.RelativeError(0, (int)StepStage.V));
        // Decode steps only: positions 5 and 6 (tokens 3 and 2), two values each.
        Assert.Equal(4, m.Count[1][(int)StepStage.SwiGlu]);
        Assert.Equal((1, "SwiGlu", 0.02), (m.Worst()!.Value.Layer, m.Worst()!.Value.Stage, Math.Round(m.Worst()!.Value.RelativeError, 12)));

        // The heatmap of a record carrying this matrix is drawn, and the table names the worst stage.
        var record = new CorpusRecord { Experiment = "fake", Backend = "fake", Scheme = "s", CorpusHash = "0123456789abcdef", Context = 8, Attribution = m };
        record.Fill([ChunkScore.Of(0, [[Math.Log(0.5), Math.Log(0.5)]], [[0.0, 1.0]], [0]), ChunkScore.Of(1, [[Math.Log(0.5), Math.Log(0.5)]], [[0.0, 2.0]], [1])]);
        string plots = TestData.TempDir("attribution-plots");
        Assert.Contains(Path.Combine(plots, "fake-attribution-fake-s.png"), CorpusPlots.Regenerate(plots, "fake", [record], []));
        Assert.Contains("fake/s: largest at layer 1, SwiGlu (2.00e-02)", CorpusTables.Markdown("fake", [record], plots));

        // Sums merge by addition: twice the same evidence, same relative error.
        var twice = StageErrorMatrix.Empty(3);
        twice.Add(m); twice.Add(m);
        Assert.Equal(0.02, twice.RelativeError(1, (int)StepStage.SwiGlu)!.Value, 12);
    }

    // ------------------------------------------------------------------ the corpus in a run

    private sealed class ScaledProvider : IEngineProvider
    {
        public string Name => "scaled";
        public string Description => "test backend: the reference's logits scaled (a temperature)";
        public IReadOnlyList<string> Schemes { get; } = ["small", "large"];
        public Availability CheckAvailability(string accelerator) => Availability.Yes("cpu");
        public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options) =>
            new Engine(new ReferenceEngine(checkpoint), options.Scheme == "small" ? 0.95 : 0.7);

        private sealed class Engine(ReferenceEngine inner, double scale) : IInferenceEngine
        {
            public EngineInfo Info => inner.Info with { Name = "scaled" };
            public LlamaConfig Config => inner.Config;
            public int Position => inner.Position;
            public void Reset() => inner.Reset();
            public double[] Prefill(ReadOnlySpan<int> tokens) => Scale(inner.Prefill(tokens));
            public double[] Decode(int token) => Scale(inner.Decode(token));
            private double[] Scale(double[] l) { for (int i = 0; i < l.Length; i++) l[i] *= scale; return l; }
            public void Dispose() => inner.Dispose();
        }
    }

    private static readonly IEngineProvider[] s_backends = [new OracleProvider(), new ReferenceProvider(), new ScaledProvider()];

    private static (ExperimentSpec Spec, string Dir) CorpusSpec()
    {
        string dir = TestData.TempDir("corpus-run");
        // 8 chunks of C = 12 (BOS + 11 corpus ids): 5 scored positions each. Ids from a fixed rule, inside the vocabulary.
        var ids = Enumerable.Range(0, 8 * 11 + 3).Select(i => (int)(3 + (long)i * 7919 % 31990)).ToArray();
        File.WriteAllText(Path.Combine(dir, "corpus.json"), JsonSerializer.Serialize(ids));
        string path = Path.Combine(dir, "spec.json");
        File.WriteAllText(path, JsonSerializer.Serialize(new
        {
            name = "corpus-run", model = TestData.ConformanceBf16,
            prompts = new[] { new { name = "bos", ids = new[] { 1 } } }, new_tokens = 2,
            backends = new object[] { new { name = "oracle" }, new { name = "reference" }, new { name = "scaled" } },
            repetitions = 1, warmup = 0,
            corpus = new { ids = "corpus.json", context = 12 },
        }));
        return (ExperimentSpec.Load(path), dir);
    }

    private static RunSummary Run(ExperimentSpec spec, string dir, Shard? shard = null) => new ExperimentRunner().Run(spec, new RunOptions
    {
        ResultsDirectory = Path.Combine(dir, "results", "runs"),
        Shard = shard ?? Shard.All,
        Command = "test",
        FindBackend = name => s_backends.FirstOrDefault(b => b.Name == name),
        KnownBackends = s_backends.Select(b => b.Name),
    });

    [Fact]
    public void CorpusRunScoresEveryBackendCachesTheBaselineAndShardsMergeToTheSameNumbers()
    {
        var (spec, dir) = CorpusSpec();
        var whole = Run(spec, dir);
        Assert.Equal(4, whole.Corpus.Count);
        var oracle = whole.Corpus.Single(c => c.Backend == "oracle");
        Assert.Equal(8, oracle.Chunks);
        Assert.Equal(40, oracle.TokensScored);
        Assert.Equal(0, oracle.KlMean);
        Assert.Equal(0, oracle.KlMax);
        Assert.Equal(1, oracle.SameTop1);
        Assert.Equal(1, oracle.PplRatio);
        Assert.Equal(8, oracle.BaselineCacheMisses);
        var reference = whole.Corpus.Single(c => c.Backend == "reference");
        Assert.InRange(Math.Abs(reference.Ppl / oracle.Ppl - 1), 0, 1e-9);
        Assert.InRange(reference.KlMax, 0, 1e-12);
        var small = whole.Corpus.Single(c => c.Key == "scaled/small");
        var large = whole.Corpus.Single(c => c.Key == "scaled/large");
        Assert.True(small.KlMean > 0 && large.KlMean > small.KlMean);
        Assert.True(small.KlMeanSe > 0);
        // Rows with a non-zero KL (reference, small, large; the oracle against itself is no comparison): every pair.
        Assert.Equal(3, whole.Paired.Count);
        var verdict = whole.Paired.Single(p => p.A == "scaled/small" && p.B == "scaled/large");
        Assert.Equal("scaled/small KL lower than scaled/large", verdict.KlVerdict);

        // Every line is in the results file and reads back.
        var (readCorpus, readPaired) = CorpusResults.ReadAll(Path.Combine(dir, "results", "runs"));
        Assert.Equal(4, readCorpus.Count);
        Assert.Equal(3, readPaired.Count);

        // The table shows the figures with their errors and the verdict; the plots are written.
        string results = Path.Combine(dir, "results");
        var plots = ResultPlots.Regenerate(results);
        Assert.Contains(Path.Combine(results, "plots", "corpus-run-kl-cdf.png"), plots);
        Assert.Contains(Path.Combine(results, "plots", "corpus-run-same-top1.png"), plots);
        Assert.Contains(Path.Combine(results, "plots", "corpus-run-frontier.png"), plots);
        ResultTables.Regenerate(results);
        string page = File.ReadAllText(Path.Combine(results, "corpus-run.md"));
        Assert.Contains("## Corpus evaluation", page);
        Assert.Contains($"| scaled | small | 8 | 40 | {small.KlMean.ToString("0.00e+00", System.Globalization.CultureInfo.InvariantCulture)} ± ", page);
        Assert.Contains("| scaled/small | scaled/large |  | 8 |", page);
        // The ranking puts the smaller KL first and says whether it differs from the next row.
        Assert.Contains("### Ranking", page);
        Assert.True(page.IndexOf("| scaled | small |", page.IndexOf("### Ranking")) < page.IndexOf("| scaled | large |", page.IndexOf("### Ranking")));
        Assert.Contains("scaled/small KL lower than scaled/large", page);
        Assert.Contains("![corpus-run-kl-cdf.png](plots/corpus-run-kl-cdf.png)", page);

        // A second run finds every chunk's baseline cached.
        var again = Run(spec, dir);
        Assert.All(again.Corpus, c => Assert.Equal(0, c.BaselineCacheMisses));
        Assert.Equal(8, again.Corpus[0].BaselineCacheHits);

        // Shards own disjoint chunks; merged, they give the unsharded figures.
        string shardDir = TestData.TempDir("corpus-shards");
        var shardRecords = new List<CorpusRecord>();
        for (int i = 0; i < 2; i++) shardRecords.AddRange(Run(spec, shardDir, new Shard(i, 2)).Corpus);
        Assert.Equal(8, shardRecords.Where(r => r.Backend == "oracle").Sum(r => r.Chunks));
        var merged = CorpusResults.Merge(shardRecords);
        foreach (var w in whole.Corpus)
        {
            var m = merged.Single(r => r.Key == w.Key);
            Assert.Equal(w.TokensScored, m.TokensScored);
            Assert.Equal(w.KlMean, m.KlMean, 15);
            Assert.Equal(w.KlMeanSe, m.KlMeanSe, 15);
            Assert.Equal(w.KlP99, m.KlP99, 15);
            Assert.Equal(w.SameTop1Se, m.SameTop1Se, 15);
            Assert.Equal(w.PplRatioCi95, m.PplRatioCi95);
            Assert.Equal(w.DpRmsSe, m.DpRmsSe, 15);
        }
    }
}
