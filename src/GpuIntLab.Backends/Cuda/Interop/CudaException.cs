namespace GpuIntLab.Backends.Cuda.Interop;

/// <summary>A failed CUDA driver or NVRTC call: names the call, the numeric code and the library's own error string.</summary>
public sealed class CudaException : Exception
{
    public string Call { get; }
    public int Code { get; }
    public string ErrorName { get; }

    public CudaException(string call, int code, string errorName, string errorString, string? detail = null)
        : base($"{call} failed: {errorName} ({code}): {errorString}{(detail is null ? "" : "\n" + detail)}")
    {
        Call = call; Code = code; ErrorName = errorName;
    }
}

/// <summary>A required native library (driver or NVRTC) could not be loaded or lacks a symbol.</summary>
public sealed class CudaUnavailableException(string reason) : Exception(reason);
