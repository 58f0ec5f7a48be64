/*-------------------------------------------------------------------------
 * LockManager.FastPath.cs
 *   The fast path: weak relation locks recorded in the holder's own slots
 *   without touching the shared tables, and the strong-lock counters that
 *   force them into the main table when a conflicting mode is asked for.
 *
 * NOTES
 *   A weak lock (AccessShare, RowShare, RowExclusive on a relation) never
 *   conflicts with another weak lock, so while nobody holds or is taking a
 *   strong lock (Share and above) on a relation, its weak locks need not be
 *   visible to anyone else. Each participant has 16 slots (relation and 3
 *   mode bits each) under its own LWLock (fpInfoLock), which only it takes
 *   in the common case: acquire and release cost that LWLock and a scan of
 *   16 words.
 *
 *   A strong locker first counts itself in FastPathStrongRelationLocks
 *   (1024 counters by relation hash, under a spinlock), then takes every
 *   slot's fpInfoLock in turn and moves the relation's entries into the
 *   main table as that slot's PROCLOCKs (FastPathTransferRelationLocks).
 *   A weak locker reads the counter after taking its own fpInfoLock: either
 *   it sees the count and goes to the main table, or its entry was made
 *   before the strong locker took that fpInfoLock and is moved. The counter
 *   goes down when the strong lock is released (or its request abandoned).
 *
 *   Lock order: a slot's fpInfoLock before any partition lock.
 *
 *   Mirrors src/backend/storage/lmgr/lock.c (FastPathGrantRelationLock,
 *   FastPathUnGrantRelationLock, FastPathTransferRelationLocks,
 *   BeginStrongLockAcquire, and the EligibleForRelationFastPath /
 *   ConflictsWithRelationFastPath macros).
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Lmgr;

public sealed unsafe partial class LockManager
{
    private const int BitsPerSlot = 3;
    private const ulong SlotMask = 7;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool EligibleForFastPath(in LockTag tag, LockMode mode)
        => tag.Type == LockTagType.Relation && mode <= LockMode.RowExclusive;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool ConflictsWithFastPath(in LockTag tag, LockMode mode)
        => tag.Type == LockTagType.Relation && mode > LockMode.ShareUpdateExclusive;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong RelKey(in LockTag tag) => ((ulong)tag.Field1 << 32) | tag.Field2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int StrongPartition(uint hash) => (int)(hash % StrongLockPartitions);

    /// <summary>FastPathGrantRelationLock: records the weak lock in a slot when no strong lock blocks the fast path. True when recorded.</summary>
    private bool FastPathGrant(Participant me, LocalLockTable local, in LockTag tag, uint hash, LockMode mode)
    {
        LockProcState* s = ProcState(me.ProcNumber);
        s->FpInfoLock.Acquire(me, LWLockMode.Exclusive);
        // After our fpInfoLock: pairs with the strong locker's increment before it takes this same lock to transfer.
        if (Volatile.Read(ref _strong->Count[StrongPartition(hash)]) != 0)
        {
            s->FpInfoLock.Release(me);
            return false;
        }
        ulong rel = RelKey(in tag);
        ulong bits = s->FpLockBits;
        ulong modeBit = 1UL << ((int)mode - 1);
        // The relation's slot, if it has one (the common case: found early, no full scan).
        for (int i = 0; i < FastPathSlots; i++)
        {
            if (((bits >> (i * BitsPerSlot)) & SlotMask) != 0 && s->FpRel[i] == rel)
            {
                s->FpLockBits = bits | (modeBit << (i * BitsPerSlot));
                s->FpInfoLock.Release(me);
                return true;
            }
        }
        // A free slot; the count of used ones is taken afresh (another participant's transfer may have emptied some).
        int unused = -1, used = 0;
        for (int i = 0; i < FastPathSlots; i++)
        {
            if (((bits >> (i * BitsPerSlot)) & SlotMask) != 0)
                used++;
            else if (unused < 0)
                unused = i;
        }
        bool done = false;
        if (unused >= 0)
        {
            s->FpRel[unused] = rel;
            s->FpLockBits = bits | (modeBit << (unused * BitsPerSlot));
            used++;
            done = true;
        }
        local.FastPathUsed = used;
        s->FpInfoLock.Release(me);
        return done;
    }

    /// <summary>FastPathUnGrantRelationLock: clears the mode's bit; false when the entry is gone (moved to the main table).</summary>
    private bool FastPathUngrant(Participant me, LocalLockTable local, in LockTag tag, LockMode mode)
    {
        LockProcState* s = ProcState(me.ProcNumber);
        s->FpInfoLock.Acquire(me, LWLockMode.Exclusive);
        ulong rel = RelKey(in tag);
        ulong bits = s->FpLockBits;
        ulong modeBit = 1UL << ((int)mode - 1);
        bool done = false;
        for (int i = 0; i < FastPathSlots; i++)
        {
            int shift = i * BitsPerSlot;
            if (s->FpRel[i] == rel && ((bits >> shift) & modeBit) != 0)
            {
                bits &= ~(modeBit << shift);
                s->FpLockBits = bits;
                if (((bits >> shift) & SlotMask) == 0 && local.FastPathUsed > 0)
                    local.FastPathUsed--;
                done = true;
                break;
            }
        }
        if (!done)
        {
            // Moved to the main table by a strong locker, which may have emptied other slots of ours too: recount.
            int used = 0;
            for (int i = 0; i < FastPathSlots; i++)
                if (((bits >> (i * BitsPerSlot)) & SlotMask) != 0)
                    used++;
            local.FastPathUsed = used;
        }
        s->FpInfoLock.Release(me);
        return done;
    }

    /// <summary>BeginStrongLockAcquire: counts a strong lock of this relation partition (before the transfer).</summary>
    private void BeginStrongLock(uint hash)
    {
        SLock.Acquire(ref _strong->Mutex.Value, "FastPathStrongRelationLocks");
        _strong->Count[StrongPartition(hash)]++;
        SLock.Release(ref _strong->Mutex.Value);
    }

    /// <summary>The strong lock is released (or its request given up): its count goes.</summary>
    private void EndStrongLock(uint hash)
    {
        SLock.Acquire(ref _strong->Mutex.Value, "FastPathStrongRelationLocks");
        _strong->Count[StrongPartition(hash)]--;
        SLock.Release(ref _strong->Mutex.Value);
    }

    /// <summary>
    /// FastPathTransferRelationLocks: moves every slot's fast-path entries for <paramref name="tag"/>'s relation into the
    /// main table (each as that slot's PROCLOCK with its modes granted). Throws <see cref="LockTableFullException"/>
    /// when the table fills; what was moved stays moved.
    /// </summary>
    private void FastPathTransfer(Participant me, in LockTag tag, uint hash)
    {
        ulong rel = RelKey(in tag);
        LWLock* partition = PartitionLock(hash);
        for (int procno = 0; procno < _maxProcs; procno++)
        {
            LockProcState* s = ProcState(procno);
            s->FpInfoLock.Acquire(me, LWLockMode.Exclusive);
            try
            {
                ulong bits = s->FpLockBits;
                if (bits == 0)
                    continue;
                for (int i = 0; i < FastPathSlots; i++)
                {
                    int shift = i * BitsPerSlot;
                    ulong slot = (bits >> shift) & SlotMask;
                    if (slot == 0 || s->FpRel[i] != rel)
                        continue;
                    partition->Acquire(me, LWLockMode.Exclusive);
                    try
                    {
                        for (int m = 1; m <= 3; m++)
                        {
                            ulong modeBit = 1UL << (m - 1);
                            if ((slot & modeBit) == 0)
                                continue;
                            LockEntry* lockp = SetupLockInTable(procno, in tag, hash, (LockMode)m, out ProcLockEntry* pl);
                            GrantLock(lockp, pl, (LockMode)m);
                            s->FpLockBits &= ~(modeBit << shift);
                        }
                    }
                    finally
                    {
                        partition->Release(me);
                    }
                    break; // one slot per relation
                }
            }
            finally
            {
                s->FpInfoLock.Release(me);
            }
        }
    }

    /// <summary>
    /// Empties slot <paramref name="procno"/>'s fast-path entries if it still belongs to the owner recorded as
    /// (<paramref name="ownerPid"/>, <paramref name="ownerGeneration"/>): a dead process's, or the slot's leftovers.
    /// </summary>
    internal void ClearFastPath(Participant me, int procno, int ownerPid, int ownerGeneration)
    {
        LockProcState* s = ProcState(procno);
        s->FpInfoLock.Acquire(me, LWLockMode.Exclusive);
        // Under the fpInfoLock: a new owner changes OwnerPid (ClaimSlot) before it ever takes this lock to record a lock.
        if (Volatile.Read(ref s->OwnerPid) == ownerPid && Volatile.Read(ref s->OwnerGeneration) == ownerGeneration)
            s->FpLockBits = 0;
        s->FpInfoLock.Release(me);
    }
}
