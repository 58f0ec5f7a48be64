/*-------------------------------------------------------------------------
 * LWLock.DeadHolder.cs
 *   An LWLock waiter's look for a dead holder and dead waiters: the
 *   timed-out sleeper's check (CheckForDeadHolder), the search of the
 *   exclusive holder and of the slots' held-lock mirrors, and the repair of
 *   a queue left by a waiter that died (RepairAfterDeadWaiter).
 *
 * NOTES
 *   A holder that dies. PostgreSQL's postmaster kills every process when
 *   one dies holding a lock (crash restart); PgIpc's supervisor does too.
 *   Without a supervisor, waiters find out for themselves (DeadHolder.cs):
 *     - the exclusive holder records itself in the lock (ExclusiveHolder,
 *       procno + 1 in the two bytes after Tranche): a plain store after the
 *       acquiring CAS, cleared by a plain store before the releasing add.
 *       Both touch the line the atomic just owned, so the uncontended pair
 *       stays two atomics; the field is advisory, read only by waiters;
 *     - shared holders cannot be listed in 16 bytes; each participant
 *       mirrors the locks it holds into its PGPROC (Participant.PushHeld);
 *     - a sleeper waits on its semaphore with a timeout (DeadHolderCheckMs,
 *       only in the slow path) and, at each timeout, while still queued:
 *       takes dead waiters off this lock's queue (a releaser that woke a dead
 *       waiter left RELEASE_OK clear, so nobody else would ever be woken);
 *       then, if the lock is still held, looks for the holder: the recorded
 *       exclusive holder's pid, else any slot whose pid is dead and whose
 *       mirror says it holds this lock. If the holder is dead it leaves the
 *       queue (under the wait-list lock, as DequeueSelf does; if a releaser
 *       took it off meanwhile the lock was released after all and it simply
 *       carries on), re-posts absorbed wake-ups, and throws
 *       LockHolderDiedException naming the lock and the pid. The lock stays
 *       held and the queue behind it intact: every later waiter gets the
 *       same exception after one check interval.
 *   A waker that dies between unlinking a sleeper and posting it: the
 *   waker records its pid in the sleeper's slot (LwWakerPid) before it
 *   marks it PendingWakeup; a sleeper whose slice ends unlinked but not
 *   posted checks that pid, and once the waker is gone takes a post that
 *   made it before the death or else completes the wake-up itself
 *   (WakerDiedBeforePosting); slot reclamation does the same for a dead
 *   waiter whose waker died. A participant thread that ends without
 *   releasing while its process lives is not detected.
 *
 *   The exception and the pid liveness check are in DeadHolder.cs.
 *   PostgreSQL has no counterpart (see DeadHolder.cs); the queue handling
 *   follows src/backend/storage/lmgr/lwlock.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Sync;

public unsafe partial struct LWLock
{
    // ------------------------------------------------------------------
    // Dead holders and dead waiters (see this file's banner and DeadHolder.cs)
    // ------------------------------------------------------------------

    /// <summary>
    /// A sleeper's semaphore stayed silent for a slice. If it is still queued: repair this lock's queue of dead
    /// waiters, then, if a dead process holds the lock, leave the queue and throw <see cref="LockHolderDiedException"/>.
    /// If a waker unlinked it but died before posting, returns true: the sleeper is woken. Returns false (to sleep
    /// again) otherwise.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool CheckForDeadHolder(LWLock* l, Participant me, ref int extraWaits)
    {
        PgProc* proc = me.Proc;
        // Unlinked by a waker already: its post is on the way (it stores NotWaiting, then posts), unless it died.
        if (Volatile.Read(ref proc->LwWaiting) != (int)LWLockWaitState.Waiting)
            return WakerDiedBeforePosting(me, ref extraWaits);
        ProcArray array = me.Array;
        // A dead waiter harms the queue only once a releaser has woken it (RELEASE_OK stays clear) or when the lock is
        // free while we still wait; only then look for one (each look is a liveness check per queued waiter).
        uint seen = Volatile.Read(ref l->State);
        if ((seen & Bits.FlagReleaseOk) == 0 || (seen & Bits.LockMask) == 0)
            RepairDeadWaitersOf(l, me);
        (int deadPid, int deadProcno) = FindDeadHolder(l, me);
        if (deadPid == 0)
            return false;

        // Leave the queue, as DequeueSelf does. If a releaser unlinked us meanwhile, the lock was released after all:
        // keep sleeping for its post and compete for the lock as usual.
        PgProc* procs = array.Procs;
        WaitListLock(l);
        bool onList = proc->LwWaiting == (int)LWLockWaitState.Waiting;
        if (onList)
        {
            ListDelete(l, procs, me.ProcNumber);
            if (l->WaitHead == PgProc.InvalidProcNumber)
                Interlocked.And(ref l->State, ~Bits.FlagHasWaiters);
            proc->LwWaiting = (int)LWLockWaitState.NotWaiting;
        }
        WaitListUnlock(l);
        if (!onList)
            return false;
        me.RepostExtraWaits(extraWaits);
        extraWaits = 0;
        throw new LockHolderDiedException(DescribeLock(array, l), deadPid, deadProcno);
    }

    /// <summary>
    /// The segment is being detached in this process and this sleeper was asked to leave: takes it off the queue
    /// and throws <see cref="ObjectDisposedException"/> (the participant must unwind and leave). If a waker unlinked
    /// it meanwhile, returns: its post is on the way and the lock is granted as usual.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void LeaveQueueForDetach(LWLock* l, Participant me, ref int extraWaits)
    {
        PgProc* proc = me.Proc;
        WaitListLock(l);
        bool onList = proc->LwWaiting == (int)LWLockWaitState.Waiting;
        if (onList)
        {
            ListDelete(l, me.Array.Procs, me.ProcNumber);
            if (l->WaitHead == PgProc.InvalidProcNumber)
                Interlocked.And(ref l->State, ~Bits.FlagHasWaiters);
            proc->LwWaiting = (int)LWLockWaitState.NotWaiting;
        }
        WaitListUnlock(l);
        if (!onList)
            return;
        me.RepostExtraWaits(extraWaits);
        extraWaits = 0;
        me.ThrowIfLeaveRequested();
    }

    /// <summary>
    /// The sleeper was unlinked from the queue (PendingWakeup, or NotWaiting already) but its slice ended without a
    /// post. A waker does both in a few instructions, so a live one is let finish; one that died in between never
    /// will. Then the post is either on the semaphore already (it posted and died) or never comes: take it if it is
    /// there, else complete the wake-up here. True when the sleeper counts as woken.
    /// </summary>
    private static bool WakerDiedBeforePosting(Participant me, ref int extraWaits)
    {
        PgProc* proc = me.Proc;
        if (!WakerIsGone(me.Array, proc))
            return false;
        IProcSemaphoreSet sems = me.Array.Semaphores;
        while (sems.TryLock(me.ProcNumber))
        {
            // Acquire load; pairs with the waker's release store of NotWaiting before its post.
            if (Volatile.Read(ref proc->LwWaiting) == (int)LWLockWaitState.NotWaiting)
                return true; // it posted before it died
            extraWaits++; // a post meant for another wait of ours: re-posted when we are done, as usual
        }
        // Unlinked under the wait-list lock by a process that is gone: nobody else touches these fields now.
        proc->LwWaitNext = PgProc.InvalidProcNumber;
        proc->LwWaitPrev = PgProc.InvalidProcNumber;
        Volatile.Write(ref proc->LwWaiting, (int)LWLockWaitState.NotWaiting);
        return true;
    }

    /// <summary>
    /// The dead process holding <paramref name="l"/>, if any: (pid, procno), or (0, -1) when the lock is free or held
    /// by live holders only as far as can be seen. A pid is blamed only while the lock stays held in the way it names.
    /// </summary>
    private static (int Pid, int ProcNumber) FindDeadHolder(LWLock* l, Participant me)
    {
        ProcArray array = me.Array;
        PgProc* procs = array.Procs;
        IProcessServices processes = array.Processes;
        int myPid = processes.CurrentProcessId;
        uint state = Volatile.Read(ref l->State);
        if ((state & Bits.LockMask) == 0)
            return (0, -1);

        if ((state & Bits.ValExclusive) != 0)
        {
            int tag = Volatile.Read(ref l->ExclusiveHolder);
            if (tag != 0 && tag <= array.MaxProcs)
            {
                int procno = tag - 1;
                int pid = Volatile.Read(ref procs[procno].Pid);
                // Gone only: an unreaped zombie holder is waited for until it is reaped (DeadHolder.cs).
                if (pid == 0 || pid == myPid || !array.IsSlotOwnerGone(procs + procno, pid))
                    return (0, -1); // a live holder (or one handing over right now): keep waiting
                // Still the same holder and still exclusive after the check: it died holding the lock.
                if (Volatile.Read(ref l->ExclusiveHolder) == tag && (Volatile.Read(ref l->State) & Bits.ValExclusive) != 0
                    && Volatile.Read(ref procs[procno].Pid) == pid)
                    return (pid, procno);
                return (0, -1);
            }
        }

        // Shared holders (or an exclusive one that is not recorded): a dead slot whose held-lock mirror names the lock.
        uint want = me.MirrorTag(l);
        for (int i = 0; i < array.MaxProcs; i++)
        {
            PgProc* p = procs + i;
            int pid = Volatile.Read(ref p->Pid);
            if (pid == 0 || pid == myPid)
                continue;
            int held = Volatile.Read(ref p->NumHeldLWLocks);
            if (held <= 0 || !MirrorNames(p, held, want) || !array.IsSlotOwnerGone(p, pid)) // as above
                continue;
            // Dead: its stores are final. Blame it while the lock is still held.
            if ((Volatile.Read(ref l->State) & Bits.LockMask) != 0 && Volatile.Read(ref p->Pid) == pid)
                return (pid, i);
        }
        return (0, -1);
    }

    /// <summary>True when a held-lock mirror of <paramref name="held"/> locks names the lock tagged <paramref name="want"/>.</summary>
    private static bool MirrorNames(PgProc* p, int held, uint want)
    {
        // Only an exact match blames a dead slot. Locks past the mirrored ones, and locks outside the main segment
        // (tag 0), are unknown: treating them as a match would blame a dead process for a lock live ones hold (and,
        // since such a slot is never reclaimed, for good). Those waiters are left to the crash restart.
        if (want == 0)
            return false;
        int n = Math.Min(held, PgProc.MirroredHeldLWLocks);
        for (int k = 0; k < n; k++)
            if (p->HeldLWLocks[k] == want)
                return true;
        return false;
    }

    /// <summary>
    /// Takes dead waiters off <paramref name="l"/>'s queue and restores RELEASE_OK for them (as ReclaimDeadSlots would,
    /// without freeing their slots): a releaser that woke a dead waiter cleared RELEASE_OK, and nobody else on the
    /// queue would ever be woken. May wake waiters, this one included.
    /// </summary>
    private static void RepairDeadWaitersOf(LWLock* l, Participant me)
    {
        ProcArray array = me.Array;
        long offset = array.OffsetInMainSegment(l);
        if (offset < 0)
            return;
        PgProc* procs = array.Procs;
        int myPid = array.Processes.CurrentProcessId;
        for (int i = 0; i < array.MaxProcs; i++)
        {
            PgProc* p = procs + i;
            if (Volatile.Read(ref p->LwWaitLockOffset) != offset)
                continue;
            int pid = Volatile.Read(ref p->Pid);
            // Gone (or pid reused) only, as ReclaimDeadSlots: an unreaped zombie waiter is left on the queue until reaped.
            if (pid == 0 || pid == myPid || !array.IsSlotOwnerGone(p, pid))
                continue;
            RepairAfterDeadWaiter(l, array, i, pid);
        }
    }

    /// <summary>A queue link: -1 (none) or a slot of the array.</summary>
    private static bool IsProcLink(int procno, int maxProcs) => procno == PgProc.InvalidProcNumber || (uint)procno < (uint)maxProcs;

    /// <summary>The lock as an exception names it: "LWLock tranche[index]" for a named tranche's lock, else its offset.</summary>
    internal static string DescribeLock(ProcArray array, LWLock* l)
    {
        ShmemSegment segment = array.Segment;
        string tranche = LWLockTranches.NameOf(segment, l->Tranche);
        int index = LWLockTranches.IndexInNamedTranche(segment, l);
        if (index >= 0)
            return $"LWLock {tranche}[{index}]";
        long offset = array.OffsetInMainSegment(l);
        return offset >= 0 ? $"LWLock {tranche} at offset 0x{offset:x} of the main segment" : $"LWLock {tranche} (outside the main segment)";
    }

    /// <summary>
    /// Repairs a lock whose acquirer died inside Acquire (its slot is being reclaimed): takes the dead slot off
    /// the queue, restores RELEASE_OK (a waker may have cleared it for the dead one), and wakes the next waiters
    /// if the lock is free. Returns false when a waker is half-way through posting the slot (try again later).
    /// <paramref name="deadPid"/> is the pid found dead: if the slot has meanwhile been reclaimed and handed to a new
    /// participant (which queues under the same wait-list lock), nothing is touched.
    /// </summary>
    internal static bool RepairAfterDeadWaiter(LWLock* l, ProcArray array, int procno, int deadPid)
    {
        PgProc* procs = array.Procs;
        PgProc* p = procs + procno;
        long offset = array.OffsetInMainSegment(l);
        // The queue links are procnos another process wrote (and the offset that led here was the dead one's): check
        // them before the wait-list lock is taken, so that a wild one is reported instead of followed. A real LWLock's
        // queue ends are -1 or slots; anything else is not an LWLock, or a corrupt one.
        int head = Volatile.Read(ref l->WaitHead), tail = Volatile.Read(ref l->WaitTail);
        if (!IsProcLink(head, array.MaxProcs) || !IsProcLink(tail, array.MaxProcs))
            throw new ShmemCorruptException($"LWLock at offset 0x{offset:x} (recorded by dead PGPROC slot {procno}, pid {deadPid})", "wait queue",
                $"ends at slots {head} and {tail}, not slots of the {array.MaxProcs} in the array");
        WaitListLock(l);
        // The wait state first, then the owner: a new owner of the slot stores its pid before it ever queues (and it
        // queues under another lock's wait-list lock, which this one does not exclude), so a state read here that is
        // the new owner's is followed by a pid read that is not deadPid. Acquire loads; pair with those stores.
        int state = Volatile.Read(ref p->LwWaiting);
        if (Volatile.Read(ref p->Pid) != deadPid || (state == (int)LWLockWaitState.Waiting && Volatile.Read(ref p->LwWaitLockOffset) != offset))
        {
            WaitListUnlock(l);
            return true;
        }
        if (state == (int)LWLockWaitState.PendingWakeup && !WakerIsGone(array, p))
        {
            WaitListUnlock(l);
            return false; // a live waker is half-way through posting: try again later
        }
        if (state == (int)LWLockWaitState.Waiting)
        {
            int prev = p->LwWaitPrev, next = p->LwWaitNext;
            head = l->WaitHead;
            tail = l->WaitTail;
            if (!IsProcLink(prev, array.MaxProcs) || !IsProcLink(next, array.MaxProcs) || !IsProcLink(head, array.MaxProcs) || !IsProcLink(tail, array.MaxProcs))
            {
                // Nothing is changed: the error is raised after the wait-list lock is dropped.
                WaitListUnlock(l);
                throw new ShmemCorruptException($"PGPROC slot {procno} (dead pid {deadPid}) queued on the LWLock at offset 0x{offset:x}", "wait links",
                    $"prev {prev}, next {next}, queue ends {head} and {tail}: not slots of the {array.MaxProcs} in the array");
            }
            ListDelete(l, procs, procno);
            p->LwWaiting = (int)LWLockWaitState.NotWaiting;
        }
        else if (state == (int)LWLockWaitState.PendingWakeup)
        {
            // Unlinked by a waker that died too: nobody will post or touch the links; finish its job.
            p->LwWaitNext = PgProc.InvalidProcNumber;
            p->LwWaitPrev = PgProc.InvalidProcNumber;
            p->LwWaiting = (int)LWLockWaitState.NotWaiting;
        }
        if (l->WaitHead == PgProc.InvalidProcNumber)
            Interlocked.And(ref l->State, ~Bits.FlagHasWaiters);
        WaitListUnlock(l);

        uint now = Interlocked.Or(ref l->State, Bits.FlagReleaseOk) | Bits.FlagReleaseOk;
        if ((now & (Bits.FlagHasWaiters | Bits.LockMask)) == Bits.FlagHasWaiters)
            Wakeup(l, array);
        return true;
    }

    /// <summary>
    /// True when the process that unlinked slot <paramref name="p"/> to wake it no longer exists. Gone only: a zombie
    /// waker is waited for until reaped. A waker whose pid the OS reused before the check looks alive (the pid alone
    /// is recorded): the sleeper then waits for a crash restart, as it did before.
    /// </summary>
    private static bool WakerIsGone(ProcArray array, PgProc* p)
    {
        // After the caller's acquire load of LwWaiting; pairs with the waker's release store of PendingWakeup.
        int waker = Volatile.Read(ref p->LwWakerPid);
        IProcessServices processes = array.Processes;
        return waker > 0 && waker != processes.CurrentProcessId && processes.GetLiveness(waker) == ProcessLiveness.Gone;
    }
}
