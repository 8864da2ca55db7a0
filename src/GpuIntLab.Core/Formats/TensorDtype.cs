namespace GpuIntLab.Core.Formats;

/// <summary>Floating-point storage types of checkpoint tensors that the lab reads.</summary>
public enum TensorDtype
{
    BF16,
    F16,
    F32,
}

public static class TensorDtypeInfo
{
    public static int SizeOf(TensorDtype dtype) => dtype switch
    {
        TensorDtype.BF16 or TensorDtype.F16 => 2,
        TensorDtype.F32 => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };

    /// <summary>Parses a safetensors dtype string; null when the lab does not support it.</summary>
    public static TensorDtype? TryParse(string name) => name switch
    {
        "BF16" => TensorDtype.BF16,
        "F16" => TensorDtype.F16,
        "F32" => TensorDtype.F32,
        _ => null,
    };

    public static string SafetensorsName(TensorDtype dtype) => dtype switch
    {
        TensorDtype.BF16 => "BF16",
        TensorDtype.F16 => "F16",
        TensorDtype.F32 => "F32",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };
}
