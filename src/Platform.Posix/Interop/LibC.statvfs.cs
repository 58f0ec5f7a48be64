// <sys/statvfs.h>: statvfs. Linux (glibc, 64-bit) layout only; used to check /dev/shm has room.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    /// <summary>struct statvfs on 64-bit glibc: 112 bytes; f_bsize at 0, f_frsize at 8, f_bavail at 32.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 112)]
    public struct statvfs_t
    {
        [FieldOffset(0)] public ulong f_bsize;
        [FieldOffset(8)] public ulong f_frsize;
        [FieldOffset(16)] public ulong f_blocks;
        [FieldOffset(24)] public ulong f_bfree;
        [FieldOffset(32)] public ulong f_bavail;
    }

    [LibraryImport(Libraries.Libc, EntryPoint = "statvfs", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statvfs(string path, statvfs_t* buf);
}
