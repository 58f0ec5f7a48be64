/*-------------------------------------------------------------------------
 * ContendHarness.cs
 *   Two processes contending for one lock: the parent and one child it
 *   starts (this same program, verb "contend-child") each loop
 *   lock / counter++ / unlock for a fixed time; the figure is both
 *   processes' operations together per second.
 *
 *     dotnet run -c Release --project perf -- contend [--backend linux|posix|mutex|all] [--seconds 3] [--samples 5]
 *
 * NOTES
 *   The macro counterpart of the limits tool's 08_contended_* lines, and
 *   shaped like them (limits.c, bench_contended / contend_worker): the
 *   counter in its own cache line, the loop in batches of 256 with a clock
 *   check between batches, throughput = (parent ops + child ops) / (time
 *   from the parent's "go" to the child's "done"), and a check that the
 *   counter equals the sum of both processes' counts (no lost update).
 *   --seconds is split into --samples samples; we report the median and
 *   the range, as the C tool does (its samples are 100 ms). For an LWLock
 *   it also reports how many of the parent's acquisitions had to sleep
 *   (Acquire returned true): the share of the slow path.
 *
 *   Kinds:
 *     linux, posix  an LWLock of a named tranche in a PgIpc segment on that
 *                   backend; both processes are participants (ProcArray.Join),
 *                   waiters sleep on their slot's semaphore;
 *     mutex         .NET's named System.Threading.Mutex (WaitOne/ReleaseMutex),
 *                   counter in a file-backed MemoryMappedFile under /dev/shm
 *                   (.NET on Unix has no named memory maps); followed by the
 *                   uncontended pair in one process.
 *
 *   Start and stop use a small control block next to the counter: the
 *   child announces Ready, the parent writes Go = sample number (release),
 *   the child spins until it reads it (acquire), runs, stores its count in
 *   ChildOps and then Done = sample number (release, pairs with the
 *   parent's acquire read before it reads ChildOps). The parent kills the
 *   child in a finally if it has not exited, destroys the segment (or
 *   closes the mutex and deletes the file), so nothing is left in /dev/shm
 *   or `ipcs -m`.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Perf.Contention;

/// <summary>
/// Start/stop handshake between the two processes, in shared memory, 64 bytes.
/// <code>
///  0 Ready     child: 1 once set up (Interlocked)
///  8 Go        parent: sample number to run (release store)
/// 16 Done      child: sample number finished (release store, after ChildOps)
/// 24 ChildOps  child: its count for the sample, written before Done
/// </code>
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct ContendControl
{
    public long Ready;
    public long Go;
    public long Done;
    public long ChildOps;
}

/// <summary>The lock under test: entered and left on the one thread that loops.</summary>
internal interface ICriticalSection
{
    /// <summary>Takes the lock; true if it had to sleep for it (unknown: false).</summary>
    bool Enter();
    void Exit();
}

internal unsafe struct LWLockSection : ICriticalSection
{
    private readonly LWLock* _lock;
    private readonly Participant _me;

    public LWLockSection(LWLock* l, Participant me)
    {
        _lock = l;
        _me = me;
    }

    // Acquire is true when the lock was had without sleeping (lwlock.c): "slept" is its negation.
    public readonly bool Enter() => !_lock->Acquire(_me, LWLockMode.Exclusive);

    public readonly void Exit() => _lock->Release(_me);
}

internal readonly struct MutexSection(Mutex mutex) : ICriticalSection
{
    public bool Enter()
    {
        mutex.WaitOne();
        return false;
    }

    public void Exit() => mutex.ReleaseMutex();
}

public static unsafe class ContendHarness
{
    public const string ParentVerb = "contend";
    public const string ChildVerb = "contend-child";

    private const int Batch = 256;

    /// <summary>Entry point of <c>contend</c>; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        string backend = "all";
        double seconds = 3;
        int samples = 5;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--backend" when i + 1 < args.Length: backend = args[++i]; break;
                case "--seconds" when i + 1 < args.Length: seconds = double.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture); break;
                case "--samples" when i + 1 < args.Length: samples = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture); break;
                default:
                    Console.Error.WriteLine($"contend: unknown argument \"{args[i]}\"; usage: contend [--backend linux|posix|mutex|all] [--seconds 3] [--samples 5]");
                    return 2;
            }
        }
        if (seconds <= 0 || samples < 1)
        {
            Console.Error.WriteLine($"contend: --seconds must be > 0 and --samples >= 1 (got {seconds}, {samples})");
            return 2;
        }
        TimeSpan sample = TimeSpan.FromSeconds(seconds / samples);
        string[] kinds = backend == "all" ? ["linux", "posix", "mutex"] : [backend];
        if (backend is not ("all" or "linux" or "posix" or "mutex"))
        {
            Console.Error.WriteLine($"contend: unknown --backend \"{backend}\"; expected linux, posix, mutex or all");
            return 2;
        }
        Console.WriteLine($"contend: 2 processes, {samples} samples of {sample.TotalMilliseconds:F0} ms, {Environment.ProcessorCount} CPUs, load {HarnessChild.LoadAverage()}");
        foreach (string kind in kinds)
        {
            if (kind == "mutex")
            {
                RunMutex(sample, samples);
                UncontendedMutexPair();
            }
            else
            {
                RunLWLock(kind, sample, samples);
            }
        }
        return 0;
    }

    /// <summary>Entry point of <c>contend-child</c> (started by <see cref="Run"/>): kind, where, sample length in ms, samples.</summary>
    public static int Child(string[] args)
    {
        if (args.Length != 4 && args.Length != 5)
        {
            Console.Error.WriteLine("contend-child: expected <lwlock handle | mutex mmf-path mutex-name> <sample-ms> <samples>");
            return 2;
        }
        int samples = int.Parse(args[^1], System.Globalization.CultureInfo.InvariantCulture);
        TimeSpan sample = TimeSpan.FromMilliseconds(double.Parse(args[^2], System.Globalization.CultureInfo.InvariantCulture));
        if (args[0] == "lwlock")
        {
            PerfLockCluster cluster = PerfLockCluster.Attach(args[1]);
            try
            {
                using Participant me = cluster.Procs.Join();
                LWLock* l = LockOf(cluster);
                var cs = new LWLockSection(l, me);
                ChildLoop(ref cs, cluster.Counters, Control(cluster), sample, samples);
            }
            finally
            {
                cluster.Close();
            }
        }
        else
        {
            using var mmf = MemoryMappedFile.CreateFromFile(args[1], FileMode.Open, null, 0, MemoryMappedFileAccess.ReadWrite);
            using MemoryMappedViewAccessor view = mmf.CreateViewAccessor();
            using var mutex = Mutex.OpenExisting(args[2]);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            try
            {
                var cs = new MutexSection(mutex);
                ChildLoop(ref cs, (long*)p, (ContendControl*)(p + 64), sample, samples);
            }
            finally
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
            }
        }
        return 0;
    }

    // ------------------------------------------------------------------
    // LWLock
    // ------------------------------------------------------------------

    private static void RunLWLock(string backend, TimeSpan sample, int samples)
    {
        PerfLockCluster cluster = PerfLockCluster.Create("contend", backend);
        Process? child = null;
        try
        {
            using Participant me = cluster.Procs.Join();
            LWLock* l = LockOf(cluster);
            child = HarnessChild.Start(ChildVerb, ["lwlock", cluster.Segment.Handle.ToString(), sample.TotalMilliseconds.ToString("R", System.Globalization.CultureInfo.InvariantCulture), samples.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            var cs = new LWLockSection(l, me);
            double[] mops = ParentLoop(ref cs, cluster.Counters, Control(cluster), child, sample, samples, out string split);
            Report($"LWLock exclusive, {backend}", mops, split);
            HarnessChild.WaitExit(child, "contend");
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
            cluster.Close();
        }
    }

    private static LWLock* LockOf(PerfLockCluster cluster)
    {
        fixed (LWLock* l = &cluster.Locks[0])
            return l; // in shared memory: valid while the segment is mapped
    }

    /// <summary>The control block: the counters region's second cache line (the counter has the first).</summary>
    private static ContendControl* Control(PerfLockCluster cluster) => (ContendControl*)((byte*)cluster.Counters + 64);

    // ------------------------------------------------------------------
    // .NET named Mutex
    // ------------------------------------------------------------------

    private static void RunMutex(TimeSpan sample, int samples)
    {
        string dir = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        string path = Path.Combine(dir, $"pgipc-perf-contend-{Environment.ProcessId}.mmf");
        string name = $"pgipc-perf-contend-{Environment.ProcessId}";
        Process? child = null;
        try
        {
            using var mutex = new Mutex(false, name);
            using (var fs = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite))
                fs.SetLength(4096);
            using var mmf = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.ReadWrite);
            using MemoryMappedViewAccessor view = mmf.CreateViewAccessor();
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            try
            {
                child = HarnessChild.Start(ChildVerb, ["mutex", path, name, sample.TotalMilliseconds.ToString("R", System.Globalization.CultureInfo.InvariantCulture), samples.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
                var cs = new MutexSection(mutex);
                double[] mops = ParentLoop(ref cs, (long*)p, (ContendControl*)(p + 64), child, sample, samples, out string split);
                Report(".NET named Mutex", mops, split);
                HarnessChild.WaitExit(child, "contend");
            }
            finally
            {
                view.SafeMemoryMappedViewHandle.ReleasePointer();
            }
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
            File.Delete(path);
        }
    }

    /// <summary>WaitOne + ReleaseMutex on a named Mutex nobody else opens, in a loop; ns per pair, median of 5.</summary>
    private static void UncontendedMutexPair()
    {
        const int Pairs = 200_000;
        using var mutex = new Mutex(false, $"pgipc-perf-pair-{Environment.ProcessId}");
        var ns = new double[5];
        for (int warm = 0; warm < Pairs; warm++)
        {
            mutex.WaitOne();
            mutex.ReleaseMutex();
        }
        for (int s = 0; s < ns.Length; s++)
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < Pairs; i++)
            {
                mutex.WaitOne();
                mutex.ReleaseMutex();
            }
            ns[s] = Stopwatch.GetElapsedTime(t0).TotalNanoseconds / Pairs;
        }
        Array.Sort(ns);
        Console.WriteLine($"{".NET named Mutex, uncontended pair",-34} {ns[2],10:F1} ns [{ns[0]:F1}..{ns[^1]:F1}]  ({Pairs} pairs per sample, 1 process)");
    }

    // ------------------------------------------------------------------
    // The two loops
    // ------------------------------------------------------------------

    private static double[] ParentLoop<T>(ref T cs, long* counter, ContendControl* ctl, Process child, TimeSpan sample, int samples, out string split)
        where T : struct, ICriticalSection
    {
        // Acquire read; pairs with the child's Interlocked.Exchange of Ready once it has attached and joined.
        HarnessChild.WaitUntil(() => Volatile.Read(ref ctl->Ready) == 1, child, "contend", "attach", spin: true);
        var mops = new double[samples];
        long parentTotal = 0, childTotal = 0, parentSlept = 0;
        for (int k = 1; k <= samples; k++)
        {
            *counter = 0; // nobody else touches it between samples: the child waits for Go
            long t0 = Stopwatch.GetTimestamp();
            // Release store: the reset counter is visible before the child starts; pairs with its acquire read of Go.
            Volatile.Write(ref ctl->Go, k);
            long mine = Loop(ref cs, counter, sample, ref parentSlept);
            int kk = k;
            // Acquire read; pairs with the child's release store of Done after ChildOps.
            HarnessChild.WaitUntil(() => Volatile.Read(ref ctl->Done) == kk, child, "contend", $"sample {k}", spin: true);
            long t1 = Stopwatch.GetTimestamp();
            long theirs = ctl->ChildOps;
            long seen = Volatile.Read(ref *counter);
            if (seen != mine + theirs)
                throw new InvalidOperationException($"lost updates in sample {k}: counter {seen}, parent {mine} + child {theirs} = {mine + theirs}");
            mops[k - 1] = (mine + theirs) / Stopwatch.GetElapsedTime(t0, t1).TotalSeconds / 1e6;
            parentTotal += mine;
            childTotal += theirs;
        }
        split = $"parent {100.0 * parentTotal / (parentTotal + childTotal):F0}% / child {100.0 * childTotal / (parentTotal + childTotal):F0}% of {parentTotal + childTotal:N0} ops, counter checked{(parentSlept > 0 ? $"; {100.0 * parentSlept / parentTotal:F2}% of the parent's acquisitions slept" : "")}";
        return mops;
    }

    private static void ChildLoop<T>(ref T cs, long* counter, ContendControl* ctl, TimeSpan sample, int samples)
        where T : struct, ICriticalSection
    {
        Interlocked.Exchange(ref ctl->Ready, 1);
        long deadline = Stopwatch.GetTimestamp() + (long)(HarnessChild.HandshakeTimeout.TotalSeconds * Stopwatch.Frequency);
        for (int k = 1; k <= samples; k++)
        {
            // Acquire read; pairs with the parent's release store of Go.
            while (Volatile.Read(ref ctl->Go) != k)
            {
                if (Stopwatch.GetTimestamp() > deadline)
                    throw new TimeoutException($"contend-child: no Go for sample {k} within {HarnessChild.HandshakeTimeout}");
                Thread.SpinWait(20);
            }
            long slept = 0;
            long ops = Loop(ref cs, counter, sample, ref slept);
            ctl->ChildOps = ops;
            // Release store: ChildOps first; pairs with the parent's acquire read of Done.
            Volatile.Write(ref ctl->Done, k);
        }
    }

    /// <summary>lock / counter++ / unlock in batches of 256 until <paramref name="length"/> has passed; returns the count.</summary>
    private static long Loop<T>(ref T cs, long* counter, TimeSpan length, ref long slept)
        where T : struct, ICriticalSection
    {
        long end = Stopwatch.GetTimestamp() + (long)(length.TotalSeconds * Stopwatch.Frequency);
        long ops = 0, waits = 0;
        do
        {
            for (int j = 0; j < Batch; j++)
            {
                if (cs.Enter())
                    waits++;
                (*counter)++;
                cs.Exit();
            }
            ops += Batch;
        }
        while (Stopwatch.GetTimestamp() < end);
        slept += waits;
        return ops;
    }

    // ------------------------------------------------------------------
    // Child process
    // ------------------------------------------------------------------

    private static void Report(string what, double[] mops, string split)
    {
        double[] sorted = [.. mops];
        Array.Sort(sorted);
        Console.WriteLine($"{what,-34} {sorted[sorted.Length / 2],10:F2} Mops/s [{sorted[0]:F2}..{sorted[^1]:F2}]  ({split})");
    }

}
