/*-------------------------------------------------------------------------
 * UnixWaitSet.cs
 *   What the Unix wait sets (epoll on Linux, poll and select in the Posix
 *   backend) have in common: the table of watched descriptors, argument
 *   checks, the timeout loop, and the translation of kernel readiness bits
 *   into WaitEvents.
 *
 * NOTES
 *   Positions are handed out in Add order and never reused (a wait set
 *   only grows, as PostgreSQL's WaitEventSet does); Modify changes what a
 *   position watches, and WaitEvents.None switches it off without freeing
 *   it. Every table is sized to the capacity in the constructor, so Add,
 *   Modify and Wait allocate nothing.
 *
 *   Readiness is expressed in poll(2) bits for all three kernels (epoll's
 *   EPOLLIN/OUT/ERR/HUP/RDHUP have the same values as Linux's POLL*; select
 *   is turned into POLLIN / POLLOUT). The mapping follows PostgreSQL's
 *   WaitEventSetWaitBlock: an error or hang-up makes a socket both readable
 *   and writeable, so that the caller's read or write reports the error.
 *   WL_SOCKET_CLOSED comes from POLLRDHUP where the kernel has it (epoll,
 *   Linux poll); elsewhere, when the socket is readable, from a one-byte
 *   recv(MSG_PEEK | MSG_DONTWAIT) that returns 0. A socket asking only for
 *   Closed under select is watched for readability, so pending unread data
 *   makes every wait return at once with nothing to report until the
 *   deadline; PostgreSQL does not offer WL_SOCKET_CLOSED there at all.
 *
 *   A latch is reported only after its wake object was drained, so a set
 *   latch cannot make the next wait return at once. Supervisor watches are
 *   reported on any readiness (pidfd: readable; lifeline FIFO: hang-up;
 *   an already-dead watch's eventfd: readable). A watch with no descriptor
 *   (WaitHandle -1: the supervisor left no lifeline, or pidfd_open is
 *   unavailable) is polled with IsSupervisorDead, so a wait holding one
 *   sleeps at most PollingIntervalMs at a time.
 *
 *   Wait's timeout: -1 forever, 0 poll once, else a deadline taken from
 *   Stopwatch ticks; a kernel wait cut short by a signal (EINTR), or one
 *   whose only readiness is filtered out, resumes with the time left.
 *
 *   Mirrors PostgreSQL's storage/ipc/waiteventset.c (WaitEventSetWait and
 *   the WaitEventSetWaitBlock variants).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>The descriptor table and Wait loop of a Unix wait set; subclasses own the kernel object.</summary>
internal abstract unsafe class UnixWaitSet : IPlatformWaitSet
{
    /// <summary>Longest single sleep while a descriptor-less supervisor watch is in the set.</summary>
    internal const int PollingIntervalMs = 1000;

    protected enum EntryKind : byte
    {
        Latch = 1,
        Socket = 2,
        Supervisor = 3,
    }

    private readonly EntryKind[] _kinds;
    private readonly int[] _fds;
    private readonly WaitEvents[] _events;
    private readonly ILatchOwner?[] _latches;
    private readonly ISupervisorWatch?[] _watches;
    private readonly bool _kernelReportsRdHup;
    private int _pollingWatches;
    private bool _disposed;

    /// <param name="capacity">The number of events the set can hold.</param>
    /// <param name="kernelReportsRdHup">The kernel reports POLLRDHUP / EPOLLRDHUP when asked for it.</param>
    protected UnixWaitSet(int capacity, bool kernelReportsRdHup)
    {
        LatchArgs.CheckCapacity(capacity);
        Capacity = capacity;
        _kinds = new EntryKind[capacity];
        _fds = new int[capacity];
        _events = new WaitEvents[capacity];
        _latches = new ILatchOwner?[capacity];
        _watches = new ISupervisorWatch?[capacity];
        _kernelReportsRdHup = kernelReportsRdHup;
    }

    public int Capacity { get; }

    public int Count { get; private set; }

    protected EntryKind KindAt(int position) => _kinds[position];

    protected int FdAt(int position) => _fds[position];

    protected WaitEvents EventsAt(int position) => _events[position];

    protected bool KernelReportsRdHup => _kernelReportsRdHup;

    public int AddLatch(ILatchOwner latch)
    {
        ArgumentNullException.ThrowIfNull(latch);
        return Add(EntryKind.Latch, Descriptor(latch.WaitHandle, nameof(latch)), WaitEvents.LatchSet, latch, null);
    }

    public int AddSocket(nint socket, WaitEvents events)
    {
        LatchArgs.CheckSocketEvents(events);
        return Add(EntryKind.Socket, Descriptor(socket, nameof(socket)), events, null, null);
    }

    public int AddSupervisorWatch(ISupervisorWatch watch)
    {
        ArgumentNullException.ThrowIfNull(watch);
        // -1: a watch with nothing to wait on, polled (see the banner).
        int fd = watch.WaitHandle == -1 ? -1 : Descriptor(watch.WaitHandle, nameof(watch));
        return Add(EntryKind.Supervisor, fd, WaitEvents.SupervisorDeath, null, watch);
    }

    public int AddHandle(nint handle)
        => throw new PlatformNotSupportedException("wait sets watch Windows handles only on Windows; on Unix use AddSocket with a descriptor");

    public void Modify(int position, WaitEvents events)
    {
        CheckOpen();
        LatchArgs.CheckPosition(position, Count);
        WaitEvents allowed = _kinds[position] switch
        {
            EntryKind.Latch => WaitEvents.LatchSet,
            EntryKind.Supervisor => WaitEvents.SupervisorDeath,
            _ => LatchArgs.SocketEvents,
        };
        if ((events & ~allowed) != 0)
            throw new ArgumentException($"position {position} ({_kinds[position]}) can wait only for {allowed} (or None), not {events}", nameof(events));
        WaitEvents old = _events[position];
        if (old == events)
            return;
        _events[position] = events;
        if (_fds[position] < 0)
        {
            // A polled supervisor watch: nothing in the kernel.
            _pollingWatches += events == WaitEvents.None ? -1 : old == WaitEvents.None ? 1 : 0;
            return;
        }
        try
        {
            KernelModify(position, old);
        }
        catch
        {
            _events[position] = old;
            throw;
        }
    }

    private int Add(EntryKind kind, int fd, WaitEvents events, ILatchOwner? latch, ISupervisorWatch? watch)
    {
        CheckOpen();
        LatchArgs.CheckRoom(Count, Capacity);
        int position = Count;
        _kinds[position] = kind;
        _fds[position] = fd;
        _events[position] = events;
        _latches[position] = latch;
        _watches[position] = watch;
        if (fd >= 0)
        {
            try
            {
                KernelAdd(position);
            }
            catch
            {
                _latches[position] = null;
                _watches[position] = null;
                throw;
            }
        }
        else if (events != WaitEvents.None)
        {
            _pollingWatches++;
        }
        Count = position + 1;
        return position;
    }

    private static int Descriptor(nint value, string paramName)
    {
        if (value < 0 || value > int.MaxValue)
            throw new ArgumentOutOfRangeException(paramName, value, "not a file descriptor");
        return (int)value;
    }

    /// <summary>Registers position (its fd is &gt;= 0; its events may be None) with the kernel object.</summary>
    protected abstract void KernelAdd(int position);

    /// <summary>Makes the kernel watch EventsAt(position) instead of <paramref name="oldEvents"/> (either may be None). Only for fd &gt;= 0.</summary>
    protected abstract void KernelModify(int position, WaitEvents oldEvents);

    /// <summary>
    /// One kernel wait of up to <paramref name="timeoutMs"/> (-1 forever): fills <paramref name="occurred"/> through
    /// <see cref="Translate"/> and returns how many; 0 on timeout, on EINTR, or when nothing was reportable.
    /// </summary>
    protected abstract int KernelWait(int timeoutMs, Span<WaitEvent> occurred);

    /// <summary>Releases the kernel object.</summary>
    protected abstract void KernelDispose();

    public int Wait(int timeoutMs, Span<WaitEvent> occurred)
    {
        CheckOpen();
        if (timeoutMs < -1)
            throw new ArgumentOutOfRangeException(nameof(timeoutMs), timeoutMs, "the timeout must be -1 (forever), 0 (poll) or positive");
        if (occurred.IsEmpty)
            throw new ArgumentException("the span for occurred events is empty", nameof(occurred));
        long start = timeoutMs > 0 ? Stopwatch.GetTimestamp() : 0;
        int remaining = timeoutMs;
        while (true)
        {
            int slice = remaining;
            if (_pollingWatches > 0 && (uint)slice > PollingIntervalMs)
                slice = PollingIntervalMs; // also caps -1 (forever)
            int n = KernelWait(slice, occurred);
            if (_pollingWatches > 0 && n < occurred.Length)
                n += ReportPollingWatches(occurred[n..]);
            if (n > 0 || remaining == 0)
                return n;
            if (remaining > 0)
            {
                long elapsedMs = (long)Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                if (elapsedMs >= timeoutMs)
                    return 0;
                remaining = (int)(timeoutMs - elapsedMs);
            }
        }
    }

    private int ReportPollingWatches(Span<WaitEvent> occurred)
    {
        int n = 0;
        for (int i = 0; i < Count && n < occurred.Length; i++)
        {
            if (_kinds[i] == EntryKind.Supervisor && _fds[i] < 0 && _events[i] != WaitEvents.None && _watches[i]!.IsSupervisorDead)
                occurred[n++] = new WaitEvent(i, WaitEvents.SupervisorDeath, -1);
        }
        return n;
    }

    /// <summary>The kernel's bits to ask for position's current events (0 when switched off).</summary>
    protected short RequestedBits(int position)
    {
        WaitEvents e = _events[position];
        if (e == WaitEvents.None)
            return 0;
        if (_kinds[position] != EntryKind.Socket)
            return LibC.POLLIN;
        short bits = 0;
        if ((e & WaitEvents.SocketReadable) != 0)
            bits |= LibC.POLLIN;
        if ((e & (WaitEvents.SocketWriteable | WaitEvents.SocketConnected)) != 0)
            bits |= LibC.POLLOUT;
        if ((e & WaitEvents.SocketClosed) != 0)
            bits |= _kernelReportsRdHup ? LibC.POLLRDHUP : LibC.POLLIN;
        return bits;
    }

    /// <summary>
    /// What position reports for the kernel's readiness bits <paramref name="revents"/> (poll values); drains a
    /// ready latch. None when nothing it asked for happened.
    /// </summary>
    protected WaitEvents Translate(int position, int revents)
    {
        WaitEvents want = _events[position];
        if (want == WaitEvents.None || revents == 0)
            return WaitEvents.None;
        if ((revents & LibC.POLLNVAL) != 0)
            throw Errno.Exception("poll", Errno.EBADF, $"wait set position {position} ({_kinds[position]}) watches fd {_fds[position]}, which is not open");
        const int AnyReady = LibC.POLLIN | LibC.POLLERR | LibC.POLLHUP;
        switch (_kinds[position])
        {
            case EntryKind.Latch:
                if ((revents & AnyReady) == 0)
                    return WaitEvents.None;
                _latches[position]!.Drain();
                return WaitEvents.LatchSet;
            case EntryKind.Supervisor:
                return (revents & AnyReady) != 0 ? WaitEvents.SupervisorDeath : WaitEvents.None;
            default:
                WaitEvents got = WaitEvents.None;
                if ((want & WaitEvents.SocketReadable) != 0 && (revents & AnyReady) != 0)
                    got |= WaitEvents.SocketReadable;
                if ((want & (WaitEvents.SocketWriteable | WaitEvents.SocketConnected)) != 0 && (revents & (LibC.POLLOUT | LibC.POLLERR | LibC.POLLHUP)) != 0)
                    got |= want & (WaitEvents.SocketWriteable | WaitEvents.SocketConnected);
                if ((want & WaitEvents.SocketClosed) != 0)
                {
                    if ((revents & (LibC.POLLRDHUP | LibC.POLLERR | LibC.POLLHUP)) != 0
                        || (!_kernelReportsRdHup && (revents & LibC.POLLIN) != 0 && PeerClosed(_fds[position])))
                        got |= WaitEvents.SocketClosed;
                }
                return got;
        }
    }

    /// <summary>True when a readable socket has nothing more to read: its peer shut down its writing half.</summary>
    private static bool PeerClosed(int fd)
    {
        byte b;
        return LibC.recv(fd, &b, 1, LibC.MSG_PEEK | LibC.MSG_DONTWAIT) == 0;
    }

    private void CheckOpen() => ObjectDisposedException.ThrowIf(_disposed, this);

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        KernelDispose();
        Array.Clear(_latches);
        Array.Clear(_watches);
    }
}
