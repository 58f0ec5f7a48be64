/*-------------------------------------------------------------------------
 * Inspect.cs
 *   pgipc inspect <handle> [--buffers] [--locks]: a live segment's header
 *   and allocations, and, when the segment holds a shared buffer pool, what
 *   is in it (pg_buffercache_summary; with --buffers, pg_buffercache's
 *   rows); the lock manager's counts (with --locks, pg_locks' rows).
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
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Cli;

internal static class Inspect
{
    public static int Run(string[] args)
    {
        bool buffers = false, locks = false;
        string? handle = null;
        foreach (string a in args)
        {
            if (a == "--buffers")
                buffers = true;
            else if (a == "--locks")
                locks = true;
            else if (handle is null && !a.StartsWith("--", StringComparison.Ordinal))
                handle = a;
            else
                throw new ArgumentException($"usage: pgipc inspect <handle> [--buffers] [--locks] (unexpected \"{a}\")");
        }
        if (handle is null)
            throw new ArgumentException("usage: pgipc inspect <handle> [--buffers] [--locks]");
        using ShmemSegment seg = ShmemSegment.Attach(handle);
        Print(seg, Console.Out, buffers, locks);
        return 0;
    }

    public static void Print(ShmemSegment seg, TextWriter w, bool buffers = false, bool locks = false)
    {
        ShmemSegmentInfo i = seg.GetInfo();
        w.WriteLine($"segment     {i.Id} ({i.Backend})");
        w.WriteLine($"cluster     {i.Key}");
        w.WriteLine($"layout      v{i.LayoutVersion}, state {i.State}");
        w.WriteLine($"creator     pid {i.CreatorPid}, created {i.CreatedAt:u}");
        w.WriteLine($"size        {i.TotalSize} bytes, {i.FreeOffset} used, huge pages {(i.HugePages ? "yes" : "no")}");
        w.WriteLine($"index       {i.IndexEntries} of {i.IndexCapacity} entries");
        w.WriteLine($"attached    {i.AttachedProcesses} process(es): {string.Join(", ", seg.AttachedPids())}");
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
        IReadOnlyList<Lmgr.LockStatus> all = lm.GetLockStatus();
        w.WriteLine($"{"locktype",-9} {"field1",10} {"field2",10} {"field3",10} {"field4",6} {"mode",-25} {"granted",-7} {"fastpath",-8} {"pid",7} {"procno",6} waitstart");
        foreach (Lmgr.LockStatus r in all.OrderBy(r => r.Tag.TypeName).ThenBy(r => r.Tag.Field1).ThenBy(r => r.Tag.Field2).ThenBy(r => r.Tag.Field3).ThenBy(r => !r.Granted))
        {
            w.WriteLine($"{r.Tag.TypeName,-9} {r.Tag.Field1,10} {r.Tag.Field2,10} {r.Tag.Field3,10} {r.Tag.Field4,6} {Lmgr.LockModes.NameOf(r.Mode),-25} " +
                        $"{(r.Granted ? "t" : "f"),-7} {(r.FastPath ? "t" : "f"),-8} {r.Pid,7} {r.ProcNumber,6} {(r.WaitStart is { } ws ? ws.ToString("u", CultureInfo.InvariantCulture) : "")}");
        }
        w.WriteLine($"({all.Count} rows)");
    }

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
}
