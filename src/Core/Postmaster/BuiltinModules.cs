/*-------------------------------------------------------------------------
 * BuiltinModules.cs
 *   The library's own subsystems as modules: their descriptors, made by
 *   the builder from its options, and the factories that rebuild each
 *   descriptor in a child from the options recorded in the segment.
 *
 * NOTES
 *   Order (the list the builder makes; creation and attach follow it):
 *     PgIpc.ProcGlobal          participant slots (every later module uses them)
 *     PgIpc.LWLockTranches      named tranches
 *     PgIpc.ProcSignal          interrupts to participants
 *     PgIpc.PMSignal            flags to the supervisor
 *     PgIpc.SInvalSeg           the invalidation queue
 *     PgIpc.DsmControl          dynamic shared memory's control table
 *     PgIpc.BackgroundWorkers   child slots, shutdown flags
 *     PgIpc.SupervisorRequests  children's requests to the supervisor, per-child stop
 *     PgIpc.LockManager         heavyweight locks (InitLocks; WithLockManager
 *                               sets max_locks_per_participant and timeouts)
 *     PgIpc.Stats               shared statistics: bgwriter and checkpointer
 *                               counters, participants' activity
 *     PgIpc.BufferPool          shared buffers            (WithBufferPool)
 *     PgIpc.Checkpointer        the checkpointer's state  (WithCheckpointer)
 *     PgIpc.BgWriter            the background writer     (WithBackgroundWriter)
 *     PgIpc.XLogCtl             the write-ahead log       (WithWal; after the
 *                               pool and checkpointer, which it hooks into)
 *   then the user's modules in registration order. A module whose shared
 *   state records everything a child needs (slot counts, the DSM table's
 *   size) records no options; the buffer pool records its size and data
 *   directory, the checkpointer and background writer their settings,
 *   since every process runs with the same ones.
 *
 *   Several built-in subsystems (LWLock tranches, ProcSignal, PMSignal)
 *   are reached through static functions over the segment and have no
 *   per-process view; their instance is a marker.
 *-------------------------------------------------------------------------
 */
using System.Text;
using PgIpc.Buffers;
using PgIpc.Dsm;
using PgIpc.Lmgr;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sinval;
using PgIpc.Sync;

namespace PgIpc.Postmaster;

/// <summary>The instance of a module that has no per-process view (its functions are static over the segment).</summary>
internal sealed class StaticModule(string name)
{
    public string Name { get; } = name;
}

/// <summary>A module of the library: a descriptor with a factory name and recorded options.</summary>
internal sealed class BuiltinModule<T>(string name, string factory, Func<ClusterSettings, long> size, Func<ShmemModuleContext, T> initOrAttach,
    Action<T>? detach = null, byte[]? options = null) : ShmemModule<T>(name, size, initOrAttach, detach) where T : notnull
{
    private readonly byte[] _options = options ?? [];

    internal override string? Factory => factory;

    internal override byte[] SaveOptions() => _options;
}

/// <summary>Descriptors of the library's modules and their child-side factories.</summary>
internal static class BuiltinModules
{
    public const string BufferPoolName = "PgIpc.BufferPool";
    public const string BgWriterName = "PgIpc.BgWriter";
    public const string RegionFactory = "region";

    /// <summary>The kernel modules every cluster has, in order.</summary>
    public static List<ShmemModule> Kernel(ProcArrayOptions procs, LWLockTrancheRequests tranches, DsmOptions dsm, int maxChildren,
        LockManagerOptions? locks = null, int maxRequests = 8)
        =>
        [
            ProcArrayModule(procs),
            TranchesModule(tranches),
            ProcSignalModule(),
            PMSignalModule(),
            SinvalModule(),
            DsmModule(dsm),
            WorkersModule(maxChildren),
            RequestsModule(maxRequests, maxChildren),
            LockManagerModule(locks ?? new LockManagerOptions()),
            StatsModule(),
        ];

    /// <summary>The heavyweight lock manager (InitLocks), sized from the slots and max_locks_per_participant.</summary>
    public static ShmemModule LockManagerModule(LockManagerOptions options)
    {
        options.Validate();
        var w = new OptionsWriter();
        w.Int(options.MaxLocksPerParticipant).Int(options.DeadlockTimeoutMs).Int(options.LockTimeoutMs);
        return new BuiltinModule<LockManager>(LockManager.ShmemName, LockManager.ShmemName,
            s => LockManager.ShmemSize(s.Participants.TotalProcs, options),
            c => c.IsCreating ? LockManager.Init(c.Segment, c.Procs, options, out _) : LockManager.Attach(c.Segment, c.Procs),
            null, w.ToArray());
    }

    /// <summary>Shared statistics (pgstat's shared memory): one activity slot per participant slot.</summary>
    private static ShmemModule StatsModule()
        => new BuiltinModule<Stats.SharedStats>(Stats.SharedStats.ShmemName, Stats.SharedStats.ShmemName,
            s => Stats.SharedStats.ShmemSize(s.Participants.TotalProcs),
            c => c.IsCreating ? Stats.SharedStats.Init(c.Segment, c.Procs.MaxProcs, out _) : Stats.SharedStats.Attach(c.Segment));

    private static ShmemModule ProcArrayModule(ProcArrayOptions? options)
        => new BuiltinModule<ProcArray>(ProcArray.ShmemName, ProcArray.ShmemName, s => ProcArray.ShmemSize(options ?? s.Participants),
            c => c.IsCreating ? ProcArray.Init(c.Segment, options ?? Creating(c).Participants, out _) : ProcArray.Attach(c.Segment));

    private static ShmemModule TranchesModule(LWLockTrancheRequests? tranches)
        => StaticModule(LWLockTranches.ShmemName, _ => LWLockTranches.ShmemSize(tranches),
            c => LWLockTranches.Init(c.Segment, tranches, out _));

    private static ShmemModule ProcSignalModule()
        => StaticModule(ProcSignal.ShmemName, s => ProcSignal.ShmemSize(s.Participants.TotalProcs), c => ProcSignal.Init(c.Segment, c.Procs, out _));

    private static ShmemModule PMSignalModule()
        => StaticModule(PMSignal.ShmemName, _ => PMSignal.ShmemSize(), c => PMSignal.Init(c.Segment, c.Procs, out _));

    private static ShmemModule SinvalModule()
        => new BuiltinModule<SinvalQueue>(SinvalQueue.ShmemName, SinvalQueue.ShmemName, s => SinvalQueue.ShmemSize(s.Participants.TotalProcs),
            c =>
            {
                Require(c, SinvalQueue.ShmemName);
                return SinvalQueue.Init(c.Segment, c.Procs, out _);
            });

    private static ShmemModule DsmModule(DsmOptions? dsm)
        => new BuiltinModule<DsmRegistry>(DsmRegistry.ShmemName, DsmRegistry.ShmemName, _ => DsmRegistry.ShmemSize(dsm ?? new DsmOptions()),
            c => c.IsCreating ? DsmRegistry.Init(c.Segment, c.Procs, dsm ?? new DsmOptions(), out _) : DsmRegistry.Attach(c.Segment));

    private static ShmemModule WorkersModule(int maxChildren)
        => new BuiltinModule<BackgroundWorkerArray>(BackgroundWorkerArray.ShmemName, BackgroundWorkerArray.ShmemName,
            _ => BackgroundWorkerArray.ShmemSize(maxChildren),
            c => c.IsCreating ? BackgroundWorkerArray.Init(c.Segment, maxChildren, out _) : BackgroundWorkerArray.Attach(c.Segment));

    /// <summary>The supervisor request area (worker, restart and service requests; a stop flag per child slot).</summary>
    private static ShmemModule RequestsModule(int maxRequests, int maxChildren)
        => new BuiltinModule<SupervisorRequests>(SupervisorRequests.ShmemName, SupervisorRequests.ShmemName,
            _ => SupervisorRequests.ShmemSize(maxRequests, maxChildren),
            c => c.IsCreating ? SupervisorRequests.Init(c.Segment, c.Procs, maxRequests, maxChildren) : SupervisorRequests.Attach(c.Segment, c.Procs));

    /// <summary>A subsystem reached through static functions: the structure is made (or required, attaching) and a marker returned.</summary>
    private static ShmemModule StaticModule(string name, Func<ClusterSettings, long> size, Action<ShmemModuleContext> init)
        => new BuiltinModule<StaticModule>(name, name, size, c =>
        {
            if (c.IsCreating)
                init(c);
            else
                Require(c, name);
            return new StaticModule(name);
        });

    /// <summary>The shared buffer pool (shared_buffers) over relation files in the data directory.</summary>
    public static ShmemModule BufferPoolModule(BufferPoolOptions options)
    {
        options.Validate();
        var w = new OptionsWriter();
        w.Int(options.NumBuffers).Int(options.BlocksPerSegment).String(options.DataDirectory).Int(options.MaxOpenFiles);
        return new BuiltinModule<BufferPool>(BufferPoolName, BufferPoolName, _ => BufferPool.ShmemSize(options),
            c =>
            {
                BufferPool pool = BufferPool.Init(c.Segment, c.Procs, options, out bool found);
                if (found == c.IsCreating)
                {
                    pool.Dispose();
                    throw new PgIpcException(c.IsCreating
                        ? $"segment {c.Segment.Handle.Id} already had a buffer pool"
                        : $"segment {c.Segment.Handle.Id} records a buffer pool of {options.NumBuffers} buffers but has none");
                }
                return pool;
            },
            pool => pool.Dispose(), w.ToArray());
    }

    /// <summary>The checkpointer's shared state; in a process with the buffer pool, writes forward their fsyncs to it.</summary>
    public static ShmemModule CheckpointerModule(CheckpointerOptions options)
    {
        options.Validate();
        var w = new OptionsWriter();
        w.Int(options.TimeoutMs).Double(options.CompletionTarget).Int(options.MaxRequests).Int(options.ShutdownCheckpoint ? 1 : 0)
            .Int(options.StartupWaitMs);
        return new BuiltinModule<Checkpointer>(Checkpointer.ShmemName, Checkpointer.ShmemName, _ => Checkpointer.ShmemSize(options),
            c =>
            {
                // Every process's pool forwards its fsyncs here. The supervisor's shutdown writes forward too (the
                // queue may be left unread then), but the checkpoint they are part of also fsyncs its own files.
                BufferPool? pool = c.Find<BufferPool>();
                if (!c.IsCreating)
                    Require(c, Checkpointer.ShmemName);
                return Checkpointer.Init(c.Segment, c.Procs, pool, options, out _);
            }, null, w.ToArray());
    }

    /// <summary>The background writer: no shared state of its own (it works on the pool's); every process gets its view.</summary>
    public static ShmemModule BgWriterModule(BgWriterOptions options)
    {
        var w = new OptionsWriter();
        w.Int(options.DelayMs).Int(options.LruMaxPages).Double(options.LruMultiplier).Int(options.HibernateFactor);
        return new BuiltinModule<BackgroundWriter>(BgWriterName, BgWriterName, _ => 0,
            c => new BackgroundWriter(c.Get<BufferPool>(), options), null, w.ToArray());
    }

    /// <summary>The write-ahead log; in the supervisor its creation runs start-up (bootstrap or crash recovery).</summary>
    public static ShmemModule WalModule(Wal.WalOptions options, int numBuffers, string dataDirectory)
    {
        options.Validate();
        var w = new OptionsWriter();
        w.Int(options.SegmentSize).Int(options.BufferBytes).Long(options.MaxWalSize).Int(options.FullPageWrites ? 1 : 0)
            .Int(options.WriterDelayMs).Int(options.WriterFlushAfterBytes).Int(numBuffers).String(dataDirectory);
        return new BuiltinModule<Wal.XLog>(Wal.XLog.ShmemName, Wal.XLog.ShmemName, _ => Wal.XLog.ShmemSize(numBuffers),
            c =>
            {
                Wal.XLog x = Wal.XLog.Init(c.Segment, c.Procs, options, numBuffers, dataDirectory, c.IsCreating);
                BufferPool? pool = c.Find<BufferPool>();
                Checkpointer? ckpt = c.Find<Checkpointer>();
                x.Pool = pool;
                x.CheckpointRequests = ckpt;
                if (pool is not null)
                    pool.Wal = x;
                if (ckpt is not null)
                    ckpt.Wal = x;
                if (c.IsCreating)
                {
                    try
                    {
                        x.RunStartup(c.Procs);
                    }
                    catch
                    {
                        x.Dispose();
                        throw;
                    }
                }
                return x;
            }, x => x.Dispose(), w.ToArray());
    }

    /// <summary>
    /// A user's reservation (RequestShmem, RequestAddinShmemSpace): only bytes in the segment's size. The structure is
    /// made by whoever calls InitStruct first with its initializer (the start-up hook, as shmem_startup_hook does), so
    /// the module itself creates nothing and its instance is a marker.
    /// </summary>
    public static ShmemModule RegionModule(string name, long size)
    {
        var w = new OptionsWriter();
        w.Long(size);
        return new BuiltinModule<StaticModule>(name, RegionFactory, _ => size, _ => new StaticModule(name), null, w.ToArray());
    }

    /// <summary>Rebuilds a library module's descriptor from what the supervisor recorded; null for a user's module.</summary>
    public static ShmemModule? FromRecord(string name, string? factory, ReadOnlySpan<byte> options)
    {
        var r = new OptionsReader(name, options);
        switch (factory)
        {
            case ProcArray.ShmemName: return ProcArrayModule(null);
            case LWLockTranches.ShmemName: return TranchesModule(null);
            case ProcSignal.ShmemName: return ProcSignalModule();
            case PMSignal.ShmemName: return PMSignalModule();
            case SinvalQueue.ShmemName: return SinvalModule();
            case DsmRegistry.ShmemName: return DsmModule(null);
            case BackgroundWorkerArray.ShmemName: return WorkersModule(0);
            case Stats.SharedStats.ShmemName: return StatsModule();
            case SupervisorRequests.ShmemName: return RequestsModule(1, 1); // counts read from the area's header
            case LockManager.ShmemName:
            {
                int maxLocks = r.Int(), deadlock = r.Int(), timeout = r.Int();
                return LockManagerModule(Checked(name, () => { var o = new LockManagerOptions(maxLocks, deadlock, timeout); o.Validate(); return o; }));
            }
            case BufferPoolName:
            {
                int n = r.Int(), blocks = r.Int();
                string dir = r.String();
                int maxOpenFiles = r.Int();
                return BufferPoolModule(Checked(name, () => new BufferPoolOptions(n, dir, blocks) { MaxOpenFiles = maxOpenFiles }));
            }
            case Checkpointer.ShmemName:
            {
                int timeout = r.Int();
                double target = r.Double();
                int max = r.Int(), shutdown = r.Int(), startup = r.Int();
                return CheckpointerModule(Checked(name, () => new CheckpointerOptions(timeout, target, max, shutdown != 0, startup)));
            }
            case BgWriterName:
            {
                int delay = r.Int(), lru = r.Int();
                double mult = r.Double();
                int hib = r.Int();
                return BgWriterModule(new BgWriterOptions(delay, lru, mult, hib));
            }
            case Wal.XLog.ShmemName:
            {
                int seg = r.Int(), bufBytes = r.Int();
                long maxWal = r.Long();
                int fpw = r.Int(), delay = r.Int(), flushAfter = r.Int(), nbuf = r.Int();
                string dir = r.String();
                return WalModule(Checked(name, () => new Wal.WalOptions
                {
                    SegmentSize = seg, BufferBytes = bufBytes, MaxWalSize = maxWal, FullPageWrites = fpw != 0, WriterDelayMs = delay,
                    WriterFlushAfterBytes = flushAfter,
                }), nbuf, dir);
            }
            case RegionFactory:
                return RegionModule(name, r.Long());
            case null:
                return null;
            default:
                throw new PgIpcException($"module \"{name}\" in the segment names an unknown factory \"{factory}\" (a newer PgIpc made it?)");
        }
    }

    private static T Checked<T>(string name, Func<T> make)
    {
        try
        {
            return make();
        }
        catch (ArgumentException ex)
        {
            throw new PgIpcException($"module \"{name}\": the options recorded in the segment are invalid: {ex.Message}", ex);
        }
    }

    private static ClusterSettings Creating(ShmemModuleContext c)
        => c.Settings ?? throw new InvalidOperationException("a module was created without the cluster's settings");

    private static void Require(ShmemModuleContext c, string name)
    {
        if (!c.IsCreating && !c.Segment.TryFindStruct(name, out _))
            throw new PgIpcException($"segment {c.Segment.Handle.Id} has no \"{name}\"; it was not made by a ClusterBuilder");
    }

    /// <summary>Little-endian options, written once at build time (cold path).</summary>
    private sealed class OptionsWriter
    {
        private readonly MemoryStream _s = new();

        public OptionsWriter Int(int v) { Span<byte> b = stackalloc byte[4]; BitConverter.TryWriteBytes(b, v); _s.Write(b); return this; }

        public OptionsWriter Long(long v) { Span<byte> b = stackalloc byte[8]; BitConverter.TryWriteBytes(b, v); _s.Write(b); return this; }

        public OptionsWriter Double(double v) => Long(BitConverter.DoubleToInt64Bits(v));

        public OptionsWriter String(string v)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(v);
            Int(bytes.Length);
            _s.Write(bytes);
            return this;
        }

        public byte[] ToArray()
        {
            byte[] a = _s.ToArray();
            if (a.Length > ShmemModule.MaxOptionsBytes)
                throw new ArgumentException($"module options of {a.Length} bytes (at most {ShmemModule.MaxOptionsBytes}); is the data directory path that long?");
            return a;
        }
    }

    /// <summary>Reads recorded options; every length is checked (the bytes come from another process).</summary>
    private ref struct OptionsReader(string name, ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;

        private ReadOnlySpan<byte> Take(int n)
        {
            if (n < 0 || n > _data.Length - _pos)
                throw new PgIpcException($"module \"{name}\": the options recorded in the segment are truncated ({_data.Length} bytes)");
            ReadOnlySpan<byte> s = _data.Slice(_pos, n);
            _pos += n;
            return s;
        }

        public int Int() => BitConverter.ToInt32(Take(4));

        public long Long() => BitConverter.ToInt64(Take(8));

        public double Double() => BitConverter.Int64BitsToDouble(Long());

        public string String() => Encoding.UTF8.GetString(Take(Int()));
    }
}
