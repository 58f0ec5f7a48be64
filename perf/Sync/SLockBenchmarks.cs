/*-------------------------------------------------------------------------
 * SLockBenchmarks.cs
 *   Micro-benchmark of SLock: an uncontended acquire + release pair on a
 *   padded lock word inside a shared memory segment.
 *
 * NOTES
 *   Acquire is an xchg (full barrier), Release a release store: the shape
 *   of PostgreSQL's S_LOCK / S_UNLOCK (src/include/storage/s_lock.h) and of
 *   the limits tool's 07_cas_acq_store_rel_pair (lock cmpxchg + mov). Run
 *   /work/shared/tools/limits in the same time window and compare as a
 *   ratio: the VM's absolute figures move with host load.
 *
 *   Two shapes. AcquireReleasePair is one pair per call, and
 *   BenchmarkDotNet subtracts its measured cost of an empty call; for an
 *   operation this short the subtraction over-corrects (the CPU overlaps
 *   the call overhead with the atomic), so its figure is a lower bound.
 *   AcquireReleasePairLoop runs PairsPerInvoke pairs back to back in one
 *   call, which is what the C tool times, and is the one to compare.
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Perf.Sync;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public unsafe class SLockBenchmarks
{
    private const int PairsPerInvoke = 1024;

    private ShmemSegment? _segment;
    private int* _word;

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        _segment = PerfSegments.Create("slock", Backend, 4L << 20);
        try
        {
            ShmemRegion region = _segment.InitStruct("bench.slock", sizeof(SpinLockPadded), out _);
            _word = &((SpinLockPadded*)region.Pointer)->Value;
            SLock.Init(ref *_word);
        }
        catch
        {
            PerfSegments.Destroy(ref _segment);
            throw;
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _word = null;
        PerfSegments.Destroy(ref _segment);
    }

    /// <summary>SLock.Acquire + SLock.Release, nobody else holding or wanting the lock.</summary>
    [Benchmark]
    public void AcquireReleasePair()
    {
        SLock.Acquire(ref *_word);
        SLock.Release(ref *_word);
    }

    /// <summary>PairsPerInvoke pairs in a loop; the figure is per pair.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void AcquireReleasePairLoop()
    {
        int* word = _word;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            SLock.Acquire(ref *word);
            SLock.Release(ref *word);
        }
    }
}
