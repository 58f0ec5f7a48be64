/*-------------------------------------------------------------------------
 * XLog.Checkpoint.cs
 *   The WAL side of a checkpoint: moving the redo pointer, the checkpoint
 *   record, the control file, recycling old segments; and the request of
 *   a checkpoint when max_wal_size is passed.
 *
 * NOTES
 *   A checkpoint (CreateCheckPoint) is, in order:
 *     1. BeginCheckpoint: with every insertion lock held (no record is
 *        being copied), the redo pointer becomes the current insert
 *        position. From now on, a page changed for the first time gets a
 *        full-page image, since the data-file write of the checkpoint may
 *        tear it;
 *     2. the buffer pool writes and fsyncs every page dirtied before (the
 *        checkpointer's CheckPointBuffers; each write first flushes WAL up
 *        to the page's LSN: WAL before data);
 *     3. CompleteCheckpoint: the checkpoint record (its redo pointer,
 *        timeline, full_page_writes) is inserted and flushed; the control
 *        file is replaced to name it; segments before the redo pointer's
 *        segment are no longer needed by any recovery and are recycled
 *        (renamed to future segment names, up to max_wal_size's worth of
 *        spares) or removed.
 *   Replay after a crash starts at the redo pointer of the checkpoint the
 *   control file names; everything before it is in the data files.
 *
 *   The checkpointer's checkpoints leave the state "in production"; only
 *   the supervisor's shutdown checkpoint, taken once every child has
 *   exited, writes "shut down" (so nothing can be logged after it).
 *
 *   Mirrors CreateCheckPoint, UpdateControlFile, RemoveOldXlogFiles,
 *   InstallXLogFileSegment and XLogCheckpointNeeded in
 *   src/backend/access/transam/xlog.c.
 *-------------------------------------------------------------------------
 */
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Wal;

public sealed unsafe partial class XLog : IWalForBuffers
{
    /// <summary>Moves the redo pointer to the insert position (a checkpoint's start); returns it.</summary>
    public ulong BeginCheckpoint(Participant me)
    {
        ArgumentNullException.ThrowIfNull(me);
        AcquireAllInsertLocks(me);
        ulong redo;
        try
        {
            SLock.Acquire(ref _ctl->InsertPosLock, "WAL insert position");
            redo = Geometry.BytePosToRecPtr(_ctl->CurrBytePos);
            // Read under an insertion lock by inserters; we hold all of them.
            Volatile.Write(ref _ctl->RedoRecPtr, redo);
            SLock.Release(ref _ctl->InsertPosLock);
        }
        finally
        {
            ReleaseAllInsertLocks(me);
        }
        return redo;
    }

    /// <summary>
    /// Ends a checkpoint whose buffers are written and fsynced: inserts and flushes the checkpoint record with
    /// <paramref name="redo"/>, replaces the control file (state <paramref name="state"/>) and recycles the segments
    /// before the redo pointer's. Returns the checkpoint record's start.
    /// </summary>
    public ulong CompleteCheckpoint(Participant me, ulong redo, DbState state = DbState.InProduction)
    {
        ArgumentNullException.ThrowIfNull(me);
        Span<byte> d = stackalloc byte[WalResourceManagers.CheckpointDataSize];
        WalResourceManagers.WriteCheckpoint(d, redo, Timeline, Options.FullPageWrites, DateTimeOffset.UtcNow.ToUnixTimeSeconds());
        WalRecordBuilder b = BeginInsert();
        b.RegisterData(d);
        ulong end = b.Insert(me, WalResourceManagers.XLogId,
            state == DbState.ShutDown ? WalResourceManagers.CheckpointShutdown : WalResourceManagers.CheckpointOnline);
        ulong start = b.LastRecordStart;
        Flush(me, end);
        UpdateControlFile(me, state, start, redo);
        RemoveOldSegments(me, Geometry.SegmentOf(redo));
        return start;
    }

    /// <summary>A whole checkpoint in this thread: redo pointer, every dirty buffer written and fsynced, checkpoint record, control file.</summary>
    public ulong Checkpoint(Participant me, DbState state = DbState.InProduction)
    {
        ulong redo = BeginCheckpoint(me);
        Pool?.CheckpointBuffers(me);
        return CompleteCheckpoint(me, redo, state);
    }

    /// <summary>The control file as this WAL last wrote it.</summary>
    public ControlFileData? ReadControlFile() => ControlFile.Read(DataDirectory);

    private void UpdateControlFile(Participant me, DbState state, ulong checkpoint, ulong redo)
    {
        ref LWLock l = ref _ctl->ControlLock.Lock;
        l.Acquire(me, LWLockMode.Exclusive);
        try
        {
            ControlFile.Write(_platform.Files, DataDirectory, new ControlFileData(SystemId, state, DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
                checkpoint, redo, Timeline, Geometry.SegmentSize));
            _ctl->LastCheckpoint = checkpoint;
            _ctl->LastCheckpointRedo = redo;
            _ctl->State = (int)state;
        }
        finally
        {
            l.Release(me);
        }
    }

    /// <summary>
    /// RemoveOldXlogFiles: recycles (renames to a future name) or removes every segment before
    /// <paramref name="keepSegno"/>. Under WALWriteLock, until the directory fsync: a writer opens segments only under
    /// it, so none writes (and fsyncs, and acknowledges) WAL into a recycled segment whose new name a power loss could
    /// still take back (the simulated power-loss test lost flushed WAL that way: the next segment is a recycled one).
    /// </summary>
    private void RemoveOldSegments(Participant me, ulong keepSegno)
    {
        uint tli = Timeline;
        long maxSpares = Math.Max(1, Options.MaxWalSize / Geometry.SegmentSize);
        var existing = new HashSet<ulong>();
        var old = new List<(ulong Segno, string Path)>();
        foreach (string path in Directory.EnumerateFiles(WalDirectory))
        {
            if (!Geometry.TryParseFileName(Path.GetFileName(path), out uint t, out ulong segno) || t != tli)
                continue;
            existing.Add(segno);
            if (segno < keepSegno)
                old.Add((segno, path));
        }
        if (old.Count == 0)
            return;
        ref LWLock w = ref _ctl->WriteLock.Lock;
        w.Acquire(me, LWLockMode.Exclusive);
        try
        {
            RecycleLocked(old, existing, maxSpares, tli);
        }
        finally
        {
            w.Release(me);
        }
    }

    /// <summary>The renames and removals of <see cref="RemoveOldSegments"/>, then the directory fsync; under WALWriteLock.</summary>
    private void RecycleLocked(List<(ulong Segno, string Path)> old, HashSet<ulong> existing, long maxSpares, uint tli)
    {
        // A segment created since the listing makes its name's rename fail (overwrite: false): tried next time.
        ulong insertSeg = Geometry.SegmentOf(InsertLsn);
        bool changed = false;
        ulong next = insertSeg + 1;
        foreach ((ulong segno, string path) in old.OrderBy(o => o.Segno))
        {
            while (existing.Contains(next))
                next++;
            try
            {
                if ((long)(next - insertSeg) <= maxSpares)
                {
                    DurableFileIO.Move(path, Path.Combine(WalDirectory, Geometry.FileName(tli, next)), overwrite: false);
                    existing.Add(next);
                    Interlocked.Increment(ref _segmentsRecycled);
                }
                else
                {
                    DurableFileIO.Delete(path);
                    Interlocked.Increment(ref _segmentsRemoved);
                }
                existing.Remove(segno);
                changed = true;
            }
            catch (IOException)
            {
                // Another process has it open without FILE_SHARE_DELETE (Windows) or it vanished: try at the next checkpoint.
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        if (changed)
            DurableFileIO.FsyncDirectory(_platform.Files, WalDirectory);
    }

    private long _segmentsRecycled, _segmentsRemoved;

    /// <summary>Segments this process renamed to future names at checkpoints.</summary>
    public long SegmentsRecycled => Interlocked.Read(ref _segmentsRecycled);

    /// <summary>Segments this process removed at checkpoints.</summary>
    public long SegmentsRemoved => Interlocked.Read(ref _segmentsRemoved);

    /// <summary>XLogCheckpointNeeded: after finishing segment <paramref name="segno"/>, ask for a checkpoint when max_wal_size has passed since the redo pointer.</summary>
    private void CheckpointIfWalTooLarge(Participant me, ulong segno)
    {
        if (CheckpointRequests is not { } ckpt)
            return;
        ulong redoSeg = Geometry.SegmentOf(Volatile.Read(ref _ctl->RedoRecPtr));
        ulong maxSegs = (ulong)Math.Max(1, _ctl->MaxWalSize / _ctl->SegmentSize);
        if (segno + 1 < redoSeg + maxSegs)
            return;
        SLock.Acquire(ref _ctl->InfoLock, "WAL info");
        bool ask = _ctl->CkptRequestedSeg < redoSeg + 1;
        if (ask)
            _ctl->CkptRequestedSeg = redoSeg + 1;
        SLock.Release(ref _ctl->InfoLock);
        if (ask)
            ckpt.RequestCheckpoint(me, CheckpointFlags.None); // sets the checkpointer's latch; no wait
    }

    ulong IWalForBuffers.CompleteOnlineCheckpoint(Participant me, ulong redo) => CompleteCheckpoint(me, redo, DbState.InProduction);

    void IWalForBuffers.FlushForWrite(Participant me, ReadOnlySpan<byte> page)
    {
        // During replay a page written out to make room carries the LSN of a record being replayed: that WAL is on
        // disk already (it is what is being read), while this shared memory's flush position starts at zero until
        // replay ends. PostgreSQL advances minRecoveryPoint there instead of flushing; crash recovery needs neither.
        if (_inRecovery)
            return;
        ulong lsn = WalRecordBuilder.GetPageLsn(page);
        if (lsn != 0)
            Flush(me, lsn);
    }
}
