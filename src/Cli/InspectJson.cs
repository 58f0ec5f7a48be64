/*-------------------------------------------------------------------------
 * InspectJson.cs
 *   pgipc inspect --json: the report as plain records, serialized through a
 *   source-generated JsonSerializerContext (no reflection: the NativeAOT
 *   and trimmed CLI write the same JSON).
 *
 * NOTES
 *   Property names are snake_case, as PostgreSQL's views name columns
 *   (pg_stat_activity.wait_event_type, pg_locks.fastpath, ...). A view that
 *   was not asked for, or that the segment does not have (no buffer pool,
 *   no lock manager, no DSM table), is absent; inside a view every field is
 *   always written, null where PostgreSQL's view has NULL (wait_event of a
 *   participant that is not waiting).
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Text.Json.Serialization;
using PgIpc.Buffers;
using PgIpc.Dsm;
using PgIpc.Latch;
using PgIpc.Lmgr;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Cli;

internal sealed record InspectReport(SegmentJson Segment)
{
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<ProcJson>? Procs { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<AllocationJson>? Allocations { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public BufferPoolJson? Buffers { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public LockManagerJson? Locks { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<DsmJson>? Dsm { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<ActivityJson>? Activity { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public StatsJson? Stats { get; init; }
}

internal sealed record SegmentJson(string Backend, string Id, string Key, uint LayoutVersion, string State, int CreatorPid, string CreatedAt,
    long TotalSize, long Used, bool HugePages, long PageSize, int IndexEntries, int IndexCapacity, long AttachedProcesses, List<int> AttachedPids);

internal sealed record ProcJson(int ProcNumber, int Pid, string Kind, string Role, string? WaitEventType, string? WaitEvent, int HeldLwlockCount, List<string> HeldLwlocks);

internal sealed record AllocationJson(string? Name, long? Offset, long Size, long AllocatedSize);

internal sealed record BufferPoolJson(int NumBuffers, int BlockSize, int Used, int Unused, int Dirty, int Pinned, double AverageUsageCount, List<int> UsageCounts,
    int? ClockHand, uint? CompletePasses, List<BufferJson> Rows);

internal sealed record BufferJson(int Buffer, uint Relation, string Fork, uint Block, bool Valid, bool Dirty, int UsageCount, int Pins);

internal sealed record LockManagerJson(long Locks, int LockCapacity, long ProcLocks, int ProcLockCapacity, int MaxLocksPerParticipant,
    long DeadlockChecks, long Deadlocks, long QueuesRearranged, List<LockJson> Rows);

internal sealed record LockJson(string Locktype, uint Field1, uint Field2, uint Field3, uint Field4, string Mode, bool Granted, bool Fastpath, int Pid, int ProcNumber, string? WaitStart);

internal sealed record ActivityJson(int ProcNumber, int Pid, string Kind, string BackendType, string? State, string BackendStart, string StateChange,
    string? WaitEventType, string? WaitEvent, string? Detail);

internal sealed record StatsJson(BgWriterJson Bgwriter, CheckpointerJson Checkpointer);

internal sealed record BgWriterJson(long BuffersClean, long MaxwrittenClean, long BuffersAlloc, long Rounds, string StatsReset);

internal sealed record CheckpointerJson(long NumTimed, long NumRequested, long NumDone, double WriteTime, double SyncTime, long BuffersWritten, long FilesSynced,
    string StatsReset);

internal sealed record DsmJson(uint Handle, int ReferenceCount, long Size, string Implementation, bool Pinned, string OsName);

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(InspectReport))]
internal sealed partial class InspectJsonContext : JsonSerializerContext;

internal static class InspectJson
{
    public static InspectReport Build(ShmemSegment seg, InspectViews views)
    {
        ShmemSegmentInfo i = seg.GetInfo();
        var segment = new SegmentJson(i.Backend, i.Id, i.Key, i.LayoutVersion, i.State.ToString(), i.CreatorPid,
            Utc(i.CreatedAt), i.TotalSize, i.FreeOffset, i.HugePages, i.PageSize, i.IndexEntries, i.IndexCapacity,
            i.AttachedProcesses, [.. seg.AttachedPids()]);
        return new InspectReport(segment)
        {
            Procs = views.Procs ? [.. Inspect.ReadProcs(seg).Select(p => new ProcJson(p.Info.ProcNumber, p.Info.Pid, p.Info.Kind.ToString(), p.Role,
                p.WaitEventType, p.WaitEvent, p.Info.HeldLWLocks, [.. p.HeldLWLocks]))] : null,
            Allocations = views.Allocations ? [.. seg.GetAllocations().Select(a => new AllocationJson(a.Name, a.Offset < 0 ? null : a.Offset, a.Size, a.AllocatedSize))] : null,
            Buffers = views.Buffers ? Buffers(seg) : null,
            Locks = views.Locks ? Locks(seg) : null,
            Dsm = views.Dsm && DsmRegistry.TryReadSegments(seg, out IReadOnlyList<DsmSegmentInfo> dsm)
                ? [.. dsm.Select(d => new DsmJson(d.Handle, d.ReferenceCount, d.Size, d.Implementation.ToString(), d.Pinned, d.OsName))]
                : null,
            Activity = views.Activity && PgIpc.Stats.SharedStats.TryOpen(seg, out PgIpc.Stats.SharedStats? act)
                ? [.. act!.Activity().Select(a => new ActivityJson(a.ProcNumber, a.Pid, a.Kind.ToString(), a.BackendType, a.StateName,
                    Utc(a.BackendStart), Utc(a.StateChange), a.WaitEventType, a.WaitEventName, a.Detail))]
                : null,
            Stats = views.Stats ? Stats(seg) : null,
        };
    }

    private static StatsJson? Stats(ShmemSegment seg)
    {
        if (!PgIpc.Stats.SharedStats.TryOpen(seg, out PgIpc.Stats.SharedStats? stats))
            return null;
        PgIpc.Stats.PgStatBgWriter b = stats!.BgWriter();
        PgIpc.Stats.PgStatCheckpointer c = stats.Checkpointer();
        return new StatsJson(new BgWriterJson(b.BuffersClean, b.MaxWrittenClean, b.BuffersAlloc, b.Rounds, Utc(b.StatsReset)),
            new CheckpointerJson(c.NumTimed, c.NumRequested, c.NumDone, c.WriteTimeMs, c.SyncTimeMs, c.BuffersWritten, c.FilesSynced, Utc(c.StatsReset)));
    }

    /// <summary>ISO 8601 in UTC ("2026-12-03T12:53:25.7320000Z": no '+', which the serializer would escape).</summary>
    private static string Utc(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);

    private static BufferPoolJson? Buffers(ShmemSegment seg)
    {
        if (!BufferDescriptorView.TryOpen(seg, out BufferDescriptorView? view))
            return null;
        IReadOnlyList<BufferRow> rows = BufferInspection.Rows(view!);
        BufferSummary s = BufferInspection.Summarize(rows);
        bool clock = view!.TryReadClock(out int hand, out uint passes);
        return new BufferPoolJson(s.NumBuffers, BufferPool.BlockSize, s.Used, s.Unused, s.Dirty, s.Pinned, s.AverageUsageCount, [.. s.UsageCounts],
            clock ? hand + 1 : null, clock ? passes : null,
            [.. rows.Where(r => r.Tag is not null).Select(r => new BufferJson(r.Buffer, r.Tag!.Value.RelNumber, r.Tag.Value.Fork.ToString(), r.Tag.Value.BlockNumber,
                r.IsValid, r.IsDirty, r.UsageCount, r.PinCount))]);
    }

    private static LockManagerJson? Locks(ShmemSegment seg)
    {
        if (LockManager.TryOpenForInspection(seg) is not { } lm)
            return null;
        (long locks, long procLocks) = lm.Count;
        (int lockCap, int procLockCap) = lm.Capacity;
        (long checks, long hard, long soft) = lm.DeadlockStatistics;
        return new LockManagerJson(locks, lockCap, procLocks, procLockCap, lm.MaxLocksPerParticipant, checks, hard, soft,
            [.. Inspect.SortedLocks(lm).Select(r => new LockJson(r.Tag.TypeName, r.Tag.Field1, r.Tag.Field2, r.Tag.Field3, r.Tag.Field4, LockModes.NameOf(r.Mode),
                r.Granted, r.FastPath, r.Pid, r.ProcNumber, r.WaitStart is { } ws ? Utc(ws) : null))]);
    }
}
