/*-------------------------------------------------------------------------
 * ResourceManagers.cs
 *   The resource-manager registry: each kind of WAL record names the code
 *   that replays it (redo) and describes it (for waldump); the built-in
 *   XLOG resource manager (checkpoints, full-page images).
 *
 * NOTES
 *   The registry is per process, as PostgreSQL's RmgrTable: every process
 *   that replays or dumps WAL registers the same managers (recovery runs
 *   in the supervisor: register before ClusterBuilder.Build). Ids 0..127
 *   are the library's, 128..255 a user's (RM_MIN_CUSTOM_ID); registering
 *   an id twice with another name is an error.
 *
 *   Mirrors src/backend/access/transam/rmgr.c (RegisterCustomRmgr) and the
 *   XLOG rmgr of xlog.c (xlog_redo) and xlogdesc.c (xlog_desc).
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Text;

namespace PgIpc.Wal;

/// <summary>Replays one record (rm_redo). Restore pages through <paramref name="context"/>.</summary>
public delegate void WalRedo(WalRedoContext context, DecodedRecord record);

/// <summary>Describes one record for a dump (rm_desc): appends to <paramref name="text"/>.</summary>
public delegate void WalDescribe(StringBuilder text, DecodedRecord record);

/// <summary>A resource manager: its id, name, redo and description functions (RmgrData).</summary>
public sealed record WalResourceManager(byte Id, string Name, WalRedo Redo, WalDescribe Describe);

/// <summary>The process's resource managers (RmgrTable).</summary>
public static class WalResourceManagers
{
    /// <summary>The built-in XLOG resource manager's id (RM_XLOG_ID).</summary>
    public const byte XLogId = 0;
    /// <summary>The first id for a user's resource manager (RM_MIN_CUSTOM_ID).</summary>
    public const byte MinCustomId = 128;

    /// <summary>XLOG info: an online checkpoint (XLOG_CHECKPOINT_ONLINE).</summary>
    public const byte CheckpointOnline = 0x10;
    /// <summary>XLOG info: a shutdown checkpoint (XLOG_CHECKPOINT_SHUTDOWN).</summary>
    public const byte CheckpointShutdown = 0x00;
    /// <summary>XLOG info: a full-page image (XLOG_FPI).</summary>
    public const byte FullPageImage = 0xB0;

    private static readonly WalResourceManager?[] s_table = new WalResourceManager?[256];
    private static readonly Lock s_lock = new();

    static WalResourceManagers()
    {
        s_table[XLogId] = new WalResourceManager(XLogId, "XLOG", XLogRedo, XLogDescribe);
    }

    /// <summary>Registers a user's resource manager (RegisterCustomRmgr); ids <see cref="MinCustomId"/>..255. Idempotent for the same name.</summary>
    public static void Register(WalResourceManager rmgr)
    {
        ArgumentNullException.ThrowIfNull(rmgr);
        ArgumentException.ThrowIfNullOrEmpty(rmgr.Name);
        if (rmgr.Id < MinCustomId)
            throw new ArgumentOutOfRangeException(nameof(rmgr), rmgr.Id, $"a user's resource manager id must be {MinCustomId}..255");
        lock (s_lock)
        {
            if (s_table[rmgr.Id] is { } old && old.Name != rmgr.Name)
                throw new ArgumentException($"resource manager id {rmgr.Id} is already \"{old.Name}\"", nameof(rmgr));
            s_table[rmgr.Id] = rmgr;
        }
    }

    /// <summary>The manager with <paramref name="id"/>, or null.</summary>
    public static WalResourceManager? Find(byte id) => Volatile.Read(ref s_table[id]);

    /// <summary>The manager's name, or "custom###" when this process does not know it.</summary>
    public static string NameOf(byte id) => Find(id)?.Name ?? $"custom{id:D3}";

    /// <summary>The checkpoint record's main data (CheckPoint): redo (8), timeline (4), full_page_writes (4), time (8).</summary>
    internal static void WriteCheckpoint(Span<byte> d, ulong redo, uint timeline, bool fpw, long unixTime)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, redo);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], timeline);
        BinaryPrimitives.WriteUInt32LittleEndian(d[12..], fpw ? 1u : 0u);
        BinaryPrimitives.WriteInt64LittleEndian(d[16..], unixTime);
    }

    /// <summary>Bytes of a checkpoint record's main data.</summary>
    internal const int CheckpointDataSize = 24;

    /// <summary>The redo pointer of a checkpoint record, or null when <paramref name="r"/> is not one.</summary>
    public static ulong? CheckpointRedo(DecodedRecord r)
        => r.RmId == XLogId && (r.Info & 0xF0) is CheckpointOnline or CheckpointShutdown && r.MainData.Length >= CheckpointDataSize
            ? BinaryPrimitives.ReadUInt64LittleEndian(r.MainData)
            : null;

    private static void XLogRedo(WalRedoContext context, DecodedRecord record)
    {
        // Checkpoints need nothing at redo; a full-page image record restores its pages (done for every record's images by the context).
        for (int i = 0; i <= record.MaxBlockId; i++)
            if (record.Block(i) is { } b && !b.ApplyImage)
                throw new PgIpcException($"XLOG record at {WalFormat.FormatLsn(record.Lsn)} block {i} has no image to apply");
    }

    private static void XLogDescribe(StringBuilder text, DecodedRecord r)
    {
        switch (r.Info & 0xF0)
        {
            case CheckpointOnline or CheckpointShutdown when r.MainData.Length >= CheckpointDataSize:
                ReadOnlySpan<byte> d = r.MainData;
                text.Append((r.Info & 0xF0) == CheckpointOnline ? "CHECKPOINT_ONLINE" : "CHECKPOINT_SHUTDOWN")
                    .Append(" redo ").Append(WalFormat.FormatLsn(BinaryPrimitives.ReadUInt64LittleEndian(d)))
                    .Append("; tli ").Append(BinaryPrimitives.ReadUInt32LittleEndian(d[8..]))
                    .Append("; fpw ").Append(BinaryPrimitives.ReadUInt32LittleEndian(d[12..]) != 0 ? "true" : "false");
                break;
            case FullPageImage:
                text.Append("FPI");
                break;
            default:
                text.Append("UNKNOWN (").Append(r.Info).Append(')');
                break;
        }
    }

    /// <summary>Describes a record's blocks as pg_waldump does ("blkref #0: rel 5 fork Main blk 3 FPW").</summary>
    internal static void DescribeBlocks(StringBuilder text, DecodedRecord r)
    {
        for (int i = 0; i <= r.MaxBlockId; i++)
        {
            if (r.Block(i) is not { } b)
                continue;
            text.Append(", blkref #").Append(i).Append(": rel ").Append(b.Tag.RelNumber).Append(" fork ").Append(b.Tag.Fork)
                .Append(" blk ").Append(b.Tag.BlockNumber);
            if (b.HasImage)
                text.Append(" FPW");
            if (b.WillInit)
                text.Append(" (init)");
        }
    }
}
