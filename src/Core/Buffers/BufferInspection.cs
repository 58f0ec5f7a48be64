/*-------------------------------------------------------------------------
 * BufferInspection.cs
 *   What is in the buffer pool, as pg_buffercache shows it: a row per
 *   buffer (tag, dirty, valid, usage count, pin count) and a summary (used,
 *   dirty, pinned, average usage count, usage-count histogram).
 *
 * NOTES
 *   Everything is read without locks, as pg_buffercache_summary and
 *   pg_buffercache_usage_counts do: the figures are a snapshot of a moving
 *   pool, each buffer's word consistent in itself, the buffers not with one
 *   another. A row also needs the tag, which the header lock guards; rather
 *   than take that lock (as pg_buffercache_pages does) we read the state
 *   word, the tag, and the state word again, and retry a few times while
 *   the header-lock bit was set or the word changed: every tag change
 *   happens under the header lock and changes the flags, so two equal,
 *   unlocked words around the tag read mean the tag belongs to them.
 *
 *   Three sources: a BufferPool view (BufferPool.ReadState / ReadTag), a
 *   participant's LocalBuffers, and a read-only view of the descriptors
 *   straight from a segment's ShmemIndex (BufferDescriptorView), which needs
 *   neither a ProcArray participant nor the pool's options: that is what
 *   `pgipc inspect` uses on a segment another process made.
 *
 *   Mirrors contrib/pg_buffercache/pg_buffercache_pages.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Platform;
using PgIpc.Shmem;
using S = PgIpc.Buffers.BufferDesc.State;

namespace PgIpc.Buffers;

/// <summary>
/// One buffer as pg_buffercache_pages shows it. <see cref="Buffer"/> is the buffer number (1-based shared,
/// negative local); <see cref="Tag"/> is null while the buffer holds no page. <see cref="PinCount"/> is the number
/// of pinning participants for a shared buffer (pinning_backends) and the owner's pins for a local one.
/// </summary>
public sealed record BufferRow(int Buffer, BufferTag? Tag, bool IsDirty, bool IsValid, int UsageCount, int PinCount, uint State)
{
    /// <summary>The raw flags (BufferDesc.State bits 22-31).</summary>
    public uint Flags => State & S.FlagMask;
}

/// <summary>
/// pg_buffercache_summary plus pg_buffercache_usage_counts: <see cref="Used"/> buffers hold a valid page,
/// <see cref="Dirty"/> of those are dirty, <see cref="Pinned"/> buffers are pinned by someone,
/// <see cref="AverageUsageCount"/> is over the used buffers, <see cref="UsageCounts"/>[u] counts buffers at usage
/// count u (0..MaxUsageCount).
/// </summary>
public sealed record BufferSummary(int NumBuffers, int Used, int Unused, int Dirty, int Pinned, double AverageUsageCount,
    IReadOnlyList<int> UsageCounts);

/// <summary>
/// A read-only view of a segment's shared buffer descriptors, found by name in its ShmemIndex
/// (<see cref="BufferPool.DescriptorsName"/>, and <see cref="BufferPool.StrategyName"/> for the clock hand). Reads
/// only: it never pins, locks or writes. Valid while the segment stays attached.
/// </summary>
public sealed unsafe class BufferDescriptorView
{
    private readonly ShmemSegment _segment;
    private readonly BufferDesc* _descs;
    private readonly BufferStrategyControl* _ctl;

    private BufferDescriptorView(ShmemSegment segment, BufferDesc* descs, int n, BufferStrategyControl* ctl)
    {
        _segment = segment;
        _descs = descs;
        _ctl = ctl;
        NumBuffers = n;
    }

    /// <summary>Number of shared buffers.</summary>
    public int NumBuffers { get; }

    /// <summary>
    /// The view of <paramref name="segment"/>'s buffer pool, or false when the segment has none. A descriptor array
    /// that does not match the strategy block's buffer count is an error (a foreign or damaged structure).
    /// </summary>
    public static bool TryOpen(ShmemSegment segment, out BufferDescriptorView? view)
    {
        ArgumentNullException.ThrowIfNull(segment);
        view = null;
        if (!segment.TryFindStruct(BufferPool.DescriptorsName, out ShmemRegion descs))
            return false;
        if (descs.Size < sizeof(BufferDesc))
            throw new PgIpcException($"\"{BufferPool.DescriptorsName}\" is {descs.Size} bytes, smaller than one {sizeof(BufferDesc)}-byte buffer descriptor");
        long n = descs.Size / sizeof(BufferDesc);
        BufferStrategyControl* ctl = null;
        if (segment.TryFindStruct(BufferPool.StrategyName, out ShmemRegion strategy) && strategy.Size >= sizeof(BufferStrategyControl))
        {
            ctl = (BufferStrategyControl*)strategy.Pointer;
            // Acquire; pairs with the initialiser, which writes Magic last (InitStruct publishes the entry after it).
            if (Volatile.Read(ref ctl->Magic) != BufferStrategyControl.MagicValue)
                ctl = null;
            else if (ctl->NumBuffers != n)
                throw new PgIpcException($"\"{BufferPool.DescriptorsName}\" has room for {n} descriptors but \"{BufferPool.StrategyName}\" says {ctl->NumBuffers} buffers");
        }
        if (n > int.MaxValue)
            throw new PgIpcException($"\"{BufferPool.DescriptorsName}\" is too large: {descs.Size} bytes");
        view = new BufferDescriptorView(segment, (BufferDesc*)descs.Pointer, (int)n, ctl);
        return true;
    }

    /// <summary>A buffer's state word (1-based buffer number; unlocked read).</summary>
    public uint ReadState(int buffer) => Volatile.Read(ref Desc(buffer)->StateWord);

    /// <summary>A buffer's tag (unlocked read; meaningful when the state says TagValid).</summary>
    public BufferTag ReadTag(int buffer) => Desc(buffer)->Tag;

    /// <summary>
    /// Where the clock hand is (buffer index) and how many times it went round, read without the strategy lock
    /// (so the two may be one tick apart); false when the segment has no strategy block.
    /// </summary>
    public bool TryReadClock(out int nextVictim, out uint completePasses)
    {
        CheckAttached();
        if (_ctl is null)
        {
            nextVictim = 0;
            completePasses = 0;
            return false;
        }
        uint next = Volatile.Read(ref _ctl->NextVictimBuffer);
        completePasses = Volatile.Read(ref _ctl->CompletePasses) + next / (uint)NumBuffers;
        nextVictim = (int)(next % (uint)NumBuffers);
        return true;
    }

    private BufferDesc* Desc(int buffer)
    {
        CheckAttached();
        if (buffer < 1 || buffer > NumBuffers)
            throw new BufferUsageException($"bad buffer number {buffer}: the pool has buffers 1..{NumBuffers}");
        return _descs + (buffer - 1);
    }

    private void CheckAttached()
    {
        if (!_segment.IsAttached)
            throw new ObjectDisposedException(nameof(ShmemSegment), "the segment of this buffer descriptor view is no longer attached");
    }
}

/// <summary>pg_buffercache: rows and summaries of a shared pool, a segment's descriptors, or local buffers.</summary>
public static class BufferInspection
{
    /// <summary>How many times a row is re-read while its header is locked or its state word moves.</summary>
    private const int RowRetries = 100;

    /// <summary>A row per shared buffer of <paramref name="pool"/> (pg_buffercache_pages).</summary>
    public static IReadOnlyList<BufferRow> Rows(BufferPool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        var rows = new BufferRow[pool.NumBuffers];
        Func<int, uint> readState = pool.ReadState;
        Func<int, BufferTag> readTag = pool.ReadTag;
        for (int b = 1; b <= rows.Length; b++)
            rows[b - 1] = SharedRow(b, readState, readTag);
        return rows;
    }

    /// <summary>A row per shared buffer of a segment's pool, read through <paramref name="view"/>.</summary>
    public static IReadOnlyList<BufferRow> Rows(BufferDescriptorView view)
    {
        ArgumentNullException.ThrowIfNull(view);
        var rows = new BufferRow[view.NumBuffers];
        Func<int, uint> readState = view.ReadState;
        Func<int, BufferTag> readTag = view.ReadTag;
        for (int b = 1; b <= rows.Length; b++)
            rows[b - 1] = SharedRow(b, readState, readTag);
        return rows;
    }

    /// <summary>A row per local buffer, -1 first; the pin count is the owner's (LocalRefCount). Empty before first use.</summary>
    public static IReadOnlyList<BufferRow> Rows(LocalBuffers local)
    {
        ArgumentNullException.ThrowIfNull(local);
        if (!local.IsInitialized)
            return [];
        var rows = new BufferRow[local.NumBuffers];
        for (int i = 0; i < rows.Length; i++)
        {
            int b = -(i + 1);
            uint st = local.ReadState(b);
            rows[i] = MakeRow(b, st, local.ReadTag(b), local.LocalRefCount(b));
        }
        return rows;
    }

    /// <summary>The summary of a shared pool (pg_buffercache_summary + usage counts), without locks.</summary>
    public static BufferSummary Summarize(BufferPool pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        var acc = new Accumulator();
        for (int b = 1; b <= pool.NumBuffers; b++)
            acc.Add(pool.ReadState(b));
        return acc.ToSummary(pool.NumBuffers);
    }

    /// <summary>The summary of a segment's pool, read through <paramref name="view"/>.</summary>
    public static BufferSummary Summarize(BufferDescriptorView view)
    {
        ArgumentNullException.ThrowIfNull(view);
        var acc = new Accumulator();
        for (int b = 1; b <= view.NumBuffers; b++)
            acc.Add(view.ReadState(b));
        return acc.ToSummary(view.NumBuffers);
    }

    /// <summary>The summary of a participant's local buffers (all unused before first use).</summary>
    public static BufferSummary Summarize(LocalBuffers local)
    {
        ArgumentNullException.ThrowIfNull(local);
        var acc = new Accumulator();
        for (int i = 1; i <= local.NumBuffers; i++)
            acc.Add(local.ReadState(-i));
        return acc.ToSummary(local.NumBuffers);
    }

    /// <summary>The summary of rows already read (so a printed table and its summary agree).</summary>
    public static BufferSummary Summarize(IReadOnlyList<BufferRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var acc = new Accumulator();
        foreach (BufferRow r in rows)
            acc.Add(r.State);
        return acc.ToSummary(rows.Count);
    }

    private static BufferRow SharedRow(int buffer, Func<int, uint> readState, Func<int, BufferTag> readTag)
    {
        uint before = 0;
        BufferTag tag = default;
        for (int attempt = 0; attempt < RowRetries; attempt++)
        {
            before = readState(buffer);
            tag = readTag(buffer);
            // The tag read sits between two state reads; a tag change holds the header lock and changes the flags.
            uint after = readState(buffer);
            if (before == after && (before & S.Locked) == 0)
                break;
            Thread.SpinWait(20);
        }
        return MakeRow(buffer, before & ~S.Locked, tag, S.RefCount(before));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static BufferRow MakeRow(int buffer, uint st, BufferTag tag, int pins)
        => new(buffer, (st & S.TagValid) != 0 ? tag : null, (st & S.Dirty) != 0, (st & S.Valid) != 0, S.UsageCount(st), pins, st);

    /// <summary>pg_buffercache_summary's loop: counts over state words.</summary>
    private struct Accumulator
    {
        private int _used, _dirty, _pinned, _buffers;
        private long _usageTotal;
        private int[]? _usageCounts;

        public void Add(uint st)
        {
            _usageCounts ??= new int[S.MaxUsageCount + 1];
            _buffers++;
            int usage = Math.Min(S.UsageCount(st), S.MaxUsageCount);
            _usageCounts[usage]++;
            if ((st & S.Valid) != 0)
            {
                _used++;
                _usageTotal += usage;
                if ((st & S.Dirty) != 0)
                    _dirty++;
            }
            if (S.RefCount(st) > 0)
                _pinned++;
        }

        public readonly BufferSummary ToSummary(int numBuffers)
            => new(numBuffers, _used, _buffers - _used, _dirty, _pinned, _used == 0 ? 0 : (double)_usageTotal / _used,
                _usageCounts ?? new int[S.MaxUsageCount + 1]);
    }
}
