/*-------------------------------------------------------------------------
 * ShmemModule.cs
 *   The descriptor of one subsystem that lives in a cluster's shared
 *   memory: its name, the bytes it needs for the cluster's settings, and
 *   one init-or-attach function that every process runs.
 *
 * NOTES
 *   PostgreSQL gives every module the same shape: XxxShmemSize() for
 *   CalculateShmemSize, XxxShmemInit() over ShmemInitStruct(name, size,
 *   &found), which creates the structure in the postmaster and finds it
 *   in a backend (under EXEC_BACKEND every child runs the same list
 *   again, in AttachSharedMemoryStructs). Extensions join through
 *   shmem_request_hook and shmem_startup_hook. PgIpc keeps that shape in
 *   one descriptor type, and one list of descriptors per cluster (the
 *   builder's, in registration order) drives the three steps:
 *
 *     sizing    ClusterBuilder.Build adds Size(settings) of each module;
 *     creation  the supervisor runs InitOrAttach with IsCreating = true in
 *               list order, at the first start and after every crash
 *               restart (a module may use the modules before it through
 *               ShmemModuleContext.Get);
 *     attach    the list (names, and the options a child cannot know) is
 *               recorded in the segment ("PgIpc.ClusterConfig"), so
 *               Cluster.Attach in a child walks the same list in the same
 *               order and runs the same InitOrAttach with IsCreating =
 *               false. The library's own modules are rebuilt from their
 *               recorded options; a user's module is attached when the
 *               child passes its descriptor (Cluster.Attach(handle,
 *               modules) or Cluster.Get(module)), since code cannot be
 *               recorded in shared memory.
 *
 *   Modules are reached with Cluster.Get<T>() (by the instance type) or
 *   Cluster.Get(module) (by descriptor). Detach runs when a process leaves
 *   the segment (a child's Dispose, the supervisor's destroy) for modules
 *   that hold per-process resources (the buffer pool's open files).
 *
 *   Mirrors src/backend/storage/ipc/ipci.c (CalculateShmemSize,
 *   CreateOrAttachShmemStructs) and the shmem hooks of miscinit.c.
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Postmaster;

/// <summary>The settings a module's size may depend on (known before shared memory exists).</summary>
/// <param name="Key">The cluster's key.</param>
/// <param name="Participants">Participant slots per kind.</param>
/// <param name="MaxChildren">Background worker (child) slots.</param>
/// <param name="DataDirectory">The data directory, if the cluster has one.</param>
public sealed record ClusterSettings(string Key, ProcArrayOptions Participants, int MaxChildren, string? DataDirectory);

/// <summary>
/// A subsystem in a cluster's shared memory: a name, its size for the cluster's settings, and an init-or-attach
/// function run in every process (ShmemInitStruct's shape). Register one with <see cref="ClusterBuilder.AddModule{T}"/>
/// and reach its per-process instance with <see cref="Cluster.Get{T}()"/> or <see cref="Cluster.Get{T}(ShmemModule{T})"/>.
/// </summary>
public abstract class ShmemModule
{
    /// <summary>Most bytes of options a module may record for children (its part of "PgIpc.ClusterConfig").</summary>
    internal const int MaxOptionsBytes = 4096;

    private protected ShmemModule(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (System.Text.Encoding.UTF8.GetByteCount(name) > ShmemIndexEntry.MaxNameLength)
            throw new ArgumentException($"module name \"{name}\" is longer than {ShmemIndexEntry.MaxNameLength} bytes in UTF-8", nameof(name));
        Name = name;
    }

    /// <summary>The module's name; also the name of its (first) structure in the ShmemIndex.</summary>
    public string Name { get; }

    /// <summary>The type of the per-process instance that init-or-attach returns.</summary>
    public abstract Type InstanceType { get; }

    /// <summary>
    /// The name under which a child finds a built-in factory for this module (the library's own modules), or null: a
    /// child must pass the descriptor itself.
    /// </summary>
    internal virtual string? Factory => null;

    /// <summary>The options a child needs to rebuild this module from its factory (recorded in the segment).</summary>
    internal virtual byte[] SaveOptions() => [];

    /// <summary>
    /// A module that is one named structure of <paramref name="size"/> bytes (ShmemInitStruct): created zeroed and
    /// passed to <paramref name="initialize"/> in the supervisor at each (re)creation of shared memory, found in every
    /// other process; its view is the structure's <see cref="ShmemRegion"/>.
    /// </summary>
    public static ShmemModule<ShmemRegion> Struct(string name, long size, ShmemInitializer? initialize = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        return new ShmemModule<ShmemRegion>(name, _ => size, c =>
        {
            if (c.IsCreating)
                return initialize is null ? c.Segment.InitStruct(name, size, out _) : c.Segment.InitStruct(name, size, initialize, out _);
            if (!c.Segment.TryFindStruct(name, out ShmemRegion r))
                throw new PgIpcException($"segment {c.Segment.Handle.Id} records module \"{name}\" but has no such structure");
            return r;
        });
    }

    internal abstract long Size(ClusterSettings settings);

    internal abstract object InitOrAttach(ShmemModuleContext context);

    internal abstract void Detach(object instance);

    /// <inheritdoc/>
    public override string ToString() => $"module \"{Name}\" ({InstanceType.Name})";
}

/// <summary>A module whose per-process instance is a <typeparamref name="T"/>.</summary>
/// <typeparam name="T">The instance type (a view over the module's shared structures).</typeparam>
public class ShmemModule<T> : ShmemModule where T : notnull
{
    private readonly Func<ClusterSettings, long> _size;
    private readonly Func<ShmemModuleContext, T> _initOrAttach;
    private readonly Action<T>? _detach;

    /// <summary>A module.</summary>
    /// <param name="name">Its name (and, by convention, the name of its structure in the ShmemIndex).</param>
    /// <param name="size">Bytes it needs, for the cluster's settings (its XxxShmemSize).</param>
    /// <param name="initOrAttach">
    /// Creates its structures (<see cref="ShmemModuleContext.IsCreating"/>: the supervisor, at each (re)creation of
    /// shared memory) or finds them (a child) and returns this process's view (its XxxShmemInit).
    /// </param>
    /// <param name="detach">Releases the view's per-process resources when the process leaves the segment.</param>
    public ShmemModule(string name, Func<ClusterSettings, long> size, Func<ShmemModuleContext, T> initOrAttach, Action<T>? detach = null)
        : base(name)
    {
        _size = size ?? throw new ArgumentNullException(nameof(size));
        _initOrAttach = initOrAttach ?? throw new ArgumentNullException(nameof(initOrAttach));
        _detach = detach;
    }

    /// <inheritdoc/>
    public override Type InstanceType => typeof(T);

    internal override long Size(ClusterSettings settings)
    {
        long n = _size(settings);
        if (n < 0)
            throw new ArgumentOutOfRangeException(nameof(settings), n, $"module \"{Name}\" asked for a negative size");
        return n;
    }

    internal override object InitOrAttach(ShmemModuleContext context)
        => _initOrAttach(context) ?? throw new PgIpcException($"module \"{Name}\": init-or-attach returned null");

    internal override void Detach(object instance) => _detach?.Invoke((T)instance);
}

/// <summary>What a module's init-or-attach sees: the segment, whether it creates, and the modules before it.</summary>
public sealed class ShmemModuleContext
{
    private readonly Cluster _cluster;

    internal ShmemModuleContext(Cluster cluster, bool isCreating, ClusterSettings? settings)
    {
        _cluster = cluster;
        IsCreating = isCreating;
        Settings = settings;
    }

    /// <summary>The segment.</summary>
    public ShmemSegment Segment => _cluster.Segment;

    /// <summary>The participant slots (the first module of every cluster).</summary>
    public ProcArray Procs => _cluster.Procs;

    /// <summary>True in the supervisor creating shared memory; false in a process attaching to it.</summary>
    public bool IsCreating { get; }

    /// <summary>The cluster's settings in the supervisor (creating); null in an attaching process.</summary>
    public ClusterSettings? Settings { get; }

    /// <summary>The instance of an earlier module of type <typeparamref name="T"/>.</summary>
    public T Get<T>() where T : class => _cluster.Get<T>();

    /// <summary>The instance of an earlier module of type <typeparamref name="T"/>, or null.</summary>
    public T? Find<T>() where T : class => _cluster.Find<T>();
}
