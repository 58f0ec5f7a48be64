/*-------------------------------------------------------------------------
 * UnixFileSync.cs
 *   File-system calls on Linux, macOS and FreeBSD: directory fsync
 *   (open(O_RDONLY | O_DIRECTORY | O_CLOEXEC), fsync(2), close), private
 *   files and directories created with their mode, an O_NOFOLLOW open,
 *   and a path's owner and mode.
 *
 * NOTES
 *   As fd.c's fsync_fname for a directory, EBADF/EINVAL from fsync (a file
 *   system or OS that cannot sync a read-only directory descriptor) are not
 *   errors: there is nothing more this process could do. Every other errno
 *   (EIO above all) is thrown: the caller treats it as data loss.
 *
 *   Modes. A directory is made with Directory.CreateDirectory(path, 0700)
 *   (the mode goes to mkdir(2)); a file with a FileStream whose
 *   UnixCreateMode is 0600 (the mode goes to open(O_CREAT | O_EXCL)), and
 *   only its SafeFileHandle is kept: an unbuffered FileStream's finalizer
 *   does not close the handle, so the handle alone owns the descriptor.
 *   The umask can only narrow these modes. An existing file is opened with
 *   open(O_RDWR | O_NOFOLLOW | O_CLOEXEC) through the two-argument binding
 *   (no O_CREAT, so no mode argument) and wrapped in a SafeFileHandle,
 *   which RandomAccess and FlushToDisk use as one the runtime opened.
 *
 *   Owner and mode: statx(2) on Linux (owner and mode); elsewhere the
 *   runtime's File.GetUnixFileMode and an unknown owner (-1).
 *-------------------------------------------------------------------------
 */
using System.Text;
using Microsoft.Win32.SafeHandles;
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>Directory fsync, private creation, O_NOFOLLOW opens and ownership on Unix.</summary>
internal sealed unsafe class UnixFileSync : IFileSync
{
    private const UnixFileMode PrivateDirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode PrivateFileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    public void FsyncDirectory(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        int fd = OpenRetrying(path, LibC.O_RDONLY | LibC.O_DIRECTORY | LibC.O_CLOEXEC);
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

    public void FlushFileData(SafeFileHandle file)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (!OperatingSystem.IsLinux())
        {
            RandomAccess.FlushToDisk(file); // fsync: macOS and the BSDs differ in what fdatasync covers, if they have it
            return;
        }
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            int rc;
            do
            {
                rc = LibC.fdatasync((int)file.DangerousGetHandle());
            } while (rc != 0 && Errno.Last == Errno.EINTR);
            if (rc != 0)
                throw new IOException(Errno.Exception("fdatasync", Errno.Last, "a file").Message);
        }
        finally
        {
            if (added)
                file.DangerousRelease();
        }
    }

    public FileOwnership? GetOwnership(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        long current = LibC.geteuid();
        if (!OperatingSystem.IsLinux())
            return OperatingSystem.IsWindows() ? null : new FileOwnership(-1, current, File.GetUnixFileMode(path));
        byte* buf = stackalloc byte[LibC.StatxSize];
        if (LibC.statx(LibC.AT_FDCWD, path, 0, LibC.STATX_UID | LibC.STATX_MODE, buf) != 0)
        {
            int errno = Errno.Last;
            string message = Errno.Exception("statx", errno, $"\"{path}\"").Message;
            throw errno == Errno.ENOENT ? new FileNotFoundException(message, path) : new IOException(message);
        }
        ushort mode = *(ushort*)(buf + LibC.StatxModeOffset);
        return new FileOwnership(*(uint*)(buf + LibC.StatxUidOffset), current, (UnixFileMode)(mode & 0xFFF));
    }

    public void CreatePrivateDirectory(string path)
    {
        if (OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("a Unix backend"); // never: the Unix backends refuse to load there
        Directory.CreateDirectory(path, PrivateDirectoryMode);
    }

    public SafeFileHandle OpenPrivateFile(string path, FileMode mode, FileShare share, FileOptions options)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        switch (mode)
        {
            case FileMode.CreateNew:
            {
                if (OperatingSystem.IsWindows())
                    throw new PlatformNotSupportedException("a Unix backend"); // never: the Unix backends refuse to load there
                var stream = new FileStream(path, new FileStreamOptions
                {
                    Mode = FileMode.CreateNew,
                    Access = FileAccess.ReadWrite,
                    Share = share,
                    Options = options,
                    BufferSize = 0, // unbuffered: the stream holds nothing to flush, and is dropped below
                    UnixCreateMode = PrivateFileMode,
                });
                GC.SuppressFinalize(stream); // the handle outlives the stream (see the banner)
                return stream.SafeFileHandle;
            }
            case FileMode.Open:
            {
                int fd = OpenRetrying(path, LibC.O_RDWR | LibC.O_NOFOLLOW | LibC.O_CLOEXEC);
                if (fd < 0)
                {
                    int errno = Errno.Last;
                    string message = Errno.Exception("open", errno, $"\"{path}\" (O_NOFOLLOW: a symbolic link there is refused)").Message;
                    throw errno == Errno.ENOENT ? new FileNotFoundException(message, path) : new IOException(message);
                }
                return new SafeFileHandle(fd, ownsHandle: true);
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(mode), mode, "only CreateNew and Open");
        }
    }

    /// <summary>open(2) of <paramref name="path"/>, again after EINTR: the descriptor, or -1 with errno (Errno.Last) set.</summary>
    private static int OpenRetrying(string path, int flags)
    {
        byte[] name = NulTerminated(path);
        int fd;
        fixed (byte* p = name)
        {
            do
                fd = LibC.open(p, flags);
            while (fd < 0 && Errno.Last == Errno.EINTR);
        }
        return fd;
    }

    private static byte[] NulTerminated(string path)
    {
        int n = Encoding.UTF8.GetByteCount(path);
        byte[] name = new byte[n + 1];
        Encoding.UTF8.GetBytes(path, name);
        return name;
    }
}
