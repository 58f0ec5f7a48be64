/*-------------------------------------------------------------------------
 * LockManager.Table.cs
 *   The main lock table's operations, all under the partition's LWLock
 *   held exclusive: making and removing LOCK and PROCLOCK entries, the
 *   grant and ungrant bookkeeping, the conflict test, the wait queue and
 *   the wake-up of waiters a change lets through.
 *
 * NOTES
 *   The bookkeeping is lock.c's: a request counts in Requested[mode] and
 *   NRequested from the moment it is made; a grant also in Granted[mode],
 *   NGranted, GrantMask and the PROCLOCK's HoldMask; WaitMask has a mode's
 *   bit while some request for it is not granted. LockCheckConflicts
 *   ignores the requester's own holdings: a participant never conflicts
 *   with itself.
 *
 *   ProcLockWakeup walks the queue in order and grants every waiter whose
 *   mode conflicts neither with what is granted to others nor with the
 *   requests of waiters before it (aheadRequests): the same rule as a new
 *   request, so nobody overtakes a conflicting earlier waiter.
 *
 *   Mirrors src/backend/storage/lmgr/lock.c (SetupLockInTable, GrantLock,
 *   UnGrantLock, CleanUpLock, LockCheckConflicts, RemoveFromWaitQueue) and
 *   proc.c (ProcLockWakeup, ProcWakeup).
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Lmgr;

public sealed unsafe partial class LockManager
{
    /// <summary>A PROCLOCK's hash: its lock's partition bits, the rest mixed with the slot number.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint ProcLockHash(uint lockHash, int procno)
    {
        uint mixed = lockHash ^ ((uint)procno * 0x9E3779B1u);
        mixed ^= mixed >> 15;
        return (lockHash & (NumPartitions - 1)) | (mixed & ~(uint)(NumPartitions - 1));
    }

    /// <summary>
    /// SetupLockInTable: finds or makes the LOCK for <paramref name="tag"/> and <paramref name="procno"/>'s PROCLOCK on
    /// it, and counts the request. Throws <see cref="LockTableFullException"/> (leaving nothing new behind) when a table is full.
    /// </summary>
    internal LockEntry* SetupLockInTable(int procno, in LockTag tag, uint hash, LockMode mode, out ProcLockEntry* pl)
    {
        LockEntry* lockp;
        bool found;
        try
        {
            lockp = (LockEntry*)Unsafe.AsPointer(ref _locks.EnterOrFind(in tag, hash, out found));
        }
        catch (SharedHashFullException)
        {
            throw new LockTableFullException(_locks.Name, _header->LockCapacity, _header->MaxLocksPerParticipant);
        }
        if (!found)
        {
            lockp->Tag = tag;
            lockp->HashCode = hash;
            lockp->WaitHead = PgProc.InvalidProcNumber;
            lockp->WaitTail = PgProc.InvalidProcNumber;
        }
        var key = new ProcLockKey(tag, procno);
        uint plHash = ProcLockHash(hash, procno);
        try
        {
            pl = (ProcLockEntry*)Unsafe.AsPointer(ref _procLocks.EnterOrFind(in key, plHash, out found));
        }
        catch (SharedHashFullException)
        {
            if (lockp->NRequested == 0)
                _locks.Remove(in tag, hash, out _);
            throw new LockTableFullException(_procLocks.Name, _header->ProcLockCapacity, _header->MaxLocksPerParticipant);
        }
        if (!found)
        {
            long plOff = Offset(pl);
            pl->LockOffset = Offset(lockp);
            pl->ProcNumber = procno;
            pl->HoldMask = 0;
            // Link first on the lock's list and on the slot's list for this partition.
            pl->PrevOnLock = 0;
            pl->NextOnLock = lockp->ProcLocksHead;
            if (pl->NextOnLock != 0)
                At<ProcLockEntry>(pl->NextOnLock)->PrevOnLock = plOff;
            lockp->ProcLocksHead = plOff;
            ref long head = ref ProcState(procno)->ProcLockHeads[hash & (NumPartitions - 1)];
            pl->PrevOnProc = 0;
            pl->NextOnProc = head;
            if (head != 0)
                At<ProcLockEntry>(head)->PrevOnProc = plOff;
            head = plOff;
        }
        lockp->NRequested++;
        lockp->Requested[(int)mode]++;
        return lockp;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal T* At<T>(long offset) where T : unmanaged => (T*)(_base + offset);

    /// <summary>The PROCLOCK of <paramref name="procno"/> on <paramref name="tag"/>, or null (partition lock held).</summary>
    internal ProcLockEntry* FindProcLock(in LockTag tag, uint hash, int procno)
    {
        var key = new ProcLockKey(tag, procno);
        ref ProcLockEntry e = ref _procLocks.FindRef(in key, ProcLockHash(hash, procno), out bool found);
        return found ? (ProcLockEntry*)Unsafe.AsPointer(ref e) : null;
    }

    /// <summary>LockCheckConflicts: true when <paramref name="mode"/> conflicts with modes granted to others than <paramref name="pl"/>'s holder.</summary>
    internal static bool LockCheckConflicts(LockEntry* lockp, ProcLockEntry* pl, LockMode mode)
    {
        int conflictMask = LockModes.ConflictMask(mode);
        if ((conflictMask & lockp->GrantMask) == 0)
            return false;
        // Something conflicting is granted; is it only ours?
        int myLocks = pl->HoldMask;
        for (int m = 1; m <= LockModes.Count; m++)
        {
            if ((conflictMask & (1 << m)) == 0)
                continue;
            int others = lockp->Granted[m] - ((myLocks & (1 << m)) != 0 ? 1 : 0);
            if (others > 0)
                return true;
        }
        return false;
    }

    /// <summary>GrantLock: records the grant of a request already counted in Requested.</summary>
    internal static void GrantLock(LockEntry* lockp, ProcLockEntry* pl, LockMode mode)
    {
        int m = (int)mode;
        lockp->NGranted++;
        lockp->Granted[m]++;
        lockp->GrantMask |= 1 << m;
        if (lockp->Granted[m] == lockp->Requested[m])
            lockp->WaitMask &= ~(1 << m);
        pl->HoldMask |= 1 << m;
    }

    /// <summary>UnGrantLock: undoes a grant; true when a waiter may now be grantable (the mode conflicted with a waited mode).</summary>
    internal static bool UnGrantLock(LockEntry* lockp, LockMode mode, ProcLockEntry* pl)
    {
        int m = (int)mode;
        lockp->NRequested--;
        lockp->Requested[m]--;
        lockp->NGranted--;
        lockp->Granted[m]--;
        if (lockp->Granted[m] == 0)
            lockp->GrantMask &= ~(1 << m);
        pl->HoldMask &= ~(1 << m);
        return (LockModes.ConflictMask(mode) & lockp->WaitMask) != 0;
    }

    /// <summary>A request that was counted but neither granted nor queued (dontWait): uncount it and drop what is empty.</summary>
    internal void RemoveUngrantedRequest(LockEntry* lockp, ProcLockEntry* pl, LockMode mode)
    {
        lockp->NRequested--;
        lockp->Requested[(int)mode]--;
        CleanUpLock(lockp, pl, wakeupNeeded: false);
    }

    /// <summary>CleanUpLock: drops a PROCLOCK that holds nothing and a LOCK nobody requests; else wakes waiters if asked.</summary>
    internal void CleanUpLock(LockEntry* lockp, ProcLockEntry* pl, bool wakeupNeeded)
    {
        if (pl->HoldMask == 0 && !IsWaitingOn(pl))
            RemoveProcLock(lockp, pl);
        if (lockp->NRequested == 0)
        {
            LockTag tag = lockp->Tag;
            if (!_locks.Remove(in tag, lockp->HashCode, out _))
                throw new PgIpcException($"lock table corrupt: the entry for {tag} is missing");
        }
        else if (wakeupNeeded)
        {
            ProcLockWakeup(lockp);
        }
    }

    /// <summary>True when <paramref name="pl"/>'s holder is queued waiting on its lock (its PROCLOCK must stay).</summary>
    private bool IsWaitingOn(ProcLockEntry* pl)
    {
        LockProcState* s = ProcState(pl->ProcNumber);
        return s->WaitStatus == (int)LockWaitStatus.Waiting && s->WaitProcLockOffset == Offset(pl);
    }

    private void RemoveProcLock(LockEntry* lockp, ProcLockEntry* pl)
    {
        long plOff = Offset(pl);
        if (pl->PrevOnLock != 0)
            At<ProcLockEntry>(pl->PrevOnLock)->NextOnLock = pl->NextOnLock;
        else
            lockp->ProcLocksHead = pl->NextOnLock;
        if (pl->NextOnLock != 0)
            At<ProcLockEntry>(pl->NextOnLock)->PrevOnLock = pl->PrevOnLock;
        if (pl->PrevOnProc != 0)
            At<ProcLockEntry>(pl->PrevOnProc)->NextOnProc = pl->NextOnProc;
        else
            ProcState(pl->ProcNumber)->ProcLockHeads[lockp->HashCode & (NumPartitions - 1)] = pl->NextOnProc;
        if (pl->NextOnProc != 0)
            At<ProcLockEntry>(pl->NextOnProc)->PrevOnProc = pl->PrevOnProc;
        var key = new ProcLockKey(lockp->Tag, pl->ProcNumber);
        if (!_procLocks.Remove(in key, ProcLockHash(lockp->HashCode, pl->ProcNumber), out _))
            throw new PgIpcException($"lock table corrupt: the proclock of participant {key.ProcNumber} on {key.Tag} at offset {plOff} is missing");
    }

    // ------------------------------------------------------------------
    // Wait queues (procnos linked through LockProcState.WaitNext / WaitPrev)
    // ------------------------------------------------------------------

    /// <summary>Puts <paramref name="procno"/> before <paramref name="before"/> (-1: at the tail).</summary>
    internal void QueueInsertBefore(LockEntry* lockp, int procno, int before)
    {
        LockProcState* s = ProcState(procno);
        if (before == PgProc.InvalidProcNumber)
        {
            s->WaitNext = PgProc.InvalidProcNumber;
            s->WaitPrev = lockp->WaitTail;
            if (lockp->WaitTail == PgProc.InvalidProcNumber)
                lockp->WaitHead = procno;
            else
                ProcState(lockp->WaitTail)->WaitNext = procno;
            lockp->WaitTail = procno;
        }
        else
        {
            LockProcState* b = ProcState(before);
            s->WaitNext = before;
            s->WaitPrev = b->WaitPrev;
            if (b->WaitPrev == PgProc.InvalidProcNumber)
                lockp->WaitHead = procno;
            else
                ProcState(b->WaitPrev)->WaitNext = procno;
            b->WaitPrev = procno;
        }
        lockp->WaitCount++;
    }

    internal void QueueDelete(LockEntry* lockp, int procno)
    {
        LockProcState* s = ProcState(procno);
        if (s->WaitPrev == PgProc.InvalidProcNumber)
            lockp->WaitHead = s->WaitNext;
        else
            ProcState(s->WaitPrev)->WaitNext = s->WaitNext;
        if (s->WaitNext == PgProc.InvalidProcNumber)
            lockp->WaitTail = s->WaitPrev;
        else
            ProcState(s->WaitNext)->WaitPrev = s->WaitPrev;
        s->WaitNext = PgProc.InvalidProcNumber;
        s->WaitPrev = PgProc.InvalidProcNumber;
        lockp->WaitCount--;
    }

    /// <summary>
    /// ProcLockWakeup: grants, in queue order, every waiter that conflicts neither with the granted modes of others nor
    /// with an earlier waiter's request, and wakes it.
    /// </summary>
    internal void ProcLockWakeup(LockEntry* lockp)
    {
        int aheadRequests = 0;
        int procno = lockp->WaitHead;
        int guard = lockp->WaitCount;
        while (procno != PgProc.InvalidProcNumber && guard-- >= 0)
        {
            LockProcState* s = ProcState(procno);
            int next = s->WaitNext;
            var mode = (LockMode)s->WaitMode;
            var pl = At<ProcLockEntry>(s->WaitProcLockOffset);
            if ((LockModes.ConflictMask(mode) & aheadRequests) == 0 && !LockCheckConflicts(lockp, pl, mode))
            {
                GrantLock(lockp, pl, mode);
                ProcWakeup(lockp, procno, LockWaitStatus.Granted);
            }
            else
            {
                aheadRequests |= 1 << (int)mode;
            }
            procno = next;
        }
    }

    /// <summary>ProcWakeup: takes a waiter off the queue with <paramref name="status"/> and posts its semaphore. Never throws.</summary>
    internal void ProcWakeup(LockEntry* lockp, int procno, LockWaitStatus status)
    {
        QueueDelete(lockp, procno);
        LockProcState* s = ProcState(procno);
        s->WaitLockOffset = 0;
        s->WaitProcLockOffset = 0;
        // Release store; pairs with the sleeper's acquire load of WaitStatus after its semaphore returns.
        Volatile.Write(ref s->WaitStatus, (int)status);
        _procs.Semaphores.Unlock(procno);
    }

    /// <summary>
    /// RemoveFromWaitQueue: takes a waiter off its queue without the lock (its request uncounted, status Error) and
    /// wakes whoever that lets through. The partition lock of the awaited lock is held exclusive.
    /// </summary>
    internal void RemoveFromWaitQueue(int procno)
    {
        LockProcState* s = ProcState(procno);
        if (s->WaitStatus != (int)LockWaitStatus.Waiting || s->WaitLockOffset == 0)
            return;
        var lockp = At<LockEntry>(s->WaitLockOffset);
        var pl = At<ProcLockEntry>(s->WaitProcLockOffset);
        int m = s->WaitMode;
        QueueDelete(lockp, procno);
        lockp->Requested[m]--;
        lockp->NRequested--;
        if (lockp->Granted[m] == lockp->Requested[m])
            lockp->WaitMask &= ~(1 << m);
        s->WaitLockOffset = 0;
        s->WaitProcLockOffset = 0;
        Volatile.Write(ref s->WaitStatus, (int)LockWaitStatus.Error);
        // Our leaving may let later waiters through (they may have been behind us only).
        CleanUpLock(lockp, pl, wakeupNeeded: true);
    }

    /// <summary>Back to not waiting (after the owner has seen its status).</summary>
    internal void ResetWaitState(int procno)
    {
        LockProcState* s = ProcState(procno);
        Volatile.Write(ref s->WaitStatus, (int)LockWaitStatus.None);
        s->WaitStartUnixMs = 0;
    }

    /// <summary>
    /// Releases everything slot <paramref name="procno"/> holds or waits for in the main table: for a dead process's
    /// slot, or a slot's leftovers. Every partition lock is held exclusive by <paramref name="me"/>. The fast-path
    /// slots are emptied separately, before (<see cref="ClearFastPath"/>): their lock comes before the partition
    /// locks in the lock order (as FastPathTransfer takes them). The strong-lock counts of the slot's strong relation
    /// locks (held, or requested and waiting) are taken back: their owner never will. Never called for a live
    /// participant that still holds locks in its local table (those are released through it first).
    /// </summary>
    internal void CleanProcLocked(Participant me, int procno)
    {
        LockProcState* s = ProcState(procno);
        if (s->WaitStatus == (int)LockWaitStatus.Waiting && s->WaitLockOffset != 0)
        {
            // A strong relation request counted itself before it queued; its owner will not take the count back.
            var waited = At<LockEntry>(s->WaitLockOffset);
            LockTag wtag = waited->Tag;
            if (ConflictsWithFastPath(in wtag, (LockMode)s->WaitMode))
                EndStrongLock(waited->HashCode);
            RemoveFromWaitQueue(procno);
        }
        Volatile.Write(ref s->WaitStatus, (int)LockWaitStatus.None);
        for (int p = 0; p < NumPartitions; p++)
        {
            int guard = _header->ProcLockCapacity;
            while (s->ProcLockHeads[p] != 0 && guard-- > 0)
            {
                var pl = At<ProcLockEntry>(s->ProcLockHeads[p]);
                var lockp = At<LockEntry>(pl->LockOffset);
                LockTag tag = lockp->Tag;
                bool wakeup = false;
                for (int m = 1; m <= LockModes.Count; m++)
                {
                    if ((pl->HoldMask & (1 << m)) == 0)
                        continue;
                    // Each strong relation lock held counted itself once in the strong-lock counters: take it back.
                    if (ConflictsWithFastPath(in tag, (LockMode)m))
                        EndStrongLock(lockp->HashCode);
                    wakeup |= UnGrantLock(lockp, (LockMode)m, pl);
                }
                // Nothing held and not waiting: CleanUpLock removes it from the slot's list.
                CleanUpLock(lockp, pl, wakeup);
            }
        }
    }
}
