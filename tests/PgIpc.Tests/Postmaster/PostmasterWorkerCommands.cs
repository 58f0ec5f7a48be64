/*-------------------------------------------------------------------------
 * PostmasterWorkerCommands.cs
 *   The test executable as a cluster child ("worker --backend b --run-child
 *   <mode> [ms]", started by a Cluster), and the worker commands that reach
 *   a cluster from a process the supervisor did not start.
 *
 * NOTES
 *   Child modes (every mode first bumps counter 0 of "test.pm" and records
 *   its pid in counter 1 + slot):
 *     sleep        join, wait on the latch until ShutdownRequested or the
 *                  supervisor's death (60 s at most), exit 0
 *     exit0 <ms>   join, sleep ms, exit 0
 *     crash <ms>   join, sleep ms, exit 3
 *     pages <n>    join, extend relation PagesRelation by n blocks through
 *                  the cluster's buffer pool, write PageValue(i) at
 *                  PageOffset of block i, mark them dirty, exit 0
 *     launcher <x> asks for worker "no-such-entry" (records the outcome in
 *                  counter LauncherUnknownState), then for AssignedEntry with
 *                  the 8-byte assignment x; waits for its outcome and records
 *                  the worker's pid, result and final state; exit 0
 *     assigned     reads its assignment x, records its pid in AssignedPid,
 *                  reports AssignedResult(x); exit 0 (5: no assignment)
 *     restart-sibling  asks the supervisor to restart "ghost" (no such
 *                  child) and RestartTarget; exit 0
 *     service <x>  posts service request ThrowingServiceCode, then
 *                  ServiceCode with the 8-byte argument x; exit 0
 *     wal-incr <i> the WAL kill loop's child (Wal/WalWorkerCommands.cs)
 *   Worker commands:
 *     pm-supervise <backend> <key> <k> <mode> <ms> <dataDir|->
 *                  this worker becomes a supervisor: builds a cluster
 *                  (data directory optional), starts k children in
 *                  <mode> <ms>, waits until all joined, creates a pinned
 *                  DSM segment (a leftover if the supervisor is killed)
 *                  -> ok <handle> <dsmHandle> <dsmOsName> <pid>...
 *                  (the test kills this worker with SIGKILL: children
 *                  and OS objects are what it then inspects)
 *     pm-named-procs <key>
 *                  on the Posix backend with named semaphores (the macOS
 *                  path): a segment with a participant slot array, whose
 *                  semaphores are /dev/shm/sem.pgipc.* and latches FIFOs
 *                  -> ok <handle>   (the test kills this worker)
 *     pm-attach <handle>                    -> ok
 *     pm-register <name> <restartMs> <mode> [ms] -> ok <slot> <generation>
 *     pm-status <slot> <generation>         -> ok <status> <pid>
 *     pm-detach                             -> ok
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Globalization;
using PgIpc.Buffers;
using PgIpc.Dsm;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Postmaster;

internal static class PostmasterWorkerCommands
{
    public const string CountersName = "test.pm";
    public const int NumCounters = 32;
    public const string RunChildOption = "--run-child";

    /// <summary>Where a "sleep-report" child writes how it was asked to stop ("immediate", "fast").</summary>
    public static string StopKindFile(int pid) => Path.Combine(Path.GetTempPath(), $"pgipc-test-stopkind-{pid}");

    /// <summary>The LWLock "exit0-holding-lwlock" children take and never release.</summary>
    public const string HeldLockName = "pm.held-lock";

    public const uint PagesRelation = 4242;
    public const int PageOffset = 512;

    /// <summary>What the "pages" child writes into block <paramref name="block"/>.</summary>
    public static long PageValue(long block) => 0x5EED_0000_0000L + block;

    public const string UserModuleName = "pm.user-module";
    public const long UserModuleMagic = 0x4D4F_4455_4C45; // "MODULE"

    /// <summary>
    /// A user's module as the module tests register it: 64 bytes whose first word the supervisor's init sets to
    /// <see cref="UserModuleMagic"/>; the "user-module" child writes its pid into the second.
    /// </summary>
    public static readonly ShmemModule<ShmemRegion> UserModule = new(UserModuleName, _ => 64,
        c => c.Segment.InitStruct(UserModuleName, 64, r => r.AsSpan<long>()[0] = UserModuleMagic, out _));

    // Supervisor request children (counters of "test.pm" from index 20 on; 1..4 hold the children's pids).
    public const string AssignedEntry = "assigned-worker";
    public const string RestartTarget = "victim";
    public const int LauncherUnknownState = 20, LauncherWorkerPid = 21, LauncherResult = 22, LauncherFinalState = 23, AssignedPid = 24;
    public const int ThrowingServiceCode = 1, ServiceCode = 2;

    /// <summary>What the "assigned" worker reports for assignment <paramref name="x"/>.</summary>
    public static long AssignedResult(long x) => x * 3 + 1;

    private static readonly TimeSpan ChildPatience = TimeSpan.FromSeconds(60);

    private static byte[] LongBytes(long v)
    {
        byte[] b = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, v);
        return b;
    }

    private static Cluster? s_cluster;
    private static BackgroundWorkerHandle? s_last;

    /// <summary>
    /// A cluster builder as the supervisor tests use it: small slot counts, the log to <paramref name="log"/>, and the
    /// "test.pm" counters the children write.
    /// </summary>
    public static ClusterBuilder TestBuilder(string what, IPgIpcPlatform platform, TextWriter log, TimeSpan stopGrace)
        => new ClusterBuilder(TestEnvironment.UniqueKey(what))
            .WithPlatform(platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
            .WithMaxChildren(4)
            .WithLog(log)
            .WithStopGrace(stopGrace)
            .RequestShmem(CountersName, NumCounters * 8)
            .OnShmemStartup(c => c.InitStruct(CountersName, NumCounters * 8, null, out _));

    /// <summary>The spec of a child that runs this test executable in <paramref name="mode"/>.</summary>
    public static ChildSpec Spec(string name, string backend, string mode, int ms = 0, ProcKind kind = ProcKind.BackgroundWorker, int restartIntervalMs = -1)
        => ChildSpec.ForThisProgram(name, TestWorker.Verb, ["--backend", backend, RunChildOption, mode, ms.ToString(CultureInfo.InvariantCulture)], kind, restartIntervalMs);

    /// <summary>Runs the child when <paramref name="args"/> has --run-child; returns its exit code, or -1 when not a child.</summary>
    public static int TryRunChild(string[] args)
    {
        int i = Array.IndexOf(args, RunChildOption);
        if (i < 0 || i + 1 >= args.Length)
            return -1;
        string mode = args[i + 1];
        int ms = i + 2 < args.Length ? int.Parse(args[i + 2], CultureInfo.InvariantCulture) : 0;
        using Cluster cluster = Cluster.Attach();
        using Participant me = cluster.JoinAsChild();
        if (cluster.Segment.TryFindStruct(CountersName, out ShmemRegion r))
        {
            Span<long> counters = r.AsSpan<long>();
            Interlocked.Increment(ref counters[0]);
            int slot = int.Parse(Environment.GetEnvironmentVariable(Cluster.WorkerSlotVariable) ?? "0", CultureInfo.InvariantCulture);
            if (1 + slot < NumCounters)
                Volatile.Write(ref counters[1 + slot], Environment.ProcessId);
        }
        switch (mode)
        {
            case "sleep":
            case "sleep-report":
            {
                long deadline = Environment.TickCount64 + 60_000;
                while (!cluster.ShutdownRequested && Environment.TickCount64 < deadline)
                {
                    WaitEvents got = me.WaitLatch(WaitEvents.LatchSet | WaitEvents.SupervisorDeath | WaitEvents.Timeout, 200);
                    if ((got & WaitEvents.SupervisorDeath) != 0)
                        return 1;
                    me.ResetLatch();
                }
                if (mode == "sleep-report")
                    File.WriteAllText(StopKindFile(Environment.ProcessId), cluster.ImmediateStopRequested ? "immediate" : cluster.ShutdownRequested ? "fast" : "none");
                return 0;
            }
            case "exit0":
                Thread.Sleep(ms);
                return 0;
            case "user-module":
            {
                // Attached on first use through its descriptor (the supervisor recorded its name, not its code).
                Span<long> words = cluster.Get(UserModule).AsSpan<long>();
                if (words[0] != UserModuleMagic)
                    return 4; // a crash for the supervisor: the test sees a restart
                Volatile.Write(ref words[1], Environment.ProcessId); // release; the test reads it after the child exited
                return 0;
            }
            case "crash":
                Thread.Sleep(ms);
                return 3;
            case "exit1":
                Thread.Sleep(ms);
                return 1;
            case "exit0-holding-lwlock":
            {
                // Takes the test's LWLock exclusive and ends the process with exit code 0 while holding it (as when
                // another thread calls exit in the middle of a critical section): no Dispose runs, only the exit hook.
                ShmemRegion lockRegion = cluster.InitStruct(HeldLockName, 64, reg => reg.As<LWLock>().Initialize(BuiltinTranche.Main), out _);
                lockRegion.As<LWLock>().Acquire(me, LWLockMode.Exclusive);
                Thread.Sleep(ms);
                Environment.Exit(0);
                return 0;
            }
            case "launcher":
            {
                Span<long> counters = cluster.Segment.TryFindStruct(CountersName, out ShmemRegion cr) ? cr.AsSpan<long>() : throw new InvalidOperationException("no counters");
                SupervisorRequests requests = cluster.SupervisorRequests;
                using (WorkerRequestHandle unknown = requests.RequestWorker("no-such-entry", []))
                    Volatile.Write(ref counters[LauncherUnknownState], (long)unknown.WaitForOutcome(ChildPatience));
                using WorkerRequestHandle h = requests.RequestWorker(AssignedEntry, LongBytes(ms));
                int workerPid = h.WaitForStartup(ChildPatience);
                WorkerRequestState final = h.WaitForOutcome(ChildPatience);
                byte[] result = h.Result;
                Volatile.Write(ref counters[LauncherWorkerPid], workerPid);
                Volatile.Write(ref counters[LauncherResult], result.Length == 8 ? BinaryPrimitives.ReadInt64LittleEndian(result) : -1);
                Volatile.Write(ref counters[LauncherFinalState], (long)final); // last: the test waits for it
                return 0;
            }
            case "assigned":
            {
                WorkerAssignment? a = cluster.SupervisorRequests.GetAssignment();
                if (a is null || a.Entry != AssignedEntry || a.Argument.Length != 8)
                    return 5;
                long x = BinaryPrimitives.ReadInt64LittleEndian(a.Argument);
                if (cluster.Segment.TryFindStruct(CountersName, out ShmemRegion cr))
                    Volatile.Write(ref cr.AsSpan<long>()[AssignedPid], Environment.ProcessId);
                return a.Complete(LongBytes(AssignedResult(x))) ? 0 : 6;
            }
            case "restart-sibling":
                cluster.SupervisorRequests.RequestRestart("ghost");
                cluster.SupervisorRequests.RequestRestart(RestartTarget);
                return 0;
            case "service":
                cluster.SupervisorRequests.PostServiceRequest(ThrowingServiceCode, []);
                cluster.SupervisorRequests.PostServiceRequest(ServiceCode, LongBytes(ms));
                return 0;
            case "pages":
            {
                BufferPool pool = cluster.Buffers ?? throw new InvalidOperationException("the cluster has no buffer pool");
                for (int b = 0; b < ms; b++)
                {
                    int buf = pool.ReadBuffer(me, PagesRelation, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                    pool.LockBuffer(me, buf, BufferLockMode.Exclusive);
                    BinaryPrimitives.WriteInt64LittleEndian(pool.GetPage(me, buf)[PageOffset..], PageValue(pool.GetTag(me, buf).BlockNumber));
                    pool.MarkBufferDirty(me, buf);
                    pool.LockBuffer(me, buf, BufferLockMode.Unlock);
                    pool.ReleaseBuffer(me, buf);
                }
                return 0;
            }
            case "wal-incr":
                return Wal.WalWorkerCommands.RunIncrementChild(cluster, me, ms);
            default:
                return 2;
        }
    }

    private static Supervisor? s_supervised;
    private static ShmemSegment? s_named;

    private static string Supervise(string[] a)
    {
        string backend = a[1];
        string key = a[2];
        int k = int.Parse(a[3], CultureInfo.InvariantCulture);
        string mode = a[4];
        int ms = int.Parse(a[5], CultureInfo.InvariantCulture);
        string? dataDir = a[6] == "-" ? null : a[6];
        if (k < 1 || k > 4)
            throw new ArgumentOutOfRangeException(nameof(a), k, "1 to 4 children");
        ClusterBuilder b = new ClusterBuilder(key)
            .WithPlatform(PgIpcPlatform.Get(backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
            .WithMaxChildren(4)
            .WithLog(TextWriter.Null)
            .RequestShmem(CountersName, NumCounters * 8)
            .OnShmemStartup(c => c.InitStruct(CountersName, NumCounters * 8, null, out _));
        if (dataDir is not null)
            b.WithDataDirectory(dataDir);
        for (int i = 0; i < k; i++)
            b.AddBackgroundWorker(Spec($"c{i}", backend, mode, ms));
        s_supervised?.Dispose();
        Supervisor cluster = b.Build();
        s_supervised = cluster;
        cluster.Start();
        long deadline = Environment.TickCount64 + 30_000;
        while (cluster.Cluster.Procs.GetProcs().Count < k)
        {
            if (Environment.TickCount64 > deadline)
                throw new TimeoutException($"only {cluster.Cluster.Procs.GetProcs().Count} of {k} children joined within 30 s");
            Thread.Sleep(10);
        }
        DsmSegment dsm = DsmSegment.Create(cluster.Cluster.Dsm, 64 * 1024) ?? throw new InvalidOperationException("no DSM segment");
        dsm.Pin();
        dsm.PinMapping();
        IEnumerable<int> pids = cluster.GetChildren().Select(ch => ch.Pid);
        return $"ok {cluster.Handle} {dsm.Handle} {cluster.Cluster.Dsm.OsNameOf(dsm.Handle)} {string.Join(' ', pids)}";
    }

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        _ = seg;
        switch (a[0])
        {
            case "pm-supervise":
                reply = Supervise(a);
                return true;
            case "pm-named-procs":
            {
                var platform = new NamedSemaphorePosixPlatform();
                s_named?.Dispose();
                s_named = ShmemSegment.Create(a[1], NamedSemaphorePosixPlatform.Sizes(), platform);
                ProcArray.Init(s_named, NamedSemaphorePosixPlatform.Options, out _);
                reply = $"ok {s_named.Handle}";
                return true;
            }
            case "pm-attach":
                s_cluster?.Dispose();
                s_cluster = Cluster.Attach(a[1]);
                reply = "ok";
                return true;
            case "pm-register":
            {
                Cluster c = s_cluster ?? throw new InvalidOperationException("pm-attach first");
                ChildSpec spec = Spec(a[1], c.Platform.Name, a[3], a.Length > 4 ? int.Parse(a[4], CultureInfo.InvariantCulture) : 0,
                    restartIntervalMs: int.Parse(a[2], CultureInfo.InvariantCulture));
                s_last = c.RegisterDynamicBackgroundWorker(spec);
                reply = $"ok {s_last.Slot} {s_last.Generation}";
                return true;
            }
            case "pm-status":
            {
                BackgroundWorkerHandle h = s_last ?? throw new InvalidOperationException("pm-register first");
                BgwHandleStatus st = h.GetStatus(out int pid);
                reply = $"ok {st} {pid}";
                return true;
            }
            case "pm-detach":
                s_cluster?.Dispose();
                s_cluster = null;
                reply = "ok";
                return true;
            default:
                reply = "";
                return false;
        }
    }
}

/// <summary>The Posix backend with named semaphores (PosixSemaphoreProvider's macOS mode), for leftover tests.</summary>
internal sealed class NamedSemaphorePosixPlatform : IPgIpcPlatform
{
    public static readonly ProcArrayOptions Options = new(MaxBackends: 2, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);
    private readonly IPgIpcPlatform _posix = PgIpcPlatform.Get("posix");
    private readonly IProcSemaphoreProvider _named = new PgIpc.Platform.Posix.PosixSemaphoreProvider(forceNamed: true);

    public static ShmemSizeBuilder Sizes() => new ShmemSizeBuilder().RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(Options));

    public string Name => _posix.Name;
    public bool IsSupported => _posix.IsSupported;
    public ISharedMemoryProvider SharedMemory => _posix.SharedMemory;
    public IProcessServices Processes => _posix.Processes;
    public IProcSemaphoreProvider Semaphores => _named;
    public ILatchProvider Latches => _posix.Latches;
    public IDsmProvider Dsm => _posix.Dsm;
    public IFileSync Files => _posix.Files;
}
