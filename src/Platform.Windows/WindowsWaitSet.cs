/*-------------------------------------------------------------------------
 * WindowsWaitSet.cs
 *   The kernel side of a WaitEventSet on Windows: WaitForMultipleObjects
 *   over latch events, socket events (WSAEventSelect), the supervisor's
 *   process handle and arbitrary HANDLEs.
 *
 * NOTES
 *   A position is the order of the Add call and never changes. The handles
 *   of the positions that are switched on are kept, in position order, in a
 *   pinned array of at most MAXIMUM_WAIT_OBJECTS (64) entries, rebuilt by
 *   Add and Modify (never by Wait); a parallel array maps an index in it
 *   back to its position.
 *
 *   WaitForMultipleObjects(bWaitAll = FALSE) reports only the lowest
 *   signalled index and changes only that object's state. To report several
 *   events from one wait, every later handle is then polled with a
 *   zero-timeout WaitForSingleObject while the caller's span has room. A
 *   poll is a wait: it resets an auto-reset latch event (the latch is then
 *   reported, already drained, as the contract asks) and would take a unit
 *   of a semaphore or a mutex given to AddHandle, exactly as the main wait
 *   does for the first index; nothing is polled once the span is full, so
 *   nothing is consumed without being reported. A process handle and the
 *   "dead already" event stay signalled, so the supervisor's death is
 *   reported by every wait.
 *
 *   Sockets (as PostgreSQL's WAIT_USE_WIN32): each gets a manual-reset event
 *   from WSACreateEvent and WSAEventSelect(socket, event, mask), where
 *   Readable asks FD_READ | FD_ACCEPT, Writeable FD_WRITE | FD_CONNECT,
 *   Connected FD_CONNECT, and FD_CLOSE is always asked (EOF and errors).
 *   When the event is signalled WSAEnumNetworkEvents reads and clears the
 *   socket's record and resets the event; FD_CLOSE reports every socket
 *   event asked for (the caller's next call meets the EOF or the error).
 *   Winsock records most network events only once until the matching call
 *   re-enables them (recv for FD_READ, accept for FD_ACCEPT; FD_CLOSE never
 *   again), and FD_WRITE only after a send failed with WSAEWOULDBLOCK. So,
 *   as PostgreSQL does, before each wait: a socket reported readable by the
 *   previous wait is selected again (which records any event that is true
 *   now); a stream socket asked for Readable is peeked (recv of one byte,
 *   MSG_PEEK: data or EOF is ready now, even if its FD_READ or FD_CLOSE went
 *   to another set); one asked for Writeable is sent zero bytes (success, or
 *   an error other than WSAEWOULDBLOCK and WSAENOTCONN, is ready now). When
 *   a probe finds a socket ready nothing blocks: every active handle is
 *   polled in position order instead, while the span has room, and a
 *   socket is reported with what its probe and its record found together.
 *   Position order (not probes first) keeps a socket that stays readable
 *   from hiding a latch at a lower position when the span holds only one.
 *   Datagram sockets are not probed (a zero-byte send is a datagram).
 *   WSAEventSelect makes the socket non-blocking, which is the only way the
 *   probes are safe; Dispose cancels the association (the socket stays
 *   non-blocking) and closes the events the set made, never the sockets,
 *   latches, watches or handles it was given.
 *
 *   Waits are non-alertable, so they are never interrupted; a wake-up that
 *   yields nothing to report (a socket event whose record is empty) waits
 *   again for the time left. Waiting allocates nothing.
 *
 *   Mirrors WaitEventAdjustWin32 / WaitEventSetWaitBlock in PostgreSQL's
 *   src/backend/storage/ipc/waiteventset.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using Win = PgIpc.Platform.Windows.Interop.Windows;

namespace PgIpc.Platform.Windows;

/// <summary>A WSACreateEvent event; WSACloseEvent on release.</summary>
internal sealed class SafeWsaEventHandle : SafeHandle
{
    public SafeWsaEventHandle() : base(0, ownsHandle: true)
    {
    }

    public SafeWsaEventHandle(nint h) : base(0, ownsHandle: true) => SetHandle(h);

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle() => Win.WSACloseEvent(handle) != 0;
}

/// <summary>WaitForMultipleObjects over up to 64 handles, with polling to report several events per wait.</summary>
internal sealed unsafe class WindowsWaitSet : IPlatformWaitSet
{
    private const WaitEvents SocketEvents = LatchArgs.SocketEvents;

    private enum Kind : byte
    {
        Latch,
        Socket,
        Supervisor,
        Handle,
    }

    /// <summary>One position. Written by Add/Modify/Wait, all on the set's one thread.</summary>
    private struct Entry
    {
        public Kind Kind;
        /// <summary>What is watched now; None when switched off.</summary>
        public WaitEvents Events;
        /// <summary>What WaitForMultipleObjects waits on (a socket's WSA event).</summary>
        public nint WaitHandle;
        /// <summary>The socket (sockets), or WaitHandle: what WaitEvent.Handle reports.</summary>
        public nint Reported;
        /// <summary>Sockets: SOCK_STREAM, so the readiness probes apply.</summary>
        public bool Stream;
        /// <summary>Sockets: reported readable by the last wait; select it again before the next.</summary>
        public bool Reselect;
        /// <summary>Sockets: what this round's probes found ready (None if nothing, or not probed).</summary>
        public WaitEvents Probed;
    }

    private readonly Entry[] _entries;
    private readonly SafeWsaEventHandle?[] _socketEvents;
    /// <summary>The active positions' wait handles, in position order (pinned: its address goes to the kernel).</summary>
    private readonly nint[] _handles;
    /// <summary>_positions[i] is the position whose handle is _handles[i].</summary>
    private readonly int[] _positions;
    private int _count;
    private int _active;
    private bool _sockets;
    private bool _disposed;

    public WindowsWaitSet(int capacity)
    {
        LatchArgs.CheckCapacity(capacity);
        if (capacity > Win.MAXIMUM_WAIT_OBJECTS)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity,
                $"a Windows wait set holds 1 to {Win.MAXIMUM_WAIT_OBJECTS} events (MAXIMUM_WAIT_OBJECTS, the most WaitForMultipleObjects takes)");
        _entries = new Entry[capacity];
        _socketEvents = new SafeWsaEventHandle?[capacity];
        _handles = GC.AllocateArray<nint>(capacity, pinned: true);
        _positions = new int[capacity];
    }

    public int Capacity => _entries.Length;

    public int Count => _count;

    public int AddLatch(ILatchOwner latch)
    {
        ArgumentNullException.ThrowIfNull(latch);
        return Add(Kind.Latch, WaitEvents.LatchSet, latch.WaitHandle, latch.WaitHandle);
    }

    public int AddSupervisorWatch(ISupervisorWatch watch)
    {
        ArgumentNullException.ThrowIfNull(watch);
        return Add(Kind.Supervisor, WaitEvents.SupervisorDeath, watch.WaitHandle, watch.WaitHandle);
    }

    public int AddHandle(nint handle)
    {
        if (handle == 0 || handle == -1)
            throw new ArgumentException($"0x{handle:x} is not a handle that can be waited on", nameof(handle));
        return Add(Kind.Handle, WaitEvents.HandleSignaled, handle, handle);
    }

    public int AddSocket(nint socket, WaitEvents events)
    {
        LatchArgs.CheckSocketEvents(events);
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckRoom();
        int type = 0, len = sizeof(int);
        if (Win.getsockopt(socket, Win.SOL_SOCKET, Win.SO_TYPE, (byte*)&type, &len) == Win.SOCKET_ERROR)
        {
            int err = Marshal.GetLastPInvokeError();
            throw Win.Exception("getsockopt", err, $"SO_TYPE of socket 0x{socket:x} being added to a wait set");
        }
        nint ev = Win.WSACreateEvent();
        if (ev == Win.WSA_INVALID_EVENT)
        {
            int err = Marshal.GetLastPInvokeError();
            throw Win.Exception("WSACreateEvent", err, $"for socket 0x{socket:x}");
        }
        var safe = new SafeWsaEventHandle(ev);
        if (Win.WSAEventSelect(socket, ev, NetworkEvents(events)) == Win.SOCKET_ERROR)
        {
            int err = Marshal.GetLastPInvokeError();
            safe.Dispose();
            throw Win.Exception("WSAEventSelect", err, $"socket 0x{socket:x} for {events}");
        }
        int pos = _count;
        _socketEvents[pos] = safe;
        _entries[pos] = new Entry { Kind = Kind.Socket, Events = events, WaitHandle = ev, Reported = socket, Stream = type == Win.SOCK_STREAM };
        _count = pos + 1;
        _sockets = true;
        Rebuild();
        return pos;
    }

    private int Add(Kind kind, WaitEvents events, nint waitHandle, nint reported)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckRoom();
        int pos = _count;
        _entries[pos] = new Entry { Kind = kind, Events = events, WaitHandle = waitHandle, Reported = reported };
        _count = pos + 1;
        Rebuild();
        return pos;
    }

    private void CheckRoom() => LatchArgs.CheckRoom(_count, _entries.Length);

    /// <summary>The FD_* mask for <paramref name="events"/>: FD_CLOSE always (EOF and errors), 0 for None (switched off).</summary>
    private static int NetworkEvents(WaitEvents events)
    {
        if (events == WaitEvents.None)
            return 0;
        int mask = Win.FD_CLOSE;
        if ((events & WaitEvents.SocketReadable) != 0)
            mask |= Win.FD_READ | Win.FD_ACCEPT;
        if ((events & WaitEvents.SocketWriteable) != 0)
            mask |= Win.FD_WRITE | Win.FD_CONNECT;
        if ((events & WaitEvents.SocketConnected) != 0)
            mask |= Win.FD_CONNECT;
        return mask;
    }

    public void Modify(int position, WaitEvents events)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        LatchArgs.CheckPosition(position, _count);
        ref Entry e = ref _entries[position];
        if (e.Kind == Kind.Socket)
        {
            LatchArgs.CheckSocketEvents(events);
            if (Win.WSAEventSelect(e.Reported, e.WaitHandle, NetworkEvents(events)) == Win.SOCKET_ERROR)
            {
                int err = Marshal.GetLastPInvokeError();
                throw Win.Exception("WSAEventSelect", err, $"socket 0x{e.Reported:x} at position {position} for {events}");
            }
            e.Reselect = false;
        }
        else
        {
            WaitEvents own = e.Kind switch
            {
                Kind.Latch => WaitEvents.LatchSet,
                Kind.Supervisor => WaitEvents.SupervisorDeath,
                _ => WaitEvents.HandleSignaled,
            };
            if (events != WaitEvents.None && events != own)
                throw new ArgumentException($"position {position} ({e.Kind}) can only be switched on ({own}) or off (None), not {events}", nameof(events));
        }
        e.Events = events;
        Rebuild();
    }

    private void Rebuild()
    {
        int n = 0;
        for (int pos = 0; pos < _count; pos++)
        {
            if (_entries[pos].Events == WaitEvents.None)
                continue;
            _handles[n] = _entries[pos].WaitHandle;
            _positions[n] = pos;
            n++;
        }
        _active = n;
    }

    public int Wait(int timeoutMs, Span<WaitEvent> occurred)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (occurred.Length == 0)
            throw new ArgumentException("room for at least one event is needed", nameof(occurred));
        long deadline = timeoutMs > 0 ? Environment.TickCount64 + timeoutMs : 0;
        uint ms = timeoutMs < 0 ? Win.INFINITE : (uint)timeoutMs;
        while (true)
        {
            int n;
            if (_sockets && ProbeSockets() > 0)
            {
                // Something is ready already: do not block, collect in position order what else is signalled.
                n = Sweep(0, occurred, 0);
            }
            else
            {
                if (_active == 0)
                {
                    if (timeoutMs < 0)
                        throw new InvalidOperationException("the wait set has nothing switched on to wait for, and no timeout");
                    Thread.Sleep((int)ms);
                    return 0;
                }
                uint r;
                fixed (nint* handles = _handles)
                    r = Win.WaitForMultipleObjects((uint)_active, handles, 0, ms);
                if (r == Win.WAIT_TIMEOUT)
                    return 0;
                int first;
                if (r < Win.WAIT_OBJECT_0 + (uint)_active)
                    first = (int)(r - Win.WAIT_OBJECT_0);
                else if (r >= Win.WAIT_ABANDONED_0 && r < Win.WAIT_ABANDONED_0 + (uint)_active)
                    first = (int)(r - Win.WAIT_ABANDONED_0); // a mutex given to AddHandle, acquired from an owner that died
                else
                    throw WaitFailed(r);
                // The wait changed the first handle's state (reset a latch event): report it whatever comes after.
                n = Report(first, occurred, 0);
                n = Sweep(first + 1, occurred, n);
            }
            if (n > 0)
                return n;
            // Nothing to report (a socket event with an empty record): wait again for the time left.
            if (timeoutMs == 0)
                return 0;
            if (timeoutMs > 0)
            {
                long left = deadline - Environment.TickCount64;
                if (left <= 0)
                    return 0;
                ms = (uint)left;
            }
        }
    }

    private PgIpcOsException WaitFailed(uint r)
    {
        int err = Marshal.GetLastPInvokeError();
        if (r == Win.WAIT_FAILED)
            return Win.Exception("WaitForMultipleObjects", err, $"waiting on {_active} handles of a wait set");
        return new PgIpcOsException("WaitForMultipleObjects", (int)r, $"0x{r:x}", $"unexpected result waiting on {_active} handles of a wait set");
    }

    /// <summary>
    /// Polls the active handles from index <paramref name="from"/> on, in position order, while
    /// <paramref name="occurred"/> has room: each signalled one is reported (the poll consumed it), and a socket
    /// the probes found ready is reported even when its event is not signalled.
    /// </summary>
    private int Sweep(int from, Span<WaitEvent> occurred, int n)
    {
        for (int i = from; i < _active && n < occurred.Length; i++)
        {
            uint p = Win.WaitForSingleObject(_handles[i], 0);
            if (p == Win.WAIT_OBJECT_0 || p == Win.WAIT_ABANDONED_0)
            {
                n = Report(i, occurred, n);
                continue;
            }
            int pos = _positions[i];
            ref Entry e = ref _entries[pos];
            if (e.Kind == Kind.Socket && e.Probed != WaitEvents.None)
                occurred[n++] = new WaitEvent(pos, e.Probed, e.Reported);
        }
        return n;
    }

    /// <summary>Adds the event of active index <paramref name="index"/> (its handle was signalled and waited on) to <paramref name="occurred"/>[n] when there is one.</summary>
    private int Report(int index, Span<WaitEvent> occurred, int n)
    {
        int pos = _positions[index];
        ref Entry e = ref _entries[pos];
        WaitEvents what = e.Kind switch
        {
            Kind.Latch => WaitEvents.LatchSet,
            Kind.Supervisor => WaitEvents.SupervisorDeath,
            Kind.Handle => WaitEvents.HandleSignaled,
            _ => SocketEventsOccurred(ref e) | e.Probed,
        };
        if (what == WaitEvents.None)
            return n;
        occurred[n] = new WaitEvent(pos, what, e.Reported);
        return n + 1;
    }

    /// <summary>Reads and clears the socket's record (resetting its event) and maps it to the events asked for.</summary>
    private static WaitEvents SocketEventsOccurred(ref Entry e)
    {
        Win.WSANETWORKEVENTS ne;
        if (Win.WSAEnumNetworkEvents(e.Reported, e.WaitHandle, &ne) == Win.SOCKET_ERROR)
        {
            // The socket is unusable (closed under the set, WSAENOTSOCK, ...): report what was asked for, so the
            // caller's next call on it meets the error, rather than throw away events already taken from other handles.
            return e.Events;
        }
        int got = ne.lNetworkEvents;
        WaitEvents what = WaitEvents.None;
        if ((got & (Win.FD_READ | Win.FD_ACCEPT)) != 0)
            what |= WaitEvents.SocketReadable;
        if ((got & Win.FD_WRITE) != 0)
            what |= WaitEvents.SocketWriteable;
        if ((got & Win.FD_CONNECT) != 0)
            what |= WaitEvents.SocketConnected | WaitEvents.SocketWriteable;
        if ((got & Win.FD_CLOSE) != 0)
            what |= SocketEvents; // EOF or error: every socket event asked for is "ready"
        what &= e.Events;
        if ((what & WaitEvents.SocketReadable) != 0)
            e.Reselect = true; // FD_READ / FD_ACCEPT come again only after recv / accept: re-arm before the next wait
        return what;
    }

    /// <summary>
    /// Before a wait: re-selects sockets reported readable last time, and probes stream sockets for data, EOF or
    /// room that Winsock will not signal again. Records the findings in each entry's Probed and returns how many
    /// sockets it found ready.
    /// </summary>
    private int ProbeSockets()
    {
        int n = 0;
        for (int pos = 0; pos < _count; pos++)
        {
            ref Entry e = ref _entries[pos];
            if (e.Kind != Kind.Socket)
                continue;
            e.Probed = WaitEvents.None;
            if (e.Events == WaitEvents.None)
                continue;
            if (e.Reselect)
            {
                e.Reselect = false;
                if (Win.WSAEventSelect(e.Reported, e.WaitHandle, NetworkEvents(e.Events)) == Win.SOCKET_ERROR)
                {
                    int err = Marshal.GetLastPInvokeError();
                    throw Win.Exception("WSAEventSelect", err, $"re-arming socket 0x{e.Reported:x} at position {pos} for {e.Events}");
                }
            }
            if (!e.Stream)
                continue;
            WaitEvents ready = WaitEvents.None;
            byte c;
            if ((e.Events & (WaitEvents.SocketReadable | WaitEvents.SocketClosed)) != 0)
            {
                int r = Win.recv(e.Reported, &c, 1, Win.MSG_PEEK);
                if (r > 0)
                    ready |= WaitEvents.SocketReadable;
                else if (r == 0 || IsBroken(Marshal.GetLastPInvokeError()))
                    ready |= WaitEvents.SocketReadable | WaitEvents.SocketClosed; // EOF or reset
            }
            if ((e.Events & WaitEvents.SocketWriteable) != 0)
            {
                if (Win.send(e.Reported, &c, 0, 0) == 0)
                {
                    ready |= WaitEvents.SocketWriteable;
                }
                else
                {
                    int err = Marshal.GetLastPInvokeError();
                    if (err is not (Win.WSAEWOULDBLOCK or Win.WSAENOTCONN))
                        ready |= WaitEvents.SocketWriteable; // the caller's send meets the error
                }
            }
            e.Probed = ready & e.Events;
            if (e.Probed != WaitEvents.None)
                n++;
        }
        return n;
    }

    /// <summary>recv errors that mean the connection is over (reported as readable and closed).</summary>
    private static bool IsBroken(int err)
        => err is Win.WSAECONNRESET or Win.WSAECONNABORTED or Win.WSAENETRESET or Win.WSAESHUTDOWN;

    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        for (int pos = 0; pos < _count; pos++)
        {
            if (_entries[pos].Kind != Kind.Socket)
                continue;
            // Cancel the association so the socket is not left tied to an event about to close. It fails only when
            // the socket's owner already closed it, which leaves nothing to cancel.
            Win.WSAEventSelect(_entries[pos].Reported, 0, 0);
            _socketEvents[pos]?.Dispose();
            _socketEvents[pos] = null;
        }
        _active = 0;
    }
}
