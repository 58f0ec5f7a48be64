/*-------------------------------------------------------------------------
 * WalFormat.cs
 *   The write-ahead log's on-disk format: page headers, the record header,
 *   block references, segment geometry (LSN <-> usable byte position),
 *   segment file names and the record CRC.
 *
 * NOTES
 *   An LSN (XLogRecPtr) is a byte address in the endless log; segment
 *   files of SegmentSize bytes (a power of two, 16 MiB by default) hold
 *   it in 8 KiB pages. Every page starts with a header; the first page of
 *   a segment has the long one, which also records the system id, the
 *   segment size and the page size, so a file from another cluster or
 *   made with other settings is refused. Page header layout (bytes):
 *
 *      0  Magic       ushort  WalFormat.PageMagic
 *      2  Info        ushort  XLP_FIRST_IS_CONTRECORD 0x1, XLP_LONG_HEADER 0x2
 *      4  Timeline    uint
 *      8  PageAddress ulong   the LSN of the page's first byte
 *     16  RemLength   uint    bytes of a record continued from the previous page
 *     20  (pad to 24)
 *    long header only:
 *     24  SystemId    ulong
 *     32  SegSize     uint
 *     36  PageSize    uint    (40 bytes in all)
 *
 *   A record is 8-byte aligned and may span pages and segments. Its
 *   header (XLogRecord, 24 bytes):
 *
 *      0  TotalLength uint    header + block headers + data, unaligned
 *      4  (xid slot)  uint    zero: PgIpc has no transactions
 *      8  Prev        ulong   start of the previous record
 *     16  Info        byte    the resource manager's bits (high nibble) and ours
 *     17  RmId        byte    resource manager id
 *     18  (pad)
 *     20  Crc         uint    CRC-32C of bytes 24..TotalLength, then of bytes 0..20
 *
 *   After the header, as xloginsert.c's XLogRecordAssemble lays them out:
 *   one block header per registered buffer (XLogRecordBlockHeader: id,
 *   fork and flags, data length; then an image header when a full-page
 *   image is included: its length, the hole's offset and flags; then the
 *   relation unless it is the previous block's (BKPBLOCK_SAME_REL), then
 *   the block number); then the main data header (255 and a one-byte
 *   length, or 254 and a four-byte one); then each block's image (the page
 *   without its hole) and data, in block order; then the main data.
 *
 *   Usable byte positions (xlog.c's "bytepos") count only the bytes after
 *   page headers, so the insert position can be advanced with one add
 *   under a spinlock; XLogBytePosToRecPtr converts back.
 *
 *   Mirrors src/include/access/xlog_internal.h (page headers, XLogFileName),
 *   xlogrecord.h (XLogRecord, block headers) and the position helpers of
 *   src/backend/access/transam/xlog.c. The magic is PgIpc's own.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace PgIpc.Wal;

/// <summary>Constants of the WAL's on-disk format.</summary>
public static class WalFormat
{
    /// <summary>Bytes of a WAL page (XLOG_BLCKSZ).</summary>
    public const int PageSize = 8192;
    /// <summary>The page header's magic (XLOG_PAGE_MAGIC; PgIpc's own value).</summary>
    public const ushort PageMagic = 0xD1A5;
    /// <summary>The page's first bytes continue a record from the previous page.</summary>
    public const ushort FirstIsContRecord = 0x0001;
    /// <summary>The page has the long header (a segment's first page).</summary>
    public const ushort LongHeader = 0x0002;
    /// <summary>Bytes of a short page header (SizeOfXLogShortPHD, MAXALIGNed).</summary>
    public const int ShortPageHeaderSize = 24;
    /// <summary>Bytes of a long page header (SizeOfXLogLongPHD, MAXALIGNed).</summary>
    public const int LongPageHeaderSize = 40;
    /// <summary>Bytes of a record header (SizeOfXLogRecord).</summary>
    public const int RecordHeaderSize = 24;
    /// <summary>Offset of the CRC in the record header.</summary>
    public const int RecordCrcOffset = 20;
    /// <summary>Default segment size (wal_segment_size).</summary>
    public const int DefaultSegmentSize = 16 * 1024 * 1024;
    /// <summary>Smallest segment size (PostgreSQL's is 1 MiB; smaller ones are allowed here for tests).</summary>
    public const int MinSegmentSize = 64 * 1024;
    /// <summary>Largest segment size (1 GiB).</summary>
    public const int MaxSegmentSize = 1024 * 1024 * 1024;
    /// <summary>Largest record PgIpc writes or accepts (XLogRecordMaxSize is about 1 GiB; 64 MiB is enough here).</summary>
    public const int MaxRecordSize = 64 * 1024 * 1024;
    /// <summary>Highest block id of a record (XLR_MAX_BLOCK_ID).</summary>
    public const int MaxBlockId = 32;
    /// <summary>Block id of a short main data header (XLR_BLOCK_ID_DATA_SHORT).</summary>
    public const byte BlockIdDataShort = 255;
    /// <summary>Block id of a long main data header (XLR_BLOCK_ID_DATA_LONG).</summary>
    public const byte BlockIdDataLong = 254;
    /// <summary>The invalid LSN (InvalidXLogRecPtr).</summary>
    public const ulong InvalidLsn = 0;

    // Block header fork_flags (BKPBLOCK_*).
    internal const byte BkpForkMask = 0x0F;
    internal const byte BkpHasImage = 0x10;
    internal const byte BkpHasData = 0x20;
    internal const byte BkpWillInit = 0x40;
    internal const byte BkpSameRel = 0x80;

    // Image header bimg_info (BKPIMAGE_*).
    internal const byte BkpImageHasHole = 0x01;
    internal const byte BkpImageApply = 0x02;

    /// <summary>Rounds up to 8 bytes (MAXALIGN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MaxAlign(ulong n) => (n + 7) & ~7UL;

    /// <summary>An LSN as PostgreSQL prints it ("%X/%08X").</summary>
    public static string FormatLsn(ulong lsn) => $"{lsn >> 32:X}/{(uint)lsn:X8}";

    /// <summary>Parses "X/X" into an LSN; false when malformed.</summary>
    public static bool TryParseLsn(string text, out ulong lsn)
    {
        lsn = 0;
        int slash = text.IndexOf('/', StringComparison.Ordinal);
        if (slash <= 0 || !uint.TryParse(text.AsSpan(0, slash), System.Globalization.NumberStyles.HexNumber, null, out uint hi)
            || !uint.TryParse(text.AsSpan(slash + 1), System.Globalization.NumberStyles.HexNumber, null, out uint lo))
            return false;
        lsn = ((ulong)hi << 32) | lo;
        return true;
    }

    /// <summary>CRC-32C (Castagnoli) of <paramref name="data"/> continued from <paramref name="crc"/> (start with ~0, finish with ~).</summary>
    public static uint Crc32C(uint crc, ReadOnlySpan<byte> data)
    {
        // BitOperations.Crc32C uses the SSE4.2 / ARMv8 instruction when present.
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        if (data.Length >= 4)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt32LittleEndian(data));
            data = data[4..];
        }
        foreach (byte b in data)
            crc = BitOperations.Crc32C(crc, b);
        return crc;
    }

    /// <summary>The record CRC over <paramref name="record"/> (its full TotalLength bytes): payload first, then the header up to the CRC.</summary>
    public static uint RecordCrc(ReadOnlySpan<byte> record)
    {
        uint crc = Crc32C(~0u, record[RecordHeaderSize..]);
        crc = Crc32C(crc, record[..RecordCrcOffset]);
        return ~crc;
    }
}

/// <summary>
/// The segment geometry of one WAL: segment size, and the conversions between LSNs, usable byte positions, segment
/// numbers and file names (xlog_internal.h's macros and xlog.c's XLogBytePosToRecPtr family).
/// </summary>
public readonly struct WalGeometry
{
    /// <summary>A geometry with segments of <paramref name="segmentSize"/> bytes (a power of two).</summary>
    public WalGeometry(int segmentSize)
    {
        if (!BitOperations.IsPow2(segmentSize) || segmentSize < WalFormat.MinSegmentSize || segmentSize > WalFormat.MaxSegmentSize)
            throw new ArgumentOutOfRangeException(nameof(segmentSize), segmentSize,
                $"a WAL segment size must be a power of two between {WalFormat.MinSegmentSize} and {WalFormat.MaxSegmentSize}");
        SegmentSize = segmentSize;
        UsableBytesInSegment = (ulong)(segmentSize / WalFormat.PageSize) * UsableBytesInPage
            - (WalFormat.LongPageHeaderSize - WalFormat.ShortPageHeaderSize);
    }

    /// <summary>Bytes of a page after its short header.</summary>
    public const ulong UsableBytesInPage = WalFormat.PageSize - WalFormat.ShortPageHeaderSize;

    /// <summary>Bytes of a segment file (wal_segment_size).</summary>
    public int SegmentSize { get; }

    /// <summary>Bytes of a segment after every page header.</summary>
    public ulong UsableBytesInSegment { get; }

    /// <summary>Segments per "xlogid" (the middle part of a file name).</summary>
    public ulong SegmentsPerXLogId => 0x1_0000_0000UL / (ulong)SegmentSize;

    /// <summary>The segment holding byte <paramref name="lsn"/> (XLByteToSeg).</summary>
    public ulong SegmentOf(ulong lsn) => lsn / (ulong)SegmentSize;

    /// <summary>The segment holding the byte just before <paramref name="lsn"/> (XLByteToPrevSeg).</summary>
    public ulong PrevSegmentOf(ulong lsn) => (lsn - 1) / (ulong)SegmentSize;

    /// <summary>Offset of <paramref name="lsn"/> in its segment (XLogSegmentOffset).</summary>
    public int SegmentOffset(ulong lsn) => (int)(lsn & (ulong)(SegmentSize - 1));

    /// <summary>The LSN of the first byte of segment <paramref name="segno"/>.</summary>
    public ulong SegmentStart(ulong segno) => segno * (ulong)SegmentSize;

    /// <summary>The file name of segment <paramref name="segno"/> on <paramref name="timeline"/> (XLogFileName: 24 hex digits).</summary>
    public string FileName(uint timeline, ulong segno)
        => $"{timeline:X8}{(uint)(segno / SegmentsPerXLogId):X8}{(uint)(segno % SegmentsPerXLogId):X8}";

    /// <summary>Parses a segment file name (IsXLogFileName + XLogFromFileName); false when it is not one.</summary>
    public bool TryParseFileName(string name, out uint timeline, out ulong segno)
    {
        timeline = 0;
        segno = 0;
        if (name.Length != 24)
            return false;
        foreach (char ch in name)
            if (!char.IsAsciiHexDigitUpper(ch) && !char.IsAsciiDigit(ch))
                return false;
        timeline = uint.Parse(name.AsSpan(0, 8), System.Globalization.NumberStyles.HexNumber, null);
        uint log = uint.Parse(name.AsSpan(8, 8), System.Globalization.NumberStyles.HexNumber, null);
        uint seg = uint.Parse(name.AsSpan(16, 8), System.Globalization.NumberStyles.HexNumber, null);
        if (seg >= SegmentsPerXLogId)
            return false;
        segno = log * SegmentsPerXLogId + seg;
        return true;
    }

    /// <summary>The size of the page header at <paramref name="pageStart"/> (long on a segment's first page).</summary>
    public int PageHeaderSize(ulong pageStart) => SegmentOffset(pageStart) == 0 ? WalFormat.LongPageHeaderSize : WalFormat.ShortPageHeaderSize;

    /// <summary>The LSN of usable byte position <paramref name="bytePos"/> (XLogBytePosToRecPtr): a position at a page start means after its header.</summary>
    public ulong BytePosToRecPtr(ulong bytePos)
    {
        (ulong fullsegs, ulong bytesleft) = Math.DivRem(bytePos, UsableBytesInSegment); // one division (the insert path)
        ulong segOffset;
        const ulong firstPageUsable = WalFormat.PageSize - WalFormat.LongPageHeaderSize;
        if (bytesleft < firstPageUsable)
            segOffset = bytesleft + WalFormat.LongPageHeaderSize;
        else
        {
            bytesleft -= firstPageUsable;
            ulong fullpages = bytesleft / UsableBytesInPage;
            bytesleft %= UsableBytesInPage;
            segOffset = fullpages * WalFormat.PageSize + WalFormat.PageSize + bytesleft + WalFormat.ShortPageHeaderSize;
        }
        return fullsegs * (ulong)SegmentSize + segOffset;
    }

    /// <summary>As <see cref="BytePosToRecPtr"/>, but a position at a page boundary is the boundary (XLogBytePosToEndRecPtr): the end of a record.</summary>
    public ulong BytePosToEndRecPtr(ulong bytePos)
    {
        (ulong fullsegs, ulong bytesleft) = Math.DivRem(bytePos, UsableBytesInSegment); // one division (the insert path)
        ulong segOffset;
        const ulong firstPageUsable = WalFormat.PageSize - WalFormat.LongPageHeaderSize;
        if (bytesleft < firstPageUsable)
            segOffset = bytesleft == 0 ? 0 : bytesleft + WalFormat.LongPageHeaderSize;
        else
        {
            bytesleft -= firstPageUsable;
            ulong fullpages = bytesleft / UsableBytesInPage;
            bytesleft %= UsableBytesInPage;
            segOffset = fullpages * WalFormat.PageSize + WalFormat.PageSize + (bytesleft == 0 ? 0 : bytesleft + WalFormat.ShortPageHeaderSize);
        }
        return fullsegs * (ulong)SegmentSize + segOffset;
    }

    /// <summary>The usable byte position of <paramref name="ptr"/> (XLogRecPtrToBytePos); a page-header byte maps to the page's first usable byte.</summary>
    public ulong RecPtrToBytePos(ulong ptr)
    {
        ulong fullsegs = SegmentOf(ptr);
        ulong fullpages = (ulong)SegmentOffset(ptr) / WalFormat.PageSize;
        ulong offset = ptr % WalFormat.PageSize;
        ulong result;
        if (fullpages == 0)
        {
            result = fullsegs * UsableBytesInSegment;
            if (offset > 0)
                result += offset - Math.Min(offset, WalFormat.LongPageHeaderSize);
        }
        else
        {
            result = fullsegs * UsableBytesInSegment + (WalFormat.PageSize - WalFormat.LongPageHeaderSize) + (fullpages - 1) * UsableBytesInPage;
            if (offset > 0)
                result += offset - Math.Min(offset, WalFormat.ShortPageHeaderSize);
        }
        return result;
    }

    /// <summary>The first record position of a fresh WAL: just after the long header of segment 1 (as initdb starts).</summary>
    public ulong FirstRecordLsn => SegmentStart(1) + WalFormat.LongPageHeaderSize;
}
