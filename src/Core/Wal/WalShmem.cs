/*-------------------------------------------------------------------------
 * WalShmem.cs
 *   The WAL's shared state: XLogCtlData (insert position, write and flush
 *   results and requests, the redo pointer, statistics), the eight
 *   insertion locks with their progress variables, the page-end array of
 *   the WAL buffers and the buffers themselves; and WalOptions.
 *
 * NOTES
 *   Layout of "PgIpc.XLogCtl" (one InitStruct, 64-byte aligned parts):
 *     XLogCtlData                 640 bytes (below)
 *     WalInsertLockPadded[8]      64 bytes each
 *     ulong xlblocks[NumBuffers]  the end LSN of the page each buffer holds
 *     pages[NumBuffers]           8 KiB each
 *
 *   Lock order: an insertion lock, then WALBufMappingLock, then
 *   WALWriteLock (AdvanceXLInsertBuffer releases the mapping lock before
 *   it takes the write lock); the spinlocks are leaves. A checkpoint takes
 *   all eight insertion locks, in index order, to move the redo pointer.
 *
 *   Mirrors XLogCtlData, XLogCtlInsert and WALInsertLockPadded of
 *   src/backend/access/transam/xlog.c and XLOGShmemSize's auto-tuning of
 *   wal_buffers (XLOGChooseNumBuffers).
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Wal;

/// <summary>
/// WAL settings (wal_segment_size, wal_buffers, max_wal_size, full_page_writes, wal_writer_delay,
/// wal_writer_flush_after). Every process of a cluster runs with the same (the builder records them for children).
/// </summary>
public sealed record WalOptions
{
    /// <summary>Bytes of a segment file: a power of two (default 16 MiB).</summary>
    public int SegmentSize { get; init; } = WalFormat.DefaultSegmentSize;

    /// <summary>Bytes of WAL buffers; 0 (default) sizes them as PostgreSQL's wal_buffers = -1: 1/32 of shared buffers, at least 64 KiB, at most one segment.</summary>
    public int BufferBytes { get; init; }

    /// <summary>max_wal_size: a checkpoint is requested when this much WAL was written since the last one's redo pointer (default 1 GiB).</summary>
    public long MaxWalSize { get; init; } = 1L << 30;

    /// <summary>full_page_writes: log a page's image the first time it changes after a checkpoint (default true).</summary>
    public bool FullPageWrites { get; init; } = true;

    /// <summary>wal_writer_delay: how long the WAL writer sleeps between rounds (default 200 ms).</summary>
    public int WriterDelayMs { get; init; } = 200;

    /// <summary>wal_writer_flush_after: the WAL writer flushes at once when this many bytes are unflushed (default 1 MiB).</summary>
    public int WriterFlushAfterBytes { get; init; } = 1024 * 1024;

    internal void Validate()
    {
        _ = new WalGeometry(SegmentSize);
        if (BufferBytes != 0 && (BufferBytes < 8 * WalFormat.PageSize || BufferBytes % WalFormat.PageSize != 0))
            throw new ArgumentOutOfRangeException(nameof(BufferBytes), BufferBytes, "WAL buffers must be 0 (auto) or a multiple of 8 KiB, at least 64 KiB");
        if (MaxWalSize < 2L * SegmentSize)
            throw new ArgumentOutOfRangeException(nameof(MaxWalSize), MaxWalSize, "max_wal_size must be at least two segments");
        ArgumentOutOfRangeException.ThrowIfLessThan(WriterDelayMs, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(WriterFlushAfterBytes, 0);
    }

    /// <summary>The number of 8 KiB WAL buffers for a pool of <paramref name="sharedBuffers"/> (XLOGChooseNumBuffers).</summary>
    internal int NumBuffers(int? sharedBuffers)
    {
        if (BufferBytes != 0)
            return BufferBytes / WalFormat.PageSize;
        long n = (sharedBuffers ?? 0) / 32;
        long max = SegmentSize / WalFormat.PageSize;
        return (int)Math.Clamp(n, 8, max);
    }
}

/// <summary>
/// XLogCtlData. Layout (640 bytes) and protectors:
/// <code>
///    0  InsertPosLock     spinlock (insertpos_lck) over CurrBytePos, PrevBytePos
///    8  CurrBytePos       InsertPosLock: usable-byte position of the next record
///   16  PrevBytePos       InsertPosLock: usable-byte position of the last record reserved
///   24  RedoRecPtr        written holding every insertion lock and InsertPosLock; read under either
///   32  FullPageWrites    immutable (1 = full_page_writes on)
///   40  Records           InsertPosLock: records reserved since shared memory was made (counted in the critical
///                         section the inserter is in anyway: no extra shared cache line, no atomic)
///   48  BytesInserted     InsertPosLock: their bytes (MAXALIGNed)
///   64  InfoLock          spinlock (info_lck) over WriteRqst, FlushRqst, CkptRequestedSeg
///   72  WriteRqst         InfoLock: highest write request seen (LogwrtRqst.Write)
///   80  FlushRqst         InfoLock: highest flush request seen
///   88  CkptRequestedSeg  InfoLock: segment at which max_wal_size last asked for a checkpoint
///  128  LogwrtWrite       written by the WALWriteLock holder with a release store after the write(2); read
///                         with an acquire load anywhere (pairs with that store)
///  136  LogwrtFlush       as LogwrtWrite, stored after the fsync: a reader seeing X knows WAL up to X is durable
///  192  InitializedUpTo   BufMappingLock: end of the last initialised buffer page
///  256  Magic             immutable; written last by the initialiser
///  260  NumBuffers        immutable
///  264  SegmentSize       immutable
///  268  Timeline          set by the supervisor before any child attaches; immutable after
///  272  SystemId          idem
///  280  MaxWalSize        immutable
///  288  WriterDelayMs     immutable
///  292  WriterFlushAfter  immutable
///  336  FullPageImages .. Flushes  statistics, atomic increments only (only grow; never on an insert without images)
///  384  LastCheckpoint    ControlLock: start of the last checkpoint record
///  392  LastCheckpointRedo ControlLock: its redo pointer
///  400  State             ControlLock: the control file's state as last written
///  448  WriteLock         WALWriteLock (LWLockPadded)
///  512  BufMappingLock    WALBufMappingLock (LWLockPadded)
///  576  ControlLock       ControlFileLock (LWLockPadded): serialises control file writes
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Explicit, Size = 640)]
internal struct XLogCtlData
{
    public const uint MagicValue = 0x574C4F47; // "WLOG"

    [FieldOffset(0)] public int InsertPosLock;
    [FieldOffset(8)] public ulong CurrBytePos;
    [FieldOffset(16)] public ulong PrevBytePos;
    [FieldOffset(24)] public ulong RedoRecPtr;
    [FieldOffset(32)] public int FullPageWrites;
    [FieldOffset(40)] public long Records;
    [FieldOffset(48)] public long BytesInserted;
    [FieldOffset(64)] public int InfoLock;
    [FieldOffset(72)] public ulong WriteRqst;
    [FieldOffset(80)] public ulong FlushRqst;
    [FieldOffset(88)] public ulong CkptRequestedSeg;
    [FieldOffset(128)] public ulong LogwrtWrite;
    [FieldOffset(136)] public ulong LogwrtFlush;
    [FieldOffset(192)] public ulong InitializedUpTo;
    [FieldOffset(256)] public uint Magic;
    [FieldOffset(260)] public int NumBuffers;
    [FieldOffset(264)] public int SegmentSize;
    [FieldOffset(268)] public uint Timeline;
    [FieldOffset(272)] public ulong SystemId;
    [FieldOffset(280)] public long MaxWalSize;
    [FieldOffset(288)] public int WriterDelayMs;
    [FieldOffset(292)] public int WriterFlushAfter;
    [FieldOffset(336)] public long FullPageImages;
    [FieldOffset(344)] public long Writes;
    [FieldOffset(352)] public long Fsyncs;
    [FieldOffset(360)] public long Flushes;
    [FieldOffset(384)] public ulong LastCheckpoint;
    [FieldOffset(392)] public ulong LastCheckpointRedo;
    [FieldOffset(400)] public int State;
    [FieldOffset(448)] public LWLockPadded WriteLock;
    [FieldOffset(512)] public LWLockPadded BufMappingLock;
    [FieldOffset(576)] public LWLockPadded ControlLock;
}

/// <summary>
/// One WAL insertion lock (WALInsertLockPadded). Layout (64 bytes):
/// <code>
///   0  Lock            the LWLock; held exclusive while copying a record into the buffers
///  16  InsertingAt     the holder's progress: every byte before it is copied (0 = nothing published). Written by
///                      the holder through UpdateVar / ReleaseClearVar; read by WaitForVar (their ordering pair)
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct WalInsertLockPadded
{
    [FieldOffset(0)] public LWLock Lock;
    [FieldOffset(16)] public ulong InsertingAt;
}

/// <summary>A snapshot of the WAL's shared counters and positions (pg_stat_wal-like).</summary>
/// <param name="InsertLsn">Where the next record goes.</param>
/// <param name="WriteLsn">WAL written to the files up to here.</param>
/// <param name="FlushLsn">WAL durable up to here.</param>
/// <param name="RedoLsn">The redo pointer of the last checkpoint.</param>
/// <param name="LastCheckpointLsn">The last checkpoint record.</param>
/// <param name="Records">Records inserted since shared memory was made.</param>
/// <param name="BytesInserted">Their bytes.</param>
/// <param name="FullPageImages">Full-page images they carried.</param>
/// <param name="Writes">write calls of XLogWrite.</param>
/// <param name="Fsyncs">fsyncs of WAL segment files.</param>
/// <param name="Flushes">XLogWrite rounds that flushed.</param>
public readonly record struct WalStats(ulong InsertLsn, ulong WriteLsn, ulong FlushLsn, ulong RedoLsn, ulong LastCheckpointLsn,
    long Records, long BytesInserted, long FullPageImages, long Writes, long Fsyncs, long Flushes);
