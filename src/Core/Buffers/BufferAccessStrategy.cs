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
    /// <summary>A large sequential read: a small ring of buffers is reused (GetAccessStrategy(BAS_BULKREAD)).</summary>
    BulkRead,
    /// <summary>A bulk write (COPY, CREATE TABLE AS): a ring of buffers is reused, dirty ones written out by this process.</summary>
    BulkWrite,
    /// <summary>VACUUM: a small ring, so maintenance does not push the working set out of the pool.</summary>
    Vacuum,
}

/// <summary>A participant's ring of buffers for a bulk operation. Process-local; one participant uses it at a time.</summary>
public sealed class BufferAccessStrategy
{
    internal readonly int[] Ring;
    internal int Current;

    /// <summary>Creates a strategy of the given <paramref name="type"/> over <paramref name="pool"/>, its ring sized as PostgreSQL sizes it.</summary>
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

    /// <summary>The kind of access this strategy serves.</summary>
    public BufferAccessStrategyType Type { get; }

    /// <summary>Buffers in the ring.</summary>
    public int RingSize => Ring.Length;
}
