/*-------------------------------------------------------------------------
 * ClusterBuilder.cs
 *   Collects what a cluster needs before its shared memory exists: every
 *   subsystem's size, the user's own requests and start-up initialisers,
 *   named LWLock tranches, static background workers and the options.
 *
 * NOTES
 *   The main segment's huge pages: WithHugePages (HugePages.cs).
 *
 *   Options: participant slots, worker slots, restart-after-crash, data
 *   directory, DSM settings, the shared buffer pool (WithBufferPool, which
 *   needs the data directory: Build throws InvalidOperationException
 *   without one), the backend, the logger (WithLogger, or WithLog's text)
 *   and the stop grace.
 *
 *   PostgreSQL's postmaster calls each module's XxxShmemSize (and the
 *   shmem_request_hook, where extensions call RequestAddinShmemSpace and
 *   RequestNamedLWLockTranche), totals them with add_size in
 *   CalculateShmemSize, creates the segment, then runs every XxxShmemInit
 *   and the shmem_startup_hook (CreateSharedMemoryAndSemaphores). After a
 *   crash it does all of it again. The builder keeps what is needed to do
 *   it again; Build creates the first incarnation (see Cluster).
 *
 *   Mirrors src/backend/storage/ipc/ipci.c.
 *-------------------------------------------------------------------------
 */
using Microsoft.Extensions.Logging;
using PgIpc.Buffers;
using PgIpc.Dsm;
using PgIpc.Lmgr;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Postmaster;

/// <summary>
/// Builds a cluster: its modules (the library's and the user's), start-up initialisers, options and static workers.
/// <see cref="Build"/> creates the shared memory and returns its <see cref="Supervisor"/>.
/// </summary>
public sealed class ClusterBuilder
{
    private readonly List<ShmemModule> _userModules = [];
    internal readonly List<Action<Cluster>> StartupHooks = [];
    internal readonly LWLockTrancheRequests Tranches = new();
    internal readonly List<ChildSpec> StaticWorkers = [];
    internal readonly List<ChildSpec> OnRequestWorkers = [];
    internal readonly List<Action<ServiceRequestContext>> ServiceHooks = [];

    /// <param name="key">The cluster's name (like a data directory); names its shared memory.</param>
    public ClusterBuilder(string key)
    {
        ShmemSegment.ValidateKey(key);
        Key = key;
    }

    /// <summary>The cluster key: segments, semaphores and latch objects are named after it.</summary>
    public string Key { get; }

    internal IPgIpcPlatform? PlatformChoice { get; private set; }
    internal SharedMemoryOptions SharedMemorySettings { get; private set; }
    internal ProcArrayOptions ProcOptions { get; private set; } = new();
    internal DsmOptions DsmSettings { get; private set; } = new();
    internal bool RestartAfterCrashValue { get; private set; } = true;
    internal string? DataDirectoryValue { get; private set; }
    internal int MaxChildrenValue { get; private set; } = 16;
    internal int MaxSupervisorRequestsValue { get; private set; } = 8;
    internal TextWriter? LogWriter { get; private set; }
    internal ILogger? LoggerValue { get; private set; }
    internal TimeSpan StopGraceValue { get; private set; } = TimeSpan.FromSeconds(2);
    internal int? BufferCountValue { get; private set; }
    internal int BlocksPerSegmentValue { get; private set; } = Smgr.DefaultBlocksPerSegment;
    internal int MaxOpenFilesValue { get; private set; } = Smgr.DefaultMaxOpenFiles;
    internal CheckpointerOptions? CheckpointerValue { get; private set; }
    internal BgWriterOptions? BgWriterValue { get; private set; }
    internal LockManagerOptions? LockManagerValue { get; private set; }
    internal Wal.WalOptions? WalValue { get; private set; }

    /// <summary>The OS backend (default: <see cref="PgIpcPlatform.Current"/>).</summary>
    public ClusterBuilder WithPlatform(IPgIpcPlatform platform)
    {
        PlatformChoice = platform ?? throw new ArgumentNullException(nameof(platform));
        return this;
    }

    /// <summary>
    /// Huge pages for the main segment (PostgreSQL's huge_pages and huge_page_size): <see cref="HugePages.Try"/> (the
    /// default) uses them when the OS has them and normal pages otherwise, <see cref="HugePages.Off"/> never asks,
    /// <see cref="HugePages.On"/> makes Build fail with a clear error when they cannot be had. <paramref name="pageSize"/>
    /// 0 is the system default (Linux: Hugepagesize in /proc/meminfo); a size that is not a supported huge page size
    /// is an <see cref="ArgumentException"/> (here when no system could have it, at Build when this one has not).
    /// See README's "Huge pages" for what each backend does.
    /// </summary>
    public ClusterBuilder WithHugePages(HugePages mode, long pageSize = 0)
    {
        var options = new SharedMemoryOptions(mode, pageSize);
        options.Validate();
        SharedMemorySettings = options;
        return this;
    }

    /// <summary>Participant slots per kind (max_connections, auxiliary, max_worker_processes).</summary>
    public ClusterBuilder WithMaxParticipants(ProcArrayOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        ProcOptions = options;
        return this;
    }

    /// <summary>Most children the supervisor runs at once (background worker slots). Default 16.</summary>
    public ClusterBuilder WithMaxChildren(int maxChildren)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxChildren, 1);
        MaxChildrenValue = maxChildren;
        return this;
    }

    /// <summary>restart_after_crash: rebuild shared memory and restart permanent workers after a child crashes (default true).</summary>
    public ClusterBuilder WithRestartAfterCrash(bool restart)
    {
        RestartAfterCrashValue = restart;
        return this;
    }

    /// <summary>The data directory (also the DSM data directory unless <see cref="WithDsmOptions"/> names one).</summary>
    public ClusterBuilder WithDataDirectory(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        DataDirectoryValue = path;
        return this;
    }

    /// <summary>
    /// A shared buffer pool of <paramref name="numBuffers"/> 8 KiB buffers (shared_buffers) over relation files in the
    /// data directory, which <see cref="WithDataDirectory"/> must name, in segment files of
    /// <paramref name="blocksPerSegment"/> blocks. A module: created by Build and again at each crash restart; every
    /// process finds it in <see cref="Cluster.Buffers"/> (or <c>Get&lt;BufferPool&gt;()</c>).
    /// </summary>
    public ClusterBuilder WithBufferPool(int numBuffers, int blocksPerSegment = Smgr.DefaultBlocksPerSegment)
    {
        // Same bounds as BufferPoolOptions, checked here so the caller learns at once.
        ArgumentOutOfRangeException.ThrowIfLessThan(numBuffers, 16);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(numBuffers, 1 << 30);
        ArgumentOutOfRangeException.ThrowIfLessThan(blocksPerSegment, 1);
        BufferCountValue = numBuffers;
        BlocksPerSegmentValue = blocksPerSegment;
        return this;
    }

    /// <summary>
    /// max_files_per_process: the most relation segment files each process of the cluster keeps open at once (the
    /// least recently used is closed and reopened at its next use). Default <see cref="Smgr.DefaultMaxOpenFiles"/>.
    /// </summary>
    public ClusterBuilder WithMaxOpenFiles(int maxOpenFiles)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxOpenFiles, 1);
        MaxOpenFilesValue = maxOpenFiles;
        return this;
    }

    /// <summary>
    /// Settings of the heavyweight lock manager (every cluster has one): max_locks_per_participant (the lock tables hold
    /// this times the participant slots), the default deadlock_timeout and lock_timeout of every process.
    /// </summary>
    public ClusterBuilder WithLockManager(LockManagerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        LockManagerValue = options;
        return this;
    }

    /// <summary>
    /// The checkpointer's shared state (a module: every process gets a <see cref="Checkpointer"/> view, through which
    /// it requests checkpoints and, with the buffer pool, forwards its fsyncs; one auxiliary child runs it).
    /// </summary>
    public ClusterBuilder WithCheckpointer(CheckpointerOptions? options = null)
    {
        options ??= new CheckpointerOptions();
        options.Validate();
        CheckpointerValue = options;
        return this;
    }

    /// <summary>
    /// A write-ahead log in &lt;datadir&gt;/pg_wal (a module: every process reaches it with <c>Get&lt;XLog&gt;()</c>).
    /// Needs the data directory. With the buffer pool, a page is written only after WAL up to its LSN is flushed, and
    /// the checkpointer's checkpoints write checkpoint records; the supervisor replays the WAL at every start and
    /// crash restart before any child runs.
    /// </summary>
    public ClusterBuilder WithWal(Wal.WalOptions? options = null)
    {
        options ??= new Wal.WalOptions();
        options.Validate();
        WalValue = options;
        return this;
    }

    /// <summary>The background writer's settings (a module: every process gets a <see cref="BackgroundWriter"/>; one child runs it). Needs the buffer pool.</summary>
    public ClusterBuilder WithBackgroundWriter(BgWriterOptions? options = null)
    {
        BgWriterValue = options ?? new BgWriterOptions();
        return this;
    }

    /// <summary>
    /// Registers the user's module: sized, created in the supervisor at every (re)creation of shared memory after the
    /// library's modules, in registration order, and attached in children (see <see cref="Cluster.Get{T}(ShmemModule{T})"/>).
    /// </summary>
    public ClusterBuilder AddModule<T>(ShmemModule<T> module) where T : notnull
    {
        ArgumentNullException.ThrowIfNull(module);
        if (_userModules.Any(m => m.Name == module.Name))
            throw new ArgumentException($"a module named \"{module.Name}\" is already registered", nameof(module));
        _userModules.Add(module);
        return this;
    }

    /// <summary>Sets the dynamic shared memory options of the cluster.</summary>
    public ClusterBuilder WithDsmOptions(DsmOptions options)
    {
        DsmSettings = options ?? throw new ArgumentNullException(nameof(options));
        return this;
    }

    /// <summary>
    /// Where the supervisor writes its log as text, one "pgipc supervisor &lt;pid&gt;: message" line per event of level
    /// Information and above (see <see cref="Diagnostics.PgIpcLogEvents"/>). <see cref="WithLogger(ILogger)"/>
    /// replaces it; without either the supervisor logs to <see cref="Diagnostics.PgIpcLogging.LoggerFactory"/>.
    /// </summary>
    public ClusterBuilder WithLog(TextWriter log)
    {
        LogWriter = log ?? throw new ArgumentNullException(nameof(log));
        LoggerValue = null;
        return this;
    }

    /// <summary>
    /// The logger of the supervisor (category "PgIpc.Supervisor" from <paramref name="loggerFactory"/>); events and
    /// their ids are in <see cref="Diagnostics.PgIpcLogEvents"/>. Replaces <see cref="WithLog"/>.
    /// </summary>
    public ClusterBuilder WithLogger(ILoggerFactory loggerFactory)
    {
        ArgumentNullException.ThrowIfNull(loggerFactory);
        return WithLogger(loggerFactory.CreateLogger(Diagnostics.PgIpcLogging.SupervisorCategory));
    }

    /// <summary>The logger of the supervisor; events and their ids are in <see cref="Diagnostics.PgIpcLogEvents"/>. Replaces <see cref="WithLog"/>.</summary>
    public ClusterBuilder WithLogger(ILogger logger)
    {
        LoggerValue = logger ?? throw new ArgumentNullException(nameof(logger));
        LogWriter = null;
        return this;
    }

    /// <summary>How long children asked to stop (fast shutdown, crash stop) get before they are killed. Default 2 s.</summary>
    public ClusterBuilder WithStopGrace(TimeSpan grace)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(grace, TimeSpan.Zero);
        StopGraceValue = grace;
        return this;
    }

    /// <summary>
    /// Reserves <paramref name="size"/> bytes for the user's structure <paramref name="name"/> (RequestAddinShmemSpace):
    /// only room in the segment, in the module list's order. Create the structure with
    /// <see cref="Cluster.InitStruct"/> and its initializer in <see cref="OnShmemStartup"/> (shmem_startup_hook), or
    /// register a <see cref="ShmemModule{T}"/> with <see cref="AddModule{T}"/> to have it created and attached for you.
    /// </summary>
    public ClusterBuilder RequestShmem(string name, long size)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        ShmemModule reservation = BuiltinModules.RegionModule(name, size);
        if (_userModules.Any(m => m.Name == name))
            throw new ArgumentException($"a module named \"{name}\" is already registered", nameof(name));
        _userModules.Add(reservation);
        return this;
    }

    /// <summary>Runs <paramref name="init"/> in the supervisor each time shared memory is (re)created (shmem_startup_hook).</summary>
    public ClusterBuilder OnShmemStartup(Action<Cluster> init)
    {
        StartupHooks.Add(init ?? throw new ArgumentNullException(nameof(init)));
        return this;
    }

    /// <summary>Reserves a named tranche of LWLocks (RequestNamedLWLockTranche).</summary>
    public ClusterBuilder RequestNamedLWLockTranche(string name, int numLocks)
    {
        Tranches.RequestNamedLWLockTranche(name, numLocks);
        return this;
    }

    /// <summary>A static worker, started by <see cref="Supervisor.Start"/> (RegisterBackgroundWorker).</summary>
    public ClusterBuilder AddBackgroundWorker(ChildSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate();
        StaticWorkers.Add(spec);
        return this;
    }

    /// <summary>
    /// A worker the supervisor starts only when a child asks for it by <paramref name="spec"/>'s name
    /// (<see cref="SupervisorRequests.RequestWorker"/>, the autovacuum launcher's way of getting a worker): each request
    /// starts one such child, which reads the requester's assignment with <see cref="SupervisorRequests.GetAssignment"/>.
    /// The spec must not be permanent (a worker serves one request); names must be unique.
    /// </summary>
    public ClusterBuilder AddOnRequestWorker(ChildSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate();
        if (spec.IsPermanent)
            throw new ArgumentException($"on-request worker \"{spec.Name}\" must not be restarted (RestartIntervalMs -1): it serves one request", nameof(spec));
        if (OnRequestWorkers.Any(s => s.Name == spec.Name))
            throw new ArgumentException($"an on-request worker named \"{spec.Name}\" is already registered", nameof(spec));
        OnRequestWorkers.Add(spec);
        return this;
    }

    /// <summary>
    /// Runs <paramref name="hook"/> in the supervisor's loop for each service request a child posts
    /// (<see cref="SupervisorRequests.PostServiceRequest"/>, PMSignal ServiceRequest), with its code and argument. An
    /// exception from the hook is logged (<see cref="Diagnostics.PgIpcLogEvents.ServiceRequestFailed"/>) and the
    /// supervisor goes on. Keep it short: the loop waits for it.
    /// </summary>
    public ClusterBuilder OnServiceRequest(Action<ServiceRequestContext> hook)
    {
        ServiceHooks.Add(hook ?? throw new ArgumentNullException(nameof(hook)));
        return this;
    }

    /// <summary>
    /// Slots of the supervisor request area (worker, restart and service requests in flight at once). Default 8; a
    /// request finding every slot taken throws <see cref="NoFreeSupervisorRequestSlotException"/>.
    /// </summary>
    public ClusterBuilder WithMaxSupervisorRequests(int slots)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(slots, 1024);
        MaxSupervisorRequestsValue = slots;
        return this;
    }

    /// <summary>The buffer pool's options, or null without one. Throws when the pool has no data directory.</summary>
    internal BufferPoolOptions? BufferOptions
        => BufferCountValue is not int n ? null
            : DataDirectoryValue is null
                ? throw new InvalidOperationException($"cluster \"{Key}\": WithBufferPool({n}) needs a data directory for its relation files; call WithDataDirectory")
                : new BufferPoolOptions(n, DataDirectoryValue, BlocksPerSegmentValue) { MaxOpenFiles = MaxOpenFilesValue };

    internal DsmOptions EffectiveDsmOptions
        => DsmSettings.DataDirectory is null && DataDirectoryValue is not null ? DsmSettings with { DataDirectory = DataDirectoryValue } : DsmSettings;

    internal ClusterSettings Settings => new(Key, ProcOptions, MaxChildrenValue, DataDirectoryValue);

    /// <summary>
    /// The cluster's one module list, in creation order: the kernel (slots, tranches, signals, sinval, DSM, worker
    /// slots), the buffer pool, checkpointer and background writer when asked for, then the user's modules. Sizing,
    /// creation and (through the record in the segment) every child's attach follow it.
    /// </summary>
    internal IReadOnlyList<ShmemModule> Modules()
    {
        List<ShmemModule> list = BuiltinModules.Kernel(ProcOptions, Tranches, EffectiveDsmOptions, MaxChildrenValue, LockManagerValue,
            MaxSupervisorRequestsValue);
        if (BufferOptions is { } bo)
            list.Add(BuiltinModules.BufferPoolModule(bo));
        if (CheckpointerValue is { } co)
            list.Add(BuiltinModules.CheckpointerModule(co));
        if (BgWriterValue is { } bw)
        {
            if (BufferCountValue is null)
                throw new InvalidOperationException($"cluster \"{Key}\": WithBackgroundWriter needs the buffer pool; call WithBufferPool");
            list.Add(BuiltinModules.BgWriterModule(bw));
        }
        if (WalValue is { } wo)
        {
            string dir = DataDirectoryValue
                ?? throw new InvalidOperationException($"cluster \"{Key}\": WithWal needs a data directory for pg_wal; call WithDataDirectory");
            list.Add(BuiltinModules.WalModule(wo, wo.NumBuffers(BufferCountValue), dir));
        }
        foreach (ShmemModule m in _userModules)
        {
            if (list.Any(x => x.Name == m.Name))
                throw new ArgumentException($"module \"{m.Name}\" has the name of one of the library's modules");
            list.Add(m);
        }
        return list;
    }

    /// <summary>
    /// Creates the cluster's shared memory (every module) and runs the start-up initialisers. Returns the
    /// <see cref="Supervisor"/>; its children start with <see cref="Supervisor.Start"/>.
    /// </summary>
    public Supervisor Build() => Supervisor.Create(this);
}
