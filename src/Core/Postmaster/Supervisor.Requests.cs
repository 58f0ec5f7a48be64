/*-------------------------------------------------------------------------
 * Supervisor.Requests.cs
 *   The supervisor acting on children's requests (PMSignal StartWorker,
 *   RestartChild, ServiceRequest; the area is SupervisorRequests.cs):
 *   starting an on-request worker with its assignment, restarting a child,
 *   running the application's service hooks.
 *
 * NOTES
 *   Start a worker (the autovacuum launcher's request). The supervisor
 *   looks the entry up among the builder's on-request workers (it never
 *   execs what a request names), registers a child for it (a background
 *   worker slot: the count of children stays bounded by WithMaxChildren),
 *   and the loop starts it with PGIPC_WORKER_REQUEST naming the request, so
 *   the worker finds its assignment. An unknown entry, no free child slot,
 *   a shutdown under way or a failed exec is written back as Failed with
 *   the reason (AutoVacWorkerFailed's role); the start writes Started with
 *   the pid, the exit Exited with the exit code unless the worker reported.
 *
 *   Restart a child. Every running child of that name is asked to stop, as
 *   a fast shutdown asks all of them (its stop flag, then its latch); its
 *   record is kept, and when it exits cleanly (0, or a worker's error exit
 *   1) its slot is armed again and it is started on the next turn. One that
 *   has not exited after the stop grace is killed, and that exit is a crash
 *   (it may have died inside a critical section). An unknown name, or a
 *   child not running, is logged and ignored.
 *
 *   Service requests. Each hook runs on the loop's thread, under the
 *   supervisor's lock (a hook may call the supervisor's methods; it must
 *   not wait for the loop). An exception from a hook is logged and the loop
 *   goes on, as for any step that throws.
 *
 *   Mirrors src/backend/postmaster/postmaster.c (process_pm_pmsignal's
 *   PMSIGNAL_START_AUTOVAC_WORKER, StartAutovacuumWorker) and bgworker.c
 *   (TerminateBackgroundWorker).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using PgIpc.Diagnostics;
using PgIpc.Proc;
using PgIpc.Signals;

namespace PgIpc.Postmaster;

partial class Supervisor
{
    /// <summary>One turn's requests: consumes the three PMSignal flags and acts on what the area holds.</summary>
    private void HandleSupervisorRequests()
    {
        ProcArray procs = _cluster.Procs;
        // Each flag is consumed even when another is not: one scan serves all three.
        bool start = PMSignal.CheckPostmasterSignal(procs, PMSignalReason.StartWorker);
        bool restart = PMSignal.CheckPostmasterSignal(procs, PMSignalReason.RestartChild);
        bool service = PMSignal.CheckPostmasterSignal(procs, PMSignalReason.ServiceRequest);
        if (!start && !restart && !service)
            return;
        SupervisorRequests area = _cluster.SupervisorRequests;
        List<(int Slot, string Error)> corrupt = [];
        List<TakenRequest> taken = area.TakePending(corrupt);
        foreach ((int slot, string error) in corrupt)
            _log.SupervisorRequestCorrupt(slot, error);
        foreach (TakenRequest r in taken)
        {
            switch (r.Kind)
            {
                case SupervisorRequestKind.StartWorker:
                    AcceptWorkerRequest(area, r);
                    break;
                case SupervisorRequestKind.RestartChild:
                    RestartChildren(r.Name, r.RequesterPid);
                    break;
                case SupervisorRequestKind.Service:
                    RunServiceHooks(r);
                    break;
            }
        }
    }

    private void AcceptWorkerRequest(SupervisorRequests area, TakenRequest r)
    {
        if (_children.Any(c => c.RequestSlot == r.Slot && c.RequestGeneration == r.Generation))
            return; // accepted at an earlier turn
        string? why = null;
        ChildSpec? spec = _builder.OnRequestWorkers.FirstOrDefault(s => s.Name == r.Name);
        if (State != ClusterState.Running)
            why = $"the cluster is {State}";
        else if (spec is null)
            why = $"no on-request worker is named \"{r.Name}\" (ClusterBuilder.AddOnRequestWorker)";
        else
        {
            try
            {
                AddRecord(spec, 0, r.Slot, r.Generation);
                return;
            }
            catch (NoFreeBackgroundWorkerSlotException ex)
            {
                why = ex.Message;
            }
        }
        _log.WorkerRequestFailed(r.Name, r.RequesterPid, why);
        area.Fail(r.Slot, r.Generation, why);
    }

    private void RestartChildren(string name, int requesterPid)
    {
        List<ChildRecord> targets = [.. _children.Where(c => c.Spec.Name == name)];
        if (targets.Count == 0)
        {
            _log.RestartRequestIgnored(name, requesterPid, "no child of this supervisor has that name");
            return;
        }
        if (State != ClusterState.Running)
        {
            _log.RestartRequestIgnored(name, requesterPid, $"the cluster is {State}");
            return;
        }
        foreach (ChildRecord r in targets)
        {
            if (r.Process is null)
            {
                _log.RestartRequestIgnored(name, requesterPid, "it is not running (it is started when due)");
                continue;
            }
            if (r.RequestSlot >= 0)
            {
                _log.RestartRequestIgnored(name, requesterPid, "it was started for a worker request, which it serves once");
                continue;
            }
            if (r.RestartDeadlineMs != 0)
                continue; // already being restarted
            _log.ChildRestartRequested(Describe(r), requesterPid);
            r.RestartDeadlineMs = Environment.TickCount64 + Math.Max(1, (long)_builder.StopGraceValue.TotalMilliseconds);
            _cluster.SupervisorRequests.RequestStop(r.Slot, r.Generation);
            foreach (PgProcInfo p in _cluster.Procs.GetProcs())
                if (p.Pid == r.Pid)
                    Latch.Latches.SetLatch(_cluster.Procs, p.ProcNumber);
        }
    }

    /// <summary>Kills the children asked to restart that have not exited within the stop grace (their exit is a crash).</summary>
    private void EnforceRestartDeadlines()
    {
        long now = Environment.TickCount64;
        foreach (ChildRecord r in _children)
        {
            if (r.RestartDeadlineMs == 0 || r.Process is null || now < r.RestartDeadlineMs)
                continue;
            if (!r.Process.HasExited)
                KillChild(r.Process);
            r.RestartDeadlineMs = long.MaxValue; // killed once; its exit is reaped as any other
        }
    }

    /// <summary>
    /// A child asked to restart exited with <paramref name="code"/>: true when that was a clean stop and its slot is
    /// armed to start again now; false leaves the exit to the normal handling (a crash, a shutdown).
    /// </summary>
    private bool RearmRestartedChild(ChildRecord r, int code, int heldLWLocks)
    {
        if (r.RestartDeadlineMs == 0)
            return false;
        r.RestartDeadlineMs = 0;
        _cluster.SupervisorRequests.ClearStop(r.Slot);
        // A clean stop: exit 0, or a worker's or backend's error exit 1 (an auxiliary process has no such exit).
        bool clean = code == 0 || (code == 1 && r.Spec.Kind != ProcKind.Auxiliary);
        if (!clean || heldLWLocks > 0 || State != ClusterState.Running)
            return false;
        _log.ChildExited(Describe(r));
        _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Registered, 0, free: false);
        r.NotBeforeMs = 0;
        return true;
    }

    private void RunServiceHooks(TakenRequest r)
    {
        if (_builder.ServiceHooks.Count == 0)
        {
            _log.ServiceRequestUnhandled(r.Code, r.RequesterPid);
            return;
        }
        var context = new ServiceRequestContext(this, r.Code, r.Argument, r.RequesterPid);
        foreach (Action<ServiceRequestContext> hook in _builder.ServiceHooks)
        {
            try
            {
                hook(context);
            }
            catch (Exception ex)
            {
                // The application's code: whatever it throws, the supervisor goes on.
                _log.ServiceRequestFailed(ex, r.Code, r.RequesterPid);
            }
        }
    }

    /// <summary>The request a child was started for: its outcome follows the child's process.</summary>
    private void WorkerRequestStarted(ChildRecord r, Process p)
    {
        if (r.RequestSlot >= 0)
            _cluster.SupervisorRequests.MarkStarted(r.RequestSlot, r.RequestGeneration, p.Id);
    }

    private void WorkerRequestExited(ChildRecord r, int code)
    {
        if (r.RequestSlot >= 0 && _cluster.IsAttached)
            _cluster.SupervisorRequests.MarkExited(r.RequestSlot, r.RequestGeneration, r.Pid, code);
    }

    private void WorkerRequestStartFailed(ChildRecord r, string why)
    {
        if (r.RequestSlot >= 0)
            _cluster.SupervisorRequests.Fail(r.RequestSlot, r.RequestGeneration, why);
    }
}
