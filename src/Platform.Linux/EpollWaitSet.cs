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
 *   fills is allocated once with the set, pinned, sized to the capacity.
 *   The constants, struct epoll_event, epoll_create1 and epoll_ctl are
 *   Tmds.LibC's: it ships one assembly per architecture, so the struct is
 *   12 bytes (packed) on x86_64 and 16 elsewhere as the kernel has it.
 *   epoll_wait, on every WaitLatch, is our own binding: Tmds.LibC's
 *   measured slower (see Interop/LibC.epoll.cs). An fd closed while
 *   registered leaves the epoll set by itself (when its last reference
 *   closes).
 *
 *   Mirrors PostgreSQL's WaitEventAdjustEpoll / WaitEventSetWaitBlock
 *   (WAIT_USE_EPOLL) in waiteventset.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Platform.Posix;
using Tmds.Linux;
using TmdsLibC = Tmds.Linux.LibC;

namespace PgIpc.Platform.Linux;

/// <summary>A wait set over epoll.</summary>
internal sealed unsafe class EpollWaitSet : UnixWaitSet
{
    private readonly SafeFdHandle _epoll;
    /// <summary>Capacity epoll_events, filled by epoll_wait; pinned. Bytes, so that no field of this class has a
    /// Tmds.LibC type (the assembly exists only on Linux; the type loads wherever the backend is listed).</summary>
    private readonly byte[] _ready;
    /// <summary>Whether position i is in the epoll set now (switched-off positions are not).</summary>
    private readonly bool[] _registered;

    public EpollWaitSet(int capacity) : base(capacity, kernelReportsRdHup: true)
    {
        _ready = GC.AllocateArray<byte>(capacity * sizeof(epoll_event), pinned: true);
        _registered = new bool[capacity];
        int fd = TmdsLibC.epoll_create1(TmdsLibC.EPOLL_CLOEXEC);
        if (fd == -1)
            throw Errno.Exception("epoll_create1", Errno.Last, $"wait set for {capacity} events");
        _epoll = new SafeFdHandle(fd);
    }

    protected override void KernelAdd(int position)
    {
        if (RequestedBits(position) != 0)
            Control(TmdsLibC.EPOLL_CTL_ADD, "EPOLL_CTL_ADD", position);
    }

    protected override void KernelModify(int position, WaitEvents oldEvents)
    {
        bool on = RequestedBits(position) != 0;
        if (on)
        {
            if (_registered[position])
                Control(TmdsLibC.EPOLL_CTL_MOD, "EPOLL_CTL_MOD", position);
            else
                Control(TmdsLibC.EPOLL_CTL_ADD, "EPOLL_CTL_ADD", position);
        }
        else if (_registered[position])
        {
            Control(TmdsLibC.EPOLL_CTL_DEL, "EPOLL_CTL_DEL", position);
        }
    }

    private void Control(int op, string what, int position)
    {
        // The requested bits are poll's POLL* values, which equal EPOLL* on Linux (UnixWaitSet relies on it).
        var ev = new epoll_event { events = (ushort)RequestedBits(position) };
        ev.data.u64 = (ulong)position;
        if (TmdsLibC.epoll_ctl(_epoll.Fd, op, FdAt(position), &ev) == -1)
            throw Errno.Exception("epoll_ctl", Errno.Last, $"{what} of fd {FdAt(position)} at wait set position {position} ({KindAt(position)}, {EventsAt(position)})");
        _registered[position] = op != TmdsLibC.EPOLL_CTL_DEL;
    }

    protected override int KernelWait(int timeoutMs, Span<WaitEvent> occurred)
    {
        int ready;
        fixed (byte* bytes = _ready)
        {
            var events = (epoll_event*)bytes;
            // Our binding, not Tmds.LibC's: about 5% (+15 ns) cheaper per call (Interop/LibC.epoll.cs).
            ready = Interop.LibC.epoll_wait(_epoll.Fd, events, Math.Min(occurred.Length, Capacity), timeoutMs);
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
                int position = (int)events[i].data.u64;
                WaitEvents got = Translate(position, events[i].events);
                if (got != WaitEvents.None)
                    occurred[n++] = new WaitEvent(position, got, FdAt(position));
            }
            return n;
        }
    }

    protected override void KernelDispose() => _epoll.Dispose();

    // The two below are for tests. Not inlined: Tmds.LibC's assembly exists only on Linux, and a caller compiled
    // elsewhere (the tests under Wine) must not resolve its types.

    /// <summary>sizeof(struct epoll_event) as Tmds.LibC's assembly for this architecture lays it out.</summary>
    internal static int EventSize
    {
        [MethodImpl(MethodImplOptions.NoInlining)]
        get => sizeof(epoll_event);
    }

    /// <summary>The offset of epoll_event.data.</summary>
    internal static int DataOffset
    {
        [MethodImpl(MethodImplOptions.NoInlining)]
        get
        {
            epoll_event ev = default;
            return (int)((byte*)&ev.data - (byte*)&ev);
        }
    }
}
