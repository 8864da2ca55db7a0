using System.Globalization;
using System.Text.RegularExpressions;

namespace GpuIntLab.Backends.Cuda;

/// <summary>A kernel's name and the byte size of each parameter, in order, as the PTX declares them.</summary>
public sealed record KernelEntry(string Name, IReadOnlyList<int> ParamSizes);

/// <summary>
/// ptxas's resource report for one kernel: registers per thread, spill stores/loads and stack frame
/// (bytes per thread), static shared memory (bytes per block).
/// </summary>
public sealed record KernelResources(string Name, int Registers, int SpillStoreBytes, int SpillLoadBytes, int StackBytes, int StaticSharedBytes)
{
    public bool Spills => SpillStoreBytes > 0 || SpillLoadBytes > 0;
}

/// <summary>
/// Reads what NVRTC returns about the compiled kernels without loading anything: the kernel entries and
/// their parameter sizes from the PTX (which NVRTC always returns, also when the image is a CUBIN), and the
/// per-kernel resources from ptxas's verbose log (the -Xptxas=-v option of <see cref="KernelSources.Options"/>).
/// </summary>
public static partial class KernelImageInfo
{
    [GeneratedRegex(@"\.entry\s+(\w+)\s*\(([^)]*)\)", RegexOptions.Singleline)]
    private static partial Regex EntryPattern();
    [GeneratedRegex(@"\.param\s+(?:\.align\s+\d+\s+)?\.([usbf])(8|16|32|64)\s+\w+(?:\[(\d+)\])?")]
    private static partial Regex ParamPattern();

    /// <summary>Every .entry of <paramref name="ptx"/>, with its parameters' sizes (an array parameter counts element size x length).</summary>
    public static IReadOnlyList<KernelEntry> Entries(string ptx)
    {
        var list = new List<KernelEntry>();
        foreach (Match m in EntryPattern().Matches(ptx))
        {
            var sizes = new List<int>();
            foreach (Match p in ParamPattern().Matches(m.Groups[2].Value))
            {
                int bytes = int.Parse(p.Groups[2].Value, CultureInfo.InvariantCulture) / 8;
                if (p.Groups[3].Success) bytes *= int.Parse(p.Groups[3].Value, CultureInfo.InvariantCulture);
                sizes.Add(bytes);
            }
            list.Add(new KernelEntry(m.Groups[1].Value, sizes));
        }
        return list;
    }

    [GeneratedRegex(@"(?:Compiling entry function|Function properties for) '?(\w+)'?")]
    private static partial Regex FunctionPattern();
    [GeneratedRegex(@"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")]
    private static partial Regex SpillPattern();
    [GeneratedRegex(@"Used (\d+) registers")]
    private static partial Regex RegisterPattern();
    [GeneratedRegex(@"(\d+) bytes smem")]
    private static partial Regex SharedPattern();

    /// <summary>
    /// Per-kernel resources from a ptxas -v log (NVRTC's program log). Kernels absent from the log (a PTX
    /// compile, where ptxas does not run) are absent from the result.
    /// </summary>
    public static IReadOnlyDictionary<string, KernelResources> Resources(string log)
    {
        var result = new Dictionary<string, KernelResources>();
        string? current = null;
        foreach (var line in log.Split('\n'))
        {
            var f = FunctionPattern().Match(line);
            if (f.Success) { current = f.Groups[1].Value; continue; }
            if (current is null) continue;
            var r = result.TryGetValue(current, out var existing) ? existing : new KernelResources(current, 0, 0, 0, 0, 0);
            var s = SpillPattern().Match(line);
            if (s.Success)
                r = r with { StackBytes = Int(s.Groups[1]), SpillStoreBytes = Int(s.Groups[2]), SpillLoadBytes = Int(s.Groups[3]) };
            var g = RegisterPattern().Match(line);
            if (g.Success)
            {
                r = r with { Registers = Int(g.Groups[1]) };
                var sh = SharedPattern().Match(line);
                if (sh.Success) r = r with { StaticSharedBytes = Int(sh.Groups[1]) };
            }
            if (s.Success || g.Success) result[current] = r;
        }
        return result;
    }

    private static int Int(Group g) => int.Parse(g.Value, CultureInfo.InvariantCulture);
}
