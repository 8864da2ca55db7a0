using System.Security.Cryptography;

namespace GpuIntLab.Experiments;

/// <summary>A results folder or file that cannot be used (a file where a folder belongs, read-only, full disk, ...).</summary>
public sealed class ResultsFileException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Where runs are recorded and how. Each run gets its own file, created exclusively under a run id that is unique
/// even for runs started in the same second on the same folder (a random suffix), so concurrent runs and shards
/// never share a file; each record is written as one whole line in a single write. Results pages are replaced
/// atomically (temporary file, then rename), so a full disk leaves the previous page, never a truncated one.
/// </summary>
public static class ResultsStore
{
    /// <summary>A new run id: experiment, UTC time to the millisecond, a random suffix, and the shard when there are several.</summary>
    public static string NewRunId(string experiment, Shard shard)
    {
        string random = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        return $"{experiment}-{DateTime.UtcNow:yyyyMMdd'T'HHmmss'.'fff'Z'}-{random}" + (shard.Count > 1 ? $"-shard{shard.Index}of{shard.Count}" : "");
    }

    /// <summary>
    /// Checks before any work that <paramref name="folder"/> is (or can become) a folder this process can create
    /// files in: a file in its place, a read-only folder or a full disk fail here with one message, not after the run.
    /// </summary>
    public static void PrepareFolder(string folder, string what)
    {
        if (File.Exists(folder)) throw new ResultsFileException($"{folder}: the {what} is a file, not a folder");
        string probe = Path.Combine(folder, $".write-probe-{Environment.ProcessId}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}");
        try
        {
            Directory.CreateDirectory(folder);
            using (var f = new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose))
                f.WriteByte((byte)'\n');
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ResultsFileException($"{folder}: the {what} cannot be written ({e.Message})", e);
        }
    }

    /// <summary>The run's own results file, created exclusively: an existing file of that name is never appended to.</summary>
    public static ResultWriter CreateRunFile(string folder, string runId)
    {
        string path = Path.Combine(folder, runId + ".jsonl");
        try { return new ResultWriter(path, createNew: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ResultsFileException($"{path}: cannot create the run's results file ({e.Message})", e);
        }
    }

    /// <summary>Why a record read from a results line cannot be used (so it is skipped with a warning), or null when it can.</summary>
    public static string? RecordProblem(ResultRecord? r)
    {
        if (r == null) return "not a JSON object";
        if (r.Type is not ("run" or "result" or "error")) return $"'type' must be run, result or error, got {Show(r.Type)}";
        if (SafeNames.Problem(r.Experiment) is string bad) return $"'experiment' {bad}";
        if (string.IsNullOrEmpty(r.RunId)) return "'run_id' is missing";
        if (string.IsNullOrEmpty(r.TimestampUtc)) return "'timestamp_utc' is missing";
        if (r.Type == "run") return null;
        if (string.IsNullOrEmpty(r.Backend)) return "'backend' is missing";
        if (string.IsNullOrEmpty(r.Scheme)) return "'scheme' is missing";
        if (string.IsNullOrEmpty(r.Prompt)) return "'prompt' is missing";
        if (r.NewTokens is < 1 or > MaxNewTokens) return $"'new_tokens' must be in [1, {MaxNewTokens}], got {r.NewTokens}";
        if (r.Type == "error") return null;
        if (r.NewTokens == null) return "'new_tokens' is missing";
        // Counts are bounded by the tokens they count, so tables can add up thousands of cells without overflow.
        foreach (var (field, value) in new[] { ("greedy_matches", r.GreedyMatches), ("teacher_forced_matches", r.TeacherForcedMatches), ("expected_matches", r.ExpectedMatches) })
            if (value is int v && (v < 0 || v > r.NewTokens)) return $"'{field}' must be in [0, new_tokens {r.NewTokens}], got {v}";
        return null;
    }

    /// <summary>More new tokens per cell than any model's context here; a larger count in a results line is not a real record.</summary>
    public const int MaxNewTokens = 1 << 20;

    private static string Show(string? value) => value == null ? "null" : $"'{value}'";

    /// <summary>Fails before any page is written when one of <paramref name="paths"/> exists as a folder.</summary>
    public static void CheckFileTargets(IEnumerable<string> paths)
    {
        foreach (var p in paths)
            if (Directory.Exists(p)) throw new ResultsFileException($"{p}: is a folder, but a results page must be written there");
    }

    /// <summary>Replaces <paramref name="path"/> with <paramref name="text"/> through a temporary file and a rename.</summary>
    public static void WriteTextAtomically(string path, string text)
    {
        if (Directory.Exists(path)) throw new ResultsFileException($"{path}: is a folder, but a results page must be written there");
        string temp = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}.tmp");
        try
        {
            File.WriteAllText(temp, text);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(temp); } catch (Exception cleanup) when (cleanup is IOException or UnauthorizedAccessException) { }
            throw new ResultsFileException($"{path}: cannot write ({e.Message}); the previous version is unchanged", e);
        }
    }
}
