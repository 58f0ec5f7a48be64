// <sys/select.h>: fd_set, struct timeval and select. fd_set is a bit array of FD_SETSIZE (1024) bits on
// Linux, macOS and the BSDs (longs on glibc, int32s elsewhere: the same bits on a little-endian machine);
// the FD_* macros are written out below. Descriptors >= FD_SETSIZE cannot be used.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const int FD_SETSIZE = 1024;

#pragma warning disable CS8981 // the native names, kept exactly (lower-case type names)
    /// <summary>fd_set: 128 bytes, bit fd % 8 of byte fd / 8.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct fd_set
    {
        public fixed byte fds_bits[FD_SETSIZE / 8];
    }

    /// <summary>
    /// struct timeval on LP64: 16 bytes, tv_sec at 0, tv_usec at 8 (a long on Linux and FreeBSD; an int plus
    /// padding on macOS, which reads the same low four bytes on a little-endian machine).
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct timeval
    {
        public long tv_sec;
        public long tv_usec;
    }
#pragma warning restore CS8981

    public static void FD_ZERO(fd_set* set) => new Span<byte>(set->fds_bits, FD_SETSIZE / 8).Clear();

    public static void FD_SET(int fd, fd_set* set) => set->fds_bits[fd >> 3] |= (byte)(1 << (fd & 7));

    public static bool FD_ISSET(int fd, fd_set* set) => (set->fds_bits[fd >> 3] & (1 << (fd & 7))) != 0;

    /// <summary>
    /// int select(int nfds, fd_set *readfds, fd_set *writefds, fd_set *exceptfds, struct timeval *timeout):
    /// the number of ready descriptors (the sets are rewritten to hold only them), 0 on timeout, -1 with errno
    /// (EINTR when a signal handler ran). A null timeout waits forever. nfds is the highest fd plus one.
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "select", SetLastError = true)]
    public static partial int select(int nfds, fd_set* readfds, fd_set* writefds, fd_set* exceptfds, timeval* timeout);
}
