using System.Text.Json;

namespace GpuIntLab.Core.Models;

/// <summary>
/// JSON may escape half of a UTF-16 surrogate pair ("\ud800"), which parses but throws InvalidOperationException
/// (not JsonException) when the string or key is read. Readers of untrusted JSON check the whole document once,
/// right after parsing, so such text is reported like any other malformed field.
/// </summary>
public static class JsonStrings
{
    /// <summary>The JSON path of the first key or string value that is not valid Unicode, or null when all are.</summary>
    public static string? FirstUndecodable(JsonElement element, string path = "$")
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                try { element.GetString(); return null; }
                catch (InvalidOperationException) { return path; }
            case JsonValueKind.Array:
                int i = 0;
                foreach (var item in element.EnumerateArray())
                    if (FirstUndecodable(item, $"{path}[{i++}]") is string bad) return bad;
                return null;
            case JsonValueKind.Object:
                int index = 0;
                foreach (var prop in element.EnumerateObject())
                {
                    string name;
                    try { name = prop.Name; }
                    catch (InvalidOperationException) { return $"{path}: key number {index + 1}"; }
                    if (FirstUndecodable(prop.Value, $"{path}.{name}") is string bad) return bad;
                    index++;
                }
                return null;
            default:
                return null;
        }
    }
}
