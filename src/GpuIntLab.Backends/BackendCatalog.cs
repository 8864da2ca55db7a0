using GpuIntLab.Backends.Ilgpu;
using GpuIntLab.Core.Inference;

namespace GpuIntLab.Backends;

/// <summary>
/// Every backend the lab knows. The runner and the CLI see backends only through this list, so a new
/// backend is one line here and no change elsewhere.
/// </summary>
public static class BackendCatalog
{
    public static IReadOnlyList<IEngineProvider> All { get; } =
    [
        new OracleProvider(),
        new ReferenceProvider(),
        new IlgpuFp16Provider(),
        new IlgpuInt8Provider(),
        new IlgpuFp8Provider(),
        new IlgpuInt64Provider(),
        new IlgpuBf16Provider(),
        new IlgpuInt4Provider(),
        new IlgpuMxProvider(),
        new IlgpuNvfp4Provider(),
        new IlgpuIntegerOnlyProvider(),
        .. Cuda.CudaProvider.All,
    ];

    public static IEngineProvider? Find(string name) => All.FirstOrDefault(p => p.Name == name);
}
