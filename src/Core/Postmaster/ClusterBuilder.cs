/*-------------------------------------------------------------------------
 * ClusterBuilder.cs
 *   Collects what a cluster needs before its shared memory exists: every
 *   subsystem's size, the user's own requests and start-up initialisers,
 *   named LWLock tranches, static background workers and the options.
 *
 * NOTES
 *   Options: participant slots, worker slots, restart-after-crash, data
 *   directory, DSM settings, the shared buffer pool (WithBufferPool, which
 *   needs the data directory: Build throws InvalidOperationException
 *   without one), the backend, the log and the stop grace.
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
using PgIpc.Buffers;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Postmaster;

/// <summary>Builds a <see cref="Cluster"/>: requests, initialisers, options, static workers.</summary>
public sealed class ClusterBuilder
{
    internal readonly List<(string Name, long Size)> ShmemRequests = [];
    internal readonly List<Action<Cluster>> StartupHooks = [];
    internal readonly LWLockTrancheRequests Tranches = new();
    internal readonly List<ChildSpec> StaticWorkers = [];

    /// <param name="key">The cluster's name (like a data directory); names its shared memory.</param>
    public ClusterBuilder(string key)
    {
        ShmemSegment.ValidateKey(key);
        Key = key;
    }

    public string Key { get; }

    internal IPgIpcPlatform? PlatformChoice { get; private set; }
    internal ProcArrayOptions ProcOptions { get; private set; } = new();
    internal DsmOptions DsmSettings { get; private set; } = new();
    internal bool RestartAfterCrashValue { get; private set; } = true;
    internal string? DataDirectoryValue { get; private set; }
    internal int MaxChildrenValue { get; private set; } = 16;
    internal TextWriter? LogWriter { get; private set; }
    internal TimeSpan StopGraceValue { get; private set; } = TimeSpan.FromSeconds(2);
    internal int? BufferCountValue { get; private set; }

    /// <summary>The OS backend (default: <see cref="PgIpcPlatform.Current"/>).</summary>
    public ClusterBuilder WithPlatform(IPgIpcPlatform platform)
    {
        PlatformChoice = platform ?? throw new ArgumentNullException(nameof(platform));
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
    /// data directory, which <see cref="WithDataDirectory"/> must name. Created by Build and again at each crash
    /// restart; children find it in <see cref="Cluster.Buffers"/>.
    /// </summary>
    public ClusterBuilder WithBufferPool(int numBuffers)
    {
        // Same bounds as BufferPoolOptions, checked here so the caller learns at once.
        ArgumentOutOfRangeException.ThrowIfLessThan(numBuffers, 16);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(numBuffers, 1 << 30);
        BufferCountValue = numBuffers;
        return this;
    }

    public ClusterBuilder WithDsmOptions(DsmOptions options)
    {
        DsmSettings = options ?? throw new ArgumentNullException(nameof(options));
        return this;
    }

    /// <summary>Where the supervisor logs child exits and crash restarts (default Console.Error).</summary>
    public ClusterBuilder WithLog(TextWriter log)
    {
        LogWriter = log ?? throw new ArgumentNullException(nameof(log));
        return this;
    }

    /// <summary>How long children asked to stop (fast shutdown, crash stop) get before they are killed. Default 2 s.</summary>
    public ClusterBuilder WithStopGrace(TimeSpan grace)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(grace, TimeSpan.Zero);
        StopGraceValue = grace;
        return this;
    }

    /// <summary>Reserves <paramref name="size"/> bytes for the user's structure <paramref name="name"/> (RequestAddinShmemSpace).</summary>
    public ClusterBuilder RequestShmem(string name, long size)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        ShmemRequests.Add((name, size));
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

    /// <summary>A static worker, started by <see cref="Cluster.Start"/> (RegisterBackgroundWorker).</summary>
    public ClusterBuilder AddBackgroundWorker(ChildSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        spec.Validate();
        StaticWorkers.Add(spec);
        return this;
    }

    /// <summary>The buffer pool's options, or null without one. Throws when the pool has no data directory.</summary>
    internal BufferPoolOptions? BufferOptions
        => BufferCountValue is not int n ? null
            : DataDirectoryValue is null
                ? throw new InvalidOperationException($"cluster \"{Key}\": WithBufferPool({n}) needs a data directory for its relation files; call WithDataDirectory")
                : new BufferPoolOptions(n, DataDirectoryValue);

    internal DsmOptions EffectiveDsmOptions
        => DsmSettings.DataDirectory is null && DataDirectoryValue is not null ? DsmSettings with { DataDirectory = DataDirectoryValue } : DsmSettings;

    /// <summary>CalculateShmemSize: the sizes of every subsystem and request.</summary>
    internal ShmemSizeBuilder Sizes()
    {
        ProcArrayOptions o = ProcOptions;
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(o))
            .RequestAddinShmemSpace(LWLockTranches.ShmemName, LWLockTranches.ShmemSize(Tranches))
            .RequestAddinShmemSpace(Signals.ProcSignal.ShmemName, Signals.ProcSignal.ShmemSize(o.TotalProcs))
            .RequestAddinShmemSpace(Signals.PMSignal.ShmemName, Signals.PMSignal.ShmemSize())
            .RequestAddinShmemSpace(Sinval.SinvalQueue.ShmemName, Sinval.SinvalQueue.ShmemSize(o.TotalProcs))
            .RequestAddinShmemSpace(DsmRegistry.ShmemName, DsmRegistry.ShmemSize(EffectiveDsmOptions))
            .RequestAddinShmemSpace(BackgroundWorkerArray.ShmemName, BackgroundWorkerArray.ShmemSize(MaxChildrenValue))
            .RequestAddinShmemSpace(ClusterConfig.ShmemName, ClusterConfig.ShmemSize);
        if (BufferOptions is { } bo)
            sizes.RequestAddinShmemSpace("PgIpc.BufferPool", BufferPool.ShmemSize(bo));
        foreach ((string name, long size) in ShmemRequests)
            sizes.RequestAddinShmemSpace(name, size);
        return sizes;
    }

    /// <summary>Creates the cluster's shared memory and runs the initialisers. Children start with <see cref="Cluster.Start"/>.</summary>
    public Cluster Build() => Cluster.Create(this);
}
