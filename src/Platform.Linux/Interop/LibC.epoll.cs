// <sys/epoll.h>: epoll_create1, epoll_ctl, epoll_wait and struct epoll_event. Names as Tmds.LibC's
// Tmds.Linux.LibC spells them.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Linux.Interop;

internal static unsafe partial class LibC
{
    /// <summary>O_CLOEXEC.</summary>
    public const int EPOLL_CLOEXEC = 0x80000;

    public const int EPOLL_CTL_ADD = 1;
    public const int EPOLL_CTL_DEL = 2;
    public const int EPOLL_CTL_MOD = 3;

    // Event bits: the same values as poll's POLL* on Linux (UnixWaitSet relies on it).
    public const uint EPOLLIN = 0x001;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;

    /// <summary>
    /// struct epoll_event { uint32_t events; epoll_data_t data; }: declared __attribute__((packed)) on x86_64
    /// only, so it is 12 bytes there (data at 4) and 16 bytes elsewhere (data at 8). Chosen once; arrays of it
    /// are handled as bytes through <see cref="EpollEventAt"/>.
    /// </summary>
    public static readonly int SIZEOF_epoll_event = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    private static readonly int s_epollDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    /// <summary>The address of element <paramref name="index"/> of an epoll_event array.</summary>
    public static byte* EpollEventAt(byte* events, int index) => events + (nint)index * SIZEOF_epoll_event;

    public static uint EpollEvents(byte* ev) => *(uint*)ev;

    /// <summary>epoll_data_t as a u64 (unaligned on x86_64).</summary>
    public static ulong EpollData(byte* ev) => *(ulong*)(ev + s_epollDataOffset);

    public static void SetEpollEvent(byte* ev, uint events, ulong data)
    {
        *(uint*)ev = events;
        *(ulong*)(ev + s_epollDataOffset) = data;
    }

    /// <summary>int epoll_create1(int flags): the epoll fd, or -1 with errno.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "epoll_create1", SetLastError = true)]
    public static partial int epoll_create1(int flags);

    /// <summary>int epoll_ctl(int epfd, int op, int fd, struct epoll_event *event): 0, or -1 with errno.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "epoll_ctl", SetLastError = true)]
    public static partial int epoll_ctl(int epfd, int op, int fd, void* @event);

    /// <summary>
    /// int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout): the number of ready
    /// entries written, 0 on timeout, -1 with errno (EINTR when a signal handler ran, whatever SA_RESTART says).
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int epoll_wait(int epfd, void* events, int maxevents, int timeout);
}
