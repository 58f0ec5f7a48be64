/*-------------------------------------------------------------------------
 * ShmemAttachTable.cs
 *   The header's table of attached pids: register on attach, clear on
 *   detach, and who is attached now.
 *
 * NOTES
 *   SysV counts a segment's attachments itself (shm_nattch); POSIX shm and
 *   Windows mappings do not, so every attacher records its pid in one of
 *   the header's AttachTableCapacity slots with a compare-and-swap and
 *   clears it (CAS back to 0) on detach. A process killed without
 *   detaching leaves its pid behind: an attacher that finds no free slot
 *   takes one whose pid is Gone. Counting an attacher, a pid must be
 *   Alive (a zombie has unmapped everything, PreExistingSegment.cs);
 *   listing pids or reusing a slot, only Gone counts as dead (kill(pid, 0)'s
 *   view, as before the liveness query told zombies apart).
 *
 *   Every slot is touched only atomically (CAS to claim or clear, volatile
 *   reads to count), so no lock is needed; the CAS is a full barrier.
 *
 *   PostgreSQL has no such table: sysv_shmem.c relies on nattch, and
 *   win32_shmem.c on the kernel dropping a mapping with its last handle.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;

namespace PgIpc.Shmem;

/// <summary>Operations on <see cref="PgShmemHeader.AttachedPids"/> (see file notes).</summary>
internal static unsafe class ShmemAttachTable
{
    /// <summary>Claims a slot for <paramref name="me"/>: a free one, else one whose pid is Gone. Returns its index, or -1 when every slot holds a process that is not Gone.</summary>
    public static int Register(PgShmemHeader* h, IProcessServices processes, int me)
    {
        // First pass: a free slot. Second pass: a slot whose process is dead (killed without detaching).
        for (int pass = 0; pass < 2; pass++)
        {
            for (int i = 0; i < PgShmemHeader.AttachTableCapacity; i++)
            {
                int cur = Volatile.Read(ref h->AttachedPids[i]);
                // Gone only: an unreaped zombie's slot is not reused until it is reaped.
                bool usable = pass == 0 ? cur == 0 : cur != 0 && cur != me && processes.GetLiveness(cur) == ProcessLiveness.Gone;
                // CAS is a full barrier; pairs with the CAS in Unregister and the reads in CountAlive.
                if (usable && Interlocked.CompareExchange(ref h->AttachedPids[i], me, cur) == cur)
                    return i;
            }
        }
        return -1;
    }

    /// <summary>Clears slot <paramref name="slot"/> if it still holds <paramref name="me"/>.</summary>
    public static void Unregister(PgShmemHeader* h, int slot, int me)
        => Interlocked.CompareExchange(ref h->AttachedPids[slot], 0, me);

    /// <summary>Recorded pids that may hold a mapping: Alive only (a zombie has unmapped everything). <paramref name="firstLive"/> gets the first found, if still 0.</summary>
    public static long CountAlive(IProcessServices processes, PgShmemHeader* h, ref int firstLive)
    {
        long n = 0;
        for (int i = 0; i < PgShmemHeader.AttachTableCapacity; i++)
        {
            int p = Volatile.Read(ref h->AttachedPids[i]);
            if (p != 0 && processes.GetLiveness(p) == ProcessLiveness.Alive)
            {
                if (firstLive == 0)
                    firstLive = p;
                n++;
            }
        }
        return n;
    }

    /// <summary>Recorded pids that are not Gone (an unreaped zombie is listed until reaped), once per attachment.</summary>
    public static List<int> PidsNotGone(IProcessServices processes, PgShmemHeader* h)
    {
        List<int> pids = [];
        for (int i = 0; i < PgShmemHeader.AttachTableCapacity; i++)
        {
            int p = Volatile.Read(ref h->AttachedPids[i]);
            if (p != 0 && processes.GetLiveness(p) != ProcessLiveness.Gone)
                pids.Add(p);
        }
        return pids;
    }
}
