/*-------------------------------------------------------------------------
 * Participant.cs
 *   A thread that owns a PGPROC slot: what PostgreSQL calls a backend's
 *   MyProc, plus its private list of held LWLocks.
 *
 * NOTES
 *   In PostgreSQL a participant is a process. A .NET process has many
 *   threads, so here a participant is a thread: ProcArray.Join binds a slot
 *   to the calling thread ([ThreadStatic] current participant), and every
 *   LWLock call without an explicit participant uses that one. Several
 *   participants may live in one process; they share its mapping of the
 *   segment and its semaphore handles.
 *
 *   The held-lock list is private to the participant (num_held_lwlocks /
 *   held_lwlocks[] in lwlock.c): an array allocated once at Join, so taking
 *   and releasing locks allocates nothing. It lets Release find the mode a
 *   lock was taken in, answers HeldByMe, and lets ReleaseAllLWLocks undo
 *   everything after an error (LWLockReleaseAll, called on abort): the
 *   pattern is
 *       try { ... } catch { Participant.Current.ReleaseAllLWLocks(); throw; }
 *   or, for one lock, `using (lockRef.Hold(mode)) { ... }`.
 *
 *   Every change of the list is mirrored, with plain stores, into the slot's
 *   NumHeldLWLocks / HeldLWLocks (PgProc.cs), so that if this process dies
 *   while holding locks, their waiters can name it and ProcArray leaves the
 *   slot in place. The mirror costs a store or two on this participant's
 *   own cache line per acquire and release.
 *
 *   A participant must not be used by two threads at once; locks are never
 *   held across an await.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Sync;

namespace PgIpc.Proc;

/// <summary>The calling thread's PGPROC slot and held LWLocks. Dispose (on its thread) gives the slot back.</summary>
public sealed unsafe partial class Participant : IDisposable
{
    [ThreadStatic]
    private static Participant? t_current;

    internal readonly ProcArray Array;
    internal readonly PgProc* Proc;
    private readonly HeldLWLock[] _held = new HeldLWLock[LWLock.MaxHeldLocks];
    private int _numHeld;
    // 0 open; 1 closed (left, or closed for its thread); 2 asked to leave: the segment is being detached in this
    // process while this participant's thread is still inside it (ProcArray.AskOtherThreadsToLeave). Written with
    // CAS; read by this participant's thread (plain loads in the LWLock checks, volatile elsewhere).
    private int _closed;
    private const int Open = 0, Closed = 1, Leaving = 2;
    private readonly ILatchOwner _latchOwner;
    private readonly Latch.WaitEventSet?[] _latchSets = new Latch.WaitEventSet?[4];
    private readonly Action<Participant>?[] _signalHandlers = new Action<Participant>?[64];
    private readonly Action<Participant, uint>?[] _barrierHandlers = new Action<Participant, uint>?[32];
    internal Sync.ConditionVariable* CvSleepTarget;

    /// <summary>This participant's activity counts for the "PgIpc" meter (Diagnostics/PgIpcMetrics.cs): its thread's plain adds.</summary>
    internal readonly Diagnostics.ActivityCounters Counters = Diagnostics.PgIpcMetrics.Track();

    /// <summary>What an LWLock held exclusive by this participant records as its holder: procno + 1, or 0 past 65534.</summary>
    internal readonly ushort HolderTag;

    // The main segment as this process maps it, for the held-lock mirror's offsets.
    private readonly byte* _segmentBase;
    private readonly ulong _mirrorLimit;

    /// <summary>One entry of the held-lock list (process-local).</summary>
    private struct HeldLWLock
    {
        public LWLock* Lock;
        public LWLockMode Mode;
    }

    internal Participant(ProcArray array, int procNumber, ProcKind kind)
    {
        Array = array;
        ProcNumber = procNumber;
        Kind = kind;
        Proc = array.Procs + procNumber;
        HolderTag = procNumber < ushort.MaxValue ? (ushort)(procNumber + 1) : (ushort)0;
        _segmentBase = array.SegmentBase;
        // Offsets are kept in units of 4 bytes in a uint: up to 16 GiB of segment.
        _mirrorLimit = Math.Min((ulong)array.SegmentSize, (ulong)uint.MaxValue * 4);
        ThreadId = Environment.CurrentManagedThreadId;
        _latchOwner = array.Wakers.Own(procNumber);
        // Start at the current barrier generation: barriers emitted before we joined are not ours to absorb.
        Volatile.Write(ref Proc->BarrierGeneration, Signals.ProcSignal.CurrentBarrierGeneration(array));
        // pgstat_bestart: this participant's activity slot, when the cluster has shared statistics (Participant.Activity.cs).
        _status = Stats.SharedStats.BeginParticipant(array.Segment, procNumber, Volatile.Read(ref Proc->Pid), kind);
        t_current = this;
    }

    internal ILatchOwner LatchOwner => _latchOwner;

    /// <summary>Room for WaitLatch's results, allocated once (WaitEvent holds a reference, so it cannot live on the stack).</summary>
    internal WaitEvent[] LatchEventBuffer { get; } = new WaitEvent[2];

    /// <summary>The cached wait set WaitLatch uses for this combination of latch / supervisor death.</summary>
    internal Latch.WaitEventSet LatchWaitSet(WaitEvents events)
    {
        int key = ((events & WaitEvents.LatchSet) != 0 ? 1 : 0) | ((events & WaitEvents.SupervisorDeath) != 0 ? 2 : 0);
        Latch.WaitEventSet? set = _latchSets[key];
        if (set is not null)
            return set;
        set = new Latch.WaitEventSet(this, 2);
        int latchPos = set.AddLatch();
        if ((key & 1) == 0)
            set.Modify(latchPos, WaitEvents.None);
        if ((key & 2) != 0)
            set.AddSupervisorDeath();
        _latchSets[key] = set;
        return set;
    }

    // ------------------------------------------------------------------
    // Latch and interrupts (convenience over Latch.Latches and Signals.ProcSignal)
    // ------------------------------------------------------------------

    /// <summary>Sets this participant's latch (from any thread).</summary>
    public void SetLatch() => Latch.Latches.SetLatch(Array, ProcNumber);

    /// <summary>Clears this participant's latch (its own thread, before checking for work).</summary>
    public void ResetLatch() => Latch.Latches.ResetLatch(this);

    /// <summary>Waits on this participant's latch (WaitLatch); see <see cref="Latch.Latches.WaitLatch(Participant, WaitEvents, int, WaitEventId)"/>.</summary>
    public WaitEvents WaitLatch(WaitEvents events, int timeoutMs, WaitEventId waitEvent = default)
        => Latch.Latches.WaitLatch(this, events, timeoutMs, waitEvent);

    /// <summary>
    /// WaitLatch with a <see cref="TimeSpan"/> timeout (<see cref="Timeout.InfiniteTimeSpan"/>: none) and a
    /// cancellation token; see <see cref="Latch.Latches.WaitLatch(Participant, WaitEvents, TimeSpan, WaitEventId, CancellationToken)"/>.
    /// </summary>
    public WaitEvents WaitLatch(WaitEvents events, TimeSpan timeout, WaitEventId waitEvent = default, CancellationToken cancellationToken = default)
        => Latch.Latches.WaitLatch(this, events, timeout, waitEvent, cancellationToken);

    /// <summary>
    /// Registers what <see cref="ProcessInterrupts"/> runs for <paramref name="reason"/> (null removes it). Handlers run
    /// on this participant's thread at a safe point, never in the signal callback.
    /// </summary>
    public void SetProcSignalHandler(Signals.ProcSignalReason reason, Action<Participant>? handler)
    {
        if ((uint)reason >= 64)
            throw new ArgumentOutOfRangeException(nameof(reason), reason, "ProcSignal reasons are 0..63");
        _signalHandlers[(int)reason] = handler;
    }

    /// <summary>Registers how this participant absorbs barrier kind <paramref name="kind"/> (0..31); null: nothing to do but acknowledge.</summary>
    public void SetBarrierHandler(int kind, Action<Participant, uint>? handler)
    {
        if ((uint)kind >= 32)
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "barrier kinds are 0..31");
        _barrierHandlers[kind] = handler;
    }

    /// <summary>
    /// CHECK_FOR_INTERRUPTS: runs the handlers of every ProcSignal reason delivered since the last call and absorbs
    /// pending ProcSignalBarriers. Call at safe points (no spinlock held). Returns the reasons handled. With
    /// nothing pending it is two loads and allocates nothing.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long ProcessInterrupts()
    {
        if (Volatile.Read(ref Proc->ProcSignalFlags) == 0 && Volatile.Read(ref Proc->BarrierFlags) == 0)
            return 0;
        return ProcessInterruptsSlow();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private long ProcessInterruptsSlow()
    {
        ThrowIfClosed();
        // Take every pending reason at once; pairs with the senders' Interlocked.Or (a reason sent again
        // while we run its handler is seen by the next call: coalesced, never lost).
        long flags = Interlocked.Exchange(ref Proc->ProcSignalFlags, 0);
        for (int r = 0; r < 64; r++)
        {
            if ((flags & (1L << r)) == 0 || r == (int)Signals.ProcSignalReason.Barrier)
                continue;
            if (_signalHandlers[r] is { } handler)
                handler(this);
            else if (r == (int)Signals.ProcSignalReason.LogMemoryContext)
                LogMemoryContexts(); // the default handler (Participant.Activity.cs)
        }
        if (Volatile.Read(ref Proc->BarrierFlags) != 0 || (flags & (1L << (int)Signals.ProcSignalReason.Barrier)) != 0)
            Signals.ProcSignal.AbsorbBarriers(this, _barrierHandlers);
        return flags;
    }


    /// <summary>
    /// The calling thread's participant; throws when the thread has not joined (ProcArray.Join). Behind the
    /// convenience overloads only (LWLock.Acquire(mode), SinvalQueue.SendMessages(messages), ...): every API that needs
    /// a participant also takes one explicitly, which is what code that hands participants between threads uses.
    /// </summary>
    public static Participant Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            Participant? p = t_current;
            if (p is null || p._closed == Closed)
                ThrowNotParticipant();
            return p!;
        }
    }

    /// <summary>The calling thread's participant, or null.</summary>
    public static Participant? CurrentOrNull
    {
        get
        {
            Participant? p = t_current;
            return p is null || p._closed == Closed ? null : p;
        }
    }

    /// <summary>Slot number (procno): how other participants name this one.</summary>
    public readonly int ProcNumber;

    /// <summary>Kind of slot.</summary>
    public ProcKind Kind { get; }

    /// <summary>Managed id of the thread that joined.</summary>
    public int ThreadId { get; }

    /// <summary>The slot array this participant belongs to.</summary>
    public ProcArray ProcArray => Array;

    /// <summary>Number of LWLocks held now.</summary>
    public int HeldLockCount => _numHeld;

    /// <summary>
    /// Set by the heavyweight lock manager while this participant's thread is inside one of its calls (its
    /// LocalLockTable.Busy); written and read volatile: a Dispose from another thread refuses to run meanwhile.
    /// </summary>
    internal volatile bool InLockManagerCall;

    /// <summary>True once disposed.</summary>
    public bool IsDisposed => Volatile.Read(ref _closed) == Closed;

    /// <summary>
    /// True once the segment is being detached in this process (a Dispose of the cluster, a crash restart in the
    /// supervisor) while this participant's thread was still inside it: every wait (a latch, an LWLock or heavyweight
    /// lock sleep) then throws <see cref="ObjectDisposedException"/>, and the thread is expected to unwind, release
    /// what it holds (LWLocks can still be taken for that) and dispose the participant, which the detach waits for.
    /// </summary>
    public bool LeaveRequested => Volatile.Read(ref _closed) == Leaving;

    /// <summary>Asks this participant's thread to leave (see <see cref="LeaveRequested"/>); false when it has left already.</summary>
    internal bool RequestLeave() => Interlocked.CompareExchange(ref _closed, Leaving, Open) == Open;

    /// <summary>
    /// What this participant is waiting for, for diagnostics (PostgreSQL's wait_event_info, kept as a uint in its
    /// PGPROC's WaitEventInfo). Atomic store. Named by <see cref="WaitEventRegistry"/>.
    /// </summary>
    public WaitEventId WaitEvent
    {
        get
        {
            ThrowIfClosed();
            return new WaitEventId(Volatile.Read(ref Proc->WaitEventInfo));
        }
        set
        {
            ThrowIfClosed();
            Volatile.Write(ref Proc->WaitEventInfo, value.Value);
        }
    }

    // ------------------------------------------------------------------
    // Held-lock list (used by LWLock)
    // ------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void CheckCanTake(LWLockMode mode)
    {
        if ((uint)mode > (uint)LWLockMode.Shared || _numHeld >= LWLock.MaxHeldLocks || _closed != 0
            || Proc->LwWaiting != (int)LWLockWaitState.NotWaiting)
            ThrowCannotTake(mode);
    }

    /// <summary>
    /// The slow half of <see cref="CheckCanTake"/>: throws for what forbids the acquire. Returns when the only reason
    /// it was called is a leave request: a participant asked to leave may still take LWLocks to release what it holds
    /// (its waits are what throw, see <see cref="LeaveRequested"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowCannotTake(LWLockMode mode)
    {
        if ((uint)mode > (uint)LWLockMode.Shared)
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "an LWLock is acquired Exclusive or Shared");
        if (Volatile.Read(ref _closed) == Closed)
            throw new ObjectDisposedException(nameof(Participant), $"participant {ProcNumber} has left");
        if (_numHeld >= LWLock.MaxHeldLocks)
            throw new LWLockUsageException($"too many LWLocks taken: participant {ProcNumber} already holds {_numHeld}, the limit is {LWLock.MaxHeldLocks}");
        if (Proc->LwWaiting != (int)LWLockWaitState.NotWaiting)
            throw new LWLockUsageException($"participant {ProcNumber} is already waiting for an LWLock; it cannot acquire another until that wait ends");
    }

    internal void CheckNotWaiting()
    {
        if (_closed != 0 || Proc->LwWaiting != (int)LWLockWaitState.NotWaiting)
            ThrowCannotTake(LWLockMode.Exclusive);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void PushHeld(LWLock* l, LWLockMode mode)
    {
        int n = _numHeld;
        ref HeldLWLock e = ref _held[n];
        e.Lock = l;
        e.Mode = mode;
        _numHeld = n + 1;
        // The shared mirror, entry before count (plain stores: read only after this process is dead).
        PgProc* proc = Proc;
        if (n < PgProc.MirroredHeldLWLocks)
            proc->HeldLWLocks[n] = MirrorTag(l);
        proc->NumHeldLWLocks = n + 1;
    }

    /// <summary>How the held-lock mirror names <paramref name="l"/>: its main-segment offset / 4, or 0 when it lives elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint MirrorTag(LWLock* l)
    {
        ulong off = (ulong)((byte*)l - _segmentBase);
        return off < _mirrorLimit ? (uint)(off >> 2) : 0u;
    }

    /// <summary>Removes the most recent entry for <paramref name="l"/> and returns its mode; throws when there is none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal LWLockMode RemoveHeld(LWLock* l)
    {
        int last = _numHeld - 1;
        // Locks are usually released in reverse order of acquisition: look at the top first.
        if (last >= 0 && _held[last].Lock == l)
        {
            _numHeld = last;
            Proc->NumHeldLWLocks = last;
            return _held[last].Mode;
        }
        return RemoveHeldSlow(l);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private LWLockMode RemoveHeldSlow(LWLock* l)
    {
        for (int i = _numHeld - 1; i >= 0; i--)
        {
            if (_held[i].Lock != l)
                continue;
            LWLockMode mode = _held[i].Mode;
            for (int j = i + 1; j < _numHeld; j++)
                _held[j - 1] = _held[j];
            _numHeld--;
            for (int j = i; j < _numHeld && j < PgProc.MirroredHeldLWLocks; j++)
                Proc->HeldLWLocks[j] = MirrorTag(_held[j].Lock);
            Proc->NumHeldLWLocks = _numHeld;
            return mode;
        }
        throw new LWLockNotHeldException(LWLockTranches.NameOf(Array.Segment, l->Tranche), ProcNumber);
    }

    internal bool HoldsInMode(LWLock* l, LWLockMode? mode)
    {
        for (int i = 0; i < _numHeld; i++)
            if (_held[i].Lock == l && (mode is null || _held[i].Mode == mode))
                return true;
        return false;
    }

    internal void BeginWait(LWLock* l) => Volatile.Write(ref Proc->LwWaitLockOffset, Array.OffsetInMainSegment(l));

    internal void EndWait() => Volatile.Write(ref Proc->LwWaitLockOffset, -1);

    /// <summary>Re-posts semaphore wake-ups that a wait absorbed but that were meant for something else.</summary>
    internal void RepostExtraWaits(int extraWaits)
    {
        while (extraWaits-- > 0)
            Array.Semaphores.Unlock(ProcNumber);
    }

    /// <summary>Releases every LWLock this participant holds, newest first (LWLockReleaseAll, on abort).</summary>
    public void ReleaseAllLWLocks()
    {
        while (_numHeld > 0)
            _held[_numHeld - 1].Lock->Release(this);
    }

    /// <summary>What to undo after an error, as AbortTransaction does: cancel a prepared CV sleep, release every LWLock.</summary>
    public void AbortCleanup()
    {
        Sync.ConditionVariable.CancelSleep(this);
        ReleaseAllLWLocks();
    }

    // ------------------------------------------------------------------
    // Leaving
    // ------------------------------------------------------------------

    /// <summary>Releases any LWLocks still held and gives the slot back (ProcKill). Idempotent.</summary>
    public void Dispose()
    {
        // Closed already (also when the segment was detached: the slot memory may be unmapped by now).
        if (Volatile.Read(ref _closed) == Closed)
            return;
        if (Proc->LwWaiting != (int)LWLockWaitState.NotWaiting)
            throw new InvalidOperationException($"participant {ProcNumber} is waiting for an LWLock on its thread; it cannot leave from another thread");
        // The same for a thread inside the heavyweight lock manager (waiting for a lock, typically): releasing its locks
        // and its slot under it would leave it queued on a slot given back (or handed on), and its strong-lock count
        // taken back twice.
        if (InLockManagerCall && Environment.CurrentManagedThreadId != ThreadId)
            throw new InvalidOperationException($"participant {ProcNumber} is inside a heavyweight lock call on its thread; it cannot leave from another thread");
        // Subsystems give back what it holds (heavyweight locks) while it can still take LWLocks.
        try
        {
            Array.RunLeaveHooks(this, onItsThread: true);
        }
        finally
        {
            Close(fromExit: false);
        }
    }

    /// <param name="fromExit">Closed for its thread (process exit or segment detach), not by the thread itself.</param>
    /// <param name="processExiting">The process is ending: held LWLocks are kept, not released.</param>
    internal void Close(bool fromExit, bool processExiting = false)
    {
        if (fromExit && Volatile.Read(ref _closed) != Closed && _numHeld == 0 && Proc->LwWaiting == (int)LWLockWaitState.NotWaiting)
        {
            // Leaving with its process or the segment: heavyweight locks go too (ProcKill's LockReleaseAll). A hook that
            // fails leaves its state to the subsystem's own dead-owner cleanup; the slot must still be given back.
            try
            {
                Array.RunLeaveHooks(this, onItsThread: false);
            }
            catch (Exception ex) when (ex is PgIpcException or ObjectDisposedException or InvalidOperationException)
            {
            }
        }
        int was = Volatile.Read(ref _closed);
        while (true)
        {
            if (was == Closed)
                return;
            int seen = Interlocked.CompareExchange(ref _closed, Closed, was);
            if (seen == was)
                break;
            was = seen;
        }
        Diagnostics.PgIpcMetrics.Retire(Counters);
        foreach (Latch.WaitEventSet? set in _latchSets)
            set?.Dispose();
        if (fromExit && Proc->LwWaiting != (int)LWLockWaitState.NotWaiting)
        {
            // Still queued on a lock (its thread is blocked): leave the slot; once this process is gone,
            // ReclaimDeadSlots takes it off the queue and frees it.
            Array.Forget(this);
            return;
        }
        if (processExiting && _numHeld > 0)
        {
            // The process is ending while this participant holds LWLocks (its thread did not get to release them):
            // what they protect may be half-changed, so they are not released. The slot keeps its pid and its mirror
            // of the held locks: waiters get LockHolderDiedException once the process is gone, and a supervisor
            // treats the exit as a crash (Cluster.Step), as the postmaster does for an exit inside a critical section.
            Array.Forget(this);
            return;
        }
        while (_numHeld > 0)
        {
            LWLock* l = _held[_numHeld - 1].Lock;
            LWLockMode mode = _held[_numHeld - 1].Mode;
            _numHeld--;
            Proc->NumHeldLWLocks = _numHeld;
            // Same as LWLock.Release, without the held-list lookup (the participant is closed).
            l->ReleaseHeldByClosed(Array, mode);
        }
        if (CvSleepTarget != null)
            Sync.ConditionVariable.CancelSleep(this);
        _latchOwner.Dispose();
        EndActivity();
        Array.ReleaseSlot(ProcNumber);
        Array.Forget(this);
        if (t_current == this)
            t_current = null;
    }

    private void ThrowIfClosed()
    {
        if (Volatile.Read(ref _closed) == Closed)
            ThrowClosedOrLeaving();
    }

    /// <summary>Throws when the segment is being detached under this participant (see <see cref="LeaveRequested"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void ThrowIfLeaveRequested()
    {
        if (Volatile.Read(ref _closed) == Leaving)
            ThrowClosedOrLeaving();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowClosedOrLeaving()
    {
        if (Volatile.Read(ref _closed) == Leaving)
            throw new ObjectDisposedException(nameof(Participant),
                $"participant {ProcNumber} must leave: shared memory segment {Array.Segment.Handle.Id} is being detached in this process; release what it holds and dispose it");
        throw new ObjectDisposedException(nameof(Participant), $"participant {ProcNumber} has left");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNotParticipant()
        => throw new InvalidOperationException("this thread is not a PgIpc participant: call ProcArray.Join on it first");

    /// <inheritdoc/>
    public override string ToString() => $"participant {ProcNumber} ({Kind}, thread {ThreadId})";
}
