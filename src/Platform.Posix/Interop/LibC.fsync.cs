// <unistd.h>: fsync, fdatasync; <fcntl.h>: O_DIRECTORY (for opening a directory to fsync it). In a file of their own so
// the directory fsync's interop reads in one place. O_DIRECTORY differs between Linux and the BSDs / macOS.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    /// <summary>O_DIRECTORY: open fails with ENOTDIR unless the path is a directory.</summary>
    public static int O_DIRECTORY => OperatingSystem.IsLinux() ? 0x10000 : OperatingSystem.IsMacOS() ? 0x100000 : 0x20000;

    /// <summary>int fsync(int fd): 0, or -1 with errno (EIO: a write-back failed; EINVAL: the file system cannot sync this fd).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "fsync", SetLastError = true)]
    public static partial int fsync(int fd);

    /// <summary>int fdatasync(int fd): as fsync, without metadata a read does not need (Linux: called only there).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int fdatasync(int fd);
}
