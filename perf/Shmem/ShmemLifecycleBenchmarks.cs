/*-------------------------------------------------------------------------
 * ShmemLifecycleBenchmarks.cs
 *   Creating and destroying a whole cluster segment, next to the same OS
 *   calls made directly by the C limits tool (10_sysv_128MiB_cycle,
 *   10_posix_shm_128MiB_cycle) and .NET's MemoryMappedFile.
 *
 * NOTES
 *   A PgIpc create does more than the bare OS cycle: a stale-segment probe
 *   of the candidate id (IPC_STAT or shm_open), the header and index
 *   initialisation, and on POSIX posix_fallocate of every page (so a full
 *   /dev/shm is an error at create time, not a SIGBUS later), which is the
 *   dominant cost for a large segment. The figure is therefore not "as fast
 *   as the syscalls" by design; it is measured so a regression shows.
 *-------------------------------------------------------------------------
 */
using System.IO.MemoryMappedFiles;
using BenchmarkDotNet.Attributes;
using PgIpc.Shmem;

namespace PgIpc.Perf.Shmem;

/// <summary>Create + destroy of a 128 MiB segment.</summary>
[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 2, iterationCount: 6)]
public class ShmemLifecycleBenchmarks
{
    private const long Size = 128L << 20;

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    [Benchmark]
    public long CreateDestroy()
    {
        ShmemSegment? s = PerfSegments.Create("lifecycle", Backend, Size);
        long total = s.TotalSize;
        PerfSegments.Destroy(ref s);
        return total;
    }

    /// <summary>Peer: an anonymous .NET memory-mapped file of the same size, created and disposed.</summary>
    [Benchmark(Baseline = true)]
    public long MemoryMappedFileCreateDispose()
    {
        using MemoryMappedFile m = MemoryMappedFile.CreateNew(null, Size);
        using MemoryMappedViewAccessor v = m.CreateViewAccessor(0, 4096);
        return v.Capacity;
    }
}
