/*-------------------------------------------------------------------------
 * PosixWaitSets.cs
 *   The Posix backend's wait sets: poll(2) over a pollfd array (the
 *   default), and select(2) over fd_sets (chosen once, by
 *   PosixLatchProvider's constructor flag).
 *
 * NOTES
 *   poll: one pollfd per position, kept in a pinned array allocated with
 *   the set (its address is stable, nothing is allocated per wait); a
 *   position switched off has fd -1, which poll skips. POLLRDHUP is asked
 *   for on Linux only.
 *
 *   select: the fd_sets are rebuilt from the table on every wait (select
 *   rewrites them), as locals on the stack. Descriptors must be below
 *   FD_SETSIZE (1024); Add refuses others. There is no POLLHUP: a FIFO
 *   whose writers are all gone and a socket with an error are readable,
 *   which is how the supervisor's death and errors show.
 *
 *   Both are level-triggered, like PostgreSQL's WAIT_USE_POLL and
 *   WAIT_USE_SELECT-era code (waiteventset.c, latch.c before 9.6 for select).
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>A wait set over poll(2).</summary>
internal sealed unsafe class PosixPollWaitSet : UnixWaitSet
{
    /// <summary>One entry per position; pinned (allocated on the pinned object heap) so poll can take its address.</summary>
    private readonly LibC.pollfd[] _pollfds;

    public PosixPollWaitSet(int capacity) : base(capacity, kernelReportsRdHup: OperatingSystem.IsLinux())
        => _pollfds = GC.AllocateArray<LibC.pollfd>(capacity, pinned: true);

    protected override void KernelAdd(int position) => Fill(position);

    protected override void KernelModify(int position, WaitEvents oldEvents) => Fill(position);

    private void Fill(int position)
    {
        short bits = RequestedBits(position);
        _pollfds[position] = new LibC.pollfd { fd = bits != 0 ? FdAt(position) : -1, events = bits };
    }

    protected override int KernelWait(int timeoutMs, Span<WaitEvent> occurred)
    {
        int ready;
        fixed (LibC.pollfd* fds = _pollfds)
            ready = LibC.poll(fds, (nuint)Count, timeoutMs);
        if (ready == -1)
        {
            int e = Errno.Last;
            if (e == Errno.EINTR)
                return 0;
            throw Errno.Exception("poll", e, $"waiting on {Count} descriptors for up to {timeoutMs} ms");
        }
        int n = 0;
        for (int i = 0; i < Count && ready > 0 && n < occurred.Length; i++)
        {
            short revents = _pollfds[i].revents;
            if (revents == 0)
                continue;
            ready--;
            WaitEvents got = Translate(i, revents);
            if (got != WaitEvents.None)
                occurred[n++] = new WaitEvent(i, got, FdAt(i));
        }
        return n;
    }

    protected override void KernelDispose()
    {
    }
}

/// <summary>A wait set over select(2); descriptors below FD_SETSIZE only.</summary>
internal sealed unsafe class PosixSelectWaitSet : UnixWaitSet
{
    public PosixSelectWaitSet(int capacity) : base(capacity, kernelReportsRdHup: false)
    {
    }

    protected override void KernelAdd(int position)
    {
        int fd = FdAt(position);
        if (fd >= LibC.FD_SETSIZE)
            throw new ArgumentOutOfRangeException(nameof(position), fd, $"select() can watch only descriptors below FD_SETSIZE ({LibC.FD_SETSIZE})");
    }

    protected override void KernelModify(int position, WaitEvents oldEvents)
    {
    }

    protected override int KernelWait(int timeoutMs, Span<WaitEvent> occurred)
    {
        LibC.fd_set readfds, writefds;
        LibC.FD_ZERO(&readfds);
        LibC.FD_ZERO(&writefds);
        int nfds = 0;
        for (int i = 0; i < Count; i++)
        {
            short bits = RequestedBits(i);
            if (bits == 0)
                continue;
            int fd = FdAt(i);
            if ((bits & (LibC.POLLIN | LibC.POLLRDHUP)) != 0)
                LibC.FD_SET(fd, &readfds);
            if ((bits & LibC.POLLOUT) != 0)
                LibC.FD_SET(fd, &writefds);
            nfds = Math.Max(nfds, fd + 1);
        }
        LibC.timeval tv = new() { tv_sec = timeoutMs / 1000, tv_usec = timeoutMs % 1000 * 1000 };
        int ready = LibC.select(nfds, &readfds, &writefds, null, timeoutMs < 0 ? null : &tv);
        if (ready == -1)
        {
            int e = Errno.Last;
            if (e == Errno.EINTR)
                return 0;
            throw Errno.Exception("select", e, $"waiting on {Count} descriptors (nfds {nfds}) for up to {timeoutMs} ms");
        }
        int n = 0;
        for (int i = 0; i < Count && ready > 0 && n < occurred.Length; i++)
        {
            if (RequestedBits(i) == 0)
                continue;
            int fd = FdAt(i);
            int revents = (LibC.FD_ISSET(fd, &readfds) ? LibC.POLLIN : 0) | (LibC.FD_ISSET(fd, &writefds) ? LibC.POLLOUT : 0);
            if (revents == 0)
                continue;
            WaitEvents got = Translate(i, revents);
            if (got != WaitEvents.None)
                occurred[n++] = new WaitEvent(i, got, fd);
        }
        return n;
    }

    protected override void KernelDispose()
    {
    }
}
