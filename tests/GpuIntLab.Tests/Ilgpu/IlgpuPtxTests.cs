using System.Reflection;
using GpuIntLab.Backends.Ilgpu;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Xunit;
using Xunit.Abstractions;

namespace GpuIntLab.Tests.Ilgpu;

/// <summary>
/// Every kernel compiled offline by ILGPU's PTX backend for sm_80 (no GPU or driver needed): the CUDA paths
/// compile, the guarded inline PTX lands in the output (mma.sync s8, dp4a), and the Q16.48 kernels use no
/// 128-bit helper ILGPU cannot lower. (ptxas and the JIT still run only on a real device.)
/// </summary>
public class IlgpuPtxTests(ITestOutputHelper output)
{
    public static TheoryData<string> Kernels()
    {
        var data = new TheoryData<string>();
        foreach (var t in new[] { typeof(FloatKernels), typeof(Fp16Kernels), typeof(Int8Kernels), typeof(Fp8Kernels), typeof(Int64Kernels) })
            foreach (var m in t.GetMethods(BindingFlags.Public | BindingFlags.Static))
                if (m.GetParameters() is { Length: > 0 } p && p[0].ParameterType == typeof(Index1D))
                    data.Add($"{t.Name}.{m.Name}");
        return data;
    }

    private static string CompilePtx(string kernel)
    {
        var parts = kernel.Split('.');
        var type = typeof(FloatKernels).Assembly.GetType($"GpuIntLab.Backends.Ilgpu.{parts[0]}")!;
        var method = type.GetMethod(parts[1], BindingFlags.Public | BindingFlags.Static)!;
        using var context = Context.Create(b => b.Default().EnableAlgorithms());
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_80), CudaArchitecture.SM_80, CudaInstructionSet.ISA_71, null);
        var entry = EntryPointDescription.FromImplicitlyGroupedKernel(method);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, default);
        return compiled.PTXAssembly;
    }

    [Theory]
    [MemberData(nameof(Kernels))]
    public void KernelCompilesToPtxForSm80(string kernel)
    {
        string ptx = CompilePtx(kernel);
        Assert.Contains(".target sm_80", ptx);
        if (kernel == "Int8Kernels.MatVecMma") Assert.Contains("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32", ptx);
        if (kernel == "Int8Kernels.MatVec") Assert.Contains("dp4a.s32.s32", ptx);
        output.WriteLine($"{kernel}: {ptx.Length} chars of PTX");
        if (kernel == "Int8Kernels.MatVecMma")
            foreach (var line in ptx.Split('\n').Where(l => l.Contains("mma.sync", StringComparison.Ordinal))) output.WriteLine(line.Trim());
    }

    [Fact]
    public void FloatArithmeticInstructionsInPtx()
    {
        foreach (var k in new[] { "FloatKernels.RmsInverse", "Fp16Kernels.MatVec", "FloatKernels.Scores" })
        {
            var ops = CompilePtx(k).Split('\n').Select(l => l.Trim().Split(' ', '\t')[0]).Where(o => o.EndsWith(".f32", StringComparison.Ordinal)).Distinct();
            output.WriteLine($"{k}: {string.Join(", ", ops)}");
        }
    }
}
