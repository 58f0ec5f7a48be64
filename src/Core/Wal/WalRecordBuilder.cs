/*-------------------------------------------------------------------------
 * WalRecordBuilder.cs
 *   Building a WAL record in xloginsert.c's style: begin, register the
 *   buffers it changes and its data, insert; full-page images decided at
 *   assembly against the redo pointer.
 *
 * NOTES
 *   A builder belongs to one thread (XLogBeginInsert's state is per
 *   backend in PostgreSQL; here a process may run several participants,
 *   one per thread). Data is copied when registered, into buffers the
 *   builder keeps and reuses, so a record costs no managed allocation once
 *   they have grown to the sizes in use.
 *
 *   A registered buffer gets a full-page image when full_page_writes is
 *   on, the registration does not say NoImage (or WillInit), and its page
 *   LSN is at or before the redo pointer: the first change of the page
 *   since the checkpoint began, so that a torn write of the page can be
 *   repaired by replay. With Standard, the hole between pd_lower and
 *   pd_upper is left out. When the redo pointer moves between assembly and
 *   insertion (a checkpoint began), XLog.InsertRecord refuses the record
 *   and it is assembled again (XLogInsert's retry loop).
 *
 *   After the insertion, the page LSN (pd_lsn, bytes 0-7 of the page: the
 *   high and low 32-bit halves, as PostgreSQL's PageXLogRecPtr) of every
 *   registered buffer is set to the record's end, unless the registration
 *   says KeepLsn. The caller holds each buffer's content lock exclusive.
 *
 *   Mirrors XLogBeginInsert, XLogRegisterData, XLogRegisterBuffer,
 *   XLogRegisterBufData, XLogInsert, XLogRecordAssemble and
 *   XLogRecordExtractHole (the hole) of
 *   src/backend/access/transam/xloginsert.c.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Buffers;
using PgIpc.Proc;

namespace PgIpc.Wal;

/// <summary>How a buffer is registered in a record (REGBUF_*).</summary>
[Flags]
public enum RegBufFlags
{
    /// <summary>A page changed by the record: image if it is the first change since the redo pointer.</summary>
    None = 0,
    /// <summary>Always include a full-page image (REGBUF_FORCE_IMAGE).</summary>
    ForceImage = 1 << 0,
    /// <summary>Never include an image (REGBUF_NO_IMAGE): redo does not need the old page.</summary>
    NoImage = 1 << 1,
    /// <summary>Redo rebuilds the page from scratch (REGBUF_WILL_INIT; implies NoImage).</summary>
    WillInit = 1 << 2 | NoImage,
    /// <summary>The page has PostgreSQL's standard header: the hole between pd_lower and pd_upper is left out of an image (REGBUF_STANDARD).</summary>
    Standard = 1 << 3,
    /// <summary>Keep the block's data even when an image is included (REGBUF_KEEP_DATA).</summary>
    KeepData = 1 << 4,
    /// <summary>Do not set the page LSN after the insertion (the caller does it).</summary>
    KeepLsn = 1 << 5,
}

/// <summary>The calling thread's record under construction (xloginsert.c's state). Get it with <see cref="XLog.BeginInsert"/>.</summary>
public sealed unsafe class WalRecordBuilder
{
    [ThreadStatic] private static WalRecordBuilder? t_builder;

    private struct Registered
    {
        public bool InUse;
        public BufferTag Tag;
        public RegBufFlags Flags;
        public byte* Page;
        public int DataLength;
    }

    private readonly Registered[] _blocks = new Registered[WalFormat.MaxBlockId + 1];
    private readonly byte[][] _blockData = new byte[WalFormat.MaxBlockId + 1][];
    private byte[] _main = new byte[256];
    private int _mainLength;
    private int _maxBlockId = -1;
    private byte[] _record = new byte[1024];
    private XLog? _log;
    private bool _begun;

    private WalRecordBuilder() { }

    internal static WalRecordBuilder Begin(XLog log)
    {
        WalRecordBuilder b = t_builder ??= new WalRecordBuilder();
        b.Reset(); // a record begun and abandoned (an error between begin and insert) is dropped
        b._log = log;
        b._begun = true;
        return b;
    }

    /// <summary>The start of the last record this thread inserted (ProcLastRecPtr).</summary>
    public ulong LastRecordStart { get; private set; }

    /// <summary>Forgets everything registered (XLogResetInsertion).</summary>
    public void Reset()
    {
        for (int i = 0; i <= _maxBlockId; i++)
        {
            _blocks[i].InUse = false;
            _blocks[i].DataLength = 0;
        }
        _maxBlockId = -1;
        _mainLength = 0;
        _begun = false;
    }

    /// <summary>Appends <paramref name="data"/> to the record's main data (XLogRegisterData).</summary>
    public WalRecordBuilder RegisterData(ReadOnlySpan<byte> data)
    {
        CheckBegun();
        Append(ref _main, ref _mainLength, data);
        return this;
    }

    /// <summary>Appends a value's bytes to the main data.</summary>
    public WalRecordBuilder RegisterData<T>(in T value) where T : unmanaged
        => RegisterData(MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)));

    /// <summary>
    /// Registers a pinned shared buffer the record changes as block <paramref name="blockId"/> (XLogRegisterBuffer).
    /// The caller holds its content lock exclusive until after <see cref="Insert"/>.
    /// </summary>
    public WalRecordBuilder RegisterBuffer(int blockId, BufferPool pool, Participant me, int buffer, RegBufFlags flags = RegBufFlags.None)
    {
        ArgumentNullException.ThrowIfNull(pool);
        Span<byte> page = pool.GetPage(me, buffer);
        return RegisterBlock(blockId, pool.GetTag(me, buffer), (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(page)), flags);
    }

    /// <summary>Registers a page by tag and address (XLogRegisterBlock): the page must stay where it is until after the insert.</summary>
    internal WalRecordBuilder RegisterBlock(int blockId, BufferTag tag, byte* page, RegBufFlags flags)
    {
        CheckBegun();
        if ((uint)blockId > WalFormat.MaxBlockId)
            throw new ArgumentOutOfRangeException(nameof(blockId), blockId, $"block ids are 0..{WalFormat.MaxBlockId}");
        if (_blocks[blockId].InUse)
            throw new InvalidOperationException($"block {blockId} is already registered in this record");
        _blocks[blockId] = new Registered { InUse = true, Tag = tag, Flags = flags, Page = page };
        if (blockId > _maxBlockId)
            _maxBlockId = blockId;
        return this;
    }

    /// <summary>Appends data to registered block <paramref name="blockId"/> (XLogRegisterBufData): what redo applies to the page.</summary>
    public WalRecordBuilder RegisterBufData(int blockId, ReadOnlySpan<byte> data)
    {
        CheckBegun();
        if ((uint)blockId > WalFormat.MaxBlockId || !_blocks[blockId].InUse)
            throw new InvalidOperationException($"block {blockId} is not registered in this record");
        byte[] buf = _blockData[blockId] ??= new byte[256];
        int len = _blocks[blockId].DataLength;
        if (len + data.Length > ushort.MaxValue)
            throw new ArgumentException($"block {blockId} data would be {len + data.Length} bytes (at most {ushort.MaxValue})");
        Append(ref buf, ref len, data);
        _blockData[blockId] = buf;
        _blocks[blockId].DataLength = len;
        return this;
    }

    /// <summary>
    /// Inserts the record (XLogInsert) with resource manager <paramref name="rmId"/> and its <paramref name="info"/>
    /// bits; returns the end LSN (what to pass to <see cref="XLog.Flush"/>). Sets the registered pages' LSNs.
    /// </summary>
    public ulong Insert(Participant me, byte rmId, byte info)
    {
        ArgumentNullException.ThrowIfNull(me);
        CheckBegun();
        XLog log = _log!;
        try
        {
            while (true)
            {
                // Without registered blocks nothing depends on the redo pointer (no image to decide): not read.
                ulong redo = _maxBlockId >= 0 ? log.RedoLsn : 0;
                bool fpw = log.Options.FullPageWrites;
                int total = Assemble(rmId, info, redo, fpw, out ulong fpwLsn, out bool images);
                Span<byte> rec = _record.AsSpan(0, total);
                uint crc = WalFormat.Crc32C(~0u, rec[WalFormat.RecordHeaderSize..]);
                ulong end = log.InsertRecord(me, rec, crc, fpwLsn, redo, out ulong start, images);
                if (end == 0)
                    continue; // a checkpoint moved the redo pointer: images may now be needed
                LastRecordStart = start;
                for (int i = 0; i <= _maxBlockId; i++)
                    if (_blocks[i].InUse && (_blocks[i].Flags & RegBufFlags.KeepLsn) == 0)
                        SetPageLsn(_blocks[i].Page, end);
                return end;
            }
        }
        finally
        {
            Reset();
        }
    }

    /// <summary>The page LSN (pd_lsn: high half at 0, low half at 4).</summary>
    public static ulong GetPageLsn(ReadOnlySpan<byte> page)
        => ((ulong)BinaryPrimitives.ReadUInt32LittleEndian(page) << 32) | BinaryPrimitives.ReadUInt32LittleEndian(page[4..]);

    /// <summary>Sets the page LSN (PageSetLSN).</summary>
    public static void SetPageLsn(Span<byte> page, ulong lsn)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(page, (uint)(lsn >> 32));
        BinaryPrimitives.WriteUInt32LittleEndian(page[4..], (uint)lsn);
    }

    internal static void SetPageLsn(byte* page, ulong lsn) => SetPageLsn(new Span<byte>(page, 8), lsn);

    private static ulong GetPageLsn(byte* page) => GetPageLsn(new ReadOnlySpan<byte>(page, 8));

    /// <summary>XLogRecordAssemble: the record's bytes in _record; its length.</summary>
    [SkipLocalsInit] // the stackalloc'd per-block arrays are written for every block in use before they are read
    private int Assemble(byte rmId, byte info, ulong redo, bool doPageWrites, out ulong fpwLsn, out bool anyImage)
    {
        fpwLsn = 0;
        anyImage = false;
        // Upper bound of the size, so the buffer is grown once, before writing.
        long bound = WalFormat.RecordHeaderSize + 5 + _mainLength;
        for (int i = 0; i <= _maxBlockId; i++)
            if (_blocks[i].InUse)
                bound += 4 + 5 + 8 + BufferPool.BlockSize + _blocks[i].DataLength;
        if (bound > WalFormat.MaxRecordSize)
            throw new ArgumentException($"a WAL record of up to {bound} bytes is larger than {WalFormat.MaxRecordSize}");
        if (_record.Length < bound)
            _record = new byte[Math.Max(bound, _record.Length * 2)];
        Span<byte> r = _record;
        int pos = WalFormat.RecordHeaderSize;

        // Block headers; remember each block's image hole for the payload pass.
        Span<int> holeOffset = stackalloc int[WalFormat.MaxBlockId + 1];
        Span<int> holeLength = stackalloc int[WalFormat.MaxBlockId + 1];
        Span<bool> image = stackalloc bool[WalFormat.MaxBlockId + 1];
        Span<bool> withData = stackalloc bool[WalFormat.MaxBlockId + 1];
        bool haveRel = false;
        uint prevRel = 0;
        for (int i = 0; i <= _maxBlockId; i++)
        {
            ref Registered b = ref _blocks[i];
            if (!b.InUse)
                continue;
            ulong pageLsn = GetPageLsn(b.Page);
            bool needsBackup = (b.Flags & RegBufFlags.ForceImage) != 0
                || (doPageWrites && (b.Flags & RegBufFlags.NoImage) == 0 && pageLsn <= redo);
            if (!needsBackup && (b.Flags & RegBufFlags.NoImage) == 0 && (fpwLsn == 0 || pageLsn < fpwLsn))
                fpwLsn = pageLsn;
            bool includeData = b.DataLength > 0 && (!needsBackup || (b.Flags & RegBufFlags.KeepData) != 0);
            image[i] = needsBackup;
            withData[i] = includeData;
            byte forkFlags = (byte)((int)b.Tag.Fork & WalFormat.BkpForkMask);
            if (needsBackup)
                forkFlags |= WalFormat.BkpHasImage;
            if (includeData)
                forkFlags |= WalFormat.BkpHasData;
            if ((b.Flags & RegBufFlags.WillInit) == RegBufFlags.WillInit)
                forkFlags |= WalFormat.BkpWillInit;
            bool sameRel = haveRel && prevRel == b.Tag.RelNumber;
            if (sameRel)
                forkFlags |= WalFormat.BkpSameRel;
            r[pos] = (byte)i;
            r[pos + 1] = forkFlags;
            BinaryPrimitives.WriteUInt16LittleEndian(r[(pos + 2)..], (ushort)(includeData ? b.DataLength : 0));
            pos += 4;
            if (needsBackup)
            {
                anyImage = true;
                int lower = 0, upper = 0;
                if ((b.Flags & RegBufFlags.Standard) != 0)
                {
                    lower = *(ushort*)(b.Page + 12);
                    upper = *(ushort*)(b.Page + 14);
                }
                bool hole = lower >= 24 && lower < upper && upper <= BufferPool.BlockSize;
                holeOffset[i] = hole ? lower : 0;
                holeLength[i] = hole ? upper - lower : 0;
                BinaryPrimitives.WriteUInt16LittleEndian(r[pos..], (ushort)(BufferPool.BlockSize - holeLength[i]));
                BinaryPrimitives.WriteUInt16LittleEndian(r[(pos + 2)..], (ushort)holeOffset[i]);
                r[pos + 4] = (byte)((hole ? WalFormat.BkpImageHasHole : 0) | WalFormat.BkpImageApply);
                pos += 5;
            }
            if (!sameRel)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(r[pos..], b.Tag.RelNumber);
                pos += 4;
            }
            BinaryPrimitives.WriteUInt32LittleEndian(r[pos..], b.Tag.BlockNumber);
            pos += 4;
            haveRel = true;
            prevRel = b.Tag.RelNumber;
        }
        if (_mainLength > 0)
        {
            if (_mainLength < 256)
            {
                r[pos++] = WalFormat.BlockIdDataShort;
                r[pos++] = (byte)_mainLength;
            }
            else
            {
                r[pos++] = WalFormat.BlockIdDataLong;
                BinaryPrimitives.WriteUInt32LittleEndian(r[pos..], (uint)_mainLength);
                pos += 4;
            }
        }
        // Payloads: each block's image (without its hole) and data, then the main data.
        for (int i = 0; i <= _maxBlockId; i++)
        {
            ref Registered b = ref _blocks[i];
            if (!b.InUse)
                continue;
            if (image[i])
            {
                var page = new ReadOnlySpan<byte>(b.Page, BufferPool.BlockSize);
                int ho = holeOffset[i], hl = holeLength[i];
                page[..ho].CopyTo(r[pos..]);
                pos += ho;
                page[(ho + hl)..].CopyTo(r[pos..]);
                pos += BufferPool.BlockSize - ho - hl;
            }
            if (withData[i])
            {
                _blockData[i].AsSpan(0, b.DataLength).CopyTo(r[pos..]);
                pos += b.DataLength;
            }
        }
        _main.AsSpan(0, _mainLength).CopyTo(r[pos..]);
        pos += _mainLength;

        // The header; xl_prev and the CRC are filled in at insertion.
        BinaryPrimitives.WriteUInt32LittleEndian(r, (uint)pos);
        BinaryPrimitives.WriteUInt32LittleEndian(r[4..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(r[8..], 0);
        r[16] = info;
        r[17] = rmId;
        r[18] = 0;
        r[19] = 0;
        return pos;
    }

    private void CheckBegun()
    {
        if (!_begun)
            throw new InvalidOperationException("call XLog.BeginInsert first");
    }

    private static void Append(ref byte[] buf, ref int length, ReadOnlySpan<byte> data)
    {
        if (buf.Length - length < data.Length)
            Array.Resize(ref buf, Math.Max(length + data.Length, buf.Length * 2));
        data.CopyTo(buf.AsSpan(length));
        length += data.Length;
    }
}
