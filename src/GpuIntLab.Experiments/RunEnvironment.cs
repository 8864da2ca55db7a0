using System.Diagnostics;
using System.Runtime.InteropServices;

namespace GpuIntLab.Experiments;

/// <summary>Reads the facts recorded beside every number: CPU, cores, OS, .NET, commit, date.</summary>
public static class RunEnvironment
{
    public static EnvironmentInfo Capture(string repositoryHint) => new()
    {
        Cpu = CpuModel(),
        Cores = Environment.ProcessorCount,
        Os = RuntimeInformation.OSDescription,
        DotNet = RuntimeInformation.FrameworkDescription,
        Commit = GitCommit(repositoryHint),
        DateUtc = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm:ss'Z'"),
        Machine = $"{RuntimeInformation.OSArchitecture}, {Environment.ProcessorCount} cores",
    };

    public static string CpuModel()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                foreach (var line in File.ReadLines("/proc/cpuinfo"))
                    if (line.StartsWith("model name", StringComparison.Ordinal)) return line[(line.IndexOf(':') + 1)..].Trim();
        }
        catch (IOException) { }
        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    /// <summary>The commit of the repository holding <paramref name="path"/>, with "+dirty" when it has uncommitted changes.</summary>
    public static string GitCommit(string path)
    {
        string dir = Directory.Exists(path) ? path : Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
        string? Git(string args)
        {
            try
            {
                var psi = new ProcessStartInfo("git", args) { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
                using var p = Process.Start(psi);
                if (p == null) return null;
                string output = p.StandardOutput.ReadToEnd().Trim();
                p.WaitForExit(5000);
                return p.ExitCode == 0 ? output : null;
            }
            catch (System.ComponentModel.Win32Exception) { return null; }
        }
        string? commit = Git("rev-parse --short=12 HEAD");
        if (commit == null) return "unknown";
        string? status = Git("status --porcelain --untracked-files=no");
        return string.IsNullOrEmpty(status) ? commit : commit + "+dirty";
    }
}
