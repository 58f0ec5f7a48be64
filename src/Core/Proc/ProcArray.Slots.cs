/*-------------------------------------------------------------------------
 * ProcArray.Slots.cs
 *   Handing participant slots out and taking them back: Join (InitProcess),
 *   the release on Dispose (ProcKill), reclaiming the slots of processes
 *   found dead, and the read-only list of slots in use.
 *
 * NOTES
 *   Every free-list change is under ProcGlobal's spinlock. A slot is handed
 *   out with a fresh generation, so a late signal or wake-up meant for its
 *   previous owner can be told apart. Reclaiming first repairs any LWLock
 *   queue the dead owner was waiting in (LWLock.RepairAfterDeadWaiter), and
 *   leaves in place a slot whose dead owner still holds LWLocks (its
 *   mirror names them: waiters must keep finding the dead holder).
 *
 *   Mirrors src/backend/storage/lmgr/proc.c (InitProcess, ProcKill).
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Text;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Proc;

public sealed unsafe partial class ProcArray
{
    // ------------------------------------------------------------------
    // Slots
    // ------------------------------------------------------------------

    /// <summary>
    /// Makes the calling thread a participant with a slot of <paramref name="kind"/> (InitProcess). Dispose the
    /// result on the same thread to give the slot back. Throws <see cref="NoFreeProcSlotException"/> when every
    /// slot of that kind belongs to a live participant.
    /// </summary>
    public Participant Join(ProcKind kind = ProcKind.Backend)
    {
        ThrowIfClosed();
        if (Volatile.Read(ref _closed) == ArrayDetaching)
            throw new ObjectDisposedException(nameof(ProcArray), $"the participant slots of segment {_segment.Handle.Id} are being detached in this process: no new participant can join");
        if ((uint)kind > (uint)ProcKind.BackgroundWorker)
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown participant kind");
        Participant? current = Participant.CurrentOrNull;
        if (current is not null)
            throw new InvalidOperationException($"this thread is already participant {current.ProcNumber}; dispose it before joining again");
        int procno = AcquireSlot(kind);
        Participant p;
        try
        {
            p = new Participant(this, procno, kind);
        }
        catch
        {
            ReleaseSlot(procno);
            throw;
        }
        lock (_participants)
            _participants.Add(p);
        return p;
    }

    private int AcquireSlot(ProcKind kind)
    {
        int pid = _processes.CurrentProcessId;
        long identity = MyIdentity(); // outside the spinlock: it may read a file
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        (int start, int end) = RangeOf((int)kind);
        for (int attempt = 0; ; attempt++)
        {
            int procno = PgProc.InvalidProcNumber;
            int badLink = PgProc.InvalidProcNumber;
            SLock.Acquire(ref _header->Lock.Value, "ProcGlobal");
            int head = _header->FreeHeads[(int)kind];
            // The links are shared: one outside this kind's range is corruption, found here (nothing is changed and
            // the error is raised after the spinlock) instead of a write through a wild slot.
            int next = head >= start && head < end ? _procs[head].FreeNext : PgProc.InvalidProcNumber;
            if (head != PgProc.InvalidProcNumber && (head < start || head >= end))
                badLink = head;
            else if (next != PgProc.InvalidProcNumber && (next < start || next >= end))
                badLink = next;
            else if (head != PgProc.InvalidProcNumber)
            {
                PgProc* p = _procs + head;
                _header->FreeHeads[(int)kind] = next;
                p->FreeNext = PgProc.InvalidProcNumber;
                p->Generation++;
                p->AcquiredAtUnixMs = now;
                p->PidIdentity = identity;
                // Release store; pairs with the acquire loads of liveness scans (GetProcs, ReclaimDeadSlots) and of
                // signal senders, who read PidIdentity after Pid.
                Volatile.Write(ref p->Pid, pid);
                _header->SlotsHandedOut++;
                procno = head;
            }
            SLock.Release(ref _header->Lock.Value);
            if (badLink != PgProc.InvalidProcNumber)
                throw new ShmemCorruptException($"ProcGlobal of segment {_segment.Handle.Id}", $"free list of {kind} slots",
                    $"links to slot {badLink}, outside the {kind} slots [{start}, {end})");
            if (procno != PgProc.InvalidProcNumber)
            {
                PgProc* p = _procs + procno;
                ResetWaitState(p);
                p->OwnerThreadId = Environment.CurrentManagedThreadId;
                p->Latch.OwnerPid = pid;
                p->Latch.OwnerProcNumber = procno;
                // A post left over from the previous owner must not wake the new one.
                _semaphores.Reset(procno);
                return procno;
            }
            if (attempt > 0 || ReclaimDeadSlots() == 0)
                throw new NoFreeProcSlotException(kind, Capacity(kind));
        }
    }

    private long _myIdentity = -1;

    /// <summary>This process's identity (start time), read once: it cannot change while the process runs.</summary>
    private long MyIdentity()
    {
        long v = Volatile.Read(ref _myIdentity);
        if (v < 0)
            Volatile.Write(ref _myIdentity, v = _processes.GetIdentity(_processes.CurrentProcessId));
        return v;
    }

    private static void ResetWaitState(PgProc* p)
    {
        p->LwWaiting = (int)LWLockWaitState.NotWaiting;
        p->LwWaitMode = 0;
        p->LwWaitNext = PgProc.InvalidProcNumber;
        p->LwWaitPrev = PgProc.InvalidProcNumber;
        p->LwWaitLockOffset = -1;
        p->LwWakerPid = 0;
        p->CvWaitNext = PgProc.InvalidProcNumber;
        p->CvWaitPrev = PgProc.InvalidProcNumber;
        p->Latch.IsSet = 0;
        p->Latch.MaybeSleeping = 0;
        p->Latch.OwnerPid = 0;
        p->Latch.OwnerProcNumber = PgProc.InvalidProcNumber;
        p->ProcSignalFlags = 0;
        p->InterruptRequesterPid = 0;
        p->WaitEventInfo = 0;
        p->OwnerThreadId = 0;
        p->NumHeldLWLocks = 0;
    }

    /// <summary>Gives a slot back to its kind's free list (ProcKill).</summary>
    internal void ReleaseSlot(int procno)
    {
        PgProc* p = _procs + procno;
        int kind = KindOf(procno); // cached ranges: the slot's shared Kind is another process's word
        ResetWaitState(p);
        SLock.Acquire(ref _header->Lock.Value, "ProcGlobal");
        Volatile.Write(ref p->Pid, 0);
        p->FreeNext = _header->FreeHeads[kind];
        _header->FreeHeads[kind] = procno;
        SLock.Release(ref _header->Lock.Value);
        RunSlotReleaseHooks(procno);
    }

    internal void Forget(Participant p)
    {
        int teardown = 0;
        IDisposable? hold = null;
        lock (_participants)
        {
            _participants.Remove(p);
            Monitor.PulseAll(_participants); // a detach may be waiting for this participant to leave
            if (_deferredTeardown != 0 && _participants.Count == 0)
            {
                // The last participant still inside a detached segment has left: finish that detach.
                teardown = _deferredTeardown;
                hold = _mappingHold;
                _deferredTeardown = 0;
                _mappingHold = null;
            }
        }
        if (teardown == 0)
            return;
        Volatile.Write(ref _closed, ArrayClosed);
        try
        {
            TearDownSemaphoresAndWakers(destroying: teardown == 2);
        }
        finally
        {
            hold?.Dispose();
        }
    }

    /// <summary>
    /// True when the process that took slot <paramref name="p"/> as <paramref name="pid"/> no longer exists: the OS
    /// knows no such pid (<see cref="ProcessLiveness.Gone"/>), or the pid now belongs to another process, whose
    /// identity (start time) is not the one recorded when the slot was taken (the OS reused the pid of the dead
    /// owner). An unreaped zombie counts as alive, as before; so does a pid whose identity the backend cannot tell.
    /// Reads a file per call on Linux: slow paths only (reclamation, dead-holder checks).
    /// </summary>
    internal bool IsSlotOwnerGone(PgProc* p, int pid)
    {
        if (pid <= 0 || pid == _processes.CurrentProcessId)
            return false;
        ProcessLiveness liveness = _processes.GetLiveness(pid);
        if (liveness == ProcessLiveness.Gone)
            return true;
        if (liveness != ProcessLiveness.Alive)
            return false;
        // After the caller's acquire load of Pid: pairs with AcquireSlot's release store, which follows this field's.
        long recorded = Volatile.Read(ref p->PidIdentity);
        if (recorded == 0)
            return false;
        long now = _processes.GetIdentity(pid);
        return now != 0 && now != recorded && Volatile.Read(ref p->Pid) == pid;
    }

    /// <summary>
    /// Gives back every slot whose process is dead (killed, crashed) and repairs the LWLock queue a dead
    /// participant was waiting in. Returns the number of slots reclaimed. Slots of dead participants that were
    /// waiting on a lock outside the main segment, or that a waker is just posting, are left for a later call;
    /// slots of dead participants that still hold LWLocks are never reclaimed (only a restart of the cluster
    /// repairs those locks; the slot keeps naming the dead holder to their waiters).
    /// </summary>
    public int ReclaimDeadSlots()
    {
        ThrowIfClosed();
        int me = _processes.CurrentProcessId;
        int reclaimed = 0;
        for (int i = 0; i < MaxProcs; i++)
        {
            PgProc* p = _procs + i;
            // Acquire load; pairs with the release store in AcquireSlot.
            int pid = Volatile.Read(ref p->Pid);
            // Gone (or its pid reused by another process) only: an unreaped zombie keeps its slot until its parent
            // waits for it (kill(pid, 0)'s view).
            if (pid == 0 || pid == me || !IsSlotOwnerGone(p, pid))
                continue;
            long lockOffset = Volatile.Read(ref p->LwWaitLockOffset);
            if (lockOffset >= 0)
            {
                // Written by the dead owner: an LWLock inside the main segment, aligned as every LWLock is, or corrupt.
                if (lockOffset < _segment.AllocatableStart || lockOffset > _segmentSize - sizeof(LWLock) || (lockOffset & (sizeof(uint) - 1)) != 0)
                    throw new ShmemCorruptException($"PGPROC slot {i} of segment {_segment.Handle.Id} (dead pid {pid})", "wait-lock offset",
                        $"0x{lockOffset:x} is not an LWLock inside the segment's {_segmentSize} bytes");
                if (!LWLock.RepairAfterDeadWaiter((LWLock*)(_base + lockOffset), this, i, pid))
                    continue;
            }
            else if (lockOffset == -2 || Volatile.Read(ref p->LwWaiting) != (int)LWLockWaitState.NotWaiting)
            {
                continue; // queued on a lock we cannot find from here: leave it to a crash restart
            }
            // Died holding LWLocks (the owner's last stores are all visible: it is dead): keep the evidence.
            if (Volatile.Read(ref p->NumHeldLWLocks) != 0)
                continue;
            SLock.Acquire(ref _header->Lock.Value, "ProcGlobal");
            if (p->Pid == pid)
            {
                ResetWaitState(p);
                Volatile.Write(ref p->Pid, 0);
                p->FreeNext = _header->FreeHeads[KindOf(i)];
                _header->FreeHeads[KindOf(i)] = i;
                _header->SlotsReclaimed++;
                reclaimed++;
                SLock.Release(ref _header->Lock.Value);
                RunSlotReleaseHooks(i);
                continue;
            }
            SLock.Release(ref _header->Lock.Value);
        }
        return reclaimed;
    }

    /// <summary>Every slot in use, with its owner pid and wait state (like pg_stat_activity's basics).</summary>
    public IReadOnlyList<PgProcInfo> GetProcs()
    {
        ThrowIfClosed();
        List<PgProcInfo> list = [];
        for (int i = 0; i < MaxProcs; i++)
        {
            PgProc* p = _procs + i;
            int pid = Volatile.Read(ref p->Pid);
            if (pid == 0)
                continue;
            list.Add(new PgProcInfo(i, (ProcKind)p->Kind, pid, Volatile.Read(ref p->Generation),
                (LWLockWaitState)Volatile.Read(ref p->LwWaiting), new WaitEventId(Volatile.Read(ref p->WaitEventInfo)),
                Volatile.Read(ref p->NumHeldLWLocks)));
        }
        return list;
    }

    /// <summary>Free slots of <paramref name="kind"/> right now.</summary>
    public int FreeCount(ProcKind kind)
    {
        ThrowIfClosed();
        if ((uint)kind > (uint)ProcKind.BackgroundWorker)
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown participant kind");
        (int start, int end) = RangeOf((int)kind);
        int n = 0;
        int cur;
        SLock.Acquire(ref _header->Lock.Value, "ProcGlobal");
        // Bounded by the range's size (a cycle) and by the range (a wild link); either ends the walk, reported after the lock.
        for (cur = _header->FreeHeads[(int)kind]; cur != PgProc.InvalidProcNumber && cur >= start && cur < end && n <= end - start; cur = _procs[cur].FreeNext)
            n++;
        SLock.Release(ref _header->Lock.Value);
        if (cur != PgProc.InvalidProcNumber)
            throw new ShmemCorruptException($"ProcGlobal of segment {_segment.Handle.Id}", $"free list of {kind} slots",
                n > end - start ? $"has a cycle (more than its {end - start} slots)" : $"links to slot {cur}, outside the {kind} slots [{start}, {end})");
        return n;
    }
}
