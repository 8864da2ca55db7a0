using System.Text.RegularExpressions;
using GpuIntLab.Backends.Cuda;
using GpuIntLab.Backends.Cuda.Interop;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Cuda;

/// <summary>
/// Every kernel file of kernels/ compiled by a real NVRTC (no GPU needed) through the project's own binding,
/// with the engines' exact options, for sm_80, sm_89 and sm_90: the check that would have caught
/// "--gpu-arch" (not an NVRTC option), the missing --device-int128 and the silent PTX fallback before a GPU
/// run was spent on them. Skips, with the reason, when NVRTC cannot be fetched.
/// </summary>
public class NvrtcCompileTests(ITestOutputHelper output)
{
    private static readonly string[] Archs = ["sm_80", "sm_89", "sm_90"];
    private static readonly Lazy<IReadOnlyList<KernelFileCompile>> s_results = new(() => KernelCompileReport.Run(CudaToolsForTests.Nvrtc(), Archs));

    /// <summary>
    /// The one spill ptxas reports: attention_q48 for sm_80 only (a 128-bit division's call frame; 8 B stack,
    /// 16 B stored / 24 B loaded per thread, once per context position). sm_89 and sm_90 must have none.
    /// Any other spill, or a larger one, fails.
    /// </summary>
    private static bool KnownSpill(string arch, KernelResources k) =>
        arch == "sm_80" && k.Name == "attention_q48" && k.SpillStoreBytes <= 16 && k.SpillLoadBytes <= 24;

    [SkippableFact]
    public void EveryKernelFile_CompilesToCubin_ForEachArchitecture_WithoutSpills()
    {
        var nvrtc = CudaToolsForTests.Nvrtc();
        var (major, minor) = nvrtc.Version();
        output.WriteLine($"NVRTC {major}.{minor} ({nvrtc.Source})");
        var results = s_results.Value;
        Assert.Equal(KernelSources.Files().Count * Archs.Length, results.Count);
        Assert.Contains(results, r => r.File == "int64.cu"); // the file that needs --device-int128
        foreach (var r in results)
        {
            Assert.True(r.Ok, $"{r.File} {r.Arch}: {r.Error}");
            Assert.True(r.Output!.IsCubin, $"{r.File} {r.Arch}: {r.Output.Kind}");
            Assert.Equal(r.Arch, r.Output.Arch);
            Assert.Equal("\u007fELF"u8.ToArray(), r.Output.Image[..4]); // a CUBIN is an ELF file
            foreach (var e in r.Entries)
            {
                Assert.True(r.Resources.TryGetValue(e.Name, out var k), $"{r.File} {r.Arch}: no ptxas report for {e.Name}");
                output.WriteLine($"{r.File} {r.Arch} {e.Name}: {k!.Registers} registers, spills {k.SpillStoreBytes}/{k.SpillLoadBytes} B, static smem {k.StaticSharedBytes} B");
                Assert.True(!k.Spills || KnownSpill(r.Arch, k), $"{r.File} {r.Arch} {e.Name} spills {k.SpillStoreBytes} B stored / {k.SpillLoadBytes} B loaded");
            }
        }
    }

    [SkippableFact]
    public void TheCompiledKernels_AreExactlyTheExternCGlobalFunctionsOfTheSources()
    {
        foreach (var r in s_results.Value.Where(r => r.Ok))
        {
            // Independent of NVRTC: the kernel names declared in the file and the headers it includes.
            var text = File.ReadAllText(Path.Combine(KernelSources.Directory, r.File));
            foreach (Match inc in Regex.Matches(text, "#include \"([^\"]+)\""))
                text += File.ReadAllText(Path.Combine(KernelSources.Directory, inc.Groups[1].Value));
            var declared = Regex.Matches(text, @"extern ""C"" __global__ void (?:__launch_bounds__\([^)]*\) )?(\w+)\(").Select(m => m.Groups[1].Value).Order().ToList();
            Assert.Equal(declared, r.Entries.Select(e => e.Name).Order().ToList());
        }
    }

    [SkippableFact]
    public void TheCompileCommand_PrintsEveryFileAndArchitecture_AndExitsZero()
    {
        string nvrtc = CudaToolsForTests.NvrtcPath();
        var writer = new StringWriter();
        var previous = Console.Out;
        Console.SetOut(writer);
        int code;
        try { code = GpuIntLab.Cli.Program.Main(["cuda-compile", "--arch", "sm_90", "--nvrtc", nvrtc]); }
        finally { Console.SetOut(previous); }
        string text = writer.ToString();
        Assert.Equal(0, code);
        foreach (var f in KernelSources.Files()) Assert.Contains($"{f} sm_90: CUBIN sm_90", text);
        Assert.Matches(@"attention_q48\s+11 params\s+\d+ registers", text);
    }

    [Fact]
    public void TheCompileCommand_RefusesABadArchitecture_WithExitTwo()
    {
        var err = new StringWriter();
        var previous = Console.Error;
        Console.SetError(err);
        int code;
        try { code = GpuIntLab.Cli.Program.Main(["cuda-compile", "--arch", "sm_90,hopper"]); }
        finally { Console.SetError(previous); }
        Assert.Equal(2, code);
        Assert.Contains("--arch: 'hopper' is not a real GPU architecture", err.ToString());
    }

    [Fact]
    public void Options_NameTheRealArchitecture_AndTheFlagsNvrtcNeeds()
    {
        var o = KernelSources.Options(90);
        Assert.Contains("-arch=sm_90", o);           // NVRTC's spelling; "--gpu-arch" is rejected
        Assert.Contains("--device-int128", o);       // int64.cu's unsigned __int128
        Assert.Equal("sm_90", Nvrtc.TargetArch(o));
        Assert.Equal("sm_89", Nvrtc.TargetArch(["--gpu-architecture=sm_89"]));
        Assert.Equal("compute_52", Nvrtc.TargetArch(["--std=c++17"])); // NVRTC's default: a virtual arch, PTX
    }

    [Fact]
    public void PtxasLog_IsReadPerKernel()
    {
        // Lines as NVRTC 12.4 returns them with -Xptxas=-v (from an int64.cu sm_80 compile).
        const string log = """
            ptxas info    : 0 bytes gmem
            ptxas info    : Compiling entry function 'attention_q48' for 'sm_80'
            ptxas info    : Function properties for attention_q48
            ptxas         .     8 bytes stack frame, 16 bytes spill stores, 24 bytes spill loads
            ptxas info    : Used 48 registers, 8 bytes cumulative stack size, 4096 bytes smem, 432 bytes cmem[0], 8 bytes cmem[2]
            ptxas info    : Compiling entry function 'add_q48' for 'sm_80'
            ptxas info    : Function properties for add_q48
            ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Used 14 registers, 380 bytes cmem[0]
            """;
        var r = KernelImageInfo.Resources(log);
        Assert.Equal(new KernelResources("attention_q48", 48, 16, 24, 8, 4096), r["attention_q48"]);
        Assert.Equal(new KernelResources("add_q48", 14, 0, 0, 0, 0), r["add_q48"]);
    }

    [Fact]
    public void PtxEntries_GiveEachParametersSize()
    {
        const string ptx = """
            .visible .entry gemv_int8(
            	.param .u64 gemv_int8_param_0,
            	.param .u32 gemv_int8_param_1,
            	.param .f32 gemv_int8_param_2,
            	.param .align 8 .b8 gemv_int8_param_3[24]
            )
            {
            }
            .visible .entry advance_pos(
            	.param .u64 advance_pos_param_0,
            	.param .u32 advance_pos_param_1
            )
            """;
        var e = KernelImageInfo.Entries(ptx);
        Assert.Equal(["gemv_int8", "advance_pos"], e.Select(x => x.Name));
        Assert.Equal([8, 4, 4, 24], e[0].ParamSizes);
        Assert.Equal([8, 4], e[1].ParamSizes);
    }

    [Fact]
    public void AttentionSharedMemory_CapsTheContextAtTheDevicesOptInLimit()
    {
        // H100/H200: 232,448 B per block after opting in. float32 scores + 128 B static: (232448 - 128) / 4 = 58,080;
        // Q16.48 scores + 4,096 B static (i128 scratch[256]): (232448 - 4096) / 8 = 28,544.
        Assert.Equal(58_080, AttentionSharedMemory.Plan(131_072, 4, 128, 232_448).Positions);
        Assert.Equal(28_544, AttentionSharedMemory.Plan(131_072, 8, 4096, 232_448).Positions);
        var small = AttentionSharedMemory.Plan(2048, 4, 128, 232_448);
        Assert.Equal((2048, 8192), (small.Positions, small.DynamicBytes));
        var plan = AttentionSharedMemory.Plan(131_072, 8, 4096, 232_448);
        plan.Check("cuda-int64", 28_000, 544, 131_072); // exactly full: allowed
        var e = Assert.Throws<GpuIntLab.Core.Inference.TokenInputException>(() => plan.Check("cuda-int64", 28_544, 1, 131_072));
        Assert.Contains("28545 tokens exceed this GPU's attention limit of 28544 positions", e.Message);
    }
}
