/*-------------------------------------------------------------------------
 * ControlFile.cs
 *   The control file (pg_control): the cluster's state, the last
 *   checkpoint and its redo pointer, the timeline and the WAL's sizes, in
 *   <datadir>/global/pg_control.
 *
 * NOTES
 *   Layout (8192 bytes, little-endian; PG_CONTROL_FILE_SIZE so that a
 *   read never sees a short file; only the first 68 bytes are used):
 *      0  Magic        uint   "PGCF"
 *      4  Version      uint   1
 *      8  SystemId     ulong
 *     16  State        int    DbState
 *     24  Time         long   Unix seconds of the last update
 *     32  CheckPoint   ulong  start of the last checkpoint record
 *     40  Redo         ulong  its redo pointer
 *     48  Timeline     uint
 *     52  SegmentSize  int
 *     56  WalPageSize  int
 *     60  BlockSize    int
 *     64  Crc          uint   CRC-32C of bytes 0..64
 *
 *   PostgreSQL overwrites pg_control in place, relying on a 512-byte
 *   sector write being atomic. Here it is replaced: written to
 *   pg_control.tmp, fsynced, renamed over pg_control, and the directory
 *   fsynced, so a crash leaves either the old file or the new one.
 *
 *   Mirrors src/include/catalog/pg_control.h and
 *   src/common/controldata_utils.c (get_controlfile, update_controlfile).
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using PgIpc.Buffers;
using PgIpc.Platform;

namespace PgIpc.Wal;

/// <summary>The cluster's state in the control file (DBState).</summary>
public enum DbState
{
    /// <summary>Never written.</summary>
    Unknown = 0,
    /// <summary>Shut down cleanly: the last checkpoint is the end of WAL; no replay needed.</summary>
    ShutDown = 1,
    /// <summary>Replaying WAL after a crash.</summary>
    InCrashRecovery = 2,
    /// <summary>Running (or crashed while running): the next start replays from the redo pointer.</summary>
    InProduction = 3,
}

/// <summary>The control file's contents (ControlFileData).</summary>
/// <param name="SystemId">The cluster's system id.</param>
/// <param name="State">Its state.</param>
/// <param name="Time">When it was written (Unix seconds).</param>
/// <param name="CheckPoint">Start of the last checkpoint record.</param>
/// <param name="Redo">That checkpoint's redo pointer: where replay starts.</param>
/// <param name="Timeline">The timeline.</param>
/// <param name="SegmentSize">wal_segment_size.</param>
public readonly record struct ControlFileData(ulong SystemId, DbState State, long Time, ulong CheckPoint, ulong Redo, uint Timeline, int SegmentSize);

/// <summary>Reads and atomically replaces &lt;datadir&gt;/global/pg_control.</summary>
public static class ControlFile
{
    /// <summary>Bytes of the file (PG_CONTROL_FILE_SIZE).</summary>
    public const int FileSize = 8192;
    private const uint Magic = 0x46434750; // "PGCF"
    private const uint Version = 1;
    private const int CrcOffset = 64;

    /// <summary>The control file's path in <paramref name="dataDirectory"/>.</summary>
    public static string PathIn(string dataDirectory) => Path.Combine(dataDirectory, "global", "pg_control");

    /// <summary>Reads the control file; null when there is none. Throws <see cref="PgIpcException"/> when it is corrupt (bad CRC, magic or sizes).</summary>
    public static ControlFileData? Read(string dataDirectory)
    {
        string path = PathIn(dataDirectory);
        byte[] b;
        try
        {
            b = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
        if (b.Length != FileSize)
            throw new PgIpcException($"control file \"{path}\" is {b.Length} bytes, expected {FileSize}");
        ReadOnlySpan<byte> s = b;
        uint crc = ~WalFormat.Crc32C(~0u, s[..CrcOffset]);
        if (BinaryPrimitives.ReadUInt32LittleEndian(s[CrcOffset..]) != crc)
            throw new PgIpcException($"incorrect checksum in control file \"{path}\"");
        if (BinaryPrimitives.ReadUInt32LittleEndian(s) != Magic || BinaryPrimitives.ReadUInt32LittleEndian(s[4..]) != Version)
            throw new PgIpcException($"control file \"{path}\" has an unknown magic or version");
        int walPage = BinaryPrimitives.ReadInt32LittleEndian(s[56..]);
        int blck = BinaryPrimitives.ReadInt32LittleEndian(s[60..]);
        if (walPage != WalFormat.PageSize || blck != BufferPool.BlockSize)
            throw new PgIpcException($"control file \"{path}\" was made with WAL pages of {walPage} and blocks of {blck} bytes; this build uses {WalFormat.PageSize} and {BufferPool.BlockSize}");
        return new ControlFileData(BinaryPrimitives.ReadUInt64LittleEndian(s[8..]), (DbState)BinaryPrimitives.ReadInt32LittleEndian(s[16..]),
            BinaryPrimitives.ReadInt64LittleEndian(s[24..]), BinaryPrimitives.ReadUInt64LittleEndian(s[32..]),
            BinaryPrimitives.ReadUInt64LittleEndian(s[40..]), BinaryPrimitives.ReadUInt32LittleEndian(s[48..]),
            BinaryPrimitives.ReadInt32LittleEndian(s[52..]));
    }

    /// <summary>Replaces the control file with <paramref name="data"/> (temp file, fsync, rename, directory fsync).</summary>
    public static void Write(IFileSync files, string dataDirectory, ControlFileData data)
    {
        ArgumentNullException.ThrowIfNull(files);
        byte[] b = new byte[FileSize];
        Span<byte> s = b;
        BinaryPrimitives.WriteUInt32LittleEndian(s, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(s[4..], Version);
        BinaryPrimitives.WriteUInt64LittleEndian(s[8..], data.SystemId);
        BinaryPrimitives.WriteInt32LittleEndian(s[16..], (int)data.State);
        BinaryPrimitives.WriteInt64LittleEndian(s[24..], data.Time);
        BinaryPrimitives.WriteUInt64LittleEndian(s[32..], data.CheckPoint);
        BinaryPrimitives.WriteUInt64LittleEndian(s[40..], data.Redo);
        BinaryPrimitives.WriteUInt32LittleEndian(s[48..], data.Timeline);
        BinaryPrimitives.WriteInt32LittleEndian(s[52..], data.SegmentSize);
        BinaryPrimitives.WriteInt32LittleEndian(s[56..], WalFormat.PageSize);
        BinaryPrimitives.WriteInt32LittleEndian(s[60..], BufferPool.BlockSize);
        BinaryPrimitives.WriteUInt32LittleEndian(s[CrcOffset..], ~WalFormat.Crc32C(~0u, s[..CrcOffset]));
        string dir = Path.Combine(dataDirectory, "global");
        files.CreatePrivateDirectory(dir);
        string path = PathIn(dataDirectory), tmp = path + ".tmp";
        using (SafeFileHandle f = DurableFileIO.Opened(File.OpenHandle(tmp, FileMode.Create, FileAccess.Write, FileShare.None), tmp, created: true))
        {
            DurableFileIO.Write(f, b, 0);
            DurableFileIO.Flush(f);
        }
        DurableFileIO.Move(tmp, path, overwrite: true);
        DurableFileIO.FsyncDirectory(files, dir);
    }
}
