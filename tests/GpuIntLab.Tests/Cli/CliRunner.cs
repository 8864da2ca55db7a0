using System.Diagnostics;

namespace GpuIntLab.Tests.Cli;

/// <summary>Runs the built <c>gpuintlab</c> as a separate process (its exit code and streams are what users see).</summary>
public static class CliRunner
{
    public static (int ExitCode, string Stdout, string Stderr) Run(params string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "gpuintlab.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(300_000)) { p.Kill(true); throw new TimeoutException("gpuintlab did not finish in 300 s"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
