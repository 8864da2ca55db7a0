using System.Text.Json;
using GpuIntLab.Backends;
using GpuIntLab.Core.Inference;

namespace GpuIntLab.Cli.Commands;

/// <summary>The machine-readable form of <c>gpuintlab backends --json</c>: every backend, its schemes, KV-cache formats and availability.</summary>
public static class BackendsJson
{
    public static string Render(string accelerator)
    {
        var backends = BackendCatalog.All.Select(p =>
        {
            var a = p.CheckAvailability(accelerator);
            return new
            {
                name = p.Name,
                description = p.Description,
                schemes = p.Schemes,
                // What each scheme stores its decoder linears in, as result lines name it (null: no weight scheme known).
                weight_schemes = p.Schemes.ToDictionary(s => s, s => GpuIntLab.Experiments.WeightSchemeIdentity.For(p.Name, s)),
                // "native": the backend runs only its own cache and a spec may not set kv_cache for it.
                kv_cache = p is IKvCacheFormats kv ? kv.KvCacheFormats : (IReadOnlyList<string>)["native"],
                available = a.IsAvailable,
                reason = a.Reason,
            };
        });
        return JsonSerializer.Serialize(new { accelerator, backends }, new JsonSerializerOptions { WriteIndented = true });
    }
}
