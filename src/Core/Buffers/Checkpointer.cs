/*-------------------------------------------------------------------------
 * Checkpointer.cs
 *   The checkpointer: an auxiliary participant that sleeps on its latch and
 *   writes every dirty buffer when asked or when checkpoint_timeout passes;
 *   RequestCheckpoint, which any participant calls to ask for one and
 *   optionally wait for it; and the fsync request queue.
 *
 * NOTES
 *   The protocol is the one checkpointer.c describes (and seed 001 walks
 *   through). Shared memory holds three counters under a spinlock:
 *   ckpt_started, bumped when a checkpoint begins, ckpt_done, set to
 *   ckpt_started when it ends, and ckpt_failed, bumped when it ended with an
 *   error; plus ckpt_flags, the OR of every pending request's flags. A
 *   requester, under the spinlock, ORs its flags in and notes started and
 *   failed; then sets the checkpointer's latch. To wait, it sleeps on
 *   start_cv until ckpt_started moves (the checkpointer took its flags: the
 *   checkpoint that covers its request has begun, since the checkpointer
 *   clears the flags and bumps the counter in one critical section), then on
 *   done_cv until ckpt_done has caught up with that new started value (in a
 *   modulo sense). If ckpt_failed moved meanwhile, the request failed.
 *   Several requests made before one checkpoint starts are all served by it.
 *
 *   The checkpointer never hangs its requesters: when it stops it clears
 *   its pid and broadcasts both variables; a waiter whose checkpointer is
 *   gone (stopped, or its process dead) gets CheckpointerNotRunningException
 *   instead of waiting forever (waits re-check every second).
 *
 *   Fsync requests: PgIpc's storage manager is per process, and a backend
 *   that evicts a dirty page writes it itself. So that a checkpoint's fsync
 *   covers those writes, each Smgr forwards "this segment file was written"
 *   to a queue here (ForwardSyncRequest) at most once per absorb cycle; the
 *   checkpointer absorbs the queue into its own Smgr (AbsorbSyncRequests,
 *   each loop and before the sync phase) and fsyncs the lot. A full queue
 *   makes the writer fsync the file itself. The queue is under its own
 *   spinlock (PostgreSQL uses CheckpointerCommLock): appending is a few
 *   stores, absorbing one copy of the array.
 *
 *   The main loop (CheckpointerMain, the spread-out write delay, the
 *   shutdown checkpoint) is in Checkpointer.Loop.cs, with what a failed
 *   fsync does (it fails the checkpoint and ends Run: a PANIC).
 *
 *   Layout of "PgIpc.Checkpointer": CheckpointerShmem (384 bytes, below),
 *   then MaxRequests CheckpointerRequest entries of 12 bytes.
 *
 *   Mirrors src/backend/postmaster/checkpointer.c (CheckpointerShmemInit,
 *   RequestCheckpoint, ForwardSyncRequest, AbsorbSyncRequests).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Buffers;

/// <summary>Checkpoint request flags (CHECKPOINT_*). Requests OR them together; the stronger sense wins.</summary>
[Flags]
public enum CheckpointFlags
{
    /// <summary>No flag: a plain checkpoint request.</summary>
    None = 0,
    /// <summary>The shutdown checkpoint (CHECKPOINT_IS_SHUTDOWN).</summary>
    Shutdown = 1 << 0,
    /// <summary>The end-of-recovery checkpoint (CHECKPOINT_END_OF_RECOVERY); runs immediately.</summary>
    EndOfRecovery = 1 << 1,
    /// <summary>Write as fast as possible instead of spreading the writes (CHECKPOINT_IMMEDIATE).</summary>
    Immediate = 1 << 2,
    /// <summary>
    /// Checkpoint even if nothing happened since the last one (CHECKPOINT_FORCE). Without WAL there is no cheap way
    /// to tell, so every requested checkpoint runs; the flag is kept for callers written against PostgreSQL.
    /// </summary>
    Force = 1 << 3,
    /// <summary>RequestCheckpoint waits until the checkpoint is done (CHECKPOINT_WAIT).</summary>
    Wait = 1 << 5,
    /// <summary>Set on every request (CHECKPOINT_REQUESTED); tells a requested checkpoint from a timed one.</summary>
    Requested = 1 << 6,
    /// <summary>Started because checkpoint_timeout passed (CHECKPOINT_CAUSE_TIME).</summary>
    CauseTime = 1 << 8,
}

/// <summary>Checkpointer settings. Every process of the cluster must pass the same <see cref="MaxRequests"/>.</summary>
/// <param name="TimeoutMs">checkpoint_timeout: the longest time between checkpoints.</param>
/// <param name="CompletionTarget">checkpoint_completion_target: the fraction of the timeout a spread checkpoint's writes take.</param>
/// <param name="MaxRequests">Entries of the fsync request queue.</param>
/// <param name="ShutdownCheckpoint">Whether <see cref="Checkpointer.Run"/> ends with a shutdown checkpoint when stopped.</param>
/// <param name="StartupWaitMs">How long a waiting RequestCheckpoint waits for a checkpointer to start (MAX_SIGNAL_TRIES).</param>
public sealed record CheckpointerOptions(int TimeoutMs = 300_000, double CompletionTarget = 0.9, int MaxRequests = 1024,
    bool ShutdownCheckpoint = true, int StartupWaitMs = 60_000)
{
    internal void Validate()
    {
        if (TimeoutMs < 1)
            throw new ArgumentOutOfRangeException(nameof(TimeoutMs), TimeoutMs, "checkpoint timeout must be at least 1 ms");
        if (!(CompletionTarget > 0 && CompletionTarget <= 1))
            throw new ArgumentOutOfRangeException(nameof(CompletionTarget), CompletionTarget, "checkpoint completion target must be in (0, 1]");
        if (MaxRequests < 1 || MaxRequests > 1 << 24)
            throw new ArgumentOutOfRangeException(nameof(MaxRequests), MaxRequests, "the fsync request queue must have 1..2^24 entries");
        ArgumentOutOfRangeException.ThrowIfNegative(StartupWaitMs);
    }
}

/// <summary>A snapshot of the checkpointer's shared state (pg_stat_checkpointer-like).</summary>
public readonly record struct CheckpointerStatus(int Pid, int ProcNumber, int Started, int Done, int Failed, CheckpointFlags PendingFlags,
    int NumTimed, int NumRequested, long BuffersWritten, long FilesSynced, int PendingSyncRequests, string? LastError);

/// <summary>
/// CheckpointerShmem. Layout: 384 bytes.
/// <code>
///   0  CkptLock             spinlock over the fields up to LastError, except where noted
///   4  CheckpointerProcNo   CkptLock: the running checkpointer's procno, -1 none
///   8  CheckpointerPid      CkptLock: its process id, 0 none
///  12  CkptStarted          CkptLock: checkpoints begun (wraps; compared in a modulo sense)
///  16  CkptDone             CkptLock: = CkptStarted when the latest one ended
///  20  CkptFailed           CkptLock: checkpoints that ended with an error
///  24  CkptFlags            CkptLock: OR of pending requests' flags (unlocked reads to peek)
///  28  NumTimed             CkptLock: checkpoints started by the timeout
///  32  NumRequested         CkptLock: checkpoints started by a request
///  36  LastErrorLength      CkptLock: bytes of LastError in use
///  40  BuffersWritten       CkptLock: total written by checkpoints
///  48  FilesSynced          CkptLock: total fsyncs by checkpoints
///  56  Magic                immutable, written by the initialiser
///  60  MaxRequests          immutable
///  64  StartCv              condition variable: a checkpoint began
///  80  DoneCv               condition variable: a checkpoint ended
///  96  QueueLock            spinlock over NumRequests, the request array and AbsorbCycle's increments
/// 100  NumRequests          QueueLock
/// 104  AbsorbCycle          QueueLock for writes (Volatile.Write), atomic reads by writers deduplicating
/// 128  LastError            CkptLock: UTF-8 message of the last failed checkpoint (256 bytes)
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Explicit, Size = 384)]
internal struct CheckpointerShmem
{
    public const uint MagicValue = 0x544B4843; // "CHKT"
    public const int LastErrorBytes = 256;

    [FieldOffset(0)] public int CkptLock;
    [FieldOffset(4)] public int CheckpointerProcNo;
    [FieldOffset(8)] public int CheckpointerPid;
    [FieldOffset(12)] public int CkptStarted;
    [FieldOffset(16)] public int CkptDone;
    [FieldOffset(20)] public int CkptFailed;
    [FieldOffset(24)] public int CkptFlags;
    [FieldOffset(28)] public int NumTimed;
    [FieldOffset(32)] public int NumRequested;
    [FieldOffset(36)] public int LastErrorLength;
    [FieldOffset(40)] public long BuffersWritten;
    [FieldOffset(48)] public long FilesSynced;
    [FieldOffset(56)] public uint Magic;
    [FieldOffset(60)] public int MaxRequests;
    [FieldOffset(64)] public ConditionVariable StartCv;
    [FieldOffset(80)] public ConditionVariable DoneCv;
    [FieldOffset(96)] public int QueueLock;
    [FieldOffset(100)] public int NumRequests;
    [FieldOffset(104)] public uint AbsorbCycle;
    [FieldOffset(128)] public byte LastError;
}

/// <summary>One fsync request (CheckpointerRequest): a segment file of a relation fork. Layout: 12 bytes, QueueLock.</summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 12)]
internal struct CheckpointerRequest
{
    public uint RelNumber;
    public ForkNumber Fork;
    public uint SegNo;
}

/// <summary>The checkpointer's shared state as mapped in this process, its main loop and RequestCheckpoint.</summary>
public sealed unsafe partial class Checkpointer : ISyncRequestQueue
{
    internal const string ShmemName = "PgIpc.Checkpointer";

    // Wait events, in PostgreSQL's classes; named in WaitEventRegistry by RegisterWaitEvents.
    /// <summary>The checkpointer idle in its main loop (Activity).</summary>
    public static readonly WaitEventId WaitEventCheckpointerMain = new(WaitEventClass.Activity, 3);
    /// <summary>A requester waiting for a checkpoint to start (IPC).</summary>
    public static readonly WaitEventId WaitEventCheckpointStart = new(WaitEventClass.IPC, 2);
    /// <summary>A requester waiting for a checkpoint to finish (IPC).</summary>
    public static readonly WaitEventId WaitEventCheckpointDone = new(WaitEventClass.IPC, 1);
    /// <summary>The checkpointer pacing its writes (Timeout).</summary>
    public static readonly WaitEventId WaitEventCheckpointWriteDelay = new(WaitEventClass.Timeout, 1);

    /// <summary>Names this module's wait events when Core is loaded (see WaitEventRegistry.cs).</summary>
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255", Justification = "fills the wait-event name table only: no I/O, no other module touched (WaitEventRegistry.cs)")]
    internal static void RegisterWaitEvents()
    {
        WaitEventRegistry.RegisterBuiltin(WaitEventCheckpointerMain, "CheckpointerMain");
        WaitEventRegistry.RegisterBuiltin(WaitEventCheckpointStart, "CheckpointStart");
        WaitEventRegistry.RegisterBuiltin(WaitEventCheckpointDone, "CheckpointDone");
        WaitEventRegistry.RegisterBuiltin(WaitEventCheckpointWriteDelay, "CheckpointWriteDelay");
    }

    private const int RecheckMs = 1000;
    private const int WriteDelayMs = 100;

    private readonly CheckpointerShmem* _shared;
    private readonly CheckpointerRequest* _requests;
    private readonly ProcArray _procs;
    private readonly IPgIpcPlatform _platform;
    private readonly BufferPool? _pool;
    private CheckpointerRequest[]? _absorbBuffer;
    private volatile Exception? _lastError;
    private volatile object? _lastStats; // a boxed CheckpointStats
    private Stats.SharedStats? _stats; // found by Run: this process's view of pg_stat_checkpointer, if the cluster has one

    private Checkpointer(CheckpointerShmem* shared, ProcArray procs, IPgIpcPlatform platform, BufferPool? pool, CheckpointerOptions options)
    {
        _shared = shared;
        _requests = (CheckpointerRequest*)((byte*)shared + sizeof(CheckpointerShmem));
        _procs = procs;
        _platform = platform;
        _pool = pool;
        Options = options;
        if (pool is not null)
            pool.Smgr.SyncRequests = this;
    }

    /// <summary>The cluster's write-ahead log, when it has one: a checkpoint moves its redo pointer and ends with a checkpoint record.</summary>
    internal IWalForBuffers? Wal { get; set; }

    /// <summary>The options this checkpointer runs with.</summary>
    public CheckpointerOptions Options { get; }

    /// <summary>Bytes <see cref="Init"/> needs (CheckpointerShmemSize).</summary>
    internal static long ShmemSize(CheckpointerOptions? options = null)
    {
        options ??= new CheckpointerOptions();
        options.Validate();
        return Shmem.ShmemSize.Add(sizeof(CheckpointerShmem), Shmem.ShmemSize.Mul(options.MaxRequests, sizeof(CheckpointerRequest)));
    }

    /// <summary>
    /// Finds or creates the checkpointer's shared state (CheckpointerShmemInit) and opens this process's view. With
    /// <paramref name="pool"/>, this process's writes forward their fsync requests here, and the view can
    /// <see cref="Run"/> the checkpointer; without, it can only request checkpoints (the supervisor's start-up
    /// hook passes none).
    /// </summary>
    internal static Checkpointer Init(ShmemSegment segment, ProcArray procs, BufferPool? pool, CheckpointerOptions? options, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(procs);
        options ??= new CheckpointerOptions();
        options.Validate();
        int max = options.MaxRequests;
        ShmemRegion r = segment.InitStruct(ShmemName, ShmemSize(options), region =>
        {
            var h = (CheckpointerShmem*)region.Pointer;
            new Span<byte>(h, sizeof(CheckpointerShmem)).Clear();
            SLock.Init(ref h->CkptLock);
            SLock.Init(ref h->QueueLock);
            h->CheckpointerProcNo = PgProc.InvalidProcNumber;
            h->StartCv.Initialize();
            h->DoneCv.Initialize();
            h->MaxRequests = max;
            h->Magic = CheckpointerShmem.MagicValue;
        }, out found);
        var shared = (CheckpointerShmem*)r.Pointer;
        if (shared->Magic != CheckpointerShmem.MagicValue)
            throw new PgIpcException($"\"{ShmemName}\" in this segment is not a checkpointer's shared state");
        if (shared->MaxRequests != max)
            throw new PgIpcException($"the checkpointer in this segment has a queue of {shared->MaxRequests} fsync requests; asked for {max}");
        return new Checkpointer(shared, procs, segment.Platform, pool, options);
    }

    /// <summary>The error of the last checkpoint this process's <see cref="Run"/> failed, if any.</summary>
    public Exception? LastError => _lastError;

    /// <summary>What the last checkpoint this process ran did.</summary>
    public CheckpointStats? LastCheckpoint => _lastStats as CheckpointStats?;

    /// <summary>A consistent snapshot of the shared counters.</summary>
    public CheckpointerStatus Status
    {
        get
        {
            // A copy under the spinlock (the struct includes the message bytes); the message length, input from
            // another process, is checked and decoded after the release: nothing under the lock can throw.
            SLock.Acquire(ref _shared->CkptLock, "checkpointer");
            CheckpointerShmem h = *_shared;
            SLock.Release(ref _shared->CkptLock);
            if (h.LastErrorLength < 0 || h.LastErrorLength > CheckpointerShmem.LastErrorBytes)
                throw new PgIpcException($"{ShmemName} is corrupt: LastErrorLength {h.LastErrorLength} is outside 0..{CheckpointerShmem.LastErrorBytes}");
            string? err = h.LastErrorLength == 0 ? null : Encoding.UTF8.GetString(&h.LastError, h.LastErrorLength);
            SLock.Acquire(ref _shared->QueueLock, "checkpointer request queue");
            int pending = _shared->NumRequests;
            SLock.Release(ref _shared->QueueLock);
            return new CheckpointerStatus(h.CheckpointerPid, h.CheckpointerProcNo, h.CkptStarted, h.CkptDone, h.CkptFailed,
                (CheckpointFlags)h.CkptFlags, h.NumTimed, h.NumRequested, h.BuffersWritten, h.FilesSynced, pending, err);
        }
    }

    // ------------------------------------------------------------------
    // RequestCheckpoint
    // ------------------------------------------------------------------

    /// <summary>
    /// Asks the checkpointer for a checkpoint (RequestCheckpoint): ORs <paramref name="flags"/> into the pending
    /// flags and sets its latch. With <see cref="CheckpointFlags.Wait"/>, returns once a checkpoint that began after
    /// this call has ended, and throws <see cref="CheckpointRequestFailedException"/> ("checkpoint request failed")
    /// if a checkpoint failed meanwhile. Without a running checkpointer, a request without Wait is left pending for
    /// the next one; with Wait it waits up to <see cref="CheckpointerOptions.StartupWaitMs"/> for one to start, then
    /// throws <see cref="CheckpointerNotRunningException"/>, as it does if the checkpointer stops or dies meanwhile.
    /// </summary>
    public void RequestCheckpoint(Participant me, CheckpointFlags flags) => RequestCheckpoint(me, flags, CancellationToken.None);

    /// <summary>
    /// As <see cref="RequestCheckpoint(Participant, CheckpointFlags)"/>; a wait (<see cref="CheckpointFlags.Wait"/>,
    /// or for a checkpointer to start) throws <see cref="OperationCanceledException"/> once
    /// <paramref name="cancellationToken"/> is cancelled, which sets <paramref name="me"/>'s latch to end the sleep. The
    /// request itself stays made: the checkpoint still runs.
    /// </summary>
    public void RequestCheckpoint(Participant me, CheckpointFlags flags, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(me);
        cancellationToken.ThrowIfCancellationRequested();
        using CancellationTokenRegistration reg = cancellationToken.UnsafeRegister(static p => ((Participant)p!).SetLatch(), me);
        // A condition-variable sleep goes on sleeping after a latch set that is not its signal: look at the token
        // every 100 ms (the latch set by the cancel ends the current slice at once only in WaitForCheckpointer).
        int recheckMs = cancellationToken.CanBeCanceled ? 100 : RecheckMs;
        const CheckpointFlags valid = CheckpointFlags.Shutdown | CheckpointFlags.EndOfRecovery | CheckpointFlags.Immediate
            | CheckpointFlags.Force | CheckpointFlags.Wait | CheckpointFlags.Requested | CheckpointFlags.CauseTime;
        if ((flags & ~valid) != 0)
            throw new ArgumentOutOfRangeException(nameof(flags), flags, "unknown checkpoint flags");
        CheckpointerShmem* h = _shared;

        // Set the flags and snapshot the counters at once: ckpt_started moving past oldStarted then means the
        // checkpointer has taken our flags. OR, never assign: a stronger request by someone else must survive.
        SLock.Acquire(ref h->CkptLock, "checkpointer");
        int oldFailed = h->CkptFailed;
        int oldStarted = h->CkptStarted;
        h->CkptFlags |= (int)(flags | CheckpointFlags.Requested);
        int procno = h->CheckpointerProcNo;
        SLock.Release(ref h->CkptLock);

        bool wait = (flags & CheckpointFlags.Wait) != 0;
        if (wait && procno == me.ProcNumber)
            throw new InvalidOperationException("the checkpointer cannot wait for a checkpoint it would have to run itself");
        if (procno == PgProc.InvalidProcNumber)
        {
            if (!wait)
                return; // the request stays pending; a checkpointer that starts will see it
            procno = WaitForCheckpointer(me, cancellationToken);
        }
        Latch.Latches.SetLatch(_procs, procno);
        if (!wait)
            return;

        // Wait for a checkpoint to begin after our request ...
        int newStarted;
        ConditionVariable.PrepareToSleep(me, ref h->StartCv);
        try
        {
            while (true)
            {
                SLock.Acquire(ref h->CkptLock, "checkpointer");
                newStarted = h->CkptStarted;
                SLock.Release(ref h->CkptLock);
                if (newStarted != oldStarted)
                    break;
                CheckCheckpointerAlive();
                ConditionVariable.Sleep(me, ref h->StartCv, recheckMs, WaitEventCheckpointStart);
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
        finally
        {
            ConditionVariable.CancelSleep(me);
        }

        // ... then for it to end: ckpt_done catches up with newStarted (modulo 2^32).
        int newFailed;
        ConditionVariable.PrepareToSleep(me, ref h->DoneCv);
        try
        {
            while (true)
            {
                SLock.Acquire(ref h->CkptLock, "checkpointer");
                int newDone = h->CkptDone;
                newFailed = h->CkptFailed;
                SLock.Release(ref h->CkptLock);
                if (newDone - newStarted >= 0)
                    break;
                CheckCheckpointerAlive();
                ConditionVariable.Sleep(me, ref h->DoneCv, recheckMs, WaitEventCheckpointDone);
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
        finally
        {
            ConditionVariable.CancelSleep(me);
        }
        if (newFailed != oldFailed)
            throw new CheckpointRequestFailedException(Status.LastError);
    }

    /// <summary>Waits (polling, as RequestCheckpoint's signal retries do) for a checkpointer to register; its procno.</summary>
    private int WaitForCheckpointer(Participant me, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        while (true)
        {
            SLock.Acquire(ref _shared->CkptLock, "checkpointer");
            int procno = _shared->CheckpointerProcNo;
            SLock.Release(ref _shared->CkptLock);
            if (procno != PgProc.InvalidProcNumber)
                return procno;
            if (Stopwatch.GetElapsedTime(start).TotalMilliseconds >= Options.StartupWaitMs)
                throw new CheckpointerNotRunningException(
                    $"could not request a checkpoint: no checkpointer started within {Options.StartupWaitMs} ms");
            me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 100, WaitEventCheckpointStart);
            me.ResetLatch();
            cancellationToken.ThrowIfCancellationRequested();
        }
    }

    private void CheckCheckpointerAlive()
    {
        SLock.Acquire(ref _shared->CkptLock, "checkpointer");
        int pid = _shared->CheckpointerPid;
        SLock.Release(ref _shared->CkptLock);
        if (pid == 0)
            throw new CheckpointerNotRunningException("the checkpointer stopped before the requested checkpoint completed");
        // Gone only: an unreaped zombie checkpointer is waited for until reaped (kill(pid, 0)'s view).
        if (pid != _platform.Processes.CurrentProcessId && _platform.Processes.GetLiveness(pid) == ProcessLiveness.Gone)
            throw new CheckpointerNotRunningException($"the checkpointer (pid {pid}) died before the requested checkpoint completed");
    }

    // ------------------------------------------------------------------
    // The fsync request queue
    // ------------------------------------------------------------------

    /// <inheritdoc/>
    public uint AbsorbCycle => Volatile.Read(ref _shared->AbsorbCycle);

    /// <summary>ForwardSyncRequest: queues an fsync request for one segment file; false when the queue is full.</summary>
    public bool TryForward(uint rel, ForkNumber fork, uint segno, out uint cycle)
    {
        CheckpointerShmem* h = _shared;
        SLock.Acquire(ref h->QueueLock, "checkpointer request queue");
        cycle = h->AbsorbCycle;
        int n = h->NumRequests;
        if (n >= h->MaxRequests)
        {
            SLock.Release(ref h->QueueLock);
            return false;
        }
        _requests[n] = new CheckpointerRequest { RelNumber = rel, Fork = fork, SegNo = segno };
        h->NumRequests = n + 1;
        SLock.Release(ref h->QueueLock);
        return true;
    }

    /// <summary>
    /// AbsorbSyncRequests: moves every queued fsync request into this process's Smgr for its next Sync, and bumps the
    /// absorb cycle (writers then forward again). Only the checkpointer calls it. Returns how many it took.
    /// </summary>
    internal int AbsorbSyncRequests()
    {
        BufferPool pool = _pool ?? throw new InvalidOperationException("this checkpointer view has no buffer pool (Init with one to absorb requests)");
        CheckpointerRequest[] buf = _absorbBuffer ??= new CheckpointerRequest[_shared->MaxRequests];
        CheckpointerShmem* h = _shared;
        SLock.Acquire(ref h->QueueLock, "checkpointer request queue");
        int n = h->NumRequests;
        if (n < 0 || n > buf.Length)
        {
            // Input from another process: checked before the copy, thrown after the release.
            SLock.Release(ref h->QueueLock);
            throw new PgIpcException($"{ShmemName} is corrupt: NumRequests {n} is outside 0..{buf.Length}");
        }
        new ReadOnlySpan<CheckpointerRequest>(_requests, n).CopyTo(buf);
        h->NumRequests = 0;
        // Release store: a writer that reads the new cycle re-forwards; one that reads the old knows its request is queued.
        Volatile.Write(ref h->AbsorbCycle, h->AbsorbCycle + 1);
        SLock.Release(ref h->QueueLock);
        for (int i = 0; i < n; i++)
            pool.Smgr.RememberSyncRequest(buf[i].RelNumber, buf[i].Fork, buf[i].SegNo);
        return n;
    }
}
