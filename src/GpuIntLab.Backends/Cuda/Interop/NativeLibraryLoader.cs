using System.Runtime.InteropServices;

namespace GpuIntLab.Backends.Cuda.Interop;

/// <summary>
/// Finds exported symbols of a native library. The production resolver wraps <see cref="NativeLibrary"/>;
/// tests pass a table of their own function pointers, which is how "cuInit fails" is checked without a GPU.
/// </summary>
public interface ISymbolResolver
{
    /// <summary>Describes where the symbols come from (library path or "stub").</summary>
    string Source { get; }
    /// <summary>The symbol's address, or <see cref="IntPtr.Zero"/> when it is missing.</summary>
    IntPtr Find(string symbol);
}

/// <summary>A loaded native library (never unloaded: the driver does not support being unloaded while contexts live).</summary>
public sealed class NativeLibraryResolver : ISymbolResolver
{
    private readonly IntPtr _handle;
    public string Source { get; }
    private NativeLibraryResolver(IntPtr handle, string source) { _handle = handle; Source = source; }
    public IntPtr Find(string symbol) => NativeLibrary.TryGetExport(_handle, symbol, out var p) ? p : IntPtr.Zero;

    /// <summary>Tries each candidate (a file name searched by the OS loader, or a full path) in order.</summary>
    public static NativeLibraryResolver? TryLoad(IEnumerable<string> candidates, out string tried)
    {
        var names = new List<string>();
        foreach (var c in candidates)
        {
            names.Add(c);
            if (NativeLibrary.TryLoad(c, out var h)) { tried = string.Join(", ", names); return new NativeLibraryResolver(h, c); }
        }
        tried = string.Join(", ", names);
        return null;
    }
}
