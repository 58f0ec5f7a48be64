/*-------------------------------------------------------------------------
 * BufferHarness.cs
 *   The shared buffer pool with one and with two processes: the hit path
 *   (ReadBuffer + ReleaseBuffer of resident pages) and a pgbench-like mixed
 *   workload (random pages, some read-modify-written under the exclusive
 *   content lock, the rest read under the shared one), each measured by
 *   the parent alone and then by the parent and a child together.
 *
 *     dotnet run -c Release --project perf -- buffers [--backend linux|posix] [--workload hit|mix|all]
 *         [--seconds 4] [--samples 5] [--pages 1024] [--buffers 256] [--write-pct 20]
 *
 * NOTES
 *   Shaped like ContendHarness (whose control-block handshake it reuses):
 *   the parent creates the segment (ProcArray + BufferPool over a data
 *   directory in the temp directory) and the relation, starts this program
 *   again with the verb "buffers-child", and for each sample first loops
 *   alone for the sample length, then writes Go = sample (release) and
 *   loops again while the child does; the child stores its count and then
 *   Done = sample (release; the parent acquires it before reading the
 *   count). The figure of a sample is operations per second, the ratio is
 *   two processes' aggregate over one process's, per sample; we report
 *   the median and the range.
 *
 *   Workloads:
 *     hit-shared    both processes cycle over the same 64 resident pages
 *                   (the same state words and partition locks bounce);
 *     hit-disjoint  each process over its own 64 resident pages (some of
 *                   whose mapping partitions the other's pages share: the
 *                   partition LWLock's word bounces between the CPUs);
 *     hit-partitioned  each process over its own 64 pages, chosen so that
 *                   no mapping partition has pages of both (nothing shared
 *                   is written by both processes);
 *     mix           a pool of --buffers over a relation of --pages pages
 *                   (so misses evict, dirty victims are written back), a
 *                   random page per operation, --write-pct percent of them
 *                   "UPDATE": content lock exclusive, counter++ in the page,
 *                   MarkBufferDirty; the rest "SELECT": content lock
 *                   shared, read the counter. At the end the parent reads
 *                   every page: the counters must add up to the number of
 *                   updates both processes made (no lost update).
 *
 *   Each process also measures the CPU time it used in each half: on a
 *   loaded machine two processes do not get two CPUs, and the wall-clock
 *   ratio says more about the load than about the pool; 2 x (CPU time per
 *   operation alone) / (CPU time per operation together) is what the pair
 *   would reach with two CPUs to themselves (it charges the cost of cache
 *   lines moving between CPUs, not the waiting for a CPU).
 *
 *   The loops allocate nothing; the clock is read between batches of 256.
 *   The parent kills the child in a finally if it has not exited, destroys
 *   the segment and deletes the data directory.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using PgIpc.Buffers;
using PgIpc.Perf.Contention;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Perf.Buffers;

/// <summary>
/// Start/stop handshake of the buffer harness, in the segment, 64 bytes.
/// <code>
///  0 Ready        child: 1 once attached and joined (Interlocked)
///  8 Go           parent: sample number to run together (release store)
/// 16 Done         child: sample number finished (release store, after ChildOps and ChildWrites)
/// 24 ChildOps     child: its operations in the sample, written before Done
/// 32 ChildWrites  child: its updates so far (all samples), written before Done
/// 40 ChildCpuNs   child: CPU time its process used in the sample, written before Done
/// </code>
/// </summary>
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct BufferHarnessControl
{
    public long Ready;
    public long Go;
    public long Done;
    public long ChildOps;
    public long ChildWrites;
    public long ChildCpuNs;
}

public static unsafe class BufferHarness
{
    public const string ParentVerb = "buffers";
    public const string ChildVerb = "buffers-child";

    private const string ControlName = "PgIpc.Perf.BufferHarness";
    private const uint Rel = 1;
    private const int HitPages = 64;
    /// <summary>The hit workloads' relation: room to find 64 pages in partitions the first 64 pages do not use.</summary>
    private const int HitRelationPages = 512;
    private const int CounterOffset = 128;
    private const int Batch = 256;

    private enum Workload
    {
        HitShared,
        HitDisjoint,
        HitPartitioned,
        Mix,
    }

    /// <summary>What both processes need to know to run one workload.</summary>
    private sealed record Setup(Workload Workload, int Buffers, int Pages, int WritePct, string DataDirectory);

    /// <summary>Entry point of <c>buffers</c>; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        string backend = "linux", workload = "all";
        double seconds = 4;
        int samples = 5, pages = 1024, buffers = 256, writePct = 20;
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--backend" when i + 1 < args.Length: backend = args[++i]; break;
                case "--workload" when i + 1 < args.Length: workload = args[++i]; break;
                case "--seconds" when i + 1 < args.Length: seconds = double.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--samples" when i + 1 < args.Length: samples = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--pages" when i + 1 < args.Length: pages = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--buffers" when i + 1 < args.Length: buffers = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                case "--write-pct" when i + 1 < args.Length: writePct = int.Parse(args[++i], CultureInfo.InvariantCulture); break;
                default:
                    Console.Error.WriteLine($"buffers: unknown argument \"{args[i]}\"; usage: buffers [--backend linux|posix] [--workload hit|mix|all] " +
                                            "[--seconds 4] [--samples 5] [--pages 1024] [--buffers 256] [--write-pct 20]");
                    return 2;
            }
        }
        if (seconds <= 0 || samples < 1 || pages < 1 || buffers < 16 || writePct is < 0 or > 100)
        {
            Console.Error.WriteLine("buffers: need --seconds > 0, --samples >= 1, --pages >= 1, --buffers >= 16, --write-pct 0..100");
            return 2;
        }
        Workload[] kinds = workload switch
        {
            "all" => [Workload.HitShared, Workload.HitDisjoint, Workload.HitPartitioned, Workload.Mix],
            "hit" => [Workload.HitShared, Workload.HitDisjoint, Workload.HitPartitioned],
            "mix" => [Workload.Mix],
            _ => [],
        };
        if (kinds.Length == 0 || backend is not ("linux" or "posix"))
        {
            Console.Error.WriteLine($"buffers: --workload is hit, mix or all and --backend linux or posix (got {workload}, {backend})");
            return 2;
        }
        // Each sample has a one-process half and a two-process half.
        TimeSpan sample = TimeSpan.FromSeconds(seconds / samples / 2);
        Console.WriteLine($"buffers: {backend}, {samples} samples of {sample.TotalMilliseconds:F0} ms alone + {sample.TotalMilliseconds:F0} ms with a second process, " +
                          $"{Environment.ProcessorCount} CPUs, load {HarnessChild.LoadAverage()}");
        foreach (Workload w in kinds)
        {
            // The hit workloads keep every page resident: a pool larger than both processes' pages.
            var setup = w == Workload.Mix
                ? new Setup(w, buffers, pages, writePct, NewDataDirectory())
                : new Setup(w, Math.Max(buffers, 1024), HitRelationPages, 0, NewDataDirectory());
            RunWorkload(backend, setup, sample, samples);
        }
        return 0;
    }

    private static string NewDataDirectory()
        => Path.Combine(Path.GetTempPath(), $"pgipc-perf-buffers-{Environment.ProcessId}-{Guid.NewGuid():N}");

    private static BufferPoolOptions PoolOptions(Setup s) => new(s.Buffers, s.DataDirectory);

    private static readonly ProcArrayOptions s_procOptions = new(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);

    private static void RunWorkload(string backend, Setup setup, TimeSpan sample, int samples)
    {
        BufferPoolOptions options = PoolOptions(setup);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(s_procOptions))
            .RequestAddinShmemSpace("PgIpc.BufferPool", BufferPool.ShmemSize(options))
            .RequestAddinShmemSpace(ControlName, sizeof(BufferHarnessControl));
        ShmemSegment? segment = PerfSegments.Create("buffers", backend, sizes);
        Process? child = null;
        BufferPool? pool = null;
        try
        {
            ProcArray procs = ProcArray.Init(segment, s_procOptions, out _);
            pool = BufferPool.Init(segment, procs, options, out _);
            var ctl = (BufferHarnessControl*)segment.InitStruct(ControlName, sizeof(BufferHarnessControl), out _).Pointer;
            using Participant me = procs.Join();
            for (int i = 0; i < setup.Pages; i++)
                pool.ReleaseBuffer(me, pool.ReadBuffer(me, Rel, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend));
            pool.FlushAllBuffers(me);
            if (setup.Workload != Workload.Mix)
                for (int i = 0; i < setup.Pages; i++)
                    pool.ReleaseBuffer(me, pool.ReadBuffer(me, Rel, ForkNumber.Main, i));

            child = HarnessChild.Start(ChildVerb, [segment.Handle.ToString(), setup.Workload.ToString(), setup.Buffers.ToString(CultureInfo.InvariantCulture),
                setup.Pages.ToString(CultureInfo.InvariantCulture), setup.WritePct.ToString(CultureInfo.InvariantCulture), setup.DataDirectory,
                sample.TotalMilliseconds.ToString("R", CultureInfo.InvariantCulture), samples.ToString(CultureInfo.InvariantCulture)]);
            // Acquire read; pairs with the child's Interlocked.Exchange of Ready once it has attached and joined.
            HarnessChild.WaitUntil(() => Volatile.Read(ref ctl->Ready) == 1, child, "buffers", "attach", spin: true);

            var rng = new XorShift(0x9E3779B97F4A7C15UL);
            var solo = new double[samples];
            var duo = new double[samples];
            var ratio = new double[samples];
            var soloCpu = new double[samples];
            var duoCpu = new double[samples];
            long myWrites = 0, parentDuoOps = 0, childDuoOps = 0;
            for (int k = 1; k <= samples; k++)
            {
                TimeSpan cpu0 = ProcessCpu();
                long t0 = Stopwatch.GetTimestamp();
                long alone = Loop(pool, me, setup, ref rng, parent: true, sample, ref myWrites);
                solo[k - 1] = alone / Stopwatch.GetElapsedTime(t0).TotalSeconds;
                soloCpu[k - 1] = (ProcessCpu() - cpu0).TotalNanoseconds / alone;

                cpu0 = ProcessCpu();
                t0 = Stopwatch.GetTimestamp();
                // Release store; pairs with the child's acquire read of Go.
                Volatile.Write(ref ctl->Go, k);
                long mine = Loop(pool, me, setup, ref rng, parent: true, sample, ref myWrites);
                double myCpu = (ProcessCpu() - cpu0).TotalNanoseconds;
                int kk = k;
                // Acquire read; pairs with the child's release store of Done after ChildOps and ChildWrites.
                HarnessChild.WaitUntil(() => Volatile.Read(ref ctl->Done) == kk, child, "buffers", $"sample {k}", spin: true);
                long theirs = ctl->ChildOps;
                duo[k - 1] = (mine + theirs) / Stopwatch.GetElapsedTime(t0).TotalSeconds;
                duoCpu[k - 1] = (myCpu + ctl->ChildCpuNs) / (mine + theirs);
                ratio[k - 1] = duo[k - 1] / solo[k - 1];
                parentDuoOps += mine;
                childDuoOps += theirs;
            }
            HarnessChild.WaitExit(child, "buffers");
            string check = "";
            if (setup.Workload == Workload.Mix)
            {
                long total = myWrites + ctl->ChildWrites;
                long sum = SumCounters(pool, me, setup.Pages);
                if (sum != total)
                    throw new InvalidOperationException($"lost updates: the counters add up to {sum}, the processes made {total} updates");
                check = $", {total:N0} updates checked";
            }
            string what = setup.Workload switch
            {
                Workload.HitShared => "hit, same 64 pages",
                Workload.HitDisjoint => "hit, 64 pages each",
                Workload.HitPartitioned => "hit, 64 pages each, own partitions",
                _ => $"mix {setup.WritePct}% RMW, {setup.Buffers} buf / {setup.Pages} pages",
            };
            Report(what, solo, duo, ratio, soloCpu, duoCpu,
                $"parent {100.0 * parentDuoOps / (parentDuoOps + childDuoOps):F0}% / child {100.0 * childDuoOps / (parentDuoOps + childDuoOps):F0}% of the two-process ops{check}");
        }
        finally
        {
            HarnessChild.KillIfRunning(child);
            pool?.Dispose();
            PerfSegments.Destroy(ref segment);
            if (Directory.Exists(setup.DataDirectory))
                Directory.Delete(setup.DataDirectory, recursive: true);
        }
    }

    /// <summary>Entry point of <c>buffers-child</c> (started by <see cref="Run"/>).</summary>
    public static int Child(string[] args)
    {
        if (args.Length != 8)
        {
            Console.Error.WriteLine("buffers-child: expected <handle> <workload> <buffers> <pages> <write-pct> <data-dir> <sample-ms> <samples>");
            return 2;
        }
        var setup = new Setup(Enum.Parse<Workload>(args[1]), int.Parse(args[2], CultureInfo.InvariantCulture), int.Parse(args[3], CultureInfo.InvariantCulture),
            int.Parse(args[4], CultureInfo.InvariantCulture), args[5]);
        TimeSpan sample = TimeSpan.FromMilliseconds(double.Parse(args[6], CultureInfo.InvariantCulture));
        int samples = int.Parse(args[7], CultureInfo.InvariantCulture);
        ShmemSegment segment = ShmemSegment.Attach(args[0]);
        try
        {
            ProcArray procs = ProcArray.Attach(segment);
            using BufferPool pool = BufferPool.Init(segment, procs, PoolOptions(setup), out _);
            if (!segment.TryFindStruct(ControlName, out ShmemRegion r))
                throw new InvalidOperationException($"segment {segment.Handle} has no {ControlName}");
            var ctl = (BufferHarnessControl*)r.Pointer;
            using Participant me = procs.Join();
            var rng = new XorShift(0xD1B54A32D192ED03UL);
            long writes = 0;
            Interlocked.Exchange(ref ctl->Ready, 1);
            long deadline = Stopwatch.GetTimestamp() + (long)((HarnessChild.HandshakeTimeout.TotalSeconds + samples * 2 * sample.TotalSeconds) * Stopwatch.Frequency);
            for (int k = 1; k <= samples; k++)
            {
                // Acquire read; pairs with the parent's release store of Go.
                while (Volatile.Read(ref ctl->Go) != k)
                {
                    if (Stopwatch.GetTimestamp() > deadline)
                        throw new TimeoutException($"buffers-child: no Go for sample {k}");
                    // Sleep, not spin: the parent's one-process half runs meanwhile and must have the CPU to itself.
                    Thread.Sleep(1);
                }
                TimeSpan cpu0 = ProcessCpu();
                long ops = Loop(pool, me, setup, ref rng, parent: false, sample, ref writes);
                ctl->ChildCpuNs = (long)(ProcessCpu() - cpu0).TotalNanoseconds;
                ctl->ChildOps = ops;
                ctl->ChildWrites = writes;
                // Release store: ChildOps, ChildWrites and ChildCpuNs first; pairs with the parent's acquire read of Done.
                Volatile.Write(ref ctl->Done, k);
            }
            pool.ReleaseAllBuffers(me);
        }
        finally
        {
            segment.Dispose();
        }
        return 0;
    }

    /// <summary>Runs the workload's operation in batches of 256 until <paramref name="length"/> has passed; returns the count.</summary>
    private static long Loop(BufferPool pool, Participant me, Setup s, ref XorShift rng, bool parent, TimeSpan length, ref long writes)
    {
        long end = Stopwatch.GetTimestamp() + (long)(length.TotalSeconds * Stopwatch.Frequency);
        long ops = 0;
        int[] hitPages = HitPageList(s.Workload, parent);
        uint threshold = (uint)((ulong)s.WritePct * uint.MaxValue / 100);
        do
        {
            if (s.Workload == Workload.Mix)
            {
                for (int j = 0; j < Batch; j++)
                {
                    ulong x = rng.Next();
                    int page = (int)(((x >> 32) * (ulong)s.Pages) >> 32);
                    bool write = (uint)x < threshold;
                    int b = pool.ReadBuffer(me, Rel, ForkNumber.Main, page);
                    if (write)
                    {
                        pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                        Span<byte> p = pool.GetPage(me, b)[CounterOffset..];
                        BinaryPrimitives.WriteInt64LittleEndian(p, BinaryPrimitives.ReadInt64LittleEndian(p) + 1);
                        pool.MarkBufferDirty(me, b);
                        writes++;
                    }
                    else
                    {
                        pool.LockBuffer(me, b, BufferLockMode.Shared);
                        _ = BinaryPrimitives.ReadInt64LittleEndian(pool.GetPage(me, b)[CounterOffset..]);
                    }
                    pool.LockBuffer(me, b, BufferLockMode.Unlock);
                    pool.ReleaseBuffer(me, b);
                }
            }
            else
            {
                for (int j = 0; j < Batch; j++)
                    pool.ReleaseBuffer(me, pool.ReadBuffer(me, Rel, ForkNumber.Main, hitPages[j & (HitPages - 1)]));
            }
            ops += Batch;
        }
        while (Stopwatch.GetTimestamp() < end);
        return ops;
    }

    /// <summary>
    /// The 64 pages a process cycles over in a hit workload: blocks 0..63 for the parent (and for both with
    /// HitShared); 64..127 for the child with HitDisjoint; with HitPartitioned the first 64 blocks from 64 on whose
    /// mapping partition none of blocks 0..63 uses.
    /// </summary>
    private static int[] HitPageList(Workload w, bool parent)
    {
        var list = new int[HitPages];
        if (parent || w is Workload.HitShared or Workload.Mix)
        {
            for (int i = 0; i < HitPages; i++)
                list[i] = i;
            return list;
        }
        if (w == Workload.HitDisjoint)
        {
            for (int i = 0; i < HitPages; i++)
                list[i] = HitPages + i;
            return list;
        }
        var taken = new bool[BufferPool.NumPartitions];
        for (int i = 0; i < HitPages; i++)
            taken[Partition(i)] = true;
        int n = 0;
        for (int block = HitPages; block < HitRelationPages && n < HitPages; block++)
            if (!taken[Partition(block)])
                list[n++] = block;
        if (n < HitPages)
            throw new InvalidOperationException($"only {n} of the first {HitRelationPages} blocks are in partitions blocks 0..{HitPages - 1} do not use");
        return list;
    }

    private static int Partition(int block)
    {
        var tag = new BufferTag(Rel, ForkNumber.Main, (uint)block);
        return (int)(SharedHash<BufferTag, int>.GetHashCode(in tag) & (BufferPool.NumPartitions - 1));
    }

    private static long SumCounters(BufferPool pool, Participant me, int pages)
    {
        long sum = 0;
        for (int i = 0; i < pages; i++)
        {
            int b = pool.ReadBuffer(me, Rel, ForkNumber.Main, i);
            pool.LockBuffer(me, b, BufferLockMode.Shared);
            sum += BinaryPrimitives.ReadInt64LittleEndian(pool.GetPage(me, b)[CounterOffset..]);
            pool.LockBuffer(me, b, BufferLockMode.Unlock);
            pool.ReleaseBuffer(me, b);
        }
        return sum;
    }

    /// <summary>CPU time this process has used (user + system, all threads).</summary>
    private static TimeSpan ProcessCpu()
    {
        using Process p = Process.GetCurrentProcess();
        return p.TotalProcessorTime;
    }

    private static void Report(string what, double[] solo, double[] duo, double[] ratio, double[] soloCpu, double[] duoCpu, string split)
    {
        static (double Median, double Min, double Max) Stats(double[] v)
        {
            double[] s = [.. v];
            Array.Sort(s);
            return (s[s.Length / 2], s[0], s[^1]);
        }
        var one = Stats(solo);
        var two = Stats(duo);
        var r = Stats(ratio);
        Console.WriteLine($"{what,-36} 1 proc {one.Median / 1e6,7:F2} Mops/s [{one.Min / 1e6:F2}..{one.Max / 1e6:F2}]  " +
                          $"2 procs {two.Median / 1e6,7:F2} Mops/s [{two.Min / 1e6:F2}..{two.Max / 1e6:F2}]  " +
                          $"ratio {r.Median:F2}x [{r.Min:F2}..{r.Max:F2}]  ({split})");
        // On a loaded machine the two processes do not get two CPUs; CPU time per operation says what they would do with them.
        var c1 = Stats(soloCpu);
        var c2 = Stats(duoCpu);
        Console.WriteLine($"{"",-36} CPU per op: 1 proc {c1.Median:F1} ns, 2 procs {c2.Median:F1} ns; with two free CPUs that is {2 * c1.Median / c2.Median:F2}x");
    }

    /// <summary>xorshift64*: a per-process page and operation picker that allocates nothing.</summary>
    private struct XorShift(ulong seed)
    {
        private ulong _s = seed;

        public ulong Next()
        {
            _s ^= _s >> 12;
            _s ^= _s << 25;
            _s ^= _s >> 27;
            return _s * 2685821657736338717UL;
        }
    }
}
