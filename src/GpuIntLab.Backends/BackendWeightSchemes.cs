using GpuIntLab.Core.Formats;

namespace GpuIntLab.Backends;

/// <summary>
/// Which <see cref="WeightScheme"/> of <see cref="WeightSchemeCatalog"/> a backend's scheme stores its decoder linears
/// in, so every result line carries the scheme's identity (element, block, scale encoding and rule) and every table
/// its memory. Backends name schemes by what they run (e.g. "mxfp4-rceil-w4a4": weights and activations); the weight
/// scheme is the storage part ("mxfp4-rceil").
/// </summary>
public static class BackendWeightSchemes
{
    /// <summary>The weight scheme of <paramref name="scheme"/> on <paramref name="backend"/>, or null when the lab does not know it.</summary>
    public static WeightScheme? Of(string backend, string scheme)
    {
        string family = backend.StartsWith("ilgpu-", StringComparison.Ordinal) ? backend["ilgpu-".Length..]
            : backend.StartsWith("cuda-", StringComparison.Ordinal) ? backend["cuda-".Length..]
            : backend;
        string? name = family switch
        {
            "oracle" or "int64" => "q16.48",
            "reference" => "float64",
            "fp16" or "bf16" => family,
            "int8" => "int8-" + scheme,
            "fp8" => "fp8-e4m3-" + scheme,
            "int4" => scheme,
            "mx" => StripActivationSuffix(scheme),
            "nvfp4" => "nvfp4",
            // The integer-only path stores int8 weights per output channel (its activations are int8 too).
            "intonly" => "int8-per-channel",
            _ => null,
        };
        return name == null ? null : WeightSchemeCatalog.Find(name);
    }

    /// <summary>"mxfp4-rceil-w4a4" and "mxfp4-rceil-weight-only" store "mxfp4-rceil".</summary>
    private static string StripActivationSuffix(string scheme)
    {
        if (scheme.EndsWith("-weight-only", StringComparison.Ordinal)) return scheme[..^"-weight-only".Length];
        int dash = scheme.LastIndexOf('-');
        string last = dash < 0 ? "" : scheme[(dash + 1)..];
        return last.Length == 4 && last[0] == 'w' && last[2] == 'a' ? scheme[..dash] : scheme;
    }
}
