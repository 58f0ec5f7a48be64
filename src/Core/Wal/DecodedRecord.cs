/*-------------------------------------------------------------------------
 * DecodedRecord.cs
 *   A WAL record as the reader hands it out: its header fields, its block
 *   references (tag, flags, image, data) and its main data, decoded from
 *   the record's bytes, and the full-page image restore.
 *
 * NOTES
 *   DecodeXLogRecord checks every length against the record's own length
 *   before it trusts it (the bytes come from disk: a record with a good CRC
 *   but inconsistent block headers is refused, not followed). The record
 *   is kept in one reusable array; blocks point into it by offset.
 *
 *   Mirrors DecodeXLogRecord and RestoreBlockImage in
 *   src/backend/access/transam/xlogreader.c.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using PgIpc.Buffers;

namespace PgIpc.Wal;

/// <summary>One block reference of a decoded record (DecodedBkpBlock).</summary>
public sealed class DecodedBlock
{
    internal bool InUse;
    internal int ImageOffset, ImageLength, DataOffset;

    /// <summary>The page the block refers to.</summary>
    public BufferTag Tag { get; internal set; }

    /// <summary>The record carries a full-page image of the block.</summary>
    public bool HasImage { get; internal set; }

    /// <summary>The image is to be restored at redo (BKPIMAGE_APPLY).</summary>
    public bool ApplyImage { get; internal set; }

    /// <summary>Redo initialises the page from scratch (BKPBLOCK_WILL_INIT).</summary>
    public bool WillInit { get; internal set; }

    /// <summary>Start of the hole left out of the image (pd_lower).</summary>
    public int HoleOffset { get; internal set; }

    /// <summary>Bytes of the hole (pd_upper - pd_lower); 0 without one.</summary>
    public int HoleLength { get; internal set; }

    /// <summary>Bytes of the block's own data.</summary>
    public int DataLength { get; internal set; }
}

/// <summary>A record read back from the WAL (XLogReaderState's decoded record). Reused by its reader for the next record.</summary>
public sealed class DecodedRecord
{
    private byte[] _bytes = new byte[1024];
    private readonly DecodedBlock[] _blocks = new DecodedBlock[WalFormat.MaxBlockId + 1];
    private int _mainOffset, _mainLength;

    internal DecodedRecord()
    {
        for (int i = 0; i < _blocks.Length; i++)
            _blocks[i] = new DecodedBlock();
    }

    /// <summary>Where the record starts (ReadRecPtr).</summary>
    public ulong Lsn { get; internal set; }

    /// <summary>Where the next record may start: this one's end (EndRecPtr; 8-byte aligned, or a page boundary).</summary>
    public ulong EndLsn { get; internal set; }

    /// <summary>The previous record's start (xl_prev).</summary>
    public ulong Prev { get; private set; }

    /// <summary>The record's length, header included (xl_tot_len).</summary>
    public int TotalLength { get; private set; }

    /// <summary>The resource manager id (xl_rmid).</summary>
    public byte RmId { get; private set; }

    /// <summary>The info bits (xl_info).</summary>
    public byte Info { get; private set; }

    /// <summary>Highest block id in use, or -1 (max_block_id).</summary>
    public int MaxBlockId { get; private set; } = -1;

    /// <summary>The record's main data.</summary>
    public ReadOnlySpan<byte> MainData => _bytes.AsSpan(_mainOffset, _mainLength);

    /// <summary>The record's raw bytes (TotalLength of them).</summary>
    public ReadOnlySpan<byte> RawBytes => _bytes.AsSpan(0, TotalLength);

    /// <summary>Block reference <paramref name="blockId"/>, or null when the record has none with that id.</summary>
    public DecodedBlock? Block(int blockId)
        => (uint)blockId <= (uint)MaxBlockId && _blocks[blockId].InUse ? _blocks[blockId] : null;

    /// <summary>The data registered with block <paramref name="blockId"/> (XLogRecGetBlockData); empty when none.</summary>
    public ReadOnlySpan<byte> BlockData(int blockId)
        => Block(blockId) is { } b ? _bytes.AsSpan(b.DataOffset, b.DataLength) : default;

    /// <summary>Copies the full-page image of block <paramref name="blockId"/> into <paramref name="page"/>, the hole zeroed (RestoreBlockImage). False when there is none.</summary>
    public bool RestoreBlockImage(int blockId, Span<byte> page)
    {
        if (Block(blockId) is not { HasImage: true } b)
            return false;
        if (page.Length != BufferPool.BlockSize)
            throw new ArgumentException($"a page is {BufferPool.BlockSize} bytes, not {page.Length}", nameof(page));
        ReadOnlySpan<byte> img = _bytes.AsSpan(b.ImageOffset, b.ImageLength);
        img[..b.HoleOffset].CopyTo(page);
        page.Slice(b.HoleOffset, b.HoleLength).Clear();
        img[b.HoleOffset..].CopyTo(page[(b.HoleOffset + b.HoleLength)..]);
        return true;
    }

    /// <summary>A buffer of at least <paramref name="length"/> bytes to read the record into.</summary>
    internal byte[] Buffer(int length)
    {
        if (_bytes.Length < length)
            _bytes = new byte[Math.Max(length, _bytes.Length * 2)];
        return _bytes;
    }

    /// <summary>Decodes the header and block references of the record now in the buffer; the reason when it is malformed.</summary>
    internal string? Decode(ulong lsn, ulong endLsn)
    {
        ReadOnlySpan<byte> r = _bytes;
        Lsn = lsn;
        EndLsn = endLsn;
        TotalLength = (int)BinaryPrimitives.ReadUInt32LittleEndian(r);
        Prev = BinaryPrimitives.ReadUInt64LittleEndian(r[8..]);
        Info = r[16];
        RmId = r[17];
        r = r[..TotalLength];
        for (int i = 0; i <= MaxBlockId; i++)
            _blocks[i].InUse = false;
        MaxBlockId = -1;
        _mainOffset = 0;
        _mainLength = 0;

        int pos = WalFormat.RecordHeaderSize;
        int remaining = TotalLength - pos;
        int datatotal = 0;
        uint rel = 0;
        bool haveRel = false;
        while (remaining > datatotal)
        {
            byte id = r[pos];
            if (id == WalFormat.BlockIdDataShort)
            {
                if (remaining < 2)
                    return "short main data header";
                _mainLength = r[pos + 1];
                pos += 2;
                datatotal += _mainLength;
                break; // by convention the main data header is last
            }
            if (id == WalFormat.BlockIdDataLong)
            {
                if (remaining < 5)
                    return "short main data header";
                uint len = BinaryPrimitives.ReadUInt32LittleEndian(r[(pos + 1)..]);
                if (len > (uint)TotalLength)
                    return $"main data length {len} is larger than the record";
                _mainLength = (int)len;
                pos += 5;
                datatotal += _mainLength;
                break;
            }
            if (id > WalFormat.MaxBlockId)
                return $"invalid block id {id}";
            if (id <= MaxBlockId)
                return $"out-of-order block id {id}";
            if (TotalLength - pos < 4)
                return "short block header";
            DecodedBlock b = _blocks[id];
            MaxBlockId = id;
            b.InUse = true;
            byte forkFlags = r[pos + 1];
            int dataLength = BinaryPrimitives.ReadUInt16LittleEndian(r[(pos + 2)..]);
            pos += 4;
            b.HasImage = (forkFlags & WalFormat.BkpHasImage) != 0;
            b.WillInit = (forkFlags & WalFormat.BkpWillInit) != 0;
            bool hasData = (forkFlags & WalFormat.BkpHasData) != 0;
            if (hasData != (dataLength > 0))
                return $"block {id}: BKPBLOCK_HAS_DATA and a data length of {dataLength} disagree";
            b.DataLength = dataLength;
            datatotal += dataLength;
            b.ApplyImage = false;
            b.HoleOffset = 0;
            b.HoleLength = 0;
            b.ImageLength = 0;
            if (b.HasImage)
            {
                if (TotalLength - pos < 5)
                    return "short image header";
                int imgLen = BinaryPrimitives.ReadUInt16LittleEndian(r[pos..]);
                int holeOffset = BinaryPrimitives.ReadUInt16LittleEndian(r[(pos + 2)..]);
                byte bimg = r[pos + 4];
                pos += 5;
                int holeLength = (bimg & WalFormat.BkpImageHasHole) != 0 ? BufferPool.BlockSize - imgLen : 0;
                if ((bimg & WalFormat.BkpImageHasHole) != 0 ? (holeOffset == 0 || holeLength == 0 || imgLen == BufferPool.BlockSize)
                    : (holeOffset != 0 || imgLen != BufferPool.BlockSize))
                    return $"block {id}: inconsistent image (length {imgLen}, hole at {holeOffset})";
                if (holeOffset + holeLength > BufferPool.BlockSize)
                    return $"block {id}: hole past the page end";
                b.ImageLength = imgLen;
                b.HoleOffset = holeOffset;
                b.HoleLength = holeLength;
                b.ApplyImage = (bimg & WalFormat.BkpImageApply) != 0;
                datatotal += imgLen;
            }
            if ((forkFlags & WalFormat.BkpSameRel) == 0)
            {
                if (TotalLength - pos < 4)
                    return "short relation";
                rel = BinaryPrimitives.ReadUInt32LittleEndian(r[pos..]);
                pos += 4;
                haveRel = true;
            }
            else if (!haveRel)
                return $"block {id}: BKPBLOCK_SAME_REL without a previous relation";
            if (TotalLength - pos < 4)
                return "short block number";
            uint blk = BinaryPrimitives.ReadUInt32LittleEndian(r[pos..]);
            pos += 4;
            int fork = forkFlags & WalFormat.BkpForkMask;
            if (fork > (int)BufferTag.MaxFork)
                return $"block {id}: invalid fork {fork}";
            b.Tag = new BufferTag(rel, (ForkNumber)fork, blk);
            remaining = TotalLength - pos;
        }
        if (TotalLength - pos != datatotal)
            return $"record length {TotalLength} does not match its headers ({pos} + {datatotal} bytes)";
        // Payloads, in block order, then the main data.
        for (int i = 0; i <= MaxBlockId; i++)
        {
            DecodedBlock b = _blocks[i];
            if (!b.InUse)
                continue;
            if (b.HasImage)
            {
                b.ImageOffset = pos;
                pos += b.ImageLength;
            }
            b.DataOffset = pos;
            pos += b.DataLength;
        }
        _mainOffset = pos;
        return null;
    }
}
