/*-------------------------------------------------------------------------
 * WalReader.cs
 *   Reads WAL records back from the segment files of a pg_wal directory,
 *   one after another, checking every page header and every record, and
 *   stops cleanly at the end of valid WAL.
 *
 * NOTES
 *   The end of the WAL is not marked: after a crash the last page may be
 *   torn, half written, zero-filled (a pre-allocated segment) or hold an
 *   older record (a recycled one). So, as xlogreader.c, every way a record
 *   can be wrong means "end of WAL", returned, never thrown:
 *     - a page header with a bad magic (a zeroed page), a page address
 *       that is not the page's own (a recycled segment), unknown flags, a
 *       timeline or (long header) system id, segment or page size that
 *       differs from this WAL's;
 *     - a record length below the header size or above the maximum;
 *     - a continuation page without XLP_FIRST_IS_CONTRECORD or with a
 *       remaining length that does not match;
 *     - an xl_prev that is not the previous record's start (stale bytes
 *       after the real end);
 *     - a CRC mismatch (a torn write), or block headers that do not add
 *       up to the record's length;
 *     - a missing or short segment file.
 *   EndReason says which. Only an I/O error other than "not there" is
 *   thrown.
 *
 *   Mirrors XLogReadRecord, XLogReaderValidatePageHeader,
 *   ValidXLogRecordHeader, ValidXLogRecord and XLogFindNextRecord in
 *   src/backend/access/transam/xlogreader.c.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace PgIpc.Wal;

/// <summary>Reads records sequentially from a WAL directory; the end of valid WAL is a result, not an error.</summary>
public sealed class WalReader : IDisposable
{
    private readonly string _directory;
    private readonly WalGeometry _geo;
    private readonly byte[] _page = new byte[WalFormat.PageSize];
    private readonly DecodedRecord _record = new();
    private ulong _pageLsn = ulong.MaxValue;
    private SafeFileHandle? _file;
    private ulong _fileSegno = ulong.MaxValue;
    private ulong _next;
    private ulong _prev;

    /// <summary>A reader of the segments in <paramref name="walDirectory"/> on <paramref name="timeline"/>.</summary>
    /// <param name="walDirectory">The pg_wal directory.</param>
    /// <param name="geometry">The WAL's segment size.</param>
    /// <param name="timeline">The timeline whose files are read (and that page headers must carry).</param>
    /// <param name="systemId">The system id long headers must carry; 0 to take the first one seen.</param>
    public WalReader(string walDirectory, WalGeometry geometry, uint timeline, ulong systemId = 0)
    {
        ArgumentException.ThrowIfNullOrEmpty(walDirectory);
        _directory = walDirectory;
        _geo = geometry;
        Timeline = timeline;
        SystemId = systemId;
    }

    /// <summary>The timeline read.</summary>
    public uint Timeline { get; }

    /// <summary>The system id of the WAL (learnt from the first long header when 0 was passed).</summary>
    public ulong SystemId { get; private set; }

    /// <summary>Why the last read found no record (the end of valid WAL), or null after a record.</summary>
    public string? EndReason { get; private set; }

    /// <summary>Where the next record would start (after the last one returned).</summary>
    public ulong NextLsn => _next;

    /// <summary>Start of the last record returned (0 before any).</summary>
    public ulong LastLsn => _prev;

    /// <summary>
    /// Positions the reader at the record starting at <paramref name="lsn"/>; <paramref name="expectedPrev"/> is that
    /// record's xl_prev when known (0: not checked for this first record).
    /// </summary>
    public void Seek(ulong lsn, ulong expectedPrev = 0)
    {
        _next = lsn;
        _prev = expectedPrev;
    }

    /// <summary>
    /// The first record that starts in segment <paramref name="segno"/> (skipping the tail of one continued from the
    /// previous segment), or null with <see cref="EndReason"/> when the segment has no valid first page.
    /// </summary>
    public ulong? FindFirstRecord(ulong segno)
    {
        ulong pos = _geo.SegmentStart(segno);
        while (true)
        {
            if (!ReadPage(pos))
                return null;
            int hdr = _geo.PageHeaderSize(pos);
            ushort info = BinaryPrimitives.ReadUInt16LittleEndian(_page.AsSpan(2));
            if ((info & WalFormat.FirstIsContRecord) == 0)
                return pos + (ulong)hdr;
            uint rem = BinaryPrimitives.ReadUInt32LittleEndian(_page.AsSpan(16));
            if (rem <= (ulong)(WalFormat.PageSize - hdr))
            {
                ulong at = WalFormat.MaxAlign(pos + (ulong)hdr + rem);
                return at % WalFormat.PageSize == 0 ? at + (ulong)_geo.PageHeaderSize(at) : at;
            }
            pos += WalFormat.PageSize;
            if (_geo.SegmentOffset(pos) == 0)
            {
                EndReason = $"segment {_geo.FileName(Timeline, segno)} holds no record start";
                return null;
            }
        }
    }

    /// <summary>
    /// Reads the next record (XLogReadRecord). True with the record (valid until the next call); false at the end of
    /// valid WAL, with <see cref="EndReason"/>.
    /// </summary>
    public bool ReadRecord(out DecodedRecord record)
    {
        record = _record;
        string? why = TryRead(_next);
        EndReason = why;
        if (why is not null)
            return false;
        _prev = _record.Lsn;
        _next = _record.EndLsn;
        return true;
    }

    private string? TryRead(ulong lsn)
    {
        if (lsn == 0)
            return "invalid record position 0/0";
        if (lsn % WalFormat.PageSize == 0)
            lsn += (ulong)_geo.PageHeaderSize(lsn);
        if (lsn % 8 != 0)
            return $"record position {WalFormat.FormatLsn(lsn)} is not 8-byte aligned";
        ulong pageStart = lsn - lsn % WalFormat.PageSize;
        if (!ReadPage(pageStart))
            return EndReason;
        int off = (int)(lsn - pageStart);
        if (off < _geo.PageHeaderSize(pageStart))
            return $"record position {WalFormat.FormatLsn(lsn)} is inside a page header";
        uint total = BinaryPrimitives.ReadUInt32LittleEndian(_page.AsSpan(off));
        if (total < WalFormat.RecordHeaderSize)
            return $"invalid record length at {WalFormat.FormatLsn(lsn)}: expected at least {WalFormat.RecordHeaderSize}, got {total}";
        if (total > WalFormat.MaxRecordSize)
            return $"record length {total} at {WalFormat.FormatLsn(lsn)} is too long";
        // When the header is on this page, check xl_prev before gathering the rest (stale data after the end).
        if (WalFormat.PageSize - off >= WalFormat.RecordHeaderSize && _prev != 0)
        {
            ulong prev = BinaryPrimitives.ReadUInt64LittleEndian(_page.AsSpan(off + 8));
            if (prev != _prev)
                return $"record at {WalFormat.FormatLsn(lsn)} has incorrect prev-link {WalFormat.FormatLsn(prev)} (expected {WalFormat.FormatLsn(_prev)})";
        }
        byte[] buf = _record.Buffer((int)total);
        int got = Math.Min(WalFormat.PageSize - off, (int)total);
        _page.AsSpan(off, got).CopyTo(buf);
        ulong ptr = lsn + (ulong)got;
        while (got < total)
        {
            if (!ReadPage(ptr))
                return $"missing continuation of the record at {WalFormat.FormatLsn(lsn)}: {EndReason}";
            ushort info = BinaryPrimitives.ReadUInt16LittleEndian(_page.AsSpan(2));
            uint rem = BinaryPrimitives.ReadUInt32LittleEndian(_page.AsSpan(16));
            if ((info & WalFormat.FirstIsContRecord) == 0)
                return $"there is no contrecord flag at {WalFormat.FormatLsn(ptr)}";
            if (rem != total - got)
                return $"invalid contrecord length {rem} (expected {total - got}) at {WalFormat.FormatLsn(ptr)}";
            int hdr = _geo.PageHeaderSize(ptr);
            int n = Math.Min(WalFormat.PageSize - hdr, (int)total - got);
            _page.AsSpan(hdr, n).CopyTo(buf.AsSpan(got));
            got += n;
            ptr += (ulong)(hdr + n);
        }
        ReadOnlySpan<byte> rec = buf.AsSpan(0, (int)total);
        ulong recPrev = BinaryPrimitives.ReadUInt64LittleEndian(rec[8..]);
        if (_prev != 0 && recPrev != _prev)
            return $"record at {WalFormat.FormatLsn(lsn)} has incorrect prev-link {WalFormat.FormatLsn(recPrev)} (expected {WalFormat.FormatLsn(_prev)})";
        if (recPrev >= lsn)
            return $"record at {WalFormat.FormatLsn(lsn)} has a prev-link {WalFormat.FormatLsn(recPrev)} not before it";
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(rec[WalFormat.RecordCrcOffset..]);
        if (WalFormat.RecordCrc(rec) != crc)
            return $"incorrect resource manager data checksum in record at {WalFormat.FormatLsn(lsn)}";
        return _record.Decode(lsn, WalFormat.MaxAlign(ptr)) is { } bad ? $"record at {WalFormat.FormatLsn(lsn)}: {bad}" : null;
    }

    /// <summary>Reads and checks the page at <paramref name="pageStart"/> into the page buffer; false with EndReason when it is not a valid page.</summary>
    private bool ReadPage(ulong pageStart)
    {
        if (_pageLsn == pageStart)
            return true;
        _pageLsn = ulong.MaxValue;
        ulong segno = _geo.SegmentOf(pageStart);
        if (segno != _fileSegno)
        {
            _file?.Dispose();
            _file = null;
            _fileSegno = ulong.MaxValue;
            string path = Path.Combine(_directory, _geo.FileName(Timeline, segno));
            try
            {
                _file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                EndReason = $"segment file {path} does not exist";
                return false;
            }
            _fileSegno = segno;
        }
        int n = 0;
        long at = _geo.SegmentOffset(pageStart);
        while (n < WalFormat.PageSize)
        {
            int r = RandomAccess.Read(_file!, _page.AsSpan(n), at + n);
            if (r == 0)
                break;
            n += r;
        }
        if (n < WalFormat.PageSize)
        {
            EndReason = $"could not read the page at {WalFormat.FormatLsn(pageStart)}: the segment file is short ({at + n} bytes)";
            return false;
        }
        if (ValidatePageHeader(pageStart) is { } why)
        {
            EndReason = why;
            return false;
        }
        _pageLsn = pageStart;
        return true;
    }

    private string? ValidatePageHeader(ulong pageStart)
    {
        ReadOnlySpan<byte> p = _page;
        ushort magic = BinaryPrimitives.ReadUInt16LittleEndian(p);
        if (magic != WalFormat.PageMagic)
            return $"invalid magic number {magic:X4} in the page at {WalFormat.FormatLsn(pageStart)}";
        ushort info = BinaryPrimitives.ReadUInt16LittleEndian(p[2..]);
        if ((info & ~(WalFormat.FirstIsContRecord | WalFormat.LongHeader)) != 0)
            return $"invalid info bits {info:X4} in the page at {WalFormat.FormatLsn(pageStart)}";
        bool first = _geo.SegmentOffset(pageStart) == 0;
        if (first != ((info & WalFormat.LongHeader) != 0))
            return $"the page at {WalFormat.FormatLsn(pageStart)} {(first ? "lacks" : "has")} a long header";
        ulong addr = BinaryPrimitives.ReadUInt64LittleEndian(p[8..]);
        if (addr != pageStart)
            return $"unexpected page address {WalFormat.FormatLsn(addr)} in the page at {WalFormat.FormatLsn(pageStart)}";
        uint tli = BinaryPrimitives.ReadUInt32LittleEndian(p[4..]);
        if (tli != Timeline)
            return $"unexpected timeline {tli} in the page at {WalFormat.FormatLsn(pageStart)} (expected {Timeline})";
        if (first)
        {
            ulong sysid = BinaryPrimitives.ReadUInt64LittleEndian(p[24..]);
            uint segSize = BinaryPrimitives.ReadUInt32LittleEndian(p[32..]);
            uint pageSize = BinaryPrimitives.ReadUInt32LittleEndian(p[36..]);
            if (SystemId != 0 && sysid != SystemId)
                return $"WAL file is from a different system: system id {sysid}, expected {SystemId}";
            if (segSize != _geo.SegmentSize || pageSize != WalFormat.PageSize)
                return $"WAL file has segment size {segSize} and page size {pageSize}; expected {_geo.SegmentSize} and {WalFormat.PageSize}";
            SystemId = sysid;
        }
        return null;
    }

    /// <summary>Closes the open segment file.</summary>
    public void Dispose()
    {
        _file?.Dispose();
        _file = null;
        _fileSegno = ulong.MaxValue;
        _pageLsn = ulong.MaxValue;
    }
}
