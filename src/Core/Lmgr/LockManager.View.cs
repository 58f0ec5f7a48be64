/*-------------------------------------------------------------------------
 * LockManager.View.cs
 *   The pg_locks view: one row per lock mode held (granted) and per mode
 *   waited for (not granted), with the holder's pid and slot, whether the
 *   lock is in the fast path, and when the wait began.
 *
 * NOTES
 *   A participant reads each partition under its LWLock in shared mode,
 *   one partition at a time, and each slot's fast-path entries under that
 *   slot's fpInfoLock in shared mode: nobody is blocked for longer than one
 *   partition's walk, at the price of a view that is exact per partition
 *   rather than across them (PostgreSQL's GetLockStatusData takes every
 *   partition lock at once).
 *
 *   A reader that is not a participant (the `pgipc inspect --locks` tool)
 *   cannot take LWLocks: it reads the same structures without locks, as a
 *   snapshot that may be torn by concurrent changes, every offset and
 *   count checked against the segment before use, and a list that does not
 *   end within the table's capacity ends the walk.
 *
 *   Mirrors src/backend/storage/lmgr/lock.c (GetLockStatusData) and
 *   utils/adt/lockfuncs.c (pg_lock_status).
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Lmgr;

/// <summary>One row of the pg_locks view.</summary>
/// <param name="Tag">The locked object (its <see cref="LockTag.TypeName"/> is pg_locks' locktype).</param>
/// <param name="Mode">The mode held or waited for.</param>
/// <param name="Granted">True for a held mode, false for the mode waited for.</param>
/// <param name="FastPath">True when recorded in the holder's fast-path slots.</param>
/// <param name="Pid">The holder's (or waiter's) process.</param>
/// <param name="ProcNumber">Its participant slot.</param>
/// <param name="WaitStart">When the wait began (waiting rows), else null.</param>
public readonly record struct LockStatus(LockTag Tag, LockMode Mode, bool Granted, bool FastPath, int Pid, int ProcNumber, DateTimeOffset? WaitStart);

public sealed unsafe partial class LockManager
{
    /// <summary>
    /// pg_locks: every held and awaited lock mode. With <paramref name="me"/>, read under the partition locks (shared,
    /// one at a time); without, read without locks (a possibly torn snapshot, for inspection tools).
    /// </summary>
    public IReadOnlyList<LockStatus> GetLockStatus(Participant? me = null)
    {
        var rows = new List<LockStatus>();
        // Fast-path entries.
        for (int procno = 0; procno < _maxProcs; procno++)
        {
            LockProcState* s = ProcState(procno);
            if (Volatile.Read(ref s->FpLockBits) == 0)
                continue;
            if (me is not null)
                s->FpInfoLock.Acquire(me, LWLockMode.Shared);
            try
            {
                ulong bits = s->FpLockBits;
                int pid = PidOf(procno);
                for (int i = 0; i < FastPathSlots; i++)
                {
                    ulong slot = (bits >> (i * 3)) & 7;
                    if (slot == 0)
                        continue;
                    ulong rel = s->FpRel[i];
                    LockTag tag = LockTag.Relation((uint)(rel >> 32), (uint)rel);
                    for (int m = 1; m <= 3; m++)
                        if ((slot & (1UL << (m - 1))) != 0)
                            rows.Add(new LockStatus(tag, (LockMode)m, true, true, pid, procno, null));
                }
            }
            finally
            {
                if (me is not null)
                    s->FpInfoLock.Release(me);
            }
        }
        // The main table, partition by partition, through every slot's PROCLOCK list of that partition.
        long limit = _segment.TotalSize - sizeof(ProcLockEntry);
        for (int p = 0; p < NumPartitions; p++)
        {
            if (me is not null)
                _partitionLocks[p].Lock.Acquire(me, LWLockMode.Shared);
            try
            {
                for (int procno = 0; procno < _maxProcs; procno++)
                {
                    LockProcState* s = ProcState(procno);
                    long off = Volatile.Read(ref s->ProcLockHeads[p]);
                    for (int guard = _header->ProcLockCapacity; off > 0 && off <= limit && guard > 0; guard--)
                    {
                        ProcLockEntry pl = *At<ProcLockEntry>(off);
                        if (pl.LockOffset <= 0 || pl.LockOffset > _segment.TotalSize - sizeof(LockEntry))
                            break;
                        LockTag tag = At<LockEntry>(pl.LockOffset)->Tag;
                        int pid = PidOf(procno);
                        for (int m = 1; m <= LockModes.Count; m++)
                            if ((pl.HoldMask & (1 << m)) != 0)
                                rows.Add(new LockStatus(tag, (LockMode)m, true, false, pid, procno, null));
                        if (s->WaitStatus == (int)LockWaitStatus.Waiting && s->WaitProcLockOffset == off && (uint)s->WaitMode - 1 < LockModes.Count)
                        {
                            long startMs = s->WaitStartUnixMs;
                            rows.Add(new LockStatus(tag, (LockMode)s->WaitMode, false, false, pid, procno,
                                startMs > 0 ? DateTimeOffset.FromUnixTimeMilliseconds(startMs) : null));
                        }
                        off = pl.NextOnProc;
                    }
                }
            }
            finally
            {
                if (me is not null)
                    _partitionLocks[p].Lock.Release(me);
            }
        }
        return rows;
    }

    /// <summary>The slots waiting on <paramref name="tag"/>, in queue order (under its partition lock, shared).</summary>
    public IReadOnlyList<int> WaitQueue(Participant me, LockTag tag)
    {
        if (!tag.IsValid)
            ThrowBadTag(in tag);
        uint hash = LockTag.HashOf(in tag);
        LWLock* partition = PartitionLock(hash);
        var list = new List<int>();
        partition->Acquire(me, LWLockMode.Shared);
        try
        {
            ref LockEntry e = ref _locks.FindRef(in tag, hash, out bool found);
            if (!found)
                return list;
            int procno = e.WaitHead;
            for (int guard = e.WaitCount; procno != PgProc.InvalidProcNumber && guard > 0; guard--)
            {
                list.Add(procno);
                procno = ProcState(procno)->WaitNext;
            }
        }
        finally
        {
            partition->Release(me);
        }
        return list;
    }

    /// <summary>Finds the lock manager in <paramref name="segment"/> for an inspection tool (null when it has none); read with <see cref="GetLockStatus"/> and no participant.</summary>
    public static LockManager? TryOpenForInspection(ShmemSegment segment)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (!segment.TryFindStruct(ShmemName, out _) || !ProcArray.TryReadProcs(segment, out _))
            return null;
        return Attach(segment, ProcArray.Attach(segment));
    }
}
