namespace GpuIntLab.Core.FixedPoint;

/// <summary>
/// cos/sin rows of a RoPE table, computed on first use in blocks of <see cref="BlockPositions"/> positions and
/// kept: a model declares up to 2^17 positions (tens of MB and seconds of work if built eagerly) but a run
/// touches only the positions it decodes. Memory grows with the highest block used, never with the declared
/// maximum. Readers on several threads are safe: a published block is immutable, publication is a volatile
/// write after the block is filled, and filling happens under one lock (a second reader of the same block
/// waits for the first instead of computing it twice). Shared by the exact and the float tables.
/// </summary>
internal sealed class RopeRowCache<T>
    where T : unmanaged
{
    /// <summary>Positions per cached block (a block of a 64-wide head is 2 x 64 x 32 entries).</summary>
    public const int BlockPositions = 64;

    private readonly int _width;
    private readonly int _maxPositions;
    private readonly FillRows _fill;
    private readonly object _gate = new();

    // Directory of blocks, grown (copied) under _gate; readers see either the old or the new array, and an
    // entry they find null sends them to the lock.
    private Block?[] _blocks = [];

    /// <param name="width">Entries per row (headDim / 2).</param>
    /// <param name="maxPositions">Rows in the table; positions outside [0, maxPositions) are refused.</param>
    /// <param name="fill">Writes rows [first, first + count) of cos and sin, row-major, width entries each.</param>
    public RopeRowCache(int width, int maxPositions, FillRows fill)
    {
        _width = width;
        _maxPositions = maxPositions;
        _fill = fill;
    }

    /// <summary>Computes rows [firstPosition, firstPosition + count) into cos and sin (row-major).</summary>
    public delegate void FillRows(int firstPosition, int count, Span<T> cos, Span<T> sin);

    public ReadOnlySpan<T> Cos(int position)
    {
        Block block = BlockOf(position);
        return new ReadOnlySpan<T>(block.Cos, (position % BlockPositions) * _width, _width);
    }

    public ReadOnlySpan<T> Sin(int position)
    {
        Block block = BlockOf(position);
        return new ReadOnlySpan<T>(block.Sin, (position % BlockPositions) * _width, _width);
    }

    /// <summary>Blocks filled so far (for tests: shows that only used positions are computed).</summary>
    public int FilledBlocks
    {
        get
        {
            lock (_gate)
            {
                return _blocks.Count(b => b != null);
            }
        }
    }

    /// <summary>Rows [firstPosition, firstPosition + count) computed directly, without caching (bulk uploads).</summary>
    public void CopyRows(int firstPosition, int count, Span<T> cos, Span<T> sin)
    {
        if (firstPosition < 0 || count < 0 || firstPosition > _maxPositions - count)
        {
            throw new ArgumentOutOfRangeException(
                nameof(count), $"rows [{firstPosition}, {(long)firstPosition + count}) are outside [0, {_maxPositions})");
        }

        long entries = (long)count * _width;
        if (cos.Length < entries || sin.Length < entries)
        {
            throw new ArgumentException($"cos and sin need {entries} entries each, got {cos.Length} and {sin.Length}", nameof(cos));
        }

        _fill(firstPosition, count, cos[..(int)entries], sin[..(int)entries]);
    }

    private Block BlockOf(int position)
    {
        if ((uint)position >= (uint)_maxPositions)
        {
            throw new ArgumentOutOfRangeException(nameof(position), position, $"position must be in [0, {_maxPositions})");
        }

        int index = position / BlockPositions;
        Block?[] blocks = Volatile.Read(ref _blocks);
        if (index < blocks.Length)
        {
            Block? block = Volatile.Read(ref blocks[index]);
            if (block != null)
            {
                return block;
            }
        }

        return FillBlock(index);
    }

    private Block FillBlock(int index)
    {
        lock (_gate)
        {
            Block?[] blocks = _blocks;
            if (index >= blocks.Length)
            {
                // grow geometrically so a run that walks positions upward copies the directory O(log n) times
                int totalBlocks = ((_maxPositions - 1) / BlockPositions) + 1;
                int length = index + 1 > 2 * blocks.Length ? index + 1 : 2 * blocks.Length;
                length = length < totalBlocks ? length : totalBlocks;
                var grown = new Block?[length];
                Array.Copy(blocks, grown, blocks.Length);
                Volatile.Write(ref _blocks, grown);
                blocks = grown;
            }

            Block? block = blocks[index];
            if (block == null)
            {
                int first = index * BlockPositions;
                int count = _maxPositions - first < BlockPositions ? _maxPositions - first : BlockPositions;
                var cos = new T[count * _width];
                var sin = new T[count * _width];
                _fill(first, count, cos, sin);
                block = new Block(cos, sin);
                Volatile.Write(ref blocks[index], block);
            }

            return block;
        }
    }

    private sealed class Block(T[] cos, T[] sin)
    {
        public T[] Cos { get; } = cos;

        public T[] Sin { get; } = sin;
    }
}
