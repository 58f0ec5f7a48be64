/*-------------------------------------------------------------------------
 * BufferMissBenchmarks.cs
 *   The buffer pool's miss path against a bare 8 KiB pread of the same
 *   cached file, and local buffers beside the shared ones.
 *
 *     dotnet run -c Release --project perf -- --filter '*BufferMiss*'
 *
 * NOTES
 *   Two relations of Blocks blocks are written once in GlobalSetup (so they
 *   sit in the OS page cache): relation 1 with non-zero pages carrying
 *   their checksums, relation 2 all zeros (a zero page is valid without a
 *   checksum, so its read skips the checksum: that isolates the buffer
 *   manager's own cost). The pools have 16 buffers and every method walks
 *   the relation cyclically, so each ReadBuffer misses, takes a clean
 *   victim from the clock sweep (unmapping its old tag), maps the new tag,
 *   reads 8 KiB through the storage manager and verifies the checksum.
 *
 *   Peers in the same run: Pread8K is RandomAccess.Read of the same blocks
 *   on one handle opened once (what Smgr.Read does underneath, without the
 *   buffer manager); PageChecksumVerify is the checksum of one 8 KiB page
 *   alone, to say how much of the miss it is. LocalReadBufferMiss and
 *   LocalReadBufferHitRelease are the same operations on local buffers.
 *
 *   Each method runs OpsPerInvoke operations (OperationsPerInvoke). The
 *   memory column should show 0 B.
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using Microsoft.Win32.SafeHandles;
using PgIpc.Buffers;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Perf.Buffers;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class BufferMissBenchmarks
{
    private const int OpsPerInvoke = 256;
    private const int Blocks = 2048;
    private const int PoolBuffers = 16;
    private const uint ChecksummedRel = 1;
    private const uint ZeroRel = 2;

    private ShmemSegment? _segment;
    private BufferPool? _pool;
    private LocalBuffers? _local;
    private Participant? _me;
    private SafeFileHandle? _file;
    private string _dataDir = "";
    private readonly byte[] _page = GC.AllocateArray<byte>(BufferPool.BlockSize, pinned: true);
    private uint _next;

    [Params("linux")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        _dataDir = Path.Combine(Path.GetTempPath(), $"pgipc-perf-bufmiss-{Environment.ProcessId}");
        WriteRelations(_dataDir);
        var options = new BufferPoolOptions(PoolBuffers, _dataDir);
        var procOptions = new ProcArrayOptions(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(procOptions))
            .RequestAddinShmemSpace("PgIpc.BufferPool", BufferPool.ShmemSize(options));
        _segment = PerfSegments.Create("bufmiss", Backend, sizes);
        try
        {
            ProcArray procs = ProcArray.Init(_segment, procOptions, out _);
            _pool = BufferPool.Init(_segment, procs, options, out _);
            _me = procs.Join();
            _local = new LocalBuffers(_me, _dataDir, PoolBuffers);
            _file = File.OpenHandle(Path.Combine(_dataDir, ChecksummedRel.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, FileOptions.RandomAccess);
            // A non-zero checksummed page for PageChecksumVerify (a zero page would skip the checksum).
            RandomAccess.Read(_file, _page, 0);
            // Warm every path once (and the page cache with every block).
            for (int i = 0; i < Blocks; i++)
            {
                _pool.ReleaseBuffer(_me, _pool.ReadBuffer(_me, ChecksummedRel, ForkNumber.Main, i));
                _pool.ReleaseBuffer(_me, _pool.ReadBuffer(_me, ZeroRel, ForkNumber.Main, i));
            }
        }
        catch
        {
            Cleanup();
            throw;
        }
    }

    /// <summary>Relation 1: pages with a counter and filler, checksummed; relation 2: zero pages.</summary>
    internal static void WriteRelations(string dir)
    {
        // 0700: a data directory open to others is refused (DataDirectoryPermissionException).
        if (OperatingSystem.IsWindows())
            Directory.CreateDirectory(dir);
        else
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        byte[] page = new byte[BufferPool.BlockSize];
        using (var f = new FileStream(Path.Combine(dir, ChecksummedRel.ToString(System.Globalization.CultureInfo.InvariantCulture)), FileMode.Create))
        {
            for (uint b = 0; b < Blocks; b++)
            {
                Array.Fill(page, (byte)(b * 31 + 7));
                PageChecksum.Set(page, b);
                f.Write(page);
            }
        }
        Array.Clear(page);
        using (var f = new FileStream(Path.Combine(dir, ZeroRel.ToString(System.Globalization.CultureInfo.InvariantCulture)), FileMode.Create))
        {
            for (uint b = 0; b < Blocks; b++)
                f.Write(page);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _file?.Dispose();
        _local?.Dispose();
        _me?.Dispose();
        _pool?.Dispose();
        PerfSegments.Destroy(ref _segment);
        if (Directory.Exists(_dataDir))
            Directory.Delete(_dataDir, recursive: true);
        _file = null;
        _local = null;
        _me = null;
        _pool = null;
    }

    private uint NextBlock()
    {
        uint b = _next;
        _next = b + 1 == Blocks ? 0 : b + 1;
        return b;
    }

    /// <summary>The bare read: RandomAccess.Read of 8 KiB of the cached checksummed relation.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = OpsPerInvoke)]
    public int Pread8K()
    {
        int n = 0;
        for (int i = 0; i < OpsPerInvoke; i++)
            n += RandomAccess.Read(_file!, _page, (long)NextBlock() * BufferPool.BlockSize);
        return n;
    }

    /// <summary>The checksum of one (non-zero) page alone.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public bool PageChecksumVerify()
    {
        bool ok = true;
        for (int i = 0; i < OpsPerInvoke; i++)
            ok &= PageChecksum.Verify(_page, 0, out _, out _);
        return ok;
    }

    /// <summary>ReadBuffer + ReleaseBuffer of a non-resident checksummed page: clock sweep, remap, pread, checksum.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public void ReadBufferMiss()
    {
        BufferPool pool = _pool!;
        Participant me = _me!;
        for (int i = 0; i < OpsPerInvoke; i++)
            pool.ReleaseBuffer(me, pool.ReadBuffer(me, ChecksummedRel, ForkNumber.Main, NextBlock()));
    }

    /// <summary>The same miss on zero pages (no checksum to compute): the buffer manager's cost over the pread.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public void ReadBufferMissZeroPage()
    {
        BufferPool pool = _pool!;
        Participant me = _me!;
        for (int i = 0; i < OpsPerInvoke; i++)
            pool.ReleaseBuffer(me, pool.ReadBuffer(me, ZeroRel, ForkNumber.Main, NextBlock()));
    }

    /// <summary>The miss on local buffers (no mapping lock, no header lock, no I/O handshake).</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public void LocalReadBufferMiss()
    {
        LocalBuffers local = _local!;
        Participant me = _me!;
        for (int i = 0; i < OpsPerInvoke; i++)
            local.ReleaseBuffer(me, local.ReadBuffer(me, ChecksummedRel, ForkNumber.Main, NextBlock()));
    }

    /// <summary>The hit on local buffers: ReadBuffer + ReleaseBuffer of one of 8 resident pages.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke)]
    public void LocalReadBufferHitRelease()
    {
        LocalBuffers local = _local!;
        Participant me = _me!;
        for (int i = 0; i < OpsPerInvoke; i++)
            local.ReleaseBuffer(me, local.ReadBuffer(me, ZeroRel, ForkNumber.Main, i & 7));
    }
}
