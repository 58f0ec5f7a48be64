/*-------------------------------------------------------------------------
 * LockManager.cs
 *   The heavyweight lock manager: locks on named objects (relations,
 *   pages, tuples, objects, advisory keys, a user's own tags) in eight
 *   modes, held for as long as the work lasts, across processes, with wait
 *   queues, deadlock detection and a fast path for weak relation locks.
 *   This file: the module (sizes, creation, attach), the settings and the
 *   public API (Acquire, Release, ReleaseAll). The tables are in
 *   LockManager.Table.cs, waiting in LockManager.Wait.cs, the fast path in
 *   LockManager.FastPath.cs, deadlock.c in DeadlockDetector.cs, the
 *   pg_locks view in LockManager.View.cs and the participant's local lock
 *   table in LockManager.Local.cs.
 *
 * NOTES
 *   Acquire follows LockAcquireExtended:
 *     1. the participant's local table (LOCALLOCK, process-local, one
 *        entry per tag and mode) answers a lock it already holds: its
 *        count goes up and nothing shared is touched;
 *     2. a weak relation lock (AccessShare, RowShare, RowExclusive) is
 *        recorded in the participant's fast-path slots when no strong lock
 *        of that relation's strong-lock partition is held or being taken;
 *     3. a strong relation lock first counts itself in the strong-lock
 *        counters and moves every participant's fast-path entries for the
 *        relation into the main table;
 *     4. otherwise, under the partition's LWLock: find or make the LOCK and
 *        this slot's PROCLOCK, then grant when the mode conflicts neither
 *        with the modes granted to others nor with the modes others already
 *        wait for (a request that conflicts with an earlier waiter waits
 *        behind it); else fail (dontWait) or queue and sleep
 *        (LockManager.Wait.cs).
 *   Release undoes the one it finds: the fast-path bit, or the grant in
 *   the main table, waking the waiters the release lets through.
 *
 *   Sizes are PostgreSQL's: max_locks_per_participant x slots LOCKs and
 *   twice that PROCLOCKs (NLOCKENTS, and the PROCLOCK table's 2x). A full
 *   table is LockTableFullException ("out of shared memory: increase
 *   max_locks_per_participant"); the request leaves nothing behind.
 *
 *   A participant's locks are released when it leaves (ProcArray's leave
 *   hook, on its own thread, or at process exit when its thread is not
 *   inside the lock manager). The locks of a process that died are
 *   released by whoever finds them: a waiter that sees a holder's process
 *   gone (every 200 ms of its wait), or the next participant that gets the
 *   slot (at its first lock). A supervisor's crash restart makes the tables
 *   anew.
 *
 *   Mirrors src/backend/storage/lmgr/lock.c (InitLocks, LockAcquireExtended,
 *   LockRelease, LockReleaseAll) and src/include/storage/lock.h.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Latch;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Lmgr;

/// <summary>The lock manager's settings (max_locks_per_transaction, deadlock_timeout, lock_timeout).</summary>
/// <param name="MaxLocksPerParticipant">Average number of objects each participant may lock at once; the tables hold this times the slots.</param>
/// <param name="DeadlockTimeoutMs">How long a waiter sleeps before it looks for a deadlock (deadlock_timeout; default 1 s).</param>
/// <param name="LockTimeoutMs">How long a waiter waits before it gives up with <see cref="LockTimeoutException"/> (lock_timeout; 0 = forever).</param>
public sealed record LockManagerOptions(int MaxLocksPerParticipant = 64, int DeadlockTimeoutMs = 1000, int LockTimeoutMs = 0)
{
    internal void Validate()
    {
        if (MaxLocksPerParticipant < 10 || MaxLocksPerParticipant > 1 << 20)
            throw new ArgumentOutOfRangeException(nameof(MaxLocksPerParticipant), MaxLocksPerParticipant, "max_locks_per_participant must be 10..1048576");
        if (DeadlockTimeoutMs < 1)
            throw new ArgumentOutOfRangeException(nameof(DeadlockTimeoutMs), DeadlockTimeoutMs, "deadlock_timeout must be at least 1 ms");
        if (LockTimeoutMs < 0)
            throw new ArgumentOutOfRangeException(nameof(LockTimeoutMs), LockTimeoutMs, "lock_timeout cannot be negative (0 = wait forever)");
    }
}

/// <summary>
/// The cluster's heavyweight lock manager, as this process sees it: locks on <see cref="LockTag"/>s in eight
/// <see cref="LockMode"/>s, held across processes until released, with queue-order waiting, deadlock detection and
/// lock_timeout. Reach it with <c>cluster.Get&lt;LockManager&gt;()</c>. Every call takes the participant it acts for.
/// </summary>
public sealed unsafe partial class LockManager
{
    internal const string ShmemName = "PgIpc.LockManager";
    internal const string LockTableName = "PgIpc.LockTable";
    internal const string ProcLockTableName = "PgIpc.ProcLockTable";

    /// <summary>Partitions of the lock tables, each under its own LWLock (NUM_LOCK_PARTITIONS).</summary>
    public const int NumPartitions = 16;

    /// <summary>Fast-path slots per participant (FP_LOCK_SLOTS_PER_BACKEND).</summary>
    public const int FastPathSlots = 16;

    /// <summary>Partitions of the strong-lock counters (FAST_PATH_STRONG_LOCK_HASH_PARTITIONS).</summary>
    internal const int StrongLockPartitions = 1024;

    private readonly ShmemSegment _segment;
    private readonly ProcArray _procs;
    private readonly byte* _base;
    private readonly LockManagerHeader* _header;
    private readonly LWLockPadded* _partitionLocks;
    private readonly StrongLockCounts* _strong;
    private readonly LockProcState* _procStates;
    private readonly SharedHash<LockTag, LockEntry> _locks;
    private readonly SharedHash<ProcLockKey, ProcLockEntry> _procLocks;
    private readonly LocalLockTable?[] _local;
    private readonly int _maxProcs;
    private readonly DeadlockDetector _detector;

    private LockManager(ShmemSegment segment, ProcArray procs, LockManagerHeader* header,
        SharedHash<LockTag, LockEntry> locks, SharedHash<ProcLockKey, ProcLockEntry> procLocks)
    {
        _segment = segment;
        _procs = procs;
        _base = segment.Base;
        _header = header;
        _maxProcs = header->MaxProcs;
        if (_maxProcs != procs.MaxProcs)
            throw new PgIpcException($"{ShmemName} was made for {_maxProcs} participant slots; the slot array has {procs.MaxProcs}");
        _partitionLocks = (LWLockPadded*)(_base + header->PartitionLocksOffset);
        _strong = (StrongLockCounts*)(_base + header->StrongLocksOffset);
        _procStates = (LockProcState*)(_base + header->ProcStatesOffset);
        _locks = locks;
        _procLocks = procLocks;
        _local = new LocalLockTable?[_maxProcs];
        _detector = new DeadlockDetector(this, _maxProcs);
        DeadlockTimeoutMs = header->DeadlockTimeoutMs;
        LockTimeoutMs = header->LockTimeoutMs;
        procs.AddLeaveHook(OnParticipantLeaving);
    }

    // ------------------------------------------------------------------
    // Module: size, creation, attach
    // ------------------------------------------------------------------

    private static (int Locks, int ProcLocks) Capacities(int maxProcs, LockManagerOptions options)
    {
        long locks = (long)options.MaxLocksPerParticipant * maxProcs;
        if (locks > 1 << 26)
            throw new ArgumentOutOfRangeException(nameof(options), locks, $"max_locks_per_participant {options.MaxLocksPerParticipant} x {maxProcs} slots is more than 2^26 locks");
        return ((int)locks, (int)(locks * 2));
    }

    /// <summary>Bytes the lock manager takes for <paramref name="maxProcs"/> slots (LockManagerShmemSize).</summary>
    internal static long ShmemSize(int maxProcs, LockManagerOptions options)
    {
        options.Validate();
        (int locks, int procLocks) = Capacities(maxProcs, options);
        long size = Shmem.ShmemSize.CacheLineAlign(MainStructSize(maxProcs));
        size = Shmem.ShmemSize.Add(size, Shmem.ShmemSize.CacheLineAlign(SharedHash<LockTag, LockEntry>.EstimateSize(locks, NumPartitions)));
        size = Shmem.ShmemSize.Add(size, Shmem.ShmemSize.CacheLineAlign(SharedHash<ProcLockKey, ProcLockEntry>.EstimateSize(procLocks, NumPartitions)));
        return size;
    }

    private static long MainStructSize(int maxProcs)
        => Shmem.ShmemSize.Add(sizeof(LockManagerHeader) + NumPartitions * sizeof(LWLockPadded) + sizeof(StrongLockCounts),
            Shmem.ShmemSize.Mul(maxProcs, sizeof(LockProcState)));

    /// <summary>InitLocks: creates the lock manager's structures in <paramref name="segment"/> (or finds them).</summary>
    internal static LockManager Init(ShmemSegment segment, ProcArray procs, LockManagerOptions options, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(procs);
        options.Validate();
        int maxProcs = procs.MaxProcs;
        (int lockCap, int procLockCap) = Capacities(maxProcs, options);
        ShmemRegion region = segment.InitStruct(ShmemName, MainStructSize(maxProcs), r => Initialize(r, maxProcs, options, lockCap, procLockCap), out found);
        var header = (LockManagerHeader*)region.Pointer;
        CheckHeader(segment, header);
        var locks = SharedHash<LockTag, LockEntry>.Init(segment, LockTableName, header->LockCapacity, NumPartitions, out _);
        var procLocks = SharedHash<ProcLockKey, ProcLockEntry>.Init(segment, ProcLockTableName, header->ProcLockCapacity, NumPartitions, out _);
        return new LockManager(segment, procs, header, locks, procLocks);
    }

    /// <summary>Opens the lock manager another process made in <paramref name="segment"/>.</summary>
    internal static LockManager Attach(ShmemSegment segment, ProcArray procs)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (!segment.TryFindStruct(ShmemName, out ShmemRegion region))
            throw new PgIpcException($"segment {segment.Handle.Id} has no lock manager ({ShmemName})");
        var header = (LockManagerHeader*)region.Pointer;
        CheckHeader(segment, header);
        if (region.Size < MainStructSize(header->MaxProcs))
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is {region.Size} bytes, too small for {header->MaxProcs} slots");
        var locks = SharedHash<LockTag, LockEntry>.Init(segment, LockTableName, header->LockCapacity, NumPartitions, out _);
        var procLocks = SharedHash<ProcLockKey, ProcLockEntry>.Init(segment, ProcLockTableName, header->ProcLockCapacity, NumPartitions, out _);
        return new LockManager(segment, procs, header, locks, procLocks);
    }

    private static void CheckHeader(ShmemSegment segment, LockManagerHeader* h)
    {
        if (h->Magic != LockManagerHeader.MagicValue)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is not initialised (magic 0x{h->Magic:x8})");
        if (h->MaxProcs < 1 || h->MaxProcs > ProcArray.MaxProcsLimit || h->LockCapacity < 1 || h->ProcLockCapacity < 1)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is corrupt: {h->MaxProcs} slots, {h->LockCapacity} locks, {h->ProcLockCapacity} proclocks");
    }

    private static void Initialize(ShmemRegion region, int maxProcs, LockManagerOptions options, int lockCap, int procLockCap)
    {
        var h = (LockManagerHeader*)region.Pointer;
        h->MaxProcs = maxProcs;
        h->MaxLocksPerParticipant = options.MaxLocksPerParticipant;
        h->LockCapacity = lockCap;
        h->ProcLockCapacity = procLockCap;
        h->DeadlockTimeoutMs = options.DeadlockTimeoutMs;
        h->LockTimeoutMs = options.LockTimeoutMs;
        h->PartitionLocksOffset = region.Offset + sizeof(LockManagerHeader);
        h->StrongLocksOffset = h->PartitionLocksOffset + NumPartitions * sizeof(LWLockPadded);
        h->ProcStatesOffset = h->StrongLocksOffset + sizeof(StrongLockCounts);
        byte* p = (byte*)region.Pointer;
        var parts = (LWLockPadded*)(p + sizeof(LockManagerHeader));
        for (int i = 0; i < NumPartitions; i++)
            parts[i].Lock.Initialize(BuiltinTranche.LockManager);
        var strong = (StrongLockCounts*)(parts + NumPartitions);
        SLock.Init(ref strong->Mutex.Value);
        var states = (LockProcState*)((byte*)strong + sizeof(StrongLockCounts));
        for (int i = 0; i < maxProcs; i++)
        {
            LockProcState* s = states + i;
            s->FpInfoLock.Initialize(BuiltinTranche.LockManager);
            s->WaitNext = PgProc.InvalidProcNumber;
            s->WaitPrev = PgProc.InvalidProcNumber;
        }
        // Written last; ShmemInitStruct's ready state publishes everything to other processes.
        h->Magic = LockManagerHeader.MagicValue;
    }

    // ------------------------------------------------------------------
    // Settings and statistics
    // ------------------------------------------------------------------

    /// <summary>deadlock_timeout of this process (ms): how long a waiter sleeps before it looks for a deadlock.</summary>
    public int DeadlockTimeoutMs
    {
        get;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            field = value;
        }
    }

    /// <summary>lock_timeout of this process (ms; 0 = wait forever).</summary>
    public int LockTimeoutMs
    {
        get;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            field = value;
        }
    }

    /// <summary>max_locks_per_participant the tables were sized for.</summary>
    public int MaxLocksPerParticipant => _header->MaxLocksPerParticipant;

    /// <summary>Capacity of the LOCK table (objects locked at once) and of the PROCLOCK table (holder-object pairs).</summary>
    public (int Locks, int ProcLocks) Capacity => (_header->LockCapacity, _header->ProcLockCapacity);

    /// <summary>Entries in use in the LOCK and PROCLOCK tables (exact only when nothing is changing).</summary>
    public (long Locks, long ProcLocks) Count => (_locks.Count, _procLocks.Count);

    /// <summary>Deadlock checks run, hard deadlocks reported, soft deadlocks resolved by rearranging a queue (since creation).</summary>
    public (long Checks, long Hard, long Soft) DeadlockStatistics
        => (Volatile.Read(ref _header->DeadlockChecks), Volatile.Read(ref _header->DeadlocksFound), Volatile.Read(ref _header->SoftDeadlocksResolved));

    /// <summary>The sum of the strong-lock counters (0 when no strong relation lock is held or being taken).</summary>
    public long StrongLockCountTotal
    {
        get
        {
            long n = 0;
            for (int i = 0; i < StrongLockPartitions; i++)
                n += Volatile.Read(ref _strong->Count[i]);
            return n;
        }
    }

    /// <summary>The participant slots this lock manager serves.</summary>
    public ProcArray Procs => _procs;

    // ------------------------------------------------------------------
    // Public API
    // ------------------------------------------------------------------

    /// <summary>
    /// LockAcquire: takes <paramref name="tag"/> in <paramref name="mode"/> for <paramref name="me"/>, in
    /// <paramref name="scope"/>. Waits in queue order until granted unless <paramref name="dontWait"/> (then
    /// <see cref="LockAcquireResult.NotAvailable"/>). A lock already held in this mode is counted again
    /// (<see cref="LockAcquireResult.AlreadyHeld"/>); each acquire needs its release. Throws
    /// <see cref="DeadlockDetectedException"/> when this wait closes a cycle, <see cref="LockTimeoutException"/> past
    /// lock_timeout, <see cref="LockTableFullException"/> when the tables are full.
    /// </summary>
    public LockAcquireResult Acquire(Participant me, LockTag tag, LockMode mode, LockScope scope = LockScope.Transaction, bool dontWait = false)
    {
        LocalLockTable local = Begin(me, in tag, mode, scope);
        try
        {
            return AcquireLocked(me, local, in tag, mode, scope, dontWait);
        }
        finally
        {
            local.Busy = false;
        }
    }

    /// <summary>LockRelease: gives back one acquire of <paramref name="tag"/> in <paramref name="mode"/> and <paramref name="scope"/>. Throws InvalidOperationException when not held so.</summary>
    public void Release(Participant me, LockTag tag, LockMode mode, LockScope scope = LockScope.Transaction)
    {
        LocalLockTable local = Begin(me, in tag, mode, scope);
        try
        {
            ReleaseLocked(me, local, in tag, mode, scope);
        }
        finally
        {
            local.Busy = false;
        }
    }

    /// <summary>
    /// LockReleaseAll: releases every lock <paramref name="me"/> holds in <paramref name="scope"/>
    /// (<see cref="LockScope.Transaction"/>: the transaction-level ones; <see cref="LockScope.Session"/>: all of them).
    /// Returns the number of (tag, mode) locks given up.
    /// </summary>
    public int ReleaseAll(Participant me, LockScope scope = LockScope.Transaction)
    {
        if ((uint)scope > (uint)LockScope.Session)
            throw new ArgumentOutOfRangeException(nameof(scope), scope, "scope is Transaction or Session");
        LocalLockTable local = LocalFor(me);
        local.Busy = true;
        try
        {
            return ReleaseAllLocked(me, local, scope);
        }
        finally
        {
            local.Busy = false;
        }
    }

    /// <summary>How many times <paramref name="me"/> holds <paramref name="tag"/> in <paramref name="mode"/> (both scopes).</summary>
    public long HeldCount(Participant me, LockTag tag, LockMode mode)
    {
        LocalLockTable local = LocalFor(me);
        ref LocalLock ll = ref local.Locks.Find(new LocalLockKey(in tag, mode));
        return Unsafe.IsNullRef(ref ll) ? 0 : ll.NLocks + ll.NSession;
    }

    /// <summary>Number of (tag, mode) locks <paramref name="me"/> holds.</summary>
    public int HeldLockCount(Participant me)
    {
        LocalLockMap map = LocalFor(me).Locks;
        int n = 0;
        for (int i = 0; i < map.SlotCount; i++)
            if (map.IsUsed(i) && map.ValueAt(i).NLocks + map.ValueAt(i).NSession > 0)
                n++;
        return n;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private LocalLockTable Begin(Participant me, in LockTag tag, LockMode mode, LockScope scope)
    {
        if (!tag.IsValid)
            ThrowBadTag(in tag);
        LockModes.Validate(mode);
        if ((uint)scope > (uint)LockScope.Session)
            ThrowBadScope(scope);
        LocalLockTable local = LocalFor(me);
        local.Busy = true;
        return local;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNotHeld(Participant me, in LockTag tag, LockMode mode, LockScope scope)
        => throw new InvalidOperationException($"participant {me.ProcNumber} does not hold {LockModes.NameOf(mode)} on {tag} at {scope} level");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBadScope(LockScope scope)
        => throw new ArgumentOutOfRangeException(nameof(scope), scope, "scope is Transaction or Session");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBadTag(in LockTag tag)
        => throw new ArgumentException($"not a lock tag: {tag} (make tags with LockTag.Relation, .Page, .Tuple, .Object, .Advisory or .User)", nameof(tag));

    private LockAcquireResult AcquireLocked(Participant me, LocalLockTable local, in LockTag tag, LockMode mode, LockScope scope, bool dontWait)
    {
        var key = new LocalLockKey(in tag, mode);
        ref LocalLock ll = ref local.Locks.GetOrAdd(in key, out bool exists);
        if (exists && ll.NLocks + ll.NSession > 0)
        {
            if (scope == LockScope.Session)
                ll.NSession++;
            else
                ll.NLocks++;
            return LockAcquireResult.AlreadyHeld;
        }
        // A new entry, or an idle one kept from an earlier hold of the same tag and mode.
        uint hash = key.TagHash;
        ll = default;
        ll.Hash = hash;
        bool granted = false;
        try
        {
            granted = AcquireNew(me, local, in tag, hash, mode, ref ll, dontWait);
        }
        finally
        {
            if (!granted)
            {
                if (ll.HoldsStrong)
                    EndStrongLock(hash);
                ll = default; // idle
            }
        }
        if (!granted)
            return LockAcquireResult.NotAvailable;
        if (scope == LockScope.Session)
            ll.NSession = 1;
        else
            ll.NLocks = 1;
        return LockAcquireResult.Granted;
    }

    /// <summary>The lock is not held by this participant in this mode: take it. True when granted, false when not available (dontWait).</summary>
    private bool AcquireNew(Participant me, LocalLockTable local, in LockTag tag, uint hash, LockMode mode, ref LocalLock ll, bool dontWait)
    {
        if (EligibleForFastPath(in tag, mode) && local.FastPathUsed < FastPathSlots && FastPathGrant(me, local, in tag, hash, mode))
        {
            ll.FastPath = true;
            return true;
        }
        if (ConflictsWithFastPath(in tag, mode))
        {
            BeginStrongLock(hash);
            ll.HoldsStrong = true;
            FastPathTransfer(me, in tag, hash);
        }
        LWLock* partition = PartitionLock(hash);
        partition->Acquire(me, LWLockMode.Exclusive);
        bool partitionHeld = true;
        try
        {
            LockEntry* lockp = SetupLockInTable(me.ProcNumber, in tag, hash, mode, out ProcLockEntry* pl);
            ll.ProcLockOffset = Offset(pl);
            int conflictMask = LockModes.ConflictMask(mode);
            bool conflict = (conflictMask & lockp->WaitMask) != 0 || LockCheckConflicts(lockp, pl, mode);
            if (!conflict)
            {
                GrantLock(lockp, pl, mode);
                return true;
            }
            if (dontWait)
            {
                RemoveUngrantedRequest(lockp, pl, mode);
                return false;
            }
            DeadlockInfo[]? early = JoinWaitQueue(me, lockp, pl, mode, out bool grantedAtOnce);
            if (grantedAtOnce)
                return true;
            if (early is not null)
            {
                // The simple two-way deadlock JoinWaitQueue saw: we never sleep. Leave the queue, then report.
                RemoveFromWaitQueue(me.ProcNumber);
                ResetWaitState(me.ProcNumber);
                partition->Release(me);
                partitionHeld = false;
                Interlocked.Increment(ref _header->DeadlocksFound);
                throw new DeadlockDetectedException(early);
            }
            partition->Release(me);
            partitionHeld = false;
            WaitOnLock(me, local, lockp, in tag, hash, mode);
            return true;
        }
        finally
        {
            if (partitionHeld)
                partition->Release(me);
        }
    }

    private void ReleaseLocked(Participant me, LocalLockTable local, in LockTag tag, LockMode mode, LockScope scope)
    {
        var key = new LocalLockKey(in tag, mode);
        ref LocalLock ll = ref local.Locks.Find(in key);
        if (Unsafe.IsNullRef(ref ll) || (scope == LockScope.Session ? ll.NSession : ll.NLocks) <= 0)
            ThrowNotHeld(me, in tag, mode, scope);
        if (scope == LockScope.Session)
            ll.NSession--;
        else
            ll.NLocks--;
        if (ll.NLocks + ll.NSession > 0)
            return;
        // The entry stays, idle (counts 0), for the next acquire of the same tag and mode; TrimIdle drops idle ones.
        LocalLock copy = ll;
        ll = default;
        ReleaseShared(me, local, in tag, mode, in copy);
    }

    private int ReleaseAllLocked(Participant me, LocalLockTable local, LockScope scope)
    {
        int released = 0;
        LocalLockMap map = local.Locks;
        for (int i = 0; i < map.SlotCount; i++)
        {
            if (!map.IsUsed(i))
                continue;
            ref LocalLock entry = ref map.ValueAt(i);
            LocalLock ll = entry;
            if (ll.NLocks + ll.NSession == 0)
                continue;
            if (scope == LockScope.Transaction)
            {
                if (ll.NLocks == 0)
                    continue;
                if (ll.NSession > 0)
                {
                    entry.NLocks = 0;
                    continue;
                }
            }
            entry = default; // idle; values change in place, the map is not rebuilt meanwhile
            LockTag tag = map.KeyAt(i).Tag;
            ReleaseShared(me, local, in tag, map.KeyAt(i).Mode, in ll);
            released++;
        }
        return released;
    }

    /// <summary>Gives up the shared part of a lock whose local counts reached zero: the fast-path bit or the main-table grant.</summary>
    private void ReleaseShared(Participant me, LocalLockTable local, in LockTag tag, LockMode mode, in LocalLock ll)
    {
        try
        {
            if (ll.FastPath && FastPathUngrant(me, local, in tag, mode))
                return;
            LWLock* partition = PartitionLock(ll.Hash);
            partition->Acquire(me, LWLockMode.Exclusive);
            try
            {
                ProcLockEntry* pl = FindProcLock(in tag, ll.Hash, me.ProcNumber);
                if (pl == null || (pl->HoldMask & LockModes.Bit(mode)) == 0)
                    throw new PgIpcException($"lock table corrupt: participant {me.ProcNumber} holds {LockModes.NameOf(mode)} on {tag} locally but not in the shared table");
                var lockp = (LockEntry*)(_base + pl->LockOffset);
                bool wakeupNeeded = UnGrantLock(lockp, mode, pl);
                CleanUpLock(lockp, pl, wakeupNeeded);
            }
            finally
            {
                partition->Release(me);
            }
        }
        finally
        {
            if (ll.HoldsStrong)
                EndStrongLock(ll.Hash);
        }
    }
}
