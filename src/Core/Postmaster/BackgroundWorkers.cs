/*-------------------------------------------------------------------------
 * BackgroundWorkers.cs
 *   The shared registry of the processes the supervisor runs: one slot per
 *   child, filled by the supervisor (static workers, StartChild) or by any
 *   participant process (RegisterDynamicBackgroundWorker), and read back
 *   through a BackgroundWorkerHandle (slot + generation).
 *
 * NOTES
 *   PostgreSQL keeps BackgroundWorkerSlots in shared memory: a backend fills
 *   a free slot (in_use, the worker's description, generation++), then
 *   sends PMSIGNAL_BACKGROUND_WORKER_CHANGE; the postmaster scans the slots,
 *   copies each new one into its private list and forks it; it writes the
 *   pid back so GetBackgroundWorkerPid / WaitForBackgroundWorkerStartup can
 *   see it. A handle is (slot, generation): once the slot is freed and
 *   reused the generation differs and the handle reads "stopped".
 *
 *   PgIpc does the same with exec instead of fork, so a slot carries what
 *   to exec: the file name and the arguments, NUL-separated UTF-8, in a
 *   fixed buffer. Every child the supervisor runs has a slot, which makes
 *   the slot count the limit on children (max_worker_processes).
 *
 *   Unlike PostgreSQL, where in_use and the pid are read without a lock and
 *   ordered by barriers, every field of a slot is read and written under the
 *   array's one spinlock: registration is rare, the critical sections are a
 *   few stores, and a single protector leaves nothing to pair.
 *
 *   Waiting for start-up or shutdown polls the slot every 5 ms (PostgreSQL
 *   sleeps on the waiter's latch, which the postmaster sets via
 *   bgw_notify_pid). Not done yet because a latch or condition variable
 *   wait needs the waiter to be a participant (handles are waited on from
 *   any thread), a notify slot in the shared layout, and care at a crash
 *   restart, where the supervisor unmaps the segment the wait would sleep
 *   in; the poll is bounded by the caller's timeout either way.
 *
 *   Mirrors src/backend/postmaster/bgworker.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using System.Text;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sync;

namespace PgIpc.Postmaster;

/// <summary>Where a registered worker is in its life (the State field of a slot).</summary>
public enum BackgroundWorkerState
{
    /// <summary>The slot is free.</summary>
    Unused = 0,
    /// <summary>Registered, not started yet (or waiting for its restart interval).</summary>
    Registered = 1,
    /// <summary>Its process is running; the slot's Pid is set.</summary>
    Started = 2,
    /// <summary>Its process exited and it will not be started again.</summary>
    Stopped = 3,
}

/// <summary>What a handle reports (BgwHandleStatus).</summary>
public enum BgwHandleStatus
{
    /// <summary>Running (BGWH_STARTED).</summary>
    Started,
    /// <summary>Registered, not running yet (BGWH_NOT_YET_STARTED).</summary>
    NotYetStarted,
    /// <summary>Exited, unregistered, or its shared memory is gone (BGWH_STOPPED).</summary>
    Stopped,
}

/// <summary>
/// Header of "PgIpc.BackgroundWorkers"; the slots follow it.
/// Lock: spinlock protecting every field of every slot.
/// Magic, NumSlots, SupervisorPid: immutable after initialisation.
/// ShutdownRequested: atomic only; the supervisor release-stores 1 to ask every child to exit (fast shutdown) or 2
/// to ask them to exit at once (crash stop); children acquire-load it after their latch wakes them.
/// Registrations: under Lock; only grows.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 128)]
internal struct BackgroundWorkerArrayHeader
{
    public const uint MagicValue = 0x42475752; // "BGWR"
    public SpinLockPadded Lock;
    public uint Magic;
    public int NumSlots;
    public int ShutdownRequested;
    public int SupervisorPid;
    public long Registrations;
}

/// <summary>
/// One registered child (BackgroundWorkerSlot). Every field is protected by the header's Lock.
/// InUse, Generation, Name, Command, Kind, RestartIntervalMs: written by the registering process.
/// State, Pid: written by the supervisor as it starts and reaps the child (and by the registrant at registration).
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 1024)]
internal unsafe struct BackgroundWorkerSlot
{
    public const int NameCapacity = 64;
    public const int CommandCapacity = 928;
    public int InUse;
    public int State;
    public int Pid;
    public int Generation;
    public int RestartIntervalMs;
    public int Kind;
    public int NameLength;
    public int CommandLength;
    public fixed byte Name[NameCapacity];
    /// <summary>File name, then each argument, NUL-separated UTF-8.</summary>
    public fixed byte Command[CommandCapacity];
}

/// <summary>The slot array of one segment, as this process sees it.</summary>
public sealed unsafe partial class BackgroundWorkerArray
{
    internal const string ShmemName = "PgIpc.BackgroundWorkers";

    private readonly ShmemSegment _segment;
    private readonly BackgroundWorkerArrayHeader* _header;
    private readonly BackgroundWorkerSlot* _slots;
    /// <summary>The header's NumSlots, checked against the region once: every loop uses this copy.</summary>
    private readonly int _numSlots;

    private BackgroundWorkerArray(ShmemSegment segment, BackgroundWorkerArrayHeader* header, long regionSize)
    {
        // NumSlots is input from another process: it must describe slots inside the region.
        int n = header->NumSlots;
        if (n < 1 || sizeof(BackgroundWorkerArrayHeader) + (long)n * sizeof(BackgroundWorkerSlot) > regionSize)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is corrupt: NumSlots {n} does not fit its {regionSize} bytes");
        _segment = segment;
        _header = header;
        _slots = (BackgroundWorkerSlot*)(header + 1);
        _numSlots = n;
    }

    internal static long ShmemSize(int numSlots)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(numSlots, 1);
        return Shmem.ShmemSize.Add(sizeof(BackgroundWorkerArrayHeader), Shmem.ShmemSize.Mul(numSlots, sizeof(BackgroundWorkerSlot)));
    }

    /// <summary>Finds or creates the slots; the creating process is the supervisor.</summary>
    internal static BackgroundWorkerArray Init(ShmemSegment segment, int numSlots, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        int pid = segment.Platform.Processes.CurrentProcessId;
        ShmemRegion r = segment.InitStruct(ShmemName, ShmemSize(numSlots), region =>
        {
            var h = (BackgroundWorkerArrayHeader*)region.Pointer;
            SLock.Init(ref h->Lock.Value);
            h->NumSlots = numSlots;
            h->SupervisorPid = pid;
            // Written last; ShmemInitStruct's ready state publishes everything to other processes.
            h->Magic = BackgroundWorkerArrayHeader.MagicValue;
        }, out found);
        return new BackgroundWorkerArray(segment, (BackgroundWorkerArrayHeader*)r.Pointer, r.Size);
    }

    /// <summary>Opens the slots another process created.</summary>
    internal static BackgroundWorkerArray Attach(ShmemSegment segment)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (!segment.TryFindStruct(ShmemName, out ShmemRegion r))
            throw new PgIpcException($"segment {segment.Handle.Id} has no background worker slots ({ShmemName}); it was not made by a ClusterBuilder");
        var h = (BackgroundWorkerArrayHeader*)r.Pointer;
        if (h->Magic != BackgroundWorkerArrayHeader.MagicValue)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is not initialised (magic 0x{h->Magic:x8})");
        return new BackgroundWorkerArray(segment, h, r.Size);
    }

    /// <summary>The segment the slot array lives in.</summary>
    public ShmemSegment Segment => _segment;

    /// <summary>The number of background worker slots (max_worker_processes).</summary>
    public int NumSlots => _numSlots;

    /// <summary>True once the supervisor asked every child to exit (fast shutdown or a crash stop).</summary>
    public bool ShutdownRequested => _segment.IsAttached && Volatile.Read(ref _header->ShutdownRequested) != 0; // acquire; pairs with RequestShutdown

    /// <summary>
    /// True when the supervisor is stopping every child because another one crashed: exit at once, without shutdown
    /// work (a shutdown checkpoint, flushing), as a PostgreSQL child does on SIGQUIT; shared memory is thrown away.
    /// </summary>
    public bool ImmediateStopRequested => _segment.IsAttached && Volatile.Read(ref _header->ShutdownRequested) == 2; // acquire; pairs with RequestShutdown

    /// <summary>1: exit when convenient (fast shutdown); 2: exit at once (a crash stop). Never lowered.</summary>
    internal void RequestShutdown(bool immediate = false)
        => Volatile.Write(ref _header->ShutdownRequested, immediate ? 2 : 1); // release; pairs with ShutdownRequested / ImmediateStopRequested

    /// <summary>Fills a free slot with <paramref name="spec"/> (state Registered) and returns its handle.</summary>
    internal BackgroundWorkerHandle Register(ChildSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        byte[] name = Encoding.UTF8.GetBytes(spec.Name);
        byte[] command = ChildSpec.EncodeCommand(spec);
        // Validated (lengths within the slot's buffers) above: the copies under the lock cannot throw.
        SLock.Acquire(ref _header->Lock.Value, ShmemName);
        for (int i = 0; i < _numSlots; i++)
        {
            BackgroundWorkerSlot* s = _slots + i;
            if (s->InUse != 0)
                continue;
            s->InUse = 1;
            s->Generation++;
            s->State = (int)BackgroundWorkerState.Registered;
            s->Pid = 0;
            s->RestartIntervalMs = spec.RestartIntervalMs;
            s->Kind = (int)spec.Kind;
            name.CopyTo(new Span<byte>(s->Name, BackgroundWorkerSlot.NameCapacity));
            s->NameLength = name.Length;
            command.CopyTo(new Span<byte>(s->Command, BackgroundWorkerSlot.CommandCapacity));
            s->CommandLength = command.Length;
            _header->Registrations++;
            int generation = s->Generation;
            SLock.Release(ref _header->Lock.Value);
            return new BackgroundWorkerHandle(this, i, generation);
        }
        SLock.Release(ref _header->Lock.Value);
        throw new NoFreeBackgroundWorkerSlotException(_numSlots);
    }

    /// <summary>
    /// The supervisor: slots in state Registered, with what to start. A slot whose contents are corrupt (a length
    /// outside its buffer, an unknown kind: the slot was written by another process) throws a
    /// <see cref="PgIpcException"/> naming it, or, with <paramref name="corrupt"/>, is listed there instead.
    /// </summary>
    internal List<(int Slot, int Generation, ChildSpec Spec)> RegisteredSlots(List<(int Slot, int Generation, PgIpcException Error)>? corrupt = null)
    {
        // The slots are copied raw under the spinlock into a buffer allocated before it; lengths are checked and the
        // contents decoded after it is released, so nothing under the lock can throw.
        byte[] raw = new byte[_numSlots * sizeof(BackgroundWorkerSlot)];
        fixed (byte* dst = raw)
        {
            SLock.Acquire(ref _header->Lock.Value, ShmemName);
            Buffer.MemoryCopy(_slots, dst, raw.Length, raw.Length);
            SLock.Release(ref _header->Lock.Value);
        }
        List<(int, int, ChildSpec)> list = [];
        fixed (byte* src = raw)
        {
            var slots = (BackgroundWorkerSlot*)src;
            for (int i = 0; i < _numSlots; i++)
            {
                BackgroundWorkerSlot* s = slots + i;
                if (s->InUse == 0 || s->State != (int)BackgroundWorkerState.Registered)
                    continue;
                try
                {
                    list.Add((i, s->Generation, DecodeSlot(i, s)));
                }
                catch (PgIpcException ex) when (corrupt is not null)
                {
                    corrupt.Add((i, s->Generation, ex));
                }
            }
        }
        return list;
    }

    /// <summary>A registered slot's worker, from a private copy of the slot; every length and value checked.</summary>
    private static ChildSpec DecodeSlot(int i, BackgroundWorkerSlot* s)
    {
        int nameLength = s->NameLength;
        if (nameLength < 1 || nameLength >= BackgroundWorkerSlot.NameCapacity)
            throw Corrupt(i, "NameLength", nameLength, $"1..{BackgroundWorkerSlot.NameCapacity - 1}");
        int commandLength = s->CommandLength;
        if (commandLength < 1 || commandLength > BackgroundWorkerSlot.CommandCapacity)
            throw Corrupt(i, "CommandLength", commandLength, $"1..{BackgroundWorkerSlot.CommandCapacity}");
        int kind = s->Kind;
        if ((uint)kind > (uint)ProcKind.BackgroundWorker)
            throw Corrupt(i, "Kind", kind, $"0..{(int)ProcKind.BackgroundWorker}");
        int restart = s->RestartIntervalMs;
        if (restart < ChildSpec.NeverRestart)
            throw Corrupt(i, "RestartIntervalMs", restart, $">= {ChildSpec.NeverRestart}");
        string name = Encoding.UTF8.GetString(s->Name, nameLength);
        byte[] command = new ReadOnlySpan<byte>(s->Command, commandLength).ToArray();
        ChildSpec spec = ChildSpec.DecodeCommand(name, command, (ProcKind)kind, restart);
        try
        {
            spec.Validate();
        }
        catch (ArgumentException ex)
        {
            throw new PgIpcException($"{ShmemName} slot {i} is corrupt: {ex.Message}", ex);
        }
        return spec;
    }

    private static PgIpcException Corrupt(int slot, string field, int value, string range)
        => new($"{ShmemName} slot {slot} is corrupt: {field} {value} is outside {range}");

    /// <summary>The supervisor: sets a slot's state and pid if it still holds <paramref name="generation"/>; <paramref name="free"/> releases it.</summary>
    internal void SetState(int slot, int generation, BackgroundWorkerState state, int pid, bool free)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(slot);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(slot, _numSlots);
        BackgroundWorkerSlot* s = _slots + slot;
        SLock.Acquire(ref _header->Lock.Value, ShmemName);
        if (s->InUse != 0 && s->Generation == generation)
        {
            s->State = (int)state;
            s->Pid = pid;
            if (free)
                s->InUse = 0;
        }
        SLock.Release(ref _header->Lock.Value);
    }

    internal BgwHandleStatus GetStatus(int slot, int generation, out int pid)
    {
        pid = 0;
        if (!_segment.IsAttached)
            return BgwHandleStatus.Stopped;
        if ((uint)slot >= (uint)_numSlots)
            return BgwHandleStatus.Stopped;
        BackgroundWorkerSlot* s = _slots + slot;
        SLock.Acquire(ref _header->Lock.Value, ShmemName);
        bool mine = s->InUse != 0 && s->Generation == generation;
        var state = (BackgroundWorkerState)s->State;
        int p = s->Pid;
        SLock.Release(ref _header->Lock.Value);
        if (!mine || state == BackgroundWorkerState.Stopped)
            return BgwHandleStatus.Stopped;
        if (state == BackgroundWorkerState.Started)
        {
            pid = p;
            return BgwHandleStatus.Started;
        }
        return BgwHandleStatus.NotYetStarted;
    }

    /// <summary>
    /// Registers a worker from any process of the cluster and tells the supervisor (RegisterDynamicBackgroundWorker):
    /// the slot is filled, then PMSignal BackgroundWorkerChange wakes the supervisor's loop, which starts it.
    /// </summary>
    internal BackgroundWorkerHandle RegisterDynamicBackgroundWorker(ChildSpec spec, ProcArray procs)
    {
        ArgumentNullException.ThrowIfNull(procs);
        BackgroundWorkerHandle h = Register(spec);
        PMSignal.SendPostmasterSignal(procs, PMSignalReason.BackgroundWorkerChange);
        return h;
    }
}

/// <summary>A registered worker: its slot and the generation it was registered with (BackgroundWorkerHandle).</summary>
public sealed class BackgroundWorkerHandle
{
    private const int PollMs = 5;
    private readonly BackgroundWorkerArray _array;

    internal BackgroundWorkerHandle(BackgroundWorkerArray array, int slot, int generation)
    {
        _array = array;
        Slot = slot;
        Generation = generation;
    }

    /// <summary>The slot the worker was registered in.</summary>
    public int Slot { get; }

    /// <summary>The slot's generation when the worker was registered: a reused slot has another.</summary>
    public int Generation { get; }

    /// <summary>Where the worker is now (GetBackgroundWorkerPid); <paramref name="pid"/> is set when Started.</summary>
    public BgwHandleStatus GetStatus(out int pid) => _array.GetStatus(Slot, Generation, out pid);

    /// <summary>The worker's status now (GetBackgroundWorkerPid without the pid).</summary>
    public BgwHandleStatus GetStatus() => GetStatus(out _);

    /// <summary>
    /// Waits until the worker runs and returns its pid (WaitForBackgroundWorkerStartup). Throws
    /// <see cref="TimeoutException"/> when it is not started in time (<see cref="Timeout.InfiniteTimeSpan"/>: no limit)
    /// and <see cref="PgIpcException"/> when it stopped first.
    /// </summary>
    public int WaitForStartup(TimeSpan timeout) => WaitForStartup(timeout, CancellationToken.None);

    /// <summary>
    /// As <see cref="WaitForStartup(TimeSpan)"/>; throws <see cref="OperationCanceledException"/> within one poll
    /// (5 ms: the wait polls the slot, it does not sleep on a latch) of <paramref name="cancellationToken"/>'s cancel.
    /// </summary>
    public int WaitForStartup(TimeSpan timeout, CancellationToken cancellationToken)
    {
        long deadline = Deadline(timeout);
        while (true)
        {
            BgwHandleStatus st = GetStatus(out int pid);
            if (st == BgwHandleStatus.Started)
                return pid;
            if (st == BgwHandleStatus.Stopped)
                throw new PgIpcException($"background worker in slot {Slot} (generation {Generation}) stopped before it was seen running");
            if (Environment.TickCount64 > deadline)
                throw new TimeoutException($"background worker in slot {Slot} (generation {Generation}) was not started within {timeout.TotalMilliseconds} ms");
            cancellationToken.ThrowIfCancellationRequested();
            Thread.Sleep(PollMs);
        }
    }

    /// <summary>
    /// Waits until the worker has stopped (WaitForBackgroundWorkerShutdown); throws <see cref="TimeoutException"/>
    /// (<see cref="Timeout.InfiniteTimeSpan"/>: no limit).
    /// </summary>
    public void WaitForShutdown(TimeSpan timeout) => WaitForShutdown(timeout, CancellationToken.None);

    /// <summary>
    /// As <see cref="WaitForShutdown(TimeSpan)"/>; throws <see cref="OperationCanceledException"/> within one poll
    /// (5 ms) of <paramref name="cancellationToken"/>'s cancel.
    /// </summary>
    public void WaitForShutdown(TimeSpan timeout, CancellationToken cancellationToken)
    {
        long deadline = Deadline(timeout);
        while (GetStatus() != BgwHandleStatus.Stopped)
        {
            if (Environment.TickCount64 > deadline)
                throw new TimeoutException($"background worker in slot {Slot} (generation {Generation}) did not stop within {timeout.TotalMilliseconds} ms");
            cancellationToken.ThrowIfCancellationRequested();
            Thread.Sleep(PollMs);
        }
    }

    /// <summary>The tick count at which a wait of <paramref name="timeout"/> ends (none for InfiniteTimeSpan).</summary>
    internal static long Deadline(TimeSpan timeout)
    {
        if (timeout == Timeout.InfiniteTimeSpan)
            return long.MaxValue;
        ArgumentOutOfRangeException.ThrowIfLessThan(timeout, TimeSpan.Zero);
        return Environment.TickCount64 + (long)timeout.TotalMilliseconds;
    }

    /// <inheritdoc/>
    public override string ToString() => $"background worker slot {Slot} generation {Generation}";
}
