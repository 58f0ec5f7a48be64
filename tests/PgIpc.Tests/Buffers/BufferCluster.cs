/*-------------------------------------------------------------------------
 * BufferCluster.cs
 *   A segment with participant slots, a buffer pool over a fresh data
 *   directory (under the temp directory, deleted on Dispose) and the
 *   checkpointer's shared state, as the buffer tests and their worker
 *   processes use it. Every view's writes forward fsync requests to the
 *   checkpointer's queue.
 *-------------------------------------------------------------------------
 */
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Buffers;

internal sealed class BufferCluster : IDisposable
{
    public ShmemSegment Segment { get; }
    public ProcArray Procs { get; }
    public BufferPool Pool { get; }
    public BufferPoolOptions Options { get; }
    public Checkpointer Checkpointer { get; }
    private readonly bool _ownsDirectory;

    /// <summary>The checkpointer options every process of a test cluster uses (short waits for a missing checkpointer).</summary>
    public static CheckpointerOptions CheckpointerOptions { get; } = new(StartupWaitMs: 2000);

    private BufferCluster(ShmemSegment segment, ProcArray procs, BufferPool pool, BufferPoolOptions options, Checkpointer checkpointer,
        bool ownsDirectory)
    {
        Segment = segment;
        Procs = procs;
        Pool = pool;
        Options = options;
        Checkpointer = checkpointer;
        _ownsDirectory = ownsDirectory;
    }

    public static string NewDataDirectory()
        => Path.Combine(Path.GetTempPath(), $"pgipc-buf-{Environment.ProcessId}-{Guid.NewGuid():N}");

    /// <summary>A new cluster; over <paramref name="dataDirectory"/> if given (left in place), else over a fresh one (deleted on Dispose).</summary>
    public static BufferCluster Create(IPgIpcPlatform platform, int numBuffers, int blocksPerSegment = Smgr.DefaultBlocksPerSegment,
        string? dataDirectory = null)
    {
        var options = new BufferPoolOptions(numBuffers, dataDirectory ?? NewDataDirectory(), blocksPerSegment);
        var procOptions = new ProcArrayOptions(MaxBackends: 16, MaxAuxiliary: 2, MaxBackgroundWorkers: 2);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(procOptions))
            .RequestAddinShmemSpace(LWLockTranches.ShmemName, LWLockTranches.ShmemSize(null))
            .RequestAddinShmemSpace(PgIpc.Signals.ProcSignal.ShmemName, PgIpc.Signals.ProcSignal.ShmemSize(procOptions.TotalProcs))
            .RequestAddinShmemSpace(PgIpc.Signals.PMSignal.ShmemName, PgIpc.Signals.PMSignal.ShmemSize())
            .RequestAddinShmemSpace("PgIpc.BufferPool", BufferPool.ShmemSize(options))
            .RequestAddinShmemSpace(Checkpointer.ShmemName, Checkpointer.ShmemSize(CheckpointerOptions));
        ShmemSegment seg = ShmemSegment.Create(TestEnvironment.UniqueKey("buf"), sizes, platform);
        try
        {
            ProcArray procs = ProcArray.Init(seg, procOptions, out _);
            LWLockTranches.Init(seg, null, out _);
            PgIpc.Signals.ProcSignal.Init(seg, procs, out _);
            PgIpc.Signals.PMSignal.Init(seg, procs, out _);
            BufferPool pool = BufferPool.Init(seg, procs, options, out bool found);
            if (found)
                throw new InvalidOperationException("a new segment already had a buffer pool");
            Checkpointer ckpt = Checkpointer.Init(seg, procs, pool, CheckpointerOptions, out _);
            return new BufferCluster(seg, procs, pool, options, ckpt, ownsDirectory: dataDirectory is null);
        }
        catch
        {
            seg.Destroy();
            throw;
        }
    }

    /// <summary>The worker side: the pool another process made.</summary>
    public static BufferCluster Attach(ShmemSegment seg, BufferPoolOptions options)
    {
        ProcArray procs = ProcArray.Attach(seg);
        BufferPool pool = BufferPool.Init(seg, procs, options, out _);
        Checkpointer ckpt = Checkpointer.Init(seg, procs, pool, CheckpointerOptions, out _);
        return new BufferCluster(seg, procs, pool, options, ckpt, ownsDirectory: false);
    }

    public void Dispose()
    {
        Pool.Dispose();
        if (Segment.IsAttached)
        {
            if (Segment.IsCreator)
                Segment.Destroy();
            else
                Segment.Dispose();
        }
        if (_ownsDirectory && Directory.Exists(Options.DataDirectory))
            Directory.Delete(Options.DataDirectory, recursive: true);
    }
}
