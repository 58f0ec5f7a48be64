/*-------------------------------------------------------------------------
 * ShmemSegmentInfo.cs
 *   A segment's header fields and live counts, as ShmemSegment.GetInfo
 *   reports them (`pgipc inspect`).
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Shmem;

/// <summary>Header fields of a segment, for inspection.</summary>
public sealed record ShmemSegmentInfo(
    string Backend,
    string Id,
    string Key,
    uint LayoutVersion,
    int CreatorPid,
    DateTimeOffset CreatedAt,
    long TotalSize,
    long FreeOffset,
    ShmemState State,
    int IndexEntries,
    int IndexCapacity,
    long AttachedProcesses,
    bool HugePages)
{
    /// <summary>The size in bytes of the pages backing this process's mapping (the huge page size when <see cref="HugePages"/>).</summary>
    public long PageSize { get; init; }
}
