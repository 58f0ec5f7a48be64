/*-------------------------------------------------------------------------
 * SupervisorRequests.Handles.cs
 *   What the three parties of a supervisor request hold: the requester's
 *   WorkerRequestHandle (the outcome, the result, the slot freed on
 *   Dispose), the worker's WorkerAssignment (what to do, where to report),
 *   and the ServiceRequestContext a service hook receives.
 *
 * NOTES
 *   Waiting polls the slot every 5 ms, as BackgroundWorkerHandle does (see
 *   BackgroundWorkers.cs for why no latch): requests are rare, and the
 *   caller's timeout bounds the poll.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Postmaster;

/// <summary>Every supervisor request slot is taken (raise <see cref="ClusterBuilder.WithMaxSupervisorRequests"/>).</summary>
public sealed class NoFreeSupervisorRequestSlotException(int capacity)
    : PgIpcException($"no free supervisor request slot: all {capacity} are in use (release finished worker requests, or raise WithMaxSupervisorRequests)")
{
    /// <summary>The number of request slots.</summary>
    public int Capacity { get; } = capacity;
}

/// <summary>
/// A worker request as its requester sees it (<see cref="SupervisorRequests.RequestWorker"/>): whether the worker
/// started, its pid, its result. Dispose frees the request's slot.
/// </summary>
public sealed class WorkerRequestHandle : IDisposable
{
    private const int PollMs = 5;
    private readonly SupervisorRequests _area;
    private bool _released;

    internal WorkerRequestHandle(SupervisorRequests area, int slot, int generation)
    {
        _area = area;
        Slot = slot;
        Generation = generation;
    }

    /// <summary>The request slot.</summary>
    public int Slot { get; }

    /// <summary>The slot's generation when the request was posted.</summary>
    public int Generation { get; }

    /// <summary>
    /// Where the request is now; <paramref name="pid"/> is the worker's once it started. A request whose slot was freed
    /// or whose shared memory is gone reads <see cref="WorkerRequestState.Failed"/>.
    /// </summary>
    public WorkerRequestState GetState(out int pid) => _area.Read(Slot, Generation, out pid, out _, out _);

    /// <summary>The worker's result (<see cref="WorkerRequestState.Finished"/>), else empty.</summary>
    public byte[] Result => _area.Read(Slot, Generation, out _, out _, out byte[] r) == WorkerRequestState.Finished ? r : [];

    /// <summary>Why the worker could not be started (<see cref="WorkerRequestState.Failed"/>), else null.</summary>
    public string? FailureReason
        => _area.Read(Slot, Generation, out _, out _, out byte[] r) == WorkerRequestState.Failed
            ? (r.Length > 0 ? System.Text.Encoding.UTF8.GetString(r) : "the request is gone (released, or its shared memory was rebuilt)")
            : null;

    /// <summary>The worker's exit code (<see cref="WorkerRequestState.Exited"/>), else 0.</summary>
    public int ExitCode => _area.Read(Slot, Generation, out _, out int code, out _) == WorkerRequestState.Exited ? code : 0;

    /// <summary>
    /// Waits until the worker has been started and returns its pid. Throws <see cref="PgIpcException"/> with the
    /// supervisor's reason when it could not be started, <see cref="TimeoutException"/> when the supervisor has not
    /// acted in time (<see cref="Timeout.InfiniteTimeSpan"/>: no limit).
    /// </summary>
    public int WaitForStartup(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        WorkerRequestState st = WaitWhile(s => s == WorkerRequestState.Pending, timeout, cancellationToken, "started");
        if (st == WorkerRequestState.Failed)
            throw new PgIpcException($"the worker of supervisor request {Slot} (generation {Generation}) was not started: {FailureReason}");
        GetState(out int pid);
        return pid;
    }

    /// <summary>
    /// Waits until the request is over: the worker reported (<see cref="WorkerRequestState.Finished"/>), exited without
    /// a report (<see cref="WorkerRequestState.Exited"/>) or could not start (<see cref="WorkerRequestState.Failed"/>).
    /// Throws <see cref="TimeoutException"/> (<see cref="Timeout.InfiniteTimeSpan"/>: no limit).
    /// </summary>
    public WorkerRequestState WaitForOutcome(TimeSpan timeout, CancellationToken cancellationToken = default)
        => WaitWhile(s => s is WorkerRequestState.Pending or WorkerRequestState.Started, timeout, cancellationToken, "over");

    private WorkerRequestState WaitWhile(Func<WorkerRequestState, bool> waiting, TimeSpan timeout, CancellationToken cancellationToken, string what)
    {
        long deadline = BackgroundWorkerHandle.Deadline(timeout);
        while (true)
        {
            WorkerRequestState st = GetState(out _);
            if (!waiting(st))
                return st;
            if (Environment.TickCount64 > deadline)
                throw new TimeoutException($"supervisor request {Slot} (generation {Generation}) was not {what} within {timeout.TotalMilliseconds} ms (it is {st})");
            cancellationToken.ThrowIfCancellationRequested();
            Thread.Sleep(PollMs);
        }
    }

    /// <summary>Frees the request's slot (the worker, if running, goes on; its report is then dropped).</summary>
    public void Dispose()
    {
        if (_released)
            return;
        _released = true;
        _area.Free(Slot, Generation);
    }

    /// <inheritdoc/>
    public override string ToString() => $"supervisor request slot {Slot} generation {Generation}";
}

/// <summary>
/// What a worker started for a request was asked to do (<see cref="SupervisorRequests.GetAssignment"/>): the entry it
/// was started as and the requester's argument block; <see cref="Complete"/> reports its result.
/// </summary>
public sealed class WorkerAssignment
{
    private readonly SupervisorRequests _area;
    private readonly byte[] _argument;

    internal WorkerAssignment(SupervisorRequests area, int slot, int generation, string entry, byte[] argument)
    {
        _area = area;
        Slot = slot;
        Generation = generation;
        Entry = entry;
        _argument = argument;
    }

    /// <summary>The request slot.</summary>
    public int Slot { get; }

    /// <summary>The request's generation.</summary>
    public int Generation { get; }

    /// <summary>The on-request worker entry the requester named.</summary>
    public string Entry { get; }

    /// <summary>The requester's argument block.</summary>
    public ReadOnlySpan<byte> Argument => _argument;

    /// <summary>
    /// Reports <paramref name="result"/> (at most <see cref="SupervisorRequests.MaxResultBytes"/>) to the requester and
    /// marks the request <see cref="WorkerRequestState.Finished"/>. False when the requester has already released it.
    /// </summary>
    public bool Complete(ReadOnlySpan<byte> result) => _area.Complete(Slot, Generation, result);
}

/// <summary>A service request as the supervisor's hooks see it (<see cref="ClusterBuilder.OnServiceRequest"/>).</summary>
public sealed class ServiceRequestContext
{
    internal ServiceRequestContext(Supervisor supervisor, int code, byte[] argument, int requesterPid)
    {
        Supervisor = supervisor;
        Code = code;
        Argument = argument;
        RequesterPid = requesterPid;
    }

    /// <summary>The supervisor (the hook runs in its loop: keep it short, and do not wait for the loop).</summary>
    public Supervisor Supervisor { get; }

    /// <summary>The requester's code.</summary>
    public int Code { get; }

    /// <summary>The requester's argument block.</summary>
    public ReadOnlyMemory<byte> Argument { get; }

    /// <summary>The pid of the process that posted the request.</summary>
    public int RequesterPid { get; }
}
