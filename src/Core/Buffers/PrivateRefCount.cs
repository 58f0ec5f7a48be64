/*-------------------------------------------------------------------------
 * PrivateRefCount.cs
 *   The per-participant pin table: how many times this participant pinned
 *   each buffer.
 *
 * NOTES
 *   The shared refcount counts participants, not pins, so repeated pins by
 *   one participant touch only this table. Eight array entries cover the
 *   common case without hashing; more spill into a Dictionary.
 *
 *   Mirrors PrivateRefCountArray / PrivateRefCountHash in
 *   src/backend/storage/buffer/bufmgr.c.
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;

namespace PgIpc.Buffers;

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
