using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace GpuIntLab.Oracle;

/// <summary>The determinism gate: SHA-256 over raw int64 logits (little-endian), step after step.</summary>
public sealed class LogitsHash : IDisposable
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    public void Append(ReadOnlySpan<long> rawLogits)
    {
        if (BitConverter.IsLittleEndian)
        {
            _hash.AppendData(MemoryMarshal.AsBytes(rawLogits));
            return;
        }
        Span<byte> buffer = stackalloc byte[8];
        foreach (long v in rawLogits)
        {
            BinaryPrimitives.WriteInt64LittleEndian(buffer, v);
            _hash.AppendData(buffer);
        }
    }

    public string Finish() => Convert.ToHexStringLower(_hash.GetHashAndReset());

    public void Dispose() => _hash.Dispose();
}
