/*-------------------------------------------------------------------------
 * WalBenchmarks.cs
 *   Micro-benchmarks of the write-ahead log, one process: the insert of a
 *   100-byte record without a flush, and a commit (insert + XLogFlush)
 *   against a bare 8 KiB write + fsync of a file in the same directory
 *   (the baseline, measured in the same run).
 *
 * NOTES
 *   The cluster is a real one (ClusterBuilder.WithWal over a temporary
 *   data directory, 16 MiB segments, 2 MiB of WAL buffers). Inserts
 *   without a flush still write the WAL out when the buffer ring is full
 *   (AdvanceXLInsertBuffer), as PostgreSQL's do; a checkpoint every 1024
 *   invocations (128 MiB of WAL) recycles the segments so the disk use
 *   stays bounded (its cost is in the Insert figure, amortised over
 *   1,048,576 records; PostgreSQL's default max_wal_size is 1 GiB).
 *   [GlobalSetup] first inserts 128 MiB and checkpoints, so that recycled
 *   segments are ready as in a server that has run (steady state).
 *   Insert runs InsertsPerInvoke records per invocation
 *   (OperationsPerInvoke): figures are per record.
 *
 *   The flush is the platform's IFileSync.FlushFileData in both the commit
 *   and the baseline: fdatasync(2) on Linux, fsync(2) on the other Unixes,
 *   FlushFileBuffers on Windows.
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using Microsoft.Win32.SafeHandles;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Wal;

namespace PgIpc.Perf.Wal;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class WalBenchmarks
{
    private const int InsertsPerInvoke = 1024;
    private const byte RmId = 201;

    private string _dir = "";
    private Supervisor? _s;
    private Participant? _me;
    private XLog _wal = null!;
    private readonly byte[] _data = new byte[100];
    private readonly byte[] _page = new byte[8192];
    private SafeFileHandle? _bare;
    private IFileSync _files = null!;

    [Params("linux")]
    public string Backend { get; set; } = "linux";

    /// <summary>Whether [GlobalSetup] runs the 128 MiB warm-up (opcount turns it off: too slow under callgrind).</summary>
    public bool SteadyState { get; set; } = true;

    [GlobalSetup]
    public void Setup()
    {
        WalHarness.RegisterRmgr();
        _files = PgIpcPlatform.Get(Backend).Files;
        _dir = Path.Combine(Path.GetTempPath(), $"pgipc-perf-wal-{Environment.ProcessId}");
        _s = new ClusterBuilder($"perf-wal-{Environment.ProcessId}")
            .WithPlatform(PgIpcPlatform.Get(Backend))
            .WithDataDirectory(_dir)
            .WithLog(TextWriter.Null)
            .WithWal(new WalOptions { BufferBytes = 2 << 20, MaxWalSize = 1L << 30 })
            .Build();
        _me = _s.Cluster.Procs.Join();
        _wal = _s.Cluster.Get<XLog>();
        _bare = File.OpenHandle(Path.Combine(_dir, "bare-fsync"), FileMode.Create, FileAccess.ReadWrite);
        // Steady state: a server that has been running has recycled segments ready (a checkpoint renames the ones
        // before its redo pointer into future ones). Without this, the first 128 MiB of the run would each create a
        // new 16 MiB segment (zero-fill and fsync: tens of ms each on a busy disk) and the figure would be mostly that.
        if (!SteadyState)
            return;
        for (int i = 0; i < 1024; i++)
            Insert100();
        _wal.Checkpoint(_me);
        _invocations = 0;
    }

    private int _invocations;

    [GlobalCleanup]
    public void Cleanup()
    {
        _bare?.Dispose();
        _me?.Dispose();
        _s?.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    /// <summary>XLogInsert of a 100-byte record (main data only), no flush.</summary>
    [Benchmark(OperationsPerInvoke = InsertsPerInvoke)]
    public ulong Insert100()
    {
        ulong end = 0;
        Participant me = _me!;
        for (int i = 0; i < InsertsPerInvoke; i++)
        {
            WalRecordBuilder b = _wal.BeginInsert();
            b.RegisterData(_data);
            end = b.Insert(me, RmId, 0);
        }
        // Every 1024 invocations (128 MiB of WAL) a checkpoint recycles the segments: disk use stays bounded.
        // (An [IterationCleanup] would force one invocation per iteration, too coarse for a figure in nanoseconds.)
        if (++_invocations % 1024 == 0)
            _wal.Checkpoint(me);
        return end;
    }

    /// <summary>A commit: the 100-byte record inserted, then XLogFlush of its end (one write and one fdatasync, one process).</summary>
    [Benchmark]
    public ulong Commit()
    {
        WalRecordBuilder b = _wal.BeginInsert();
        b.RegisterData(_data);
        ulong end = b.Insert(_me!, RmId, 0);
        _wal.Flush(_me!, end);
        return end;
    }

    /// <summary>The baseline: pwrite of 8 KiB to a file in the same directory, then fdatasync (the platform's FlushFileData).</summary>
    [Benchmark(Baseline = true)]
    public void BareWrite8KAndFdatasync()
    {
        RandomAccess.Write(_bare!, _page, 0);
        _files.FlushFileData(_bare!);
    }
}
