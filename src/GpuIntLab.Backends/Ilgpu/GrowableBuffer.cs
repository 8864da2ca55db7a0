using ILGPU;
using ILGPU.Runtime;

namespace GpuIntLab.Backends.Ilgpu;

/// <summary>
/// A device buffer sized by positions, grown by doubling as the context grows (KV caches, RoPE tables, score rows),
/// so a model whose config allows 131072 positions costs device memory only for the positions it uses.
/// Growing keeps the contents.
/// </summary>
public sealed class GrowableBuffer<T>(Accelerator accelerator, long elementsPerPosition, int initialPositions = 64) : IDisposable where T : unmanaged
{
    private MemoryBuffer1D<T, Stride1D.Dense> _buffer = accelerator.Allocate1D<T>(elementsPerPosition * Math.Max(1, initialPositions));

    /// <summary>Positions the buffer holds now.</summary>
    public int Positions { get; private set; } = Math.Max(1, initialPositions);

    public ArrayView<T> View => _buffer.View;

    /// <summary>Bytes the device allocation holds now (all positions, used or not).</summary>
    public long LengthInBytes => _buffer.LengthInBytes;

    /// <summary>Makes room for <paramref name="positions"/> positions; true if the buffer was reallocated.</summary>
    public bool Ensure(int positions)
    {
        if (positions <= Positions) return false;
        int capacity = Positions;
        while (capacity < positions) capacity = (int)Math.Min(2L * capacity, int.MaxValue);
        var grown = accelerator.Allocate1D<T>(elementsPerPosition * capacity);
        _buffer.View.CopyTo(grown.View.SubView(0, _buffer.Length));
        _buffer.Dispose();
        _buffer = grown;
        Positions = capacity;
        return true;
    }

    public void Dispose() => _buffer.Dispose();
}
