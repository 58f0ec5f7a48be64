/*-------------------------------------------------------------------------
 * SupervisorRequests.cs
 *   The shared area through which children ask the supervisor for work
 *   (PMSignal StartWorker, RestartChild, ServiceRequest): start a worker
 *   with an assignment, restart a sibling, run the application's service
 *   hook. This file: the layout, the module, and the children's side (post a
 *   request, read an assignment, report a result). The supervisor's side is
 *   Supervisor.Requests.cs; the handles are SupervisorRequests.Handles.cs.
 *
 * NOTES
 *   PostgreSQL's autovacuum launcher cannot start a worker by itself: it is
 *   attached to shared memory and so not trusted to manage processes. It
 *   writes what it wants done into AutoVacuumShmem (the database to work on,
 *   av_startingWorker), sends PMSIGNAL_START_AUTOVAC_WORKER, and the
 *   postmaster, which knows only that it must start a worker, forks one; the
 *   worker reads its assignment from the same area, and the launcher sees
 *   whether it started (a worker that fails to start is reported back). PgIpc
 *   generalises that: the worker to start is named by an entry the
 *   application registered on the builder (ClusterBuilder.AddOnRequestWorker:
 *   the supervisor, not the requester, decides what is executed), and the
 *   assignment is an opaque argument block. The other two reasons use the
 *   same slots: a restart request carries the child's name, a service
 *   request a code and an argument block.
 *
 *   A request takes a slot (bounded: a full area is
 *   NoFreeSupervisorRequestSlotException), then PMSignal wakes the
 *   supervisor. Restart and service slots are freed by the supervisor as it
 *   takes them; a worker request stays until its requester releases its
 *   handle, so the outcome (started with a pid, failed to start with why,
 *   finished with the worker's result, exited without one) can be read back.
 *   A requester that died without releasing leaves its slot to be reclaimed
 *   by the next request that finds the area full. The area is rebuilt with
 *   shared memory at a crash restart: pending requests are lost with every
 *   process that made them.
 *
 *   Per-child stop. A restart stops one child the way a fast shutdown stops
 *   all: its stop flag (StopGeneration, one per background worker slot) is
 *   set and its latch, and Cluster.ShutdownRequested reads true in that
 *   child only (PostgreSQL sets a worker slot's terminate flag and sends
 *   SIGTERM).
 *
 *   Layout of "PgIpc.SupervisorRequests":
 *     SupervisorRequestsHeader  (128 bytes)
 *     SupervisorRequestSlot[NumSlots]  (1024 bytes each)
 *     int StopGeneration[NumStopFlags]  (one per background worker slot)
 *
 *   Mirrors src/backend/postmaster/autovacuum.c (AutoVacuumShmem,
 *   do_start_worker, AutoVacWorkerFailed) and bgworker.c's terminate flag.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sync;

namespace PgIpc.Postmaster;

/// <summary>Where a worker request is (what its requester sees through <see cref="WorkerRequestHandle"/>).</summary>
public enum WorkerRequestState
{
    /// <summary>Posted; the supervisor has not started the worker yet.</summary>
    Pending = 1,
    /// <summary>The worker's process runs (its pid is known).</summary>
    Started = 2,
    /// <summary>The worker reported its result (<see cref="WorkerAssignment.Complete"/>).</summary>
    Finished = 3,
    /// <summary>The worker could not be started (unknown entry, no free child slot, exec failed, shutting down).</summary>
    Failed = 4,
    /// <summary>The worker exited without reporting a result (its exit code is kept).</summary>
    Exited = 5,
}

/// <summary>What a slot holds (the Kind field).</summary>
internal enum SupervisorRequestKind
{
    StartWorker = 1,
    RestartChild = 2,
    Service = 3,
}

/// <summary>
/// Header of "PgIpc.SupervisorRequests"; the slots and stop flags follow it.
/// Lock: spinlock protecting every field of every slot and NextSequence.
/// Magic, NumSlots, NumStopFlags: immutable after initialisation.
/// NextSequence: under Lock; only grows (the order the supervisor handles service requests in).
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 128)]
internal struct SupervisorRequestsHeader
{
    public const uint MagicValue = 0x53524551; // "SREQ"
    public SpinLockPadded Lock;
    public uint Magic;
    public int NumSlots;
    public int NumStopFlags;
    public int Reserved;
    public long NextSequence;
}

/// <summary>
/// One request. Every field is protected by the header's Lock.
/// State: Free (0) or a <see cref="WorkerRequestState"/>; the requester sets Pending, the supervisor Started / Failed /
/// Exited, the worker Finished, the requester (releasing) or the supervisor (taking a restart or service request) Free.
/// Kind, Generation, RequesterPid, Sequence, Code, Name, Argument: written by the requester while it takes the slot.
/// WorkerPid, ExitCode: the supervisor (the worker writes its own pid with its result).
/// Result: the worker's result (Finished) or the reason it could not start (Failed, UTF-8), written with State.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 1024)]
internal unsafe struct SupervisorRequestSlot
{
    public const int NameCapacity = 64;
    public const int ArgumentCapacity = 448;
    public const int ResultCapacity = 448;
    public int State;
    public int Kind;
    public int Generation;
    public int RequesterPid;
    public long Sequence;
    public int WorkerPid;
    public int ExitCode;
    public int Code;
    public int NameLength;
    public int ArgumentLength;
    public int ResultLength;
    private fixed byte _pad[16];
    public fixed byte Name[NameCapacity];
    public fixed byte Argument[ArgumentCapacity];
    public fixed byte Result[ResultCapacity];
}

/// <summary>A request as the supervisor takes it: a private copy of its slot, lengths checked.</summary>
internal readonly record struct TakenRequest(int Slot, int Generation, SupervisorRequestKind Kind, int RequesterPid, long Sequence, int Code,
    string Name, byte[] Argument);

/// <summary>
/// The requests children make of the supervisor (<see cref="Cluster.SupervisorRequests"/>): start a worker registered
/// with <see cref="ClusterBuilder.AddOnRequestWorker"/> and hand it an assignment (the autovacuum launcher's way), restart
/// a child, or post a service request to the hooks of <see cref="ClusterBuilder.OnServiceRequest"/>.
/// </summary>
public sealed unsafe partial class SupervisorRequests
{
    internal const string ShmemName = "PgIpc.SupervisorRequests";
    /// <summary>Environment variable naming the request a worker was started for ("slot:generation").</summary>
    internal const string WorkerRequestVariable = "PGIPC_WORKER_REQUEST";

    /// <summary>Most bytes of a worker's assignment or a service request's argument.</summary>
    public const int MaxArgumentBytes = SupervisorRequestSlot.ArgumentCapacity;

    /// <summary>Most bytes of a worker's result.</summary>
    public const int MaxResultBytes = SupervisorRequestSlot.ResultCapacity;

    private readonly ShmemSegment _segment;
    private readonly ProcArray _procs;
    private readonly SupervisorRequestsHeader* _header;
    private readonly SupervisorRequestSlot* _slots;
    private readonly int* _stop;
    private readonly int _numSlots;
    private readonly int _numStopFlags;
    // This process's background worker slot and generation (PGIPC_WORKER_SLOT / _GENERATION), or -1: not a child of
    // this cluster's supervisor (PGIPC_SUPERVISOR_PID names another: a process a child of another cluster started).
    private readonly int _mySlot = -1;
    private readonly int _myGeneration;
    private readonly bool _isChild;

    private SupervisorRequests(ShmemSegment segment, ProcArray procs, SupervisorRequestsHeader* header, long regionSize)
    {
        // The counts are input from another process: they must describe slots inside the region.
        int n = header->NumSlots, f = header->NumStopFlags;
        if (n < 1 || f < 1 || Size(n, f) > regionSize)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is corrupt: NumSlots {n} and NumStopFlags {f} do not fit its {regionSize} bytes");
        _segment = segment;
        _procs = procs;
        _header = header;
        _slots = (SupervisorRequestSlot*)(header + 1);
        _stop = (int*)(_slots + n);
        _numSlots = n;
        _numStopFlags = f;
        _isChild = int.TryParse(Environment.GetEnvironmentVariable(Cluster.SupervisorPidVariable), NumberStyles.None, CultureInfo.InvariantCulture, out int sp)
            && sp == procs.SupervisorPid;
        if (_isChild
            && int.TryParse(Environment.GetEnvironmentVariable(Cluster.WorkerSlotVariable), NumberStyles.None, CultureInfo.InvariantCulture, out int slot)
            && int.TryParse(Environment.GetEnvironmentVariable(Cluster.WorkerGenerationVariable), NumberStyles.None, CultureInfo.InvariantCulture, out int gen)
            && slot < f)
        {
            _mySlot = slot;
            _myGeneration = gen;
        }
    }

    private static long Size(int numSlots, int numStopFlags)
        => Shmem.ShmemSize.Add(Shmem.ShmemSize.Add(sizeof(SupervisorRequestsHeader), Shmem.ShmemSize.Mul(numSlots, sizeof(SupervisorRequestSlot))),
            Shmem.ShmemSize.Mul(numStopFlags, sizeof(int)));

    internal static long ShmemSize(int numSlots, int maxChildren)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(numSlots, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxChildren, 1);
        return Size(numSlots, maxChildren);
    }

    /// <summary>The supervisor: creates the area (zeroed: every slot free, no stop flag set).</summary>
    internal static SupervisorRequests Init(ShmemSegment segment, ProcArray procs, int numSlots, int maxChildren)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ShmemRegion r = segment.InitStruct(ShmemName, ShmemSize(numSlots, maxChildren), region =>
        {
            var h = (SupervisorRequestsHeader*)region.Pointer;
            SLock.Init(ref h->Lock.Value);
            h->NumSlots = numSlots;
            h->NumStopFlags = maxChildren;
            // Written last; ShmemInitStruct's ready state publishes everything to other processes.
            h->Magic = SupervisorRequestsHeader.MagicValue;
        }, out _);
        return new SupervisorRequests(segment, procs, (SupervisorRequestsHeader*)r.Pointer, r.Size);
    }

    /// <summary>Opens the area the supervisor created.</summary>
    internal static SupervisorRequests Attach(ShmemSegment segment, ProcArray procs)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (!segment.TryFindStruct(ShmemName, out ShmemRegion r))
            throw new PgIpcException($"segment {segment.Handle.Id} has no supervisor request area ({ShmemName}); it was not made by a ClusterBuilder");
        var h = (SupervisorRequestsHeader*)r.Pointer;
        if (h->Magic != SupervisorRequestsHeader.MagicValue)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is not initialised (magic 0x{h->Magic:x8})");
        return new SupervisorRequests(segment, procs, h, r.Size);
    }

    /// <summary>The number of request slots (<see cref="ClusterBuilder.WithMaxSupervisorRequests"/>).</summary>
    public int NumSlots => _numSlots;

    // ------------------------------------------------------------------
    // Children: posting requests
    // ------------------------------------------------------------------

    /// <summary>
    /// Asks the supervisor to start the worker registered as <paramref name="entry"/>
    /// (<see cref="ClusterBuilder.AddOnRequestWorker"/>) and hand it <paramref name="assignment"/> (at most
    /// <see cref="MaxArgumentBytes"/>), as the autovacuum launcher asks the postmaster for a worker. The handle reports
    /// whether it started, its result, and frees the slot when disposed. Throws
    /// <see cref="NoFreeSupervisorRequestSlotException"/> when every slot is taken.
    /// </summary>
    public WorkerRequestHandle RequestWorker(string entry, ReadOnlySpan<byte> assignment)
    {
        (int slot, int generation) = Post(SupervisorRequestKind.StartWorker, entry, 0, assignment, PMSignalReason.StartWorker);
        return new WorkerRequestHandle(this, slot, generation);
    }

    /// <summary>
    /// Asks the supervisor to restart every running child named <paramref name="childName"/> (this process's sibling,
    /// or itself): each is asked to stop (its <see cref="Cluster.ShutdownRequested"/> reads true and its latch is set),
    /// and started again once it has exited. A child that does not stop within the stop grace is killed, which is a
    /// crash. A name the supervisor does not know is logged and ignored. Throws
    /// <see cref="NoFreeSupervisorRequestSlotException"/> when every slot is taken.
    /// </summary>
    public void RequestRestart(string childName)
        => Post(SupervisorRequestKind.RestartChild, childName, 0, [], PMSignalReason.RestartChild);

    /// <summary>
    /// Posts an application request to the supervisor's hooks (<see cref="ClusterBuilder.OnServiceRequest"/>), which
    /// run in the supervisor's loop with <paramref name="code"/> and <paramref name="argument"/> (at most
    /// <see cref="MaxArgumentBytes"/>). Requests are handled in the order they were posted. Throws
    /// <see cref="NoFreeSupervisorRequestSlotException"/> when every slot is taken.
    /// </summary>
    public void PostServiceRequest(int code, ReadOnlySpan<byte> argument)
        => Post(SupervisorRequestKind.Service, null, code, argument, PMSignalReason.ServiceRequest);

    private (int Slot, int Generation) Post(SupervisorRequestKind kind, string? name, int code, ReadOnlySpan<byte> argument, PMSignalReason reason)
    {
        byte[] nameBytes = [];
        if (kind != SupervisorRequestKind.Service)
        {
            ArgumentException.ThrowIfNullOrEmpty(name);
            nameBytes = Encoding.UTF8.GetBytes(name);
            if (nameBytes.Length >= SupervisorRequestSlot.NameCapacity)
                throw new ArgumentException($"name \"{name}\" takes {nameBytes.Length} UTF-8 bytes; at most {SupervisorRequestSlot.NameCapacity - 1}", nameof(name));
        }
        if (argument.Length > SupervisorRequestSlot.ArgumentCapacity)
            throw new ArgumentException($"an argument of {argument.Length} bytes; a request holds at most {SupervisorRequestSlot.ArgumentCapacity}", nameof(argument));
        if (!_segment.IsAttached)
            throw new ObjectDisposedException(nameof(SupervisorRequests), $"segment {_segment.Handle.Id} is detached");
        int pid = _segment.Platform.Processes.CurrentProcessId;
        int slot = -1, generation = 0;
        for (int attempt = 0; attempt < 2 && slot < 0; attempt++)
        {
            if (attempt == 1 && ReclaimAbandoned() == 0)
                break;
            // Lengths were checked above: the copies under the lock cannot throw.
            SLock.Acquire(ref _header->Lock.Value, ShmemName);
            for (int i = 0; i < _numSlots; i++)
            {
                SupervisorRequestSlot* s = _slots + i;
                if (s->State != 0)
                    continue;
                s->Kind = (int)kind;
                s->Generation++;
                s->RequesterPid = pid;
                s->Sequence = ++_header->NextSequence;
                s->Code = code;
                s->WorkerPid = 0;
                s->ExitCode = 0;
                nameBytes.CopyTo(new Span<byte>(s->Name, SupervisorRequestSlot.NameCapacity));
                s->NameLength = nameBytes.Length;
                argument.CopyTo(new Span<byte>(s->Argument, SupervisorRequestSlot.ArgumentCapacity));
                s->ArgumentLength = argument.Length;
                s->ResultLength = 0;
                s->State = (int)WorkerRequestState.Pending;
                slot = i;
                generation = s->Generation;
                break;
            }
            SLock.Release(ref _header->Lock.Value);
        }
        if (slot < 0)
            throw new NoFreeSupervisorRequestSlotException(_numSlots);
        if (!PMSignal.SendPostmasterSignal(_procs, reason))
        {
            Free(slot, generation);
            throw new PgIpcException($"the supervisor (PID {_procs.SupervisorPid}) of segment {_segment.Handle.Id} is gone; the request was not posted");
        }
        return (slot, generation);
    }

    /// <summary>
    /// Frees the worker requests whose outcome is known and whose requester has exited without releasing them.
    /// Returns how many. Liveness is checked outside the spinlock; a slot is freed only if it is unchanged.
    /// </summary>
    private int ReclaimAbandoned()
    {
        var candidates = new (int Slot, int Generation, int Pid)[_numSlots];
        int n = 0;
        SLock.Acquire(ref _header->Lock.Value, ShmemName);
        for (int i = 0; i < _numSlots; i++)
        {
            SupervisorRequestSlot* s = _slots + i;
            if (s->State is (int)WorkerRequestState.Finished or (int)WorkerRequestState.Failed or (int)WorkerRequestState.Exited)
                candidates[n++] = (i, s->Generation, s->RequesterPid);
        }
        SLock.Release(ref _header->Lock.Value);
        IProcessServices processes = _segment.Platform.Processes;
        int freed = 0;
        for (int k = 0; k < n; k++)
        {
            (int slot, int generation, int pid) = candidates[k];
            if (processes.GetLiveness(pid) != ProcessLiveness.Gone)
                continue;
            SLock.Acquire(ref _header->Lock.Value, ShmemName);
            SupervisorRequestSlot* s = _slots + slot;
            if (s->Generation == generation && s->RequesterPid == pid && s->State is (int)WorkerRequestState.Finished
                or (int)WorkerRequestState.Failed or (int)WorkerRequestState.Exited)
            {
                s->State = 0;
                freed++;
            }
            SLock.Release(ref _header->Lock.Value);
        }
        return freed;
    }

    /// <summary>Frees a slot if it still holds <paramref name="generation"/>.</summary>
    internal void Free(int slot, int generation)
    {
        if (!_segment.IsAttached || (uint)slot >= (uint)_numSlots)
            return;
        SLock.Acquire(ref _header->Lock.Value, ShmemName);
        SupervisorRequestSlot* s = _slots + slot;
        if (s->Generation == generation)
            s->State = 0;
        SLock.Release(ref _header->Lock.Value);
    }

    // ------------------------------------------------------------------
    // Workers: the assignment
    // ------------------------------------------------------------------

    /// <summary>
    /// In a worker the supervisor started for a request (<see cref="RequestWorker"/>): what it was asked to do; null
    /// in any other process, or when the request is gone (its requester released it).
    /// </summary>
    public WorkerAssignment? GetAssignment()
    {
        string? v = _isChild ? Environment.GetEnvironmentVariable(WorkerRequestVariable) : null;
        int colon = v?.IndexOf(':') ?? -1;
        if (colon < 0 || !_segment.IsAttached
            || !int.TryParse(v.AsSpan(0, colon), NumberStyles.None, CultureInfo.InvariantCulture, out int slot)
            || !int.TryParse(v.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int generation)
            || slot >= _numSlots)
            return null;
        SupervisorRequestSlot copy;
        SLock.Acquire(ref _header->Lock.Value, ShmemName);
        copy = _slots[slot];
        SLock.Release(ref _header->Lock.Value);
        if (copy.Generation != generation || copy.Kind != (int)SupervisorRequestKind.StartWorker || copy.State == 0)
            return null;
        TakenRequest r = Decode(slot, &copy);
        return new WorkerAssignment(this, slot, generation, r.Name, r.Argument);
    }

    /// <summary>The worker: stores its result and marks the request Finished. False when the request is gone.</summary>
    internal bool Complete(int slot, int generation, ReadOnlySpan<byte> result)
    {
        if (result.Length > SupervisorRequestSlot.ResultCapacity)
            throw new ArgumentException($"a result of {result.Length} bytes; a request holds at most {SupervisorRequestSlot.ResultCapacity}", nameof(result));
        if (!_segment.IsAttached)
            return false;
        int pid = _segment.Platform.Processes.CurrentProcessId;
        SLock.Acquire(ref _header->Lock.Value, ShmemName);
        SupervisorRequestSlot* s = _slots + slot;
        bool ok = s->Generation == generation && s->State is (int)WorkerRequestState.Pending or (int)WorkerRequestState.Started;
        if (ok)
        {
            result.CopyTo(new Span<byte>(s->Result, SupervisorRequestSlot.ResultCapacity));
            s->ResultLength = result.Length;
            s->WorkerPid = pid;
            s->State = (int)WorkerRequestState.Finished;
        }
        SLock.Release(ref _header->Lock.Value);
        return ok;
    }

    /// <summary>A request's state, pid, exit code and result (or failure text), read under the lock.</summary>
    internal WorkerRequestState Read(int slot, int generation, out int pid, out int exitCode, out byte[] result)
    {
        pid = 0;
        exitCode = 0;
        result = [];
        if (!_segment.IsAttached)
            return WorkerRequestState.Failed;
        SupervisorRequestSlot copy;
        SLock.Acquire(ref _header->Lock.Value, ShmemName);
        copy = _slots[slot];
        SLock.Release(ref _header->Lock.Value);
        if (copy.Generation != generation || copy.State == 0)
            return WorkerRequestState.Failed;
        pid = copy.WorkerPid;
        exitCode = copy.ExitCode;
        int len = copy.ResultLength;
        if (len is > 0 and <= SupervisorRequestSlot.ResultCapacity)
            result = new ReadOnlySpan<byte>(copy.Result, len).ToArray();
        return copy.State is >= (int)WorkerRequestState.Pending and <= (int)WorkerRequestState.Exited
            ? (WorkerRequestState)copy.State
            : throw new PgIpcException($"{ShmemName} slot {slot} is corrupt: State {copy.State}");
    }

    // ------------------------------------------------------------------
    // Per-child stop (the restart's SIGTERM)
    // ------------------------------------------------------------------

    /// <summary>True in a child whose stop the supervisor asked for (a restart request).</summary>
    internal bool StopRequestedForThisProcess
        => _mySlot >= 0 && _segment.IsAttached && Volatile.Read(ref _stop[_mySlot]) == _myGeneration; // acquire; pairs with RequestStop

    /// <summary>The supervisor: asks the child in background worker slot <paramref name="workerSlot"/> to stop.</summary>
    internal void RequestStop(int workerSlot, int generation)
    {
        if ((uint)workerSlot < (uint)_numStopFlags)
            Volatile.Write(ref _stop[workerSlot], generation); // release; pairs with StopRequestedForThisProcess
    }

    /// <summary>The supervisor: withdraws the stop request of a slot (before its child is started again).</summary>
    internal void ClearStop(int workerSlot)
    {
        if ((uint)workerSlot < (uint)_numStopFlags)
            Volatile.Write(ref _stop[workerSlot], 0); // release; pairs with StopRequestedForThisProcess
    }

    /// <summary>A slot's name and argument, from a private copy; lengths checked (another process wrote them).</summary>
    private static TakenRequest Decode(int i, SupervisorRequestSlot* s)
    {
        int nameLength = s->NameLength, argLength = s->ArgumentLength;
        if ((uint)nameLength >= SupervisorRequestSlot.NameCapacity)
            throw new PgIpcException($"{ShmemName} slot {i} is corrupt: NameLength {nameLength} is outside 0..{SupervisorRequestSlot.NameCapacity - 1}");
        if ((uint)argLength > SupervisorRequestSlot.ArgumentCapacity)
            throw new PgIpcException($"{ShmemName} slot {i} is corrupt: ArgumentLength {argLength} is outside 0..{SupervisorRequestSlot.ArgumentCapacity}");
        return new TakenRequest(i, s->Generation, (SupervisorRequestKind)s->Kind, s->RequesterPid, s->Sequence, s->Code,
            Encoding.UTF8.GetString(s->Name, nameLength), new ReadOnlySpan<byte>(s->Argument, argLength).ToArray());
    }
}
