using System.Text.Json;
using GpuIntLab.Core.Inference;

namespace GpuIntLab.Tests.Engines;

/// <summary>One checked position of a conformance case: the outside float64 reference's logit facts.</summary>
public sealed record ReferencePosition(int Pos, int InputId, int Argmax, double Margin, (int Id, double Logit)[] Top16,
    (int Id, double Logit)[] Probes, double LogSumExp, double Sum, double SumSq);

public sealed record ReferenceCase(string Name, int[] InputIds, int PromptLength, int[] GeneratedIds, ReferencePosition[] Positions, double MinGreedyMargin)
{
    public override string ToString() => Name;
}

/// <summary>Reads <c>reference.json</c> of the conformance set and compares an engine against it.</summary>
public static class ConformanceReference
{
    private static readonly Lazy<(ReferenceCase[] Untied, ReferenceCase[] Tied)> s_cases = new(Load);
    public static ReferenceCase[] Untied => s_cases.Value.Untied;
    public static ReferenceCase[] Tied => s_cases.Value.Tied;
    public static ReferenceCase Case(string name) => Untied.Concat(Tied).Single(c => c.Name == name);

    private static (ReferenceCase[], ReferenceCase[]) Load()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(TestData.ReferenceJsonPath));
        ReferenceCase[] Read(string key) => doc.RootElement.GetProperty(key).EnumerateArray().Select(ParseCase).ToArray();
        return (Read("cases"), Read("tied_cases"));
    }

    /// <summary>The cases of a reference.json of the same schema (the families set uses it too).</summary>
    public static ReferenceCase[] ParseCases(JsonElement cases) => cases.EnumerateArray().Select(ParseCase).ToArray();

    private static ReferenceCase ParseCase(JsonElement c)
    {
        static int[] Ints(JsonElement e) => e.EnumerateArray().Select(x => x.GetInt32()).ToArray();
        static (int, double)[] Pairs(JsonElement e) => e.EnumerateArray().Select(p => (p[0].GetInt32(), p[1].GetDouble())).ToArray();
        var positions = c.GetProperty("positions").EnumerateArray().Select(p => new ReferencePosition(
            p.GetProperty("pos").GetInt32(), p.GetProperty("input_id").GetInt32(), p.GetProperty("argmax").GetInt32(),
            p.GetProperty("margin_top1_top2").GetDouble(), Pairs(p.GetProperty("top16")), Pairs(p.GetProperty("probes")),
            p.GetProperty("logsumexp").GetDouble(), p.GetProperty("sum").GetDouble(), p.GetProperty("sum_sq").GetDouble())).ToArray();
        int[] inputs, generated; int promptLength;
        if (c.TryGetProperty("input_ids", out var given))
        {
            inputs = Ints(given); generated = []; promptLength = inputs.Length;
        }
        else
        {
            var prompt = Ints(c.GetProperty("prompt_ids"));
            generated = Ints(c.GetProperty("generated_ids"));
            // The engine is fed the prompt and then every generated token but the last.
            inputs = prompt.Concat(generated.Take(generated.Length - 1)).ToArray();
            promptLength = prompt.Length;
        }
        double margin = c.TryGetProperty("min_greedy_margin", out var m) ? m.GetDouble() : double.NaN;
        return new ReferenceCase(c.GetProperty("name").GetString()!, inputs, promptLength, generated, positions, margin);
    }

    /// <summary>Largest differences between an engine's logits and the reference at one position.</summary>
    public sealed record Deviation(double MaxLogitError, double LogSumExpError, double SumError, double SumSqRelativeError, int Argmax);

    public static Deviation Compare(ReferencePosition reference, double[] logits)
    {
        double maxError = 0;
        foreach (var (id, logit) in reference.Top16.Concat(reference.Probes)) maxError = Math.Max(maxError, Math.Abs(logits[id] - logit));
        double max = logits.Max();
        double lse = max + Math.Log(logits.Sum(v => Math.Exp(v - max)));
        double sum = logits.Sum(), sumSq = logits.Sum(v => v * v);
        return new Deviation(maxError, Math.Abs(lse - reference.LogSumExp), Math.Abs(sum - reference.Sum),
            Math.Abs(sumSq - reference.SumSq) / reference.SumSq, Greedy.ArgMax(logits));
    }

    /// <summary>Feeds the case's inputs one by one and returns the deviation at every checked position.</summary>
    public static List<(ReferencePosition Ref, Deviation Dev)> Run(IInferenceEngine engine, ReferenceCase c)
    {
        engine.Reset();
        var byPos = c.Positions.ToDictionary(p => p.Pos);
        var result = new List<(ReferencePosition, Deviation)>();
        // The prompt goes through Prefill where no position in it is checked, to exercise both paths.
        int start = 0;
        int firstChecked = c.Positions.Min(p => p.Pos);
        if (firstChecked > 1)
        {
            engine.Prefill(c.InputIds.AsSpan(0, firstChecked));
            start = firstChecked;
        }
        for (int pos = start; pos < c.InputIds.Length; pos++)
        {
            var logits = engine.Decode(c.InputIds[pos]);
            if (byPos.TryGetValue(pos, out var r)) result.Add((r, Compare(r, logits)));
        }
        return result;
    }
}
