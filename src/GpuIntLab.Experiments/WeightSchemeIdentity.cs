using System.Text.Json.Serialization;
using GpuIntLab.Backends;
using GpuIntLab.Core.Formats;

namespace GpuIntLab.Experiments;

/// <summary>
/// The <c>weight_scheme</c> object of a result or corpus line: what the decoder linears are stored in, so a line says
/// its scheme's element, block, scale encoding and scale rule without the reader knowing the backend's naming.
/// </summary>
public sealed record WeightSchemeIdentity(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("element")] string Element,
    [property: JsonPropertyName("block")] string Block,
    [property: JsonPropertyName("scale_encoding")] string ScaleEncoding,
    [property: JsonPropertyName("scale_rule")] string ScaleRule,
    [property: JsonPropertyName("nominal_bits_per_weight")] double NominalBitsPerWeight)
{
    /// <summary>The identity of <paramref name="scheme"/> on <paramref name="backend"/>; null when the lab has no weight scheme for it.</summary>
    public static WeightSchemeIdentity? For(string backend, string scheme) =>
        BackendWeightSchemes.Of(backend, scheme) is { } s ? Of(s) : null;

    public static WeightSchemeIdentity Of(WeightScheme s) => new(s.Name, s.Element,
        s.BlockSize switch { > 0 => s.BlockSize.ToString(System.Globalization.CultureInfo.InvariantCulture), 0 => "row", _ => "tensor" },
        s.ScaleEncoding, s.ScaleRule, s.NominalBitsPerWeight);
}
