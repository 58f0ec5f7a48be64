/*-------------------------------------------------------------------------
 * SharedHashBenchmarks.cs
 *   Micro-benchmark of SharedHash<long,long>: finding a key that is there.
 *
 * NOTES
 *   A 1024-element, 16-partition table holding 1000 keys. TryFind's
 *   contract is "partition lock held"; Core has no partition lock yet
 *   (callers bring their own), so this measures the probe alone, in one
 *   thread: hash given (as BufTableLookup gets it from the caller), and
 *   hash computed in the call. 0 B allocated.
 *
 *   Mirrors hash_search_with_hash_value on a shared dynahash
 *   (src/backend/utils/hash/dynahash.c) as buf_table.c uses it.
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Shmem;

namespace PgIpc.Perf.Shmem;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class SharedHashBenchmarks
{
    private const int Capacity = 1024;
    private const int Partitions = 16;
    private const int Keys = 1000;
    private const long Key = 42;

    private ShmemSegment? _segment;
    private SharedHash<long, long>? _hash;
    private uint _keyHash;

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        _segment = PerfSegments.Create("hash", Backend, 16L << 20);
        try
        {
            _hash = SharedHash<long, long>.Init(_segment, "bench.hash", Capacity, Partitions, out bool found);
            if (found)
                throw new InvalidOperationException("bench.hash already existed in a fresh segment");
            for (long k = 0; k < Keys; k++)
            {
                if (!_hash.TryInsert(k, SharedHash<long, long>.GetHashCode(k), k * 10))
                    throw new InvalidOperationException($"key {k} was already in the table");
            }
            _keyHash = SharedHash<long, long>.GetHashCode(Key);
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
        _hash = null;
        PerfSegments.Destroy(ref _segment);
    }

    /// <summary>TryFind with the hash computed beforehand.</summary>
    [Benchmark]
    public long TryFindHashGiven()
        => _hash!.TryFind(Key, _keyHash, out long v) ? v : -1;

    /// <summary>GetHashCode + TryFind.</summary>
    [Benchmark]
    public long HashAndTryFind()
    {
        long key = Key;
        return _hash!.TryFind(key, SharedHash<long, long>.GetHashCode(key), out long v) ? v : -1;
    }
}
