/*-------------------------------------------------------------------------
 * ProcArray.Inspect.cs
 *   What a participant slot's owner holds, as an inspection tool sees it:
 *   the held-LWLock mirror (PgProc.cs) turned into lock names, read without
 *   locks and without joining (`pgipc inspect --procs`).
 *
 * NOTES
 *   The mirror is written by its owner with plain stores and is meant to be
 *   read after the owner died; read while it lives, an entry may be stale
 *   or torn. Every entry is checked to name an LWLock inside the main
 *   segment before the lock's tranche is read, so a wild value is shown,
 *   never followed.
 *-------------------------------------------------------------------------
 */
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Proc;

public sealed unsafe partial class ProcArray
{
    /// <summary>
    /// The LWLocks the owner of slot <paramref name="procNumber"/> of <paramref name="segment"/> holds, by name
    /// ("LWLock tranche[index]", or the tranche and offset), read without locks from the slot's held-lock mirror
    /// (a snapshot: entries may be stale while the owner runs). A holder of more locks than the mirror keeps gets a
    /// last entry counting the rest. Empty when the segment has no participant slots.
    /// </summary>
    public static IReadOnlyList<string> ReadHeldLWLocks(ShmemSegment segment, int procNumber)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (!segment.TryFindStruct(ShmemName, out _))
            return [];
        ProcArray array = Attach(segment);
        ArgumentOutOfRangeException.ThrowIfNegative(procNumber);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(procNumber, array.MaxProcs);
        PgProc* p = array.Procs + procNumber;
        int n = Volatile.Read(ref p->NumHeldLWLocks); // no ordering partner: the owner's plain stores, a snapshot
        List<string> names = [];
        for (int i = 0; i < Math.Min(n, PgProc.MirroredHeldLWLocks); i++)
        {
            uint tag = p->HeldLWLocks[i];
            long offset = (long)tag * 4;
            if (tag == 0)
                names.Add("LWLock (outside the main segment)");
            else if (offset + sizeof(LWLock) > array.SegmentSize)
                names.Add($"LWLock at offset 0x{offset:x} (outside the segment: a stale entry)");
            else
                names.Add(LWLock.DescribeLock(array, (LWLock*)(array.SegmentBase + offset)));
        }
        if (n > PgProc.MirroredHeldLWLocks)
            names.Add($"{n - PgProc.MirroredHeldLWLocks} more");
        return names;
    }
}
