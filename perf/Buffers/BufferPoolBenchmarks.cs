/*-------------------------------------------------------------------------
 * BufferPoolBenchmarks.cs
 *   Micro-benchmarks of the shared buffer pool's hit path in one process:
 *   ReadBuffer + ReleaseBuffer of a resident page (mapping partition lock
 *   shared, hash lookup, CAS on the state word, private refcount), and the
 *   private pin path (IncrBufferRefCount + ReleaseBuffer of a buffer the
 *   participant already pins: no shared memory write at all).
 *
 * NOTES
 *   Each method runs OpsPerInvoke operations back to back
 *   (OperationsPerInvoke), as LWLockBenchmarks does. The pool has 1024
 *   buffers over a data directory in the temp directory; 64 pages are made
 *   resident in GlobalSetup. The memory column must show 0 B.
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Buffers;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Perf.Buffers;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class BufferPoolBenchmarks
{
    private const int OpsPerInvoke = 1024;
    private const int Pages = 64;

    private ShmemSegment? _segment;
    private BufferPool? _pool;
    private Participant? _me;
    private string _dataDir = "";
    private int _held;

    [Params("linux")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        _dataDir = Path.Combine(Path.GetTempPath(), $"pgipc-perf-buf-{Environment.ProcessId}");
        var options = new BufferPoolOptions(1024, _dataDir);
        var procOptions = new ProcArrayOptions(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(procOptions))
            .RequestAddinShmemSpace("PgIpc.BufferPool", BufferPool.ShmemSize(options));
        _segment = PerfSegments.Create("buffers", Backend, sizes);
        try
        {
            ProcArray procs = ProcArray.Init(_segment, procOptions, out _);
            _pool = BufferPool.Init(_segment, procs, options, out _);
            _me = procs.Join();
            for (int i = 0; i < Pages; i++)
                _pool.ReleaseBuffer(_me, _pool.ReadBuffer(_me, 1, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend));
            _held = _pool.ReadBuffer(_me, 1, ForkNumber.Main, 0);
        }
        catch
        {
            Cleanup();
            throw;
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_pool is not null && _me is not null && _held != 0)
            _pool.ReleaseBuffer(_me, _held);
        _me?.Dispose();
        _pool?.Dispose();
        PerfSegments.Destroy(ref _segment);
        if (Directory.Exists(_dataDir))
            Directory.Delete(_dataDir, recursive: true);
        _me = null;
        _pool = null;
    }

    /// <summary>The hit path: ReadBuffer of a resident page this participant does not pin, then ReleaseBuffer.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public void ReadBufferHitRelease()
    {
        BufferPool pool = _pool!;
        Participant me = _me!;
        for (int i = 0; i < OpsPerInvoke; i++)
            pool.ReleaseBuffer(me, pool.ReadBuffer(me, 1, ForkNumber.Main, 1 + (i & (Pages - 2))));
    }

    /// <summary>Pin + unpin of a resident buffer the participant already pins (private refcount only).</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public void PrivatePinUnpin()
    {
        BufferPool pool = _pool!;
        Participant me = _me!;
        int b = _held;
        for (int i = 0; i < OpsPerInvoke; i++)
        {
            pool.IncrBufferRefCount(me, b);
            pool.ReleaseBuffer(me, b);
        }
    }
}
