/*-------------------------------------------------------------------------
 * XLog.Write.cs
 *   Writing the WAL buffers out to the segment files and making them
 *   durable: XLogWrite, XLogFlush (group commit), the background flush of
 *   the WAL writer, and the segment files (created pre-allocated, opened
 *   as the write position reaches them).
 *
 * NOTES
 *   XLogWrite runs under WALWriteLock. It writes whole pages from the
 *   write position up to the request, one write(2) per run of pages that
 *   are contiguous in both the buffer ring and one segment file; a page
 *   only partly filled is written whole (the rest is zeros or a record in
 *   progress, rewritten later). A segment finished on the way is fsynced
 *   before the next is opened, as xlog.c does. LogwrtWrite and LogwrtFlush
 *   are published with release stores after the write and the fsync.
 *
 *   XLogFlush is group commit. A committer whose LSN is not yet flushed
 *   waits for the insertions before the current insert position to finish,
 *   then LWLockAcquireOrWait(WALWriteLock): if it gets the lock it flushes
 *   everything inserted so far (its own record and every concurrent
 *   committer's) with one fsync; if the lock was busy it sleeps until the
 *   holder releases it and then re-checks LogwrtFlush: usually the
 *   holder's fsync covered it and it returns without any I/O. Hence fewer
 *   fsyncs than commits when committers overlap (WalStats.Fsyncs).
 *
 *   Durability: the flush is the platform's IFileSync.FlushFileData:
 *   fdatasync(2) on Linux (.NET has none; the segments are pre-allocated,
 *   so their size never changes and fdatasync covers everything a reader
 *   needs, without the inode's mtime update fsync would also write),
 *   fsync(2) on the other Unixes, FlushFileBuffers on Windows; writes and
 *   flushes go through DurableFileIO, where a test's power-loss layer sees
 *   them. A failed fsync of WAL is fatal
 *   (PostgreSQL PANICs): it throws WalFsyncFailedException and the host
 *   must exit with a crash code.
 *
 *   Segment files: XLogFileInit creates a missing segment as a zero-filled
 *   temp file, fsyncs it, renames it into place and fsyncs the directory,
 *   so a crash never leaves a short segment under a real name. Recycled
 *   segments (XLog.Checkpoint.cs) are reused as they are: the reader tells
 *   their stale pages by the page address.
 *
 *   Mirrors XLogWrite, XLogFlush, XLogBackgroundFlush, XLogFileInit,
 *   XLogFileOpen and issue_xlog_fsync in src/backend/access/transam/xlog.c.
 *-------------------------------------------------------------------------
 */
using Microsoft.Win32.SafeHandles;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Wal;

/// <summary>An fsync of a WAL segment failed: WAL already acknowledged may be lost; the process must exit with a crash code.</summary>
public sealed class WalFsyncFailedException(string path, Exception inner)
    : PgIpcException($"could not fsync WAL file \"{path}\": {inner.Message}", inner);

public sealed unsafe partial class XLog
{
    // Only the WALWriteLock holder touches these (one writer in the cluster at a time).
    private SafeFileHandle? _openFile;
    private ulong _openSegno = ulong.MaxValue;

    /// <summary>
    /// Makes WAL durable up to at least <paramref name="lsn"/> (XLogFlush): returns once everything inserted before it
    /// is written and fsynced, usually together with other committers' records (group commit). Throws when
    /// <paramref name="lsn"/> is past the insert position.
    /// </summary>
    public void Flush(Participant me, ulong lsn)
    {
        // Acquire load; pairs with XLogWrite's release store after the fsync.
        if (lsn <= Volatile.Read(ref _ctl->LogwrtFlush))
            return;
        FlushSlow(me, lsn);
    }

    private void FlushSlow(Participant me, ulong lsn)
    {
        ArgumentNullException.ThrowIfNull(me);
        ulong insertEnd = Geometry.BytePosToEndRecPtr(CurrBytePos());
        if (lsn > insertEnd)
            throw new PgIpcException($"WAL flush request {FormatLsn(lsn)} is not satisfied: the WAL ends at {FormatLsn(insertEnd)} (a page LSN from the future?)");
        while (true)
        {
            SLock.Acquire(ref _ctl->InfoLock, "WAL info");
            if (_ctl->WriteRqst < lsn)
                _ctl->WriteRqst = lsn;
            if (_ctl->FlushRqst < lsn)
                _ctl->FlushRqst = lsn;
            SLock.Release(ref _ctl->InfoLock);
            if (lsn <= Volatile.Read(ref _ctl->LogwrtFlush))
                return;
            // Flush everything inserted so far, not only our record: concurrent committers ride along.
            ulong insertPos = WaitXLogInsertionsToFinish(me, Geometry.BytePosToEndRecPtr(CurrBytePos()));
            ref LWLock w = ref _ctl->WriteLock.Lock;
            if (!w.AcquireOrWait(me, LWLockMode.Exclusive))
                continue; // the holder finished: re-check whether its flush covered us
            try
            {
                if (lsn <= Volatile.Read(ref _ctl->LogwrtFlush))
                    return;
                XLogWrite(me, insertPos, insertPos);
            }
            finally
            {
                w.Release(me);
            }
            if (lsn <= Volatile.Read(ref _ctl->LogwrtFlush))
                return;
        }
    }

    /// <summary>
    /// XLogBackgroundFlush (the WAL writer's round): flushes every completed insertion when there is any unflushed
    /// WAL. Returns true when it wrote something.
    /// </summary>
    public bool BackgroundFlush(Participant me)
    {
        ArgumentNullException.ThrowIfNull(me);
        ulong insertEnd = Geometry.BytePosToEndRecPtr(CurrBytePos());
        if (insertEnd <= Volatile.Read(ref _ctl->LogwrtFlush))
            return false;
        ulong upto = WaitXLogInsertionsToFinish(me, insertEnd);
        ref LWLock w = ref _ctl->WriteLock.Lock;
        w.Acquire(me, LWLockMode.Exclusive);
        try
        {
            if (upto <= Volatile.Read(ref _ctl->LogwrtFlush))
                return false;
            XLogWrite(me, upto, upto);
            return true;
        }
        finally
        {
            w.Release(me);
        }
    }

    private ulong CurrBytePos()
    {
        SLock.Acquire(ref _ctl->InsertPosLock, "WAL insert position");
        ulong pos = _ctl->CurrBytePos;
        SLock.Release(ref _ctl->InsertPosLock);
        return pos;
    }

    private static string FormatLsn(ulong lsn) => WalFormat.FormatLsn(lsn);

    /// <summary>
    /// XLogWrite: writes the buffers from the write position up to <paramref name="writeRqst"/> and, when
    /// <paramref name="flushRqst"/> is past the flush position, fsyncs. The caller holds WALWriteLock and has waited
    /// for the insertions before <paramref name="writeRqst"/>.
    /// </summary>
    private void XLogWrite(Participant me, ulong writeRqst, ulong flushRqst)
    {
        ulong write = Volatile.Read(ref _ctl->LogwrtWrite);
        int startIdx = -1, npages = 0;
        ulong startPageBegin = 0;
        while (write < writeRqst)
        {
            int idx = BufferIndex(write);
            ulong endPtr = Volatile.Read(ref _xlblocks[idx]);
            ulong pageBegin = endPtr - WalFormat.PageSize;
            if (endPtr == 0 || write < pageBegin || write >= endPtr)
                throw new PgIpcException($"WAL write request {FormatLsn(writeRqst)} is past the end of the WAL buffers (write position {FormatLsn(write)}, buffer {idx} ends at {FormatLsn(endPtr)})");
            ulong segno = Geometry.SegmentOf(pageBegin);
            if (npages > 0 && (idx != startIdx + npages || Geometry.SegmentOf(startPageBegin) != segno))
            {
                WritePages(startIdx, npages, startPageBegin);
                npages = 0;
            }
            if (npages == 0)
            {
                startIdx = idx;
                startPageBegin = pageBegin;
            }
            npages++;
            write = endPtr;
            bool partial = writeRqst < endPtr;
            bool lastOfSegment = Geometry.SegmentOffset(endPtr) == 0;
            if (partial || lastOfSegment || idx == _nbuffers - 1)
            {
                WritePages(startIdx, npages, startPageBegin);
                npages = 0;
                if (lastOfSegment && !partial)
                {
                    // A finished segment is fsynced before we move on (and max_wal_size may want a checkpoint).
                    SyncOpenSegment();
                    Volatile.Write(ref _ctl->LogwrtWrite, endPtr);
                    if (Volatile.Read(ref _ctl->LogwrtFlush) < endPtr)
                        Volatile.Write(ref _ctl->LogwrtFlush, endPtr);
                    CheckpointIfWalTooLarge(me, segno);
                }
            }
            if (partial)
            {
                write = writeRqst;
                break;
            }
        }
        if (npages > 0)
            WritePages(startIdx, npages, startPageBegin);
        // Release store; pairs with the acquire loads of WriteLsn / AdvanceXLInsertBuffer.
        if (write > Volatile.Read(ref _ctl->LogwrtWrite))
            Volatile.Write(ref _ctl->LogwrtWrite, write);

        if (flushRqst > Volatile.Read(ref _ctl->LogwrtFlush) && write > Volatile.Read(ref _ctl->LogwrtFlush))
        {
            // The segment holding the end: its pages may have been written by another process (an inserter's
            // AdvanceXLInsertBuffer), so open it here if needed; fsync covers every process's writes to the file.
            // Earlier segments were fsynced by whoever wrote their last page (above).
            OpenSegmentForWrite(Geometry.PrevSegmentOf(write));
            SyncOpenSegment();
            Interlocked.Increment(ref _ctl->Flushes);
            // Release store after the fsync; pairs with Flush's acquire load: a reader of X knows X is durable.
            Volatile.Write(ref _ctl->LogwrtFlush, write);
        }
        SLock.Acquire(ref _ctl->InfoLock, "WAL info");
        if (_ctl->WriteRqst < write)
            _ctl->WriteRqst = write;
        SLock.Release(ref _ctl->InfoLock);
    }

    /// <summary>One write(2) of <paramref name="npages"/> buffer pages from buffer <paramref name="startIdx"/>.</summary>
    private void WritePages(int startIdx, int npages, ulong pageBegin)
    {
        ulong segno = Geometry.SegmentOf(pageBegin);
        SafeFileHandle f = OpenSegmentForWrite(segno);
        var data = new ReadOnlySpan<byte>(_pages + (long)startIdx * WalFormat.PageSize, npages * WalFormat.PageSize);
        DurableFileIO.Write(f, data, Geometry.SegmentOffset(pageBegin));
        Interlocked.Increment(ref _ctl->Writes);
    }

    private void SyncOpenSegment()
    {
        if (_openFile is null)
            return;
        try
        {
            DurableFileIO.FlushData(_platform.Files, _openFile); // fdatasync on Linux: the segments are pre-allocated
        }
        catch (IOException e)
        {
            throw new WalFsyncFailedException(Path.Combine(WalDirectory, Geometry.FileName(Timeline, _openSegno)), e);
        }
        Interlocked.Increment(ref _ctl->Fsyncs);
    }

    private SafeFileHandle OpenSegmentForWrite(ulong segno)
    {
        if (_openFile is not null && _openSegno == segno)
            return _openFile;
        CloseSegment();
        _openFile = XLogFileInit(segno);
        _openSegno = segno;
        return _openFile;
    }

    private void CloseSegment()
    {
        _openFile?.Dispose();
        _openFile = null;
        _openSegno = ulong.MaxValue;
    }

    /// <summary>Opens segment <paramref name="segno"/>, creating it zero-filled (temp file, fsync, rename, directory fsync) if missing.</summary>
    internal SafeFileHandle XLogFileInit(ulong segno)
    {
        string path = Path.Combine(WalDirectory, Geometry.FileName(Timeline, segno));
        const FileShare share = FileShare.ReadWrite | FileShare.Delete; // readers, other writers' handles, recycling renames
        try
        {
            return DurableFileIO.Opened(File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, share), path, created: false);
        }
        catch (FileNotFoundException)
        {
        }
        string tmp = Path.Combine(WalDirectory, $"xlogtemp.{Environment.ProcessId}");
        using (SafeFileHandle t = DurableFileIO.Opened(File.OpenHandle(tmp, FileMode.Create, FileAccess.ReadWrite, FileShare.None), tmp, created: true))
        {
            byte[] zeros = new byte[Math.Min(Geometry.SegmentSize, 1 << 20)]; // cold path: once per new segment
            for (long off = 0; off < Geometry.SegmentSize; off += zeros.Length)
                DurableFileIO.Write(t, zeros, off);
            DurableFileIO.Flush(t);
        }
        try
        {
            DurableFileIO.Move(tmp, path, overwrite: false);
        }
        catch (IOException) when (File.Exists(path))
        {
            DurableFileIO.Delete(tmp); // someone installed it meanwhile
        }
        DurableFileIO.FsyncDirectory(_platform.Files, WalDirectory);
        return DurableFileIO.Opened(File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, share), path, created: false);
    }
}
