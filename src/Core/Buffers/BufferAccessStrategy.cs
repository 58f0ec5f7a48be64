/*-------------------------------------------------------------------------
 * BufferAccessStrategy.cs
 *   Ring buffers for bulk operations. The per-participant pin table is in
 *   PrivateRefCount.cs.
 *
 * NOTES
 *   A strategy is a small ring of buffer ids owned by one participant: a
 *   big sequential scan (bulk read, 256 KiB), a bulk load (16 MiB) or a
 *   vacuum (256 KiB) recycles its own few buffers instead of evicting the
 *   whole pool. A ring slot is reused only if nobody else pinned the buffer
 *   and its usage count is at most 1 (nobody else used it); otherwise the
 *   buffer stays in the pool and the ring takes a new one from the clock.
 *   Rings are capped at an eighth of the pool, as GetAccessStrategy does.
 *
 *   Mirrors src/backend/storage/buffer/freelist.c (GetAccessStrategy).
 *-------------------------------------------------------------------------
 */

namespace PgIpc.Buffers;

/// <summary>The kinds of ring strategy (BufferAccessStrategyType).</summary>
public enum BufferAccessStrategyType
{
    BulkRead,
    BulkWrite,
    Vacuum,
}

/// <summary>A participant's ring of buffers for a bulk operation. Process-local; one participant uses it at a time.</summary>
public sealed class BufferAccessStrategy
{
    internal readonly int[] Ring;
    internal int Current;

    public BufferAccessStrategy(BufferPool pool, BufferAccessStrategyType type)
    {
        ArgumentNullException.ThrowIfNull(pool);
        long bytes = type switch
        {
            BufferAccessStrategyType.BulkRead => 256 * 1024,
            BufferAccessStrategyType.BulkWrite => 16 * 1024 * 1024,
            BufferAccessStrategyType.Vacuum => 256 * 1024,
            _ => throw new ArgumentOutOfRangeException(nameof(type), type, "unknown buffer access strategy"),
        };
        int size = (int)Math.Min(bytes / BufferPool.BlockSize, Math.Max(1, pool.NumBuffers / 8));
        Type = type;
        Ring = new int[size];
        Array.Fill(Ring, -1);
        Current = 0;
    }

    public BufferAccessStrategyType Type { get; }

    /// <summary>Buffers in the ring.</summary>
    public int RingSize => Ring.Length;
}
