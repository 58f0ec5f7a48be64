// <sys/epoll.h>: epoll_wait. The other epoll calls, the constants and struct epoll_event (packed on x86_64,
// laid out per architecture) are Tmds.LibC's; epoll_wait is ours because Tmds.LibC costs on this hot path
// (every WaitLatch). Its [DllImport(SetLastError = true)] goes through a runtime-generated IL stub that saves
// errno; this [LibraryImport] is a blittable P/Invoke the JIT inlines, with the errno save written around it
// by the source generator. Measured with `perf -- bindings` (Platform/BindingAbHarness.cs: the two bindings
// in alternating blocks of 2000 calls, 200 pairs, median per call), epoll_wait with a zero timeout on a set
// with nothing ready, three runs on 2026-12-03 12:32-12:33 UTC on the 2-vCPU VM at load 43: ours 265.3 /
// 243.4 / 263.1 ns, Tmds.LibC 281.4 / 258.2 / 278.6 ns, paired ratio 1.046 / 1.051 / 1.051 (about +15 ns).
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Linux.Interop;

internal static unsafe partial class LibC
{
    /// <summary>
    /// int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout): the number of ready
    /// entries written, 0 on timeout, -1 with errno (EINTR when a signal handler ran, whatever SA_RESTART says).
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "epoll_wait", SetLastError = true)]
    public static partial int epoll_wait(int epfd, Tmds.Linux.epoll_event* events, int maxevents, int timeout);
}
