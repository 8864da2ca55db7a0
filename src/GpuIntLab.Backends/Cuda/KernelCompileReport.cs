using GpuIntLab.Backends.Cuda.Interop;

namespace GpuIntLab.Backends.Cuda;

/// <summary>One kernel file compiled for one architecture: the image kind, every kernel's resources, or the compile error.</summary>
public sealed record KernelFileCompile(string File, string Arch, NvrtcOutput? Output, string? Error,
    IReadOnlyList<KernelEntry> Entries, IReadOnlyDictionary<string, KernelResources> Resources)
{
    public bool Ok => Error is null;
}

/// <summary>
/// Compiles every kernel file of kernels/ for each given architecture through the project's own NVRTC
/// binding, with exactly the options the engines use (<see cref="KernelSources.Options(string)"/>). No GPU
/// and no driver are needed: this is how `gpuintlab cuda-compile` and the test suite check the kernels.
/// </summary>
public static class KernelCompileReport
{
    public static IReadOnlyList<KernelFileCompile> Run(Nvrtc nvrtc, IReadOnlyList<string> archs, IReadOnlyList<string>? files = null)
    {
        files ??= KernelSources.Files();
        var jobs = files.SelectMany(f => archs.Select(a => (File: f, Arch: a))).ToList();
        var results = new KernelFileCompile[jobs.Count];
        // Separate NVRTC programs compile independently (NVRTC is thread-safe per program).
        Parallel.For(0, jobs.Count, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, i =>
        {
            var (file, arch) = jobs[i];
            try
            {
                var output = KernelSources.CompileFor(nvrtc, file, arch);
                results[i] = new KernelFileCompile(file, arch, output, null, KernelImageInfo.Entries(output.Ptx), KernelImageInfo.Resources(output.Log));
            }
            catch (CudaException e)
            {
                results[i] = new KernelFileCompile(file, arch, null, e.Message, [], new Dictionary<string, KernelResources>());
            }
        });
        return results;
    }

    /// <summary>Parses "sm_80,sm_89,90" into architecture names; anything else is refused naming the entry.</summary>
    public static IReadOnlyList<string> ParseArchs(string list)
    {
        var archs = new List<string>();
        foreach (var raw in list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string digits = raw.StartsWith("sm_", StringComparison.Ordinal) ? raw[3..] : raw;
            if (digits.Length is < 2 or > 3 || !digits.All(char.IsAsciiDigit) || int.Parse(digits) < 50)
                throw new ArgumentException($"--arch: '{raw}' is not a real GPU architecture such as sm_80, sm_89 or sm_90");
            archs.Add("sm_" + digits);
        }
        if (archs.Count == 0) throw new ArgumentException("--arch: no architecture given (e.g. sm_80,sm_89,sm_90)");
        return archs;
    }
}
