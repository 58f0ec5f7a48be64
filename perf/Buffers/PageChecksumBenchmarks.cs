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
 *   ComputeVector256 here is that, as a measured proposal for
 *   PageChecksum.Compute (which is scalar and costs about as much as the
 *   8 KiB pread itself, see BufferMissBenchmarks); GlobalSetup checks that
 *   it gives PageChecksum.Compute's result on random pages and blocks.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using BenchmarkDotNet.Attributes;
using PgIpc.Buffers;

namespace PgIpc.Perf.Buffers;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class PageChecksumBenchmarks
{
    private const uint FnvPrime = 16777619;
    private const int NSums = 32;

    private static ReadOnlySpan<uint> BaseOffsets =>
    [
        0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
        0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
        0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
        0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
    ];

    private readonly byte[] _page = new byte[BufferPool.BlockSize];

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(42);
        for (uint block = 0; block < 64; block++)
        {
            rng.NextBytes(_page);
            ushort scalar = PageChecksum.Compute(_page, block * 7919);
            ushort vector = ComputeVector256(_page, block * 7919);
            if (scalar != vector)
                throw new InvalidOperationException($"ComputeVector256 gives {vector}, PageChecksum.Compute {scalar} (block {block * 7919})");
        }
    }

    [Benchmark(Baseline = true)]
    public ushort Scalar() => PageChecksum.Compute(_page, 12345);

    [Benchmark]
    public ushort Vector256Lanes() => ComputeVector256(_page, 12345);

    /// <summary>pg_checksum_page with the 32 sums in four Vector256&lt;uint&gt;.</summary>
    public static ushort ComputeVector256(ReadOnlySpan<byte> page, uint blockNumber)
    {
        if (page.Length != BufferPool.BlockSize)
            throw new ArgumentException($"a page is {BufferPool.BlockSize} bytes, not {page.Length}", nameof(page));
        ref uint words = ref Unsafe.As<byte, uint>(ref MemoryMarshal.GetReference(page));
        ref uint bases = ref MemoryMarshal.GetReference(BaseOffsets);
        Vector256<uint> s0 = Vector256.LoadUnsafe(ref bases, 0);
        Vector256<uint> s1 = Vector256.LoadUnsafe(ref bases, 8);
        Vector256<uint> s2 = Vector256.LoadUnsafe(ref bases, 16);
        Vector256<uint> s3 = Vector256.LoadUnsafe(ref bases, 24);
        // pd_checksum is the low half of word 2 of row 0: it counts as zero.
        Vector256<uint> firstMask = Vector256.Create(~0u, ~0u, 0xFFFF0000u, ~0u, ~0u, ~0u, ~0u, ~0u);
        Vector256<uint> v0 = Vector256.LoadUnsafe(ref words, 0) & firstMask;
        s0 = Comp(s0, v0);
        s1 = Comp(s1, Vector256.LoadUnsafe(ref words, 8));
        s2 = Comp(s2, Vector256.LoadUnsafe(ref words, 16));
        s3 = Comp(s3, Vector256.LoadUnsafe(ref words, 24));
        for (nuint row = 1; row < BufferPool.BlockSize / (4 * NSums); row++)
        {
            nuint at = row * NSums;
            s0 = Comp(s0, Vector256.LoadUnsafe(ref words, at));
            s1 = Comp(s1, Vector256.LoadUnsafe(ref words, at + 8));
            s2 = Comp(s2, Vector256.LoadUnsafe(ref words, at + 16));
            s3 = Comp(s3, Vector256.LoadUnsafe(ref words, at + 24));
        }
        for (int round = 0; round < 2; round++)
        {
            s0 = Comp(s0, Vector256<uint>.Zero);
            s1 = Comp(s1, Vector256<uint>.Zero);
            s2 = Comp(s2, Vector256<uint>.Zero);
            s3 = Comp(s3, Vector256<uint>.Zero);
        }
        Vector256<uint> x = s0 ^ s1 ^ s2 ^ s3;
        Vector128<uint> h = x.GetLower() ^ x.GetUpper();
        uint result = h.GetElement(0) ^ h.GetElement(1) ^ h.GetElement(2) ^ h.GetElement(3);
        result ^= blockNumber;
        return (ushort)(result % 65535 + 1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Comp(Vector256<uint> sum, Vector256<uint> value)
    {
        Vector256<uint> tmp = sum ^ value;
        return (tmp * FnvPrime) ^ Vector256.ShiftRightLogical(tmp, 17);
    }
}
