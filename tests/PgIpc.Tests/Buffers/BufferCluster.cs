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
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Buffers;

internal sealed class BufferCluster : IDisposable
{
    private readonly Supervisor? _supervisor;
    private readonly Cluster _cluster;
    private readonly bool _ownsDirectory;

    public ShmemSegment Segment => _cluster.Segment;
    public ProcArray Procs => _cluster.Procs;
    public BufferPool Pool { get; }
    public BufferPoolOptions Options { get; }
    public Checkpointer Checkpointer { get; }

    /// <summary>The checkpointer options every process of a test cluster uses (short waits for a missing checkpointer).</summary>
    public static CheckpointerOptions CheckpointerOptions { get; } = new(StartupWaitMs: 2000);

    private BufferCluster(Supervisor? supervisor, Cluster cluster, bool ownsDirectory)
    {
        _supervisor = supervisor;
        _cluster = cluster;
        Pool = cluster.Get<BufferPool>();
        Options = new BufferPoolOptions(Pool.NumBuffers, Pool.Smgr.DataDirectory, Pool.Smgr.BlocksPerSegment) { MaxOpenFiles = Pool.Smgr.MaxOpenFiles };
        Checkpointer = cluster.Get<Checkpointer>();
        _ownsDirectory = ownsDirectory;
    }

    public static string NewDataDirectory()
        => Path.Combine(Path.GetTempPath(), $"pgipc-buf-{Environment.ProcessId}-{Guid.NewGuid():N}");

    /// <summary>A new cluster; over <paramref name="dataDirectory"/> if given (left in place), else over a fresh one (deleted on Dispose).</summary>
    public static BufferCluster Create(IPgIpcPlatform platform, int numBuffers, int blocksPerSegment = Smgr.DefaultBlocksPerSegment,
        string? dataDirectory = null, int maxOpenFiles = Smgr.DefaultMaxOpenFiles)
    {
        Supervisor s = new ClusterBuilder(TestEnvironment.UniqueKey("buf"))
            .WithPlatform(platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 16, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithDataDirectory(dataDirectory ?? NewDataDirectory())
            .WithBufferPool(numBuffers, blocksPerSegment)
            .WithMaxOpenFiles(maxOpenFiles)
            .WithCheckpointer(CheckpointerOptions)
            .WithLog(TextWriter.Null)
            .Build();
        try
        {
            return new BufferCluster(s, s.Cluster, ownsDirectory: dataDirectory is null);
        }
        catch
        {
            s.Dispose();
            throw;
        }
    }

    /// <summary>The worker side: the pool another process made (whose options must be <paramref name="options"/>).</summary>
    public static BufferCluster Attach(ShmemSegment seg, BufferPoolOptions options)
    {
        Cluster c = Cluster.AttachTo(seg);
        var bc = new BufferCluster(null, c, ownsDirectory: false);
        if (bc.Options != options)
        {
            c.Dispose();
            throw new InvalidOperationException($"the segment's pool is {bc.Options}, the worker was told {options}");
        }
        return bc;
    }

    public void Dispose()
    {
        if (_supervisor is not null)
            _supervisor.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
        else if (Segment.IsAttached)
        {
            _cluster.Dispose();
            Segment.Dispose();
        }
        if (_ownsDirectory && Directory.Exists(Options.DataDirectory))
            Directory.Delete(Options.DataDirectory, recursive: true);
    }
}
