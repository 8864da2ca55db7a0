using System.Collections;
using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization;
using GpuIntLab.Core.Inference;
using GpuIntLab.Core.Models;

namespace GpuIntLab.Experiments;

/// <summary>
/// Spec checks that need no model: keys nobody reads (a typo such as "new_token" would otherwise run the default
/// silently), names that become file names, and values no run can use. All of them fail the whole run before any
/// work, with exit code 2, rather than as per-cell error records.
/// </summary>
public static class SpecChecks
{
    public const double MaxSmoothQuantAlpha = 1.0;

    /// <summary>
    /// Every object key in the spec must be a property of the class it is read into: the known keys come from the
    /// classes' [JsonPropertyName] attributes, so a field added to the spec classes is known here without a list.
    /// </summary>
    public static void CheckKeys(string path, string json)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new ExperimentSpecException($"{path}: not a valid experiment spec ({e.Message})"); }
        using (doc)
        {
            if (JsonStrings.FirstUndecodable(doc.RootElement) is string undecodable)
                throw new ExperimentSpecException($"{path}: {undecodable} is not valid Unicode text (a lone surrogate escape)");
            CheckObject(path, doc.RootElement, typeof(ExperimentSpec), "");
        }
    }

    private static void CheckObject(string path, JsonElement element, Type type, string where)
    {
        if (element.ValueKind != JsonValueKind.Object) return; // a wrong kind is the deserializer's error, with its position
        var known = type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Select(p => (Property: p, Name: p.GetCustomAttribute<JsonPropertyNameAttribute>()?.Name))
            .Where(p => p.Name != null && p.Property.GetCustomAttribute<JsonIgnoreAttribute>() == null)
            .ToDictionary(p => p.Name!, p => p.Property.PropertyType, StringComparer.Ordinal);
        foreach (var prop in element.EnumerateObject())
        {
            string at = where.Length == 0 ? prop.Name : $"{where}.{prop.Name}";
            if (!known.TryGetValue(prop.Name, out var propertyType))
                throw new ExperimentSpecException($"{path}: unknown key '{at}' (known keys{(where.Length == 0 ? "" : " here")}: {string.Join(", ", known.Keys.Order(StringComparer.Ordinal))})");
            var itemType = ElementType(propertyType);
            if (itemType != null && prop.Value.ValueKind == JsonValueKind.Array)
            {
                int i = 0;
                foreach (var item in prop.Value.EnumerateArray()) CheckObject(path, item, itemType, $"{at}[{i++}]");
            }
            else if (IsSpecClass(propertyType)) CheckObject(path, prop.Value, propertyType, at);
        }
    }

    private static bool IsSpecClass(Type t) => t.IsClass && t != typeof(string) && t.Namespace == typeof(ExperimentSpec).Namespace;

    private static Type? ElementType(Type t)
    {
        if (t == typeof(string) || !typeof(IEnumerable).IsAssignableFrom(t)) return null;
        var item = t.IsArray ? t.GetElementType() : t.GetGenericArguments().FirstOrDefault();
        return item != null && IsSpecClass(item) ? item : null;
    }

    /// <summary>Value checks beyond the basic ones in <see cref="ExperimentSpec.Validate"/>.</summary>
    public static void CheckValues(ExperimentSpec spec)
    {
        string where = spec.SourcePath;
        if (SafeNames.Problem(spec.Name) is string bad) throw new ExperimentSpecException($"{where}: 'name' {bad}; it names the results files");
        foreach (var p in spec.Prompts)
        {
            if (p.Ids is { Length: 0 }) throw new ExperimentSpecException($"{where}: prompt '{p.Name}' has empty 'ids' (give at least one token id)");
            if (p.Text is { Length: 0 }) throw new ExperimentSpecException($"{where}: prompt '{p.Name}' has an empty 'text'");
            if (p.Ids?.FirstOrDefault(id => id < 0) is int negative && negative < 0)
                throw new ExperimentSpecException($"{where}: prompt '{p.Name}' has token id {negative}; ids are 0 or more");
        }
        if (!double.IsFinite(spec.SmoothQuantAlpha) || spec.SmoothQuantAlpha < 0 || spec.SmoothQuantAlpha > MaxSmoothQuantAlpha)
            throw new ExperimentSpecException($"{where}: smoothquant_alpha must be in [0, {MaxSmoothQuantAlpha}], got {spec.SmoothQuantAlpha}");
        for (int i = 0; i < spec.CalibrationPrompts.Count; i++)
            if (string.IsNullOrWhiteSpace(spec.CalibrationPrompts[i]))
                throw new ExperimentSpecException($"{where}: calibration prompt {i} is empty");
        if (spec.Threads < 0) throw new ExperimentSpecException($"{where}: threads must be 0 (all cores) or more, got {spec.Threads}");
        foreach (var b in spec.Backends)
            if (b.Schemes is { Length: 0 }) throw new ExperimentSpecException($"{where}: backend '{b.Name}' has an empty 'schemes' list (omit it to run all its schemes)");
    }

    /// <summary>
    /// Checks needing the model: prompt plus new tokens within the context (in 64-bit arithmetic, so a
    /// new_tokens near int.MaxValue cannot wrap round), token ids in the vocabulary, calibration prompts that fit.
    /// </summary>
    public static void CheckAgainstModel(ExperimentSpec spec, LlamaConfig config, IReadOnlyList<(PromptSpec Spec, int[] Ids)> prompts, IReadOnlyList<int[]> calibration)
    {
        string where = spec.SourcePath;
        foreach (var (p, ids) in prompts)
        {
            try { EngineGuards.CheckTokens(config, ids, 0); }
            catch (TokenInputException e) { throw new ExperimentSpecException($"{where}: prompt '{p.Name}': {e.Message}"); }
            if ((long)ids.Length + spec.NewTokens > config.MaxPositionEmbeddings)
                throw new ExperimentSpecException($"{where}: prompt '{p.Name}' ({ids.Length} tokens) + {spec.NewTokens} new tokens exceeds the model's context of {config.MaxPositionEmbeddings}");
        }
        for (int i = 0; i < calibration.Count; i++)
        {
            try { EngineGuards.CheckTokens(config, calibration[i], 0); }
            catch (TokenInputException e) { throw new ExperimentSpecException($"{where}: calibration prompt {i}: {e.Message}"); }
        }
    }
}
