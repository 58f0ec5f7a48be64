/*-------------------------------------------------------------------------
 * PgStatShmem.cs
 *   The layout of "PgIpc.Stats": the background writer's and the
 *   checkpointer's cumulative counters (pg_stat_bgwriter,
 *   pg_stat_checkpointer) and one activity slot per participant
 *   (PgBackendStatus, pg_stat_activity), with the changecount protocol
 *   that lets any process read a consistent copy without a lock.
 *
 * NOTES
 *   Every block has one writer: the background writer for its counters,
 *   the checkpointer for its counters, a participant for its own activity
 *   slot (a dead participant's slot is rewritten only by the next owner of
 *   the procno, after the slot was given back). A writer never takes a
 *   lock: it follows pgstat's st_changecount protocol (backend_status.h,
 *   PGSTAT_BEGIN_WRITE_ACTIVITY / PGSTAT_END_WRITE_ACTIVITY):
 *
 *     begin   Interlocked.Increment(ChangeCount)      now odd; a full fence,
 *                                                     so no store below is
 *                                                     seen before it
 *     write   plain stores of the fields
 *     end     Interlocked.Increment(ChangeCount)      now even; a full fence,
 *                                                     so every store above
 *                                                     is seen before it
 *
 *   A reader (PGSTAT_BEGIN_READ_ACTIVITY / END_READ):
 *
 *     before = Volatile.Read(ChangeCount)             acquire: the copy below
 *                                                     is not read before it
 *     copy the fields
 *     Interlocked.MemoryBarrier()                     pg_read_barrier: the copy
 *                                                     is done before the re-read
 *     after = Volatile.Read(ChangeCount)
 *     retry unless before == after and before is even
 *
 *   The increments are Interlocked (not a plain store of count + 1) so
 *   that a second writer by mistake (two background writers in one cluster)
 *   loses counts but never leaves the count odd for good. A reader gives up
 *   after a bounded number of tries (a writer that died between begin and
 *   end leaves the count odd forever) and reports what it read, checked
 *   field by field: the data is input from another process.
 *
 *   The wait event is not in the activity slot: as pgstat_report_wait_start
 *   does, it stays one 4-byte store into PGPROC (PgProc.WaitEventInfo),
 *   which a reader loads on its own; it is the only part of a participant's
 *   activity written on a hot path (every latch wait).
 *
 *   Resets (pg_stat_reset_shared) come from any process, which may not
 *   write the counters: they store the counters' current values as an
 *   offset, with the time, under ResetLock (a spinlock); a reader
 *   subtracts the offset, read under the same lock, from a consistent
 *   copy of the counters (pgstat's reset_offset).
 *
 *   Layout of "PgIpc.Stats": PgStatShmem (384 bytes, below), then
 *   PgBackendStatus[MaxProcs] (384 bytes each), indexed by procno.
 *
 *   Mirrors src/include/utils/backend_status.h, pgstat_bgwriter.c and
 *   pgstat_checkpointer.c of PostgreSQL 17.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Shmem;

namespace PgIpc.Stats;

/// <summary>
/// The background writer's counters (PgStat_BgWriterStats). Layout: 64 bytes; every field but ChangeCount written by
/// the background writer only, inside its changecount (PgStatShmem.cs).
/// <code>
///  0  ChangeCount       atomic: odd while the writer writes (Interlocked increments; readers' acquire loads)
///  8  BuffersClean      buffers written by the background writer (buffers_clean)
/// 16  MaxWrittenClean   rounds that stopped at bgwriter_lru_maxpages (maxwritten_clean)
/// 24  BuffersAlloc      buffer allocations it saw (buffers_alloc)
/// 32  Rounds            BgBufferSync rounds done
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct PgStatBgWriterCounters
{
    [FieldOffset(0)] public int ChangeCount;
    [FieldOffset(8)] public long BuffersClean;
    [FieldOffset(16)] public long MaxWrittenClean;
    [FieldOffset(24)] public long BuffersAlloc;
    [FieldOffset(32)] public long Rounds;
}

/// <summary>
/// The checkpointer's counters (PgStat_CheckpointerStats). Layout: 64 bytes; every field but ChangeCount written by
/// the checkpointer only, inside its changecount (PgStatShmem.cs).
/// <code>
///  0  ChangeCount       atomic: odd while the writer writes
///  8  NumTimed          checkpoints started by checkpoint_timeout (num_timed)
/// 16  NumRequested      checkpoints started by a request (num_requested)
/// 24  WriteTimeUs       microseconds spent writing buffers, pacing included (write_time)
/// 32  SyncTimeUs        microseconds spent in the fsync phase (sync_time)
/// 40  BuffersWritten    buffers written by checkpoints (buffers_written)
/// 48  FilesSynced       files fsynced by checkpoints
/// 56  NumDone           checkpoints that completed (num_done)
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct PgStatCheckpointerCounters
{
    [FieldOffset(0)] public int ChangeCount;
    [FieldOffset(8)] public long NumTimed;
    [FieldOffset(16)] public long NumRequested;
    [FieldOffset(24)] public long WriteTimeUs;
    [FieldOffset(32)] public long SyncTimeUs;
    [FieldOffset(40)] public long BuffersWritten;
    [FieldOffset(48)] public long FilesSynced;
    [FieldOffset(56)] public long NumDone;
}

/// <summary>
/// The header of "PgIpc.Stats". Layout: 384 bytes.
/// <code>
///   0  Magic                  immutable, written last by the initialiser
///   4  MaxProcs               immutable: activity slots that follow
///   8  ResetLock              spinlock over the reset fields (16, 24, 192, 256)
///  16  BgWriterResetAtUs      ResetLock: when the bgwriter counters were last reset (Unix µs; creation at first)
///  24  CheckpointerResetAtUs  ResetLock: the same for the checkpointer's
///  64  BgWriter               the background writer's changecount (see PgStatBgWriterCounters)
/// 128  Checkpointer           the checkpointer's changecount (see PgStatCheckpointerCounters)
/// 192  BgWriterOffset         ResetLock: the counters' values at the last reset (ChangeCount unused)
/// 256  CheckpointerOffset     ResetLock: the same
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Explicit, Size = 384)]
internal struct PgStatShmem
{
    public const uint MagicValue = 0x54415453; // "STAT"

    [FieldOffset(0)] public uint Magic;
    [FieldOffset(4)] public int MaxProcs;
    [FieldOffset(8)] public int ResetLock;
    [FieldOffset(16)] public long BgWriterResetAtUs;
    [FieldOffset(24)] public long CheckpointerResetAtUs;
    [FieldOffset(64)] public PgStatBgWriterCounters BgWriter;
    [FieldOffset(128)] public PgStatCheckpointerCounters Checkpointer;
    [FieldOffset(192)] public PgStatBgWriterCounters BgWriterOffset;
    [FieldOffset(256)] public PgStatCheckpointerCounters CheckpointerOffset;
}

/// <summary>
/// One participant's activity (PgBackendStatus). Layout: 384 bytes; every field but ChangeCount written by the
/// slot's owner only (the participant holding that procno), inside its changecount (PgStatShmem.cs).
/// <code>
///   0  ChangeCount        atomic: odd while the owner writes
///   4  Pid                the owner's pid (st_procpid); a reader shows the slot only if PGPROC has the same pid
///   8  Kind               ProcKind of the slot
///  12  State              ActivityState (st_state)
///  16  BackendStartUs     when the owner joined (st_proc_start_timestamp), Unix µs
///  24  StateChangeUs      when State last changed (st_state_start_timestamp), Unix µs
///  32  DetailLength       bytes of Detail in use (st_activity_raw's length)
///  36  BackendTypeLength  bytes of BackendType in use
///  40  BackendType[40]    UTF-8: "backend", "checkpointer", a worker's name, ... (backend_type)
/// 128  Detail[256]        UTF-8: what the owner says it does (query), cut between characters
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Explicit, Size = 384)]
internal unsafe struct PgBackendStatus
{
    public const int BackendTypeBytes = 40;
    public const int DetailBytes = 256;

    [FieldOffset(0)] public int ChangeCount;
    [FieldOffset(4)] public int Pid;
    [FieldOffset(8)] public int Kind;
    [FieldOffset(12)] public int State;
    [FieldOffset(16)] public long BackendStartUs;
    [FieldOffset(24)] public long StateChangeUs;
    [FieldOffset(32)] public int DetailLength;
    [FieldOffset(36)] public int BackendTypeLength;
    [FieldOffset(40)] public fixed byte BackendType[BackendTypeBytes];
    [FieldOffset(128)] public fixed byte Detail[DetailBytes];
}

/// <summary>The changecount protocol's two halves (PgStatShmem.cs), for every block of "PgIpc.Stats".</summary>
internal static class ChangeCount
{
    /// <summary>Tries a reader makes before it takes what it read (a writer died mid-write).</summary>
    public const int MaxReadTries = 10_000;

    /// <summary>PGSTAT_BEGIN_WRITE_ACTIVITY: the count goes odd; full fence, pairs with the reader's final re-read.</summary>
    public static void BeginWrite(ref int changeCount) => Interlocked.Increment(ref changeCount);

    /// <summary>PGSTAT_END_WRITE_ACTIVITY: the count goes even; full fence, pairs with the reader's first acquire load.</summary>
    public static void EndWrite(ref int changeCount) => Interlocked.Increment(ref changeCount);

    /// <summary>pgstat_begin_read_activity: the count before the copy (acquire).</summary>
    public static int BeginRead(ref int changeCount) => Volatile.Read(ref changeCount);

    /// <summary>pgstat_end_read_activity + pgstat_read_activity_complete: true when the copy is consistent.</summary>
    public static bool EndRead(ref int changeCount, int before)
    {
        Interlocked.MemoryBarrier(); // pg_read_barrier: the copy is complete before the count is read again
        return (before & 1) == 0 && Volatile.Read(ref changeCount) == before;
    }
}
