using GpuIntLab.Backends.Cuda.Interop;
using GpuIntLab.Core.Inference;

namespace GpuIntLab.Backends.Cuda;

/// <summary>
/// The attention kernels (attention_f32, attention_q48) keep one score per context position in dynamic shared
/// memory, so a block's shared memory caps the context: positions x bytes per score + the kernel's static
/// shared memory must fit the device's opt-in maximum per block (232,448 B on H100/H200: 58,080 float32
/// positions, 28,544 Q16.48 positions). The plan is the smaller of the model's context and that cap; the engines
/// always set the kernel's dynamic-shared-memory attribute to it (so no size between 48 KB - static and 48 KB is
/// launched without the opt-in), launch with one score per position the KV cache holds now (capped by the plan;
/// the cache grows by doubling, so a short context does not reserve a 131072-position model's maximum), and
/// refuse a longer context with a clear error before the step's first launch.
/// </summary>
public sealed record AttentionSharedMemory(int Positions, int DynamicBytes, int StaticBytes, int DeviceLimitBytes)
{
    /// <summary>
    /// Plans the shared memory for <paramref name="modelPositions"/> positions of <paramref name="bytesPerScore"/>
    /// bytes each, given the kernel's static shared memory and the device's opt-in maximum per block.
    /// </summary>
    public static AttentionSharedMemory Plan(int modelPositions, int bytesPerScore, int staticBytes, int deviceLimitBytes)
    {
        long fit = Math.Max(0, (long)deviceLimitBytes - staticBytes) / bytesPerScore;
        int positions = (int)Math.Min(modelPositions, fit);
        return new AttentionSharedMemory(positions, positions * bytesPerScore, staticBytes, deviceLimitBytes);
    }

    /// <summary>Plans for <paramref name="kernel"/> of <paramref name="module"/> and sets its dynamic shared memory attribute.</summary>
    public static AttentionSharedMemory Apply(CudaModule module, string kernel, int modelPositions, int bytesPerScore, int deviceLimitBytes)
    {
        // Static shared memory per ptxas; a PTX image has no ptxas report, then the largest static buffer
        // of the attention kernels (attention_q48's i128 scratch[256]) stands in.
        int staticBytes = module.StaticSharedBytes(kernel) ?? 4096;
        var plan = Plan(modelPositions, bytesPerScore, staticBytes, deviceLimitBytes);
        if (plan.Positions == 0)
            throw new CudaUnavailableException($"unavailable: {module.File}:{kernel} needs {staticBytes + bytesPerScore} B of shared memory per block, the device allows {deviceLimitBytes} B");
        module.Device.Driver.FuncSetAttribute(module.Function(kernel), CudaDriver.FuncAttrMaxDynamicSharedSizeBytes, plan.DynamicBytes);
        return plan;
    }

    /// <summary>Refuses a step that would take the context past <see cref="Positions"/> (before any launch).</summary>
    public void Check(string engine, int position, int tokens, int modelPositions)
    {
        if (position + tokens > Positions)
            throw new TokenInputException($"{engine}: {position + tokens} tokens exceed this GPU's attention limit of {Positions} positions " +
                $"(the attention kernel keeps every score in shared memory: {Positions} x {DynamicBytes / Math.Max(1, Positions)} B + {StaticBytes} B static <= {DeviceLimitBytes} B per block; the model allows {modelPositions})");
    }
}
