/*-------------------------------------------------------------------------
 * EpollWaitSet.cs
 *   The Linux wait set: an epoll instance, level-triggered, one
 *   registration per position with the position as its epoll_data.
 *
 * NOTES
 *   Add registers with EPOLL_CTL_ADD; Modify uses EPOLL_CTL_MOD, or DEL
 *   when a position is switched off (epoll would still report EPOLLHUP /
 *   EPOLLERR on an fd registered for no events, making every wait return
 *   at once) and ADD when it is switched back on. Sockets ask for EPOLLRDHUP
 *   when they want WaitEvents.SocketClosed. The epoll_event array epoll_wait
 *   fills is allocated once with the set, pinned, sized to the capacity;
 *   struct epoll_event is 12 bytes (packed) on x86_64 and 16 elsewhere, see
 *   Interop/LibC.epoll.cs. An fd closed while registered leaves the epoll
 *   set by itself (when its last reference closes).
 *
 *   Mirrors PostgreSQL's WaitEventAdjustEpoll / WaitEventSetWaitBlock
 *   (WAIT_USE_EPOLL) in waiteventset.c.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform.Linux.Interop;
using PgIpc.Platform.Posix;

namespace PgIpc.Platform.Linux;

/// <summary>A wait set over epoll.</summary>
internal sealed unsafe class EpollWaitSet : UnixWaitSet
{
    private readonly SafeFdHandle _epoll;
    /// <summary>Capacity epoll_events, filled by epoll_wait; pinned.</summary>
    private readonly byte[] _ready;
    /// <summary>Whether position i is in the epoll set now (switched-off positions are not).</summary>
    private readonly bool[] _registered;

    public EpollWaitSet(int capacity) : base(capacity, kernelReportsRdHup: true)
    {
        _ready = GC.AllocateArray<byte>(capacity * LibC.SIZEOF_epoll_event, pinned: true);
        _registered = new bool[capacity];
        int fd = LibC.epoll_create1(LibC.EPOLL_CLOEXEC);
        if (fd == -1)
            throw Errno.Exception("epoll_create1", Errno.Last, $"wait set for {capacity} events");
        _epoll = new SafeFdHandle(fd);
    }

    protected override void KernelAdd(int position)
    {
        if (RequestedBits(position) != 0)
            Control(LibC.EPOLL_CTL_ADD, position);
    }

    protected override void KernelModify(int position, WaitEvents oldEvents)
    {
        bool on = RequestedBits(position) != 0;
        if (on)
            Control(_registered[position] ? LibC.EPOLL_CTL_MOD : LibC.EPOLL_CTL_ADD, position);
        else if (_registered[position])
            Control(LibC.EPOLL_CTL_DEL, position);
    }

    private void Control(int op, int position)
    {
        byte* ev = stackalloc byte[16];
        LibC.SetEpollEvent(ev, (ushort)RequestedBits(position), (ulong)position);
        if (LibC.epoll_ctl(_epoll.Fd, op, FdAt(position), ev) == -1)
        {
            string what = op switch { LibC.EPOLL_CTL_ADD => "EPOLL_CTL_ADD", LibC.EPOLL_CTL_MOD => "EPOLL_CTL_MOD", _ => "EPOLL_CTL_DEL" };
            throw Errno.Exception("epoll_ctl", Errno.Last, $"{what} of fd {FdAt(position)} at wait set position {position} ({KindAt(position)}, {EventsAt(position)})");
        }
        _registered[position] = op != LibC.EPOLL_CTL_DEL;
    }

    protected override int KernelWait(int timeoutMs, Span<WaitEvent> occurred)
    {
        int ready;
        fixed (byte* events = _ready)
        {
            ready = LibC.epoll_wait(_epoll.Fd, events, Math.Min(occurred.Length, Capacity), timeoutMs);
            if (ready == -1)
            {
                int e = Errno.Last;
                if (e == Errno.EINTR)
                    return 0;
                throw Errno.Exception("epoll_wait", e, $"waiting on {Count} events for up to {timeoutMs} ms");
            }
            int n = 0;
            for (int i = 0; i < ready; i++)
            {
                byte* ev = LibC.EpollEventAt(events, i);
                int position = (int)LibC.EpollData(ev);
                WaitEvents got = Translate(position, (int)LibC.EpollEvents(ev));
                if (got != WaitEvents.None)
                    occurred[n++] = new WaitEvent(position, got, FdAt(position));
            }
            return n;
        }
    }

    protected override void KernelDispose() => _epoll.Dispose();
}
