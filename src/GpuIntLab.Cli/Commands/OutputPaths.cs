using System.Runtime.InteropServices;

namespace GpuIntLab.Cli.Commands;

/// <summary>
/// Checks on the paths a command will write, made before any work starts: an output of the wrong kind (a file where
/// a folder goes, or the reverse), a missing or unwritable parent folder, or an output that is one of the command's
/// own input files fails at once with one line, instead of after minutes of work or by destroying the input.
/// </summary>
public static partial class OutputPaths
{
    /// <summary>A file the command will create or replace.</summary>
    public static void CheckFile(string path, string option, IEnumerable<string>? inputs = null)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new UserInputException($"{option}: no path given");
        if (Directory.Exists(path)) throw new UserInputException($"{option} {path}: is a folder, but a file is written there");
        string parent = Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (!Directory.Exists(parent)) throw new UserInputException($"{option} {path}: folder {parent} does not exist");
        string real = RealPath(path);
        foreach (var input in inputs ?? [])
            if (File.Exists(input) && RealPath(input) == real)
                throw new UserInputException($"{option} {path}: is the input file {input}; refusing to write over an input");
        Probe(parent, option, path);
        if (File.Exists(path))
        {
            try { using var _ = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new UserInputException($"{option} {path}: cannot be written ({e.Message})"); }
        }
    }

    /// <summary>A folder the command will create (if needed) and write files into.</summary>
    public static void CheckFolder(string path, string option)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new UserInputException($"{option}: no path given");
        if (File.Exists(path)) throw new UserInputException($"{option} {path}: is a file, but a folder is written there");
        try { Directory.CreateDirectory(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new UserInputException($"{option} {path}: cannot create the folder ({e.Message})"); }
        Probe(path, option, path);
    }

    /// <summary>Free bytes on the file system that holds <paramref name="path"/> (or its nearest existing ancestor).</summary>
    public static long FreeBytes(string path)
    {
        string? existing = Path.GetFullPath(path);
        while (existing != null && !Directory.Exists(existing)) existing = Path.GetDirectoryName(existing);
        return new DriveInfo(existing ?? Path.GetPathRoot(Path.GetFullPath(path))!).AvailableFreeSpace;
    }

    /// <summary>Every file a model path is read from: the .q48 itself, or every file in the model folder.</summary>
    public static IEnumerable<string> ModelInputs(string model) =>
        File.Exists(model) ? [model] : Directory.Exists(model) ? Directory.GetFiles(model) : [];

    private static void Probe(string folder, string option, string path)
    {
        string probe = Path.Combine(folder, $".gpuintlab-write-probe-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            using var f = new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose);
            f.WriteByte(0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserInputException($"{option} {path}: cannot write in {folder} ({e.Message})");
        }
    }

    /// <summary>
    /// The path with every symbolic link resolved (the parent through realpath(3), then the file itself), so an
    /// output reached through a link still matches the input it points at. Hard links are not detected.
    /// </summary>
    private static string RealPath(string path)
    {
        string full = Path.GetFullPath(path);
        if (File.Exists(full) && new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true) is { } target) full = target.FullName;
        if (OperatingSystem.IsWindows()) return full;
        string parent = Path.GetDirectoryName(full)!;
        IntPtr resolved = RealPathNative(parent, IntPtr.Zero);
        if (resolved == IntPtr.Zero) return full;
        try { return Path.Combine(Marshal.PtrToStringUTF8(resolved)!, Path.GetFileName(full)); }
        finally { Free(resolved); }
    }

    [LibraryImport("libc", EntryPoint = "realpath", StringMarshalling = StringMarshalling.Utf8)]
    private static partial IntPtr RealPathNative(string path, IntPtr resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(IntPtr pointer);
}
