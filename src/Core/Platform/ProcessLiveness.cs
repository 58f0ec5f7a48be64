/*-------------------------------------------------------------------------
 * ProcessLiveness.cs
 *   What the OS says about a pid: running, exited but not reaped, or gone.
 *
 * NOTES
 *   "Is this pid alive?" has two answers that callers need apart. A zombie
 *   (a Unix process that has exited but whose parent has not yet waited for
 *   it) still owns its pid, so kill(pid, 0) succeeds; but it has already
 *   unmapped every segment and released every OS object, and where PID 1
 *   does not reap (containers) an orphaned child that exited stays one for
 *   good. One backend query, IProcessServices.GetLiveness, reports the three
 *   states; each caller says which of them counts as alive for it.
 *
 *   Mirrors nothing in PostgreSQL as such: the postmaster reaps its
 *   children itself; sysv_shmem.c's PGSharedMemoryIsInUse relies on nattch.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform;

/// <summary>What <see cref="IProcessServices.GetLiveness"/> found for a pid.</summary>
public enum ProcessLiveness
{
    /// <summary>A process with this pid exists and has not finished exiting (or the OS will not say more).</summary>
    Alive,

    /// <summary>
    /// The process has exited but was not reaped: its pid is still taken, its mappings and OS objects are gone.
    /// Reported only where the backend can tell (Linux's /proc); elsewhere such a process is <see cref="Alive"/>.
    /// </summary>
    Zombie,

    /// <summary>No process has this pid (or the pid is 0 or negative).</summary>
    Gone,
}
