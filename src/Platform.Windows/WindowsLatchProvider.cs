/*-------------------------------------------------------------------------
 * WindowsLatchProvider.cs
 *   Latch wake objects, the supervisor-death watch and process interrupts on
 *   Windows: named auto-reset events, a process handle, and a named event
 *   per listening process with a thread that waits on it.
 *
 * NOTES
 *   Latches. Slot i of set <name> is the auto-reset event
 *   "Local\pgipc.<name>.latch<i>" (the session namespace, as the segment's
 *   mapping and the semaphores). The creator makes every slot's event up
 *   front and keeps its handles, so the events live exactly as long as the
 *   cluster's creator holds the set; Create fails on ERROR_ALREADY_EXISTS,
 *   which is always a live collision (an object goes with its last handle,
 *   there are no leftovers). Other processes open nothing up front (Attach
 *   only checks that slot 0 exists, for an early, clear error).
 *
 *   Own(i) opens the slot's event (SYNCHRONIZE | EVENT_MODIFY_STATE) as a
 *   handle of its own, whose lifetime is the owner's, and drains it: an
 *   auto-reset event is reset by the one wait that sees it signalled, so
 *   Drain is a zero-timeout WaitForSingleObject. The event is the same
 *   object for every owner the slot ever has, so a waker's cached handle is
 *   never stale; a wake-up meant for an earlier owner is drained by Own, and
 *   a wake-up of a slot nobody owns only leaves the event signalled.
 *
 *   Wake(i) is SetEvent on a per-slot handle kept in a preallocated array:
 *   the creator's own handles, or, elsewhere, a handle opened with
 *   EVENT_MODIFY_STATE on the first wake of the slot and published with one
 *   CAS (the loser closes its copy). Only that first open allocates (the
 *   SafeHandle); the name is formatted on the stack, so even a failed open
 *   (the set is gone) allocates nothing. Wake never throws: a bad index, a
 *   closed set or a missing event is a no-op; SetEvent failing on a handle
 *   we hold open is a broken invariant (Environment.FailFast, as Unlock).
 *
 *   Supervisor death. The lifeline is nothing: a process handle opened by
 *   pid (SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION) is signalled when
 *   the process exits, and keeps the process object (and its pid) from being
 *   reused while we hold it. When the pid no longer exists at all
 *   (ERROR_INVALID_PARAMETER), the watch is a manual-reset event created
 *   set: dead from the start. A pid reused by another process before the
 *   watch is made cannot be told apart (PostgreSQL avoids this by
 *   inheriting the postmaster's handle; PgIpc's processes are not all its
 *   children).
 *
 *   Interrupts. A listening process owns the auto-reset event
 *   "Local\pgipc.<name>.sig.<pid>" and a background thread that waits on it
 *   and on an unnamed stop event, running every action registered under
 *   that name after each signal (several SetEvents before the thread runs
 *   coalesce into one round, as signals do; several registrations all run,
 *   as PosixSignalRegistrations do). The last registration's Dispose stops
 *   and joins the thread. Interrupt opens the target's event, sets it and
 *   closes it, allocating nothing; false when there is no such event. The
 *   thread owns the two handles and closes them as it exits, so Dispose may
 *   be called from an action itself.
 *
 *   Mirrors PostgreSQL's port/win32_latch.c-era latch code (latch.c's
 *   WAIT_USE_WIN32: one event per latch, SetEvent to wake) and
 *   port/win32/signal.c (a per-process named event and a dispatch thread,
 *   "pgsignal_<pid>"), with names that carry the cluster.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Win = PgIpc.Platform.Windows.Interop.Windows;

namespace PgIpc.Platform.Windows;

/// <summary>Latches as named auto-reset events, supervisor watch by process handle, interrupts by named event.</summary>
internal sealed unsafe class WindowsLatchProvider : ILatchProvider
{
    internal const string NamePrefix = WindowsSemaphoreProvider.NamePrefix;

    /// <summary>Room for "Local\pgipc." + a 24-character name + ".latch" or ".sig." + 10 digits + NUL.</summary>
    internal const int NameBufferLength = 64;

    public int StorageSize => 0;

    public ILatchWakers Create(string name, nint storage, int stride, int count)
    {
        LatchArgs.Validate(name, storage, stride, count, 0, 1);
        return new WindowsLatchWakers(name, CreateEvents(name, count));
    }

    public ILatchWakers Attach(string name, nint storage, int stride, int count)
    {
        LatchArgs.Validate(name, storage, stride, count, 0, 1);
        var wakers = new WindowsLatchWakers(name, new SafeWaitObjectHandle?[count]);
        int err = wakers.OpenWakeHandle(0);
        if (err != 0)
        {
            wakers.Dispose();
            throw Win.Exception("OpenEventW", err, err == Win.ERROR_FILE_NOT_FOUND
                ? $"latch set \"{name}\" does not exist ({LatchName(name, 0)} not found)"
                : $"opening {LatchName(name, 0)} of latch set \"{name}\"");
        }
        return wakers;
    }

    public IPlatformWaitSet CreateWaitSet(int capacity) => new WindowsWaitSet(capacity);

    /// <summary>Nothing to hold: watchers open this process by pid.</summary>
    public IDisposable CreateLifeline(string name)
    {
        LatchArgs.ValidateName(name);
        return NoLifeline.Instance;
    }

    public ISupervisorWatch WatchSupervisor(string name, int supervisorPid)
    {
        LatchArgs.ValidateName(name);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(supervisorPid);
        nint h = Win.OpenProcess(Win.SYNCHRONIZE | Win.PROCESS_QUERY_LIMITED_INFORMATION, 0, (uint)supervisorPid);
        if (h != 0)
            return new WindowsSupervisorWatch(new SafeWaitObjectHandle(h));
        int err = Marshal.GetLastPInvokeError();
        if (err != Win.ERROR_INVALID_PARAMETER)
            throw Win.Exception("OpenProcess", err, $"watching supervisor pid {supervisorPid} of \"{name}\"");
        // No such process: the supervisor is already dead. A manual-reset event created set stays ready for every wait.
        h = Win.CreateEventW(null, 1, 1, null);
        if (h == 0)
        {
            err = Marshal.GetLastPInvokeError();
            throw Win.Exception("CreateEventW", err, $"making the watch of dead supervisor pid {supervisorPid} of \"{name}\"");
        }
        return new WindowsSupervisorWatch(new SafeWaitObjectHandle(h));
    }

    public IDisposable ListenForInterrupts(string name, Action onInterrupt)
    {
        LatchArgs.ValidateName(name);
        ArgumentNullException.ThrowIfNull(onInterrupt);
        return new WindowsInterruptListener(name, onInterrupt);
    }

    /// <summary>SetEvent on the target's interrupt event. False when it has none (gone, or not listening) or the name is invalid.</summary>
    public bool Interrupt(string name, int pid)
    {
        if (pid <= 0 || !IsValidName(name))
            return false;
        char* buf = stackalloc char[NameBufferLength];
        if (!FormatSignalName(new Span<char>(buf, NameBufferLength), name, pid))
            return false;
        nint h = Win.OpenEventW(Win.EVENT_MODIFY_STATE, 0, buf);
        if (h == 0)
            return false;
        bool ok = Win.SetEvent(h) != 0;
        Win.CloseHandle(h);
        return ok;
    }

    /// <summary>LatchArgs.ValidateName's rule, as a test (Interrupt never throws).</summary>
    private static bool IsValidName(string? name)
    {
        if (name is null || name.Length == 0 || name.Length > LatchArgs.MaxNameLength)
            return false;
        foreach (char c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c == '.' || c == '_'))
                return false;
        }
        return true;
    }

    internal static string LatchName(string name, int index) => $"{NamePrefix}{name}.latch{index}";

    internal static string SignalName(string name, int pid) => $"{NamePrefix}{name}.sig.{pid}";

    /// <summary>Writes the NUL-terminated name of slot <paramref name="index"/>'s event; no allocation.</summary>
    internal static bool FormatLatchName(Span<char> dst, string name, int index)
        => dst.TryWrite(CultureInfo.InvariantCulture, $"{NamePrefix}{name}.latch{index}\0", out _);

    /// <summary>Writes the NUL-terminated name of process <paramref name="pid"/>'s interrupt event; no allocation.</summary>
    internal static bool FormatSignalName(Span<char> dst, string name, int pid)
        => dst.TryWrite(CultureInfo.InvariantCulture, $"{NamePrefix}{name}.sig.{pid}\0", out _);

    private static SafeWaitObjectHandle?[] CreateEvents(string name, int count)
    {
        var handles = new SafeWaitObjectHandle?[count];
        for (int i = 0; i < count; i++)
        {
            string eventName = LatchName(name, i);
            nint h;
            fixed (char* p = eventName)
                h = Win.CreateEventW(null, 0, 0, p);
            int err = Marshal.GetLastPInvokeError();
            if (h != 0)
                handles[i] = new SafeWaitObjectHandle(h);
            if (h == 0 || err == Win.ERROR_ALREADY_EXISTS)
            {
                // Undo: closing this call's handles removes the events it created (nobody else has them yet).
                for (int j = 0; j <= i; j++)
                    handles[j]?.Dispose();
                if (h != 0)
                    throw Win.Exception("CreateEventW", err, $"{eventName} already exists: another latch set has the name \"{name}\" ({i} of {count})");
                throw Win.Exception("CreateEventW", err, $"creating {eventName} ({i} of {count} of latch set \"{name}\")");
            }
        }
        return handles;
    }

    private sealed class NoLifeline : IDisposable
    {
        public static readonly NoLifeline Instance = new();

        public void Dispose()
        {
        }
    }
}

/// <summary>A waitable kernel object handle (event, process); CloseHandle on release.</summary>
internal sealed class SafeWaitObjectHandle : SafeHandle
{
    /// <summary>For the interop marshaller.</summary>
    public SafeWaitObjectHandle() : base(0, ownsHandle: true)
    {
    }

    public SafeWaitObjectHandle(nint h) : base(0, ownsHandle: true) => SetHandle(h);

    public override bool IsInvalid => handle == 0 || handle == -1;

    protected override bool ReleaseHandle() => Win.CloseHandle(handle) != 0;
}

/// <summary>This process's wake handles of one latch set (the creator's: the events themselves).</summary>
internal sealed unsafe class WindowsLatchWakers : ILatchWakers
{
    private readonly string _name;
    /// <summary>Slot i's event as this process wakes it; null until the first wake (the creator fills it up front). Set once by CAS.</summary>
    private readonly SafeWaitObjectHandle?[] _wake;
    /// <summary>1 while an owner made through this object holds slot i.</summary>
    private readonly int[] _owned;
    private volatile bool _closed;

    public WindowsLatchWakers(string name, SafeWaitObjectHandle?[] wake)
    {
        _name = name;
        _wake = wake;
        _owned = new int[wake.Length];
    }

    public int Count => _wake.Length;

    public ILatchOwner Own(int index)
    {
        LatchArgs.CheckIndex(index, Count);
        LatchArgs.CheckOpen(_closed, _name);
        if (Interlocked.CompareExchange(ref _owned[index], 1, 0) != 0)
            throw new InvalidOperationException($"latch slot {index} of set \"{_name}\" is already owned in this process");
        try
        {
            char* buf = stackalloc char[WindowsLatchProvider.NameBufferLength];
            WindowsLatchProvider.FormatLatchName(new Span<char>(buf, WindowsLatchProvider.NameBufferLength), _name, index);
            nint h = Win.OpenEventW(Win.SYNCHRONIZE | Win.EVENT_MODIFY_STATE, 0, buf);
            if (h == 0)
            {
                int err = Marshal.GetLastPInvokeError();
                throw Win.Exception("OpenEventW", err, $"owning {WindowsLatchProvider.LatchName(_name, index)} (slot {index} of latch set \"{_name}\")");
            }
            var owner = new WindowsLatchOwner(this, index, new SafeWaitObjectHandle(h));
            owner.Drain();
            return owner;
        }
        catch
        {
            Volatile.Write(ref _owned[index], 0);
            throw;
        }
    }

    internal void Disown(int index) => Volatile.Write(ref _owned[index], 0);

    public void Wake(int index)
    {
        if ((uint)index >= (uint)_wake.Length || _closed)
            return;
        SafeWaitObjectHandle? h = Volatile.Read(ref _wake[index]);
        if (h is null)
        {
            if (OpenWakeHandle(index) != 0)
                return; // the set is gone (or not yet made): nobody to wake
            h = Volatile.Read(ref _wake[index]);
            if (h is null)
                return; // closed meanwhile
        }
        bool added = false;
        try
        {
            h.DangerousAddRef(ref added);
            if (Win.SetEvent(h.DangerousGetHandle()) == 0)
            {
                int err = Marshal.GetLastPInvokeError();
                Environment.FailFast($"SetEvent failed: {Win.ErrorName(err)} ({err}) on latch slot {index} of set \"{_name}\"");
            }
        }
        catch (ObjectDisposedException)
        {
            // Disposed by another thread between the read and AddRef: a wake of a closed set is a no-op.
        }
        finally
        {
            if (added)
                h.DangerousRelease();
        }
    }

    /// <summary>
    /// Opens slot <paramref name="index"/>'s event for waking and publishes it in the cache (or finds it there).
    /// Returns 0, or the OpenEventW error. Allocates only when the open succeeds.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal int OpenWakeHandle(int index)
    {
        char* buf = stackalloc char[WindowsLatchProvider.NameBufferLength];
        WindowsLatchProvider.FormatLatchName(new Span<char>(buf, WindowsLatchProvider.NameBufferLength), _name, index);
        nint raw = Win.OpenEventW(Win.EVENT_MODIFY_STATE, 0, buf);
        if (raw == 0)
            return Marshal.GetLastPInvokeError();
        var h = new SafeWaitObjectHandle(raw);
        if (Interlocked.CompareExchange(ref _wake[index], h, null) is not null)
            h.Dispose(); // another thread cached it first
        else if (_closed)
            Interlocked.Exchange(ref _wake[index], null)?.Dispose(); // Dispose ran meanwhile and may have missed it
        return 0;
    }

    /// <summary>An event goes with its last handle: closing this process's handles is all there is to do.</summary>
    public void Destroy()
    {
        LatchArgs.CheckOpen(_closed, _name);
        Dispose();
    }

    public void Dispose()
    {
        _closed = true;
        for (int i = 0; i < _wake.Length; i++)
            Interlocked.Exchange(ref _wake[i], null)?.Dispose();
    }

    public override string ToString() => $"latch set \"{_name}\"";
}

/// <summary>This process's handle on the event of a slot it owns.</summary>
internal sealed class WindowsLatchOwner : ILatchOwner
{
    private readonly WindowsLatchWakers _wakers;
    private readonly SafeWaitObjectHandle _event;
    private int _disposed;

    public WindowsLatchOwner(WindowsLatchWakers wakers, int index, SafeWaitObjectHandle ev)
    {
        _wakers = wakers;
        Index = index;
        _event = ev;
    }

    public int Index { get; }

    public nint WaitHandle => _event.DangerousGetHandle();

    /// <summary>One zero-timeout wait: it resets the auto-reset event if it was signalled.</summary>
    public void Drain()
    {
        uint r = Win.WaitForSingleObject(_event, 0);
        if (r == Win.WAIT_FAILED)
        {
            int err = Marshal.GetLastPInvokeError();
            throw Win.Exception("WaitForSingleObject", err, $"draining latch slot {Index} ({_wakers})");
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _event.Dispose();
        _wakers.Disown(Index);
    }
}

/// <summary>A process handle (or an already-set event when the supervisor was gone): signalled once the supervisor is dead.</summary>
internal sealed class WindowsSupervisorWatch : ISupervisorWatch
{
    private readonly SafeWaitObjectHandle _handle;

    public WindowsSupervisorWatch(SafeWaitObjectHandle handle) => _handle = handle;

    public nint WaitHandle => _handle.DangerousGetHandle();

    public bool IsSupervisorDead
    {
        get
        {
            uint r = Win.WaitForSingleObject(_handle, 0);
            if (r == Win.WAIT_FAILED)
            {
                int err = Marshal.GetLastPInvokeError();
                throw Win.Exception("WaitForSingleObject", err, "polling the supervisor's process handle");
            }
            return r == Win.WAIT_OBJECT_0;
        }
    }

    public void Dispose() => _handle.Dispose();
}

/// <summary>One registration of ListenForInterrupts: removes its action from the name's dispatcher on Dispose.</summary>
internal sealed class WindowsInterruptListener : IDisposable
{
    private readonly WindowsInterruptDispatcher _dispatcher;
    private int _disposed;

    public WindowsInterruptListener(string name, Action action)
    {
        Action = action;
        _dispatcher = WindowsInterruptDispatcher.Register(name, this);
    }

    internal Action Action { get; }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
            _dispatcher.Unregister(this);
    }
}

/// <summary>
/// This process's interrupt event for one name and the thread that runs every registered action when it is set
/// (several registrations in one process all run, as with SIGUSR1 on Unix).
/// </summary>
internal sealed unsafe class WindowsInterruptDispatcher
{
    /// <summary>The dispatchers of this process, by name. Guarded by itself.</summary>
    private static readonly Dictionary<string, WindowsInterruptDispatcher> s_byName = [];

    private readonly string _name;
    private readonly SafeWaitObjectHandle _signal;
    private readonly SafeWaitObjectHandle _stop;
    private readonly Thread _thread;
    /// <summary>Replaced (never changed in place) under s_byName's lock; read by the thread without it.</summary>
    private volatile WindowsInterruptListener[] _listeners = [];

    private WindowsInterruptDispatcher(string name)
    {
        _name = name;
        string eventName = WindowsLatchProvider.SignalName(name, Environment.ProcessId);
        nint h;
        fixed (char* p = eventName)
            h = Win.CreateEventW(null, 0, 0, p);
        if (h == 0)
        {
            int err = Marshal.GetLastPInvokeError();
            throw Win.Exception("CreateEventW", err, $"creating interrupt event {eventName}");
        }
        // ERROR_ALREADY_EXISTS is not a collision: the pid is ours and s_byName says nobody here listens, so the
        // other handle is an Interrupt caller's, open for a moment, or a stopped dispatcher's thread on its way
        // out. A signal left pending costs one extra round of the actions, which interrupts allow.
        _signal = new SafeWaitObjectHandle(h);
        h = Win.CreateEventW(null, 1, 0, null);
        if (h == 0)
        {
            int err = Marshal.GetLastPInvokeError();
            _signal.Dispose();
            throw Win.Exception("CreateEventW", err, $"creating the stop event of the interrupt listener \"{name}\"");
        }
        _stop = new SafeWaitObjectHandle(h);
        _thread = new Thread(Run) { IsBackground = true, Name = $"pgipc interrupts {name}" };
    }

    public static WindowsInterruptDispatcher Register(string name, WindowsInterruptListener listener)
    {
        lock (s_byName)
        {
            if (!s_byName.TryGetValue(name, out WindowsInterruptDispatcher? d))
            {
                d = new WindowsInterruptDispatcher(name);
                try
                {
                    d._thread.Start();
                }
                catch
                {
                    d._signal.Dispose();
                    d._stop.Dispose();
                    throw;
                }
                s_byName.Add(name, d);
            }
            d._listeners = [.. d._listeners, listener];
            return d;
        }
    }

    public void Unregister(WindowsInterruptListener listener)
    {
        lock (s_byName)
        {
            _listeners = Array.FindAll(_listeners, l => l != listener);
            if (_listeners.Length > 0)
                return;
            s_byName.Remove(_name);
        }
        // The last one left: stop the thread (outside the lock: an action may be registering right now).
        bool added = false;
        try
        {
            _stop.DangerousAddRef(ref added);
            if (Win.SetEvent(_stop.DangerousGetHandle()) == 0)
            {
                int err = Marshal.GetLastPInvokeError();
                Environment.FailFast($"SetEvent failed: {Win.ErrorName(err)} ({err}) stopping the interrupt listener of \"{_name}\"");
            }
        }
        finally
        {
            if (added)
                _stop.DangerousRelease();
        }
        if (Thread.CurrentThread != _thread)
            _thread.Join(); // from an action itself, the thread leaves when the action returns
    }

    private void Run()
    {
        // The thread owns both handles from here on and closes them as it leaves.
        nint* handles = stackalloc nint[2];
        handles[0] = _signal.DangerousGetHandle();
        handles[1] = _stop.DangerousGetHandle();
        try
        {
            while (true)
            {
                uint r = Win.WaitForMultipleObjects(2, handles, 0, Win.INFINITE);
                if (r == Win.WAIT_OBJECT_0)
                {
                    foreach (WindowsInterruptListener l in _listeners)
                        l.Action();
                    continue;
                }
                if (r == Win.WAIT_OBJECT_0 + 1)
                    return;
                int err = Marshal.GetLastPInvokeError();
                Environment.FailFast($"WaitForMultipleObjects failed: {Win.ErrorName(err)} ({err}) (0x{r:x}) in the interrupt listener of \"{_name}\"");
            }
        }
        finally
        {
            _signal.Dispose();
            _stop.Dispose();
        }
    }
}
