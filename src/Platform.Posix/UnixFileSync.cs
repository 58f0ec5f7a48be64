/*-------------------------------------------------------------------------
 * UnixFileSync.cs
 *   Directory fsync on Linux, macOS and FreeBSD: open(O_RDONLY |
 *   O_DIRECTORY | O_CLOEXEC), fsync(2), close.
 *
 * NOTES
 *   As fd.c's fsync_fname for a directory, EBADF/EINVAL from fsync (a file
 *   system or OS that cannot sync a read-only directory descriptor) are not
 *   errors: there is nothing more this process could do. Every other errno
 *   (EIO above all) is thrown: the caller treats it as data loss.
 *-------------------------------------------------------------------------
 */
using System.Text;
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>fsync of a directory through a read-only descriptor.</summary>
internal sealed unsafe class UnixFileSync : IFileSync
{
    public void FsyncDirectory(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        int n = Encoding.UTF8.GetByteCount(path);
        byte[] name = new byte[n + 1]; // NUL-terminated
        Encoding.UTF8.GetBytes(path, name);
        int fd;
        fixed (byte* p = name)
        {
            do
                fd = LibC.open(p, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC);
            while (fd < 0 && Errno.Last == Errno.EINTR);
        }
        if (fd < 0)
            throw Errno.Exception("open", Errno.Last, $"directory \"{path}\"");
        using var h = new SafeFdHandle(fd);
        if (LibC.fsync(h.Fd) != 0)
        {
            int errno = Errno.Last;
            if (errno != Errno.EBADF && errno != Errno.EINVAL)
                throw Errno.Exception("fsync", errno, $"directory \"{path}\"");
        }
    }
}
