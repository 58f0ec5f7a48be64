/*-------------------------------------------------------------------------
 * ScaleHarness.cs
 *   Scale curves for the report: LWLock exclusive and shared, ReadBuffer
 *   hit and shm_mq pairs with 1, 2, 4 and 8 workers, as processes (this
 *   program again, verb "scale-child") and as threads of one process.
 *
 * NOTES
 *   One segment per (backend, mode): a ProcArray of 20 backend slots, one
 *   LWLock, a buffer pool of 1024 buffers over 8 x 64 resident pages, 8
 *   shm_mq queues (64 KiB rings) and a control block. 16 workers start
 *   once (processes or threads), join, and attach queue w / 2 (even w
 *   sends, odd w receives); then for each kind and N the leader publishes a
 *   generation with the kind and the number of active workers, sleeps the
 *   sample, publishes Stop, and sums what the active workers counted. The
 *   inactive ones sleep. Before the samples, every kind runs once with all
 *   workers active (a warm-up, not recorded: no sample runs tier-0 code).
 *     lwlock-x   Acquire(Exclusive), counter++, Release; N workers
 *     lwlock-s   Acquire(Shared), read the counter, Release; N workers
 *     bufhit     ReadBuffer + ReleaseBuffer cycling over the worker's own 64
 *                resident pages; N workers
 *     mq         N pairs (2N workers): the sender sends 1 KiB messages with
 *                forceFlush false, at Stop a 0-byte message; the receiver
 *                counts. The library's default spin.
 *   Fairness: for lwlock-x the share of the acquisitions each worker made,
 *   reported as the smallest and largest share against an equal 1/N.
 *
 *   Control block (longs; the leader writes words 0-3, worker w writes its
 *   own cache line at 64 + 64 w): 0 generation (-1: leave), 1 kind,
 *   2 active workers, 3 stop generation; per worker 0 count, 1 done
 *   generation, 2 ready, 3 proc number. Idle workers sleep on their latch;
 *   the leader sets every worker's latch after each new generation. Release stores pair with acquire loads.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using PgIpc.Buffers;
using PgIpc.Latch;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Perf.Contention;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sync;

namespace PgIpc.Perf.Report;

internal static unsafe class ScaleHarness
{
    public const string ChildVerb = "scale-child";
    public const int MaxWorkers = 16;
    public static readonly int[] Counts = [1, 2, 4, 8];
    public static readonly string[] Kinds = ["lwlock-x", "lwlock-s", "bufhit", "mq"];
    private const string ControlName = "perf.scale.control";
    private const string TrancheName = "perf.scale.locks";
    private const int ControlBytes = 64 + 64 * MaxWorkers;
    private const int PagesPerWorker = 64;
    private const long RingSize = 65536;
    private static readonly ProcArrayOptions s_options = new(MaxBackends: 20, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);

    private static string QueueName(int p) => $"perf.scale.q{p}";

    private static BufferPoolOptions PoolOptions(string dataDir) => new(1024, dataDir);

    private sealed class Cluster
    {
        public required ShmemSegment Segment;
        public required ProcArray Procs;
        public required BufferPool Pool;
        public required long* Control;
        public required LWLock* Lock;

        public long* Line(int w) => Control + 8 + 8 * w;
    }

    private static Cluster Open(ShmemSegment segment, ProcArray procs, BufferPool pool)
    {
        if (!segment.TryFindStruct(ControlName, out ShmemRegion r))
            throw new InvalidOperationException($"segment {segment.Handle} has no {ControlName}");
        LWLockArray locks = LWLockTranches.GetNamedLWLockTranche(segment, TrancheName);
        LWLock* l;
        fixed (LWLock* p = &locks[0])
            l = p; // in shared memory: stays valid while mapped
        return new Cluster { Segment = segment, Procs = procs, Pool = pool, Control = (long*)r.Pointer, Lock = l };
    }

    /// <summary>Every kind at every count, in <paramref name="mode"/> ("processes" or "threads"); records scale.* figures.</summary>
    public static void Run(string backend, string mode, double sampleSeconds, ReportData data, int round)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), $"pgipc-perf-scale-{Environment.ProcessId}-{backend}-{mode}");
        var tranches = new LWLockTrancheRequests().RequestNamedLWLockTranche(TrancheName, 1);
        long qsize = ShmMq.SizeFor(RingSize);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(s_options))
            .RequestAddinShmemSpace(ProcSignal.ShmemName, ProcSignal.ShmemSize(s_options.TotalProcs))
            .RequestAddinShmemSpace(LWLockTranches.ShmemName, LWLockTranches.ShmemSize(tranches))
            .RequestAddinShmemSpace("PgIpc.BufferPool", BufferPool.ShmemSize(PoolOptions(dataDir)))
            .RequestAddinShmemSpace(ControlName, ControlBytes);
        for (int p = 0; p < MaxWorkers / 2; p++)
            sizes.RequestAddinShmemSpace(QueueName(p), qsize);
        ShmemSegment? segment = PerfSegments.Create($"scale-{mode}", backend, sizes);
        var children = new List<Process>();
        var threads = new List<Thread>();
        Exception? threadError = null;
        BufferPool? pool = null;
        Cluster? c = null;
        try
        {
            ProcArray procs = ProcArray.Init(segment, s_options, out _);
            ProcSignal.Init(segment, procs, out _);
            LWLockTranches.Init(segment, tranches, out _);
            segment.InitStruct(ControlName, ControlBytes, out _);
            for (int p = 0; p < MaxWorkers / 2; p++)
                ShmMq.Create(segment.InitStruct(QueueName(p), qsize, out _));
            pool = BufferPool.Init(segment, procs, PoolOptions(dataDir), out _);
            using (Participant me = procs.Join())
            {
                for (int i = 0; i < 8 * PagesPerWorker + 1; i++)
                    pool.ReleaseBuffer(me, pool.ReadBuffer(me, 1, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend));
            }
            c = Open(segment, procs, pool);
            Cluster cluster = c;
            for (int w = 0; w < MaxWorkers; w++)
            {
                if (mode == "processes")
                {
                    children.Add(HarnessChild.Start(ChildVerb, segment.Handle.ToString(), w.ToString(CultureInfo.InvariantCulture), dataDir));
                }
                else
                {
                    int index = w;
                    var t = new Thread(() =>
                    {
                        try
                        {
                            Worker(cluster, index);
                        }
                        catch (Exception e)
                        {
                            threadError ??= e;
                            Volatile.Write(ref cluster.Line(index)[2], -1);
                        }
                    }) { IsBackground = true, Name = $"scale worker {w}" };
                    t.Start();
                    threads.Add(t);
                }
            }
            for (int w = 0; w < MaxWorkers; w++)
            {
                long deadline = Stopwatch.GetTimestamp() + 60 * Stopwatch.Frequency;
                while (Volatile.Read(ref c.Line(w)[2]) != 1)
                {
                    if (threadError is not null)
                        throw new InvalidOperationException($"scale worker {w} failed", threadError);
                    if (children.Count > w && children[w].HasExited)
                        throw new InvalidOperationException($"scale child {w} exited with {children[w].ExitCode} before it was ready");
                    if (Stopwatch.GetTimestamp() > deadline)
                        throw new TimeoutException($"scale worker {w} not ready within 60 s");
                    Thread.Sleep(1);
                }
            }
            long generation = 0;
            // Warm-up: every kind once with every worker active (not recorded), so no measured sample runs a
            // worker's loop still in tier-0 code, in a child process as in a thread.
            foreach (string kind in Kinds)
                Sample(c, children, () => threadError, kind, kind == "mq" ? MaxWorkers : Counts[^1], ++generation, 0.05);
            foreach (string kind in Kinds)
            {
                foreach (int n in Counts)
                {
                    double seconds = Sample(c, children, () => threadError, kind, kind == "mq" ? 2 * n : n, ++generation, sampleSeconds);
                    var counts = new long[n];
                    for (int i = 0; i < n; i++)
                        counts[i] = c.Line(kind == "mq" ? 2 * i + 1 : i)[0];
                    long total = counts.Sum();
                    string id = $"scale.{backend}.{mode}.{kind}.{n}";
                    data.Add(id, round, total / seconds / 1e6, kind == "mq" ? "M msg/s" : "Mops/s", true);
                    if (kind == "lwlock-x" && n > 1 && total > 0)
                    {
                        data.Add($"{id}.minshare", round, counts.Min() * (double)n / total, "x fair", true);
                        data.Add($"{id}.maxshare", round, counts.Max() * (double)n / total, "x fair", false);
                    }
                }
            }
            Volatile.Write(ref c.Control[0], -1);
            WakeAll(c);
            foreach (Process p in children)
                HarnessChild.WaitExit(p, "scale");
            foreach (Thread t in threads)
                t.Join(TimeSpan.FromSeconds(10));
            if (threadError is not null)
                throw new InvalidOperationException("a scale worker thread failed", threadError);
        }
        finally
        {
            if (c is not null)
            {
                Volatile.Write(ref c.Control[0], -1);
                WakeAll(c);
            }
            foreach (Process p in children)
                HarnessChild.KillIfRunning(p);
            foreach (Thread t in threads)
                t.Join(TimeSpan.FromSeconds(10));
            pool?.Dispose();
            PerfSegments.Destroy(ref segment);
            if (Directory.Exists(dataDir))
                Directory.Delete(dataDir, recursive: true);
        }
    }

    /// <summary>One sample: publishes the generation with <paramref name="active"/> workers of <paramref name="kind"/>, sleeps, stops them; returns its length in seconds.</summary>
    private static double Sample(Cluster c, List<Process> children, Func<Exception?> threadError, string kind, int active, long generation, double sampleSeconds)
    {
        c.Control[1] = Array.IndexOf(Kinds, kind);
        c.Control[2] = active;
        long t0 = Stopwatch.GetTimestamp();
        Volatile.Write(ref c.Control[0], generation); // release: pairs with the workers' acquire read of the generation
        WakeAll(c);
        Thread.Sleep(TimeSpan.FromSeconds(sampleSeconds));
        Volatile.Write(ref c.Control[3], generation);
        long deadline = Stopwatch.GetTimestamp() + 30 * Stopwatch.Frequency;
        for (int w = 0; w < active; w++)
        {
            while (Volatile.Read(ref c.Line(w)[1]) != generation)
            {
                if (threadError() is not null || (children.Count > w && children[w].HasExited) || Stopwatch.GetTimestamp() > deadline)
                    throw new InvalidOperationException($"scale worker {w} did not finish {kind} with {active} active", threadError());
                Thread.Sleep(1);
            }
        }
        return Stopwatch.GetElapsedTime(t0).TotalSeconds;
    }

    /// <summary>Sets every ready worker's latch (after a new generation or the leave word was published).</summary>
    private static void WakeAll(Cluster c)
    {
        for (int w = 0; w < MaxWorkers; w++)
        {
            if (Volatile.Read(ref c.Line(w)[2]) == 1)
                Latches.SetLatch(c.Procs, (int)c.Line(w)[3]);
        }
    }

    /// <summary>Entry point of <c>scale-child handle index dataDir</c>.</summary>
    public static int Child(string[] args)
    {
        if (args.Length != 3)
        {
            Console.Error.WriteLine($"{ChildVerb}: bad arguments \"{string.Join(' ', args)}\"");
            return 2;
        }
        ShmemSegment segment = ShmemSegment.Attach(args[0]);
        try
        {
            ProcArray procs = ProcArray.Attach(segment);
            using BufferPool pool = BufferPool.Init(segment, procs, PoolOptions(args[2]), out _);
            Worker(Open(segment, procs, pool), int.Parse(args[1], CultureInfo.InvariantCulture));
        }
        finally
        {
            segment.Dispose();
        }
        return 0;
    }

    private static void Worker(Cluster c, int w)
    {
        using Participant me = c.Procs.Join();
        ShmMq q = ShmMq.Open(c.Segment.TryFindStruct(QueueName(w / 2), out ShmemRegion r) ? r : throw new InvalidOperationException("no scale queue"));
        bool sender = w % 2 == 0;
        if (sender)
            q.SetSender(me);
        else
            q.SetReceiver(me);
        using ShmMqHandle h = q.Attach(me);
        long* line = c.Line(w);
        byte[] msg = new byte[1024];
        line[3] = me.ProcNumber;
        Volatile.Write(ref line[2], 1); // release: the leader reads the proc number after it sees ready
        long seen = 0;
        for (;;)
        {
            long g = Volatile.Read(ref c.Control[0]); // acquire: pairs with the leader's release store
            if (g < 0)
                return;
            if (g == seen)
            {
                // Asleep on the latch between samples (the leader sets it with each generation): 15 idle processes
                // polling a clock would take CPU from the active ones on a small machine.
                me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 100);
                me.ResetLatch();
                continue;
            }
            seen = g;
            int kind = (int)c.Control[1];
            if (w >= c.Control[2])
                continue;
            long count = 0;
            switch (Kinds[kind])
            {
                case "lwlock-x":
                case "lwlock-s":
                    {
                        LWLockMode mode = kind == 0 ? LWLockMode.Exclusive : LWLockMode.Shared;
                        long* counter = c.Control + 4;
                        while (Volatile.Read(ref c.Control[3]) != g)
                        {
                            for (int i = 0; i < 256; i++)
                            {
                                c.Lock->Acquire(me, mode);
                                if (mode == LWLockMode.Exclusive)
                                    (*counter)++;
                                else
                                    _ = Volatile.Read(ref *counter);
                                c.Lock->Release(me);
                            }
                            count += 256;
                        }
                        break;
                    }
                case "bufhit":
                    {
                        int first = 1 + w * PagesPerWorker;
                        while (Volatile.Read(ref c.Control[3]) != g)
                        {
                            for (int i = 0; i < 256; i++)
                                c.Pool.ReleaseBuffer(me, c.Pool.ReadBuffer(me, 1, ForkNumber.Main, first + (i & (PagesPerWorker - 1))));
                            count += 256;
                        }
                        break;
                    }
                default:
                    if (sender)
                    {
                        while (Volatile.Read(ref c.Control[3]) != g)
                        {
                            for (int i = 0; i < 64; i++)
                                Must(h.Send(msg, nowait: false, forceFlush: false));
                            count += 64;
                        }
                        Must(h.Send(ReadOnlySpan<byte>.Empty, nowait: false, forceFlush: true));
                    }
                    else
                    {
                        for (;;)
                        {
                            Must(h.Receive(out ReadOnlySpan<byte> m));
                            if (m.Length == 0)
                                break;
                            count++;
                        }
                    }
                    break;
            }
            line[0] = count;
            Volatile.Write(ref line[1], g); // release: the leader reads count after it sees the generation
        }
    }

    private static void Must(ShmMqResult r)
    {
        if (r != ShmMqResult.Success)
            throw new InvalidOperationException($"scale: shm_mq returned {r}");
    }
}
