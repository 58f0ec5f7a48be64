/*-------------------------------------------------------------------------
 * WalHarness.cs
 *   The write-ahead log with several processes, against one process, in
 *   the same run:
 *
 *     dotnet run -c Release --project perf -- wal [--backend linux|posix] [--seconds 1] [--samples 3]
 *
 * NOTES
 *   The parent builds a real cluster (ClusterBuilder.WithWal over a
 *   temporary data directory, 16 MiB segments, 4 MiB of WAL buffers) and
 *   measures, in this order:
 *
 *   1. insert, one process: the parent alone inserts 100-byte records (main
 *      data only, no flush) in batches of 1024 for --seconds per sample;
 *   2. insert, two processes: the parent and one child ("wal-child insert")
 *      insert together, each in its own process, for the same time; the
 *      figure is both processes' records per second, beside (1); a line
 *      (not a report row) also gives the process CPU time per record of
 *      (1) and (2), which says how the insert scales when the machine has
 *      no free CPU for the second process;
 *   3. commit, 8 committers: four children ("wal-child commit") of two
 *      threads each loop insert + XLogFlush of a 100-byte record; the
 *      figures are their commits per second together and the fsyncs of WAL
 *      (WalStats.Fsyncs, cluster-wide) per commit: group commit gives fewer
 *      than one when committers overlap.
 *
 *   The parent first inserts 80 MiB and checkpoints (recycled segments
 *   ready: a running server's steady state).
 *   Inserts without a flush still write the buffers out when the ring is
 *   full (AdvanceXLInsertBuffer), as PostgreSQL's do. To keep the disk use
 *   bounded, the parent checkpoints (recycling the segments before the redo
 *   pointer) whenever 64 MiB of WAL were inserted since the last redo
 *   pointer, in its insert loop: its cost is in the figures, amortised.
 *
 *   Samples: each sample starts with a "go" line to every child's stdin
 *   and ends with the child's count on its stdout; a figure is the median
 *   [min..max] of the samples. The parent kills its children on any error
 *   and removes the data directory; the supervisor's Dispose destroys the
 *   segment. PGIPC_WALH_TRACE=1 prints the steps to stderr (to find where
 *   a run stalls: this harness found the checkpoint / full-buffer deadlock
 *   fixed in XLog.AcquireAllInsertLocks).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using PgIpc.Perf.Contention;
using PerfStats = PgIpc.Perf.Report.Stats;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Wal;

namespace PgIpc.Perf.Wal;

internal static class WalHarness
{
    public const string ParentVerb = "wal";
    public const string ChildVerb = "wal-child";
    private const byte RmId = 201;
    private const int Batch = 1024;
    private const long CheckpointEvery = 64L << 20;
    private const int Committers = 4, ThreadsPerCommitter = 2;

    /// <summary>The record type of the benchmarks: a resource manager that replays nothing.</summary>
    internal static void RegisterRmgr()
        => WalResourceManagers.Register(new WalResourceManager(RmId, "perf", (_, _) => { }, (_, _) => { }));

    /// <summary>Inserts 100-byte records for <paramref name="seconds"/>; with <paramref name="checkpoints"/>, bounds the WAL on disk.</summary>
    private static long InsertLoop(XLog wal, Participant me, double seconds, bool checkpoints)
    {
        ReadOnlySpan<byte> data = stackalloc byte[100];
        long n = 0;
        long end = Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < end)
        {
            for (int i = 0; i < Batch; i++)
            {
                WalRecordBuilder b = wal.BeginInsert();
                b.RegisterData(data);
                b.Insert(me, RmId, 0);
            }
            n += Batch;
            if (checkpoints && (n & (64 * Batch - 1)) == 0 && wal.InsertLsn - wal.RedoLsn > (ulong)CheckpointEvery)
                wal.Checkpoint(me);
        }
        return n;
    }

    /// <summary>Commits (insert + XLogFlush of a 100-byte record) for <paramref name="seconds"/>; returns the count.</summary>
    private static long CommitLoop(XLog wal, Participant me, double seconds, ref long late)
    {
        ReadOnlySpan<byte> data = stackalloc byte[100];
        long n = 0;
        long end = Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < end)
        {
            WalRecordBuilder b = wal.BeginInsert();
            b.RegisterData(data);
            ulong lsn = b.Insert(me, RmId, 0);
            wal.Flush(me, lsn);
            if (wal.FlushLsn < lsn)
                late++;
            n++;
        }
        return n;
    }

    public static int Run(string[] args)
    {
        string backend = Option(args, "--backend") ?? "linux";
        double seconds = double.Parse(Option(args, "--seconds") ?? "1", CultureInfo.InvariantCulture);
        int samples = int.Parse(Option(args, "--samples") ?? "3", CultureInfo.InvariantCulture);
        RegisterRmgr();
        string dir = Path.Combine(Path.GetTempPath(), $"pgipc-perf-walh-{Environment.ProcessId}");
        var children = new List<Process>();
        Supervisor? s = null;
        try
        {
            s = new ClusterBuilder($"perf-walh-{Environment.ProcessId}")
                .WithPlatform(PgIpcPlatform.Get(backend))
                .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 16, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
                .WithDataDirectory(dir)
                .WithLog(TextWriter.Null)
                .WithWal(new WalOptions { BufferBytes = 4 << 20, MaxWalSize = 1L << 30 })
                .Build();
            XLog wal = s.Cluster.Get<XLog>();
            Trace("built");
            using Participant me = s.Cluster.Procs.Join();
            // Warm-up to steady state: 80 MiB inserted, then a checkpoint recycles the segments before its redo
            // pointer, so the samples reuse segments instead of creating (zero-filling, fsyncing) new ones.
            while (wal.InsertLsn < 80UL << 20)
                InsertLoop(wal, me, 0.1, checkpoints: false);
            wal.Checkpoint(me);

            Trace("warm");
            var one = new double[samples];
            double cpuOne = 0, cpuTwo = 0, recOne = 0, recTwo = 0; // process CPU seconds and records, for CPU per record
            for (int k = 0; k < samples; k++)
            {
                TimeSpan c0 = Process.GetCurrentProcess().TotalProcessorTime;
                long r = InsertLoop(wal, me, seconds, checkpoints: true);
                cpuOne += (Process.GetCurrentProcess().TotalProcessorTime - c0).TotalSeconds;
                recOne += r;
                one[k] = r / seconds;
            }

            Trace("one done");
            Process inserter = StartChild(children, s.Handle, backend, "insert", seconds, 1);
            Trace("child ready");
            var two = new double[samples];
            for (int k = 0; k < samples; k++)
            {
                TimeSpan c0 = Process.GetCurrentProcess().TotalProcessorTime;
                Go(inserter);
                long mine = InsertLoop(wal, me, seconds, checkpoints: true);
                cpuTwo += (Process.GetCurrentProcess().TotalProcessorTime - c0).TotalSeconds;
                string[] f = ReadLine(inserter).Split(' '); // records, child's CPU seconds
                long theirs = long.Parse(f[0], CultureInfo.InvariantCulture);
                cpuTwo += double.Parse(f[1], CultureInfo.InvariantCulture);
                recTwo += mine + theirs;
                two[k] = (mine + theirs) / seconds;
            }
            inserter.StandardInput.Close();
            HarnessChild.WaitExit(inserter, "wal insert");
            wal.Checkpoint(me);

            Trace("two done");
            var committers = new List<Process>();
            for (int i = 0; i < Committers; i++)
                committers.Add(StartChild(children, s.Handle, backend, "commit", seconds, ThreadsPerCommitter));
            var rate = new double[samples];
            var perCommit = new double[samples];
            long lateTotal = 0;
            for (int k = 0; k < samples; k++)
            {
                long fsyncs0 = wal.Stats.Fsyncs;
                foreach (Process c in committers)
                    Go(c);
                long commits = 0;
                foreach (Process c in committers)
                {
                    string[] f = ReadLine(c).Split(' ');
                    commits += long.Parse(f[0], CultureInfo.InvariantCulture);
                    lateTotal += long.Parse(f[1], CultureInfo.InvariantCulture);
                }
                rate[k] = commits / seconds;
                perCommit[k] = (wal.Stats.Fsyncs - fsyncs0) / (double)Math.Max(1, commits);
            }
            foreach (Process c in committers)
            {
                c.StandardInput.Close();
                HarnessChild.WaitExit(c, "wal commit");
            }

            int n = Committers * ThreadsPerCommitter;
            Console.WriteLine($"wal {backend}: 100-byte records, {samples} samples of {seconds} s (load {HarnessChild.LoadAverage()}, {Environment.ProcessorCount} CPUs):");
            Console.WriteLine($"insert, one process                {Fig(one, 1e-6, "M rec/s")}   ({1e9 / PerfStats.Median(one):F0} ns a record)");
            Console.WriteLine($"insert, two processes              {Fig(two, 1e-6, "M rec/s")}   ({PerfStats.Median(two) / PerfStats.Median(one):F2}x one process)");
            double nsOne = cpuOne / recOne * 1e9, nsTwo = cpuTwo / recTwo * 1e9;
            Console.WriteLine($"CPU per record (process CPU time): one process {nsOne:F0} ns, two processes {nsTwo:F0} ns; with two free CPUs that is {2 * nsOne / nsTwo:F2}x");
            Console.WriteLine($"commit, {n} committers              {Fig(rate, 1e-3, "k commits/s")}   ({Committers} processes x {ThreadsPerCommitter} threads)");
            Console.WriteLine($"fsyncs per commit, {n} committers   {Fig(perCommit, 1, "fsyncs/commit")}");
            Console.WriteLine($"commits that returned before their LSN was flushed: {lateTotal}");
            return lateTotal == 0 ? 0 : 1;
        }
        finally
        {
            foreach (Process c in children)
                HarnessChild.KillIfRunning(c);
            s?.Shutdown(ShutdownMode.Immediate, TimeSpan.FromSeconds(5));
            s?.Dispose();
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static void Trace(string what)
    {
        if (Environment.GetEnvironmentVariable("PGIPC_WALH_TRACE") is not null)
            Console.Error.WriteLine($"wal harness {Environment.ProcessId}: {what} at {DateTime.UtcNow:HH:mm:ss.fff}");
    }

    private static string Fig(double[] v, double scale, string unit)
        => string.Create(CultureInfo.InvariantCulture, $"{PerfStats.Median(v) * scale,9:F3} {unit} [{v.Min() * scale:F3}..{v.Max() * scale:F3}]");

    private static Process StartChild(List<Process> children, string handle, string backend, string mode, double seconds, int threads)
    {
        ProcessStartInfo start = ThisProgram.StartInfo(ChildVerb, handle, backend, mode, seconds.ToString(CultureInfo.InvariantCulture),
            threads.ToString(CultureInfo.InvariantCulture));
        start.RedirectStandardInput = true;
        start.RedirectStandardOutput = true;
        Process child = Process.Start(start) ?? throw new InvalidOperationException("could not start a wal child");
        children.Add(child);
        if (ReadLine(child) != "ready")
            throw new InvalidOperationException("a wal child did not get ready");
        return child;
    }

    private static void Go(Process child)
    {
        child.StandardInput.WriteLine("go");
        child.StandardInput.Flush();
    }

    private static string ReadLine(Process child)
        => child.StandardOutput.ReadLine() ?? throw new InvalidOperationException($"wal child {child.Id} ended early");

    /// <summary>wal-child &lt;handle&gt; &lt;backend&gt; insert|commit &lt;seconds&gt; &lt;threads&gt;: a sample per "go" line until stdin ends.</summary>
    public static int Child(string[] args)
    {
        RegisterRmgr();
        using Cluster c = Cluster.Attach(args[0]);
        XLog wal = c.Get<XLog>();
        Trace("child attached");
        bool commit = args[2] == "commit";
        double seconds = double.Parse(args[3], CultureInfo.InvariantCulture);
        int threads = int.Parse(args[4], CultureInfo.InvariantCulture);
        using Participant me = c.Procs.Join(); // the inserter's, on this thread
        {
            if (!commit)
                InsertLoop(wal, me, 0.2, checkpoints: false); // warm-up
            Console.WriteLine("ready");
            while (Console.ReadLine() == "go")
            {
                long total = 0, late = 0;
                if (commit)
                {
                    var counts = new long[threads];
                    var lates = new long[threads];
                    var ts = new Thread[threads];
                    for (int t = 0; t < threads; t++)
                    {
                        int i = t;
                        ts[t] = new Thread(() =>
                        {
                            using Participant p = c.Procs.Join();
                            counts[i] = CommitLoop(wal, p, seconds, ref lates[i]);
                        });
                        ts[t].Start();
                    }
                    foreach (Thread t in ts)
                        t.Join();
                    total = counts.Sum();
                    late = lates.Sum();
                }
                else
                {
                    TimeSpan c0 = Process.GetCurrentProcess().TotalProcessorTime;
                    total = InsertLoop(wal, me, seconds, checkpoints: false);
                    late = (long)((Process.GetCurrentProcess().TotalProcessorTime - c0).TotalSeconds * 1e6); // CPU microseconds
                }
                Console.WriteLine(commit ? $"{total} {late}" : string.Create(CultureInfo.InvariantCulture, $"{total} {late / 1e6}"));
            }
            return 0;
        }
    }

    private static string? Option(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
