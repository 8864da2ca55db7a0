namespace GpuIntLab.Core.Inference;

/// <summary>
/// Per-layer key and value rows, [position][kvDim], growing by doubling so short runs stay small and
/// a decode step never allocates once capacity is reached.
/// </summary>
public sealed class KvCache<T> where T : unmanaged
{
    private readonly int _kvDim;
    private readonly T[][] _keys;
    private readonly T[][] _values;
    private int _capacity;

    public KvCache(int layers, int kvDim, int initialCapacity = 64)
    {
        _kvDim = kvDim;
        _capacity = Math.Max(1, initialCapacity);
        _keys = new T[layers][];
        _values = new T[layers][];
        for (int l = 0; l < layers; l++) { _keys[l] = new T[_capacity * kvDim]; _values[l] = new T[_capacity * kvDim]; }
    }

    public void EnsureCapacity(int positions)
    {
        if (positions <= _capacity) return;
        int capacity = _capacity;
        while (capacity < positions) capacity *= 2;
        for (int l = 0; l < _keys.Length; l++)
        {
            Array.Resize(ref _keys[l], capacity * _kvDim);
            Array.Resize(ref _values[l], capacity * _kvDim);
        }
        _capacity = capacity;
    }

    public Span<T> Key(int layer, int position) => _keys[layer].AsSpan(position * _kvDim, _kvDim);
    public Span<T> Value(int layer, int position) => _values[layer].AsSpan(position * _kvDim, _kvDim);
    /// <summary>Keys of positions [0, count) of one layer, row after row.</summary>
    public ReadOnlySpan<T> Keys(int layer, int count) => _keys[layer].AsSpan(0, count * _kvDim);
    public ReadOnlySpan<T> Values(int layer, int count) => _values[layer].AsSpan(0, count * _kvDim);
}
