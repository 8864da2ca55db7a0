using System.Text.Json;

namespace GpuIntLab.Core.Models;

/// <summary>
/// Reads <c>model.safetensors.index.json</c>: its <c>weight_map</c> names, per tensor, the shard file holding it.
/// The names come from a downloaded file, so each must be a plain file name inside the model folder (no folder
/// part, no "..", no absolute path): an index cannot make the loader open files elsewhere.
/// </summary>
public static class SafetensorsIndex
{
    public const string FileName = "model.safetensors.index.json";

    /// <summary>The shard paths the index names, each once, in ordinal order; every problem names the index file and the entry.</summary>
    public static List<string> ShardPaths(string folder, string indexPath)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(indexPath)); }
        catch (JsonException e) { throw new ModelLoadException($"{indexPath}: not valid JSON ({e.Message})", e); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ModelLoadException($"{indexPath}: cannot read: {e.Message}", e); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new ModelLoadException($"{indexPath}: no 'weight_map' object");
            if (JsonStrings.FirstUndecodable(map, "weight_map") is string undecodable)
                throw new ModelLoadException($"{indexPath}: {undecodable} is not valid Unicode text (a lone surrogate escape)");
            var shards = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var entry in map.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.String)
                    throw new ModelLoadException($"{indexPath}: weight_map entry '{entry.Name}' is {entry.Value.ValueKind.ToString().ToLowerInvariant()} {entry.Value}, not a shard file name");
                string shard = entry.Value.GetString()!;
                if (!IsPlainFileName(shard))
                    throw new ModelLoadException($"{indexPath}: weight_map entry '{entry.Name}' names '{shard}', which is not a file name inside the model folder");
                shards.Add(shard);
            }
            if (shards.Count == 0) throw new ModelLoadException($"{indexPath}: 'weight_map' is empty (it must name the shard of every tensor)");
            foreach (var s in shards)
                if (!File.Exists(Path.Combine(folder, s))) throw new ModelLoadException($"{Path.Combine(folder, s)}: shard named in {indexPath} not found");
            return shards.Select(s => Path.Combine(folder, s)).ToList();
        }
    }

    /// <summary>A name with no folder part on any platform, not "." or "..", and no characters a file name cannot hold.</summary>
    public static bool IsPlainFileName(string name) =>
        name.Length > 0 && name != "." && name != ".." && name.IndexOfAny(['/', '\\', ':', '\0']) < 0 && !Path.IsPathRooted(name);
}
