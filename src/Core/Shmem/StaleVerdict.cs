/*-------------------------------------------------------------------------
 * StaleVerdict.cs
 *   What `pgipc cleanup` (ShmemSegment.CleanupStale) found about one
 *   segment (PreExistingSegment.cs).
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Shmem;

/// <summary>What <see cref="ShmemSegment.CleanupStale(PgIpc.Platform.IPgIpcPlatform?, bool)"/> found about one segment.</summary>
public enum StaleVerdict
{
    /// <summary>Creator dead and nobody attached: a crashed run's leftover.</summary>
    Stale,
    /// <summary>A live process created it or is attached.</summary>
    InUse,
    /// <summary>Not a PgIpc segment (left alone).</summary>
    NotPgIpc,
    /// <summary>Could not be examined (another user's object this process may not read, or an OS error): left alone, <see cref="StaleSegmentReport.Reason"/> says why.</summary>
    Unreadable,
    /// <summary>
    /// A PgIpc segment (its magic matches) of a layout version this build does not understand: nothing past the
    /// version is read, so it is neither judged nor walked nor removed; <see cref="StaleSegmentReport.Reason"/> names
    /// the version. Remove it with the build that made it, or by hand (ipcrm, /dev/shm).
    /// </summary>
    UnknownLayout,
}
