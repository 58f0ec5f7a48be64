/*-------------------------------------------------------------------------
 * PageChecksumBenchmarks.cs
 *   The page checksum, which every buffer-pool miss pays: PageChecksum's
 *   scalar loop against a Vector256 version of the same algorithm.
 *
 *     dotnet run -c Release --project perf -- --filter '*PageChecksum*'
 *
 * NOTES
 *   PostgreSQL's checksum (checksum_impl.h) keeps 32 independent FNV-1a
 *   style sums so that a compiler can vectorise it: one 8 KiB page is 64
 *   rows of 32 words, and each row updates all 32 sums. Vector256 holds 8
 *   of them, so a row is four vector xor / multiply / shift / xor steps.
 *   PageChecksum.Compute uses the vector form where Vector256 is
 *   accelerated; the scalar loop cost about as much as the 8 KiB pread on
 *   a miss (BufferMissBenchmarks). GlobalSetup checks both give the same
 *   result on random pages and blocks.
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Buffers;

namespace PgIpc.Perf.Buffers;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class PageChecksumBenchmarks
{
    private readonly byte[] _page = new byte[BufferPool.BlockSize];

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(42);
        for (uint block = 0; block < 64; block++)
        {
            rng.NextBytes(_page);
            ushort scalar = PageChecksum.ComputeScalar(_page, block * 7919);
            ushort vector = PageChecksum.ComputeVector256(_page, block * 7919);
            if (scalar != vector)
                throw new InvalidOperationException($"ComputeVector256 gives {vector}, PageChecksum.Compute {scalar} (block {block * 7919})");
        }
    }

    [Benchmark(Baseline = true)]
    public ushort Scalar() => PageChecksum.ComputeScalar(_page, 12345);

    [Benchmark]
    public ushort Vector256Lanes() => PageChecksum.ComputeVector256(_page, 12345);
}
