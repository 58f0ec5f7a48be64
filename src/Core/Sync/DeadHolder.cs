/*-------------------------------------------------------------------------
 * DeadHolder.cs
 *   "No hang on the dead": the exception a participant gets instead of
 *   waiting forever on a lock whose holder's process has died, and the pid
 *   liveness check the waiters use.
 *
 * NOTES
 *   PostgreSQL never needs this: the postmaster sees every child die and,
 *   when one dies abnormally, kills all the others before anybody could
 *   wait long on a lock the dead one held (crash restart). PgIpc clusters
 *   with a supervisor work the same way. Without a supervisor (processes
 *   that attach to a segment on their own), a process killed with SIGKILL
 *   while holding a lock would leave the others asleep forever, which is
 *   what Boost.Interprocess users report for its robust-less mutexes.
 *
 *   So the waiters look for themselves, in their slow paths only:
 *     - a spinlock's word holds the holder's pid (SLock), and a waiter that
 *       has started sleeping between tries checks that pid at every sleep;
 *     - an LWLock records its exclusive holder's procno, and every
 *       participant mirrors the LWLocks it holds into its PGPROC slot; a
 *       waiter sleeps on its semaphore with a timeout and, at each timeout,
 *       looks for a dead process among the lock's holders (LWLock.cs).
 *   Either throws LockHolderDiedException, naming the lock and the dead
 *   pid, after leaving every queue it was on. The lock itself stays held:
 *   the structure it protects may be half-changed, and only a restart of
 *   the cluster (recreating the shared memory) repairs that, as in
 *   PostgreSQL. A slot whose dead owner still holds LWLocks is therefore not
 *   reclaimed (ProcArray.ReclaimDeadSlots): it keeps naming the culprit for
 *   every later waiter.
 *
 *   Liveness is IProcessServices.GetLiveness of the backend that maps the
 *   lock's segment: LWLock waiters ask their ProcArray's; a spinlock word
 *   knows no segment, so every segment this process creates or attaches
 *   registers its backend here (HolderLiveness.Use), and the spinlock's
 *   waiter asks the last one registered (every backend of one OS answers
 *   alike for a pid). A participant slot records its owner's identity
 *   (start time) beside the pid, so an LWLock waiter and slot reclamation
 *   see through a pid the OS has given to a new process
 *   (ProcArray.IsSlotOwnerGone). A spinlock word holds a bare pid: there a
 *   reused pid looks alive and the waiter keeps waiting (it never blames
 *   the wrong process; the stuck-spinlock timeout ends the wait). Only Gone counts as dead: an unreaped zombie
 *   holder counts as alive until its parent waits for it (kill(pid, 0)'s
 *   view, kept; its locks are in fact dead, so treating Zombie as dead
 *   would also be sound).
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;

namespace PgIpc.Sync;

/// <summary>Whether a lock holder's process still exists (process-local; used only on slow paths).</summary>
internal static class HolderLiveness
{
    /// <summary>This process's pid, as the lock words record it.</summary>
    public static readonly int MyPid = Environment.ProcessId;

    private static IProcessServices? s_processes;

    /// <summary>Makes <paramref name="processes"/> (the backend of a segment this process maps) the one spinlock waiters ask.</summary>
    public static void Use(IProcessServices processes) => Volatile.Write(ref s_processes, processes);

    /// <summary>
    /// True only when <paramref name="pid"/> is positive, not ours, and the OS says no such process exists
    /// (<see cref="ProcessLiveness.Gone"/>; see file notes for zombies). Never throws; false when no segment has
    /// registered a backend yet.
    /// </summary>
    public static bool IsDead(int pid)
    {
        if (pid <= 0 || pid == MyPid)
            return false;
        IProcessServices? processes = Volatile.Read(ref s_processes);
        return processes is not null && processes.GetLiveness(pid) == ProcessLiveness.Gone;
    }
}
