// <sys/eventfd.h>: eventfd. A 64-bit counter behind a descriptor: write adds (EAGAIN at the maximum on a
// non-blocking fd), read returns the count and zeroes it (EAGAIN at zero); readable while the count is non-zero.
// Names as Tmds.LibC's Tmds.Linux.LibC spells them.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Linux.Interop;

internal static unsafe partial class LibC
{
    /// <summary>O_NONBLOCK (04000).</summary>
    public const int EFD_NONBLOCK = 0x800;
    /// <summary>O_CLOEXEC (02000000).</summary>
    public const int EFD_CLOEXEC = 0x80000;

    /// <summary>What readlink("/proc/self/fd/N") returns for an eventfd.</summary>
    public const string EventFdLinkTarget = "anon_inode:[eventfd]";

    /// <summary>int eventfd(unsigned int initval, int flags): the fd, or -1 with errno.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int eventfd(uint initval, int flags);
}
