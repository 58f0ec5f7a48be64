/*-------------------------------------------------------------------------
 * XLog.cs
 *   The write-ahead log as mapped in this process: creating or finding its
 *   shared state, and inserting a record (reserve its space, copy it into
 *   the WAL buffers under an insertion lock, initialise buffer pages as
 *   the insert position reaches them).
 *
 * NOTES
 *   Insertion (XLogInsertRecord) is split in three so that concurrent
 *   inserters overlap:
 *     1. take one of the eight insertion locks (this participant's
 *        procno modulo 8), exclusive;
 *     2. reserve the record's bytes: under the InsertPosLock spinlock,
 *        CurrBytePos += MAXALIGN(length), PrevBytePos = the old value
 *        (ReserveXLogInsertLocation). Positions count usable bytes only,
 *        so this is two adds; the LSNs are computed after the release;
 *     3. copy the record into the buffer pages (CopyXLogRecordToWAL),
 *        writing the continuation header fields of every page it enters,
 *        then release the insertion lock clearing its progress variable.
 *   A process that must know that every insertion before some LSN is
 *   complete (a flush, or AdvanceXLInsertBuffer before it reuses a
 *   buffer) calls WaitXLogInsertionsToFinish, which waits on each
 *   insertion lock's InsertingAt variable with WaitForVar. An inserter
 *   that has to wait for a buffer page first publishes how far it has
 *   copied (UpdateVar), so waiters that need less do not wait for it:
 *   the deadlock that would otherwise follow (it waits for a page that
 *   is written only once it finishes) is xlog.c's own argument.
 *
 *   The buffers are a ring of NumBuffers pages; xlblocks[i] holds the end
 *   LSN of the page buffer i holds. AdvanceXLInsertBuffer, under
 *   WALBufMappingLock, initialises the page after InitializedUpTo in the
 *   next buffer, first writing out the page it held if that is not yet
 *   written (the buffers are full). GetXLogBuffer reads xlblocks with an
 *   acquire load paired with the release store that publishes the page.
 *
 *   The hot path (an insert without a flush) allocates nothing: the
 *   record is assembled in the builder's buffers (WalRecordBuilder.cs),
 *   reused across records.
 *
 *   Writing and flushing are in XLog.Write.cs, checkpoints and the control
 *   file in XLog.Checkpoint.cs, recovery in XLog.Recovery.cs.
 *
 *   Mirrors XLogInsertRecord, ReserveXLogInsertLocation,
 *   CopyXLogRecordToWAL, WALInsertLockAcquire/Release,
 *   WALInsertLockUpdateInsertingAt, WaitXLogInsertionsToFinish,
 *   GetXLogBuffer, AdvanceXLInsertBuffer and XLOGShmemInit in
 *   src/backend/access/transam/xlog.c.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Wal;

/// <summary>
/// The write-ahead log of a cluster (a module: <c>ClusterBuilder.WithWal</c>; every process reaches it with
/// <c>cluster.Get&lt;XLog&gt;()</c>). Records are built with <see cref="BeginInsert"/>, made durable with
/// <see cref="Flush"/>; the supervisor replays the log after a crash before any child starts.
/// </summary>
public sealed unsafe partial class XLog : IDisposable
{
    internal const string ShmemName = "PgIpc.XLogCtl";
    /// <summary>NUM_XLOGINSERT_LOCKS.</summary>
    public const int NumInsertLocks = 8;

    private readonly XLogCtlData* _ctl;
    private readonly WalInsertLockPadded* _locks;
    private readonly ulong* _xlblocks;
    private readonly byte* _pages;
    private readonly int _nbuffers;
    private readonly ulong _earlyWriteBytes; // half the ring: WriteOutEarly's threshold
    private readonly ProcArray _procs;
    private readonly IPgIpcPlatform _platform;

    private XLog(XLogCtlData* ctl, ProcArray procs, IPgIpcPlatform platform, WalOptions options, string dataDirectory)
    {
        _ctl = ctl;
        _procs = procs;
        _platform = platform;
        _nbuffers = ctl->NumBuffers;
        _earlyWriteBytes = (ulong)_nbuffers / 2 * WalFormat.PageSize;
        _locks = (WalInsertLockPadded*)((byte*)ctl + sizeof(XLogCtlData));
        _xlblocks = (ulong*)(_locks + NumInsertLocks);
        _pages = (byte*)(_xlblocks + _nbuffers);
        Options = options;
        Geometry = new WalGeometry(ctl->SegmentSize);
        DataDirectory = dataDirectory;
        WalDirectory = Path.Combine(dataDirectory, "pg_wal");
    }

    /// <summary>The options the WAL runs with.</summary>
    public WalOptions Options { get; }

    /// <summary>The segment geometry.</summary>
    public WalGeometry Geometry { get; }

    /// <summary>The data directory.</summary>
    public string DataDirectory { get; }

    /// <summary>The directory of the segment files (&lt;datadir&gt;/pg_wal).</summary>
    public string WalDirectory { get; }

    /// <summary>The timeline.</summary>
    public uint Timeline => Volatile.Read(ref _ctl->Timeline);

    /// <summary>The cluster's system id (in every long page header and the control file).</summary>
    public ulong SystemId => Volatile.Read(ref _ctl->SystemId);

    /// <summary>The number of 8 KiB WAL buffers.</summary>
    public int NumBuffers => _nbuffers;

    /// <summary>The buffer pool whose writes this WAL precedes, if any (set by the module).</summary>
    internal BufferPool? Pool { get; set; }

    /// <summary>The checkpointer to ask for a checkpoint when max_wal_size is passed, if any.</summary>
    internal Checkpointer? CheckpointRequests { get; set; }

    /// <summary>Bytes of "PgIpc.XLogCtl" for <paramref name="numBuffers"/> buffers (XLOGShmemSize).</summary>
    internal static long ShmemSize(int numBuffers)
        => Shmem.ShmemSize.Add(Shmem.ShmemSize.Add(sizeof(XLogCtlData) + NumInsertLocks * sizeof(WalInsertLockPadded),
            Shmem.ShmemSize.Mul(numBuffers, sizeof(ulong))), Shmem.ShmemSize.Mul(numBuffers, WalFormat.PageSize));

    /// <summary>Creates (the supervisor) or finds the WAL's shared state and opens this process's view (XLOGShmemInit).</summary>
    internal static XLog Init(ShmemSegment segment, ProcArray procs, WalOptions options, int numBuffers, string dataDirectory, bool creating)
    {
        options.Validate();
        if (numBuffers < 8)
            throw new ArgumentOutOfRangeException(nameof(numBuffers), numBuffers, "at least 8 WAL buffers");
        ShmemRegion r = segment.InitStruct(ShmemName, ShmemSize(numBuffers), region =>
        {
            var h = (XLogCtlData*)region.Pointer;
            new Span<byte>(h, (int)Math.Min(region.Size, sizeof(XLogCtlData) + NumInsertLocks * sizeof(WalInsertLockPadded)
                + (long)numBuffers * sizeof(ulong))).Clear();
            SLock.Init(ref h->InsertPosLock);
            SLock.Init(ref h->InfoLock);
            h->WriteLock.Lock.Initialize(BuiltinTranche.WalWrite);
            h->BufMappingLock.Lock.Initialize(BuiltinTranche.WalBufMapping);
            h->ControlLock.Lock.Initialize(BuiltinTranche.ControlFile);
            var locks = (WalInsertLockPadded*)((byte*)h + sizeof(XLogCtlData));
            for (int i = 0; i < NumInsertLocks; i++)
            {
                locks[i].Lock.Initialize(BuiltinTranche.WalInsert);
                locks[i].InsertingAt = 0;
            }
            h->NumBuffers = numBuffers;
            h->SegmentSize = options.SegmentSize;
            h->FullPageWrites = options.FullPageWrites ? 1 : 0;
            h->MaxWalSize = options.MaxWalSize;
            h->WriterDelayMs = options.WriterDelayMs;
            h->WriterFlushAfter = options.WriterFlushAfterBytes;
            h->Magic = XLogCtlData.MagicValue;
        }, out bool found);
        if (found == creating)
            throw new PgIpcException(creating ? $"segment {segment.Handle.Id} already has a WAL" : $"segment {segment.Handle.Id} records a WAL but has no \"{ShmemName}\"");
        var ctl = (XLogCtlData*)r.Pointer;
        if (ctl->Magic != XLogCtlData.MagicValue || ctl->NumBuffers != numBuffers || ctl->SegmentSize != options.SegmentSize)
            throw new PgIpcException($"\"{ShmemName}\" in segment {segment.Handle.Id} does not match the recorded WAL options");
        return new XLog(ctl, procs, segment.Platform, options, dataDirectory);
    }

    // ------------------------------------------------------------------
    // Positions
    // ------------------------------------------------------------------

    /// <summary>Where the next record will go (GetXLogInsertRecPtr).</summary>
    public ulong InsertLsn
    {
        get
        {
            SLock.Acquire(ref _ctl->InsertPosLock, "WAL insert position");
            ulong pos = _ctl->CurrBytePos;
            SLock.Release(ref _ctl->InsertPosLock);
            return Geometry.BytePosToRecPtr(pos);
        }
    }

    /// <summary>WAL is durable up to here (GetFlushRecPtr). Acquire load; pairs with XLogWrite's release store after the fsync.</summary>
    public ulong FlushLsn => Volatile.Read(ref _ctl->LogwrtFlush);

    /// <summary>WAL is written (not necessarily durable) up to here.</summary>
    public ulong WriteLsn => Volatile.Read(ref _ctl->LogwrtWrite);

    /// <summary>The redo pointer: pages changed first after it get a full-page image (GetRedoRecPtr).</summary>
    public ulong RedoLsn
    {
        // Acquire load, no spinlock (an aligned 64-bit read is never torn); pairs with BeginCheckpoint's release store.
        // Inserters read it racily to assemble, then re-check it under their insertion lock (InsertRecord).
        get => Volatile.Read(ref _ctl->RedoRecPtr);
    }

    /// <summary>A snapshot of the counters and positions.</summary>
    public WalStats Stats
    {
        get
        {
            SLock.Acquire(ref _ctl->InsertPosLock, "WAL insert position");
            ulong insert = Geometry.BytePosToRecPtr(_ctl->CurrBytePos);
            long records = _ctl->Records, bytes = _ctl->BytesInserted;
            SLock.Release(ref _ctl->InsertPosLock);
            ulong ckpt = Volatile.Read(ref _ctl->LastCheckpoint);
            return new WalStats(insert, WriteLsn, FlushLsn, RedoLsn, ckpt, records,
                bytes, Interlocked.Read(ref _ctl->FullPageImages), Interlocked.Read(ref _ctl->Writes),
                Interlocked.Read(ref _ctl->Fsyncs), Interlocked.Read(ref _ctl->Flushes));
        }
    }

    /// <summary>Starts a record in xloginsert.c's style: the calling thread's builder, emptied (XLogBeginInsert).</summary>
    public WalRecordBuilder BeginInsert() => WalRecordBuilder.Begin(this);

    // ------------------------------------------------------------------
    // Insertion
    // ------------------------------------------------------------------

    /// <summary>
    /// Inserts an assembled record (XLogInsertRecord): <paramref name="record"/> is its TotalLength bytes with the
    /// CRC of the payload folded into <paramref name="payloadCrc"/>; xl_prev and the CRC are filled in here. When
    /// <paramref name="fpwLsn"/> (the oldest page LSN of a block logged without an image) is at or before the redo
    /// pointer, the record must be assembled again with images: returns 0 and inserts nothing. Else the end LSN.
    /// </summary>
    internal ulong InsertRecord(Participant me, Span<byte> record, uint payloadCrc, ulong fpwLsn, ulong assembledRedo, out ulong startLsn,
        bool hasImages)
    {
        int total = record.Length;
        ulong size = WalFormat.MaxAlign((ulong)total);
        ref WalInsertLockPadded l = ref _locks[me.ProcNumber & (NumInsertLocks - 1)];
        l.Lock.Acquire(me, LWLockMode.Exclusive);
        // RedoRecPtr is stable while we hold an insertion lock (a checkpoint takes all of them to move it). Only a
        // record with a block logged without an image (fpwLsn != 0) depends on it: others do not read it, since its
        // cache line is the insert position's, which the reservation below takes exclusive (a read first would cost
        // a second transfer of the line when inserters in several processes contend for it).
        if (fpwLsn != 0 && _ctl->FullPageWrites != 0 && Volatile.Read(ref _ctl->RedoRecPtr) is ulong redo
            && redo != assembledRedo && fpwLsn <= redo)
        {
            l.Lock.ReleaseClearVar(me, ref l.InsertingAt, 0);
            startLsn = 0;
            return 0;
        }

        // ReserveXLogInsertLocation.
        SLock.Acquire(ref _ctl->InsertPosLock, "WAL insert position");
        ulong startByte = _ctl->CurrBytePos;
        ulong prevByte = _ctl->PrevBytePos;
        _ctl->CurrBytePos = startByte + size;
        _ctl->PrevBytePos = startByte;
        _ctl->Records++; // statistics: in the cache line this critical section owns already
        _ctl->BytesInserted += (long)size;
        SLock.Release(ref _ctl->InsertPosLock);
        ulong start = Geometry.BytePosToRecPtr(startByte);
        // A record ending in its first page ends size bytes on (at the page's end at most): no division.
        ulong end = start % WalFormat.PageSize + size <= WalFormat.PageSize ? start + size : Geometry.BytePosToEndRecPtr(startByte + size);
        ulong prev = Geometry.BytePosToRecPtr(prevByte);

        BinaryPrimitives.WriteUInt64LittleEndian(record[8..], prev);
        uint crc = WalFormat.Crc32C(payloadCrc, record[..WalFormat.RecordCrcOffset]);
        BinaryPrimitives.WriteUInt32LittleEndian(record[WalFormat.RecordCrcOffset..], ~crc);

        CopyToBuffers(me, ref l, record, start, end);
        // Our progress is published only when we waited for a buffer page; when it is still 0 (the usual case) the
        // exchange is not needed: only the holder writes it, and Release is the ordering point for WaitForVar.
        if (l.InsertingAt != 0)
            l.Lock.ReleaseClearVar(me, ref l.InsertingAt, 0);
        else
            l.Lock.Release(me);

        if (hasImages)
            Interlocked.Increment(ref _ctl->FullPageImages);
        // Once per page entered: when half the ring is unwritten, write the finished pages out now, while the other
        // half is still free for inserters (WriteOutEarly), instead of when the ring is full and every inserter waits.
        // Acquire load of LogwrtWrite; pairs with XLogWrite's release store.
        if (start / WalFormat.PageSize != end / WalFormat.PageSize && end > Volatile.Read(ref _ctl->LogwrtWrite) + _earlyWriteBytes)
            WriteOutEarly(me, end);
        startLsn = start;
        return end;
    }

    /// <summary>
    /// Writes out every finished page when half the WAL buffers hold unwritten WAL, unless another process holds
    /// WALWriteLock (it is writing already): the write (the kernel's copy into the page cache, and the fsync of a
    /// segment finished on the way) then overlaps other inserters' copies into the free half of the ring. Without it
    /// the ring fills, AdvanceXLInsertBuffer writes it out, and every inserter waits for the write. The caller holds
    /// no insertion lock. PostgreSQL leaves this to the WAL writer (XLogBackgroundFlush writes completed pages); an
    /// inserter doing it keeps a cluster without a WAL writer, or with fewer free CPUs, from stalling on a full ring.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteOutEarly(Participant me, ulong end)
    {
        ref LWLock w = ref _ctl->WriteLock.Lock;
        if (w.IsHeldExclusive) // WALWriteLock is only ever taken exclusive
            return;
        // Wait for the insertions before our page (they are copying: short) before taking WALWriteLock, never while
        // holding it: an inserter waiting for a buffer page needs WALWriteLock to free one.
        ulong done = WaitXLogInsertionsToFinish(me, end - end % WalFormat.PageSize);
        ulong target = done - done % WalFormat.PageSize;
        if (target <= Volatile.Read(ref _ctl->LogwrtWrite) || !w.ConditionalAcquire(me, LWLockMode.Exclusive))
            return;
        try
        {
            if (Volatile.Read(ref _ctl->LogwrtWrite) < target)
                XLogWrite(me, target, 0);
        }
        finally
        {
            w.Release(me);
        }
    }

    /// <summary>CopyXLogRecordToWAL: copies the record from <paramref name="start"/>, filling continuation headers.</summary>
    private void CopyToBuffers(Participant me, ref WalInsertLockPadded l, ReadOnlySpan<byte> rec, ulong start, ulong end)
    {
        ulong ptr = start;
        byte* page = GetXLogBuffer(me, ref l, ptr);
        int free = WalFormat.PageSize - (int)(ptr % WalFormat.PageSize);
        while (rec.Length > free)
        {
            rec[..free].CopyTo(new Span<byte>(page, free));
            rec = rec[free..];
            ptr += (ulong)free;
            page = GetXLogBuffer(me, ref l, ptr); // a page start: its header is initialised already
            var hdr = (ushort*)(page + 2);
            *hdr |= WalFormat.FirstIsContRecord;
            *(uint*)(page + 16) = (uint)rec.Length; // xlp_rem_len
            int hs = Geometry.PageHeaderSize(ptr);
            page += hs;
            ptr += (ulong)hs;
            free = WalFormat.PageSize - hs;
        }
        rec.CopyTo(new Span<byte>(page, rec.Length));
        ptr += (ulong)rec.Length;
        if (WalFormat.MaxAlign(ptr) != end)
            throw new PgIpcException($"WAL space reserved for a record ends at {WalFormat.FormatLsn(end)}, but the copy ended at {WalFormat.FormatLsn(ptr)}");
    }

    /// <summary>GetXLogBuffer: the address of <paramref name="ptr"/> in the WAL buffers, initialising its page first if needed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* GetXLogBuffer(Participant me, ref WalInsertLockPadded l, ulong ptr)
    {
        int idx = BufferIndex(ptr);
        ulong expectedEnd = ptr - ptr % WalFormat.PageSize + WalFormat.PageSize;
        // Acquire load; pairs with AdvanceXLInsertBuffer's release store of the page's end.
        if (Volatile.Read(ref _xlblocks[idx]) != expectedEnd)
            WaitForBufferPage(me, ref l, ptr, idx, expectedEnd);
        return _pages + (long)idx * WalFormat.PageSize + (long)(ptr % WalFormat.PageSize);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WaitForBufferPage(Participant me, ref WalInsertLockPadded l, ulong ptr, int idx, ulong expectedEnd)
    {
        // WALInsertLockUpdateInsertingAt: everything of ours before the page is copied; a flusher waiting for less need
        // not wait for us. Publish the page's start, never a position inside it: its header is written by the page's
        // initialisation (below), not by us, and a flusher that took ptr (just past the header) as "inserted up to"
        // would ask XLogWrite for a page that is not in the buffers yet (xlog.c's GetXLogBuffer does the same).
        ulong copiedUpTo = ptr - ptr % WalFormat.PageSize;
        l.Lock.UpdateVar(me, ref l.InsertingAt, copiedUpTo);
        AdvanceXLInsertBuffer(me, ptr, false);
        ulong got = Volatile.Read(ref _xlblocks[idx]);
        if (got != expectedEnd)
            throw new PgIpcException($"WAL buffer {idx} holds the page ending at {WalFormat.FormatLsn(got)}, expected {WalFormat.FormatLsn(expectedEnd)}");
    }

    private int BufferIndex(ulong ptr) => (int)(ptr / WalFormat.PageSize % (ulong)_nbuffers);

    /// <summary>
    /// AdvanceXLInsertBuffer: initialises buffer pages up to the one holding <paramref name="upto"/>, writing out the
    /// oldest pages when the ring is full. With <paramref name="opportunistic"/>, stops instead of writing.
    /// </summary>
    private void AdvanceXLInsertBuffer(Participant me, ulong upto, bool opportunistic)
    {
        ref LWLock mapping = ref _ctl->BufMappingLock.Lock;
        mapping.Acquire(me, LWLockMode.Exclusive);
        try
        {
            while (upto >= _ctl->InitializedUpTo)
            {
                ulong newPageBegin = _ctl->InitializedUpTo;
                int nextidx = BufferIndex(newPageBegin);
                ulong oldPageEnd = Volatile.Read(ref _xlblocks[nextidx]);
                if (Volatile.Read(ref _ctl->LogwrtWrite) < oldPageEnd)
                {
                    if (opportunistic)
                        break;
                    // The buffer still holds a page not yet written: write it (and what precedes it) out.
                    mapping.Release(me);
                    try
                    {
                        SLock.Acquire(ref _ctl->InfoLock, "WAL info");
                        if (_ctl->WriteRqst < oldPageEnd)
                            _ctl->WriteRqst = oldPageEnd;
                        SLock.Release(ref _ctl->InfoLock);
                        // Write out every whole page whose insertions are finished, not only the oldest: one write(2)
                        // per run of the ring instead of one per 8 KiB page. WaitXLogInsertionsToFinish waits only up
                        // to oldPageEnd and returns how far all insertions are known to be complete (at most our own
                        // published progress, the start of the page we wait for): those pages are initialised.
                        ulong done = WaitXLogInsertionsToFinish(me, oldPageEnd);
                        ulong target = Math.Max(oldPageEnd, done - done % WalFormat.PageSize);
                        ref LWLock w = ref _ctl->WriteLock.Lock;
                        w.Acquire(me, LWLockMode.Exclusive);
                        try
                        {
                            if (Volatile.Read(ref _ctl->LogwrtWrite) < oldPageEnd)
                                XLogWrite(me, target, 0);
                        }
                        finally
                        {
                            w.Release(me);
                        }
                    }
                    finally
                    {
                        mapping.Acquire(me, LWLockMode.Exclusive);
                    }
                    continue;
                }
                ulong newPageEnd = newPageBegin + WalFormat.PageSize;
                // Invalidate first: an inserter reading the old end now sees a mismatch and comes here to wait.
                Volatile.Write(ref _xlblocks[nextidx], 0);
                byte* p = _pages + (long)nextidx * WalFormat.PageSize;
                InitPage(new Span<byte>(p, WalFormat.PageSize), newPageBegin);
                // Release store; pairs with GetXLogBuffer's acquire load.
                Volatile.Write(ref _xlblocks[nextidx], newPageEnd);
                _ctl->InitializedUpTo = newPageEnd;
            }
        }
        finally
        {
            mapping.Release(me);
        }
    }

    /// <summary>Zeroes a page and writes its header (short, or long at a segment start).</summary>
    internal void InitPage(Span<byte> page, ulong pageStart)
    {
        page.Clear();
        bool isLong = Geometry.SegmentOffset(pageStart) == 0;
        BinaryPrimitives.WriteUInt16LittleEndian(page, WalFormat.PageMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(page[2..], isLong ? WalFormat.LongHeader : (ushort)0);
        BinaryPrimitives.WriteUInt32LittleEndian(page[4..], _ctl->Timeline);
        BinaryPrimitives.WriteUInt64LittleEndian(page[8..], pageStart);
        if (isLong)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(page[24..], _ctl->SystemId);
            BinaryPrimitives.WriteUInt32LittleEndian(page[32..], (uint)_ctl->SegmentSize);
            BinaryPrimitives.WriteUInt32LittleEndian(page[36..], WalFormat.PageSize);
        }
    }

    /// <summary>
    /// WaitXLogInsertionsToFinish: waits until every insertion into WAL before <paramref name="upto"/> is copied into
    /// the buffers; returns the position up to which all are (at least <paramref name="upto"/>, clamped to the insert position).
    /// </summary>
    internal ulong WaitXLogInsertionsToFinish(Participant me, ulong upto)
    {
        SLock.Acquire(ref _ctl->InsertPosLock, "WAL insert position");
        ulong bytepos = _ctl->CurrBytePos;
        SLock.Release(ref _ctl->InsertPosLock);
        ulong reservedUpto = Geometry.BytePosToEndRecPtr(bytepos);
        if (upto > reservedUpto)
            upto = reservedUpto;
        ulong finishedUpto = reservedUpto;
        for (int i = 0; i < NumInsertLocks; i++)
        {
            ulong insertingAt = 0;
            do
            {
                // True: the lock is free (nobody inserting); else the holder published new progress.
                if (_locks[i].Lock.WaitForVar(me, ref _locks[i].InsertingAt, insertingAt, out ulong newValue))
                {
                    insertingAt = 0;
                    break;
                }
                insertingAt = newValue;
            } while (insertingAt < upto);
            if (insertingAt != 0 && insertingAt < finishedUpto)
                finishedUpto = insertingAt;
        }
        return finishedUpto;
    }

    /// <summary>For tests: insertion lock <paramref name="i"/>'s published progress (0 when not inserting).</summary>
    internal ulong InsertingAtOf(int i) => Volatile.Read(ref _locks[i].InsertingAt);

    /// <summary>For tests: the end of the last initialised buffer page.</summary>
    internal ulong InitializedUpTo
    {
        // Acquire load; the writer is AdvanceXLInsertBuffer under WALBufMappingLock (a racy snapshot is what tests want).
        get => Volatile.Read(ref _ctl->InitializedUpTo);
    }

    /// <summary>For tests: WALWriteLock.</summary>
    internal ref LWLock WriteLockForTests => ref _ctl->WriteLock.Lock;

    /// <summary>
    /// Takes every insertion lock (WALInsertLockAcquireExclusive), in index order, publishing "nothing in progress"
    /// (ulong.MaxValue) on each as it is taken: the holder inserts nothing meanwhile. Without that, an inserter
    /// holding lock k that must write out a full buffer (WaitXLogInsertionsToFinish) would wait on the locks before k,
    /// held by us with no progress published, while we wait for lock k: a deadlock (xlog.c publishes the same).
    /// </summary>
    private void AcquireAllInsertLocks(Participant me)
    {
        for (int i = 0; i < NumInsertLocks; i++)
        {
            _locks[i].Lock.Acquire(me, LWLockMode.Exclusive);
            // UpdateVar's store and wake-up pair with WaitXLogInsertionsToFinish's WaitForVar.
            _locks[i].Lock.UpdateVar(me, ref _locks[i].InsertingAt, ulong.MaxValue);
        }
    }

    private void ReleaseAllInsertLocks(Participant me)
    {
        for (int i = NumInsertLocks - 1; i >= 0; i--)
            _locks[i].Lock.ReleaseClearVar(me, ref _locks[i].InsertingAt, 0);
    }

    /// <summary>Closes this process's WAL files (the module's detach).</summary>
    public void Dispose() => CloseSegment();
}
