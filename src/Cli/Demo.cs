/*-------------------------------------------------------------------------
 * Demo.cs
 *   pgipc demo: a live cluster. The supervisor, a checkpointer, a background
 *   writer, a WAL writer (flushes what nobody flushed, every
 *   wal_writer_delay) and N worker processes doing read-modify-write on pages of the
 *   shared buffer pool, with a status line per process refreshed in place,
 *   then a clean shutdown that checks the data on disk and shows that no OS
 *   object is left. With --crash one worker is killed midway (SIGKILL on
 *   Unix, TerminateProcess on Windows) and the crash restart is shown.
 *
 * NOTES
 *   Every process is this executable (exec, not fork): the supervisor
 *   builds the cluster (buffer pool, checkpointer shared state and the
 *   demo's own counters requested through the builder, as an extension
 *   would) and registers the children as permanent workers, so a crash
 *   restart starts them again. A child attaches with the handle the
 *   supervisor put in its environment and joins as the participant kind
 *   it was started as.
 *
 *   The workload: relation 1 has --pages blocks; a worker pins a random
 *   block, takes its content lock exclusive, adds one to the counter at
 *   BufferStress-style offset 64 of the page, marks it dirty and lets go,
 *   then counts the operation in its slot of "demo.stats". Heavyweight
 *   locks frame the work as a database's would: each worker holds
 *   RowExclusive on relation 1 while it updates it (a weak lock: the fast
 *   path), and the worker that wins the advisory lock on the
 *   checkpoint-requester key (tried at start, so after a crash restart
 *   another worker takes the role) asks for a checkpoint and waits for it
 *   every two seconds. At the end the supervisor takes AccessExclusive on
 *   relation 1 before its final checkpoint: it waits until every worker
 *   has let go of the relation. The pool is far
 *   smaller than the relation, so workers evict, the background writer
 *   cleans ahead of the clock hand, and the checkpointer writes and fsyncs.
 *
 *   Every increment is logged (the cluster has a write-ahead log): with the
 *   content lock held the worker changes the page, logs a "demo.incr"
 *   record (resource manager 128: the block and the counter's new value;
 *   its redo sets the value), lets go of the page and flushes the WAL up to
 *   the record (group commit: workers that flush together share an fsync).
 *   Only then is the increment acknowledged: the worker writes its count of
 *   acknowledged increments to a file of its own under demo_acks/ (no
 *   fsync: the page cache outlives a killed process, which is all the demo
 *   kills).
 *
 *   The check: at the end the supervisor tells the workers to stop, asks
 *   for an immediate checkpoint, shuts down (fast) and reads every page back
 *   from the files (checksums verified). Without a crash the counters on
 *   disk equal the increments acknowledged. With one, the crash restart
 *   throws shared memory away, and recovery replays the WAL from the last
 *   checkpoint's redo pointer before any child starts again: no
 *   acknowledged increment is lost. A process killed between its WAL flush
 *   and its acknowledgement (the killed worker, and the others the crash
 *   handling stops) may leave one increment on disk that it never
 *   acknowledged, so on disk is at least the acknowledged count and at most
 *   one more per worker.
 *
 *   DemoStats layout (in "demo.stats"): a 64-byte header, then one 64-byte
 *   entry per participant slot (indexed by procno). Header.StopRequested:
 *   written by the supervisor (release), read by workers (acquire).
 *   Entry.Ops: written by the owning worker only (release), read by the
 *   supervisor (acquire). Entry.Role, Entry.Stopped: written by the owner.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using PgIpc.Buffers;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Wal;

namespace PgIpc.Cli;

[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct DemoStatsHeader
{
    public long StopRequested;
    public int NumEntries;
}

[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct DemoStatsEntry
{
    public long Ops;
    public int Role; // DemoRole + 1; 0 = unused
    public int Index;
    public int Stopped;
}

internal enum DemoRole
{
    Checkpointer,
    BgWriter,
    Worker,
    WalWriter,
}

internal static class Demo
{
    public const string ChildVerb = "demo-child";
    private const string StatsName = "demo.stats";
    private const uint Relation = 1;
    /// <summary>The advisory key of the checkpoint-requester role (one worker at a time holds it).</summary>
    private const long CheckpointRequesterKey = 0x64656D6F_636B7074; // "demo" "ckpt"
    private static readonly Lmgr.LockTag RelationLock = Lmgr.LockTag.Relation(0, Relation);
    private const int CounterOffset = 64;
    /// <summary>The demo's resource manager: one record per increment (block 0 = the page, its data = the new value).</summary>
    private const byte IncrementRmId = WalResourceManagers.MinCustomId;
    private const string AcksDirectory = "demo_acks";

    /// <summary>Registers the demo's resource manager in this process (the supervisor replays; waldump describes).</summary>
    private static void RegisterIncrementRmgr()
        => WalResourceManagers.Register(new WalResourceManager(IncrementRmId, "demo.incr", RedoIncrement,
            (text, rec) => text.Append("counter = ").Append(BinaryPrimitives.ReadInt64LittleEndian(rec.BlockData(0)))));

    /// <summary>Redo of an increment: the page's counter takes the logged value (idempotent).</summary>
    private static void RedoIncrement(WalRedoContext ctx, DecodedRecord rec)
    {
        if (ctx.ReadBufferForRedo(0, out int b) == RedoAction.NeedsRedo)
            BinaryPrimitives.WriteInt64LittleEndian(ctx.GetPage(b)[CounterOffset..], BinaryPrimitives.ReadInt64LittleEndian(rec.BlockData(0)));
    }

    private static readonly CheckpointerOptions CkptOptions = new(TimeoutMs: 3_000, CompletionTarget: 0.5);
    private static readonly BgWriterOptions BgwOptions = new(DelayMs: 100);

    public static unsafe int Run(DemoOptions options)
    {
        (IPgIpcPlatform platform, int workers, double seconds, int buffers, int pages, bool crash, bool withWal) = options;
        if (workers is < 1 or > 16)
            throw new ArgumentException("--workers must be 1..16");
        if (seconds is < 1 or > 600)
            throw new ArgumentException("--seconds must be 1..600");
        if (buffers < 16 || pages < 1)
            throw new ArgumentException("--buffers must be at least 16 and --pages at least 1");

        int segmentsBefore = platform.SharedMemory.EnumerateCandidates().Count();
        int devShmBefore = DevShmEntries();
        // A new directory with a random name (0700 on Unix), never an existing one: a predictable name in the shared
        // temp directory could be made first by another user, or be a symlink to files the demo would then write.
        string dir = Directory.CreateTempSubdirectory("pgipc-demo-").FullName;
        var log = new StringWriter();
        var procOptions = new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 4, MaxBackgroundWorkers: workers + 2);
        int entries = procOptions.TotalProcs;
        Console.WriteLine($"backend      {platform.Name}");
        Console.WriteLine($"before       {segmentsBefore} PgIpc segment(s), {devShmBefore} PgIpc /dev/shm entr(ies)");
        Console.WriteLine($"workload     {workers} worker(s) over {pages} pages of 8 KiB through {buffers} shared buffers, {seconds:F0} s{(crash ? ", one worker killed midway" : "")}{(withWal ? "" : ", without WAL")}");

        RegisterIncrementRmgr();
        Directory.CreateDirectory(Path.Combine(dir, AcksDirectory));
        ClusterBuilder builder = new ClusterBuilder($"pgipc-demo-{Environment.ProcessId}")
            .WithPlatform(platform)
            .WithMaxParticipants(procOptions)
            .WithMaxChildren(workers + 4)
            .WithDataDirectory(dir)
            .WithBufferPool(buffers)
            .WithLog(TextWriter.Synchronized(log))
            .WithCheckpointer(CkptOptions)
            .WithBackgroundWriter(BgwOptions)
            .RequestShmem(StatsName, 64L + 64L * entries)
            .OnShmemStartup(c =>
            {
                // RequestShmem reserved the room; the hook creates the counters in the supervisor before any child
                // starts, each time shared memory is (re)created (shmem_startup_hook).
                c.InitStruct(StatsName, 64L + 64L * entries, r =>
                {
                    r.AsSpan().Clear();
                    r.As<DemoStatsHeader>().NumEntries = entries;
                }, out _);
            })
            .AddBackgroundWorker(Self("checkpointer", ProcKind.Auxiliary, ["checkpointer", "0"]))
            .AddBackgroundWorker(Self("background writer", ProcKind.Auxiliary, ["bgwriter", "0"]));
        if (withWal)
            builder.WithWal().AddBackgroundWorker(Self("wal writer", ProcKind.Auxiliary, ["walwriter", "0"]));
        for (int i = 0; i < workers; i++)
            builder.AddBackgroundWorker(Self($"worker {i}", ProcKind.BackgroundWorker, ["worker", i.ToString(), pages.ToString(), withWal ? "wal" : "nowal"]));

        bool ok = true;
        long countedOps = 0;
        var segmentIds = new HashSet<string>();
        string? crashReport = null;
        try
        {
            using (Supervisor cluster = builder.Build())
            {
                Console.WriteLine($"cluster      segment {cluster.Cluster.Segment.Handle.Id}, {cluster.Cluster.Segment.TotalSize / 1024} KiB; data in {dir}");
                CreateRelation(cluster.Cluster, pages);
                cluster.Start();
                segmentIds.Add(cluster.Cluster.Segment.Handle.Id);
                var live = new StatusView(cluster, segmentIds);
                var sw = Stopwatch.StartNew();
                bool killed = false;
                while (sw.Elapsed.TotalSeconds < seconds)
                {
                    Thread.Sleep(250);
                    live.Refresh();
                    if (crash && !killed && sw.Elapsed.TotalSeconds >= seconds / 2)
                    {
                        killed = true;
                        crashReport = KillOneWorker(cluster, live, workers);
                    }
                }
                live.Finish();
                if (crash && crashReport is null)
                    crashReport = "no worker could be killed";

                // Stop the workers, count their work, checkpoint, shut down.
                countedOps = StopWorkers(cluster.Cluster, entries);
                if (!crash)
                    Console.WriteLine($"rate         {countedOps / sw.Elapsed.TotalSeconds:F0} increments/s over {sw.Elapsed.TotalSeconds:F1} s ({(withWal ? "each logged and flushed before it is acknowledged" : "not logged")})");
                Cluster view = cluster.Cluster;
                using (Participant me = view.Procs.Join(ProcKind.Backend))
                {
                    // Nobody may be updating relation 1 now: AccessExclusive waits for every worker's RowExclusive.
                    Lmgr.LockManager lm = view.Get<Lmgr.LockManager>();
                    lm.LockTimeoutMs = 20_000;
                    lm.Acquire(me, RelationLock, Lmgr.LockMode.AccessExclusive);
                    (long checks, long hard, long soft) = lm.DeadlockStatistics;
                    Console.WriteLine($"locks        AccessExclusive on relation {Relation} taken after every worker let go; {lm.Count.Locks} lock(s) in the table, deadlock checks {checks}, deadlocks {hard}");
                    Checkpointer ck = view.Get<Checkpointer>();
                    ck.RequestCheckpoint(me, CheckpointFlags.Immediate | CheckpointFlags.Wait);
                    CheckpointerStatus st = ck.Status;
                    Console.WriteLine($"checkpoints  {st.Done} done ({st.NumTimed} timed, {st.NumRequested} requested), {st.BuffersWritten} buffers written, {st.FilesSynced} file syncs, {st.Failed} failed");
                    if (withWal)
                    {
                        XLog wal = view.Get<XLog>();
                        WalStats ws = wal.Stats;
                        WalStartupReport? su = wal.LastStartup;
                        Console.WriteLine($"wal          {ws.Records} records since the last start ({ws.FullPageImages} full-page images), {ws.Fsyncs} fsyncs; flushed to {WalFormat.FormatLsn(ws.FlushLsn)}"
                            + (su is { Replayed: true } ? $"; the last start replayed {su.Records} records from {WalFormat.FormatLsn(su.RedoStart)} ({su.EndReason})" : ""));
                    }
                }
                bool clean = cluster.Shutdown(ShutdownMode.Fast, TimeSpan.FromSeconds(20));
                Console.WriteLine($"shutdown     fast: {(clean ? "every child exited" : "children had to be killed")}; {cluster.CrashRestarts} crash restart(s)");
                ok &= clean && (crash ? cluster.CrashRestarts == 1 : cluster.CrashRestarts == 0);
            }

            long onDisk = SumCounters(dir, pages);
            if (!withWal)
            {
                // Without WAL: nothing is acknowledged; a crash loses what was only in shared memory.
                bool match = crash ? onDisk >= countedOps : onDisk == countedOps;
                if (crash)
                    Console.WriteLine($"crash        {crashReport}");
                Console.WriteLine(crash
                    ? $"data         {onDisk} increments on disk, {countedOps} counted since the restart; those only in shared memory at the crash are lost (no WAL)"
                    : $"data         {countedOps} increments counted, {onDisk} found on disk after a cold read with checksums: {(match ? "OK" : "WRONG")}");
                ok &= match && countedOps > 0;
            }
            else if (!crash)
            {
                long acked = SumAcks(dir);
                bool match = onDisk == acked && acked == countedOps;
                Console.WriteLine($"data         {acked} increments acknowledged (each one's WAL record flushed), {onDisk} found on disk after a cold read with checksums: {(match ? "OK" : "WRONG")}");
                ok &= match && acked > 0;
            }
            else
            {
                long acked = SumAcks(dir);
                // Every acknowledged increment must be there; at most one per worker may be there unacknowledged (its
                // process was killed between the WAL flush and the acknowledgement).
                long extra = onDisk - acked;
                bool none = extra >= 0 && extra <= workers;
                Console.WriteLine($"crash        {crashReport}");
                Console.WriteLine($"data         {acked} increments acknowledged (each one's WAL record flushed; {countedOps} of them since the restart), {onDisk} on disk after recovery and a cold read with checksums: "
                    + (none ? $"OK, no acknowledged increment lost{(extra > 0 ? $" ({extra} logged by processes killed before they could acknowledge them)" : "")}" : $"WRONG ({(extra < 0 ? $"{-extra} acknowledged increments lost" : $"{extra} more than acknowledged")})"));
                ok &= none && acked > 0;
            }
        }
        finally
        {
            string lines = log.ToString().Trim();
            if (lines.Length > 0)
            {
                Console.WriteLine("supervisor log:");
                foreach (string l in lines.Split('\n'))
                    Console.WriteLine("  " + l.TrimEnd());
            }
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }

        // Other programs may create or remove PgIpc objects meanwhile: the verdict is about this cluster's segments
        // (every incarnation's) and its data directory; the counts are shown for the eye.
        List<string> after = [.. platform.SharedMemory.EnumerateCandidates()];
        List<string> ours = [.. after.Where(segmentIds.Contains)];
        int devShmAfter = DevShmEntries();
        bool nothingLeft = ours.Count == 0 && !Directory.Exists(dir);
        Console.WriteLine($"after        {after.Count} PgIpc segment(s), {devShmAfter} PgIpc /dev/shm entr(ies); of this cluster's {segmentIds.Count} segment(s) {ours.Count} left, data directory {(Directory.Exists(dir) ? "still there" : "removed")}: {(nothingLeft ? "nothing left" : "LEFTOVERS " + string.Join(", ", ours))}");
        return ok && nothingLeft ? 0 : 1;
    }

    private static ChildSpec Self(string name, ProcKind kind, string[] args)
        => ChildSpec.ForThisProgram(name, ChildVerb, args, kind, restartIntervalMs: 0);

    /// <summary>The demo's counters in the cluster's current segment.</summary>
    private static unsafe byte* Stats(Cluster cluster)
    {
        if (!cluster.Segment.TryFindStruct(StatsName, out ShmemRegion r))
            throw new PgIpcException($"{StatsName} was not initialised by the supervisor");
        return (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(r.AsSpan()));
    }

    private static int DevShmEntries()
        => Directory.Exists("/dev/shm") ? Directory.EnumerateFiles("/dev/shm").Count(f => Path.GetFileName(f) is { } n && (n.StartsWith("pgipc.") || n.StartsWith("sem.pgipc."))) : 0;

    private static void CreateRelation(Cluster cluster, int pages)
    {
        BufferPool pool = cluster.Buffers!;
        using Participant me = cluster.Procs.Join(ProcKind.Backend);
        pool.Smgr.Create(Relation, ForkNumber.Main);
        for (int i = 0; i < pages; i++)
        {
            int b = pool.ReadBuffer(me, Relation, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
            pool.ReleaseBuffer(me, b);
        }
        pool.FlushAllBuffers(me);
    }

    private static unsafe long StopWorkers(Cluster cluster, int entries)
    {
        var h = (DemoStatsHeader*)Stats(cluster);
        var e = (DemoStatsEntry*)((byte*)h + 64);
        Volatile.Write(ref h->StopRequested, 1); // release; pairs with the workers' acquire load
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(20))
        {
            bool all = true;
            for (int i = 0; i < entries; i++)
                if (Volatile.Read(ref e[i].Role) == (int)DemoRole.Worker + 1 && Volatile.Read(ref e[i].Stopped) == 0)
                    all = false;
            if (all)
                break;
            Thread.Sleep(10);
        }
        long ops = 0;
        for (int i = 0; i < entries; i++)
            if (Volatile.Read(ref e[i].Role) == (int)DemoRole.Worker + 1)
                ops += Volatile.Read(ref e[i].Ops); // acquire; pairs with the worker's release store
        return ops;
    }

    private static string KillOneWorker(Supervisor cluster, StatusView live, int workers)
    {
        ChildInfo? victim = cluster.GetChildren().FirstOrDefault(c => c.Name == "worker 0" && c.Pid != 0);
        if (victim is null)
            return "worker 0 was not running";
        int before = cluster.Incarnation;
        var sw = Stopwatch.StartNew();
        try
        {
            using Process p = Process.GetProcessById(victim.Pid);
            p.Kill();
        }
        catch (ArgumentException)
        {
            return $"worker 0 (pid {victim.Pid}) had already exited";
        }
        live.Note($"killed worker 0 (pid {victim.Pid}) with {(OperatingSystem.IsWindows() ? "TerminateProcess" : "SIGKILL")}");
        // Working again = a new incarnation whose workers all count operations.
        while (sw.Elapsed < TimeSpan.FromSeconds(30))
        {
            if (cluster.Incarnation > before && live.AllWorkersBusy(workers))
            {
                string s = $"worker 0 (pid {victim.Pid}) killed; shared memory rebuilt and every worker busy again after {sw.Elapsed.TotalMilliseconds:F0} ms";
                live.Note(s);
                return s;
            }
            Thread.Sleep(20);
            live.Refresh();
        }
        return $"worker 0 (pid {victim.Pid}) killed; the cluster was not working again within 30 s";
    }

    /// <summary>Acknowledged increments: the sum of every worker process's acknowledgement file (every incarnation's).</summary>
    private static long SumAcks(string dir)
    {
        long sum = 0;
        foreach (string f in Directory.EnumerateFiles(Path.Combine(dir, AcksDirectory)))
        {
            byte[] b = File.ReadAllBytes(f);
            if (b.Length >= 8)
                sum += BinaryPrimitives.ReadInt64LittleEndian(b);
        }
        return sum;
    }

    private static long SumCounters(string dir, int pages)
    {
        using var smgr = new Smgr(dir);
        byte[] page = new byte[BufferPool.BlockSize];
        long sum = 0;
        for (uint b = 0; b < (uint)pages; b++)
        {
            var tag = new BufferTag(Relation, ForkNumber.Main, b);
            smgr.ReadVerified(tag, page);
            sum += BinaryPrimitives.ReadInt64LittleEndian(page.AsSpan(CounterOffset));
        }
        return sum;
    }

    // ------------------------------------------------------------------
    // Children
    // ------------------------------------------------------------------

    /// <summary>A child: checkpointer, bgwriter or worker.</summary>
    public static unsafe int RunChild(string[] args)
    {
        if (args.Length < 2)
            throw new ArgumentException("usage: pgipc demo-child checkpointer|bgwriter|walwriter|worker <index> [pages]");
        RegisterIncrementRmgr();
        using Cluster cluster = Cluster.Attach();
        using Participant me = cluster.JoinAsChild();
        BufferPool pool = cluster.Buffers ?? throw new PgIpcException("the demo cluster has no buffer pool");
        Checkpointer ck = cluster.Get<Checkpointer>();
        var h = (DemoStatsHeader*)Stats(cluster);
        if (me.ProcNumber >= h->NumEntries)
            throw new PgIpcException($"{StatsName} has {h->NumEntries} entries; this participant is number {me.ProcNumber}");
        DemoStatsEntry* mine = (DemoStatsEntry*)((byte*)h + 64) + me.ProcNumber;
        int index = int.Parse(args[1]);
        mine->Ops = 0;
        mine->Stopped = 0;
        mine->Index = index;
        int supervisor = cluster.SupervisorPid;
        IPgIpcPlatform platform = cluster.Platform;

        using var stop = new CancellationTokenSource();
        // The daemons sleep on their latch: a watcher turns the supervisor's stop request into a cancellation.
        var watcher = new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                // A crash stop: leave at once (quickdie), without the shutdown checkpoint, which could wait on a
                // buffer the crashed worker held. Shared memory is being thrown away.
                if (cluster.ImmediateStopRequested)
                    Environment.Exit(2);
                // Gone only: a zombie supervisor (exited, its parent not yet waiting) counts as alive, as kill(pid, 0) sees it.
                if (cluster.ShutdownRequested || platform.Processes.GetLiveness(supervisor) == ProcessLiveness.Gone)
                {
                    stop.Cancel();
                    return;
                }
                Thread.Sleep(20);
            }
        }) { IsBackground = true, Name = "demo stop watcher" };
        watcher.Start();
        try
        {
            switch (args[0])
            {
                case "checkpointer":
                    Volatile.Write(ref mine->Role, (int)DemoRole.Checkpointer + 1);
                    ck.Run(me, stop.Token);
                    break;
                case "bgwriter":
                    Volatile.Write(ref mine->Role, (int)DemoRole.BgWriter + 1);
                    cluster.Get<BackgroundWriter>().Run(me, stop.Token);
                    break;
                case "walwriter":
                    Volatile.Write(ref mine->Role, (int)DemoRole.WalWriter + 1);
                    WalWriter.Run(cluster.Get<XLog>(), me, stop.Token);
                    break;
                case "worker":
                    Volatile.Write(ref mine->Role, (int)DemoRole.Worker + 1);
                    Work(me, pool, ck, cluster.Get<Lmgr.LockManager>(), args.Length > 3 && args[3] == "nowal" ? null : cluster.Get<XLog>(), h, mine, int.Parse(args[2]), stop.Token);
                    break;
                default:
                    throw new ArgumentException($"unknown demo role \"{args[0]}\"");
            }
        }
        catch (DataSyncFailedException e)
        {
            // PANIC (data_sync_retry = off): what was written since the last good fsync may be lost. Exit with a
            // crash code: the supervisor then does a crash restart instead of this checkpointer carrying on.
            Console.Error.WriteLine($"pgipc demo {args[0]}: PANIC: {e.Message}");
            return 2;
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            stop.Cancel();
        }
        return 0;
    }

    private static unsafe void Work(Participant me, BufferPool pool, Checkpointer ck, Lmgr.LockManager lm, XLog? wal, DemoStatsHeader* h, DemoStatsEntry* mine,
        int pages, CancellationToken stop)
    {
        var rng = new Random(Environment.ProcessId);
        long ops = 0;
        Span<byte> value = stackalloc byte[8];
        using Microsoft.Win32.SafeHandles.SafeFileHandle? ack = wal is null ? null
            : File.OpenHandle(Path.Combine(wal.DataDirectory, AcksDirectory, Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture)), FileMode.Create, FileAccess.Write);
        long nextCheckpoint = Stopwatch.GetTimestamp() + 2 * Stopwatch.Frequency;
        // The relation is being updated (RowExclusive, as an UPDATE takes it); one worker claims the checkpoint-requester
        // role with an advisory lock, held for its whole life (released when it leaves or dies).
        lm.Acquire(me, RelationLock, Lmgr.LockMode.RowExclusive);
        bool requester = lm.TryAdvisoryLock(me, CheckpointRequesterKey);
        while (!stop.IsCancellationRequested && Volatile.Read(ref h->StopRequested) == 0) // acquire; pairs with the supervisor
        {
            int b = pool.ReadBuffer(me, Relation, ForkNumber.Main, rng.Next(pages));
            pool.LockBuffer(me, b, BufferLockMode.Exclusive);
            Span<byte> page = pool.GetPage(me, b)[CounterOffset..];
            long v = BinaryPrimitives.ReadInt64LittleEndian(page) + 1;
            BinaryPrimitives.WriteInt64LittleEndian(page, v);
            pool.MarkBufferDirty(me, b);
            // Logged under the content lock (the page LSN is set before anyone can write the page out).
            ulong lsn = 0;
            if (wal is not null)
            {
                BinaryPrimitives.WriteInt64LittleEndian(value, v);
                lsn = wal.BeginInsert().RegisterBuffer(0, pool, me, b).RegisterBufData(0, value).Insert(me, IncrementRmId, 0);
            }
            pool.LockBuffer(me, b, BufferLockMode.Unlock);
            pool.ReleaseBuffer(me, b);
            if (wal is not null)
                wal.Flush(me, lsn); // durable from here: acknowledge it
            Volatile.Write(ref mine->Ops, ++ops); // release; pairs with the supervisor's acquire load
            if (ack is not null)
            {
                BinaryPrimitives.WriteInt64LittleEndian(value, ops);
                RandomAccess.Write(ack, value, 0);
            }
            if (requester && Stopwatch.GetTimestamp() >= nextCheckpoint)
            {
                ck.RequestCheckpoint(me, CheckpointFlags.Wait);
                nextCheckpoint = Stopwatch.GetTimestamp() + 2 * Stopwatch.Frequency;
            }
        }
        lm.ReleaseAll(me, Lmgr.LockScope.Session);
        Volatile.Write(ref mine->Stopped, 1);
    }

    // ------------------------------------------------------------------
    // The live status
    // ------------------------------------------------------------------

    /// <summary>One line per participant (pid, kind, role, wait event, ops/s), redrawn in place on a terminal.</summary>
    private sealed unsafe class StatusView(Supervisor cluster, HashSet<string> segmentIds)
    {
        private readonly bool _inPlace = !Console.IsOutputRedirected;
        private readonly Dictionary<int, (long Ops, long At)> _last = [];
        private readonly List<string> _notes = [];
        private int _drawn;
        private long _lastPrint;

        public void Note(string s)
        {
            _notes.Add(s);
            if (!_inPlace)
                Console.WriteLine("  * " + s);
        }

        /// <summary>True when <paramref name="workers"/> workers of the current shared memory have each done some work.</summary>
        public bool AllWorkersBusy(int workers)
        {
            // Under ReadShared: a crash restart cannot unmap the segment while the counters are read.
            return cluster.ReadShared(c =>
            {
                var e = (DemoStatsEntry*)(Stats(c) + 64);
                int busy = 0;
                foreach (PgProcInfo p in c.Procs.GetProcs())
                    if (Volatile.Read(ref e[p.ProcNumber].Role) == (int)DemoRole.Worker + 1 && Volatile.Read(ref e[p.ProcNumber].Ops) > 0)
                        busy++; // acquire; pairs with the worker's release store
                return busy >= workers;
            });
        }

        public void Refresh()
        {
            // Under ReadShared: a crash restart cannot unmap the segment while the counters are read.
            List<string> lines = cluster.ReadShared(Snapshot);
            long now = Stopwatch.GetTimestamp();
            if (_inPlace)
            {
                var sb = new StringBuilder();
                if (_drawn > 0)
                    sb.Append($"\x1b[{_drawn}A");
                foreach (string l in lines.Concat(_notes.Select(n => "  * " + n)))
                    sb.Append(l).Append("\x1b[K\n");
                for (int i = lines.Count + _notes.Count; i < _drawn; i++)
                    sb.Append("\x1b[K\n");
                Console.Write(sb.ToString());
                _drawn = Math.Max(_drawn, lines.Count + _notes.Count);
            }
            else if (now - _lastPrint >= Stopwatch.Frequency)
            {
                _lastPrint = now;
                foreach (string l in lines)
                    Console.WriteLine(l);
            }
        }

        private List<string> Snapshot(Cluster c)
        {
            segmentIds.Add(c.Segment.Handle.Id);
            var e = (DemoStatsEntry*)(Stats(c) + 64);
            long now = Stopwatch.GetTimestamp();
            var lines = new List<string> { $"  {"pid",7}  {"kind",-16} {"role",-18} {"wait event",-22} {"ops/s",10}" };
            foreach (PgProcInfo p in c.Procs.GetProcs())
            {
                int role = Volatile.Read(ref e[p.ProcNumber].Role);
                string roleName = role switch
                {
                    (int)DemoRole.Checkpointer + 1 => "checkpointer",
                    (int)DemoRole.BgWriter + 1 => "background writer",
                    (int)DemoRole.WalWriter + 1 => "wal writer",
                    (int)DemoRole.Worker + 1 => $"worker {e[p.ProcNumber].Index}",
                    _ => p.Pid == Environment.ProcessId ? "supervisor" : "(starting)",
                };
                string rate = "";
                if (role == (int)DemoRole.Worker + 1)
                {
                    long ops = Volatile.Read(ref e[p.ProcNumber].Ops); // acquire; pairs with the worker's release store
                    int key = p.Pid;
                    if (_last.TryGetValue(key, out var prev) && now > prev.At)
                    {
                        double perSec = (ops - prev.Ops) * (double)Stopwatch.Frequency / (now - prev.At);
                        rate = perSec.ToString("N0");
                    }
                    _last[key] = (ops, now);
                }
                lines.Add($"  {p.Pid,7}  {p.Kind,-16} {roleName,-18} {WaitEventName(p),-22} {rate,10}");
            }
            lines.Add($"  incarnation {cluster.Incarnation}, crash restarts {cluster.CrashRestarts}");
            return lines;
        }

        public void Finish()
        {
            if (!_inPlace)
                Refresh();
        }

        private static string WaitEventName(PgProcInfo p)
        {
            if (p.LwWaiting != LWLockWaitState.NotWaiting)
                return "LWLock";
            // The modules' names (CheckpointerMain, BgWriterHibernate, ...); hex for a number nobody registered.
            return WaitEventRegistry.NameOf(p.WaitEvent);
        }
    }
}
