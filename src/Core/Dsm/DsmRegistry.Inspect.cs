/*-------------------------------------------------------------------------
 * DsmRegistry.Inspect.cs
 *   The DSM control table as an inspection tool sees it: every slot in use
 *   (handle, reference count, size, implementation, pinned), read without
 *   locks and without joining the cluster (`pgipc inspect --dsm`).
 *
 * NOTES
 *   The table's shape is checked as at attach (ValidateControl); the items
 *   are then copied one by one without the control LWLock, so a row may be
 *   torn against a concurrent create or detach. The walk is bounded by the
 *   validated MaxItems, never by the shared NItems alone.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Dsm;

/// <summary>One dynamic shared memory segment of a cluster's control table, as <see cref="DsmRegistry.TryReadSegments"/> read it.</summary>
/// <param name="Handle">The segment's handle (dsm_handle).</param>
/// <param name="ReferenceCount">1 moribund (being removed), otherwise 1 + one per mapping + 1 if pinned.</param>
/// <param name="Size">Bytes asked for at create.</param>
/// <param name="Implementation">The implementation the segment was made with.</param>
/// <param name="Pinned">True while the segment is pinned (dsm_pin_segment).</param>
/// <param name="OsName">The OS object's name (or file path) for this handle.</param>
public readonly record struct DsmSegmentInfo(uint Handle, int ReferenceCount, long Size, DsmImplementation Implementation, bool Pinned, string OsName);

public sealed unsafe partial class DsmRegistry
{
    /// <summary>
    /// The slots in use of the DSM control table in <paramref name="segment"/>, read without locks and without joining
    /// (for inspection tools; a row may be torn). False when the segment has no control table.
    /// </summary>
    /// <exception cref="ShmemCorruptException">The table's shape is not one a PgIpc cluster writes.</exception>
    public static bool TryReadSegments(ShmemSegment segment, out IReadOnlyList<DsmSegmentInfo> segments)
    {
        ArgumentNullException.ThrowIfNull(segment);
        segments = [];
        if (!segment.TryFindStruct(ShmemName, out ShmemRegion region))
            return false;
        var header = (DsmControlHeader*)region.Pointer;
        ControlLayout layout = ValidateControl(header, region, segment.Handle.Id);
        var items = (DsmControlItem*)((byte*)header + sizeof(DsmControlHeader));
        int n = Math.Clamp(Volatile.Read(ref header->NItems), 0, layout.MaxItems); // no ordering partner: a lock-free snapshot
        IDsmProvider dsm = segment.Platform.Dsm;
        List<DsmSegmentInfo> list = [];
        for (int i = 0; i < n; i++)
        {
            DsmControlItem item = items[i];
            if (item.RefCnt == 0)
                continue;
            var impl = (DsmImplementation)item.Implementation;
            string os = Enum.IsDefined(impl) && dsm.Implementations.Contains(impl) ? dsm.NameOf(impl, item.Handle, layout.DataDirectory) : "";
            list.Add(new DsmSegmentInfo(item.Handle, (int)Math.Min(item.RefCnt, int.MaxValue), item.Size, impl, item.Pinned != 0, os));
        }
        segments = list;
        return true;
    }
}
