/*-------------------------------------------------------------------------
 * Cluster.cs
 *   A process's view of a cluster: its shared memory segment, the
 *   participant slots, and the modules (the library's subsystems and the
 *   user's) as mapped in this process, plus the supervisor's stop flags.
 *
 * NOTES
 *   Every process of a cluster has one Cluster. The supervisor's comes
 *   from ClusterBuilder.Build (Supervisor.Cluster) and is replaced at each
 *   crash restart with the segment; a child's comes from Cluster.Attach,
 *   which needs only the handle the supervisor passes in PGIPC_CLUSTER.
 *   Attach reads the module list the supervisor recorded in the segment
 *   (ClusterConfig.cs) and runs each module's init-or-attach in the same
 *   order the supervisor created them (ShmemModule.cs).
 *
 *   Dispose detaches a child: each module's per-process resources are
 *   released (in reverse order), then the segment is unmapped. The
 *   supervisor's view belongs to the Supervisor, which destroys the
 *   segment at shutdown; disposing that view does nothing.
 *
 *   Mirrors the backend side of src/backend/storage/ipc/ipci.c
 *   (AttachSharedMemoryStructs under EXEC_BACKEND) and the child's half of
 *   postmaster.c (SubPostmasterMain reading the handle and settings).
 *-------------------------------------------------------------------------
 */
using PgIpc.Buffers;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sinval;

namespace PgIpc.Postmaster;

/// <summary>This process's view of a cluster: the segment, the participant slots and the modules.</summary>
public sealed class Cluster : IDisposable
{
    /// <summary>Environment variable with the segment's handle (set by the supervisor for its children).</summary>
    public const string HandleVariable = "PGIPC_CLUSTER";
    /// <summary>Environment variable with the supervisor's pid.</summary>
    internal const string SupervisorPidVariable = "PGIPC_SUPERVISOR_PID";
    /// <summary>Environment variable with the participant kind the child was started as.</summary>
    internal const string ProcKindVariable = "PGIPC_PROC_KIND";
    /// <summary>Environment variable with the child's background worker slot.</summary>
    internal const string WorkerSlotVariable = "PGIPC_WORKER_SLOT";
    /// <summary>Environment variable with the generation of the child's worker slot.</summary>
    internal const string WorkerGenerationVariable = "PGIPC_WORKER_GENERATION";

    private readonly ShmemSegment _segment;
    private readonly bool _ownedBySupervisor;
    private readonly Lock _lock = new();
    // Instances by module name, and the modules in creation/attach order (for detach in reverse). Filled by the
    // creating or attaching thread before the Cluster is published; later only by Get(module) under _lock.
    private readonly Dictionary<string, (ShmemModule Module, object Instance)> _byName = new(StringComparer.Ordinal);
    private readonly List<(ShmemModule Module, object Instance)> _order = [];
    private readonly HashSet<string> _recorded = new(StringComparer.Ordinal);
    private ProcArray? _procs;
    private BackgroundWorkerArray? _workers;
    private SupervisorRequests? _requests;
    private bool _disposed;
    private bool _ownsSegment = true;

    private Cluster(ShmemSegment segment, bool ownedBySupervisor)
    {
        _segment = segment;
        _ownedBySupervisor = ownedBySupervisor;
    }

    // ------------------------------------------------------------------
    // Creation (the supervisor) and attach (any other process)
    // ------------------------------------------------------------------

    /// <summary>
    /// The supervisor: records <paramref name="modules"/> in <paramref name="segment"/> and creates each in order.
    /// On failure the caller destroys the segment (the modules made so far are detached first).
    /// </summary>
    internal static Cluster Create(ShmemSegment segment, IReadOnlyList<ShmemModule> modules, ClusterSettings settings)
    {
        var c = new Cluster(segment, ownedBySupervisor: true);
        try
        {
            ClusterConfig.Init(segment, modules);
            var ctx = new ShmemModuleContext(c, isCreating: true, settings);
            foreach (ShmemModule m in modules)
            {
                c._recorded.Add(m.Name);
                c.Add(m, m.InitOrAttach(ctx));
            }
            c.CacheKernel();
            return c;
        }
        catch
        {
            c.DetachModules();
            throw;
        }
    }

    /// <summary>
    /// Attaches to the cluster whose handle is <paramref name="handle"/> (or, when null, the PGIPC_CLUSTER
    /// environment variable the supervisor sets for its children) and attaches every module the supervisor
    /// recorded: the library's own from their recorded options, the user's from <paramref name="modules"/> (a
    /// user's module not passed here is attached by <see cref="Get{T}(ShmemModule{T})"/> when first used).
    /// </summary>
    public static Cluster Attach(string? handle = null, params ShmemModule[] modules)
    {
        handle ??= Environment.GetEnvironmentVariable(HandleVariable);
        if (string.IsNullOrEmpty(handle))
            throw new InvalidShmemHandleException($"no cluster handle: pass one, or start the process from a supervisor (which sets {HandleVariable})");
        ArgumentNullException.ThrowIfNull(modules);
        ShmemSegment seg = ShmemSegment.Attach(ShmemHandle.Parse(handle));
        try
        {
            return AttachModules(seg, ownsSegment: true, modules);
        }
        catch
        {
            seg.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Attaches the modules of a segment this process has already attached (a test's worker process); Dispose then
    /// detaches the modules only and leaves the segment to its owner.
    /// </summary>
    internal static Cluster AttachTo(ShmemSegment segment, params ShmemModule[] modules)
        => AttachModules(segment, ownsSegment: false, modules);

    private static Cluster AttachModules(ShmemSegment seg, bool ownsSegment, ShmemModule[] modules)
    {
        var c = new Cluster(seg, ownedBySupervisor: false) { _ownsSegment = ownsSegment };
        try
        {
            var ctx = new ShmemModuleContext(c, isCreating: false, null);
            foreach (ModuleRecord rec in ClusterConfig.Read(seg))
            {
                c._recorded.Add(rec.Name);
                ShmemModule? m = BuiltinModules.FromRecord(rec.Name, rec.Factory, rec.Options)
                    ?? Array.Find(modules, x => x is not null && x.Name == rec.Name);
                if (m is not null)
                    c.Add(m, m.InitOrAttach(ctx));
            }
            foreach (ShmemModule m in modules)
            {
                ArgumentNullException.ThrowIfNull(m, nameof(modules));
                if (!c._recorded.Contains(m.Name))
                    throw new ModuleNotFoundException($"cluster segment {seg.Handle.Id} has no module \"{m.Name}\" (its supervisor did not register it)");
            }
            c.CacheKernel();
            return c;
        }
        catch
        {
            c.DetachModules();
            throw;
        }
    }

    private void Add(ShmemModule m, object instance)
    {
        if (!_byName.TryAdd(m.Name, (m, instance)))
            throw new ArgumentException($"two modules are named \"{m.Name}\"");
        _order.Add((m, instance));
    }

    private void CacheKernel()
    {
        _ = Procs;
        _workers = Find<BackgroundWorkerArray>();
        _requests = Find<SupervisorRequests>();
    }

    // ------------------------------------------------------------------
    // Modules
    // ------------------------------------------------------------------

    /// <summary>The instance of the module whose instance type is <typeparamref name="T"/>; throws <see cref="ModuleNotFoundException"/>.</summary>
    public T Get<T>() where T : class
        => Find<T>() ?? throw new ModuleNotFoundException($"cluster segment {_segment.Handle.Id} has no module of type {typeof(T).Name} attached in this process");

    /// <summary>The instance of the module whose instance type is <typeparamref name="T"/>, or null.</summary>
    public T? Find<T>() where T : class
    {
        lock (_lock)
        {
            foreach ((ShmemModule _, object instance) in _order)
                if (instance is T t)
                    return t;
        }
        return null;
    }

    /// <summary>
    /// The instance of <paramref name="module"/> in this process: attached on first use when the supervisor
    /// registered it and this process has not attached it yet. Throws <see cref="ModuleNotFoundException"/> when the
    /// cluster has no module of that name.
    /// </summary>
    public T Get<T>(ShmemModule<T> module) where T : notnull
    {
        ArgumentNullException.ThrowIfNull(module);
        ThrowIfDisposed();
        lock (_lock)
        {
            if (_byName.TryGetValue(module.Name, out (ShmemModule Module, object Instance) e))
                return (T)e.Instance;
            if (!_recorded.Contains(module.Name))
                throw new ModuleNotFoundException($"cluster segment {_segment.Handle.Id} has no module \"{module.Name}\" (its supervisor did not register it)");
            object instance = module.InitOrAttach(new ShmemModuleContext(this, isCreating: false, null));
            Add(module, instance);
            return (T)instance;
        }
    }

    /// <summary>The names of the modules of this cluster, in creation order.</summary>
    public IReadOnlyCollection<string> ModuleNames
    {
        get
        {
            lock (_lock)
                return [.. _recorded];
        }
    }

    // ------------------------------------------------------------------
    // Properties
    // ------------------------------------------------------------------

    /// <summary>The segment.</summary>
    public ShmemSegment Segment => _segment;

    /// <summary>The segment's handle, as children receive it.</summary>
    public string Handle => _segment.Handle.ToString();

    /// <summary>The OS backend the segment was made with.</summary>
    public IPgIpcPlatform Platform => _segment.Platform;

    /// <summary>The participant slots.</summary>
    public ProcArray Procs
        => _procs ??= Find<ProcArray>() ?? throw new ModuleNotFoundException($"cluster segment {_segment.Handle.Id} has no participant slots ({ProcArray.ShmemName})");

    /// <summary>The shared invalidation queue.</summary>
    public SinvalQueue Sinval => Get<SinvalQueue>();

    /// <summary>Dynamic shared memory's control table.</summary>
    public DsmRegistry Dsm => Get<DsmRegistry>();

    /// <summary>The background worker (child) slots.</summary>
    public BackgroundWorkerArray BackgroundWorkers => _workers ?? Get<BackgroundWorkerArray>();

    /// <summary>The shared buffer pool (<see cref="ClusterBuilder.WithBufferPool(int, int)"/>), or null when the cluster has none.</summary>
    public BufferPool? Buffers => Find<BufferPool>();

    /// <summary>
    /// The shared statistics: background writer and checkpointer counters, every participant's activity
    /// (pg_stat_bgwriter, pg_stat_checkpointer, pg_stat_activity), read from any process.
    /// </summary>
    public PgIpc.Stats.SharedStats Stats => Get<PgIpc.Stats.SharedStats>();

    /// <summary>Pid of the supervisor (the creator of the segment).</summary>
    public int SupervisorPid => Procs.SupervisorPid;

    /// <summary>
    /// True once the supervisor asked every child to exit (fast shutdown, crash stop), or, in a child, asked this child
    /// to exit so that it can start it again (<see cref="SupervisorRequests.RequestRestart"/>).
    /// </summary>
    public bool ShutdownRequested => (_workers?.ShutdownRequested ?? false) || (_requests?.StopRequestedForThisProcess ?? false);

    /// <summary>The requests children make of the supervisor: start a worker with an assignment, restart a child, a service request.</summary>
    public SupervisorRequests SupervisorRequests => _requests ?? Get<SupervisorRequests>();

    /// <summary>
    /// True when the supervisor stops every child after a crash: exit at once without shutdown work (no shutdown
    /// checkpoint: a dead process may hold the locks it would need), as quickdie does on SIGQUIT.
    /// </summary>
    public bool ImmediateStopRequested => _workers?.ImmediateStopRequested ?? false;

    /// <summary>The participant kind the supervisor started this process as (PGIPC_PROC_KIND), else Backend.</summary>
    public static ProcKind ChildKind
        => Enum.TryParse(Environment.GetEnvironmentVariable(ProcKindVariable), out ProcKind k) ? k : ProcKind.Backend;

    /// <summary>Joins the calling thread with the kind the supervisor started this process as.</summary>
    public Participant JoinAsChild() => Procs.Join(ChildKind);

    /// <summary>
    /// Registers a worker from any process of the cluster (RegisterDynamicBackgroundWorker): fills a shared slot and
    /// sends PMSignal BackgroundWorkerChange; the supervisor starts it. Throws
    /// <see cref="NoFreeBackgroundWorkerSlotException"/> when every slot is taken.
    /// </summary>
    public BackgroundWorkerHandle RegisterDynamicBackgroundWorker(ChildSpec spec)
        => BackgroundWorkers.RegisterDynamicBackgroundWorker(spec, Procs);

    /// <summary>Shared memory of the user's structure <paramref name="name"/> (ShmemInitStruct).</summary>
    public ShmemRegion InitStruct(string name, long size, ShmemInitializer? init, out bool found)
        => init is null ? _segment.InitStruct(name, size, out found) : _segment.InitStruct(name, size, init, out found);

    /// <summary>True while this process is attached to the segment.</summary>
    public bool IsAttached => _segment.IsAttached;

    // ------------------------------------------------------------------
    // Detach
    // ------------------------------------------------------------------

    /// <summary>Releases every module's per-process resources, in reverse order. Errors are collected, not thrown singly.</summary>
    internal void DetachModules()
    {
        List<Exception>? errors = null;
        lock (_lock)
        {
            for (int i = _order.Count - 1; i >= 0; i--)
            {
                try
                {
                    _order[i].Module.Detach(_order[i].Instance);
                }
                catch (Exception ex) when (ex is IOException or PgIpcException or InvalidOperationException)
                {
                    (errors ??= []).Add(ex);
                }
            }
            _order.Clear();
            _byName.Clear();
            _disposed = true;
        }
        if (errors is not null)
            throw new AggregateException("detaching the cluster's modules", errors);
    }

    /// <summary>A child: detaches (modules, then the segment). The supervisor's view: nothing (the supervisor owns it).</summary>
    public void Dispose()
    {
        if (_ownedBySupervisor)
            return;
        lock (_lock)
        {
            if (_disposed)
                return;
        }
        try
        {
            DetachModules();
        }
        finally
        {
            if (_ownsSegment)
                _segment.Dispose();
        }
    }

    private void ThrowIfDisposed()
    {
        if (_disposed)
            throw new ObjectDisposedException(nameof(Cluster), $"this view of cluster segment {_segment.Handle.Id} was detached");
    }
}
