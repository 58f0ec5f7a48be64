/*-------------------------------------------------------------------------
 * Supervisor.cs
 *   The supervisor of a cluster (PostgreSQL's postmaster): made by
 *   ClusterBuilder.Build, it owns the cluster's shared memory (its
 *   Cluster view, replaced at each crash restart), starts children by
 *   exec, watches them, restarts after a crash and shuts down. A child
 *   attaches with Cluster.Attach (Cluster.cs); the subsystems in shared
 *   memory are modules (ShmemModule.cs). This file: creation, properties
 *   and the public API for children; the server loop is in
 *   Supervisor.Loop.cs, crash handling and shutdown in
 *   Supervisor.Shutdown.cs.
 *
 * NOTES
 *   Children. Every child is described by a slot of "PgIpc.BackgroundWorkers"
 *   (see BackgroundWorkers.cs): static workers and StartChild fill one from
 *   the supervisor, RegisterDynamicBackgroundWorker from any process, which
 *   then sends PMSignal BackgroundWorkerChange. The supervisor keeps a
 *   private record per child (its spec, its Process), as the postmaster
 *   keeps BackgroundWorkerList, so a crash restart that throws the shared
 *   slots away still knows which workers are permanent. A child is started
 *   with System.Diagnostics.Process (exec, not fork); it gets the segment's
 *   handle in PGIPC_CLUSTER, the supervisor's pid in PGIPC_SUPERVISOR_PID,
 *   its slot kind in PGIPC_PROC_KIND and its worker slot and generation in
 *   PGIPC_WORKER_SLOT / PGIPC_WORKER_GENERATION. Nothing else is inherited:
 *   .NET opens descriptors close-on-exec and the supervisor-death watch is
 *   found by name (ProcArray's lifeline), so a child learns of the
 *   supervisor's death through WaitEvents.SupervisorDeath.
 *
 *   A Build that fails once the segment exists (a startup hook throws, more
 *   static workers than child slots) shuts the new cluster down before it
 *   rethrows: the caller has no Cluster to dispose, and the segment (ipcs
 *   -m, /dev/shm) and the Posix latch FIFOs' directory would otherwise
 *   outlive the process.
 *
 *   Modules. Each incarnation of shared memory is made from the builder's
 *   one module list (ClusterBuilder.Modules): the segment is sized from
 *   it, every module created in order, and the list recorded in
 *   "PgIpc.ClusterConfig" so a child attaches the same modules from the
 *   handle alone (the buffer pool with its size and data directory).
 *
 *   The supervisor killed (SIGKILL). Children see WaitEvents.SupervisorDeath
 *   and exit; the next Create on the key finds the stale segment and
 *   removes it and the cluster's other OS objects (ShmemSegment.Create,
 *   ClusterLeftovers.cs), or refuses while an orphaned child is attached.
 *
 *   Mirrors src/backend/postmaster/postmaster.c (PostmasterMain's set-up,
 *   BackgroundWorkerList) and pmchild.c (the per-child records); the loop
 *   and shutdown parts name theirs.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using PgIpc.Buffers;
using PgIpc.Diagnostics;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sinval;

namespace PgIpc.Postmaster;

/// <summary>How the supervisor stops its children.</summary>
public enum ShutdownMode
{
    /// <summary>Wait for the children to exit on their own (SIGTERM to the postmaster).</summary>
    Smart,
    /// <summary>Ask every child to stop (ShutdownRequested + latch), then wait (SIGINT).</summary>
    Fast,
    /// <summary>Kill every child at once (SIGQUIT).</summary>
    Immediate,
}

/// <summary>Where the supervisor is.</summary>
public enum ClusterState
{
    /// <summary>Built; children not started.</summary>
    Created,
    /// <summary>The cluster runs: children are started and restarted.</summary>
    Running,
    /// <summary>A shutdown is under way: no child is started any more.</summary>
    ShuttingDown,
    /// <summary>Shut down: no child runs, shared memory is destroyed.</summary>
    Stopped,
}

/// <summary>A child as the supervisor sees it.</summary>
public sealed record ChildInfo(string Name, int Slot, int Pid, ProcKind Kind, bool Permanent, int Starts);

/// <summary>
/// The supervisor of a cluster (the postmaster): owns its shared memory (<see cref="Cluster"/>, replaced at each crash
/// restart), starts children by exec, watches them, restarts after a crash and shuts down. Made by
/// <see cref="ClusterBuilder.Build"/>; Dispose is a fast shutdown that leaves no OS object behind.
/// </summary>
public sealed partial class Supervisor : IDisposable
{
    /// <summary>How often the loop polls children when no event woke it.</summary>
    public const int PollIntervalMs = 100;

    private sealed class ChildRecord(ChildSpec spec)
    {
        public readonly ChildSpec Spec = spec;
        public int Slot = -1;
        public int Generation;
        public Process? Process;
        public int Pid;
        public long NotBeforeMs;
        public int Starts;
        /// <summary>The worker request (SupervisorRequests) this child was started for, or -1.</summary>
        public int RequestSlot = -1;
        public int RequestGeneration;
        /// <summary>0, or when a child asked to restart is killed if still running (long.MaxValue: killed).</summary>
        public long RestartDeadlineMs;
    }

    private readonly ClusterBuilder _builder;
    private readonly IPgIpcPlatform _platform;
    private readonly ILogger _log;
    private readonly Lock _lock = new();
    private readonly AutoResetEvent _wake = new(false);
    private readonly ManualResetEventSlim _childrenGone = new(false);
    private readonly ManualResetEventSlim _stopped = new(false);
    private readonly List<ChildRecord> _children = [];
    private Thread? _loop;
    private volatile bool _loopExit;
    private int _crashRestarts;
    private int _runningChildren; // children with a Process (changed under _lock; read by the metrics gauge)
    private bool _uncleanExit; // under _lock: a child of this shared memory was killed or exited non-zero during shutdown (no shutdown writes)
    private int _incarnation;

    // The current incarnation of shared memory; replaced (under _lock) by a crash restart.
    private Cluster _cluster;

    private Supervisor(ClusterBuilder builder, IPgIpcPlatform platform)
    {
        _builder = builder;
        _platform = platform;
        _log = builder.LoggerValue
            ?? (builder.LogWriter is { } w ? new TextWriterLogger(w, $"pgipc supervisor {platform.Processes.CurrentProcessId}: ")
                : PgIpcLogging.LoggerFactory.CreateLogger(PgIpcLogging.SupervisorCategory));
        _cluster = null!; // set by Create before the supervisor is published
    }

    // ------------------------------------------------------------------
    // Creation
    // ------------------------------------------------------------------

    internal static Supervisor Create(ClusterBuilder b)
    {
        IPgIpcPlatform platform = b.PlatformChoice ?? PgIpcPlatform.Current;
        IReadOnlyList<ShmemModule> modules = b.Modules(); // throws on bad options, before anything is made
        if (b.DataDirectoryValue is { } dataDirectory)
            DataDirectoryCheck.CreateOrCheck(platform.Files, dataDirectory); // checkDataDir, before shared memory is made
        var s = new Supervisor(b, platform);
        s.InitShmem(modules);
        s._incarnation = 1;
        if (s._cluster.Segment.ReplacedStaleSegment)
        {
            s._log.StaleSegmentFound(b.Key);
            s._log.StaleSegmentsRemoved(b.Key, s._cluster.Segment.LeftoversRemoved);
        }
        try
        {
            s.RunStartupHooks();
            foreach (ChildSpec spec in b.StaticWorkers)
                s.AddRecord(spec, 0); // NoFreeBackgroundWorkerSlotException: more static workers than WithMaxChildren
        }
        catch
        {
            // The caller gets no Supervisor to dispose: remove the segment, latch FIFOs and semaphores made above.
            s.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero); // no children yet; Immediate: nothing flushed
            throw;
        }
        PgIpcMetrics.AddSupervisor(s, b.Key, () => s.RunningChildren); // removed when stopped (Shutdown, or a crash with restart-after-crash off)
        return s;
    }

    /// <summary>CreateSharedMemoryAndSemaphores: a new segment with every module created, in list order.</summary>
    private void InitShmem(IReadOnlyList<ShmemModule> modules)
    {
        ClusterSettings settings = _builder.Settings;
        var sizes = new ShmemSizeBuilder();
        sizes.RequestAddinShmemSpace(ClusterConfig.ShmemName, ClusterConfig.ShmemSize(modules));
        foreach (ShmemModule m in modules)
            sizes.RequestAddinShmemSpace(m.Name, m.Size(settings));
        ShmemSegment seg = ShmemSegment.Create(_builder.Key, sizes, _platform, ClusterLeftovers.Instance, _builder.SharedMemorySettings);
        try
        {
            Cluster c = Cluster.Create(seg, modules, settings);
            PMSignal.OnSignal(c.Procs, () => _wake.Set());
            _cluster = c;
        }
        catch
        {
            seg.Destroy();
            throw;
        }
        // RemovePgTempFiles: at start and at each crash restart no process of this cluster runs (the segment was
        // just made, refused while an orphan was attached), so every temporary file left is garbage.
        if (settings.DataDirectory is { } dataDirectory && Storage.TempFileSpace.RemoveTempFiles(dataDirectory) is > 0 and int removed)
            _log.TempFilesRemoved(removed, Storage.TempFileSpace.TempDirectoryOf(dataDirectory));
    }

    private void RunStartupHooks()
    {
        foreach (Action<Cluster> hook in _builder.StartupHooks)
            hook(_cluster);
    }

    // ------------------------------------------------------------------
    // Properties
    // ------------------------------------------------------------------

    /// <summary>The cluster's key.</summary>
    public string Key => _builder.Key;

    /// <summary>
    /// The current incarnation of the cluster's shared memory, as this process sees it. A crash restart replaces it:
    /// read it again after one (see <see cref="ReadShared{T}"/> to use it while no restart can happen).
    /// </summary>
    public Cluster Cluster => Volatile.Read(ref _cluster);

    /// <summary>The current segment's handle, as children receive it.</summary>
    public string Handle => Cluster.Handle;

    /// <summary>The OS backend.</summary>
    public IPgIpcPlatform Platform => _platform;

    /// <summary>How many times shared memory was rebuilt after a crash.</summary>
    public int CrashRestarts => Volatile.Read(ref _crashRestarts);

    /// <summary>1 for the first shared memory, one more per crash restart.</summary>
    public int Incarnation => Volatile.Read(ref _incarnation);

    /// <summary>Where the supervisor is.</summary>
    public ClusterState State { get; private set; } = ClusterState.Created;

    /// <summary>Children running now (the "pgipc.supervisor.children" gauge).</summary>
    internal int RunningChildren => Volatile.Read(ref _runningChildren);

    // ------------------------------------------------------------------
    // Children
    // ------------------------------------------------------------------

    /// <summary>Starts the supervisor's loop and the static workers.</summary>
    public void Start()
    {
        lock (_lock)
        {
            if (State != ClusterState.Created)
                throw new InvalidOperationException($"cluster \"{_builder.Key}\" is {State}, not Created");
            State = ClusterState.Running;
            _loop = new Thread(Loop) { IsBackground = true, Name = $"pgipc supervisor {_builder.Key}" };
            _loop.Start();
        }
        _log.SupervisorStarted(_builder.Key, Handle);
        _wake.Set();
    }

    /// <summary>
    /// Starts a child now (the supervisor only). Returns its handle, which reports its pid once it runs.
    /// </summary>
    public BackgroundWorkerHandle StartChild(ChildSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        BackgroundWorkerHandle h;
        lock (_lock)
        {
            if (State is ClusterState.ShuttingDown or ClusterState.Stopped)
                throw new InvalidOperationException($"cluster \"{_builder.Key}\" is {State}; no child can be started");
            h = AddRecord(spec, 0);
        }
        _wake.Set();
        return h;
    }

    /// <summary>The children the supervisor knows of, with their pids (0 when not running).</summary>
    public IReadOnlyList<ChildInfo> GetChildren()
    {
        lock (_lock)
            return [.. _children.Select(r => new ChildInfo(r.Spec.Name, r.Slot, r.Process is null ? 0 : r.Pid, r.Spec.Kind, r.Spec.IsPermanent, r.Starts))];
    }

    /// <summary>
    /// Runs <paramref name="read"/> while no crash restart can replace shared memory (it holds the supervisor's state
    /// lock, which the loop holds while it destroys and recreates the segment), so pointers into the
    /// <see cref="Cluster"/>'s segment stay valid for its duration. Keep it short: the supervisor's loop waits meanwhile.
    /// </summary>
    public T ReadShared<T>(Func<Cluster, T> read)
    {
        ArgumentNullException.ThrowIfNull(read);
        lock (_lock)
        {
            if (!_cluster.IsAttached)
                throw new InvalidOperationException($"cluster \"{_builder.Key}\" is {State}: its shared memory is gone");
            return read(_cluster);
        }
    }

    private BackgroundWorkerHandle AddRecord(ChildSpec spec, long notBeforeMs, int requestSlot = -1, int requestGeneration = 0)
    {
        BackgroundWorkerHandle h = _cluster.BackgroundWorkers.Register(spec);
        _children.Add(new ChildRecord(spec)
        {
            Slot = h.Slot, Generation = h.Generation, NotBeforeMs = notBeforeMs, RequestSlot = requestSlot, RequestGeneration = requestGeneration,
        });
        return h;
    }

    // ------------------------------------------------------------------
    // Helpers
    // ------------------------------------------------------------------

    private static string Describe(ChildRecord r)
        => $"{r.Spec.Kind switch { ProcKind.Auxiliary => "auxiliary process", ProcKind.Backend => "backend process", _ => "background worker" }} \"{r.Spec.Name}\" (PID {r.Pid})";

    /// <summary>LWLocks still held by the slots of <paramref name="pid"/> (their owner has exited).</summary>
    private int HeldLWLocksOf(int pid)
    {
        int held = 0;
        if (pid == 0 || !_cluster.IsAttached)
            return 0;
        foreach (PgProcInfo p in _cluster.Procs.GetProcs())
            if (p.Pid == pid)
                held += p.HeldLWLocks;
        return held;
    }

    private static string ExitReason(int code)
        => code > 128 && code < 128 + 65
            ? $"exited with exit code {code} (on Unix: terminated by signal {code - 128})"
            : $"exited with exit code {code}";

    /// <summary>A child's Process was reaped or killed: one child fewer running.</summary>
    private void ChildGone(ChildRecord r)
    {
        r.Process!.Dispose();
        r.Process = null;
        Interlocked.Decrement(ref _runningChildren);
    }
}
