/*-------------------------------------------------------------------------
 * LockManagerHarness.cs
 *   Two processes taking and releasing heavyweight locks on distinct
 *   objects of the same partition, against one process alone:
 *
 *     dotnet run -c Release --project perf -- lmgr [--backend linux|posix] [--seconds 2] [--mode Exclusive]
 *
 * NOTES
 *   The parent makes a segment with the lock manager (PerfLmgrCluster) and
 *   picks object tags whose hash falls in partition 0; first it alone loops
 *   Acquire + Release on its tag for --seconds (one process), then it starts
 *   this program again as "lmgr-child" with the segment's handle, and both
 *   loop on their own tags at once (two processes): the objects never
 *   conflict, but both processes take the same partition LWLock and touch
 *   the same hash partition, as two backends locking different tables of
 *   one partition do. The figure is the operations of both per second,
 *   against the one-process figure.
 *
 *   Handshake over the child's stdin/stdout: the child prints "ready", the
 *   parent writes "go", the child prints its count after --seconds. The
 *   parent kills the child on any error and destroys the segment.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using PgIpc.Lmgr;
using PgIpc.Perf.Contention;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Perf.Lmgr;

internal static class LockManagerHarness
{
    public const string ParentVerb = "lmgr";
    public const string ChildVerb = "lmgr-child";

    /// <summary>The first object tags (class 9, ids from <paramref name="from"/>) whose hash is in partition 0.</summary>
    private static LockTag TagInPartitionZero(uint from)
    {
        for (uint id = from; ; id++)
        {
            LockTag t = LockTag.Object(1, 9, id);
            if ((LockTag.HashOf(in t) & (LockManager.NumPartitions - 1)) == 0)
                return t;
        }
    }

    private static long Loop(LockManager lm, Participant me, LockTag tag, LockMode mode, double seconds)
    {
        long ops = 0;
        long end = Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < end)
        {
            for (int i = 0; i < 256; i++)
            {
                lm.Acquire(me, tag, mode);
                lm.Release(me, tag, mode);
            }
            ops += 256;
        }
        return ops;
    }

    public static int Run(string[] args)
    {
        string backend = Option(args, "--backend") ?? "linux";
        double seconds = double.Parse(Option(args, "--seconds") ?? "2", CultureInfo.InvariantCulture);
        LockMode mode = Enum.Parse<LockMode>(Option(args, "--mode") ?? "Exclusive");
        PerfLmgrCluster cluster = PerfLmgrCluster.Create("lmgr-harness", backend);
        Process? child = null;
        try
        {
            LockTag mine = TagInPartitionZero(1);
            LockTag theirs = TagInPartitionZero(mine.Field3 + 1);
            long alone;
            using (Participant me = cluster.Procs.Join())
            {
                Loop(cluster.Locks, me, mine, mode, 0.2); // warm-up
                alone = Loop(cluster.Locks, me, mine, mode, seconds);
            }
            ProcessStartInfo start = PgIpc.Postmaster.ThisProgram.StartInfo(ChildVerb, cluster.Segment.Handle.ToString(), backend,
                theirs.Field3.ToString(CultureInfo.InvariantCulture), mode.ToString(), seconds.ToString(CultureInfo.InvariantCulture));
            start.RedirectStandardInput = true;
            start.RedirectStandardOutput = true;
            child = Process.Start(start) ?? throw new InvalidOperationException("could not start the child");
            if (child.StandardOutput.ReadLine() != "ready")
                throw new InvalidOperationException("the child did not get ready");
            long together;
            using (Participant me = cluster.Procs.Join())
            {
                child.StandardInput.WriteLine("go");
                child.StandardInput.Flush();
                together = Loop(cluster.Locks, me, mine, mode, seconds);
            }
            string? line = child.StandardOutput.ReadLine();
            long childOps = long.Parse(line ?? throw new InvalidOperationException("the child ended without its count"), CultureInfo.InvariantCulture);
            HarnessChild.WaitExit(child, "lmgr");
            double one = alone / seconds, two = (together + childOps) / seconds;
            Console.WriteLine($"lmgr {backend} {LockModes.NameOf(mode)} on distinct objects of partition 0, {seconds} s each (load {HarnessChild.LoadAverage()}):");
            Console.WriteLine($"  one process   {one / 1e6,8:F2} M acquire+release/s");
            Console.WriteLine($"  two processes {two / 1e6,8:F2} M acquire+release/s together (parent {together / seconds / 1e6:F2} M, child {childOps / seconds / 1e6:F2} M): {two / one:F2}x one process");
            Console.WriteLine($"  lock table left: {cluster.Locks.Count}");
            return 0;
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
            cluster.Close();
        }
    }

    public static int Child(string[] args)
    {
        var handle = ShmemHandle.Parse(args[0]);
        using ShmemSegment seg = ShmemSegment.Attach(handle, PgIpc.Platform.PgIpcPlatform.Get(args[1]));
        LockTag tag = LockTag.Object(1, 9, uint.Parse(args[2], CultureInfo.InvariantCulture));
        LockMode mode = Enum.Parse<LockMode>(args[3]);
        double seconds = double.Parse(args[4], CultureInfo.InvariantCulture);
        PerfLmgrCluster cluster = PerfLmgrCluster.Attach(seg);
        using Participant me = cluster.Procs.Join();
        Loop(cluster.Locks, me, tag, mode, 0.2); // warm-up
        Console.WriteLine("ready");
        if (Console.ReadLine() != "go")
            return 2;
        long ops = Loop(cluster.Locks, me, tag, mode, seconds);
        Console.WriteLine(ops.ToString(CultureInfo.InvariantCulture));
        return 0;
    }

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
