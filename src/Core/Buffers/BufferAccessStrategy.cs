/*-------------------------------------------------------------------------
 * BufferAccessStrategy.cs
 *   Ring buffers for bulk operations, and the per-participant pin table.
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
 *   PrivateRefCount: how many times this participant pinned each buffer.
 *   The shared refcount counts participants, not pins, so repeated pins by
 *   one participant touch only this table. Eight array entries cover the
 *   common case without hashing; more spill into a Dictionary.
 *
 *   Mirrors src/backend/storage/buffer/freelist.c (GetAccessStrategy) and
 *   bufmgr.c (PrivateRefCountArray / PrivateRefCountHash).
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;

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

/// <summary>
/// One participant's pins (PrivateRefCount). Process-local, used only by its participant's thread. Because the counts
/// live here, a process killed with SIGKILL leaves its pins in the shared refcounts until shared memory is rebuilt
/// (the supervisor's crash restart, as in PostgreSQL); see the notes in BufferPool.Pin.cs.
/// </summary>
internal sealed class PrivateRefCount
{
    public const int ArrayEntries = 8;

    public readonly Participant Owner;
    private readonly int[] _buffers = new int[ArrayEntries];
    private readonly int[] _counts = new int[ArrayEntries];
    private readonly Dictionary<int, int> _overflow = [];

    public PrivateRefCount(Participant owner)
    {
        Owner = owner;
        Array.Fill(_buffers, -1);
    }

    /// <summary>This participant's pins of buffer <paramref name="id"/> (0-based).</summary>
    public int Get(int id)
    {
        for (int i = 0; i < ArrayEntries; i++)
            if (_buffers[i] == id)
                return _counts[i];
        return _overflow.Count != 0 && _overflow.TryGetValue(id, out int n) ? n : 0;
    }

    /// <summary>Adds <paramref name="delta"/> pins; returns the new count (0 removes the entry).</summary>
    public int Add(int id, int delta)
    {
        int free = -1;
        for (int i = 0; i < ArrayEntries; i++)
        {
            if (_buffers[i] == id)
            {
                int n = _counts[i] + delta;
                if (n == 0)
                    _buffers[i] = -1;
                _counts[i] = n;
                return n;
            }
            if (free < 0 && _buffers[i] == -1)
                free = i;
        }
        if (_overflow.Count != 0 && _overflow.TryGetValue(id, out int m))
        {
            m += delta;
            if (m == 0)
                _overflow.Remove(id);
            else
                _overflow[id] = m;
            return m;
        }
        if (delta <= 0)
            return -1;
        if (free >= 0)
        {
            _buffers[free] = id;
            _counts[free] = delta;
        }
        else
        {
            _overflow[id] = delta;
        }
        return delta;
    }

    /// <summary>Every (buffer, pins) entry.</summary>
    public List<(int Id, int Count)> All()
    {
        var all = new List<(int, int)>();
        for (int i = 0; i < ArrayEntries; i++)
            if (_buffers[i] != -1)
                all.Add((_buffers[i], _counts[i]));
        foreach (var kv in _overflow)
            all.Add((kv.Key, kv.Value));
        return all;
    }
}
