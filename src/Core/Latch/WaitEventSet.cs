/*-------------------------------------------------------------------------
 * WaitEventSet.cs
 *   Sleeping until one of several things happens: the latch is set, a
 *   socket is ready, the supervisor dies, a timeout. The latch calls
 *   themselves (SetLatch, ResetLatch, WaitLatch) are in Latches.cs.
 *
 * NOTES
 *   The kernel side (eventfd + epoll, FIFO + poll/select, Event +
 *   WaitForMultipleObjects) is the backend's IPlatformWaitSet; this class
 *   adds the latch protocol, the deadline arithmetic across spurious
 *   wake-ups and the wait-event report. A set belongs to one participant and
 *   one thread; waiting allocates nothing. The latch protocol is described
 *   in Latches.cs; this class performs its Wait step.
 *
 *   Names, PostgreSQL's: WaitEvents are the WL_* flags a wait asks for and
 *   reports; WaitEvent is one event a wait returned (the type the platform
 *   wait set fills; this class adds the user data); WaitEventId is what the
 *   participant shows while it sleeps (wait_event_info, WaitEventId.cs),
 *   named by WaitEventRegistry.cs.
 *
 *   Mirrors src/backend/storage/ipc/waiteventset.c.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.CompilerServices;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Latch;

/// <summary>
/// Things one participant can sleep on together (WaitEventSet): its own latch, sockets, the supervisor's death,
/// Windows handles. Create it once and reuse it; Dispose releases its kernel objects.
/// </summary>
public sealed unsafe class WaitEventSet : IDisposable
{
    private readonly Participant _owner;
    private readonly IPlatformWaitSet _set;
    private readonly WaitEvent[] _raw;
    private readonly object?[] _userData;
    private readonly WaitEvents[] _events;
    private int _latchPosition = -1;
    private int _deathPosition = -1;
    private int _socketsAndHandles;
    private bool _disposed;

    /// <summary>A set for <paramref name="owner"/> (which must be the calling thread's participant when waiting) with room for <paramref name="capacity"/> events.</summary>
    public WaitEventSet(Participant owner, int capacity)
    {
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _owner = owner;
        _set = owner.ProcArray.Latches.CreateWaitSet(capacity);
        _raw = new WaitEvent[capacity];
        _userData = new object?[capacity];
        _events = new WaitEvents[capacity];
    }

    /// <summary>The number of events the set can hold.</summary>
    public int Capacity => _raw.Length;

    /// <summary>Adds the owner's latch (WL_LATCH_SET). At most once.</summary>
    public int AddLatch(object? userData = null)
    {
        ThrowIfDisposed();
        if (_latchPosition >= 0)
            throw new InvalidOperationException("the set already has the latch");
        int pos = _set.AddLatch(_owner.LatchOwner);
        _latchPosition = pos;
        return Remember(pos, WaitEvents.LatchSet, userData);
    }

    /// <summary>Adds a socket (fd on Unix, SOCKET on Windows) for some of Readable, Writeable, Connected, Closed.</summary>
    public int AddSocket(nint socket, WaitEvents events, object? userData = null)
    {
        ThrowIfDisposed();
        const WaitEvents socketEvents = WaitEvents.SocketReadable | WaitEvents.SocketWriteable | WaitEvents.SocketConnected | WaitEvents.SocketClosed;
        if (events == WaitEvents.None || (events & ~socketEvents) != 0)
            throw new ArgumentException($"a socket waits for Readable, Writeable, Connected or Closed, not {events}", nameof(events));
        int pos = _set.AddSocket(socket, events);
        _socketsAndHandles++;
        return Remember(pos, events, userData);
    }

    /// <summary>Adds the supervisor's death (WL_POSTMASTER_DEATH). At most once.</summary>
    public int AddSupervisorDeath(object? userData = null)
    {
        ThrowIfDisposed();
        if (_deathPosition >= 0)
            throw new InvalidOperationException("the set already watches the supervisor");
        int pos = _set.AddSupervisorWatch(_owner.ProcArray.SupervisorWatch);
        _deathPosition = pos;
        return Remember(pos, WaitEvents.SupervisorDeath, userData);
    }

    /// <summary>Adds a Windows HANDLE (WaitForMultipleObjects); other backends refuse.</summary>
    public int AddHandle(nint handle, object? userData = null)
    {
        ThrowIfDisposed();
        int pos = _set.AddHandle(handle);
        _socketsAndHandles++;
        return Remember(pos, WaitEvents.HandleSignaled, userData);
    }

    /// <summary>Changes what is watched at <paramref name="position"/> (ModifyWaitEvent). The latch can be switched off with None.</summary>
    public void Modify(int position, WaitEvents events)
    {
        ThrowIfDisposed();
        if ((uint)position >= (uint)_set.Count)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"the set has {_set.Count} events");
        if (position == _latchPosition)
        {
            if (events is not (WaitEvents.None or WaitEvents.LatchSet))
                throw new ArgumentException("the latch position takes LatchSet or None", nameof(events));
            _events[position] = events;
            return;
        }
        _set.Modify(position, events);
        _events[position] = events;
    }

    private int Remember(int pos, WaitEvents events, object? userData)
    {
        _events[pos] = events;
        _userData[pos] = userData;
        return pos;
    }

    /// <summary>
    /// Sleeps until at least one watched event happens or <paramref name="timeoutMs"/> ms pass (-1: no timeout) and
    /// fills <paramref name="occurred"/>; returns how many (0 means the timeout expired). Never returns early on a
    /// timeout: spurious kernel wake-ups go back to sleep for the remaining time. <paramref name="waitEvent"/>
    /// is shown in the participant's slot while it sleeps.
    /// </summary>
    public int Wait(int timeoutMs, Span<WaitEvent> occurred, WaitEventId waitEvent = default)
    {
        ThrowIfDisposed();
        if (occurred.Length == 0)
            throw new ArgumentException("room for at least one event is needed", nameof(occurred));
        ArgumentOutOfRangeException.ThrowIfLessThan(timeoutMs, -1);
        _owner.ThrowIfLeaveRequested();
        PgProc* proc = _owner.Proc;
        bool watchLatch = _latchPosition >= 0 && _events[_latchPosition] == WaitEvents.LatchSet;
        long start = timeoutMs > 0 ? Stopwatch.GetTimestamp() : 0;
        int remaining = timeoutMs;
        Volatile.Write(ref proc->WaitEventInfo, waitEvent.Value);
        try
        {
            while (true)
            {
                if (watchLatch)
                {
                    // Dekker pair with SetLatch: raise MaybeSleeping, fence, then look at IsSet.
                    Volatile.Write(ref proc->Latch.MaybeSleeping, 1);
                    Interlocked.MemoryBarrier();
                    if (Volatile.Read(ref proc->Latch.IsSet) != 0)
                    {
                        Volatile.Write(ref proc->Latch.MaybeSleeping, 0);
                        // The segment's detach sets the latch of every participant it asks to leave.
                        _owner.ThrowIfLeaveRequested();
                        occurred[0] = new WaitEvent(_latchPosition, WaitEvents.LatchSet, 0, _userData[_latchPosition]);
                        int count = 1;
                        // Report ready sockets and handles too (one non-blocking look). Not for a latch-only set (or
                        // latch + supervisor death, WaitLatch's): a set latch then returns without a system call.
                        if (_socketsAndHandles > 0 && occurred.Length > 1)
                        {
                            int m = _set.Wait(0, _raw.AsSpan(0, Math.Min(_raw.Length, occurred.Length)));
                            for (int i = 0; i < m && count < occurred.Length; i++)
                                if (_raw[i].Position != _latchPosition)
                                    occurred[count++] = _raw[i] with { UserData = _userData[_raw[i].Position] };
                        }
                        return count;
                    }
                }
                int n = _set.Wait(remaining, _raw.AsSpan(0, Math.Min(_raw.Length, occurred.Length)));
                if (watchLatch)
                    Volatile.Write(ref proc->Latch.MaybeSleeping, 0);
                int reported = 0;
                for (int i = 0; i < n && reported < occurred.Length; i++)
                {
                    WaitEvent e = _raw[i];
                    if (e.Position == _latchPosition)
                    {
                        // The kernel object is drained; report the latch only if it really is set (a stale wake-up is not an event).
                        if (!watchLatch || Volatile.Read(ref proc->Latch.IsSet) == 0)
                            continue;
                    }
                    occurred[reported++] = e with { UserData = _userData[e.Position] };
                }
                if (reported > 0)
                    return reported;
                if (timeoutMs == 0)
                    return 0;
                if (timeoutMs > 0)
                {
                    long elapsedMs = (long)Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                    if (elapsedMs >= timeoutMs)
                        return 0;
                    remaining = (int)(timeoutMs - elapsedMs);
                }
            }
        }
        finally
        {
            Volatile.Write(ref proc->WaitEventInfo, 0);
        }
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Releases the set's OS resources (not the latches or sockets it waits on).</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _set.Dispose();
    }
}
