/*-------------------------------------------------------------------------
 * Supervisor.Shutdown.cs
 *   The supervisor's crash handling (stop every child, rebuild shared
 *   memory, re-register the permanent workers), stopping and killing
 *   children, the shutdown writes, destroying shared memory, and the
 *   public Shutdown / WaitForStopped / Dispose.
 *
 * NOTES
 *   Crash restart. After a crash (see Supervisor.Loop.cs for which exits
 *   are crashes) the supervisor logs why, asks every other child to stop
 *   (ShutdownRequested plus a SetLatch on every participant slot), kills
 *   those still running after the stop grace, destroys the segment and
 *   (restart-after-crash on) creates a new one, runs the startup hooks
 *   again and re-registers the permanent workers, each started after its
 *   restart interval. Children get the new handle; dynamic workers with
 *   RestartIntervalMs -1 are forgotten (a handle always belongs to one
 *   incarnation of shared memory). With restart-after-crash off the
 *   cluster shuts down instead.
 *
 *   Shutdown. Smart waits for the children to exit on their own; Fast sets
 *   ShutdownRequested and every participant's latch, then waits; Immediate
 *   kills them. Whichever mode, children still running at the deadline are
 *   killed; then the segment is destroyed. Dispose = Fast + destroy. When
 *   every child left on its own (Smart, Fast in time) the buffer pool's
 *   dirty buffers are written first (the buffer half of the shutdown
 *   checkpoint); after a kill a child may have died holding a buffer lock,
 *   so nothing is written, as after a crash.
 *
 *   Mirrors src/backend/postmaster/postmaster.c (HandleChildCrash,
 *   PostmasterStateMachine, the pmdie shutdown modes).
 *-------------------------------------------------------------------------
 */
using PgIpc.Buffers;
using PgIpc.Diagnostics;
using PgIpc.Proc;

namespace PgIpc.Postmaster;

partial class Supervisor
{
    // ------------------------------------------------------------------
    // Crash handling, stopping children, destroying shared memory
    // ------------------------------------------------------------------

    /// <summary>HandleChildCrash + the restart: stop everyone, rebuild shared memory, re-register permanent workers.</summary>
    private void HandleChildCrash(string why)
    {
        _log.ChildCrashed(why);
        StopAllChildren(_builder.StopGraceValue, immediate: true);
        List<ChildSpec> permanent = [.. _children.Where(r => r.Spec.IsPermanent).Select(r => r.Spec)];
        _children.Clear();
        if (!_builder.RestartAfterCrashValue)
        {
            _log.CrashShutdown();
            DestroyShmem();
            State = ClusterState.Stopped;
            PgIpcMetrics.RemoveSupervisor(this);
            _childrenGone.Set();
            _stopped.Set();
            return;
        }
        _log.CrashRestart();
        _uncleanExit = false; // the killed ones' locks went with the old segment
        DestroyShmem();
        try
        {
            InitShmem(_builder.Modules());
        }
        catch (Exception ex) when (ex is PgIpcException or IOException or UnauthorizedAccessException)
        {
            // A module could not be made again (WAL recovery failed, the disk is gone): stop with the reason, never
            // loop over a destroyed segment.
            _log.CrashReinitFailed(ex.Message);
            State = ClusterState.Stopped;
            _childrenGone.Set();
            _stopped.Set();
            return;
        }
        Interlocked.Increment(ref _incarnation);
        Interlocked.Increment(ref _crashRestarts);
        if (PgIpcMetrics.CrashRestartCounter.Enabled)
            PgIpcMetrics.CrashRestartCounter.Add(1, new KeyValuePair<string, object?>(PgIpcMetrics.ClusterTag, _builder.Key));
        RunStartupHooks();
        long now = Environment.TickCount64;
        foreach (ChildSpec spec in permanent)
            AddRecord(spec, now + spec.RestartIntervalMs);
    }

    /// <summary>Asks every child to exit, waits up to <paramref name="grace"/>, kills the rest and reaps them all.</summary>
    private void StopAllChildren(TimeSpan grace, bool immediate = false)
    {
        RequestChildrenStop(immediate);
        long deadline = Environment.TickCount64 + (long)grace.TotalMilliseconds;
        while (_children.Any(r => r.Process is { HasExited: false }) && Environment.TickCount64 < deadline)
            Thread.Sleep(10);
        KillAllChildren();
    }

    /// <summary>Sets ShutdownRequested and every in-use participant's latch (the children's wake-up).</summary>
    private void RequestChildrenStop(bool immediate = false)
    {
        if (!_cluster.IsAttached)
            return;
        _cluster.BackgroundWorkers.RequestShutdown(immediate);
        foreach (PgProcInfo p in _cluster.Procs.GetProcs())
            Latch.Latches.SetLatch(_cluster.Procs, p.ProcNumber);
    }

    /// <summary>Kills every child still running (SIGKILL / TerminateProcess) and reaps all of them.</summary>
    private void KillAllChildren()
    {
        foreach (ChildRecord r in _children)
        {
            if (r.Process is null)
                continue;
            if (!r.Process.HasExited)
            {
                _uncleanExit = true;
                KillChild(r.Process);
            }
            if (!r.Process.WaitForExit(10_000))
                _log.ChildKillTimedOut(Describe(r));
            ChildGone(r);
            _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Stopped, 0, free: true);
        }
    }

    /// <summary>
    /// Kills a child and its descendants (SIGKILL / TerminateProcess). When the walk of the process tree fails (it
    /// reads every process's start time, and one exiting meanwhile can break it: seen under Wine as "Not a valid
    /// Win32 FileTime"), the child alone is killed: it must go whatever its descendants do.
    /// </summary>
    internal static void KillChild(System.Diagnostics.Process p)
    {
        try
        {
            p.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // It exited between the caller's check and the kill.
        }
        catch (Exception e) when (e is ArgumentException or System.ComponentModel.Win32Exception)
        {
            try
            {
                p.Kill();
            }
            catch (InvalidOperationException)
            {
                // It exited meanwhile.
            }
        }
    }

    /// <summary>Writes every dirty shared buffer (the buffer half of the shutdown checkpoint); failures are logged.</summary>
    private void FlushBuffersAtShutdown()
    {
        BufferPool? pool = _cluster.IsAttached ? _cluster.Buffers : null;
        Wal.XLog? wal = _cluster.IsAttached ? _cluster.Find<Wal.XLog>() : null;
        if (pool is null && wal is null)
            return;
        Participant? mine = null;
        try
        {
            Participant? me = Participant.CurrentOrNull;
            if (me is null || me.ProcArray != _cluster.Procs)
            {
                try { mine = _cluster.Procs.Join(ProcKind.Auxiliary); }
                catch (NoFreeProcSlotException) { mine = _cluster.Procs.Join(ProcKind.Backend); }
                me = mine;
            }
            int written = pool?.FlushAllBuffers(me) ?? 0;
            if (written > 0)
                _log.ShutdownBuffersWritten(written);
            wal?.Checkpoint(me, Wal.DbState.ShutDown); // the shutdown checkpoint: no replay at the next start
        }
        catch (Exception ex) when (ex is PgIpcException or IOException or InvalidOperationException)
        {
            _log.ShutdownFlushFailed(ex.Message);
        }
        finally
        {
            mine?.Dispose();
        }
    }

    private void DestroyShmem()
    {
        if (!_cluster.IsAttached)
            return;
        try
        {
            _cluster.DetachModules();
        }
        catch (AggregateException ex)
        {
            _log.ShmemDestroyFailed("detaching the modules of", _cluster.Segment.Handle.Id, ex.Flatten().Message);
        }
        try
        {
            _cluster.Segment.Destroy();
        }
        catch (AggregateException ex)
        {
            // The segment is gone; report what an on-detach callback could not undo.
            _log.ShmemDestroyFailed("destroying", _cluster.Segment.Handle.Id, ex.Flatten().Message);
        }
    }

    // ------------------------------------------------------------------
    // Shutdown
    // ------------------------------------------------------------------

    /// <summary>
    /// Shuts the cluster down: <paramref name="mode"/> decides how children are stopped; those still running after
    /// <paramref name="timeout"/> (<see cref="Timeout.InfiniteTimeSpan"/>: no deadline) are killed. Then shared memory is
    /// destroyed. Returns false when children had to be killed at the deadline. Idempotent.
    /// </summary>
    public bool Shutdown(ShutdownMode mode, TimeSpan timeout) => Shutdown(mode, timeout, CancellationToken.None);

    /// <summary>
    /// As <see cref="Shutdown(ShutdownMode, TimeSpan)"/>, where <paramref name="deadline"/> cancelled is the deadline
    /// too: children still running then are killed (a host's shutdown timeout). The shutdown always completes; it
    /// does not throw <see cref="OperationCanceledException"/>.
    /// </summary>
    public bool Shutdown(ShutdownMode mode, TimeSpan timeout, CancellationToken deadline)
    {
        bool inTime = true;
        bool first = false;
        lock (_lock)
        {
            first = State is ClusterState.Created or ClusterState.Running;
            if (first)
                _log.ShutdownStarted(mode.ToString());
            if (State == ClusterState.Created)
            {
                _children.Clear();
                State = ClusterState.ShuttingDown;
                _childrenGone.Set();
            }
            else if (State == ClusterState.Running)
            {
                State = ClusterState.ShuttingDown;
                if (mode == ShutdownMode.Fast)
                    RequestChildrenStop();
                else if (mode == ShutdownMode.Immediate)
                    KillAllChildren();
                _children.RemoveAll(r => r.Process is null);
                if (_children.Count == 0)
                    _childrenGone.Set();
            }
        }
        _wake.Set();
        bool gone;
        try
        {
            gone = _childrenGone.Wait(timeout, deadline);
        }
        catch (OperationCanceledException)
        {
            gone = _childrenGone.IsSet;
        }
        if (!gone)
        {
            inTime = false;
            lock (_lock)
            {
                _log.ShutdownKilledChildren(timeout.TotalMilliseconds);
                KillAllChildren();
                _children.Clear();
            }
        }
        _loopExit = true;
        _wake.Set();
        if (_loop is not null && _loop != Thread.CurrentThread)
            _loop.Join();
        lock (_lock)
        {
            KillAllChildren();
            _children.Clear();
            // The shutdown checkpoint's writes, when every child left on its own (a killed one may hold a buffer lock).
            if (inTime && !_uncleanExit && mode != ShutdownMode.Immediate && State == ClusterState.ShuttingDown)
                FlushBuffersAtShutdown();
            DestroyShmem();
            State = ClusterState.Stopped;
        }
        PgIpcMetrics.RemoveSupervisor(this);
        if (first)
            _log.ShutdownCompleted();
        _childrenGone.Set();
        _stopped.Set();
        return inTime;
    }

    /// <summary>
    /// Waits until the cluster has stopped (after a shutdown, or a crash with restart-after-crash off); false at the
    /// timeout (<see cref="Timeout.InfiniteTimeSpan"/>: none).
    /// </summary>
    public bool WaitForStopped(TimeSpan timeout) => _stopped.Wait(timeout);

    /// <summary>
    /// As <see cref="WaitForStopped(TimeSpan)"/>; throws <see cref="OperationCanceledException"/> as soon as
    /// <paramref name="cancellationToken"/> is cancelled.
    /// </summary>
    public bool WaitForStopped(TimeSpan timeout, CancellationToken cancellationToken) => _stopped.Wait(timeout, cancellationToken);

    /// <summary>Fast shutdown and destroy: nothing is left behind.</summary>
    public void Dispose() => Shutdown(ShutdownMode.Fast, TimeSpan.FromSeconds(10));
}
