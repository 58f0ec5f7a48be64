/*-------------------------------------------------------------------------
 * ShmemBenchmarks.cs
 *   Micro-benchmarks of the main segment: ShmemIndex lookups
 *   (ShmemInitStruct of an existing name, TryFindStruct), the bump
 *   allocator (ShmemAlloc / ShmemAllocNoError), and a plain read through a
 *   ShmemRegion next to .NET's MemoryMappedViewAccessor.
 *
 * NOTES
 *   One class per Core module, each with [MemoryDiagnoser]: every hot path
 *   here must show 0 B allocated.
 *
 *   The allocator never frees, so ShmemAllocBenchmarks fixes the number of
 *   calls per iteration (InvocationCount, 16 allocations per call) and
 *   creates a fresh 256 MiB segment with room for exactly that many 64-byte
 *   (one cache line) allocations plus slack in [IterationSetup];
 *   [IterationCleanup] checks the slack is still there, i.e. that every
 *   call took the success path, and destroys the segment. TryAlloc does
 *   not touch the memory it hands out, so the segment's pages are never
 *   faulted in and re-creating it is cheap.
 *
 *   The MemoryMappedFile peer is no like-for-like comparison of "open a
 *   structure" (.NET has no named-structure index); it only shows what one
 *   8-byte read costs through the accessor against a span over a region.
 *
 *   Mirrors what PostgreSQL's ShmemInitStruct / ShmemAlloc do on every
 *   backend start (src/backend/storage/ipc/shmem.c).
 *-------------------------------------------------------------------------
 */
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using PgIpc.Shmem;

namespace PgIpc.Perf.Shmem;

/// <summary>ShmemIndex: looking up a named structure that already exists, among ~100.</summary>
[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class ShmemIndexBenchmarks
{
    private const int NameCount = 100;
    private ShmemSegment? _segment;

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        _segment = PerfSegments.Create("index", Backend, 64L << 20);
        try
        {
            for (int i = 0; i < NameCount; i++)
            {
                _segment.InitStruct($"bench.struct.{i}", 64, out bool found);
                if (found)
                    throw new InvalidOperationException($"bench.struct.{i} already existed in a fresh segment");
            }
        }
        catch
        {
            PerfSegments.Destroy(ref _segment);
            throw;
        }
    }

    [GlobalCleanup]
    public void Cleanup() => PerfSegments.Destroy(ref _segment);

    /// <summary>ShmemInitStruct of an existing name: encode, hash, lock-free probe, ready check (found = true).</summary>
    [Benchmark]
    public long InitStructFound()
    {
        ShmemRegion r = _segment!.InitStruct("bench.struct.42", 64, out bool found);
        return found ? r.Offset : -1;
    }

    /// <summary>The same lookup without the create path.</summary>
    [Benchmark]
    public long TryFindStruct()
        => _segment!.TryFindStruct("bench.struct.42", out ShmemRegion r) ? r.Offset : -1;
}

/// <summary>ShmemAlloc: 64-byte anonymous allocations (spinlock, bump, release); figures are per allocation.</summary>
[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 6, iterationCount: 8, invocationCount: InvocationsPerIteration)]
public class ShmemAllocBenchmarks
{
    /// <summary>Calls per iteration; a multiple of BenchmarkDotNet's unroll factor (16).</summary>
    public const int InvocationsPerIteration = 1 << 18;
    /// <summary>Allocations per call, so the per-call overhead BenchmarkDotNet subtracts is small against the work.</summary>
    private const int AllocsPerInvoke = 16;
    private const long AllocSize = 64;
    private const long Slack = 1L << 20;

    private ShmemSegment? _segment;

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    [IterationSetup]
    public void IterationSetup()
    {
        PerfSegments.Destroy(ref _segment);
        // 2^18 calls x 16 allocations x 64 B = 256 MiB of room, plus the header, the index and some slack.
        long size = ShmemSegment.MinimumSize() + (long)InvocationsPerIteration * AllocsPerInvoke * AllocSize + Slack;
        _segment = PerfSegments.Create("alloc", Backend, size);
    }

    [IterationCleanup]
    public void IterationCleanup()
    {
        long free = _segment!.FreeBytes;
        PerfSegments.Destroy(ref _segment);
        // Allocation only moves forward: slack left at the end means no call hit the "segment full" path.
        if (free < AllocSize)
            throw new InvalidOperationException($"segment ran out ({free} bytes left): the iteration measured failed allocations");
    }

    [GlobalCleanup]
    public void Cleanup() => PerfSegments.Destroy(ref _segment);

    /// <summary>ShmemAllocNoError, AllocsPerInvoke times.</summary>
    [Benchmark(OperationsPerInvoke = AllocsPerInvoke)]
    public long TryAlloc64()
    {
        ShmemSegment segment = _segment!;
        long last = 0;
        for (int i = 0; i < AllocsPerInvoke; i++)
            last = segment.TryAlloc(AllocSize, out ShmemRegion r) ? r.Offset : -1;
        return last;
    }

    /// <summary>ShmemAlloc (throws when full; here it never is), AllocsPerInvoke times.</summary>
    [Benchmark(OperationsPerInvoke = AllocsPerInvoke)]
    public long Alloc64()
    {
        ShmemSegment segment = _segment!;
        long last = 0;
        for (int i = 0; i < AllocsPerInvoke; i++)
            last = segment.Alloc(AllocSize).Offset;
        return last;
    }
}

/// <summary>ShmemRegion: one 8-byte read from a shared mapping, against MemoryMappedViewAccessor.</summary>
[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class ShmemRegionReadBenchmarks
{
    private ShmemSegment? _segment;
    private ShmemRegion _region;
    private MemoryMappedFile? _mmf;
    private MemoryMappedViewAccessor? _accessor;

    [GlobalSetup]
    public void Setup()
    {
        // The POSIX backend maps a shm_open file MAP_SHARED, as MemoryMappedFile.CreateNew(null, ...) does on Linux.
        _segment = PerfSegments.Create("read", "posix", 4L << 20);
        try
        {
            _region = _segment.Alloc(4096, "read benchmark");
            MemoryMarshal.Write(_region.AsSpan(), 0x0123_4567_89AB_CDEFL);
            _mmf = MemoryMappedFile.CreateNew(null, 1 << 20);
            _accessor = _mmf.CreateViewAccessor();
            _accessor.Write(0, 0x0123_4567_89AB_CDEFL);
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
        _accessor?.Dispose();
        _accessor = null;
        _mmf?.Dispose();
        _mmf = null;
        PerfSegments.Destroy(ref _segment);
    }

    /// <summary>.NET's MemoryMappedViewAccessor.ReadInt64 (bounds and SafeBuffer checks).</summary>
    [Benchmark(Baseline = true)]
    public long MmfAccessorReadInt64() => _accessor!.ReadInt64(0);

    /// <summary>MemoryMarshal.Read over ShmemRegion.AsSpan() (builds the span each call).</summary>
    [Benchmark]
    public long RegionSpanReadInt64() => MemoryMarshal.Read<long>(_region.AsSpan());

    /// <summary>ShmemRegion.As&lt;long&gt;() (size check, then a plain load).</summary>
    [Benchmark]
    public long RegionAsReadInt64() => _region.As<long>();
}
