namespace GpuIntLab.Experiments;

/// <summary>
/// What defines a cell's numbers beyond its backend x scheme x prompt: the model, the number of new tokens and the
/// prompt's token ids. Records of one experiment that differ in any of these measure different things, so a table
/// must never add them up (5 + 5 + 20 + 20 "tokens" from two runs of different lengths); the newest run's
/// definition is the experiment's, and records defined otherwise are left out with a warning naming them.
/// </summary>
public static class ResultCells
{
    /// <summary>The model as recorded by the run header, by folder or file name (paths differ between machines).</summary>
    private static string? ModelName(ResultRecord? header) =>
        string.IsNullOrEmpty(header?.Model) ? null : Path.GetFileName(Path.TrimEndingDirectorySeparator(header.Model));

    private sealed record Definition(string? Model, int? NewTokens)
    {
        /// <summary>An unknown part (records written before it was recorded) agrees with anything.</summary>
        public bool Agrees(Definition other) =>
            (Model == null || other.Model == null || Model == other.Model) && (NewTokens == null || other.NewTokens == null || NewTokens == other.NewTokens);

        public override string ToString() => $"model {Model ?? "?"}, new_tokens {NewTokens?.ToString() ?? "?"}";
    }

    /// <summary>
    /// The cells of one experiment that share the newest record's definition, newest record per backend x scheme x
    /// prompt; <paramref name="warn"/> hears about every record left out and why.
    /// </summary>
    public static List<ResultRecord> Latest(string experiment, IReadOnlyList<ResultRecord> cells, IReadOnlyDictionary<string, ResultRecord> headers, Action<string>? warn)
    {
        if (cells.Count == 0) return [];
        Definition Of(ResultRecord r) => new(ModelName(headers.GetValueOrDefault(r.RunId)), r.NewTokens);
        var ordered = cells.OrderBy(r => r.TimestampUtc, StringComparer.Ordinal).ToList();
        var newest = ordered[^1];
        var reference = Of(newest);
        var kept = new List<ResultRecord>();
        var leftOut = new List<(ResultRecord Record, string Why)>();
        foreach (var r in ordered)
        {
            var d = Of(r);
            if (d.Agrees(reference)) kept.Add(r);
            else leftOut.Add((r, d.ToString()));
        }
        // The same prompt name must mean the same token ids (a changed text or tokenizer is a different prompt).
        var promptIds = kept.Where(r => r.PromptIds != null).GroupBy(r => r.Prompt!)
            .ToDictionary(g => g.Key, g => g.Last().PromptIds!);
        kept = kept.Where(r =>
        {
            if (r.PromptIds == null || !promptIds.TryGetValue(r.Prompt!, out var ids) || ids.SequenceEqual(r.PromptIds)) return true;
            leftOut.Add((r, $"prompt '{r.Prompt}' as ids [{string.Join(' ', r.PromptIds.Take(8))}{(r.PromptIds.Length > 8 ? " ..." : "")}]"));
            return false;
        }).ToList();
        foreach (var run in leftOut.GroupBy(x => x.Record.RunId))
            warn?.Invoke($"experiment '{experiment}': left out {run.Count()} record(s) of run {run.Key} ({string.Join("; ", run.Select(x => x.Why).Distinct())}): " +
                         $"the newest run {newest.RunId} defines the cells as {reference}; give differently defined runs their own experiment name to keep both");
        return kept.GroupBy(r => (r.Backend, ResultTables.SchemeKey(r), r.Prompt)).Select(c => c.Last()).ToList();
    }
}
