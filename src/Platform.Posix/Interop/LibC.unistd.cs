// <unistd.h>: close, ftruncate, lseek; <fcntl.h>: posix_fallocate; <signal.h>: kill.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const int SEEK_END = 2;

    [LibraryImport(Libraries.Libc, EntryPoint = "close", SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(Libraries.Libc, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    [LibraryImport(Libraries.Libc, EntryPoint = "lseek", SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    /// <summary>Linux only. Returns an errno value directly (0 on success); it does not set errno.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "posix_fallocate")]
    public static partial int posix_fallocate(int fd, long offset, long len);

    /// <summary>int kill(pid_t pid, int sig); sig 0 only checks that the process exists.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "kill", SetLastError = true)]
    public static partial int kill(int pid, int sig);
}
