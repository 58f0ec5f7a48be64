/*-------------------------------------------------------------------------
 * SharedStats.cs
 *   The cluster's shared statistics as this process sees them: the
 *   background writer's and checkpointer's cumulative counters
 *   (pg_stat_bgwriter, pg_stat_checkpointer), every participant's
 *   activity (pg_stat_activity), and their resets; the writers' side
 *   (a bgwriter round, a checkpoint, a participant's own activity slot).
 *
 * NOTES
 *   The layout and the lock-free changecount protocol are in
 *   PgStatShmem.cs. This module is a kernel module: every cluster has it,
 *   sized by its participant slots. Its writers find it by name in the
 *   segment (the checkpointer and background writer at their Init, a
 *   participant when it joins), so a subsystem made without the cluster's
 *   module list (a test's in-process checkpointer) still reports; without
 *   the structure they report nothing.
 *
 *   Counters are cumulative since the cluster's shared memory was made
 *   (a crash restart makes it again, as PostgreSQL discards its stats
 *   after a crash). PostgreSQL's backends also count into backend-local
 *   pending stats that are flushed every so often; here the writers are
 *   the two auxiliary loops and each participant's own slot, which are
 *   cheap enough to publish at once.
 *
 *   The per-participant activity is written by the participant itself
 *   (Participant.SetActivity), never by a reader; it is read with the
 *   slot's PGPROC (pid, wait event), showing a slot only while PGPROC's pid
 *   is the one the activity slot recorded (a dead owner's leftovers are
 *   not shown once its slot was reclaimed).
 *
 *   Mirrors src/backend/utils/activity/backend_status.c (pgstat_bestart,
 *   pgstat_report_activity, pgstat_read_current_status) and
 *   pgstat_bgwriter.c / pgstat_checkpointer.c (snapshot, reset).
 *-------------------------------------------------------------------------
 */
using System.Text.Unicode;
using PgIpc.Latch;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Stats;

/// <summary>What a participant says it is doing (pg_stat_activity.state, BackendState).</summary>
public enum ActivityState
{
    /// <summary>Not reported yet (STATE_UNDEFINED; shown as null).</summary>
    Undefined = 0,
    /// <summary>Waiting for work (STATE_IDLE, "idle").</summary>
    Idle = 1,
    /// <summary>Working (STATE_RUNNING, "active").</summary>
    Active = 2,
    /// <summary>Idle inside a unit of work that is still open (STATE_IDLEINTRANSACTION, "idle in transaction").</summary>
    IdleInTransaction = 3,
    /// <summary>Running a fast-path call (STATE_FASTPATH, "fastpath function call").</summary>
    FastPath = 4,
    /// <summary>Idle in a unit of work that failed (STATE_IDLEINTRANSACTION_ABORTED, "idle in transaction (aborted)").</summary>
    IdleInTransactionAborted = 5,
    /// <summary>Activity reporting switched off (STATE_DISABLED, "disabled").</summary>
    Disabled = 6,
}

/// <summary>pg_stat_bgwriter: the background writer's cumulative counters.</summary>
/// <param name="BuffersClean">Buffers written by the background writer (buffers_clean).</param>
/// <param name="MaxWrittenClean">Rounds that stopped because they wrote bgwriter_lru_maxpages (maxwritten_clean).</param>
/// <param name="BuffersAlloc">Buffer allocations (buffers_alloc), as the background writer's rounds saw them.</param>
/// <param name="Rounds">Background writer rounds (BgBufferSync calls).</param>
/// <param name="StatsReset">When these counters were last reset (stats_reset); the creation of shared memory at first.</param>
public readonly record struct PgStatBgWriter(long BuffersClean, long MaxWrittenClean, long BuffersAlloc, long Rounds, DateTimeOffset StatsReset);

/// <summary>pg_stat_checkpointer (PostgreSQL 17): the checkpointer's cumulative counters. Restartpoints do not apply.</summary>
/// <param name="NumTimed">Checkpoints started because checkpoint_timeout passed (num_timed).</param>
/// <param name="NumRequested">Checkpoints started by a request (num_requested).</param>
/// <param name="NumDone">Checkpoints that completed (num_done).</param>
/// <param name="WriteTimeMs">Milliseconds spent writing buffers, the spread-out pacing included (write_time).</param>
/// <param name="SyncTimeMs">Milliseconds spent fsyncing files (sync_time).</param>
/// <param name="BuffersWritten">Buffers written by checkpoints (buffers_written).</param>
/// <param name="FilesSynced">Files fsynced by checkpoints.</param>
/// <param name="StatsReset">When these counters were last reset (stats_reset); the creation of shared memory at first.</param>
public readonly record struct PgStatCheckpointer(long NumTimed, long NumRequested, long NumDone, double WriteTimeMs, double SyncTimeMs,
    long BuffersWritten, long FilesSynced, DateTimeOffset StatsReset);

/// <summary>One participant as pg_stat_activity shows it.</summary>
/// <param name="ProcNumber">Its slot (procno).</param>
/// <param name="Pid">Its process.</param>
/// <param name="Kind">The kind of its slot.</param>
/// <param name="BackendType">What it is (backend_type): "backend", "checkpointer", "background writer", a name it set.</param>
/// <param name="State">What it last reported (state).</param>
/// <param name="Detail">The text it reported with that state (query), or null.</param>
/// <param name="BackendStart">When it joined (backend_start).</param>
/// <param name="StateChange">When <paramref name="State"/> began (state_change).</param>
/// <param name="WaitEvent">What it waits for now (wait_event_info); <see cref="WaitEventId.None"/> when it does not.</param>
/// <param name="WaitEventType">The wait event's class name (wait_event_type), "LWLock" in an LWLock sleep, or null.</param>
/// <param name="WaitEventName">The wait event's name (wait_event), or null.</param>
public sealed record PgStatActivity(int ProcNumber, int Pid, ProcKind Kind, string BackendType, ActivityState State, string? Detail,
    DateTimeOffset BackendStart, DateTimeOffset StateChange, WaitEventId WaitEvent, string? WaitEventType, string? WaitEventName)
{
    /// <summary>True while it waits (a latch wait naming a wait event, or an LWLock sleep).</summary>
    public bool IsWaiting => WaitEventType is not null;

    /// <summary>PostgreSQL's text for <see cref="State"/> ("idle", "active", ...), or null when undefined.</summary>
    public string? StateName => SharedStats.StateName(State);
}

/// <summary>
/// The cluster's shared statistics (module "PgIpc.Stats"): background writer and checkpointer counters and every
/// participant's activity, readable from any process (<see cref="Postmaster.Cluster.Stats"/>, or
/// <see cref="TryOpen"/> over a segment). Reading takes no lock and never blocks a writer.
/// </summary>
public sealed unsafe class SharedStats
{
    internal const string ShmemName = "PgIpc.Stats";

    private readonly ShmemSegment _segment;
    private readonly PgStatShmem* _h;
    private readonly PgBackendStatus* _slots;

    private SharedStats(ShmemSegment segment, PgStatShmem* h)
    {
        _segment = segment;
        _h = h;
        _slots = (PgBackendStatus*)(h + 1);
        MaxProcs = h->MaxProcs;
    }

    /// <summary>Activity slots (the cluster's participant slots).</summary>
    public int MaxProcs { get; }

    /// <summary>Bytes of "PgIpc.Stats" for <paramref name="maxProcs"/> participant slots.</summary>
    internal static long ShmemSize(int maxProcs)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxProcs, 1);
        return Shmem.ShmemSize.Add(sizeof(PgStatShmem), Shmem.ShmemSize.Mul(maxProcs, sizeof(PgBackendStatus)));
    }

    /// <summary>Creates (the supervisor) or finds the structure.</summary>
    internal static SharedStats Init(ShmemSegment segment, int maxProcs, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ShmemRegion r = segment.InitStruct(ShmemName, ShmemSize(maxProcs), region =>
        {
            var h = (PgStatShmem*)region.Pointer;
            h->MaxProcs = maxProcs;
            long now = NowUs();
            h->BgWriterResetAtUs = now;
            h->CheckpointerResetAtUs = now;
            Volatile.Write(ref h->Magic, PgStatShmem.MagicValue); // last: a finder checks it
        }, out found);
        return Open(segment, r) ?? throw Corrupt(segment, "its header");
    }

    /// <summary>The structure in <paramref name="segment"/>; throws when it has none.</summary>
    internal static SharedStats Attach(ShmemSegment segment)
        => Find(segment) ?? throw new PgIpcException($"segment {segment.Handle.Id} has no \"{ShmemName}\"; it was not made by a ClusterBuilder");

    /// <summary>
    /// The shared statistics of <paramref name="segment"/> (any process attached to it, without joining: an
    /// inspection tool); false when the segment has none. The view lives as long as the segment's mapping.
    /// </summary>
    public static bool TryOpen(ShmemSegment segment, out SharedStats? stats)
    {
        ArgumentNullException.ThrowIfNull(segment);
        stats = Find(segment);
        return stats is not null;
    }

    /// <summary>The structure, or null when the segment has none.</summary>
    internal static SharedStats? Find(ShmemSegment segment)
        => segment.IsAttached && segment.TryFindStruct(ShmemName, out ShmemRegion r) ? Open(segment, r) : null;

    private static SharedStats? Open(ShmemSegment segment, ShmemRegion r)
    {
        if (r.Size < sizeof(PgStatShmem))
            throw Corrupt(segment, $"a size of {r.Size} bytes");
        var h = (PgStatShmem*)r.Pointer;
        if (Volatile.Read(ref h->Magic) != PgStatShmem.MagicValue)
            return null;
        int max = h->MaxProcs;
        if (max < 1 || sizeof(PgStatShmem) + (long)max * sizeof(PgBackendStatus) > r.Size)
            throw Corrupt(segment, $"{max} activity slots in {r.Size} bytes");
        return new SharedStats(segment, h);
    }

    private static ShmemCorruptException Corrupt(ShmemSegment segment, string what)
        => new($"\"{ShmemName}\" of segment {segment.Handle.Id}", "header", $"has {what}");

    internal static long NowUs() => (DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks) / 10;

    private static DateTimeOffset FromUs(long us)
        => us <= 0 || us > (DateTime.MaxValue.Ticks - DateTime.UnixEpoch.Ticks) / 10 ? DateTimeOffset.UnixEpoch
            : new DateTimeOffset(DateTime.UnixEpoch.Ticks + us * 10, TimeSpan.Zero);

    private void ThrowIfDetached()
    {
        if (!_segment.IsAttached)
            throw new ObjectDisposedException(nameof(SharedStats), $"segment {_segment.Handle.Id} is detached in this process");
    }

    // ------------------------------------------------------------------
    // Writers (one per block: see PgStatShmem.cs)
    // ------------------------------------------------------------------

    /// <summary>The background writer's report of one round (pgstat_report_bgwriter). Allocates nothing.</summary>
    internal void ReportBgWriterRound(int written, bool hitMaxPages, long allocations)
    {
        ref PgStatBgWriterCounters c = ref _h->BgWriter;
        ChangeCount.BeginWrite(ref c.ChangeCount);
        c.BuffersClean += written;
        if (hitMaxPages)
            c.MaxWrittenClean++;
        c.BuffersAlloc += allocations;
        c.Rounds++;
        ChangeCount.EndWrite(ref c.ChangeCount);
    }

    /// <summary>The checkpointer's report that a checkpoint began, timed or requested. Allocates nothing.</summary>
    internal void ReportCheckpointStart(bool requested)
    {
        ref PgStatCheckpointerCounters c = ref _h->Checkpointer;
        ChangeCount.BeginWrite(ref c.ChangeCount);
        if (requested)
            c.NumRequested++;
        else
            c.NumTimed++;
        ChangeCount.EndWrite(ref c.ChangeCount);
    }

    /// <summary>The checkpointer's report of a finished checkpoint's phases (pgstat_report_checkpointer). Allocates nothing.</summary>
    internal void ReportCheckpointEnd(bool completed, long writeUs, long syncUs, long buffersWritten, long filesSynced)
    {
        ref PgStatCheckpointerCounters c = ref _h->Checkpointer;
        ChangeCount.BeginWrite(ref c.ChangeCount);
        c.WriteTimeUs += Math.Max(0, writeUs);
        c.SyncTimeUs += Math.Max(0, syncUs);
        c.BuffersWritten += buffersWritten;
        c.FilesSynced += filesSynced;
        if (completed)
            c.NumDone++;
        ChangeCount.EndWrite(ref c.ChangeCount);
    }

    // ------------------------------------------------------------------
    // Readers
    // ------------------------------------------------------------------

    /// <summary>A consistent copy of a counter block (changecount protocol; bounded retries).</summary>
    private static T ReadConsistent<T>(ref T block, ref int changeCount) where T : unmanaged
    {
        T copy = default;
        var spin = new SpinWait();
        for (int i = 0; i < ChangeCount.MaxReadTries; i++)
        {
            int before = ChangeCount.BeginRead(ref changeCount);
            copy = block;
            if (ChangeCount.EndRead(ref changeCount, before))
                return copy;
            spin.SpinOnce(sleep1Threshold: -1);
        }
        return copy; // a writer died mid-write: what was there
    }

    /// <summary>A consistent copy of a counter block, with its offset and reset time read under ResetLock.</summary>
    private (T Now, T Offset, long ResetAtUs) ReadSinceReset<T>(ref T block, ref int changeCount, ref T offset, ref long resetAtUs) where T : unmanaged
    {
        ThrowIfDetached();
        T now = ReadConsistent(ref block, ref changeCount);
        SLock.Acquire(ref _h->ResetLock, ShmemName);
        T o = offset;
        long at = resetAtUs;
        SLock.Release(ref _h->ResetLock);
        return (now, o, at);
    }

    /// <summary>pg_stat_reset_shared: the block's current values become its offset (any process; the writer is not disturbed).</summary>
    private void ResetBlock<T>(ref T block, ref int changeCount, ref T offset, ref long resetAtUs) where T : unmanaged
    {
        ThrowIfDetached();
        T now = ReadConsistent(ref block, ref changeCount);
        long at = NowUs();
        SLock.Acquire(ref _h->ResetLock, ShmemName);
        offset = now;
        resetAtUs = at;
        SLock.Release(ref _h->ResetLock);
    }

    /// <summary>pg_stat_bgwriter: the counters since the last reset.</summary>
    public PgStatBgWriter BgWriter()
    {
        (PgStatBgWriterCounters c, PgStatBgWriterCounters o, long at) =
            ReadSinceReset(ref _h->BgWriter, ref _h->BgWriter.ChangeCount, ref _h->BgWriterOffset, ref _h->BgWriterResetAtUs);
        return new PgStatBgWriter(c.BuffersClean - o.BuffersClean, c.MaxWrittenClean - o.MaxWrittenClean, c.BuffersAlloc - o.BuffersAlloc,
            c.Rounds - o.Rounds, FromUs(at));
    }

    /// <summary>pg_stat_checkpointer: the counters since the last reset.</summary>
    public PgStatCheckpointer Checkpointer()
    {
        (PgStatCheckpointerCounters c, PgStatCheckpointerCounters o, long at) =
            ReadSinceReset(ref _h->Checkpointer, ref _h->Checkpointer.ChangeCount, ref _h->CheckpointerOffset, ref _h->CheckpointerResetAtUs);
        return new PgStatCheckpointer(c.NumTimed - o.NumTimed, c.NumRequested - o.NumRequested, c.NumDone - o.NumDone,
            (c.WriteTimeUs - o.WriteTimeUs) / 1000.0, (c.SyncTimeUs - o.SyncTimeUs) / 1000.0, c.BuffersWritten - o.BuffersWritten,
            c.FilesSynced - o.FilesSynced, FromUs(at));
    }

    /// <summary>pg_stat_reset_shared('bgwriter'): the counters start again from 0 (any process may call it).</summary>
    public void ResetBgWriter()
        => ResetBlock(ref _h->BgWriter, ref _h->BgWriter.ChangeCount, ref _h->BgWriterOffset, ref _h->BgWriterResetAtUs);

    /// <summary>pg_stat_reset_shared('checkpointer'): the counters start again from 0 (any process may call it).</summary>
    public void ResetCheckpointer()
        => ResetBlock(ref _h->Checkpointer, ref _h->Checkpointer.ChangeCount, ref _h->CheckpointerOffset, ref _h->CheckpointerResetAtUs);

    /// <summary>
    /// pg_stat_activity: every participant slot in use, with what its owner last reported and what it waits for now.
    /// Each row is a consistent copy of the owner's slot; the wait event is read on its own (a single word).
    /// </summary>
    public IReadOnlyList<PgStatActivity> Activity()
    {
        ThrowIfDetached();
        List<PgStatActivity> rows = [];
        if (!ProcArray.TryReadProcs(_segment, out IReadOnlyList<PgProcInfo> procs))
            return rows;
        foreach (PgProcInfo p in procs)
            if (p.ProcNumber < MaxProcs && ReadSlot(p) is { } row)
                rows.Add(row);
        return rows;
    }

    private PgStatActivity? ReadSlot(PgProcInfo p)
    {
        PgBackendStatus* s = _slots + p.ProcNumber;
        PgBackendStatus copy = ReadConsistent(ref *s, ref s->ChangeCount);
        if (copy.Pid != p.Pid)
            return null; // joined before the structure existed, or the slot is changing hands
        var state = (ActivityState)copy.State;
        if (!Enum.IsDefined(state))
            state = ActivityState.Undefined;
        string type = Utf8Text(copy.BackendType, copy.BackendTypeLength, PgBackendStatus.BackendTypeBytes) ?? KindName(p.Kind);
        string? detail = Utf8Text(copy.Detail, copy.DetailLength, PgBackendStatus.DetailBytes);
        // An LWLock sleep is shown by LwWaiting (LWLock waits set no wait event here), as `pgipc inspect --procs` does.
        bool lw = p.LwWaiting != LWLockWaitState.NotWaiting;
        string? waitType = lw ? "LWLock" : p.WaitEvent == WaitEventId.None ? null : WaitEventRegistry.ClassNameOf(p.WaitEvent);
        string? waitName = lw ? null : p.WaitEvent == WaitEventId.None ? null : WaitEventRegistry.NameOf(p.WaitEvent);
        return new PgStatActivity(p.ProcNumber, p.Pid, p.Kind, type, state, detail, FromUs(copy.BackendStartUs), FromUs(copy.StateChangeUs),
            p.WaitEvent, waitType, waitName);
    }

    private static string? Utf8Text(byte* bytes, int length, int capacity)
        => length <= 0 ? null : System.Text.Encoding.UTF8.GetString(bytes, Math.Min(length, capacity));

    /// <summary>The backend type a slot of <paramref name="kind"/> shows until its owner names itself.</summary>
    internal static string KindName(ProcKind kind) => kind switch
    {
        ProcKind.Backend => "backend",
        ProcKind.Auxiliary => "auxiliary process",
        _ => "background worker",
    };

    /// <summary>PostgreSQL's text for a state (pg_stat_activity.state), null for <see cref="ActivityState.Undefined"/>.</summary>
    public static string? StateName(ActivityState state) => state switch
    {
        ActivityState.Idle => "idle",
        ActivityState.Active => "active",
        ActivityState.IdleInTransaction => "idle in transaction",
        ActivityState.FastPath => "fastpath function call",
        ActivityState.IdleInTransactionAborted => "idle in transaction (aborted)",
        ActivityState.Disabled => "disabled",
        _ => null,
    };

    // ------------------------------------------------------------------
    // A participant's own slot (called on its thread: the slot's one writer)
    // ------------------------------------------------------------------

    /// <summary>
    /// pgstat_bestart: the joining participant's slot in <paramref name="segment"/>'s statistics, initialised (pid,
    /// kind, start time, state undefined); null when the segment has none.
    /// </summary>
    internal static PgBackendStatus* BeginParticipant(ShmemSegment segment, int procNumber, int pid, ProcKind kind)
    {
        SharedStats? stats = Find(segment);
        if (stats is null || (uint)procNumber >= (uint)stats.MaxProcs)
            return null;
        PgBackendStatus* s = stats._slots + procNumber;
        long now = NowUs();
        ChangeCount.BeginWrite(ref s->ChangeCount);
        s->Pid = pid;
        s->Kind = (int)kind;
        s->State = (int)ActivityState.Undefined;
        s->BackendStartUs = now;
        s->StateChangeUs = now;
        s->DetailLength = 0;
        s->BackendTypeLength = 0;
        ChangeCount.EndWrite(ref s->ChangeCount);
        return s;
    }

    /// <summary>pgstat_beshutdown_hook: the leaving participant's slot shows nobody.</summary>
    internal static void EndParticipant(PgBackendStatus* s)
    {
        ChangeCount.BeginWrite(ref s->ChangeCount);
        s->Pid = 0;
        s->State = (int)ActivityState.Undefined;
        s->DetailLength = 0;
        ChangeCount.EndWrite(ref s->ChangeCount);
    }

    /// <summary>pgstat_report_activity: the state (its start time when it changes) and the detail, cut to fit. Allocates nothing.</summary>
    internal static void WriteActivity(PgBackendStatus* s, ActivityState state, ReadOnlySpan<char> detail)
    {
        long now = state == (ActivityState)s->State ? 0 : NowUs(); // our own slot: a plain read
        ChangeCount.BeginWrite(ref s->ChangeCount);
        if (now != 0)
        {
            s->State = (int)state;
            s->StateChangeUs = now;
        }
        Utf8.FromUtf16(detail, new Span<byte>(s->Detail, PgBackendStatus.DetailBytes), out _, out int written);
        s->DetailLength = written;
        ChangeCount.EndWrite(ref s->ChangeCount);
    }

    /// <summary>pgstat's backend type: what the slot's owner is, cut to fit. Allocates nothing.</summary>
    internal static void WriteBackendType(PgBackendStatus* s, ReadOnlySpan<char> type)
    {
        ChangeCount.BeginWrite(ref s->ChangeCount);
        Utf8.FromUtf16(type, new Span<byte>(s->BackendType, PgBackendStatus.BackendTypeBytes), out _, out int written);
        s->BackendTypeLength = written;
        ChangeCount.EndWrite(ref s->ChangeCount);
    }
}
