/*-------------------------------------------------------------------------
 * ClusterConfig.cs
 *   The options a child must know to attach to what the supervisor built
 *   (the buffer pool's size and data directory), kept in the segment so
 *   that a handle is all a child needs.
 *
 * NOTES
 *   Layout of "PgIpc.ClusterConfig" (ShmemInitStruct; bytes, all written
 *   once by the supervisor's initialiser before the index entry is
 *   published, immutable after):
 *      0  Magic             uint  (MagicValue)
 *      4  NumBuffers        int   shared buffers, 0 when the cluster has no pool
 *      8  BlocksPerSegment  int   the pool's relation segment size in blocks
 *     12  DataDirLength     int   UTF-8 bytes of the data directory (0: none)
 *     16  DataDir           MaxDataDirectoryBytes bytes of UTF-8
 *   No struct type: the bytes are read and written through pointers, as
 *   the DSM control table keeps its data directory.
 *
 *   PostgreSQL's children inherit these as GUCs over fork (or read them
 *   from the parameter file the postmaster writes for EXEC_BACKEND).
 *-------------------------------------------------------------------------
 */
using System.Text;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Postmaster;

/// <summary>The supervisor's options that children read from shared memory.</summary>
internal static unsafe class ClusterConfig
{
    public const string ShmemName = "PgIpc.ClusterConfig";
    public const uint MagicValue = 0x43464731; // "CFG1"
    public const int MaxDataDirectoryBytes = 1024;
    public const int HeaderBytes = 16;
    public const long ShmemSize = HeaderBytes + MaxDataDirectoryBytes;

    /// <summary>Writes the configuration into a new segment (the supervisor, at every (re)creation).</summary>
    public static void Init(ShmemSegment segment, BufferPoolOptions? buffers)
    {
        if (buffers is not null && Encoding.UTF8.GetByteCount(buffers.DataDirectory) > MaxDataDirectoryBytes)
            throw new ArgumentException($"data directory path longer than {MaxDataDirectoryBytes} bytes in UTF-8", nameof(buffers));
        segment.InitStruct(ShmemName, ShmemSize, r =>
        {
            byte* p = r.Pointer;
            *(int*)(p + 4) = buffers?.NumBuffers ?? 0;
            *(int*)(p + 8) = buffers?.BlocksPerSegment ?? 0;
            *(int*)(p + 12) = buffers is null ? 0 : Encoding.UTF8.GetBytes(buffers.DataDirectory, new Span<byte>(p + HeaderBytes, MaxDataDirectoryBytes));
            // Written last; the ShmemIndex's ready state publishes the whole struct.
            *(uint*)p = MagicValue;
        }, out _);
    }

    /// <summary>The buffer pool's options as the supervisor recorded them, or null when the cluster has no pool.</summary>
    public static BufferPoolOptions? ReadBufferOptions(ShmemSegment segment)
    {
        if (!segment.TryFindStruct(ShmemName, out ShmemRegion r) || r.Size < ShmemSize)
            throw new PgIpcException($"segment {segment.Handle.Id} has no {ShmemName}; it was not made by a ClusterBuilder of this version");
        byte* p = r.Pointer;
        if (*(uint*)p != MagicValue)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} has bad magic 0x{*(uint*)p:x8}");
        int n = *(int*)(p + 4);
        if (n == 0)
            return null;
        int len = *(int*)(p + 12);
        if (len <= 0 || len > MaxDataDirectoryBytes)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} records a buffer pool without a data directory");
        return new BufferPoolOptions(n, Encoding.UTF8.GetString(p + HeaderBytes, len), *(int*)(p + 8));
    }
}
