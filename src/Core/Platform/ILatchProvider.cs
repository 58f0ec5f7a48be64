/*-------------------------------------------------------------------------
 * ILatchProvider.cs
 *   What a backend provides so that a participant can sleep until something
 *   happens (its latch is set, a socket is ready, the supervisor dies, a
 *   timeout) and so that any process can wake it; and process interrupts
 *   (the signal behind ProcSignal).
 *
 * NOTES
 *   Core keeps the latch protocol (is_set / maybe_sleeping in PGPROC, see
 *   Latch/Latches.cs); a backend only supplies the kernel object a sleeper
 *   blocks on and the way another process makes it ready:
 *     - Linux: an eventfd per owned slot, in an epoll set. Another process
 *       writes it through a duplicate obtained with pidfd_getfd; where that
 *       is refused (EPERM, ENOSYS) it sends SIGURG to the owner, whose
 *       handler writes its own eventfd (PostgreSQL 17's design for latches).
 *     - Posix: a named FIFO per slot in the cluster's directory, opened by
 *       the owner for reading (the self-pipe) and by wakers for writing;
 *       poll() over it (and a select() variant).
 *     - Windows: a named auto-reset Event per slot; SetEvent wakes;
 *       WaitForMultipleObjects, WSAEventSelect for sockets.
 *   Each slot has LatchStorageSize bytes in PGPROC for the backend (Linux
 *   publishes the owner's eventfd number there).
 *
 *   Supervisor death (WL_POSTMASTER_DEATH): the supervisor holds a lifeline
 *   (Linux: nothing, a pidfd of its pid is watched; Posix: the only writer
 *   of a named FIFO, whose readers see POLLHUP when it dies; Windows: a
 *   process handle opened by pid), anyone can watch it.
 *
 *   Interrupts: Unix SIGUSR1 through PosixSignalRegistration (handlers run
 *   on a runtime thread, never in signal context); Windows a named event
 *   per process and a waiting thread.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform;

/// <summary>Events a wait can ask for and report (WL_* in PostgreSQL).</summary>
[Flags]
public enum WaitEvents : uint
{
    /// <summary>No event.</summary>
    None = 0,
    /// <summary>The latch was set (WL_LATCH_SET).</summary>
    LatchSet = 1 << 0,
    /// <summary>Data to read, or end of file / a pending connection (WL_SOCKET_READABLE).</summary>
    SocketReadable = 1 << 1,
    /// <summary>Room to write (WL_SOCKET_WRITEABLE).</summary>
    SocketWriteable = 1 << 2,
    /// <summary>A non-blocking connect finished (WL_SOCKET_CONNECTED; writeable on Unix).</summary>
    SocketConnected = 1 << 3,
    /// <summary>The peer closed (WL_SOCKET_CLOSED).</summary>
    SocketClosed = 1 << 4,
    /// <summary>The supervisor died (WL_POSTMASTER_DEATH).</summary>
    SupervisorDeath = 1 << 5,
    /// <summary>A Windows handle was signalled.</summary>
    HandleSignaled = 1 << 6,
    /// <summary>The timeout expired (WL_TIMEOUT).</summary>
    Timeout = 1 << 7,
    /// <summary>
    /// Asked of WaitLatch, never reported (WL_EXIT_ON_PM_DEATH): when the supervisor dies, the waiting participant
    /// releases its LWLocks, gives its slot back and the process exits with
    /// <see cref="Proc.ParticipantExitCodes.SupervisorDied"/> instead of returning. Not with <see cref="SupervisorDeath"/>.
    /// </summary>
    ExitOnSupervisorDeath = 1 << 8,
}

/// <summary>
/// One event a wait returned (PostgreSQL's WaitEvent): at which position (what Add* returned), what happened, the
/// fd or HANDLE watched there, and the user data given to <see cref="Latch.WaitEventSet"/>'s Add* call. The
/// platform's <see cref="IPlatformWaitSet.Wait"/> returns the same type with <paramref name="UserData"/> null;
/// the WaitEventSet fills it in. Not to be confused with <see cref="WaitEvents"/> (the WL_* flags) or
/// <see cref="Latch.WaitEventId"/> (what a participant is waiting for, wait_event_info).
/// </summary>
public readonly record struct WaitEvent(int Position, WaitEvents Events, nint Handle, object? UserData = null);

/// <summary>Per-backend latch wake objects, wait sets, supervisor watch and process interrupts.</summary>
public interface ILatchProvider
{
    /// <summary>Bytes of PGPROC storage each slot's latch needs (at most <see cref="LatchStorage.MaxSize"/>).</summary>
    int StorageSize { get; }

    /// <summary>
    /// The creator: makes the objects through which any process can wake slot i (0..count-1). Slot i may use the
    /// shared bytes at <paramref name="storage"/> + i * <paramref name="stride"/> (zero-filled). <paramref name="name"/>
    /// (ASCII letters, digits, '.', '_'; at most 24) is unique per segment. On failure nothing is left behind.
    /// </summary>
    ILatchWakers Create(string name, nint storage, int stride, int count);

    /// <summary>Another process: opens what <see cref="Create"/> made (its own mapping's storage address).</summary>
    ILatchWakers Attach(string name, nint storage, int stride, int count);

    /// <summary>A new wait set with room for <paramref name="capacity"/> events.</summary>
    IPlatformWaitSet CreateWaitSet(int capacity);

    /// <summary>
    /// The supervisor side of the supervisor-death watch: while the returned object lives (and this process
    /// lives) watchers see the supervisor alive. Dispose it only when this process stops being the supervisor.
    /// </summary>
    IDisposable CreateLifeline(string name);

    /// <summary>A watch that becomes ready when the supervisor (pid <paramref name="supervisorPid"/>, lifeline <paramref name="name"/>) dies.</summary>
    ISupervisorWatch WatchSupervisor(string name, int supervisorPid);

    /// <summary>
    /// This process starts receiving interrupts: <paramref name="onInterrupt"/> runs on a runtime or background
    /// thread (never in signal context) after each one; several interrupts may be coalesced into one call.
    /// </summary>
    IDisposable ListenForInterrupts(string name, Action onInterrupt);

    /// <summary>Interrupts process <paramref name="pid"/> (SIGUSR1; SetEvent). False when it is gone. Never throws.</summary>
    bool Interrupt(string name, int pid);

    /// <summary>
    /// Interrupts process <paramref name="pid"/> only if it is the process whose <see cref="IProcessServices.GetIdentity"/>
    /// is <paramref name="expectedIdentity"/> (0: unchecked). A backend that can pin a process (Linux: pidfd_open, then
    /// the identity check, then pidfd_send_signal) leaves no window in which the pid can pass to another process
    /// between the check and the signal; the default checks, then signals. False when it is gone or not that
    /// process. Never throws.
    /// </summary>
    bool Interrupt(string name, int pid, long expectedIdentity, IProcessServices processes)
    {
        ArgumentNullException.ThrowIfNull(processes);
        if (expectedIdentity != 0 && processes.GetIdentity(pid) != expectedIdentity)
            return false;
        return Interrupt(name, pid);
    }
}

/// <summary>Sizes of the latch storage Core reserves in each PGPROC.</summary>
public static class LatchStorage
{
    /// <summary>The largest number of bytes a backend may keep per latch slot.</summary>
    public const int MaxSize = 32;
}

/// <summary>The wake objects of every slot, as this process sees them. Thread-safe.</summary>
public interface ILatchWakers : IDisposable
{
    /// <summary>The number of slots in the table.</summary>
    int Count { get; }

    /// <summary>
    /// This process becomes the waiter of slot <paramref name="index"/> (a participant joined). Stale wake-ups
    /// left by an earlier owner are drained. Dispose the result when the participant leaves.
    /// </summary>
    ILatchOwner Own(int index);

    /// <summary>
    /// Makes slot <paramref name="index"/>'s owner's wait return (write its eventfd or FIFO, SetEvent). Called only
    /// after Core saw maybe_sleeping. Never throws, allocates nothing after the first wake of a given owner; a
    /// slot with no owner is a no-op.
    /// </summary>
    void Wake(int index);

    /// <summary>Removes the OS objects (FIFOs, directory) and closes this process's handles.</summary>
    void Destroy();
}

/// <summary>This process's ownership of one slot's wake object.</summary>
public interface ILatchOwner : IDisposable
{
    /// <summary>The index of the latch slot this owner holds.</summary>
    int Index { get; }

    /// <summary>The fd or HANDLE a wait set watches.</summary>
    nint WaitHandle { get; }

    /// <summary>Consumes pending wake-ups without blocking.</summary>
    void Drain();
}

/// <summary>A watch on the supervisor's life.</summary>
public interface ISupervisorWatch : IDisposable
{
    /// <summary>The fd or HANDLE a wait set watches (ready when the supervisor is dead).</summary>
    nint WaitHandle { get; }

    /// <summary>True when the supervisor is dead (PostmasterIsAlive's negation), without waiting.</summary>
    bool IsSupervisorDead { get; }
}

/// <summary>
/// The kernel side of a WaitEventSet: epoll, poll/select, WaitForMultipleObjects. Used by one thread at a time.
/// Waiting allocates nothing.
/// </summary>
public interface IPlatformWaitSet : IDisposable
{
    /// <summary>The number of events the set can hold.</summary>
    int Capacity { get; }

    /// <summary>The number of events in the set now.</summary>
    int Count { get; }

    /// <summary>Adds a latch; reported as <see cref="WaitEvents.LatchSet"/> when its wake object is ready (already drained).</summary>
    int AddLatch(ILatchOwner latch);

    /// <summary>Adds a socket (fd on Unix, SOCKET on Windows) for <paramref name="events"/>.</summary>
    int AddSocket(nint socket, WaitEvents events);

    /// <summary>Adds the supervisor watch; reported as <see cref="WaitEvents.SupervisorDeath"/>.</summary>
    int AddSupervisorWatch(ISupervisorWatch watch);

    /// <summary>Adds a HANDLE (Windows only; elsewhere <see cref="PlatformNotSupportedException"/>).</summary>
    int AddHandle(nint handle);

    /// <summary>Changes the events watched at <paramref name="position"/> (sockets; a latch can only be switched on or off).</summary>
    void Modify(int position, WaitEvents events);

    /// <summary>
    /// Waits up to <paramref name="timeoutMs"/> ms (-1 forever, 0 poll) and fills <paramref name="occurred"/> with up to
    /// its length of ready events; returns how many (0 on timeout). An interrupted wait (EINTR) returns 0 early
    /// only if the caller's deadline passed; otherwise it resumes with the remaining time.
    /// </summary>
    int Wait(int timeoutMs, Span<WaitEvent> occurred);
}
