/*-------------------------------------------------------------------------
 * StaleSegmentReport.cs
 *   One row of `pgipc cleanup`'s report (ShmemSegment.CleanupStale).
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Shmem;

/// <summary>
/// One row of <see cref="ShmemSegment.CleanupStale(PgIpc.Platform.IPgIpcPlatform?, bool)"/>'s report;
/// <see cref="Reason"/> is why an <see cref="StaleVerdict.Unreadable"/> object could not be examined (null otherwise).
/// </summary>
public sealed record StaleSegmentReport(string Backend, string Id, StaleVerdict Verdict, int Pid, long Attached, bool Removed, string? Reason = null);
