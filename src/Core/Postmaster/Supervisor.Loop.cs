/*-------------------------------------------------------------------------
 * Supervisor.Loop.cs
 *   The supervisor's server loop: adopts workers registered from other
 *   processes, reaps exited children and decides which exits are crashes,
 *   and starts the children that are due, by exec.
 *
 * NOTES
 *   The loop. One dedicated thread (not the thread pool) runs the
 *   supervisor's loop, the ServerLoop of postmaster.c. It sleeps on an
 *   event that child exits (Process.Exited) and PMSignal interrupts (the
 *   OnSignal hook) set, and also wakes every 100 ms and polls each child's
 *   HasExited: Exited is raised on a runtime thread and may come late (or,
 *   under Wine, slowly), so the poll bounds the delay. All supervisor state
 *   is under one monitor, taken by the loop and by the public methods.
 *
 *   Exits. Exit code 0 is a clean exit: the worker's slot is freed (and
 *   ProcArray's slots of dead pids reclaimed); it is not restarted
 *   (PostgreSQL: a worker that exits 0 is unregistered). Any other exit,
 *   including death by a signal (.NET reports 128 + signal on Unix) or
 *   TerminateProcess, is a crash, because the child may have died inside a
 *   critical section and left shared structures half-changed; what a crash
 *   does is in Supervisor.Shutdown.cs (HandleChildCrash).
 *   An exit code of 0 is a crash too when the child's slots still hold
 *   LWLocks (a participant closed by the process-exit hook keeps them, and
 *   its PGPROC mirror says so): the process ended inside a critical section.
 *   Exit code 1 of a background worker or a backend is an error exit, not
 *   a crash (as bgworker.c and the postmaster treat exit(1)): a permanent
 *   worker is started again in its slot after its restart interval, any
 *   other is unregistered; an auxiliary process has no such exit.
 *   ParticipantExitCodes.Terminated (81) is the exit of a child terminated
 *   on request (ProcArray.TerminateParticipant) after it released its locks
 *   and slot: handled as exit code 1, for every kind, never a crash.
 *
 *   Starting. A child is started with System.Diagnostics.Process (exec,
 *   not fork) and receives the cluster through environment variables (see
 *   Supervisor.cs). A start that fails is not a crash: nothing ran, and
 *   the worker is forgotten.
 *
 *   Requests. Each turn also acts on the children's requests (PMSignal
 *   StartWorker, RestartChild, ServiceRequest; Supervisor.Requests.cs): a
 *   child asked to restart that exits cleanly is armed to start again
 *   instead of being forgotten, and the exit of a worker started for a
 *   request is written back to that request.
 *
 *   Mirrors src/backend/postmaster/postmaster.c (ServerLoop, reaper,
 *   maybe_start_bgworkers) and bgworker.c (BackgroundWorkerStateChange).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using PgIpc.Diagnostics;
using PgIpc.Proc;
using PgIpc.Signals;

namespace PgIpc.Postmaster;

partial class Supervisor
{
    // ------------------------------------------------------------------
    // The loop
    // ------------------------------------------------------------------

    private void Loop()
    {
        while (!_loopExit)
        {
            _wake.WaitOne(PollIntervalMs);
            lock (_lock)
            {
                if (_loopExit)
                    break;
                try
                {
                    Step();
                }
                catch (Exception ex)
                {
                    // The loop must survive anything one step throws (a start that fails, a log that fails).
                    _log.SupervisorLoopError(ex);
                }
            }
        }
    }

    /// <summary>One turn of the loop: adopt new registrations, reap exits, handle a crash, start what is due.</summary>
    private void Step()
    {
        if (State is ClusterState.Stopped or ClusterState.Created)
            return;
        if (PMSignal.CheckPostmasterSignal(_cluster.Procs, PMSignalReason.BackgroundWorkerChange))
            AdoptRegistrations();
        HandleSupervisorRequests(); // StartWorker, RestartChild, ServiceRequest (Supervisor.Requests.cs)
        EnforceRestartDeadlines();

        string? crash = null;
        bool anyClean = false;
        for (int i = _children.Count - 1; i >= 0; i--)
        {
            ChildRecord r = _children[i];
            if (r.Process is null || !r.Process.HasExited)
                continue;
            int code = r.Process.ExitCode;
            ChildGone(r);
            WorkerRequestExited(r, code);
            // A clean exit that left LWLocks held (its slot still names them: Participant.Close keeps the locks of a
            // participant that ends with the process) is a crash: what the locks protect may be half-changed.
            bool terminated = code == ParticipantExitCodes.Terminated;
            int held = code is 0 or 1 || terminated ? HeldLWLocksOf(r.Pid) : 0;
            if (RearmRestartedChild(r, code, held))
            {
                anyClean = true;
                continue;
            }
            if (held > 0 && State == ClusterState.Running)
            {
                crash ??= $"{Describe(r)} exited with exit code {code} while holding {held} LWLock(s)";
                _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Stopped, 0, free: true);
                if (!r.Spec.IsPermanent)
                    _children.RemoveAt(i);
                continue;
            }
            if ((code == 1 && r.Spec.Kind != ProcKind.Auxiliary || terminated) && State == ClusterState.Running)
            {
                if (terminated)
                    _log.ChildTerminated(Describe(r), r.Spec.IsPermanent ? r.Spec.RestartIntervalMs : -1);
                // Exit code 1 of a background worker or backend is an error exit, not a crash (bgworker.c: exit(1)
                // means "restart me after my interval"): a permanent worker is started again in the same slot, others
                // are unregistered. Auxiliary processes have no such exit; theirs is a crash.
                anyClean = true;
                if (r.Spec.IsPermanent)
                {
                    if (!terminated)
                        _log.ChildErrorExit(Describe(r), r.Spec.RestartIntervalMs);
                    _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Registered, 0, free: false);
                    r.NotBeforeMs = Environment.TickCount64 + r.Spec.RestartIntervalMs;
                }
                else
                {
                    _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Stopped, 0, free: true);
                    _children.RemoveAt(i);
                }
                continue;
            }
            if (code == 0 || State == ClusterState.ShuttingDown)
            {
                if (code != 0)
                {
                    _log.ChildExitedDuringShutdown(Describe(r), code);
                    _uncleanExit = true;
                }
                else
                {
                    _log.ChildExited(Describe(r));
                }
                _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Stopped, 0, free: true);
                _children.RemoveAt(i);
                anyClean = true;
            }
            else
            {
                crash ??= $"{Describe(r)} {ExitReason(code)}";
                _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Stopped, 0, free: true);
                if (!r.Spec.IsPermanent)
                    _children.RemoveAt(i);
            }
        }
        if (anyClean)
            _cluster.Procs.ReclaimDeadSlots();
        if (crash is not null && State == ClusterState.Running)
            HandleChildCrash(crash);

        if (State == ClusterState.Running)
            StartDueChildren();
        if (State == ClusterState.ShuttingDown && !_children.Any(r => r.Process is not null))
            _childrenGone.Set();
    }

    private void AdoptRegistrations()
    {
        List<(int Slot, int Generation, PgIpcException Error)> corrupt = [];
        List<(int Slot, int Generation, ChildSpec Spec)> registered = _cluster.BackgroundWorkers.RegisteredSlots(corrupt);
        foreach ((int slot, int generation, PgIpcException error) in corrupt)
        {
            // Written wrongly by another process: nothing to start. Free the slot, as a registration that failed.
            _log.WorkerSlotCorrupt(slot, error.Message);
            _cluster.BackgroundWorkers.SetState(slot, generation, BackgroundWorkerState.Stopped, 0, free: true);
        }
        foreach ((int slot, int generation, ChildSpec spec) in registered)
        {
            if (_children.Any(r => r.Slot == slot && r.Generation == generation))
                continue;
            if (State != ClusterState.Running)
            {
                _cluster.BackgroundWorkers.SetState(slot, generation, BackgroundWorkerState.Stopped, 0, free: true);
                continue;
            }
            _children.Add(new ChildRecord(spec) { Slot = slot, Generation = generation });
        }
    }

    private void StartDueChildren()
    {
        long now = Environment.TickCount64;
        for (int i = _children.Count - 1; i >= 0; i--)
        {
            ChildRecord r = _children[i];
            if (r.Process is not null || now < r.NotBeforeMs)
                continue;
            try
            {
                StartProcess(r);
            }
            catch (Exception ex)
            {
                // Not a crash: nothing ran. A permanent worker is tried again after its restart interval (at least one
                // turn of the loop), as the postmaster marks a worker whose fork failed crashed and starts it later; a
                // transient failure (no memory for a process, a busy loader) must not leave the cluster without it.
                if (r.Spec.IsPermanent)
                {
                    long retryMs = Math.Max(r.Spec.RestartIntervalMs, PollIntervalMs);
                    _log.ChildStartRetry(Describe(r), ex.Message, retryMs);
                    r.NotBeforeMs = now + retryMs;
                    continue;
                }
                // Others are forgotten, as the postmaster forgets a worker that must never restart.
                _log.ChildStartFailed(Describe(r), ex.Message);
                WorkerRequestStartFailed(r, ex.Message);
                _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Stopped, 0, free: true);
                _children.RemoveAt(i);
            }
        }
    }

    private void StartProcess(ChildRecord r)
    {
        var psi = new ProcessStartInfo { FileName = r.Spec.FileName, UseShellExecute = false };
        foreach (string a in r.Spec.Arguments)
            psi.ArgumentList.Add(a);
        psi.Environment[Cluster.HandleVariable] = _cluster.Segment.Handle.ToString();
        psi.Environment[Cluster.SupervisorPidVariable] = _platform.Processes.CurrentProcessId.ToString(CultureInfo.InvariantCulture);
        psi.Environment[Cluster.ProcKindVariable] = r.Spec.Kind.ToString();
        psi.Environment[Cluster.WorkerSlotVariable] = r.Slot.ToString(CultureInfo.InvariantCulture);
        psi.Environment[Cluster.WorkerGenerationVariable] = r.Generation.ToString(CultureInfo.InvariantCulture);
        if (r.RequestSlot >= 0)
            psi.Environment[SupervisorRequests.WorkerRequestVariable] = string.Create(CultureInfo.InvariantCulture, $"{r.RequestSlot}:{r.RequestGeneration}");
        else
            psi.Environment.Remove(SupervisorRequests.WorkerRequestVariable);
        var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
        // Runs on a runtime thread; only wakes the loop (the 100 ms poll covers a late or lost event).
        p.Exited += (_, _) => _wake.Set();
        if (!p.Start())
        {
            p.Dispose();
            throw new PgIpcException($"Process.Start of \"{r.Spec.FileName}\" started nothing");
        }
        r.Process = p;
        r.Pid = p.Id;
        r.Starts++;
        Interlocked.Increment(ref _runningChildren);
        _log.ChildStarted(Describe(r));
        _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Started, p.Id, free: false);
        WorkerRequestStarted(r, p);
    }
}
