using System.Runtime.InteropServices;

namespace GpuIntLab.Oracle;

/// <summary>
/// Asks Linux to back a large buffer with 2 MiB pages (transparent huge pages in "madvise" mode). The oracle streams
/// its weights once per token; with 4 KiB pages the hardware prefetcher restarts at every page boundary and every
/// page costs a TLB walk. A hint only: where it is refused or not Linux, nothing changes but speed.
/// </summary>
internal static unsafe partial class HugePages
{
    private const int MadviseHugePage = 14; // MADV_HUGEPAGE
    private const long HugePageBytes = 2L << 20;

    public static void Advise(void* start, long bytes)
    {
        if (!OperatingSystem.IsLinux() || bytes < 2 * HugePageBytes) return;
        long first = ((long)start + HugePageBytes - 1) & ~(HugePageBytes - 1);
        long end = ((long)start + bytes) & ~(HugePageBytes - 1);
        if (end <= first) return;
        try { _ = Madvise((nint)first, (nuint)(end - first), MadviseHugePage); }
        catch (DllNotFoundException) { }
        catch (EntryPointNotFoundException) { }
    }

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}
