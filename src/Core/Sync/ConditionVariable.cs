/*-------------------------------------------------------------------------
 * ConditionVariable.cs
 *   Condition variables in shared memory: sleep until another participant
 *   says the condition you wait for may have changed.
 *
 * NOTES
 *   A condition variable is a spinlock and a wait list of procnos, linked
 *   through PGPROC's CvWaitNext / CvWaitPrev (a ProcList). Sleeping is the
 *   latch's job: Signal and Broadcast take participants off the list and
 *   set their latches. The usage pattern is the one condition_variable.c
 *   documents:
 *
 *       ConditionVariable.PrepareToSleep(me, cv);      // optional
 *       while (!condition)
 *           ConditionVariable.Sleep(me, cv, timeout, waitEvent);
 *       ConditionVariable.CancelSleep(me);
 *
 *   Sleep first makes sure the participant is on the list (the first call
 *   only prepares and returns, so the caller re-checks the condition before
 *   really sleeping: a signal sent in between is then not missed). A waiter
 *   counts as woken when it finds itself no longer on the list; it then
 *   re-queues itself before returning, so that a loop around Sleep stays
 *   prepared. Latch wake-ups for other reasons return to the caller too;
 *   callers always re-check their condition.
 *
 *   Broadcast must wake everyone who was waiting when it began, not chase
 *   waiters that re-queue forever: it puts its own slot on the list as a
 *   sentinel behind the current waiters and wakes from the head until it
 *   reaches the sentinel. If a concurrent Signal takes the sentinel, every
 *   waiter before it has been woken, which is all Broadcast promised.
 *
 *   CancelSleep passes a signal on: if we were taken off the list (so a
 *   Signal chose us) but leave without consuming it, we signal the next one.
 *
 *   A dead peer. A condition variable has no holder to blame: whoever was
 *   going to change the condition and signal may have died, and nothing in
 *   the variable says who that was. In a supervised cluster the crash
 *   restart reaches every sleeper (the supervisor kills the processes; a
 *   sleeper whose supervisor died gets SupervisorDiedException). Without a
 *   supervisor, a caller that can die of a dead peer sleeps with a timeout
 *   (Sleep's timeoutMs) and checks its peer at each return, as the shm_mq
 *   does with its counterpart's pid. The variable's own mutex is an SLock,
 *   so a process that died holding it makes the next Signal, Broadcast or
 *   Sleep throw LockHolderDiedException instead of spinning forever.
 *
 *   Ordering: the list and links are protected by the spinlock (its
 *   compare-and-swap / release store pair); the latch protocol orders the
 *   waker's writes before the wake-up against the sleeper's re-check.
 *
 *   Mirrors src/backend/storage/lmgr/condition_variable.c.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.InteropServices;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Sync;

/// <summary>
/// A condition variable in shared memory. Layout: 16 bytes.
/// <code>
///  0  Mutex        spinlock (SLock) protecting the two fields below and the waiters' CvWait links
///  4  WakeupHead   Mutex: first waiting procno, -1 = none
///  8  WakeupTail   Mutex: last waiting procno
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 16)]
public unsafe struct ConditionVariable
{
    internal int Mutex;
    internal int WakeupHead;
    internal int WakeupTail;

    /// <summary>Makes the variable empty. Call once, before anyone can see it.</summary>
    public void Initialize()
    {
        WakeupHead = PgProc.InvalidProcNumber;
        WakeupTail = PgProc.InvalidProcNumber;
        SLock.Init(ref Mutex);
    }

    /// <summary>Puts <paramref name="me"/> on <paramref name="cv"/>'s wait list (ConditionVariablePrepareToSleep).</summary>
    public static void PrepareToSleep(Participant me, ref ConditionVariable cv)
    {
        ArgumentNullException.ThrowIfNull(me);
        fixed (ConditionVariable* p = &cv)
        {
            // Only one prepared sleep at a time: leave any other.
            if (me.CvSleepTarget != null && me.CvSleepTarget != p)
                CancelSleep(me);
            me.CvSleepTarget = p;
            PgProc* procs = me.ProcArray.Procs;
            SLock.Acquire(ref p->Mutex, "ConditionVariable");
            if (!Contains(p, procs, me.ProcNumber))
                PushTail(p, procs, me.ProcNumber);
            SLock.Release(ref p->Mutex);
        }
    }

    /// <summary>
    /// Waits for <paramref name="cv"/> to be signalled, or <paramref name="timeoutMs"/> ms (-1: no timeout)
    /// (ConditionVariableTimedSleep). Returns true when the timeout expired. The first call after the caller
    /// checked its condition only prepares (returns false at once): re-check the condition and call again.
    /// Exits the process's wait when the supervisor dies (WL_EXIT_ON_PM_DEATH is the caller's choice: it gets
    /// <see cref="SupervisorDiedException"/>). A cancel request (<see cref="ProcArray.CancelParticipant"/>) ends the
    /// sleep with <see cref="ParticipantCanceledException"/>, the participant off the variable's wait list.
    /// </summary>
    public static bool Sleep(Participant me, ref ConditionVariable cv, int timeoutMs = -1, WaitEventId waitEvent = default)
    {
        ArgumentNullException.ThrowIfNull(me);
        ArgumentOutOfRangeException.ThrowIfLessThan(timeoutMs, -1);
        fixed (ConditionVariable* p = &cv)
        {
            if (me.CvSleepTarget != p)
            {
                PrepareToSleep(me, ref cv);
                return false;
            }
            long start = Stopwatch.GetTimestamp();
            int remaining = timeoutMs;
            PgProc* procs = me.ProcArray.Procs;
            while (true)
            {
                WaitEvents events = WaitEvents.LatchSet | WaitEvents.SupervisorDeath | (timeoutMs >= 0 ? WaitEvents.Timeout : WaitEvents.None);
                WaitEvents got;
                try
                {
                    got = me.WaitLatch(events, Math.Max(remaining, 0), waitEvent);
                }
                catch (ParticipantCanceledException)
                {
                    // Canceled (ProcArray.CancelParticipant): leave the wait list, passing on a signal that chose us.
                    CancelSleep(me);
                    throw;
                }
                me.ResetLatch();
                if ((got & WaitEvents.SupervisorDeath) != 0)
                    throw new SupervisorDiedException();

                // Woken for us if a Signal / Broadcast took us off the list; stay prepared either way.
                bool done = false;
                SLock.Acquire(ref p->Mutex, "ConditionVariable");
                if (!Contains(p, procs, me.ProcNumber))
                {
                    done = true;
                    PushTail(p, procs, me.ProcNumber);
                }
                SLock.Release(ref p->Mutex);
                if (done)
                    return false;
                // Another reason woke the latch (ProcSignal): let the caller look at it and come back.
                long handled;
                try
                {
                    handled = me.ProcessInterrupts();
                }
                catch (ParticipantCanceledException)
                {
                    CancelSleep(me);
                    throw;
                }
                if (handled != 0)
                    return false;
                if (timeoutMs >= 0)
                {
                    long elapsed = (long)Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                    if (elapsed >= timeoutMs)
                        return true;
                    remaining = (int)(timeoutMs - elapsed);
                }
            }
        }
    }

    /// <summary>Leaves the prepared sleep, passing on a signal that chose us (ConditionVariableCancelSleep). Returns true if one had.</summary>
    public static bool CancelSleep(Participant me)
    {
        ArgumentNullException.ThrowIfNull(me);
        ConditionVariable* p = me.CvSleepTarget;
        if (p == null)
            return false;
        PgProc* procs = me.ProcArray.Procs;
        bool signaled;
        SLock.Acquire(ref p->Mutex, "ConditionVariable");
        if (Contains(p, procs, me.ProcNumber))
        {
            Delete(p, procs, me.ProcNumber);
            signaled = false;
        }
        else
        {
            signaled = true;
        }
        SLock.Release(ref p->Mutex);
        me.CvSleepTarget = null;
        if (signaled)
            SignalCore(me.ProcArray, p);
        return signaled;
    }

    // Signal and Broadcast both take the signalling participant. Neither needs the caller to be on the variable (or
    // prepared to sleep on it): Signal only pops the head and sets its latch, which any slot of the array could do;
    // Broadcast needs a slot of its own, which it queues as the sentinel behind the current waiters (as
    // condition_variable.c uses MyProc). One shape for both: "who signals". Signal(ProcArray, ...) stays for a
    // thread that is not a participant (the latch it sets belongs to the woken one, not to the caller).

    /// <summary>Wakes the longest waiter, if any (ConditionVariableSignal). <paramref name="me"/> need not be on the variable.</summary>
    public static void Signal(Participant me, ref ConditionVariable cv)
    {
        ArgumentNullException.ThrowIfNull(me);
        fixed (ConditionVariable* p = &cv)
            SignalCore(me.ProcArray, p);
    }

    /// <summary>
    /// Wakes the longest waiter, if any (ConditionVariableSignal), from a thread that is not a participant: Signal
    /// needs only the slot array (see <see cref="Signal(Participant, ref ConditionVariable)"/>).
    /// </summary>
    public static void Signal(ProcArray procs, ref ConditionVariable cv)
    {
        ArgumentNullException.ThrowIfNull(procs);
        fixed (ConditionVariable* p = &cv)
            SignalCore(procs, p);
    }

    private static void SignalCore(ProcArray procs, ConditionVariable* p)
    {
        SLock.Acquire(ref p->Mutex, "ConditionVariable");
        int woken = PopHead(p, procs.Procs);
        SLock.Release(ref p->Mutex);
        if (woken != PgProc.InvalidProcNumber)
            Latch.Latches.SetLatch(procs, woken);
    }

    /// <summary>
    /// Wakes every participant waiting when the call began (ConditionVariableBroadcast). <paramref name="me"/>'s slot is
    /// the sentinel: a sleep it had prepared on any variable is cancelled first.
    /// </summary>
    public static void Broadcast(Participant me, ref ConditionVariable cv)
    {
        ArgumentNullException.ThrowIfNull(me);
        // Our own link is the sentinel; it cannot be on another list at the same time.
        if (me.CvSleepTarget != null)
            CancelSleep(me);
        ProcArray array = me.ProcArray;
        PgProc* procs = array.Procs;
        int self = me.ProcNumber;
        fixed (ConditionVariable* p = &cv)
        {
            bool sentinel = false;
            SLock.Acquire(ref p->Mutex, "ConditionVariable");
            int first = PopHead(p, procs);
            if (first != PgProc.InvalidProcNumber && p->WakeupHead != PgProc.InvalidProcNumber)
            {
                PushTail(p, procs, self);
                sentinel = true;
            }
            SLock.Release(ref p->Mutex);
            if (first != PgProc.InvalidProcNumber)
                Latch.Latches.SetLatch(array, first);

            while (sentinel)
            {
                SLock.Acquire(ref p->Mutex, "ConditionVariable");
                int next = PopHead(p, procs);
                sentinel = Contains(p, procs, self);
                SLock.Release(ref p->Mutex);
                if (next != PgProc.InvalidProcNumber && next != self)
                    Latch.Latches.SetLatch(array, next);
            }
        }
    }

    /// <summary>Procnos waiting now, head first (diagnostics).</summary>
    public static int[] Waiters(ProcArray procs, ref ConditionVariable cv)
    {
        ArgumentNullException.ThrowIfNull(procs);
        List<int> list = [];
        fixed (ConditionVariable* p = &cv)
        {
            int cur;
            SLock.Acquire(ref p->Mutex, "ConditionVariable");
            // Bounded by the slot count (a cycle) and by the array (a wild link); reported after the spinlock.
            for (cur = p->WakeupHead; cur != PgProc.InvalidProcNumber && (uint)cur < (uint)procs.MaxProcs && list.Count <= procs.MaxProcs; cur = procs.Procs[cur].CvWaitNext)
                list.Add(cur);
            SLock.Release(ref p->Mutex);
            if (cur != PgProc.InvalidProcNumber)
                throw new ShmemCorruptException("condition variable wait list", "link", $"reaches slot {cur} after {list.Count} waiters; the array has {procs.MaxProcs} slots");
        }
        return [.. list];
    }

    // The list, under Mutex. A slot is on a list when it is the head or has a predecessor.
    private static bool Contains(ConditionVariable* cv, PgProc* procs, int procno)
        => ProcList.Contains<ProcList.CvWait>(procs, procno, cv->WakeupHead);

    private static void PushTail(ConditionVariable* cv, PgProc* procs, int procno)
        => ProcList.PushTail<ProcList.CvWait>(procs, procno, ref cv->WakeupHead, ref cv->WakeupTail);

    private static int PopHead(ConditionVariable* cv, PgProc* procs)
        => ProcList.PopHead<ProcList.CvWait>(procs, ref cv->WakeupHead, ref cv->WakeupTail);

    private static void Delete(ConditionVariable* cv, PgProc* procs, int procno)
        => ProcList.Delete<ProcList.CvWait>(procs, procno, ref cv->WakeupHead, ref cv->WakeupTail);

    /// <summary>Overload of <see cref="CancelSleep(Participant)"/> for an internal pointer target (participant close).</summary>
    internal static void CancelSleepIfAny(Participant me) => CancelSleep(me);
}
