// <poll.h>: struct pollfd and poll. The POLL* values below are the same on Linux, macOS and the BSDs,
// except POLLRDHUP, which only Linux has.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const short POLLIN = 0x001;
    public const short POLLPRI = 0x002;
    public const short POLLOUT = 0x004;
    /// <summary>Reported, never requested: an error condition.</summary>
    public const short POLLERR = 0x008;
    /// <summary>Reported, never requested: hang-up (a FIFO or pipe with no writers left, a socket shut down both ways).</summary>
    public const short POLLHUP = 0x010;
    /// <summary>Reported, never requested: fd is not open.</summary>
    public const short POLLNVAL = 0x020;
    /// <summary>Linux only (0x2000): the peer shut down its writing half.</summary>
    public const short POLLRDHUP = 0x2000;

    /// <summary>struct pollfd: 8 bytes; fd at 0, events at 4, revents at 6. A negative fd is skipped (revents 0).</summary>
#pragma warning disable CS8981 // the native name, kept exactly (a lower-case type name)
    [StructLayout(LayoutKind.Sequential)]
    public struct pollfd
    {
        public int fd;
        public short events;
        public short revents;
    }
#pragma warning restore CS8981

    /// <summary>
    /// int poll(struct pollfd *fds, nfds_t nfds, int timeout): the number of entries with a non-zero revents,
    /// 0 on timeout, -1 with errno (EINTR when a signal handler ran; never restarted). timeout -1 waits forever.
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "poll", SetLastError = true)]
    public static partial int poll(pollfd* fds, nuint nfds, int timeout);
}
