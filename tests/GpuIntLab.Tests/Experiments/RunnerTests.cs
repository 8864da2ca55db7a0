using System.Text.Json;
using GpuIntLab.Backends;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;
using GpuIntLab.Experiments;
using GpuIntLab.Oracle;
using Xunit;

namespace GpuIntLab.Tests.Experiments;

/// <summary>The runner end to end on the conformance model, with fake backends that fail or perturb.</summary>
public class RunnerTests
{
    /// <summary>A backend that fails on a chosen prompt (after prefill of its first token), to prove the run goes on.</summary>
    private sealed class FailingProvider(string name, Func<int, bool> failAt, bool failToLoad = false) : IEngineProvider
    {
        public string Name => name;
        public string Description => "test backend that throws";
        public IReadOnlyList<string> Schemes { get; } = ["exact"];
        public Availability CheckAvailability(string accelerator) => Availability.Yes("cpu");
        public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options) =>
            failToLoad ? throw new InvalidOperationException("cannot load") : new Engine(new ReferenceEngine(checkpoint), failAt, name);

        private sealed class Engine(ReferenceEngine inner, Func<int, bool> failAt, string name) : IInferenceEngine
        {
            public EngineInfo Info => inner.Info with { Name = name };
            public LlamaConfig Config => inner.Config;
            public int Position => inner.Position;
            public void Reset() => inner.Reset();
            public double[] Prefill(ReadOnlySpan<int> tokens) => failAt(tokens[^1]) ? throw new InvalidOperationException("kernel exploded") : inner.Prefill(tokens);
            public double[] Decode(int token) => inner.Decode(token);
            public void Dispose() => inner.Dispose();
        }
    }

    /// <summary>A backend whose logits are the reference's with token 0's logit raised high: it always picks token 0.</summary>
    private sealed class BiasedProvider : IEngineProvider
    {
        public string Name => "biased";
        public string Description => "test backend that prefers token 0";
        public IReadOnlyList<string> Schemes { get; } = ["exact"];
        public Availability CheckAvailability(string accelerator) => Availability.Yes("cpu");
        public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options) => new Engine(new ReferenceEngine(checkpoint));

        private sealed class Engine(ReferenceEngine inner) : IInferenceEngine
        {
            public EngineInfo Info => inner.Info with { Name = "biased" };
            public LlamaConfig Config => inner.Config;
            public int Position => inner.Position;
            public void Reset() => inner.Reset();
            public double[] Prefill(ReadOnlySpan<int> tokens) => Bias(inner.Prefill(tokens));
            public double[] Decode(int token) => Bias(inner.Decode(token));
            private static double[] Bias(double[] l) { l[0] += 100; return l; }
            public void Dispose() => inner.Dispose();
        }
    }

    private sealed class UnavailableProvider : IEngineProvider
    {
        public string Name => "nowhere";
        public string Description => "test backend that is never available";
        public IReadOnlyList<string> Schemes { get; } = ["a", "b"];
        public Availability CheckAvailability(string accelerator) => Availability.No("no such device");
        public IInferenceEngine Create(LlamaCheckpoint checkpoint, EngineOptions options) => throw new InvalidOperationException("must not be called");
    }

    private static readonly IEngineProvider[] s_testBackends =
    [
        new OracleProvider(), new ReferenceProvider(), new BiasedProvider(), new UnavailableProvider(),
        new FailingProvider("fails-on-math", t => t == 29922), new FailingProvider("fails-to-load", _ => false, failToLoad: true),
    ];

    private static (ExperimentSpec Spec, string Dir) MakeSpec(params string[] backends)
    {
        string dir = TestData.TempDir("runner");
        var spec = new
        {
            name = "runner-test",
            model = TestData.ConformanceBf16,
            prompts = new object[]
            {
                new { name = "france", text = "The capital of France is" },
                new { name = "math", ids = new[] { 1, 29871, 29896, 29974, 29896, 29922 } },
                new { name = "bos", ids = new[] { 1 }, expected_ids = new[] { 5, 6, 7 } },
            },
            new_tokens = 3,
            backends = backends.Select(b => new { name = b }).ToArray(),
            repetitions = 2,
            warmup = 1,
        };
        string path = Path.Combine(dir, "spec.json");
        File.WriteAllText(path, JsonSerializer.Serialize(spec));
        return (ExperimentSpec.Load(path), dir);
    }

    private static RunSummary Run(ExperimentSpec spec, string dir, Shard? shard = null) => new ExperimentRunner().Run(spec, new RunOptions
    {
        ResultsDirectory = Path.Combine(dir, "results", "runs"),
        Shard = shard ?? Shard.All,
        Command = "test",
        FindBackend = name => s_testBackends.FirstOrDefault(b => b.Name == name),
        KnownBackends = s_testBackends.Select(b => b.Name),
    });

    [Fact]
    public void OracleAgainstItselfIsPerfectAndBiasedBackendIsCaught()
    {
        var (spec, dir) = MakeSpec("oracle", "reference", "biased");
        var summary = Run(spec, dir);
        var results = summary.Records.Where(r => r.Type == "result").ToList();
        Assert.Equal(9, results.Count);
        foreach (var r in results.Where(r => r.Backend is "oracle" or "reference"))
        {
            Assert.Equal(3, r.GreedyMatches);
            Assert.Equal(3, r.TeacherForcedMatches);
            Assert.Null(r.FirstDivergence);
            Assert.True(r.KlMax < 1e-12);
            Assert.NotNull(r.DecodeTokensPerSec);
            Assert.Equal(2, r.DecodeTokensPerSec!.Samples);
            Assert.True(r.DeterministicAcrossRepetitions);
        }
        foreach (var r in results.Where(r => r.Backend == "biased"))
        {
            Assert.Equal(0, r.FirstDivergence);
            Assert.All(r.GeneratedIds!, id => Assert.Equal(0, id));
            Assert.Equal(0, r.TeacherForcedMatches);
            Assert.True(r.KlMean > 10, $"KL {r.KlMean}");
            Assert.NotNull(r.NearTie);
            Assert.False(r.NearTie!.IsNearTie);
        }
        var bos = results.Single(r => r.Backend == "oracle" && r.Prompt == "bos");
        Assert.Equal(TokenMetrics.FreeRunning([5, 6, 7], bos.GeneratedIds!).Matches, bos.ExpectedMatches);
    }

    [Fact]
    public void FailingAndUnavailableBackendsWriteErrorsAndTheRunGoesOn()
    {
        var (spec, dir) = MakeSpec("nowhere", "fails-to-load", "fails-on-math", "oracle");
        var summary = Run(spec, dir);
        var errors = summary.Records.Where(r => r.Type == "error").ToList();
        Assert.Equal(6, errors.Count(e => e.Backend == "nowhere")); // 2 schemes x 3 prompts
        Assert.All(errors.Where(e => e.Backend == "nowhere"), e => Assert.Equal("unavailable: no such device", e.Error));
        Assert.Equal(3, errors.Count(e => e.Backend == "fails-to-load"));
        var math = Assert.Single(errors, e => e.Backend == "fails-on-math");
        Assert.Equal("math", math.Prompt);
        Assert.Contains("kernel exploded", math.Error);
        // Its other prompts and the oracle after it still ran.
        Assert.Equal(2, summary.Records.Count(r => r.Type == "result" && r.Backend == "fails-on-math"));
        Assert.Equal(3, summary.Records.Count(r => r.Type == "result" && r.Backend == "oracle"));
    }

    [Fact]
    public void JsonLinesRoundTripAndEveryLineIsFlushed()
    {
        var (spec, dir) = MakeSpec("oracle", "biased");
        var summary = Run(spec, dir);
        var lines = File.ReadAllLines(summary.ResultsFile);
        Assert.Equal(summary.Records.Count, lines.Length);
        var read = ResultReader.ReadAll(Path.Combine(dir, "results", "runs"));
        Assert.Equal(lines.Length, read.Count);
        for (int i = 0; i < read.Count; i++)
            Assert.Equal(lines[i], JsonSerializer.Serialize(read[i], ResultRecord.Json));
        var header = read[0];
        Assert.Equal("run", header.Type);
        Assert.False(string.IsNullOrEmpty(header.Environment!.Cpu));
        Assert.Equal(Environment.ProcessorCount, header.Environment.Cores);
    }

    [Fact]
    public void ShardsCoverTheMatrixExactlyOnceAndTheTableMergesThem()
    {
        var (spec, dir) = MakeSpec("oracle", "biased", "reference");
        var cells = new List<(string?, string?, string?)>();
        for (int i = 0; i < 4; i++)
            cells.AddRange(Run(spec, dir, new Shard(i, 4)).Records.Where(r => r.Type == "result").Select(r => (r.Backend, r.Scheme, r.Prompt)));
        Assert.Equal(9, cells.Count);
        Assert.Equal(9, cells.Distinct().Count());
        ResultTables.Regenerate(Path.Combine(dir, "results"));
        string table = File.ReadAllText(Path.Combine(dir, "results", "runner-test.md"));
        Assert.Contains("| oracle | exact | 9/9 (100.0%) | 9/9 (100.0%) |", table);
        Assert.Contains("| biased | exact | 0/9 (0.0%) | 0/9 (0.0%) |", table);
        Assert.Contains("shard 3/4", table);
    }

    [Fact]
    public void SpecErrorsFailBeforeAnyWork()
    {
        var (spec, dir) = MakeSpec("oracle", "no-such-backend");
        var e = Assert.Throws<ExperimentSpecException>(() => Run(spec, dir));
        Assert.Contains("unknown backend 'no-such-backend'", e.Message);
        Assert.False(Directory.Exists(Path.Combine(dir, "results")));

        var (spec2, dir2) = MakeSpec("oracle");
        spec2.Model = "/no/such/model";
        Assert.Contains("/no/such/model", Assert.Throws<ModelLoadException>(() => Run(spec2, dir2)).Message);

        var (spec3, dir3) = MakeSpec("oracle");
        spec3.Prompts[1].Ids = [1, 99999];
        Assert.Contains("99999", Assert.Throws<ExperimentSpecException>(() => Run(spec3, dir3)).Message);

        var (spec4, dir4) = MakeSpec("oracle");
        spec4.NewTokens = 2048;
        Assert.Contains("exceeds the model's context", Assert.Throws<ExperimentSpecException>(() => Run(spec4, dir4)).Message);
    }
}
