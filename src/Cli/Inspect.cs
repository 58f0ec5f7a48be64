/*-------------------------------------------------------------------------
 * Inspect.cs
 *   pgipc inspect <handle> as text (InspectCommand.cs: the options): a live
 *   segment's header and allocations, its participants, and, when the
 *   segment holds them, the shared buffer pool (pg_buffercache_summary;
 *   with --buffers, pg_buffercache's rows) and the lock manager's counts
 *   (with --locks, pg_locks' rows); --procs shows the participants as
 *   pg_stat_activity (role, wait event, held LWLocks by name), --dsm the
 *   cluster's dynamic shared memory segments, --activity what each
 *   participant reports (pg_stat_activity), --stats the background
 *   writer's and checkpointer's counters (pg_stat_bgwriter,
 *   pg_stat_checkpointer).
 *
 * NOTES
 *   The buffer pool is found by name in the ShmemIndex and read through a
 *   read-only descriptor view, without locks and without joining the
 *   ProcArray: inspecting a pool never pins, locks or changes it. The lock
 *   tables are read the same way (LockManager.GetLockStatus without a
 *   participant: no LWLock is taken, the snapshot may be torn).
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Buffers;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Cli;

internal static class Inspect
{
    /// <summary>The header, then each view asked for, in full.</summary>
    public static void PrintViews(ShmemSegment seg, TextWriter w, InspectViews views)
    {
        PrintHeader(seg, w);
        if (views.Procs)
        {
            w.WriteLine();
            PrintProcs(seg, w);
        }
        if (views.Allocations)
        {
            w.WriteLine();
            PrintAllocations(seg, w);
        }
        if (views.Buffers)
        {
            w.WriteLine();
            if (BufferDescriptorView.TryOpen(seg, out BufferDescriptorView? view))
                PrintBufferPool(view!, w, rows: true);
            else
                w.WriteLine($"no buffer pool in this segment (no \"{BufferPool.DescriptorsName}\" in its index)");
        }
        if (views.Locks)
        {
            w.WriteLine();
            if (Lmgr.LockManager.TryOpenForInspection(seg) is { } lm)
                PrintLocks(lm, w, rows: true);
            else
                w.WriteLine("no lock manager in this segment");
        }
        if (views.Dsm)
        {
            w.WriteLine();
            PrintDsm(seg, w);
        }
        if (views.Activity)
        {
            w.WriteLine();
            PrintActivity(seg, w);
        }
        if (views.Stats)
        {
            w.WriteLine();
            PrintStats(seg, w);
        }
    }

    /// <summary>pg_stat_activity: every participant's state, since when, wait event, backend type and detail.</summary>
    public static void PrintActivity(ShmemSegment seg, TextWriter w)
    {
        if (!Stats.SharedStats.TryOpen(seg, out Stats.SharedStats? stats))
        {
            w.WriteLine("no shared statistics in this segment");
            return;
        }
        IReadOnlyList<Stats.PgStatActivity> rows = stats!.Activity();
        w.WriteLine($"{"procno",6} {"pid",8} {"backend type",-20} {"state",-20} {"state change",-28} {"wait type",-10} {"wait event",-22} detail");
        foreach (Stats.PgStatActivity a in rows)
            w.WriteLine($"{a.ProcNumber,6} {a.Pid,8} {a.BackendType,-20} {a.StateName,-20} {a.StateChange.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture),-28} " +
                        $"{a.WaitEventType,-10} {a.WaitEventName,-22} {a.Detail}");
        w.WriteLine($"({rows.Count} rows)");
    }

    /// <summary>pg_stat_bgwriter and pg_stat_checkpointer.</summary>
    public static void PrintStats(ShmemSegment seg, TextWriter w)
    {
        if (!Stats.SharedStats.TryOpen(seg, out Stats.SharedStats? stats))
        {
            w.WriteLine("no shared statistics in this segment");
            return;
        }
        Stats.PgStatBgWriter b = stats!.BgWriter();
        Stats.PgStatCheckpointer c = stats.Checkpointer();
        w.WriteLine($"bgwriter     buffers_clean {b.BuffersClean}, maxwritten_clean {b.MaxWrittenClean}, buffers_alloc {b.BuffersAlloc}, rounds {b.Rounds}, stats_reset {b.StatsReset:u}");
        w.WriteLine($"checkpointer num_timed {c.NumTimed}, num_requested {c.NumRequested}, num_done {c.NumDone}, " +
                    $"write_time {c.WriteTimeMs.ToString("F3", CultureInfo.InvariantCulture)} ms, sync_time {c.SyncTimeMs.ToString("F3", CultureInfo.InvariantCulture)} ms, " +
                    $"buffers_written {c.BuffersWritten}, files_synced {c.FilesSynced}, stats_reset {c.StatsReset:u}");
    }

    private static void PrintHeader(ShmemSegment seg, TextWriter w)
    {
        ShmemSegmentInfo i = seg.GetInfo();
        w.WriteLine($"segment     {i.Id} ({i.Backend})");
        w.WriteLine($"cluster     {i.Key}");
        w.WriteLine($"layout      v{i.LayoutVersion}, state {i.State}");
        w.WriteLine($"creator     pid {i.CreatorPid}, created {i.CreatedAt:u}");
        w.WriteLine($"size        {i.TotalSize} bytes, {i.FreeOffset} used, huge pages {(i.HugePages ? "yes" : "no")}, page size {SharedMemoryOptions.FormatSize(i.PageSize)}");
        w.WriteLine($"index       {i.IndexEntries} of {i.IndexCapacity} entries");
        w.WriteLine($"attached    {i.AttachedProcesses} process(es): {string.Join(", ", seg.AttachedPids())}");
    }

    /// <summary>The whole summary (pgipc inspect without view options).</summary>
    public static void Print(ShmemSegment seg, TextWriter w, bool buffers = false, bool locks = false)
    {
        PrintHeader(seg, w);
        w.WriteLine();
        PrintAllocations(seg, w);
        w.WriteLine();
        PrintParticipants(seg, w);
        if (BufferDescriptorView.TryOpen(seg, out BufferDescriptorView? view))
        {
            w.WriteLine();
            PrintBufferPool(view!, w, buffers);
        }
        else if (buffers)
        {
            w.WriteLine();
            w.WriteLine($"no buffer pool in this segment (no \"{BufferPool.DescriptorsName}\" in its index)");
        }
        if (Lmgr.LockManager.TryOpenForInspection(seg) is { } lm)
        {
            w.WriteLine();
            PrintLocks(lm, w, locks);
        }
        else if (locks)
        {
            w.WriteLine();
            w.WriteLine("no lock manager in this segment");
        }
    }

    /// <summary>The lock manager's counts and, with <paramref name="rows"/>, pg_locks (read without locks).</summary>
    public static void PrintLocks(Lmgr.LockManager lm, TextWriter w, bool rows)
    {
        (long locks, long procLocks) = lm.Count;
        (int lockCap, int procLockCap) = lm.Capacity;
        (long checks, long hard, long soft) = lm.DeadlockStatistics;
        w.WriteLine($"lock manager {locks} of {lockCap} locks, {procLocks} of {procLockCap} proclocks ({lm.MaxLocksPerParticipant} per participant); " +
                    $"deadlock checks {checks}, deadlocks {hard}, queues rearranged {soft}");
        if (!rows)
            return;
        IReadOnlyList<Lmgr.LockStatus> all = SortedLocks(lm);
        w.WriteLine($"{"locktype",-9} {"field1",10} {"field2",10} {"field3",10} {"field4",6} {"mode",-25} {"granted",-7} {"fastpath",-8} {"pid",7} {"procno",6} waitstart");
        foreach (Lmgr.LockStatus r in all)
        {
            w.WriteLine($"{r.Tag.TypeName,-9} {r.Tag.Field1,10} {r.Tag.Field2,10} {r.Tag.Field3,10} {r.Tag.Field4,6} {Lmgr.LockModes.NameOf(r.Mode),-25} " +
                        $"{(r.Granted ? "t" : "f"),-7} {(r.FastPath ? "t" : "f"),-8} {r.Pid,7} {r.ProcNumber,6} {(r.WaitStart is { } ws ? ws.ToString("u", CultureInfo.InvariantCulture) : "")}");
        }
        w.WriteLine($"({all.Count} rows)");
    }

    /// <summary>pg_locks' rows in a stable order (lock type, fields, granted first).</summary>
    public static List<Lmgr.LockStatus> SortedLocks(Lmgr.LockManager lm)
        => [.. lm.GetLockStatus().OrderBy(r => r.Tag.TypeName, StringComparer.Ordinal).ThenBy(r => r.Tag.Field1).ThenBy(r => r.Tag.Field2)
            .ThenBy(r => r.Tag.Field3).ThenBy(r => r.Tag.Field4).ThenBy(r => !r.Granted).ThenBy(r => r.ProcNumber)];

    public static void PrintAllocations(ShmemSegment seg, TextWriter w)
    {
        w.WriteLine($"{"name",-32} {"offset",12} {"size",12} {"allocated",12}");
        foreach (ShmemAllocation a in seg.GetAllocations())
        {
            string name = a.Name ?? "<free>";
            string off = a.Offset < 0 ? "" : a.Offset.ToString();
            w.WriteLine($"{name,-32} {off,12} {a.Size,12} {a.AllocatedSize,12}");
        }
    }

    /// <summary>The participant slots in use and what each waits for (pg_stat_activity's pid, wait_event_type, wait_event).</summary>
    public static void PrintParticipants(ShmemSegment seg, TextWriter w)
    {
        IReadOnlyList<PgProcInfo> procs;
        try
        {
            if (!ProcArray.TryReadProcs(seg, out procs))
            {
                w.WriteLine("participants: none (the segment has no participant slots)");
                return;
            }
        }
        catch (PgIpcException e)
        {
            w.WriteLine($"participants: cannot open the slot array ({e.Message})");
            return;
        }
        w.WriteLine($"{"procno",6} {"pid",8} {"kind",-16} {"wait type",-10} {"wait event",-22} {"lwlocks",7}");
        foreach (PgProcInfo p in procs)
        {
            // An LWLock sleep is shown by LwWaiting (LWLock waits set no wait event here).
            bool lw = p.LwWaiting != LWLockWaitState.NotWaiting;
            string type = lw ? "LWLock" : WaitEventRegistry.ClassNameOf(p.WaitEvent);
            string name = lw ? "" : WaitEventRegistry.NameOf(p.WaitEvent);
            w.WriteLine($"{p.ProcNumber,6} {p.Pid,8} {p.Kind,-16} {type,-10} {name,-22} {p.HeldLWLocks,7}");
        }
    }

    /// <summary>The pool's summary (and with <paramref name="rows"/> one line per buffer that holds a page), read without locks.</summary>
    public static void PrintBufferPool(BufferDescriptorView view, TextWriter w, bool rows)
    {
        // With rows, the summary is computed from the rows printed, so the two agree.
        IReadOnlyList<BufferRow>? all = rows ? BufferInspection.Rows(view) : null;
        BufferSummary s = all is null ? BufferInspection.Summarize(view) : BufferInspection.Summarize(all);
        w.WriteLine($"buffer pool {s.NumBuffers} buffers of {BufferPool.BlockSize} bytes: {s.Used} used, {s.Unused} unused, " +
                    $"{s.Dirty} dirty, {s.Pinned} pinned, average usage count {s.AverageUsageCount.ToString("F2", CultureInfo.InvariantCulture)}");
        w.WriteLine($"usage count {string.Join(", ", s.UsageCounts.Select((n, u) => $"{u}: {n}"))}");
        if (view.TryReadClock(out int hand, out uint passes))
            w.WriteLine($"clock hand  at buffer {hand + 1}, {passes} complete passes");
        if (all is null)
            return;
        w.WriteLine();
        w.WriteLine($"{"buffer",8} {"relation",10} {"fork",-13} {"block",10} {"valid",5} {"dirty",5} {"usage",5} {"pins",5}");
        int empty = 0;
        foreach (BufferRow r in all)
        {
            if (r.Tag is not { } t)
            {
                empty++;
                continue;
            }
            w.WriteLine($"{r.Buffer,8} {t.RelNumber,10} {t.Fork,-13} {t.BlockNumber,10} {(r.IsValid ? "t" : "f"),5} {(r.IsDirty ? "t" : "f"),5} {r.UsageCount,5} {r.PinCount,5}");
        }
        if (empty > 0)
            w.WriteLine($"({empty} buffers hold no page and are not shown)");
    }

    /// <summary>One participant as pg_stat_activity shows it.</summary>
    internal sealed record ProcRow(PgProcInfo Info, string Role, string? WaitEventType, string? WaitEvent, IReadOnlyList<string> HeldLWLocks);

    /// <summary>
    /// The participants with their role (the registered child's name; "supervisor" for the segment's creator; else
    /// the kind), wait event by name and held LWLocks by name. Empty when the segment has no participant slots.
    /// </summary>
    public static List<ProcRow> ReadProcs(ShmemSegment seg)
    {
        if (!ProcArray.TryReadProcs(seg, out IReadOnlyList<PgProcInfo> procs))
            return [];
        Dictionary<int, string> names = [];
        if (Postmaster.BackgroundWorkerArray.TryReadWorkers(seg, out IReadOnlyList<Postmaster.BackgroundWorkerInfo> workers))
            foreach (Postmaster.BackgroundWorkerInfo bw in workers)
                if (bw.Pid != 0)
                    names[bw.Pid] = bw.Name;
        int creator = seg.GetInfo().CreatorPid;
        List<ProcRow> rows = [];
        foreach (PgProcInfo p in procs)
        {
            string role = names.TryGetValue(p.Pid, out string? n) ? n
                : p.Pid == creator ? "supervisor"
                : p.Kind switch { ProcKind.Backend => "backend", ProcKind.Auxiliary => "auxiliary process", _ => "background worker" };
            // An LWLock sleep is shown by LwWaiting (LWLock waits set no wait event here).
            bool lw = p.LwWaiting != LWLockWaitState.NotWaiting;
            string? type = lw ? "LWLock" : p.WaitEvent == WaitEventId.None ? null : WaitEventRegistry.ClassNameOf(p.WaitEvent);
            string? name = lw ? null : p.WaitEvent == WaitEventId.None ? null : WaitEventRegistry.NameOf(p.WaitEvent);
            rows.Add(new ProcRow(p, role, type, name, ProcArray.ReadHeldLWLocks(seg, p.ProcNumber)));
        }
        return rows;
    }

    /// <summary>pg_stat_activity's shape: pid, kind, role, wait event, held LWLocks.</summary>
    public static void PrintProcs(ShmemSegment seg, TextWriter w)
    {
        List<ProcRow> rows;
        try
        {
            rows = ReadProcs(seg);
        }
        catch (PgIpcException e)
        {
            w.WriteLine($"participants: cannot open the slot array ({e.Message})");
            return;
        }
        w.WriteLine($"{"procno",6} {"pid",8} {"kind",-16} {"role",-22} {"wait type",-10} {"wait event",-22} held lwlocks");
        foreach (ProcRow r in rows)
            w.WriteLine($"{r.Info.ProcNumber,6} {r.Info.Pid,8} {r.Info.Kind,-16} {r.Role,-22} {r.WaitEventType,-10} {r.WaitEvent,-22} {string.Join(", ", r.HeldLWLocks)}");
        w.WriteLine($"({rows.Count} rows)");
    }

    /// <summary>The DSM control table's segments in use.</summary>
    public static void PrintDsm(ShmemSegment seg, TextWriter w)
    {
        if (!Dsm.DsmRegistry.TryReadSegments(seg, out IReadOnlyList<Dsm.DsmSegmentInfo> all))
        {
            w.WriteLine("no dynamic shared memory control table in this segment");
            return;
        }
        w.WriteLine($"{"handle",10} {"refcnt",6} {"size",12} {"implementation",-14} {"pinned",6} os name");
        foreach (Dsm.DsmSegmentInfo d in all)
            w.WriteLine($"{d.Handle,10} {d.ReferenceCount,6} {d.Size,12} {d.Implementation,-14} {(d.Pinned ? "t" : "f"),6} {d.OsName}");
        w.WriteLine($"({all.Count} rows)");
    }
}
