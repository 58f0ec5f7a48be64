/*-------------------------------------------------------------------------
 * Checkpointer.Loop.cs
 *   The checkpointer's main loop: registering as the cluster's
 *   checkpointer, sleeping on its latch, running a checkpoint when asked or
 *   when checkpoint_timeout passes (publishing start, end and failure to
 *   the requesters), the spread-out write delay, and the shutdown
 *   checkpoint.
 *
 * NOTES
 *   The request protocol this loop answers (the counters, the flags, the
 *   two condition variables, what a requester waits for) is described in
 *   Checkpointer.cs.
 *
 *   Checkpoints without Immediate are spread (CheckpointWriteDelay): after
 *   each write the checkpointer sleeps 100 ms while it is ahead of the
 *   schedule that would finish the writes at CompletionTarget of the
 *   timeout, unless an immediate checkpoint is requested meanwhile.
 *
 *   A failed fsync (DataSyncFailedException) is not an ordinary checkpoint
 *   error. PostgreSQL, since the 2018 fsync incident, PANICs
 *   (data_sync_retry = off): Linux reports a write-back error to one fsync
 *   only, may already have dropped the pages and marked them clean, so the
 *   next fsync succeeds over lost data; the crash restart then replays WAL
 *   from the last completed checkpoint, rewriting every page since. Here:
 *     - the checkpoint is failed like any other (ckpt_failed, the message
 *       in LastError, done_cv broadcast): its waiters get
 *       CheckpointRequestFailedException naming the file and "fsync";
 *     - Run then throws the DataSyncFailedException (after unregistering
 *       and broadcasting, so later waiters get CheckpointerNotRunning
 *       instead of a success): a host must treat it as fatal, exit with a
 *       crash code (the demo's checkpointer exits 2) and let the supervisor
 *       do a crash restart; it must not call Run again as if nothing
 *       happened;
 *     - without WAL nothing can replay what the kernel dropped, so the
 *       checkpoint also does what it can for a host that does restart the
 *       checkpointer over the same pool (the tests' in-process one):
 *       every buffer of the failed checkpoint that still holds its page is
 *       marked dirty again (BufferPool.IO.cs) and the failed file stays in
 *       the sync queue, so the next checkpoint writes those pages again and
 *       fsyncs them before it reports success. Pages evicted between the
 *       write and the failed fsync (written by backends or the background
 *       writer, or by this checkpoint and then replaced) are not in memory
 *       any more: they may be lost, which is why the error is fatal rather
 *       than logged. Re-reading the files to rewrite them was rejected: the
 *       page cache may hold either version, and it would only narrow the
 *       loss, not close it.
 *
 *   Mirrors src/backend/postmaster/checkpointer.c (CheckpointerMain,
 *   CheckpointWriteDelay, ImmediateCheckpointRequested) and the
 *   checkpoint part of xlog.c's CreateCheckPoint (CheckPointBuffers).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Text;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Buffers;

unsafe partial class Checkpointer
{
    // ------------------------------------------------------------------
    // The checkpointer's main loop
    // ------------------------------------------------------------------

    /// <summary>
    /// The checkpointer process's main loop (CheckpointerMain), on <paramref name="me"/>'s thread until
    /// <paramref name="stop"/> is cancelled: registers as the cluster's checkpointer, then sleeps on its latch and
    /// runs a checkpoint when one is requested or <see cref="CheckpointerOptions.TimeoutMs"/> passed since the last,
    /// absorbing fsync requests as it goes. A failing checkpoint is counted (ckpt_failed) and the loop goes on. When
    /// stopped it runs the shutdown checkpoint (unless the options say not to) and unregisters. Throws if another
    /// live checkpointer is registered, or <see cref="SupervisorDiedException"/> when the supervisor dies, or
    /// <see cref="DataSyncFailedException"/> when an fsync failed: the checkpoint is then reported failed to its
    /// waiters and the checkpointer unregistered before the throw. That one is fatal (PANIC): the host must end the
    /// process with a crash code so the supervisor does a crash restart, not call Run again (see the banner).
    /// </summary>
    public void Run(Participant me, CancellationToken stop)
    {
        ArgumentNullException.ThrowIfNull(me);
        if (_pool is null)
            throw new InvalidOperationException("this checkpointer view has no buffer pool (Init with one to run the checkpointer)");
        CheckpointerShmem* h = _shared;
        int myPid = _platform.Processes.CurrentProcessId;
        while (true)
        {
            // The liveness check reads /proc: it runs between two short critical sections, not under the spinlock;
            // the role is claimed only if the registration is still the one checked.
            SLock.Acquire(ref h->CkptLock, "checkpointer");
            int otherPid = h->CheckpointerPid;
            int otherProc = h->CheckpointerProcNo;
            SLock.Release(ref h->CkptLock);
            bool taken = otherProc != PgProc.InvalidProcNumber && otherProc != me.ProcNumber
                && otherPid != 0 && (otherPid == myPid || _platform.Processes.GetLiveness(otherPid) != ProcessLiveness.Gone); // a zombie still holds the role until reaped
            if (taken)
                throw new PgIpcException($"a checkpointer is already running (pid {otherPid}, procno {otherProc})");
            SLock.Acquire(ref h->CkptLock, "checkpointer");
            bool unchanged = h->CheckpointerPid == otherPid && h->CheckpointerProcNo == otherProc;
            if (unchanged)
            {
                h->CheckpointerProcNo = me.ProcNumber;
                h->CheckpointerPid = myPid;
            }
            SLock.Release(ref h->CkptLock);
            if (unchanged)
                break;
        }

        using CancellationTokenRegistration reg = stop.Register(static p => ((Participant)p!).SetLatch(), me);
        // pg_stat_checkpointer's writer is the running checkpointer (Stats/SharedStats.cs); pg_stat_activity names it.
        _stats = Stats.SharedStats.Find(me.ProcArray.Segment);
        me.SetBackendTypeIfOnItsThread("checkpointer");
        long lastCheckpoint = Stopwatch.GetTimestamp();
        try
        {
            while (!stop.IsCancellationRequested)
            {
                me.ResetLatch();
                me.ProcessInterrupts();
                AbsorbSyncRequests();

                bool doCheckpoint = Volatile.Read(ref h->CkptFlags) != 0; // peek; CreateCheckpoint takes them under the lock
                CheckpointFlags extra = CheckpointFlags.None;
                double elapsedMs = Stopwatch.GetElapsedTime(lastCheckpoint).TotalMilliseconds;
                if (elapsedMs >= Options.TimeoutMs)
                {
                    extra = CheckpointFlags.CauseTime;
                    doCheckpoint = true;
                }
                if (doCheckpoint)
                {
                    lastCheckpoint = Stopwatch.GetTimestamp();
                    PerformCheckpoint(me, extra, stop);
                    continue; // requests that came in meanwhile are served without sleeping
                }
                int sleepMs = (int)Math.Clamp(Options.TimeoutMs - elapsedMs, 1, int.MaxValue);
                WaitEvents got = me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout | WaitEvents.SupervisorDeath, sleepMs,
                    WaitEventCheckpointerMain);
                if ((got & WaitEvents.SupervisorDeath) != 0)
                    throw new SupervisorDiedException();
            }
            if (Options.ShutdownCheckpoint)
            {
                AbsorbSyncRequests();
                PerformCheckpoint(me, CheckpointFlags.Shutdown | CheckpointFlags.Immediate, stop);
            }
        }
        finally
        {
            SLock.Acquire(ref h->CkptLock, "checkpointer");
            if (h->CheckpointerProcNo == me.ProcNumber && h->CheckpointerPid == myPid)
            {
                h->CheckpointerProcNo = PgProc.InvalidProcNumber;
                h->CheckpointerPid = 0;
            }
            SLock.Release(ref h->CkptLock);
            // Waiters re-check and find no checkpointer instead of sleeping on.
            ConditionVariable.Broadcast(me, ref h->StartCv);
            ConditionVariable.Broadcast(me, ref h->DoneCv);
        }
    }

    /// <summary>One checkpoint: take the flags, bump started, broadcast start_cv, write and sync, set done (or failed), broadcast done_cv.</summary>
    private void PerformCheckpoint(Participant me, CheckpointFlags extra, CancellationToken stop)
    {
        CheckpointerShmem* h = _shared;
        SLock.Acquire(ref h->CkptLock, "checkpointer");
        var flags = (CheckpointFlags)h->CkptFlags | extra;
        h->CkptFlags = 0;
        h->CkptStarted++;
        if ((flags & CheckpointFlags.Requested) != 0)
            h->NumRequested++;
        else if ((flags & CheckpointFlags.CauseTime) != 0)
            h->NumTimed++;
        SLock.Release(ref h->CkptLock);
        ConditionVariable.Broadcast(me, ref h->StartCv);
        if ((flags & (CheckpointFlags.Requested | CheckpointFlags.CauseTime)) != 0)
            _stats?.ReportCheckpointStart(requested: (flags & CheckpointFlags.Requested) != 0);

        bool failed = false;
        string? message = null;
        DataSyncFailedException? fatal = null;
        CheckpointStats stats = default;
        try
        {
            stats = CreateCheckpoint(me, flags, stop, out long writeUs, out long syncUs);
            _lastStats = stats;
            _stats?.ReportCheckpointEnd(completed: true, writeUs, syncUs, stats.BuffersWritten, stats.FilesSynced);
        }
        catch (Exception e) when (e is not SupervisorDiedException)
        {
            // The error path of CheckpointerMain: release what the checkpoint held, count the failure, go on.
            me.ReleaseAllLWLocks();
            _pool!.ReleaseAllBuffers(me);
            _lastError = e;
            failed = true;
            message = e.Message;
            fatal = e as DataSyncFailedException;
        }

        // The message is encoded before the spinlock is taken (encoding allocates nothing, but is not a few instructions).
        Span<byte> error = stackalloc byte[CheckpointerShmem.LastErrorBytes];
        int errorLength = failed ? EncodeMessage(message, error) : 0;
        SLock.Acquire(ref h->CkptLock, "checkpointer");
        if (failed)
        {
            h->CkptFailed++;
            error[..errorLength].CopyTo(new Span<byte>(&h->LastError, CheckpointerShmem.LastErrorBytes));
            h->LastErrorLength = errorLength;
        }
        else
        {
            h->BuffersWritten += stats.BuffersWritten;
            h->FilesSynced += stats.FilesSynced;
        }
        h->CkptDone = h->CkptStarted;
        SLock.Release(ref h->CkptLock);
        ConditionVariable.Broadcast(me, ref h->DoneCv);
        LogCheckpoint(failed, message, stats);
        // PANIC: out of Run (whose finally unregisters), never on to the next checkpoint (see the banner).
        if (fatal is not null)
            ExceptionDispatchInfo.Throw(fatal);
    }

    /// <summary>The message's UTF-8, as much as fits in <paramref name="dest"/> (cut between characters); its length.</summary>
    private static int EncodeMessage(string? message, Span<byte> dest)
    {
        if (string.IsNullOrEmpty(message))
            return 0;
        Encoding.UTF8.GetEncoder().Convert(message, dest, flush: true, out _, out int bytes, out _);
        return bytes;
    }

    /// <summary>CheckPointBuffers with CheckpointWriteDelay pacing and the sync-request absorb before the fsyncs.</summary>
    private CheckpointStats CreateCheckpoint(Participant me, CheckpointFlags flags, CancellationToken stop, out long writeUs, out long syncUs)
    {
        BufferPool pool = _pool!;
        bool immediate = (flags & (CheckpointFlags.Immediate | CheckpointFlags.Shutdown | CheckpointFlags.EndOfRecovery)) != 0;
        long start = Stopwatch.GetTimestamp();
        Action<int, int>? delay = immediate ? null : (written, total) =>
        {
            // CheckpointWriteDelay: sleep while ahead of schedule, unless someone now wants it done at once.
            if (stop.IsCancellationRequested || ImmediateCheckpointRequested())
                return;
            double progress = (double)written / total * Options.CompletionTarget;
            double elapsed = Stopwatch.GetElapsedTime(start).TotalMilliseconds / Options.TimeoutMs;
            if (progress < elapsed)
                return;
            AbsorbSyncRequests();
            me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, WriteDelayMs, WaitEventCheckpointWriteDelay);
            me.ResetLatch();
        };
        ulong redo = Wal?.BeginCheckpoint(me) ?? 0;
        // write_time runs to the start of the sync phase (whose absorb is part of it, as ProcessSyncRequests'), sync_time to its end.
        long syncStart = 0;
        CheckpointStats stats = pool.CheckpointBuffers(me, delay, () =>
        {
            syncStart = Stopwatch.GetTimestamp();
            AbsorbSyncRequests();
        });
        long end = Stopwatch.GetTimestamp();
        if (syncStart == 0)
            syncStart = end;
        writeUs = (long)Stopwatch.GetElapsedTime(start, syncStart).TotalMicroseconds;
        syncUs = (long)Stopwatch.GetElapsedTime(syncStart, end).TotalMicroseconds;
        Wal?.CompleteOnlineCheckpoint(me, redo);
        return stats;
    }

    /// <summary>ImmediateCheckpointRequested: a pending request wants the running checkpoint to hurry (unlocked peek).</summary>
    private bool ImmediateCheckpointRequested() => (Volatile.Read(ref _shared->CkptFlags) & (int)CheckpointFlags.Immediate) != 0;
}
