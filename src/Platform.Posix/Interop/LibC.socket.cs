// <sys/socket.h>: recv, used only to peek whether a readable socket's peer has closed (select and
// non-Linux poll have no POLLRDHUP).
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const int MSG_PEEK = 0x2;
    /// <summary>0x40 on Linux, 0x80 on macOS and the BSDs.</summary>
    public static int MSG_DONTWAIT => OperatingSystem.IsLinux() ? 0x40 : 0x80;

    /// <summary>ssize_t recv(int sockfd, void *buf, size_t len, int flags): 0 when the peer has shut down its writing half.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "recv", SetLastError = true)]
    public static partial nint recv(int sockfd, void* buf, nuint len, int flags);
}
