namespace GpuIntLab.Core.Formats;

/// <summary>Floating-point storage types of checkpoint tensors that the lab reads.</summary>
public enum TensorDtype
{
    BF16,
    F16,
    F32,
    /// <summary>Native integer format: a Q16.48 raw int64 (value = raw / 2^48).</summary>
    Q48,
    /// <summary>
    /// Native integer format, 16 bits: sign (1) | e (8) | m (7); raw = (-1)^sign * (128 + m) * 2^(e - 86), and 0x0000 = 0.
    /// It holds exactly the Q16.48 values a bf16 weight of magnitude in [2^-41, 32768) has: bf16 checkpoints store
    /// at 2 bytes per weight with no floating-point value involved in decoding.
    /// </summary>
    M8E8,
}

public static class TensorDtypeInfo
{
    public static int SizeOf(TensorDtype dtype) => dtype switch
    {
        TensorDtype.BF16 or TensorDtype.F16 or TensorDtype.M8E8 => 2,
        TensorDtype.F32 => 4,
        TensorDtype.Q48 => 8,
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
        TensorDtype.Q48 => "Q48",
        TensorDtype.M8E8 => "M8E8",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
    };
}
