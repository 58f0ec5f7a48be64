/*-------------------------------------------------------------------------
 * IStaleSegmentHandler.cs
 *   What the layer that fills a main segment knows about a stale one: who
 *   may still be attached, and which other OS objects it leaves behind.
 *
 * NOTES
 *   ShmemSegment.Create (and CleanupStale) decides from what the segment
 *   layer itself keeps (the header's creator pid and attach table, the OS's
 *   attach count) whether an existing segment of the cluster is stale. The
 *   structures carved out of it by the layers above (participant slots,
 *   the DSM control table) record more: further pids that may still use the
 *   memory, and the names of OS objects (semaphores, latch FIFOs, DSM
 *   segments) that die with the cluster. Only those layers can read them,
 *   so the segment asks them through this interface, supplied by the
 *   caller of Create, as ProcArray's slot-release hooks are supplied from
 *   above. Without a handler a stale segment is still found and removed;
 *   its other OS objects are left alone.
 *
 *   Both calls get a read-only view of the stale segment, mapped by the
 *   caller for the duration of the call; everything read through it is
 *   input from dead (or foreign) processes and must be bounds-checked.
 *
 *   Mirrors the split between src/backend/port/sysv_shmem.c (is the old
 *   segment in use?) and dsm.c's dsm_cleanup_using_control_segment.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Shmem;

/// <summary>Reads and removes what the layers above recorded in a stale main segment (see file notes).</summary>
internal interface IStaleSegmentHandler
{
    /// <summary>
    /// Pids the stale segment records as possible attachers besides its header's attach table (the supervisor's,
    /// every participant slot's in use), duplicates allowed; empty for a segment the handler does not recognise.
    /// </summary>
    IEnumerable<int> RecordedPids(ShmemSegment stale);

    /// <summary>
    /// Removes the OS objects the stale segment records (its cluster is dead: creator and every recorded pid gone,
    /// nobody attached). Returns how many object sets it removed; <paramref name="dsmSegments"/> is the DSM
    /// segments among them. Never throws for an object that cannot be removed (it is left for `pgipc cleanup`).
    /// </summary>
    int RemoveLeftovers(ShmemSegment stale, out int dsmSegments);
}
