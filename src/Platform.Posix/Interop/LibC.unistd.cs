// <unistd.h>: close, read, write, ftruncate, lseek, unlink, rmdir; <fcntl.h>: posix_fallocate.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const int SEEK_END = 2;

    [LibraryImport(Libraries.Libc, EntryPoint = "close", SetLastError = true)]
    public static partial int close(int fd);

    /// <summary>ssize_t read(int fd, void *buf, size_t count): bytes read, 0 at end of file, -1 with errno (EAGAIN: nothing to read on a non-blocking fd).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "read", SetLastError = true)]
    public static partial nint read(int fd, void* buf, nuint count);

    /// <summary>ssize_t write(int fd, const void *buf, size_t count): bytes written or -1 with errno (EAGAIN: full; EPIPE: no reader, SIGPIPE is ignored by .NET).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "write", SetLastError = true)]
    public static partial nint write(int fd, void* buf, nuint count);

    [LibraryImport(Libraries.Libc, EntryPoint = "unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int unlink(string pathname);

    [LibraryImport(Libraries.Libc, EntryPoint = "rmdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int rmdir(string pathname);

    [LibraryImport(Libraries.Libc, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    [LibraryImport(Libraries.Libc, EntryPoint = "lseek", SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    /// <summary>Linux only. Returns an errno value directly (0 on success); it does not set errno.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "posix_fallocate")]
    public static partial int posix_fallocate(int fd, long offset, long len);
}
