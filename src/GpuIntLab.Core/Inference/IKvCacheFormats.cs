namespace GpuIntLab.Core.Inference;

/// <summary>
/// A provider whose engines can hold the KV cache in another format than their own (a spec backend entry's
/// <c>"kv_cache"</c>, passed as <see cref="EngineOptions.KvCache"/>). Providers without it run only their own cache.
/// </summary>
public interface IKvCacheFormats
{
    /// <summary>The accepted names, the backend's own ("float32") first.</summary>
    IReadOnlyList<string> KvCacheFormats { get; }
}
