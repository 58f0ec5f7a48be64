/*-------------------------------------------------------------------------
 * LockManager.Wait.cs
 *   Waiting for a heavyweight lock: joining the queue, sleeping on the
 *   slot's semaphore, the deadlock check after deadlock_timeout,
 *   lock_timeout, and releasing the locks of holders that died.
 *
 * NOTES
 *   JoinWaitQueue (PostgreSQL's ProcSleep first half) puts the request at
 *   the tail, unless the requester already holds modes on the object that
 *   an earlier waiter needs: then it goes just before the first such
 *   waiter (it would otherwise wait for someone who waits for it), or is
 *   granted at once when nothing granted or ahead of it conflicts. When
 *   that earlier waiter also waits for a mode the requester holds, the
 *   deadlock is plain and reported without sleeping.
 *
 *   The sleeper then releases the partition lock and sleeps on its slot's
 *   semaphore (a post is remembered, so a grant made between the release
 *   and the sleep is not lost). Whoever grants it (ProcLockWakeup) takes it
 *   off the queue, sets its WaitStatus with a release store and posts the
 *   semaphore; the sleeper reads WaitStatus with an acquire load after each
 *   wake-up and sleeps again while it says Waiting (a post left over from
 *   an earlier wait, or an LWLock wake-up it absorbed, is harmless).
 *
 *   It wakes on its own at three deadlines: deadlock_timeout (once: the
 *   deadlock check, DeadlockDetector.cs, under every partition lock),
 *   lock_timeout (it leaves the queue and throws LockTimeoutException,
 *   unless it was granted in the meantime), and every 200 ms to look at the
 *   owners of the PROCLOCKs on its lock: one whose process is gone (or
 *   whose slot was given back or handed on) left its locks behind, and the
 *   waiter releases them for it (under every partition lock, after checking
 *   again) and has ProcArray reclaim the dead slots. A waiter therefore
 *   never hangs on a killed holder, with or without a supervisor.
 *
 *   Mirrors src/backend/storage/lmgr/proc.c (JoinWaitQueue, ProcSleep,
 *   CheckDeadLock, LockErrorCleanup) and lock.c (WaitOnLock).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Lmgr;

public sealed unsafe partial class LockManager
{
    /// <summary>The wait event of a heavyweight lock wait: class Lock, the id the tag's type (PostgreSQL's "Lock: relation", ...).</summary>
    public static WaitEventId WaitEventFor(LockTagType type) => new(WaitEventClass.Lock, (ushort)type);

    /// <summary>Names the Lock class's wait events when Core is loaded (see WaitEventRegistry.cs).</summary>
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255", Justification = "fills the wait-event name table only: no I/O, no other module touched (WaitEventRegistry.cs)")]
    internal static void RegisterWaitEvents()
    {
        WaitEventRegistry.RegisterBuiltin(WaitEventFor(LockTagType.Relation), "relation");
        WaitEventRegistry.RegisterBuiltin(WaitEventFor(LockTagType.Page), "page");
        WaitEventRegistry.RegisterBuiltin(WaitEventFor(LockTagType.Tuple), "tuple");
        WaitEventRegistry.RegisterBuiltin(WaitEventFor(LockTagType.Object), "object");
        WaitEventRegistry.RegisterBuiltin(WaitEventFor(LockTagType.Advisory), "advisory");
        WaitEventRegistry.RegisterBuiltin(WaitEventFor(LockTagType.User), "userlock");
    }

    /// <summary>How often a waiter looks for holders that died (ms); lowered only by tests.</summary>
    internal static int DeadHolderCheckMs = 200;

    /// <summary>
    /// JoinWaitQueue: queues <paramref name="me"/>'s request (partition lock held exclusive). Sets
    /// <paramref name="grantedAtOnce"/> when the request could be granted after all; returns the two-process cycle when
    /// the request deadlocks with an earlier waiter at once (the caller leaves the queue and reports it).
    /// </summary>
    private DeadlockInfo[]? JoinWaitQueue(Participant me, LockEntry* lockp, ProcLockEntry* pl, LockMode mode, out bool grantedAtOnce)
    {
        grantedAtOnce = false;
        int procno = me.ProcNumber;
        LockProcState* s = ProcState(procno);
        int myHeld = pl->HoldMask;
        int conflictMask = LockModes.ConflictMask(mode);
        int insertBefore = PgProc.InvalidProcNumber;
        DeadlockInfo[]? early = null;
        if (myHeld != 0)
        {
            int aheadRequests = 0;
            int p = lockp->WaitHead;
            for (int guard = lockp->WaitCount; p != PgProc.InvalidProcNumber && guard > 0; guard--)
            {
                LockProcState* w = ProcState(p);
                // Must it wait for me?
                if ((LockModes.ConflictMask((LockMode)w->WaitMode) & myHeld) != 0)
                {
                    // Must I wait for it? Then neither can go: a deadlock, found without sleeping.
                    if ((conflictMask & w->HeldLocksOnWait) != 0)
                    {
                        early =
                        [
                            new DeadlockInfo(PidOf(procno), procno, lockp->Tag, mode),
                            new DeadlockInfo(PidOf(p), p, lockp->Tag, (LockMode)w->WaitMode),
                        ];
                        break;
                    }
                    // I go before it; maybe nothing stops me at all.
                    if ((conflictMask & aheadRequests) == 0 && !LockCheckConflicts(lockp, pl, mode))
                    {
                        GrantLock(lockp, pl, mode);
                        grantedAtOnce = true;
                        return null;
                    }
                    insertBefore = p;
                    break;
                }
                aheadRequests |= 1 << w->WaitMode;
                p = w->WaitNext;
            }
        }
        s->WaitMode = (int)mode;
        s->WaitLockOffset = Offset(lockp);
        s->WaitProcLockOffset = Offset(pl);
        s->HeldLocksOnWait = myHeld;
        s->WaitStartUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        QueueInsertBefore(lockp, procno, insertBefore);
        lockp->WaitMask |= 1 << (int)mode;
        Volatile.Write(ref s->WaitStatus, (int)LockWaitStatus.Waiting);
        return early;
    }

    internal int PidOf(int procno) => Volatile.Read(ref PgProcOf(procno)->Pid);

    /// <summary>ProcSleep's second half: sleeps until granted; throws on a deadlock, lock_timeout or a cancelled wait.</summary>
    private void WaitOnLock(Participant me, LocalLockTable local, LockEntry* lockp, in LockTag tag, uint hash, LockMode mode)
    {
        LockProcState* s = ProcState(me.ProcNumber);
        IProcSemaphoreSet sems = _procs.Semaphores;
        WaitEventId saved = me.WaitEvent;
        me.WaitEvent = WaitEventFor(tag.Type);
        try
        {
            long start = Environment.TickCount64;
            long deadlockAt = start + DeadlockTimeoutMs;
            int lockTimeout = LockTimeoutMs;
            long timeoutAt = lockTimeout > 0 ? start + lockTimeout : long.MaxValue;
            long livenessAt = start + DeadHolderCheckMs;
            bool deadlockChecked = false;
            // Acquire load; pairs with the waker's release store in ProcWakeup.
            while (Volatile.Read(ref s->WaitStatus) == (int)LockWaitStatus.Waiting)
            {
                long now = Environment.TickCount64;
                if (now >= timeoutAt)
                {
                    if (CancelWait(me, hash))
                        throw new LockTimeoutException(tag, mode, lockTimeout);
                    continue;
                }
                if (!deadlockChecked && now >= deadlockAt)
                {
                    deadlockChecked = true;
                    DeadlockInfo[]? cycle = CheckDeadLock(me);
                    if (cycle is not null)
                    {
                        ResetWaitState(me.ProcNumber);
                        throw new DeadlockDetectedException(cycle);
                    }
                    continue;
                }
                if (now >= livenessAt)
                {
                    livenessAt = now + DeadHolderCheckMs;
                    ReleaseLocksOfDeadHolders(me, local, lockp, hash);
                    continue;
                }
                long next = Math.Min(Math.Min(timeoutAt, deadlockChecked ? long.MaxValue : deadlockAt), livenessAt);
                sems.Lock(me.ProcNumber, (int)Math.Clamp(next - now, 1, int.MaxValue));
                // The segment's detach posts every sleeper of this process it asks to leave: leave the queue.
                if (me.LeaveRequested && CancelWait(me, hash))
                    me.ThrowIfLeaveRequested();
            }
            int status = Volatile.Read(ref s->WaitStatus);
            ResetWaitState(me.ProcNumber);
            if (status != (int)LockWaitStatus.Granted)
                throw new PgIpcException($"participant {me.ProcNumber}'s wait for {LockModes.NameOf(mode)} on {tag} was cancelled by another process (status {status})");
        }
        finally
        {
            me.WaitEvent = saved;
        }
    }

    /// <summary>LockErrorCleanup for lock_timeout: leaves the queue; false when the lock was granted in the meantime.</summary>
    private bool CancelWait(Participant me, uint hash)
    {
        LWLock* partition = PartitionLock(hash);
        partition->Acquire(me, LWLockMode.Exclusive);
        try
        {
            LockProcState* s = ProcState(me.ProcNumber);
            if (s->WaitStatus != (int)LockWaitStatus.Waiting)
                return false;
            RemoveFromWaitQueue(me.ProcNumber);
            ResetWaitState(me.ProcNumber);
            return true;
        }
        finally
        {
            partition->Release(me);
        }
    }

    /// <summary>
    /// CheckDeadLock: under every partition lock, looks for a cycle through <paramref name="me"/>. A hard one takes
    /// <paramref name="me"/> off its queue and returns the cycle; a soft one rearranges queues and wakes whoever that lets through.
    /// </summary>
    private DeadlockInfo[]? CheckDeadLock(Participant me)
    {
        AcquireAllPartitions(me);
        try
        {
            Interlocked.Increment(ref _header->DeadlockChecks);
            LockProcState* s = ProcState(me.ProcNumber);
            if (s->WaitStatus != (int)LockWaitStatus.Waiting)
                return null; // granted meanwhile
            DeadlockResult r = _detector.Check(me.ProcNumber, out DeadlockInfo[]? cycle);
            if (r == DeadlockResult.Hard)
            {
                RemoveFromWaitQueue(me.ProcNumber);
                Interlocked.Increment(ref _header->DeadlocksFound);
                return cycle;
            }
            if (r == DeadlockResult.Soft)
                Interlocked.Increment(ref _header->SoftDeadlocksResolved);
            return null;
        }
        finally
        {
            ReleaseAllPartitions(me);
        }
    }

    /// <summary>
    /// True when slot <paramref name="procno"/>'s lock-manager owner is gone: its process has exited, or the slot was
    /// given back or handed to someone else since it last used the lock manager (its entries are leftovers).
    /// </summary>
    internal bool IsStaleOwner(int procno, out int ownerPid, out int ownerGeneration)
    {
        LockProcState* s = ProcState(procno);
        ownerPid = Volatile.Read(ref s->OwnerPid);
        ownerGeneration = Volatile.Read(ref s->OwnerGeneration);
        PgProc* p = PgProcOf(procno);
        if (ownerPid == 0 || Volatile.Read(ref p->Pid) != ownerPid || Volatile.Read(ref p->Generation) != ownerGeneration)
            return true;
        if (_procs.Processes.GetLiveness(ownerPid) != ProcessLiveness.Alive)
            return true;
        // Alive, but perhaps another process that the OS gave the dead owner's pid: its start time tells.
        return _procs.IsSlotOwnerGone(p, ownerPid);
    }

    /// <summary>Looks at the owners of every PROCLOCK on the awaited lock and releases the locks of those that are gone.</summary>
    private void ReleaseLocksOfDeadHolders(Participant me, LocalLockTable local, LockEntry* lockp, uint hash)
    {
        Span<int> stale = local.Scratch;
        int n = 0;
        LWLock* partition = PartitionLock(hash);
        partition->Acquire(me, LWLockMode.Shared);
        try
        {
            if (ProcState(me.ProcNumber)->WaitStatus != (int)LockWaitStatus.Waiting)
                return;
            long off = lockp->ProcLocksHead;
            for (int guard = _header->ProcLockCapacity; off != 0 && guard > 0 && n < stale.Length; guard--)
            {
                var pl = At<ProcLockEntry>(off);
                int procno = pl->ProcNumber;
                if (procno != me.ProcNumber && (uint)procno < (uint)_maxProcs && IsStaleOwner(procno, out _, out _) && stale[..n].IndexOf(procno) < 0)
                    stale[n++] = procno;
                off = pl->NextOnLock;
            }
        }
        finally
        {
            partition->Release(me);
        }
        if (n == 0)
            return;
        for (int i = 0; i < n; i++)
            ReleaseLocksOfStaleSlot(me, stale[i]);
        try
        {
            _procs.ReclaimDeadSlots();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>Releases every lock of slot <paramref name="procno"/> if its owner is (still) gone. True when it did.</summary>
    internal bool ReleaseLocksOfStaleSlot(Participant me, int procno)
    {
        if (!IsStaleOwner(procno, out int pid, out int gen))
            return false;
        ClearFastPath(me, procno, pid, gen);
        AcquireAllPartitions(me);
        try
        {
            LockProcState* s = ProcState(procno);
            // Again under the locks: a new owner records itself under all of them (ClaimSlot).
            if (s->OwnerPid != pid || s->OwnerGeneration != gen || !IsStaleOwner(procno, out _, out _))
                return false;
            CleanProcLocked(me, procno);
            s->OwnerPid = 0;
            s->OwnerGeneration = 0;
            return true;
        }
        finally
        {
            ReleaseAllPartitions(me);
        }
    }
}
