/*-------------------------------------------------------------------------
 * PageChecksum.cs
 *   Data page checksums: PostgreSQL's FNV-1a-based algorithm.
 *
 * NOTES
 *   The page is read as 64 rows of 32 little-endian uint32 words; 32
 *   independent FNV-1a-like hashes (one per column, each seeded with its own
 *   base offset) mix one word per row, with an extra ">> 17" to spread high
 *   bits down. Two more rounds of zeros finish the mixing, the 32 partial
 *   sums are folded by xor, the block number is xored in (so a page written
 *   at the wrong place fails), and the result is reduced to 1..65535 so it is
 *   never zero. The checksum field itself (bytes 8-9 of the page header) is
 *   taken as zero while computing.
 *
 *   An all-zero page is valid without a checksum (a new, never-written page,
 *   as PageIsVerified accepts).
 *
 *   The 32 columns are independent, so on a little-endian machine with
 *   256-bit vectors the sums live in four Vector256<uint> and a row is four
 *   loads, xors, multiplies and shifts (about 11x faster than the scalar
 *   loop, which made the checksum cost as much as the 8 KiB pread on a
 *   buffer miss; perf/Buffers/PageChecksumBenchmarks). The scalar loop stays
 *   for other machines and as the tests' reference.
 *
 *   Mirrors src/include/storage/checksum_impl.h and bufpage.c's PageIsVerified.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace PgIpc.Buffers;

/// <summary>The page checksum (pg_checksum_page).</summary>
public static class PageChecksum
{
    /// <summary>Offset of the 16-bit checksum in the page header (pd_checksum).</summary>
    public const int ChecksumOffset = 8;

    private const int NSums = 32;
    private const uint FnvPrime = 16777619;

    private static ReadOnlySpan<uint> BaseOffsets =>
    [
        0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
        0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
        0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
        0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
    ];

    /// <summary>The checksum of <paramref name="page"/> at <paramref name="blockNumber"/> (1..65535).</summary>
    public static ushort Compute(ReadOnlySpan<byte> page, uint blockNumber)
    {
        if (page.Length != BufferPool.BlockSize)
            throw new ArgumentException($"a page is {BufferPool.BlockSize} bytes, not {page.Length}", nameof(page));
        return Vector256.IsHardwareAccelerated && BitConverter.IsLittleEndian
            ? ComputeVector256(page, blockNumber)
            : ComputeScalar(page, blockNumber);
    }

    /// <summary>The 32 sums in four Vector256&lt;uint&gt;; little-endian only (the words are loaded as they lie).</summary>
    internal static ushort ComputeVector256(ReadOnlySpan<byte> page, uint blockNumber)
    {
        ref uint words = ref Unsafe.As<byte, uint>(ref MemoryMarshal.GetReference(page));
        ref uint bases = ref MemoryMarshal.GetReference(BaseOffsets);
        Vector256<uint> s0 = Vector256.LoadUnsafe(ref bases, 0);
        Vector256<uint> s1 = Vector256.LoadUnsafe(ref bases, 8);
        Vector256<uint> s2 = Vector256.LoadUnsafe(ref bases, 16);
        Vector256<uint> s3 = Vector256.LoadUnsafe(ref bases, 24);
        // Row 0: pd_checksum (the low half of word 2) counts as zero.
        Vector256<uint> checksumMask = Vector256.Create(~0u, ~0u, 0xFFFF0000u, ~0u, ~0u, ~0u, ~0u, ~0u);
        s0 = Comp(s0, Vector256.LoadUnsafe(ref words, 0) & checksumMask);
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

    /// <summary>The column-by-column loop of checksum_impl.h, word by word.</summary>
    internal static ushort ComputeScalar(ReadOnlySpan<byte> page, uint blockNumber)
    {
        if (page.Length != BufferPool.BlockSize)
            throw new ArgumentException($"a page is {BufferPool.BlockSize} bytes, not {page.Length}", nameof(page));
        Span<uint> sums = stackalloc uint[NSums];
        BaseOffsets.CopyTo(sums);
        ReadOnlySpan<uint> words = MemoryMarshal.Cast<byte, uint>(page);
        const int checksumWord = ChecksumOffset / 4;
        for (int row = 0; row < BufferPool.BlockSize / (4 * NSums); row++)
        {
            int rowStart = row * NSums;
            for (int j = 0; j < NSums; j++)
            {
                uint w = words[rowStart + j];
                if (!BitConverter.IsLittleEndian)
                    w = BinaryPrimitives.ReverseEndianness(w);
                if (rowStart + j == checksumWord)
                    w &= 0xFFFF0000; // pd_checksum (low half of word 2) counts as zero
                sums[j] = Comp(sums[j], w);
            }
        }
        for (int round = 0; round < 2; round++)
            for (int j = 0; j < NSums; j++)
                sums[j] = Comp(sums[j], 0);
        uint result = 0;
        for (int j = 0; j < NSums; j++)
            result ^= sums[j];
        result ^= blockNumber;
        return (ushort)(result % 65535 + 1);
    }

    private static uint Comp(uint checksum, uint value)
    {
        uint tmp = checksum ^ value;
        return tmp * FnvPrime ^ (tmp >> 17);
    }

    /// <summary>The checksum stored in the page header.</summary>
    public static ushort Stored(ReadOnlySpan<byte> page) => BinaryPrimitives.ReadUInt16LittleEndian(page[ChecksumOffset..]);

    /// <summary>Computes and stores the checksum (PageSetChecksumInplace).</summary>
    public static void Set(Span<byte> page, uint blockNumber)
        => BinaryPrimitives.WriteUInt16LittleEndian(page[ChecksumOffset..], Compute(page, blockNumber));

    /// <summary>True when the page is all zeros or its stored checksum matches (PageIsVerified).</summary>
    public static bool Verify(ReadOnlySpan<byte> page, uint blockNumber, out ushort stored, out ushort computed)
    {
        stored = Stored(page);
        if (!page.ContainsAnyExcept((byte)0))
        {
            computed = 0;
            return true;
        }
        computed = Compute(page, blockNumber);
        return stored == computed;
    }
}
