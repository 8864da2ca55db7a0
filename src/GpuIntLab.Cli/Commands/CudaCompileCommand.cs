using System.CommandLine;
using GpuIntLab.Backends.Cuda;
using GpuIntLab.Backends.Cuda.Interop;

namespace GpuIntLab.Cli.Commands;

/// <summary>
/// <c>gpuintlab cuda-compile [--arch sm_80,sm_89,sm_90] [--nvrtc PATH]</c>: compiles every kernel file of
/// kernels/ through the project's NVRTC binding with the engines' exact options, no GPU needed, and prints
/// per file and architecture whether a CUBIN or PTX came out and, per kernel, registers, spills and shared
/// memory (ptxas's own report). Exit 0 when all compile, 2 on any compile error (or when NVRTC is missing).
/// </summary>
public static class CudaCompileCommand
{
    public static Command Create()
    {
        var arch = new Option<string>("--arch") { Description = "comma-separated real architectures", DefaultValueFactory = _ => "sm_80,sm_89,sm_90" };
        var nvrtcPath = new Option<string?>("--nvrtc") { Description = "path of libnvrtc.so.* (default: GPUINTLAB_NVRTC, then the usual CUDA and pip locations)" };
        var command = new Command("cuda-compile", "Compile every kernel of kernels/ with NVRTC (no GPU needed) and report registers, spills and shared memory.") { arch, nvrtcPath };
        command.SetAction(parse =>
        {
            IReadOnlyList<string> archs;
            try { archs = KernelCompileReport.ParseArchs(parse.GetValue(arch)!); }
            catch (ArgumentException e) { throw new UserInputException(e.Message); }
            string? path = parse.GetValue(nvrtcPath);
            if (path is not null && !File.Exists(path)) throw new UserInputException($"--nvrtc: no such file: {path}");
            var nvrtc = Nvrtc.TryLoad(path is null ? Nvrtc.DefaultCandidates() : [Path.GetFullPath(path)], out string reason)
                ?? throw new UserInputException($"cannot compile the kernels: {reason} (scripts/fetch-nvrtc.sh fetches one, no GPU needed)");
            var (major, minor) = nvrtc.Version();
            Console.WriteLine($"NVRTC {major}.{minor} ({nvrtc.Source}); kernels: {KernelSources.Directory}");
            Console.WriteLine($"options: {string.Join(' ', KernelSources.Options("sm_XX"))}");
            var results = KernelCompileReport.Run(nvrtc, archs);
            int errors = 0;
            foreach (var r in results)
            {
                if (!r.Ok)
                {
                    errors++;
                    Console.WriteLine($"{r.File} {r.Arch}: ERROR {r.Error}");
                    continue;
                }
                Console.WriteLine($"{r.File} {r.Arch}: {r.Output!.Kind}, {r.Output.Image.Length} bytes, {r.Entries.Count} kernels");
                foreach (var e in r.Entries)
                {
                    string res = r.Resources.TryGetValue(e.Name, out var k)
                        ? $"{k.Registers,3} registers, spills {k.SpillStoreBytes} B stored / {k.SpillLoadBytes} B loaded, stack {k.StackBytes} B, static smem {k.StaticSharedBytes} B{(k.Spills ? "  <-- SPILLS" : "")}"
                        : "no ptxas report";
                    Console.WriteLine($"  {e.Name,-20} {e.ParamSizes.Count,2} params  {res}");
                }
            }
            int spills = results.Sum(r => r.Resources.Values.Count(k => k.Spills));
            Console.WriteLine($"{results.Count - errors}/{results.Count} compiled; {errors} errors; {spills} kernels with spills");
            return errors > 0 ? 2 : 0;
        });
        return command;
    }
}
