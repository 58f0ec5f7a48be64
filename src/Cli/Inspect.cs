/*-------------------------------------------------------------------------
 * Inspect.cs
 *   pgipc inspect <handle>: a live segment's header and allocations.
 *-------------------------------------------------------------------------
 */
using PgIpc.Shmem;

namespace PgIpc.Cli;

internal static class Inspect
{
    public static int Run(string[] args)
    {
        if (args.Length != 1)
            throw new ArgumentException("usage: pgipc inspect <handle>");
        using ShmemSegment seg = ShmemSegment.Attach(args[0]);
        Print(seg, Console.Out);
        return 0;
    }

    public static void Print(ShmemSegment seg, TextWriter w)
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
}
