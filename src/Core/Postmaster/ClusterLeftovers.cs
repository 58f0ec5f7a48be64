/*-------------------------------------------------------------------------
 * ClusterLeftovers.cs
 *   What a cluster whose processes all died (the supervisor killed with
 *   SIGKILL, the machine's processes killed) left behind besides its main
 *   segment, found through that segment before it is removed.
 *
 * NOTES
 *   ShmemSegment.Create (and `pgipc cleanup`) finds a stale main segment
 *   (creator dead, nobody attached) and removes it. The cluster's other OS
 *   objects are named from what that segment records, which only this
 *   layer can read: this class is the IStaleSegmentHandler the cluster
 *   passes to ShmemSegment.Create (Cluster.InitShmem) and to CleanupStale
 *   (this class's CleanupStale, for `pgipc cleanup`). The segment layer
 *   calls it while the stale segment is still mapped, and it removes:
 *     - the participant slots' sleep semaphores and latch wake objects
 *       (ProcGlobal's set name, slot count and storage): Attach + Destroy
 *       through the backend, which on Posix unlinks the latch FIFOs, the
 *       lifeline FIFO and their directory, and the named semaphores
 *       (/dev/shm/sem.pgipc.*) where the backend uses named ones; on Linux
 *       (futex, eventfd, pidfd) and Windows (objects that die with their
 *       last handle) there is nothing to remove and the calls fail or do
 *       nothing, which is fine;
 *     - every DSM segment in the old control table, and the data
 *       directory's DSM leftovers (DsmRegistry.RemoveLeftoversOf), as
 *       PostgreSQL's dsm_cleanup_using_control_segment does with the old
 *       control segment it finds through postmaster.pid.
 *   What the segment records is input from another process: nothing is
 *   removed unless the segment is owned by this user, and the data
 *   directory it names is used only when it and its pg_dynshmem are ours
 *   and not symbolic links (DsmRegistry.RemoveLeftoversOf).
 *   Nothing here writes to the stale segment except what a backend's
 *   Destroy does to its own storage (sem_destroy of an unnamed sem_t).
 *
 *   RecordedPids gives the segment's in-use check a second witness: the
 *   supervisor pid and the pid of every PGPROC slot in use. Where the OS
 *   keeps no attach count (POSIX shm, Windows) a live pid there means an
 *   orphaned participant may still use the memory.
 *
 *   Failures are swallowed: a leftover that cannot be removed must not
 *   keep a new cluster from starting (`pgipc cleanup` reports what stays).
 *
 *   Mirrors the leftover handling of src/backend/port/sysv_shmem.c
 *   (PGSharedMemoryCreate's "pre-existing shared memory block") and
 *   src/backend/storage/ipc/dsm.c (dsm_cleanup_using_control_segment).
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using System.Text;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Postmaster;

/// <summary>Removes the OS objects a dead cluster left behind, found through its stale main segment.</summary>
public sealed unsafe class ClusterLeftovers : IStaleSegmentHandler
{
    private static readonly int SemaphoreOffset = (int)Marshal.OffsetOf<PgProc>(nameof(PgProc.Semaphore));
    private static readonly int LatchOffset = (int)Marshal.OffsetOf<PgProc>(nameof(PgProc.LatchWake));

    /// <summary>The handler the cluster supplies to <see cref="ShmemSegment"/>.</summary>
    internal static readonly ClusterLeftovers Instance = new();

    private ClusterLeftovers() { }

    /// <summary>
    /// `pgipc cleanup`: removes every stale main segment of <paramref name="platform"/> (see
    /// <see cref="ShmemSegment.CleanupStale(IPgIpcPlatform?, bool)"/>) and, before each, the other OS objects its
    /// cluster left. With <paramref name="dryRun"/> only reports.
    /// </summary>
    public static IReadOnlyList<StaleSegmentReport> CleanupStale(IPgIpcPlatform? platform = null, bool dryRun = false)
        => ShmemSegment.CleanupStale(platform, dryRun, Instance);

    /// <summary>
    /// The stale segment's slot array, or null when it has none (a bare segment, or one whose creator died before
    /// initialising it). Its shape is checked as an attach checks it (ProcArray.ValidateHeader): a corrupt one throws
    /// <see cref="ShmemCorruptException"/>, which the segment layer reports, and nothing of it is walked.
    /// </summary>
    private static ProcGlobalHeader* ProcGlobal(ShmemSegment stale, out PgProc* procs, out int count, out string name)
    {
        procs = null;
        count = 0;
        name = "";
        if (!stale.TryFindReadyStruct(ProcArray.ShmemName, out ShmemRegion r))
            return null;
        var h = (ProcGlobalHeader*)r.Pointer;
        if (r.Size < sizeof(ProcGlobalHeader) || h->Magic == 0)
            return null;
        ProcArray.Layout layout = ProcArray.ValidateHeader(h, r, stale.Handle.Id);
        var nameBytes = new ReadOnlySpan<byte>(h->SemaphoreName, 32);
        int n = nameBytes.IndexOf((byte)0);
        name = Encoding.ASCII.GetString(n < 0 ? nameBytes : nameBytes[..n]);
        procs = (PgProc*)(stale.Base + layout.ProcsOffset);
        count = layout.MaxProcs;
        return h;
    }

    /// <summary>The supervisor's pid and the pid of every slot in use, as the stale segment recorded them.</summary>
    IEnumerable<int> IStaleSegmentHandler.RecordedPids(ShmemSegment stale)
    {
        List<int> pids = [];
        ProcGlobalHeader* h = ProcGlobal(stale, out PgProc* procs, out int count, out _);
        if (h is null)
            return pids;
        if (h->SupervisorPid > 0)
            pids.Add(h->SupervisorPid);
        for (int i = 0; i < count; i++)
        {
            // Plain read: every writer is dead (or this is the in-use check, which only needs a hint).
            int pid = Volatile.Read(ref procs[i].Pid);
            if (pid > 0 && !pids.Contains(pid))
                pids.Add(pid);
        }
        return pids;
    }

    /// <summary>Removes every OS object the stale segment's cluster made (see file notes); returns how many sets, the DSM segments among them in <paramref name="dsmSegments"/>.</summary>
    int IStaleSegmentHandler.RemoveLeftovers(ShmemSegment stale, out int dsmSegments)
    {
        int removed = 0;
        IPgIpcPlatform platform = stale.Platform;
        dsmSegments = 0;
        // Another user's segment (readable, with a forged header and a dead "creator") names nothing we trust.
        if (!platform.SharedMemory.IsOwnedByCurrentUser(stale.Handle.Id))
            return 0;
        ProcGlobalHeader* h = ProcGlobal(stale, out PgProc* procs, out int count, out string name);
        if (h is not null && name.Length > 0)
        {
            try
            {
                ILatchWakers wakers = platform.Latches.Attach(name, (nint)procs + LatchOffset, sizeof(PgProc), count);
                wakers.Destroy();
                removed++;
            }
            catch (Exception ex) when (ex is PgIpcException or IOException or UnauthorizedAccessException or ArgumentException)
            {
                // Nothing of that name (Linux, Windows, or already removed).
            }
            if (h->SemaphoreStorageSize == platform.Semaphores.StorageSize)
            {
                try
                {
                    IProcSemaphoreSet sems = platform.Semaphores.Attach(name, (nint)procs + SemaphoreOffset, sizeof(PgProc), count);
                    sems.Destroy();
                    removed++;
                }
                catch (Exception ex) when (ex is PgIpcException or IOException or UnauthorizedAccessException or ArgumentException)
                {
                    // As above.
                }
            }
        }
        int dsm = 0;
        try
        {
            dsm = DsmRegistry.RemoveLeftoversOf(stale);
        }
        catch (Exception ex) when (ex is not ShmemCorruptException && (ex is PgIpcException or IOException or UnauthorizedAccessException or ArgumentException))
        {
            // An unreadable data directory: leave it to `pgipc cleanup`. A corrupt table is the segment layer's to
            // report (PreExistingSegment.Examine): it propagates.
        }
        dsmSegments = dsm;
        return removed + dsm;
    }
}
