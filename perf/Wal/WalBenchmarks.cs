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
 *   (AdvanceXLInsertBuffer), as PostgreSQL's do; a checkpoint every 256
 *   invocations recycles the segments so the disk use stays bounded (its
 *   cost is in the Insert figure, amortised over 262,144 records).
 *   Insert runs InsertsPerInvoke records per invocation
 *   (OperationsPerInvoke): figures are per record.
 *
 *   The fsync is RandomAccess.FlushToDisk (fsync(2)) in both the commit
 *   and the baseline.
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

    [Params("linux")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        WalResourceManagers.Register(new WalResourceManager(RmId, "perf", (_, _) => { }, (_, _) => { }));
        _dir = Path.Combine(Path.GetTempPath(), $"pgipc-perf-wal-{Environment.ProcessId}");
        _s = new ClusterBuilder($"perf-wal-{Environment.ProcessId}")
            .WithPlatform(PgIpcPlatform.Get(Backend))
            .WithDataDirectory(_dir)
            .WithLog(TextWriter.Null)
            .WithWal(new WalOptions { BufferBytes = 2 << 20, MaxWalSize = 256L << 20 })
            .Build();
        _me = _s.Cluster.Procs.Join();
        _wal = _s.Cluster.Get<XLog>();
        _bare = File.OpenHandle(Path.Combine(_dir, "bare-fsync"), FileMode.Create, FileAccess.ReadWrite);
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
        // Every 256 invocations (about 32 MiB of WAL) a checkpoint recycles the segments: disk use stays bounded.
        // (An [IterationCleanup] would force one invocation per iteration, too coarse for a figure in nanoseconds.)
        if (++_invocations % 256 == 0)
            _wal.Checkpoint(me);
        return end;
    }

    /// <summary>A commit: the 100-byte record inserted, then XLogFlush of its end (one fsync, one process).</summary>
    [Benchmark]
    public ulong Commit()
    {
        WalRecordBuilder b = _wal.BeginInsert();
        b.RegisterData(_data);
        ulong end = b.Insert(_me!, RmId, 0);
        _wal.Flush(_me!, end);
        return end;
    }

    /// <summary>The baseline: pwrite of 8 KiB to a file in the same directory, then fsync.</summary>
    [Benchmark(Baseline = true)]
    public void BareWrite8KAndFsync()
    {
        RandomAccess.Write(_bare!, _page, 0);
        RandomAccess.FlushToDisk(_bare!);
    }
}
