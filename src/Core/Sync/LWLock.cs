/*-------------------------------------------------------------------------
 * LWLock.cs
 *   Lightweight locks: shared/exclusive locks in shared memory whose
 *   waiters sleep on their slot's semaphore (PostgreSQL's LWLock): the
 *   state word, acquire, release, wake-up and the wait list. AcquireOrWait
 *   and the variable calls are in LWLock.Variable.cs; the dead-holder and
 *   dead-waiter checks in LWLock.DeadHolder.cs.
 *
 * NOTES
 *   The whole lock is one 32-bit state word plus a wait queue:
 *
 *     bits  0-17  shared holders (count)           ValShared = 1
 *     bit   18    held exclusive                   ValExclusive
 *     bit   28    wait-list lock (a tiny spinlock guarding WaitHead/WaitTail
 *                 and the queued slots' links)     FlagLocked
 *     bit   29    a releaser may wake waiters      FlagReleaseOk
 *     bit   30    the wait list is not empty       FlagHasWaiters
 *
 *   Acquisition is a compare-and-swap on the state word when the lock is
 *   compatible (Acquire then returns true, as LWLockAcquire does: true means
 *   "had without sleeping", false "slept for it"). When it is not, the participant queues itself (by procno)
 *   on the wait list, then tries the CAS once more: a release that happened
 *   between the first attempt and the queueing would otherwise never wake
 *   it. Only if that second attempt fails does it sleep on its semaphore.
 *   Because a semaphore remembers posts, the "queue, re-check, sleep" order
 *   cannot lose a wake-up. A woken participant does not own the lock: it
 *   competes again (no hand-off), which keeps the uncontended path short and
 *   avoids convoys, as lwlock.c argues.
 *
 *   Release subtracts its share of the state word. If that leaves the lock
 *   free, with waiters and RELEASE_OK set, it wakes: the first waiter if it
 *   wants exclusive, else a run of shared waiters (and every wait-until-free
 *   waiter met on the way). It clears RELEASE_OK until a woken waiter runs
 *   again, so a burst of releases does not wake everybody in the queue.
 *
 *   The semaphore may be posted for reasons other than this lock (a
 *   condition variable, a stray post from an earlier wait): a waiter keeps
 *   sleeping until its LwWaiting says NotWaiting, counts the extra posts and
 *   re-posts them before it returns ("absorb extra wake-ups").
 *
 *   Ordering pairs:
 *     - acquire CAS (full barrier)  <->  release Interlocked.Add (full barrier):
 *       the critical section's writes are visible to the next holder;
 *     - wait-list lock Interlocked.Or  <->  unlock Interlocked.And / the final
 *       CAS in Wakeup: list links and LwWaiting = PendingWakeup are published
 *       by the unlock;
 *     - waker's Volatile.Write(LwWaiting = NotWaiting) (release) <-> the
 *       sleeper's Volatile.Read(LwWaiting) after its semaphore returns (acquire);
 *     - the variable's pair (UpdateVar / WaitForVar): LWLock.Variable.cs.
 *
 *   A holder that dies: see LWLock.DeadHolder.cs and DeadHolder.cs.
 *
 *   An LWLock must live in shared (or native) memory: the held-lock list
 *   records its address. Locks are never held across an await.
 *
 *   Mirrors src/backend/storage/lmgr/lwlock.c and include/storage/lwlock.h.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Sync;

/// <summary>How a lock is taken (LW_EXCLUSIVE, LW_SHARED; LW_WAIT_UNTIL_FREE is internal to AcquireOrWait / WaitForVar).</summary>
public enum LWLockMode
{
    /// <summary>Exclusive: one holder.</summary>
    Exclusive = 0,
    /// <summary>Shared: any number of holders, no exclusive one.</summary>
    Shared = 1,
    /// <summary>Queued to be woken when the lock is free, without taking it.</summary>
    WaitUntilFree = 2,
}

/// <summary>
/// A lightweight lock in shared memory. Layout: 16 bytes.
/// <code>
///  0  Tranche          immutable after Initialize
///  2  ExclusiveHolder  the exclusive holder: its procno + 1 (0 = none, or a procno past 65534), stored after its
///                      acquiring CAS and cleared before its releasing add; advisory, read only by dead-holder checks
///  4  State            atomic only (see the bit map in this file's banner)
///  8  WaitHead         the wait-list lock (FlagLocked in State): first queued procno, -1 = none
/// 12  WaitTail         the wait-list lock: last queued procno
/// </code>
/// Hot locks are padded to a cache line by <see cref="LWLockPadded"/>.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 16)]
public unsafe partial struct LWLock
{
    /// <summary>Most LWLocks one participant may hold at once (MAX_SIMUL_LWLOCKS).</summary>
    public const int MaxHeldLocks = 200;

    internal ushort Tranche;
    internal ushort ExclusiveHolder;
    internal uint State;
    internal int WaitHead;
    internal int WaitTail;

    /// <summary>The state word's bit budget.</summary>
    internal static class Bits
    {
        /// <summary>Bits of the shared-holder count; also bounds the number of participants (MAX_BACKENDS).</summary>
        public const int SharedCountBits = 18;
        public const uint ValShared = 1;
        public const uint MaxSharedHolders = (1u << SharedCountBits) - 1;
        public const uint ValExclusive = 1u << SharedCountBits;
        public const uint SharedMask = ValExclusive - 1;
        public const uint LockMask = ValExclusive | SharedMask;
        public const uint FlagLocked = 1u << 28;
        public const uint FlagReleaseOk = 1u << 29;
        public const uint FlagHasWaiters = 1u << 30;

        // Compile-time checks (a constant that underflows does not compile): the holder bits stay below the flags.
        private const uint HolderBitsBelowFlags = FlagLocked - (LockMask + 1);
        private const uint ParticipantsFitSharedCount = MaxSharedHolders - (uint)ProcArray.MaxProcsLimit;
    }

    /// <summary>Makes the lock free with an empty queue. Call once, before anyone can see it.</summary>
    public void Initialize(int trancheId)
    {
        if ((uint)trancheId > ushort.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(trancheId), trancheId, "LWLock tranche id must be 0..65535");
        Tranche = (ushort)trancheId;
        ExclusiveHolder = 0;
        WaitHead = PgProc.InvalidProcNumber;
        WaitTail = PgProc.InvalidProcNumber;
        // Release store; publication to other processes is the initialiser's (ShmemInitStruct's ready state).
        Volatile.Write(ref State, Bits.FlagReleaseOk);
    }

    // ------------------------------------------------------------------
    // Acquire
    // ------------------------------------------------------------------

    /// <summary>
    /// Takes the lock in <paramref name="mode"/>, sleeping until it can (LWLockAcquire). Returns true when the lock
    /// was had without sleeping (free at once, or freed during the short spin or the re-check after queueing), false
    /// when the participant slept on its semaphore for it: lwlock.c's meaning.
    /// Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Acquire(LWLockMode mode) => Acquire(Participant.Current, mode);

    /// <summary>As <see cref="Acquire(LWLockMode)"/> for an explicit participant (which must not be in use by another thread).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Acquire(Participant me, LWLockMode mode)
    {
        LWLock* l = (LWLock*)Unsafe.AsPointer(ref this);
        me.CheckCanTake(mode);
        if (!AttemptLock(l, mode))
        {
            Granted(l, me, mode);
            return true;
        }
        return AcquireSlow(l, me, mode);
    }

    /// <summary>Takes the lock only if that needs no wait (LWLockConditionalAcquire); true when taken. Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool ConditionalAcquire(LWLockMode mode) => ConditionalAcquire(Participant.Current, mode);

    /// <summary>Takes the lock only if that needs no wait (LWLockConditionalAcquire); true when taken.</summary>
    public bool ConditionalAcquire(Participant me, LWLockMode mode)
    {
        LWLock* l = (LWLock*)Unsafe.AsPointer(ref this);
        me.CheckCanTake(mode);
        if (AttemptLock(l, mode))
            return false;
        Granted(l, me, mode);
        return true;
    }

    /// <summary>The contended path of <see cref="Acquire(Participant, LWLockMode)"/>: true unless it slept.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool AcquireSlow(LWLock* l, Participant me, LWLockMode mode)
    {
        bool result = true;
        int extraWaits = 0;
        me.BeginWait(l);
        try
        {
            while (true)
            {
                if (!AttemptLock(l, mode) || SpinAttempt(l, mode))
                    break;
                QueueSelf(l, me, mode);
                // A release between the attempt above and the queueing would not have seen us: try again.
                if (!AttemptLock(l, mode))
                {
                    DequeueSelf(l, me, ref extraWaits);
                    break;
                }
                SleepUntilWoken(l, me, ref extraWaits);
                result = false;
                // We are running again: let releasers wake waiters again (the waker cleared the flag for us).
                Interlocked.Or(ref l->State, Bits.FlagReleaseOk);
            }
        }
        finally
        {
            // Also on a stuck wait-list lock or a dead holder (LockHolderDiedException, thrown off the queue and with
            // extra wake-ups re-posted): the slot is not left marked as acquiring.
            me.EndWait();
        }
        Granted(l, me, mode);
        me.RepostExtraWaits(extraWaits);
        if (!result && Diagnostics.PgIpcMetrics.LWLockSleepCounter.Enabled)
            RecordSleep(l, me); // after a sleep on the semaphore; nothing computed unless someone listens
        return result;
    }

    /// <summary>The lock is ours: record an exclusive holder in the lock, and the lock in the held list and its mirror.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Granted(LWLock* l, Participant me, LWLockMode mode)
    {
        // Plain store after the acquiring CAS (which ordered it after the previous holder's clear); read only by
        // dead-holder checks, which re-read it.
        if (mode == LWLockMode.Exclusive)
            l->ExclusiveHolder = me.HolderTag;
        me.PushHeld(l, mode);
    }

    /// <summary>
    /// One try at the state word (LWLockAttemptLock). Returns true when the caller must wait, false when it now
    /// holds the lock. The CAS is a full barrier: pairs with the release in <see cref="Release(Participant)"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool AttemptLock(LWLock* l, LWLockMode mode)
    {
        // Guess the common idle state (free, no waiters, RELEASE_OK) and go straight for the CAS: a read first
        // would fetch the line shared and then upgrade it, two transfers under contention instead of one.
        uint old = mode == LWLockMode.Exclusive ? Bits.FlagReleaseOk : Volatile.Read(ref l->State);
        while (true)
        {
            uint desired;
            if (mode == LWLockMode.Exclusive)
            {
                if ((old & Bits.LockMask) != 0)
                    return true;
                desired = old + Bits.ValExclusive;
            }
            else
            {
                if ((old & Bits.ValExclusive) != 0)
                    return true;
                desired = old + Bits.ValShared;
            }
            uint seen = Interlocked.CompareExchange(ref l->State, desired, old);
            if (seen == old)
                return false;
            old = seen;
        }
    }

    /// <summary>
    /// A short spin before queueing: true when it got the lock. PostgreSQL goes straight to the queue; between
    /// processes on a multi-core machine a lock is usually held for less than a futex sleep and wake-up costs
    /// (microseconds), so a bounded spin (about a microsecond) avoids most sleeps under two-process contention.
    /// It only spins while nobody is queued, so it never overtakes a sleeper for long.
    /// </summary>
    private static bool SpinAttempt(LWLock* l, LWLockMode mode)
    {
        if (s_singleCpu)
            return false;
        for (int i = 0; i < SpinTries; i++)
        {
            Thread.SpinWait(1 << Math.Min(i, 4));
            uint state = Volatile.Read(ref l->State);
            if ((state & Bits.FlagHasWaiters) != 0)
                return false;
            bool free = mode == LWLockMode.Exclusive ? (state & Bits.LockMask) == 0 : (state & Bits.ValExclusive) == 0;
            if (free && !AttemptLock(l, mode))
                return true;
        }
        return false;
    }

    private const int SpinTries = 24;
    private static readonly bool s_singleCpu = Environment.ProcessorCount == 1;

    /// <summary>Sleeps on the semaphore until a waker has set LwWaiting to NotWaiting, counting posts meant for others.</summary>
    /// <remarks>
    /// Sleeps in slices of <see cref="DeadHolderCheckMs"/> when the semaphores have a native timed wait; after each
    /// slice without a post it runs <see cref="CheckForDeadHolder"/>, which may throw <see cref="LockHolderDiedException"/>.
    /// </remarks>
    private static void SleepUntilWoken(LWLock* l, Participant me, ref int extraWaits)
    {
        PgProc* proc = me.Proc;
        IProcSemaphoreSet sems = me.Array.Semaphores;
        int slice = sems.HasNativeTimedWait ? DeadHolderCheckMs : -1;
        while (true)
        {
            if (!sems.Lock(me.ProcNumber, slice))
            {
                if (me.LeaveRequested)
                    LeaveQueueForDetach(l, me, ref extraWaits);
                if (CheckForDeadHolder(l, me, ref extraWaits))
                    break; // unlinked by a waker that died before its post: woken all the same
                continue;
            }
            // Acquire load; pairs with the waker's release store of NotWaiting (after it unlinked us).
            if (Volatile.Read(ref proc->LwWaiting) == (int)LWLockWaitState.NotWaiting)
                break;
            extraWaits++;
            // The segment's detach posts every sleeper of this process it asks to leave.
            if (me.LeaveRequested)
                LeaveQueueForDetach(l, me, ref extraWaits);
        }
    }

    /// <summary>
    /// Tests only: called by a waker between unlinking a sleeper and posting it (0: before the store of NotWaiting,
    /// 1: after it), so that a test can kill the waker there. Null otherwise (one load on the wake path).
    /// </summary>
    internal static Action<int>? s_wakeStallForTests;

    /// <summary>How long a sleeper waits between two looks for a dead holder (ms); lowered only by tests.</summary>
    internal static int DeadHolderCheckMs = 200;

    // ------------------------------------------------------------------
    // Release
    // ------------------------------------------------------------------

    /// <summary>Releases the lock (LWLockRelease); throws <see cref="LWLockNotHeldException"/> if it is not held. Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release() => Release(Participant.Current);

    /// <summary>Releases the lock <paramref name="me"/> holds (LWLockRelease); throws <see cref="LWLockNotHeldException"/> if it is not held.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Release(Participant me)
    {
        LWLock* l = (LWLock*)Unsafe.AsPointer(ref this);
        ReleaseState(l, me.Array, me.RemoveHeld(l));
    }

    /// <summary>Gives up the holder's share of the state word and wakes waiters if that freed the lock.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ReleaseState(LWLock* l, ProcArray array, LWLockMode mode)
    {
        // Cleared before the add below (a full barrier) makes the lock free: the next holder's store comes after it.
        if (mode == LWLockMode.Exclusive)
            l->ExclusiveHolder = 0;
        // Full barrier; pairs with the acquiring CAS in AttemptLock.
        uint now = Interlocked.Add(ref l->State, mode == LWLockMode.Exclusive ? unchecked(0u - Bits.ValExclusive) : unchecked(0u - Bits.ValShared));
        const uint wake = Bits.FlagHasWaiters | Bits.FlagReleaseOk;
        if ((now & (wake | Bits.LockMask)) == wake)
            Wakeup(l, array);
    }

    /// <summary>The state-word half of Release, for a participant that is closing (its held list is already emptied).</summary>
    internal void ReleaseHeldByClosed(ProcArray array, LWLockMode mode)
        => ReleaseState((LWLock*)Unsafe.AsPointer(ref this), array, mode);

    /// <summary>
    /// Acquires the lock and returns a guard whose Dispose releases it: <c>using (l.Hold(LWLockMode.Shared)) { ... }</c>.
    /// An exception inside the block releases the lock on the way out. Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.
    /// </summary>
    public Guard Hold(LWLockMode mode) => Hold(Participant.Current, mode);

    /// <summary>As <see cref="Hold(LWLockMode)"/> for an explicit participant: <c>using (l.Hold(me, LWLockMode.Shared)) { ... }</c>.</summary>
    public Guard Hold(Participant me, LWLockMode mode)
    {
        ArgumentNullException.ThrowIfNull(me);
        Acquire(me, mode);
        return new Guard((LWLock*)Unsafe.AsPointer(ref this), me);
    }

    /// <summary>Releases its lock on Dispose (process-local, on the stack).</summary>
    public readonly ref struct Guard
    {
        private readonly LWLock* _lock;
        private readonly Participant _me;

        internal Guard(LWLock* l, Participant me)
        {
            _lock = l;
            _me = me;
        }

        /// <summary>Releases the lock.</summary>
        public void Dispose() => _lock->Release(_me);
    }

    /// <summary>Wakes the waiters a release entitles to run (LWLockWakeup).</summary>
    private static void Wakeup(LWLock* l, ProcArray array)
    {
        PgProc* procs = array.Procs;
        bool newReleaseOk = true;
        bool wokeSomebody = false;
        int wakeHead = PgProc.InvalidProcNumber, wakeTail = PgProc.InvalidProcNumber;

        WaitListLock(l);
        int cur = l->WaitHead;
        while (cur != PgProc.InvalidProcNumber)
        {
            PgProc* w = procs + cur;
            int next = w->LwWaitNext;
            int waitMode = w->LwWaitMode;
            if (wokeSomebody && waitMode == (int)LWLockMode.Exclusive)
            {
                cur = next;
                continue;
            }
            ListDelete(l, procs, cur);
            AppendLocal(procs, cur, ref wakeHead, ref wakeTail);
            if (waitMode != (int)LWLockMode.WaitUntilFree)
            {
                // The woken one will set RELEASE_OK again when it runs; until then releases wake nobody more.
                newReleaseOk = false;
                wokeSomebody = true;
            }
            w->LwWakerPid = HolderLiveness.MyPid;
            // Release store; pairs with the sleeper's acquire load in WakerDiedBeforePosting (LwWakerPid is visible).
            Volatile.Write(ref w->LwWaiting, (int)LWLockWaitState.PendingWakeup);
            if (waitMode == (int)LWLockMode.Exclusive)
                break;
            cur = next;
        }

        // Update the flags and drop the wait-list lock in one CAS (release: publishes the list changes).
        uint old = Volatile.Read(ref l->State);
        while (true)
        {
            uint desired = newReleaseOk ? old | Bits.FlagReleaseOk : old & ~Bits.FlagReleaseOk;
            if (l->WaitHead == PgProc.InvalidProcNumber)
                desired &= ~Bits.FlagHasWaiters;
            desired &= ~Bits.FlagLocked;
            uint seen = Interlocked.CompareExchange(ref l->State, desired, old);
            if (seen == old)
                break;
            old = seen;
        }

        WakeList(array, wakeHead);
    }

    /// <summary>Posts every slot on a private wake list (linked through LwWaitNext), after the wait-list lock is gone.</summary>
    private static void WakeList(ProcArray array, int head)
    {
        PgProc* procs = array.Procs;
        IProcSemaphoreSet sems = array.Semaphores;
        int cur = head;
        while (cur != PgProc.InvalidProcNumber)
        {
            PgProc* w = procs + cur;
            int next = w->LwWaitNext;
            w->LwWaitNext = PgProc.InvalidProcNumber;
            w->LwWaitPrev = PgProc.InvalidProcNumber;
            s_wakeStallForTests?.Invoke(0);
            // Release store: the waiter may reuse its links as soon as it sees this. Pairs with SleepUntilWoken.
            Volatile.Write(ref w->LwWaiting, (int)LWLockWaitState.NotWaiting);
            s_wakeStallForTests?.Invoke(1);
            sems.Unlock(cur);
            cur = next;
        }
    }

    // ------------------------------------------------------------------
    // Queries
    // ------------------------------------------------------------------

    /// <summary>True when the calling participant holds this lock in any mode (LWLockHeldByMe). Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.</summary>
    public bool HeldByMe() => HeldByMe(Participant.Current);

    /// <summary>True when <paramref name="me"/> holds this lock in any mode (LWLockHeldByMe).</summary>
    public bool HeldByMe(Participant me) => me.HoldsInMode((LWLock*)Unsafe.AsPointer(ref this), null);

    /// <summary>True when the calling participant holds this lock in <paramref name="mode"/> (LWLockHeldByMeInMode). Convenience: the calling thread's <see cref="Participant.Current"/>; the overload taking a participant is the primary API.</summary>
    public bool HeldByMeInMode(LWLockMode mode) => HeldByMeInMode(Participant.Current, mode);

    /// <summary>True when <paramref name="me"/> holds this lock in <paramref name="mode"/> (LWLockHeldByMeInMode).</summary>
    public bool HeldByMeInMode(Participant me, LWLockMode mode) => me.HoldsInMode((LWLock*)Unsafe.AsPointer(ref this), mode);

    /// <summary>True when anyone holds the lock exclusive at this instant (diagnostics).</summary>
    public readonly bool IsHeldExclusive => (Volatile.Read(ref Unsafe.AsRef(in State)) & Bits.ValExclusive) != 0;

    /// <summary>Shared holders at this instant (diagnostics).</summary>
    public readonly int SharedHolders => (int)(Volatile.Read(ref Unsafe.AsRef(in State)) & Bits.SharedMask);

    /// <summary>The procno of the exclusive holder the lock records at this instant, or -1 (diagnostics).</summary>
    public readonly int ExclusiveHolderProcNumber => Volatile.Read(ref Unsafe.AsRef(in ExclusiveHolder)) - 1;

    /// <summary>True when the wait queue is not empty at this instant (diagnostics).</summary>
    public readonly bool HasWaiters => (Volatile.Read(ref Unsafe.AsRef(in State)) & Bits.FlagHasWaiters) != 0;

    /// <summary>The procnos queued on the lock, head first (diagnostics; takes the wait-list lock).</summary>
    public int[] WaitQueue(ProcArray array)
    {
        ArgumentNullException.ThrowIfNull(array);
        LWLock* l = (LWLock*)Unsafe.AsPointer(ref this);
        List<int> result = [];
        int cur;
        WaitListLock(l);
        // Bounded by the slot count (a cycle) and by the array (a wild link); reported after the wait-list lock.
        for (cur = l->WaitHead; cur != PgProc.InvalidProcNumber && (uint)cur < (uint)array.MaxProcs && result.Count <= array.MaxProcs; cur = array.Procs[cur].LwWaitNext)
            result.Add(cur);
        WaitListUnlock(l);
        if (cur != PgProc.InvalidProcNumber)
            throw new ShmemCorruptException("LWLock wait queue", "link", $"reaches slot {cur} after {result.Count} waiters; the array has {array.MaxProcs} slots");
        return [.. result];
    }

    private static string TrancheNameOf(Participant me, LWLock* l) => LWLockTranches.NameOf(me.Array.Segment, l->Tranche);

    /// <summary>Counts an acquisition that slept, tagged with its wait event (the tranche's name, as pg_stat_activity shows it).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void RecordSleep(LWLock* l, Participant me)
        => Diagnostics.PgIpcMetrics.LWLockSleepCounter.Add(1,
            new KeyValuePair<string, object?>(Diagnostics.PgIpcMetrics.WaitEventTag, TrancheNameOf(me, l)));

    // ------------------------------------------------------------------
    // The wait list
    // ------------------------------------------------------------------

    /// <summary>Takes the wait-list lock bit (LWLockWaitListLock): a spinlock inside the state word.</summary>
    internal static void WaitListLock(LWLock* l)
    {
        // Full barrier; pairs with WaitListUnlock's Interlocked.And and Wakeup's final CAS.
        uint old = Interlocked.Or(ref l->State, Bits.FlagLocked);
        if ((old & Bits.FlagLocked) == 0)
            return;
        WaitListLockSlow(l);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void WaitListLockSlow(LWLock* l)
    {
        var delay = new SLock.SpinDelay("LWLock wait list");
        while (true)
        {
            // Test, then test-and-set.
            while ((Volatile.Read(ref l->State) & Bits.FlagLocked) != 0)
                delay.Perform();
            if ((Interlocked.Or(ref l->State, Bits.FlagLocked) & Bits.FlagLocked) == 0)
                break;
        }
        delay.Finish();
    }

    /// <summary>Drops the wait-list lock bit (full barrier: publishes the list changes made under it).</summary>
    internal static void WaitListUnlock(LWLock* l) => Interlocked.And(ref l->State, ~Bits.FlagLocked);

    /// <summary>Puts the participant on the wait list (LWLockQueueSelf). Wait-until-free waiters go to the head.</summary>
    private static void QueueSelf(LWLock* l, Participant me, LWLockMode mode)
    {
        PgProc* procs = me.Array.Procs;
        PgProc* proc = me.Proc;
        int self = me.ProcNumber;
        // LwWaiting is shared (wakers store NotWaiting into it): a participant not waiting that finds it set has either
        // been used from two threads at once or had its slot overwritten. Nothing is changed yet, so this is an error,
        // not a PANIC: the queue this participant would have joined stays intact.
        if (proc->LwWaiting != (int)LWLockWaitState.NotWaiting)
            ThrowAlreadyWaiting(self, proc->LwWaiting);

        WaitListLock(l);
        Interlocked.Or(ref l->State, Bits.FlagHasWaiters);
        proc->LwWaiting = (int)LWLockWaitState.Waiting;
        proc->LwWaitMode = (int)mode;
        if (mode == LWLockMode.WaitUntilFree)
            ProcList.PushHead<ProcList.LwWait>(procs, self, ref l->WaitHead, ref l->WaitTail);
        else
            ProcList.PushTail<ProcList.LwWait>(procs, self, ref l->WaitHead, ref l->WaitTail);
        WaitListUnlock(l);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowAlreadyWaiting(int self, int state)
        => throw new ShmemCorruptException($"PGPROC slot {self}", "LwWaiting",
            $"is {state} while its participant is about to queue for an LWLock (it waits on no other: the slot was overwritten, or the participant is used from two threads)");

    /// <summary>
    /// Takes the participant off the wait list after it got the lock on the second attempt (LWLockDequeueSelf).
    /// If a releaser already took it off, it waits for that releaser's post so it cannot arrive later.
    /// </summary>
    private static void DequeueSelf(LWLock* l, Participant me, ref int extraWaits)
    {
        PgProc* procs = me.Array.Procs;
        PgProc* proc = me.Proc;
        WaitListLock(l);
        bool onList = proc->LwWaiting == (int)LWLockWaitState.Waiting;
        if (onList)
            ListDelete(l, procs, me.ProcNumber);
        if (l->WaitHead == PgProc.InvalidProcNumber && (Volatile.Read(ref l->State) & Bits.FlagHasWaiters) != 0)
            Interlocked.And(ref l->State, ~Bits.FlagHasWaiters);
        WaitListUnlock(l);

        if (onList)
        {
            proc->LwWaiting = (int)LWLockWaitState.NotWaiting;
            return;
        }
        // Someone dequeued us and has posted, or will post, our semaphore. They also cleared RELEASE_OK on our
        // behalf: set it again, then absorb their post now so it does not wake a later, unrelated sleep.
        Interlocked.Or(ref l->State, Bits.FlagReleaseOk);
        SleepUntilWoken(l, me, ref extraWaits);
    }

    private static void ListDelete(LWLock* l, PgProc* procs, int procno)
        => ProcList.Delete<ProcList.LwWait>(procs, procno, ref l->WaitHead, ref l->WaitTail);

    private static void AppendLocal(PgProc* procs, int procno, ref int head, ref int tail)
    {
        procs[procno].LwWaitNext = PgProc.InvalidProcNumber;
        if (tail == PgProc.InvalidProcNumber)
            head = procno;
        else
            procs[tail].LwWaitNext = procno;
        tail = procno;
    }

}

/// <summary>An LWLock alone on a cache line (LWLockPadded). Layout: the lock at 0, 64 bytes in all.</summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct LWLockPadded
{
    public LWLock Lock;
}
