/*-------------------------------------------------------------------------
 * BufferPool.IO.cs
 *   The buffer pool's I/O: the I/O-in-progress handshake, writing a page
 *   (FlushBuffer, FlushPinned), and the buffer half of a checkpoint and of
 *   the background writer (CheckpointBuffers, SyncOneBuffer).
 *
 * NOTES
 *   Reading a page that is tagged but not valid is the I/O-in-progress
 *   handshake: StartBufferIO sets IoInProgress under the header lock
 *   unless the buffer became valid or another participant's I/O is under
 *   way, in which case it sleeps on the descriptor's condition variable
 *   until TerminateBufferIO clears the flag and broadcasts. So two
 *   participants that miss on the same block read it from disk once.
 *   A process killed between StartBufferIO and TerminateBufferIO never
 *   ends its I/O. The owner's pid is recorded with the flag (IoOwnerPid), and
 *   a waiter that has slept a second without news checks it: an owner that is
 *   gone has its I/O aborted on its behalf (IoError, flag cleared,
 *   broadcast), so the waiters retry and one of them redoes the read or the
 *   write. PostgreSQL leaves this to the postmaster's crash restart; PgIpc
 *   also serves clusters that run without a supervisor.
 *
 *   A failed read sets IoError and leaves the buffer not valid: the next
 *   reader tries again.
 *
 *   Writes copy the page, stamp the checksum into the copy (the in-memory
 *   page may change under a shared content lock, as with hint bits) and
 *   write the copy; JustDirtied, cleared when the write starts, keeps the
 *   dirty bit if the page was dirtied again meanwhile.
 *
 *   CheckpointBuffers is the buffer half of a checkpoint (BufferSync):
 *   mark every dirty buffer CheckpointNeeded, write them sorted by file and
 *   block, then fsync through Smgr.Sync: the files this process wrote and
 *   the sync requests other processes forwarded to the checkpointer (see
 *   Checkpointer.cs). FlushAllBuffers is the same, run by the caller. When
 *   an fsync fails (DataSyncFailedException), every buffer of the
 *   checkpoint still holding its page is marked dirty again before the
 *   error goes up, so the pages the kernel may have dropped are rewritten.
 *   SyncOneBuffer is shared with the background writer (BackgroundWriter.cs),
 *   which writes only unpinned buffers of usage count 0 ahead of the clock
 *   hand.
 *
 *   Mirrors the I/O and BufferSync parts of
 *   src/backend/storage/buffer/bufmgr.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;
using S = PgIpc.Buffers.BufferDesc.State;

namespace PgIpc.Buffers;

public sealed unsafe partial class BufferPool
{
    [ThreadStatic] private static byte[]? t_writeCopy;


    /// <summary>
    /// Writes the page if dirty (FlushOneBuffer): under the content lock shared (taken here unless the
    /// participant holds it) with the I/O-in-progress handshake. True when this call wrote it.
    /// </summary>
    public bool FlushBuffer(Participant me, int buffer)
    {
        int id = CheckPinned(Refs(me), buffer);
        BufferDesc* d = _descs + id;
        bool lockHere = !me.HoldsInMode(&d->ContentLock, null);
        if (lockHere)
            d->ContentLock.Acquire(me, LWLockMode.Shared);
        try
        {
            return FlushPinned(me, id);
        }
        finally
        {
            if (lockHere)
                d->ContentLock.Release(me);
        }
    }

    /// <summary>
    /// Writes every dirty buffer, sorted by relation, fork and block, then fsyncs the files this process wrote
    /// (BufferSync + smgr sync, the write half of a checkpoint, run by the caller). Buffers dirtied after the scan
    /// began are left for the next call. Returns the number of buffers written. See <see cref="CheckpointBuffers"/>.
    /// </summary>
    public int FlushAllBuffers(Participant me) => CheckpointBuffers(me).BuffersWritten;

    /// <summary>
    /// The buffer half of a checkpoint (BufferSync, then the sync phase): marks every dirty buffer
    /// CheckpointNeeded, sorts them by relation, fork and block, writes each that still needs it (a buffer
    /// written or evicted meanwhile has lost the flag and is skipped; one dirtied again after the scan began
    /// keeps its new changes for the next checkpoint), then fsyncs through <see cref="Smgr.Sync"/>: the files
    /// this process wrote plus every request absorbed into its Smgr (the checkpointer's sync queue).
    /// <paramref name="afterWrite"/> runs after each write with (written so far, to write) and may sleep to
    /// spread the checkpoint (CheckpointWriteDelay); <paramref name="beforeSync"/> runs between the two phases
    /// (the checkpointer absorbs its sync requests there).
    /// </summary>
    internal CheckpointStats CheckpointBuffers(Participant me, Action<int, int>? afterWrite = null, Action? beforeSync = null)
    {
        ArgumentNullException.ThrowIfNull(me);
        PrivateRefCount refs = Refs(me);
        var toWrite = new List<(BufferTag Tag, int Id)>();
        for (int id = 0; id < _n; id++)
        {
            uint st = LockBufHdr(id);
            if ((st & (S.Dirty | S.Valid)) == (S.Dirty | S.Valid))
            {
                st |= S.CheckpointNeeded;
                toWrite.Add((_descs[id].Tag, id));
            }
            UnlockBufHdr(id, st);
        }
        // CkptBuffers sorted as ckpt_buforder_comparator does (without the tablespace balancing: one directory).
        toWrite.Sort((a, b) => a.Tag.RelNumber != b.Tag.RelNumber ? a.Tag.RelNumber.CompareTo(b.Tag.RelNumber)
            : a.Tag.Fork != b.Tag.Fork ? a.Tag.Fork.CompareTo(b.Tag.Fork) : a.Tag.BlockNumber.CompareTo(b.Tag.BlockNumber));
        int written = 0;
        for (int i = 0; i < toWrite.Count; i++)
        {
            (BufferTag tag, int id) = toWrite[i];
            // Still needs the write (nobody wrote or evicted it meanwhile)? Then SyncOneBuffer without the usage check.
            uint st = LockBufHdr(id);
            if ((st & S.CheckpointNeeded) == 0 || _descs[id].Tag != tag)
            {
                UnlockBufHdr(id, st);
                continue;
            }
            UnlockBufHdr(id, st);
            if ((SyncOneBuffer(me, refs, id, skipRecentlyUsed: false) & SyncResult.Written) != 0)
            {
                written++;
                afterWrite?.Invoke(written, toWrite.Count);
            }
        }
        beforeSync?.Invoke();
        int files;
        try
        {
            files = Smgr.Sync();
        }
        catch (DataSyncFailedException)
        {
            RedirtyAfterFailedSync(toWrite);
            throw;
        }
        return new CheckpointStats(toWrite.Count, written, files);
    }

    /// <summary>
    /// After a failed fsync: marks dirty again every buffer of this checkpoint that still holds the same valid page,
    /// so that the next checkpoint writes it again (a write after the error reaches the disk with the next fsync,
    /// whereas the page the kernel dropped would not). A buffer evicted meanwhile cannot be helped (see the
    /// checkpointer's banner). Under each header lock, as MarkBufferDirtyHint; JustDirtied keeps the bit if a write
    /// of the buffer is in progress. Returns how many it marked.
    /// </summary>
    private int RedirtyAfterFailedSync(List<(BufferTag Tag, int Id)> buffers)
    {
        int n = 0;
        foreach ((BufferTag tag, int id) in buffers)
        {
            uint st = LockBufHdr(id);
            if ((st & S.Valid) != 0 && _descs[id].Tag == tag)
            {
                st |= S.Dirty | S.JustDirtied;
                n++;
            }
            UnlockBufHdr(id, st);
        }
        return n;
    }

    /// <summary>What <see cref="SyncOneBuffer(PgIpc.Proc.Participant, int, bool)"/> found (BUF_REUSABLE, BUF_WRITTEN).</summary>
    [Flags]
    internal enum SyncResult
    {
        None = 0,
        /// <summary>Unpinned with usage count 0: the clock sweep can reuse it without a write.</summary>
        Reusable = 1,
        Written = 2,
    }

    /// <summary>
    /// SyncOneBuffer: writes buffer <paramref name="id"/> if it is valid and dirty. With
    /// <paramref name="skipRecentlyUsed"/> (the background writer) a pinned or recently used buffer is left
    /// alone and only a reusable one is written. The header check is a snapshot: the buffer may be pinned,
    /// dirtied or evicted right after, which the write path (pin, content lock shared, I/O handshake) copes with.
    /// </summary>
    internal SyncResult SyncOneBuffer(Participant me, int id, bool skipRecentlyUsed) => SyncOneBuffer(me, Refs(me), id, skipRecentlyUsed);

    private SyncResult SyncOneBuffer(Participant me, PrivateRefCount refs, int id, bool skipRecentlyUsed)
    {
        SyncResult result = SyncResult.None;
        uint st = LockBufHdr(id);
        if (S.RefCount(st) == 0 && S.UsageCount(st) == 0)
        {
            result |= SyncResult.Reusable;
        }
        else if (skipRecentlyUsed)
        {
            UnlockBufHdr(id, st);
            return result;
        }
        if ((st & (S.Valid | S.Dirty)) != (S.Valid | S.Dirty))
        {
            UnlockBufHdr(id, st);
            return result;
        }
        // PinBuffer_Locked: the header is locked, so the refcount cannot move under us; a pin of our own
        // already counts in the shared refcount.
        bool alreadyPinned = refs.Get(id) > 0;
        refs.Add(id, 1);
        UnlockBufHdr(id, alreadyPinned ? st : st + S.RefCountOne);
        BufferDesc* d = _descs + id;
        bool lockHere = !me.HoldsInMode(&d->ContentLock, null);
        try
        {
            if (lockHere)
                d->ContentLock.Acquire(me, LWLockMode.Shared);
            try
            {
                if (FlushPinned(me, id))
                    result |= SyncResult.Written;
            }
            finally
            {
                if (lockHere)
                    d->ContentLock.Release(me);
            }
        }
        finally
        {
            Unpin(refs, id);
        }
        return result;
    }

    /// <summary>
    /// StartBufferIO: waits out another participant's I/O; false when none is needed any more (valid for input,
    /// clean for output); else sets IoInProgress and returns true.
    /// </summary>
    private bool StartBufferIO(Participant me, int id, bool forInput)
    {
        uint st;
        while (true)
        {
            st = LockBufHdr(id);
            if ((st & S.IoInProgress) == 0)
                break;
            UnlockBufHdr(id, st);
            WaitIO(me, id);
        }
        if (forInput ? (st & S.Valid) != 0 : (st & S.Dirty) == 0)
        {
            UnlockBufHdr(id, st);
            return false;
        }
        _descs[id].IoOwnerPid = _procs.Segment.Platform.Processes.CurrentProcessId; // under the header lock, with the flag
        UnlockBufHdr(id, st | S.IoInProgress);
        return true;
    }

    private void WaitIO(Participant me, int id)
    {
        BufferDesc* d = _descs + id;
        ConditionVariable.PrepareToSleep(me, ref d->IoCv);
        try
        {
            // TerminateBufferIO clears the flag under the header lock before it broadcasts. Each silent second, look
            // at the owner: a process killed mid-I/O never terminates it, and every waiter would sleep forever.
            while ((Volatile.Read(ref d->StateWord) & S.IoInProgress) != 0)
            {
                if (ConditionVariable.Sleep(me, ref d->IoCv, 1000))
                    AbortIOOfDeadOwner(me, id);
            }
        }
        finally
        {
            ConditionVariable.CancelSleep(me);
        }
    }

    /// <summary>
    /// The I/O on buffer <paramref name="id"/> belongs to a process that is gone (killed between StartBufferIO and
    /// TerminateBufferIO): end it as AbortBufferIO would have, IoError set and the flag cleared, so the waiters go
    /// round StartBufferIO again and one of them redoes the I/O. An unreaped zombie is waited for, as lock holders
    /// are (DeadHolder.cs); a reused pid hides a death until the crash restart.
    /// </summary>
    private void AbortIOOfDeadOwner(Participant me, int id)
    {
        int pid = Volatile.Read(ref _descs[id].IoOwnerPid);
        if (pid == 0 || _procs.Segment.Platform.Processes.GetLiveness(pid) != Platform.ProcessLiveness.Gone)
            return;
        uint st = LockBufHdr(id);
        if ((st & S.IoInProgress) == 0 || _descs[id].IoOwnerPid != pid)
        {
            UnlockBufHdr(id, st); // ended meanwhile, or a new owner took it
            return;
        }
        _descs[id].IoOwnerPid = 0;
        UnlockBufHdr(id, (st & ~S.IoInProgress) | S.IoError);
        ConditionVariable.Broadcast(me, ref _descs[id].IoCv);
    }

    private void TerminateBufferIO(Participant me, int id, bool clearDirty, uint setFlags)
    {
        uint st = LockBufHdr(id);
        _descs[id].IoOwnerPid = 0;
        st &= ~(S.IoInProgress | S.IoError);
        if (clearDirty && (st & S.JustDirtied) == 0)
            st &= ~(S.Dirty | S.CheckpointNeeded);
        UnlockBufHdr(id, st | setFlags);
        ConditionVariable.Broadcast(me, ref _descs[id].IoCv);
    }

    private void AbortBufferIO(Participant me, int id)
    {
        uint st = LockBufHdr(id);
        _descs[id].IoOwnerPid = 0;
        UnlockBufHdr(id, (st & ~S.IoInProgress) | S.IoError);
        ConditionVariable.Broadcast(me, ref _descs[id].IoCv);
    }

    /// <summary>Writes a pinned buffer whose content lock the caller holds (FlushBuffer). True when it wrote.</summary>
    private bool FlushPinned(Participant me, int id)
    {
        if (!StartBufferIO(me, id, forInput: false))
            return false;
        BufferDesc* d = _descs + id;
        uint st = LockBufHdr(id);
        BufferTag tag = d->Tag;
        UnlockBufHdr(id, st & ~S.JustDirtied);
        byte[] copy = t_writeCopy ??= new byte[BlockSize];
        try
        {
            PageOf(id).CopyTo(copy);
            Wal?.FlushForWrite(me, copy); // WAL before data: the page's changes are durable in the log first
            PageChecksum.Set(copy, tag.BlockNumber);
            Smgr.Write(tag, copy);
        }
        catch
        {
            AbortBufferIO(me, id);
            throw;
        }
        TerminateBufferIO(me, id, clearDirty: true, setFlags: 0);
        me.Counters.BufferWrites++;
        return true;
    }
}
