namespace GpuIntLab.Experiments;

/// <summary>
/// Names that become file names (an experiment's name, a run id) come from spec files and from results lines
/// merged from other machines, so they are untrusted: one allowed character set, checked before any path is
/// built from them, so no name can leave its folder ("../x", "a/b") or hide as a dot file.
/// </summary>
public static class SafeNames
{
    public const int MaxLength = 100;
    public const string AllowedDescription = "1-100 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit";

    public static bool IsSafe(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > MaxLength || !char.IsAsciiLetterOrDigit(name[0])) return false;
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-')) return false;
        return true;
    }

    /// <summary>Why <paramref name="name"/> cannot be used as a file name, or null when it can.</summary>
    public static string? Problem(string? name) =>
        IsSafe(name) ? null : $"'{name}' is not a safe name for a file ({AllowedDescription})";
}
