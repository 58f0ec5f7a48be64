/*-------------------------------------------------------------------------
 * LWLock.Variable.cs
 *   The LWLock calls built for WAL insertion locks: AcquireOrWait (take
 *   the lock if free, else wait until it is free without taking it), and
 *   the lock-protected variable: WaitForVar, UpdateVar, ReleaseClearVar.
 *
 * NOTES
 *   AcquireOrWait and WaitForVar wait in WaitUntilFree mode: such waiters
 *   queue at the head of the wait list, a release's wake-up takes every one
 *   it meets, UpdateVar takes the run of them at the head, and they do not
 *   hold the lock when they return. WaitForVar queues, re-checks the lock
 *   and the variable, and only then sleeps, as Acquire does.
 *
 *   Ordering pair:
 *     - UpdateVar's Interlocked.Exchange on the variable <-> WaitForVar's
 *       Volatile.Read of it, both ordered against the wait-list lock.
 *
 *   Mirrors LWLockAcquireOrWait, LWLockWaitForVar, LWLockUpdateVar and
 *   LWLockReleaseClearVar in src/backend/storage/lmgr/lwlock.c.
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
    /// <summary>
    /// Takes the lock if it is free; otherwise waits until it is free and returns false without taking it
    /// (LWLockAcquireOrWait: for work that one participant does on behalf of all, like a WAL flush). Returns true
    /// when it took the lock (lwlock.c's meaning too). Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.
    /// </summary>
    public bool AcquireOrWait(LWLockMode mode) => AcquireOrWait(Participant.Current, mode);

    /// <summary>
    /// Takes the lock if it is free; otherwise waits until it is free and returns false without taking it
    /// (LWLockAcquireOrWait). True when it took the lock.
    /// </summary>
    public bool AcquireOrWait(Participant me, LWLockMode mode)
    {
        LWLock* l = (LWLock*)Unsafe.AsPointer(ref this);
        me.CheckCanTake(mode);
        int extraWaits = 0;
        bool mustWait = AttemptLock(l, mode);
        if (mustWait)
        {
            me.BeginWait(l);
            try
            {
                QueueSelf(l, me, LWLockMode.WaitUntilFree);
                mustWait = AttemptLock(l, mode);
                if (mustWait)
                    SleepUntilWoken(l, me, ref extraWaits);
                else
                    DequeueSelf(l, me, ref extraWaits);
            }
            finally
            {
                me.EndWait();
            }
        }
        if (!mustWait)
            Granted(l, me, mode);
        me.RepostExtraWaits(extraWaits);
        return !mustWait;
    }

    /// <summary>Sets <paramref name="variable"/> to <paramref name="value"/> and releases (LWLockReleaseClearVar). Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.</summary>
    public void ReleaseClearVar(ref ulong variable, ulong value) => ReleaseClearVar(Participant.Current, ref variable, value);

    /// <summary>Sets <paramref name="variable"/> to <paramref name="value"/> and releases the lock <paramref name="me"/> holds (LWLockReleaseClearVar).</summary>
    public void ReleaseClearVar(Participant me, ref ulong variable, ulong value)
    {
        // Full barrier; pairs with WaitForVar's read of the variable.
        Interlocked.Exchange(ref variable, value);
        Release(me);
    }

    // ------------------------------------------------------------------
    // Variables (WaitForVar / UpdateVar)
    // ------------------------------------------------------------------

    /// <summary>
    /// Waits until the lock is free or <paramref name="variable"/> differs from <paramref name="oldValue"/>
    /// (LWLockWaitForVar). Returns true when the lock is free (nothing to wait for); false when the variable
    /// changed, with its value in <paramref name="newValue"/>. Does not take the lock. Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.
    /// </summary>
    public bool WaitForVar(ref ulong variable, ulong oldValue, out ulong newValue)
        => WaitForVar(Participant.Current, ref variable, oldValue, out newValue);

    /// <summary>As <see cref="WaitForVar(ref ulong, ulong, out ulong)"/> for an explicit participant <paramref name="me"/>.</summary>
    public bool WaitForVar(Participant me, ref ulong variable, ulong oldValue, out ulong newValue)
    {
        LWLock* l = (LWLock*)Unsafe.AsPointer(ref this);
        me.CheckNotWaiting();
        newValue = 0;
        bool result = true;
        int extraWaits = 0;
        bool began = false;
        try
        {
            while (true)
            {
                if (!ConflictsWithVar(l, ref variable, oldValue, ref newValue, out result))
                    break;
                if (!began)
                {
                    me.BeginWait(l);
                    began = true;
                }
                QueueSelf(l, me, LWLockMode.WaitUntilFree);
                // Be woken as soon as the lock is released.
                Interlocked.Or(ref l->State, Bits.FlagReleaseOk);
                if (!ConflictsWithVar(l, ref variable, oldValue, ref newValue, out result))
                {
                    DequeueSelf(l, me, ref extraWaits);
                    break;
                }
                SleepUntilWoken(l, me, ref extraWaits);
            }
        }
        finally
        {
            if (began)
                me.EndWait();
        }
        me.RepostExtraWaits(extraWaits);
        return result;
    }

    private static bool ConflictsWithVar(LWLock* l, ref ulong variable, ulong oldValue, ref ulong newValue, out bool result)
    {
        // Acquire load of the state; pairs with the release's Interlocked.Add.
        if ((Volatile.Read(ref l->State) & Bits.ValExclusive) == 0)
        {
            result = true;
            return false;
        }
        result = false;
        // Acquire load; pairs with UpdateVar's / ReleaseClearVar's Interlocked.Exchange.
        ulong value = Volatile.Read(ref variable);
        if (value != oldValue)
        {
            newValue = value;
            return false;
        }
        return true;
    }

    /// <summary>
    /// Sets <paramref name="variable"/> and wakes every WaitForVar waiter (LWLockUpdateVar). The caller holds the
    /// lock exclusive. Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.
    /// </summary>
    public void UpdateVar(ref ulong variable, ulong value) => UpdateVar(Participant.Current, ref variable, value);

    /// <summary>As <see cref="UpdateVar(ref ulong, ulong)"/> for an explicit participant <paramref name="me"/>, which holds the lock exclusive.</summary>
    public void UpdateVar(Participant me, ref ulong variable, ulong value)
    {
        LWLock* l = (LWLock*)Unsafe.AsPointer(ref this);
        if (!me.HoldsInMode(l, LWLockMode.Exclusive))
            throw new LWLockUsageException($"UpdateVar on lock {TrancheNameOf(me, l)} by participant {me.ProcNumber}, which does not hold it exclusive");
        // Full barrier; pairs with ConflictsWithVar's acquire load.
        Interlocked.Exchange(ref variable, value);

        PgProc* procs = me.Array.Procs;
        int wakeHead = PgProc.InvalidProcNumber, wakeTail = PgProc.InvalidProcNumber;
        WaitListLock(l);
        int cur = l->WaitHead;
        while (cur != PgProc.InvalidProcNumber)
        {
            PgProc* w = procs + cur;
            int next = w->LwWaitNext;
            // Wait-until-free waiters are queued at the head; stop at the first real acquirer.
            if (w->LwWaitMode != (int)LWLockMode.WaitUntilFree)
                break;
            ListDelete(l, procs, cur);
            AppendLocal(procs, cur, ref wakeHead, ref wakeTail);
            w->LwWakerPid = HolderLiveness.MyPid;
            // Release store; pairs with the sleeper's acquire load in WakerDiedBeforePosting, as in Wakeup.
            Volatile.Write(ref w->LwWaiting, (int)LWLockWaitState.PendingWakeup);
            cur = next;
        }
        if (l->WaitHead == PgProc.InvalidProcNumber)
            Interlocked.And(ref l->State, ~Bits.FlagHasWaiters);
        WaitListUnlock(l);
        WakeList(me.Array, wakeHead);
    }
}
