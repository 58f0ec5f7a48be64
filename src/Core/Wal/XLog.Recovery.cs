/*-------------------------------------------------------------------------
 * XLog.Recovery.cs
 *   Start-up of the WAL (StartupXLOG): bootstrap of a new cluster, crash
 *   recovery by replaying the log from the last checkpoint's redo pointer
 *   through the resource managers, and setting the insert position after
 *   the last valid record.
 *
 * NOTES
 *   PostgreSQL runs this in the startup process, a child of the
 *   postmaster, before any backend is let in. Here it runs in the
 *   supervisor, inside the WAL module's creation (at Build and at every
 *   crash restart), on a thread of its own joined as an auxiliary
 *   participant, before any child exists: nothing else can touch shared
 *   memory meanwhile, so no interlock with children is needed, and a
 *   failure of replay is an exception out of Build (or out of the crash
 *   restart, which then stops the cluster) naming the record, never a
 *   hang. The price: a resource manager's redo runs in the supervisor
 *   process, so a user's redo code must be registered there.
 *
 *   Steps:
 *     - no control file: a new cluster. Pick a system id, start the WAL
 *       at segment 1 and write a first checkpoint (redo = itself);
 *     - read the checkpoint record the control file names (an invalid one
 *       is an error: the cluster cannot be started safely);
 *     - state "shut down" and no record after the checkpoint: no replay;
 *     - else replay from its redo pointer until the end of valid WAL (see
 *       WalReader: a torn tail is the normal end), restoring full-page
 *       images and calling each record's redo. A page whose LSN is already
 *       at or past a record's end is not changed again (the record is in
 *       it), so replay is idempotent;
 *     - the insert position becomes the end of the last valid record; its
 *       page is read back into the WAL buffers with the bytes after the
 *       end zeroed, so the garbage of a torn tail is overwritten;
 *     - after a replay, an end-of-recovery checkpoint writes every
 *       restored page and records a new redo pointer; the state becomes
 *       "in production".
 *
 *   Mirrors StartupXLOG (xlog.c), PerformWalRecovery, ApplyWalRecord and
 *   XLogReadBufferForRedo (xlogrecovery.c, xlogutils.c), BootStrapXLOG.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Diagnostics;
using PgIpc.Buffers;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Wal;

/// <summary>What redo found for a block (XLogRedoAction).</summary>
public enum RedoAction
{
    /// <summary>The page is older than the record: apply the change (BLK_NEEDS_REDO).</summary>
    NeedsRedo,
    /// <summary>The page already has the change (BLK_DONE).</summary>
    Done,
    /// <summary>The page was restored from the record's full-page image (BLK_RESTORED).</summary>
    Restored,
}

/// <summary>What the last start-up did.</summary>
/// <param name="Bootstrapped">A new cluster: no control file was found.</param>
/// <param name="Replayed">WAL was replayed (the previous run did not shut down cleanly).</param>
/// <param name="Records">Records replayed.</param>
/// <param name="RedoStart">Where replay started (the checkpoint's redo pointer).</param>
/// <param name="EndOfWal">Where the valid WAL ended: the new insert position.</param>
/// <param name="EndReason">Why the reader stopped there.</param>
/// <param name="Elapsed">How long start-up took.</param>
public sealed record WalStartupReport(bool Bootstrapped, bool Replayed, long Records, ulong RedoStart, ulong EndOfWal, string? EndReason, TimeSpan Elapsed);

/// <summary>A record's replay: reads its blocks' pages for redo and finishes them (the page LSN, dirty, unlock, unpin).</summary>
public sealed class WalRedoContext
{
    private readonly BufferPool? _pool;
    private readonly List<int> _held = [];
    private readonly bool[] _touched = new bool[WalFormat.MaxBlockId + 1];
    private DecodedRecord _record = null!;

    internal WalRedoContext(BufferPool? pool, Participant me)
    {
        _pool = pool;
        Participant = me;
    }

    /// <summary>The participant replay runs as.</summary>
    public Participant Participant { get; }

    /// <summary>
    /// XLogReadBufferForRedo: pins and locks exclusive the page of block <paramref name="blockId"/>. Restores its
    /// full-page image when the record has one (Restored); else reports whether the page already has the change
    /// (Done) or needs it (NeedsRedo: change it through <see cref="GetPage"/>). The page LSN and dirty flag are set
    /// when the redo function returns.
    /// </summary>
    public RedoAction ReadBufferForRedo(int blockId, out int buffer)
    {
        BufferPool pool = _pool ?? throw new InvalidOperationException("this cluster has no buffer pool: records with blocks cannot be replayed");
        DecodedBlock b = _record.Block(blockId) ?? throw new PgIpcException($"record at {WalFormat.FormatLsn(_record.Lsn)} has no block {blockId}");
        _touched[blockId] = true;
        Participant me = Participant;
        if (b.ApplyImage || b.WillInit)
        {
            buffer = pool.ReadBuffer(me, b.Tag.RelNumber, b.Tag.Fork, b.Tag.BlockNumber, ReadBufferMode.ZeroAndLock);
            _held.Add(buffer);
            if (b.ApplyImage)
            {
                _record.RestoreBlockImage(blockId, pool.GetPage(me, buffer));
                return RedoAction.Restored;
            }
            return RedoAction.NeedsRedo;
        }
        buffer = pool.ReadBuffer(me, b.Tag.RelNumber, b.Tag.Fork, b.Tag.BlockNumber);
        pool.LockBuffer(me, buffer, BufferLockMode.Exclusive);
        _held.Add(buffer);
        return WalRecordBuilder.GetPageLsn(pool.GetPage(me, buffer)) >= _record.EndLsn ? RedoAction.Done : RedoAction.NeedsRedo;
    }

    /// <summary>The page of a buffer read with <see cref="ReadBufferForRedo"/>.</summary>
    public Span<byte> GetPage(int buffer) => _pool!.GetPage(Participant, buffer);

    internal void Begin(DecodedRecord record)
    {
        _record = record;
        Array.Clear(_touched);
    }

    /// <summary>Restores images the redo function did not ask for, then finishes every page read.</summary>
    internal void Finish()
    {
        if (_pool is null)
            return;
        try
        {
            for (int i = 0; i <= _record.MaxBlockId; i++)
                if (!_touched[i] && _record.Block(i) is { ApplyImage: true })
                    ReadBufferForRedo(i, out _);
        }
        finally
        {
            Participant me = Participant;
            foreach (int buffer in _held)
            {
                Span<byte> page = _pool.GetPage(me, buffer);
                if (WalRecordBuilder.GetPageLsn(page) < _record.EndLsn)
                    WalRecordBuilder.SetPageLsn(page, _record.EndLsn);
                _pool.MarkBufferDirty(me, buffer);
                _pool.LockBuffer(me, buffer, BufferLockMode.Unlock);
                _pool.ReleaseBuffer(me, buffer);
            }
            _held.Clear();
        }
    }
}

public sealed unsafe partial class XLog
{
    // True while this process replays WAL (the supervisor's start-up thread; no other process is attached then):
    // buffer writes need no WAL flush (FlushForWrite). Written and read by the start-up thread only.
    private volatile bool _inRecovery;

    /// <summary>What the start-up of this shared memory did (in the supervisor; null elsewhere).</summary>
    public WalStartupReport? LastStartup { get; private set; }

    /// <summary>StartupXLOG on a thread of its own, joined as an auxiliary participant; rethrows its failure.</summary>
    internal void RunStartup(ProcArray procs)
    {
        Exception? failure = null;
        var t = new Thread(() =>
        {
            try
            {
                Participant me;
                try { me = procs.Join(ProcKind.Auxiliary); }
                catch (NoFreeProcSlotException) { me = procs.Join(ProcKind.Backend); }
                using (me)
                    LastStartup = Startup(me);
            }
            catch (Exception e)
            {
                failure = e;
            }
        }) { IsBackground = true, Name = "pgipc wal startup" };
        t.Start();
        t.Join();
        if (failure is not null)
            throw new WalRecoveryException($"WAL start-up of \"{DataDirectory}\" failed: {failure.Message}", failure);
    }

    private WalStartupReport Startup(Participant me)
    {
        long t0 = Stopwatch.GetTimestamp();
        _platform.Files.CreatePrivateDirectory(WalDirectory);
        _platform.Files.CreatePrivateDirectory(Path.Combine(DataDirectory, "global"));
        ControlFileData? read = ControlFile.Read(DataDirectory);
        if (read is not { } cf)
        {
            // BootStrapXLOG: a new system id, the WAL starts at segment 1, a first checkpoint.
            ulong sysid = ((ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds() << 32) | (uint)Random.Shared.Next();
            _ctl->SystemId = sysid;
            _ctl->Timeline = 1;
            ulong first = Geometry.FirstRecordLsn;
            SetInsertPosition(first, first, loadPage: false);
            Volatile.Write(ref _ctl->RedoRecPtr, first);
            CompleteCheckpoint(me, first, DbState.InProduction);
            return new WalStartupReport(true, false, 0, first, InsertLsn, null, Stopwatch.GetElapsedTime(t0));
        }
        if (cf.SegmentSize != Geometry.SegmentSize)
            throw new PgIpcException($"the WAL in \"{DataDirectory}\" has segments of {cf.SegmentSize} bytes; the cluster was built with {Geometry.SegmentSize}");
        _ctl->SystemId = cf.SystemId;
        _ctl->Timeline = cf.Timeline;

        using var reader = new WalReader(WalDirectory, Geometry, cf.Timeline, cf.SystemId);
        reader.Seek(cf.CheckPoint);
        if (!reader.ReadRecord(out DecodedRecord ck))
            throw new PgIpcException($"could not locate a valid checkpoint record at {WalFormat.FormatLsn(cf.CheckPoint)}: {reader.EndReason}");
        ulong redo = WalResourceManagers.CheckpointRedo(ck)
            ?? throw new PgIpcException($"the record at {WalFormat.FormatLsn(cf.CheckPoint)} is not a checkpoint ({WalResourceManagers.NameOf(ck.RmId)}, info {ck.Info:X2})");
        ulong ckEnd = ck.EndLsn;
        bool replay = cf.State != DbState.ShutDown || redo != cf.CheckPoint;
        if (!replay && reader.ReadRecord(out _))
            replay = true; // records after a shutdown checkpoint: replay them rather than lose them
        if (!replay)
        {
            SetInsertPosition(ckEnd, cf.CheckPoint, loadPage: true);
            Volatile.Write(ref _ctl->RedoRecPtr, redo);
            UpdateControlFile(me, DbState.InProduction, cf.CheckPoint, redo);
            return new WalStartupReport(false, false, 0, redo, ckEnd, null, Stopwatch.GetElapsedTime(t0));
        }

        UpdateControlFile(me, DbState.InCrashRecovery, cf.CheckPoint, redo);
        long records = 0;
        var context = new WalRedoContext(Pool, me);
        using var replayReader = new WalReader(WalDirectory, Geometry, cf.Timeline, cf.SystemId);
        replayReader.Seek(redo);
        _inRecovery = true;
        try
        {
            while (replayReader.ReadRecord(out DecodedRecord rec))
            {
                WalResourceManager rm = WalResourceManagers.Find(rec.RmId)
                    ?? throw new PgIpcException($"record at {WalFormat.FormatLsn(rec.Lsn)} has resource manager id {rec.RmId}, which is not registered in this process");
                context.Begin(rec);
                try
                {
                    rm.Redo(context, rec);
                }
                catch (Exception e) when (e is not PgIpcException)
                {
                    throw new PgIpcException($"redo of the {rm.Name} record at {WalFormat.FormatLsn(rec.Lsn)} failed: {e.Message}", e);
                }
                finally
                {
                    context.Finish();
                }
                records++;
            }
        }
        finally
        {
            _inRecovery = false;
        }
        if (records == 0)
            throw new PgIpcException($"replay found no valid record at the redo pointer {WalFormat.FormatLsn(redo)}: {replayReader.EndReason}");
        ulong end = replayReader.NextLsn;
        SetInsertPosition(end, replayReader.LastLsn, loadPage: true);
        Volatile.Write(ref _ctl->RedoRecPtr, redo);
        // The end-of-recovery checkpoint: the restored pages go to the data files, replay will not be needed again.
        Checkpoint(me, DbState.InProduction);
        return new WalStartupReport(false, true, records, redo, end, replayReader.EndReason, Stopwatch.GetElapsedTime(t0));
    }

    /// <summary>Sets the insert, write and flush positions to <paramref name="end"/> (the next record's start) with <paramref name="lastRecord"/> as xl_prev.</summary>
    private void SetInsertPosition(ulong end, ulong lastRecord, bool loadPage)
    {
        ulong pageStart = end - end % WalFormat.PageSize;
        _ctl->CurrBytePos = Geometry.RecPtrToBytePos(end);
        _ctl->PrevBytePos = lastRecord == end ? 0 : Geometry.RecPtrToBytePos(lastRecord); // 0: the bootstrap record's prev is segment 0's first byte
        bool inPage = end % WalFormat.PageSize != 0 && end - pageStart > (ulong)Geometry.PageHeaderSize(pageStart);
        if (loadPage && inPage)
        {
            // The last page, as far as the WAL is valid, back into its buffer; the rest zeroed (the torn tail).
            int idx = BufferIndex(pageStart);
            var page = new Span<byte>(_pages + (long)idx * WalFormat.PageSize, WalFormat.PageSize);
            using (Microsoft.Win32.SafeHandles.SafeFileHandle f = XLogFileInit(Geometry.SegmentOf(pageStart)))
                RandomAccess.Read(f, page, Geometry.SegmentOffset(pageStart));
            page[(int)(end - pageStart)..].Clear();
            if (BinaryPrimitives.ReadUInt64LittleEndian(page[8..]) != pageStart)
                throw new PgIpcException($"the WAL page at {WalFormat.FormatLsn(pageStart)} changed under start-up");
            Volatile.Write(ref _xlblocks[idx], pageStart + WalFormat.PageSize);
            _ctl->InitializedUpTo = pageStart + WalFormat.PageSize;
        }
        else
            _ctl->InitializedUpTo = pageStart;
        // The write position is the page start: the partial page is written again, whole, by the next XLogWrite.
        ulong written = inPage ? pageStart : end;
        if (!loadPage)
            written = pageStart;
        _ctl->LogwrtWrite = written;
        _ctl->LogwrtFlush = end;
        _ctl->WriteRqst = end;
        _ctl->FlushRqst = end;
    }
}

/// <summary>WAL start-up (bootstrap or crash recovery) failed: the cluster cannot start safely.</summary>
public sealed class WalRecoveryException(string message, Exception inner) : PgIpcException(message, inner);
