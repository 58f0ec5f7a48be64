/*-------------------------------------------------------------------------
 * Supervisor.cs
 *   The supervisor of a cluster (PostgreSQL's postmaster): made by
 *   ClusterBuilder.Build, it owns the cluster's shared memory (its
 *   Cluster view, replaced at each crash restart), starts children by
 *   exec, watches them, restarts after a crash and shuts down. A child
 *   attaches with Cluster.Attach (Cluster.cs); the subsystems in shared
 *   memory are modules (ShmemModule.cs).
 *
 * NOTES
 *   Children. Every child is described by a slot of "PgIpc.BackgroundWorkers"
 *   (see BackgroundWorkers.cs): static workers and StartChild fill one from
 *   the supervisor, RegisterDynamicBackgroundWorker from any process, which
 *   then sends PMSignal BackgroundWorkerChange. The supervisor keeps a
 *   private record per child (its spec, its Process), as the postmaster
 *   keeps BackgroundWorkerList, so a crash restart that throws the shared
 *   slots away still knows which workers are permanent. A child is started
 *   with System.Diagnostics.Process (exec, not fork); it gets the segment's
 *   handle in PGIPC_CLUSTER, the supervisor's pid in PGIPC_SUPERVISOR_PID,
 *   its slot kind in PGIPC_PROC_KIND and its worker slot and generation in
 *   PGIPC_WORKER_SLOT / PGIPC_WORKER_GENERATION. Nothing else is inherited:
 *   .NET opens descriptors close-on-exec and the supervisor-death watch is
 *   found by name (ProcArray's lifeline), so a child learns of the
 *   supervisor's death through WaitEvents.SupervisorDeath.
 *
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
 *   critical section and left shared structures half-changed: the
 *   supervisor logs why, asks every other child to stop (ShutdownRequested
 *   plus a SetLatch on every participant slot), kills those still running
 *   after the stop grace, destroys the segment and (restart-after-crash on)
 *   creates a new one, runs the startup hooks again and re-registers the
 *   permanent workers, each started after its restart interval. Children
 *   get the new handle; dynamic workers with RestartIntervalMs -1 are
 *   forgotten (a handle always belongs to one incarnation of shared
 *   memory). With restart-after-crash off the cluster shuts down instead.
 *   An exit code of 0 is a crash too when the child's slots still hold
 *   LWLocks (a participant closed by the process-exit hook keeps them, and
 *   its PGPROC mirror says so): the process ended inside a critical section.
 *   Exit code 1 of a background worker or a backend is an error exit, not
 *   a crash (as bgworker.c and the postmaster treat exit(1)): a permanent
 *   worker is started again in its slot after its restart interval, any
 *   other is unregistered; an auxiliary process has no such exit.
 *
 *   Shutdown. Smart waits for the children to exit on their own; Fast sets
 *   ShutdownRequested and every participant's latch, then waits; Immediate
 *   kills them. Whichever mode, children still running at the deadline are
 *   killed; then the segment is destroyed. Dispose = Fast + destroy. When
 *   every child left on its own (Smart, Fast in time) the buffer pool's
 *   dirty buffers are written first (the buffer half of the shutdown
 *   checkpoint); after a kill a child may have died holding a buffer lock,
 *   so nothing is written, as after a crash. A Build that fails once the
 *   segment exists (a startup hook throws, more static workers than child
 *   slots) shuts the new cluster down before it rethrows: the caller has no
 *   Cluster to dispose, and the segment (ipcs -m, /dev/shm) and the Posix
 *   latch FIFOs' directory would otherwise outlive the process.
 *
 *   Modules. Each incarnation of shared memory is made from the builder's
 *   one module list (ClusterBuilder.Modules): the segment is sized from
 *   it, every module created in order, and the list recorded in
 *   "PgIpc.ClusterConfig" so a child attaches the same modules from the
 *   handle alone (the buffer pool with its size and data directory).
 *
 *   The supervisor killed (SIGKILL). Children see WaitEvents.SupervisorDeath
 *   and exit; the next Create on the key finds the stale segment and
 *   removes it and the cluster's other OS objects (ShmemSegment.Create,
 *   ClusterLeftovers.cs), or refuses while an orphaned child is attached.
 *
 *   Mirrors src/backend/postmaster/postmaster.c (ServerLoop, reaper,
 *   HandleChildCrash, PostmasterStateMachine) and pmchild.c.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using PgIpc.Buffers;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sinval;

namespace PgIpc.Postmaster;

/// <summary>How the supervisor stops its children.</summary>
public enum ShutdownMode
{
    /// <summary>Wait for the children to exit on their own (SIGTERM to the postmaster).</summary>
    Smart,
    /// <summary>Ask every child to stop (ShutdownRequested + latch), then wait (SIGINT).</summary>
    Fast,
    /// <summary>Kill every child at once (SIGQUIT).</summary>
    Immediate,
}

/// <summary>Where the supervisor is.</summary>
public enum ClusterState
{
    /// <summary>Built; children not started.</summary>
    Created,
    Running,
    ShuttingDown,
    /// <summary>Shut down: no child runs, shared memory is destroyed.</summary>
    Stopped,
}

/// <summary>A child as the supervisor sees it.</summary>
public sealed record ChildInfo(string Name, int Slot, int Pid, ProcKind Kind, bool Permanent, int Starts);

/// <summary>
/// The supervisor of a cluster (the postmaster): owns its shared memory (<see cref="Cluster"/>, replaced at each crash
/// restart), starts children by exec, watches them, restarts after a crash and shuts down. Made by
/// <see cref="ClusterBuilder.Build"/>; Dispose is a fast shutdown that leaves no OS object behind.
/// </summary>
public sealed class Supervisor : IDisposable
{
    /// <summary>How often the loop polls children when no event woke it.</summary>
    public const int PollIntervalMs = 100;

    private sealed class ChildRecord(ChildSpec spec)
    {
        public readonly ChildSpec Spec = spec;
        public int Slot = -1;
        public int Generation;
        public Process? Process;
        public int Pid;
        public long NotBeforeMs;
        public int Starts;
    }

    private readonly ClusterBuilder _builder;
    private readonly IPgIpcPlatform _platform;
    private readonly TextWriter _log;
    private readonly Lock _lock = new();
    private readonly AutoResetEvent _wake = new(false);
    private readonly ManualResetEventSlim _childrenGone = new(false);
    private readonly ManualResetEventSlim _stopped = new(false);
    private readonly List<ChildRecord> _children = [];
    private Thread? _loop;
    private volatile bool _loopExit;
    private int _crashRestarts;
    private bool _uncleanExit; // under _lock: a child of this shared memory was killed or exited non-zero during shutdown (no shutdown writes)
    private int _incarnation;

    // The current incarnation of shared memory; replaced (under _lock) by a crash restart.
    private Cluster _cluster;

    private Supervisor(ClusterBuilder builder, IPgIpcPlatform platform)
    {
        _builder = builder;
        _platform = platform;
        _log = builder.LogWriter ?? Console.Error;
        _cluster = null!; // set by Create before the supervisor is published
    }

    // ------------------------------------------------------------------
    // Creation
    // ------------------------------------------------------------------

    internal static Supervisor Create(ClusterBuilder b)
    {
        IPgIpcPlatform platform = b.PlatformChoice ?? PgIpcPlatform.Current;
        IReadOnlyList<ShmemModule> modules = b.Modules(); // throws on bad options, before anything is made
        var s = new Supervisor(b, platform);
        s.InitShmem(modules);
        s._incarnation = 1;
        if (s._cluster.Segment.ReplacedStaleSegment)
            s.Log($"removed the shared memory of a crashed run of \"{b.Key}\" and {s._cluster.Segment.LeftoversRemoved} other leftover OS object set(s)");
        try
        {
            s.RunStartupHooks();
            foreach (ChildSpec spec in b.StaticWorkers)
                s.AddRecord(spec, 0); // NoFreeBackgroundWorkerSlotException: more static workers than WithMaxChildren
        }
        catch
        {
            // The caller gets no Supervisor to dispose: remove the segment, latch FIFOs and semaphores made above.
            s.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero); // no children yet; Immediate: nothing flushed
            throw;
        }
        return s;
    }

    /// <summary>CreateSharedMemoryAndSemaphores: a new segment with every module created, in list order.</summary>
    private void InitShmem(IReadOnlyList<ShmemModule> modules)
    {
        ClusterSettings settings = _builder.Settings;
        var sizes = new ShmemSizeBuilder();
        sizes.RequestAddinShmemSpace(ClusterConfig.ShmemName, ClusterConfig.ShmemSize(modules));
        foreach (ShmemModule m in modules)
            sizes.RequestAddinShmemSpace(m.Name, m.Size(settings));
        ShmemSegment seg = ShmemSegment.Create(_builder.Key, sizes, _platform, ClusterLeftovers.Instance);
        try
        {
            Cluster c = Cluster.Create(seg, modules, settings);
            PMSignal.OnSignal(c.Procs, () => _wake.Set());
            _cluster = c;
        }
        catch
        {
            seg.Destroy();
            throw;
        }
    }

    private void RunStartupHooks()
    {
        foreach (Action<Cluster> hook in _builder.StartupHooks)
            hook(_cluster);
    }

    // ------------------------------------------------------------------
    // Properties
    // ------------------------------------------------------------------

    /// <summary>The cluster's key.</summary>
    public string Key => _builder.Key;

    /// <summary>
    /// The current incarnation of the cluster's shared memory, as this process sees it. A crash restart replaces it:
    /// read it again after one (see <see cref="ReadShared{T}"/> to use it while no restart can happen).
    /// </summary>
    public Cluster Cluster => Volatile.Read(ref _cluster);

    /// <summary>The current segment's handle, as children receive it.</summary>
    public string Handle => Cluster.Handle;

    /// <summary>The OS backend.</summary>
    public IPgIpcPlatform Platform => _platform;

    /// <summary>How many times shared memory was rebuilt after a crash.</summary>
    public int CrashRestarts => Volatile.Read(ref _crashRestarts);

    /// <summary>1 for the first shared memory, one more per crash restart.</summary>
    public int Incarnation => Volatile.Read(ref _incarnation);

    /// <summary>Where the supervisor is.</summary>
    public ClusterState State { get; private set; } = ClusterState.Created;

    // ------------------------------------------------------------------
    // Children
    // ------------------------------------------------------------------

    /// <summary>Starts the supervisor's loop and the static workers.</summary>
    public void Start()
    {
        lock (_lock)
        {
            if (State != ClusterState.Created)
                throw new InvalidOperationException($"cluster \"{_builder.Key}\" is {State}, not Created");
            State = ClusterState.Running;
            _loop = new Thread(Loop) { IsBackground = true, Name = $"pgipc supervisor {_builder.Key}" };
            _loop.Start();
        }
        _wake.Set();
    }

    /// <summary>
    /// Starts a child now (the supervisor only). Returns its handle, which reports its pid once it runs.
    /// </summary>
    public BackgroundWorkerHandle StartChild(ChildSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        BackgroundWorkerHandle h;
        lock (_lock)
        {
            if (State is ClusterState.ShuttingDown or ClusterState.Stopped)
                throw new InvalidOperationException($"cluster \"{_builder.Key}\" is {State}; no child can be started");
            h = AddRecord(spec, 0);
        }
        _wake.Set();
        return h;
    }

    /// <summary>The children the supervisor knows of, with their pids (0 when not running).</summary>
    public IReadOnlyList<ChildInfo> GetChildren()
    {
        lock (_lock)
            return [.. _children.Select(r => new ChildInfo(r.Spec.Name, r.Slot, r.Process is null ? 0 : r.Pid, r.Spec.Kind, r.Spec.IsPermanent, r.Starts))];
    }

    /// <summary>
    /// Runs <paramref name="read"/> while no crash restart can replace shared memory (it holds the supervisor's state
    /// lock, which the loop holds while it destroys and recreates the segment), so pointers into the
    /// <see cref="Cluster"/>'s segment stay valid for its duration. Keep it short: the supervisor's loop waits meanwhile.
    /// </summary>
    public T ReadShared<T>(Func<Cluster, T> read)
    {
        ArgumentNullException.ThrowIfNull(read);
        lock (_lock)
        {
            if (!_cluster.IsAttached)
                throw new InvalidOperationException($"cluster \"{_builder.Key}\" is {State}: its shared memory is gone");
            return read(_cluster);
        }
    }

    private BackgroundWorkerHandle AddRecord(ChildSpec spec, long notBeforeMs)
    {
        BackgroundWorkerHandle h = _cluster.BackgroundWorkers.Register(spec);
        _children.Add(new ChildRecord(spec) { Slot = h.Slot, Generation = h.Generation, NotBeforeMs = notBeforeMs });
        return h;
    }

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
                    Log($"supervisor loop error: {ex}");
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

        string? crash = null;
        bool anyClean = false;
        for (int i = _children.Count - 1; i >= 0; i--)
        {
            ChildRecord r = _children[i];
            if (r.Process is null || !r.Process.HasExited)
                continue;
            int code = r.Process.ExitCode;
            r.Process.Dispose();
            r.Process = null;
            // A clean exit that left LWLocks held (its slot still names them: Participant.Close keeps the locks of a
            // participant that ends with the process) is a crash: what the locks protect may be half-changed.
            int held = code is 0 or 1 ? HeldLWLocksOf(r.Pid) : 0;
            if (held > 0 && State == ClusterState.Running)
            {
                crash ??= $"{Describe(r)} exited with exit code {code} while holding {held} LWLock(s)";
                _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Stopped, 0, free: true);
                if (!r.Spec.IsPermanent)
                    _children.RemoveAt(i);
                continue;
            }
            if (code == 1 && r.Spec.Kind != ProcKind.Auxiliary && State == ClusterState.Running)
            {
                // Exit code 1 of a background worker or backend is an error exit, not a crash (bgworker.c: exit(1)
                // means "restart me after my interval"): a permanent worker is started again in the same slot, others
                // are unregistered. Auxiliary processes have no such exit; theirs is a crash.
                anyClean = true;
                if (r.Spec.IsPermanent)
                {
                    Log($"{Describe(r)} exited with exit code 1; restarting it in {r.Spec.RestartIntervalMs} ms");
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
                    Log($"{Describe(r)} exited with exit code {code} during shutdown");
                    _uncleanExit = true;
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
        foreach ((int slot, int generation, ChildSpec spec) in _cluster.BackgroundWorkers.RegisteredSlots())
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
                // Not a crash: nothing ran. Forget the worker, as the postmaster does when fork fails for good.
                Log($"could not start {Describe(r)}: {ex.Message}");
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
        _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Started, p.Id, free: false);
    }

    /// <summary>HandleChildCrash + the restart: stop everyone, rebuild shared memory, re-register permanent workers.</summary>
    private void HandleChildCrash(string why)
    {
        Log($"{why}; terminating any other active processes");
        StopAllChildren(_builder.StopGraceValue, immediate: true);
        List<ChildSpec> permanent = [.. _children.Where(r => r.Spec.IsPermanent).Select(r => r.Spec)];
        _children.Clear();
        if (!_builder.RestartAfterCrashValue)
        {
            Log("shutting down because restart-after-crash is off");
            DestroyShmem();
            State = ClusterState.Stopped;
            _childrenGone.Set();
            _stopped.Set();
            return;
        }
        Log("all server processes terminated; reinitializing shared memory");
        _uncleanExit = false; // the killed ones' locks went with the old segment
        DestroyShmem();
        InitShmem(_builder.Modules());
        Interlocked.Increment(ref _incarnation);
        Interlocked.Increment(ref _crashRestarts);
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
            try
            {
                if (!r.Process.HasExited)
                {
                    _uncleanExit = true;
                    r.Process.Kill(entireProcessTree: true);
                }
            }
            catch (InvalidOperationException)
            {
                // It exited between the check and the kill.
            }
            if (!r.Process.WaitForExit(10_000))
                Log($"{Describe(r)} did not exit within 10 s of being killed");
            r.Process.Dispose();
            r.Process = null;
            _cluster.BackgroundWorkers.SetState(r.Slot, r.Generation, BackgroundWorkerState.Stopped, 0, free: true);
        }
    }

    /// <summary>Writes every dirty shared buffer (the buffer half of the shutdown checkpoint); failures are logged.</summary>
    private void FlushBuffersAtShutdown()
    {
        BufferPool? pool = _cluster.IsAttached ? _cluster.Buffers : null;
        if (pool is null)
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
            int written = pool.FlushAllBuffers(me);
            if (written > 0)
                Log($"shutdown: wrote {written} dirty buffers");
        }
        catch (Exception ex) when (ex is PgIpcException or IOException or InvalidOperationException)
        {
            Log($"shutdown: could not write the dirty buffers: {ex.Message}");
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
            Log($"detaching the modules of shared memory segment {_cluster.Segment.Handle.Id}: {ex.Flatten().Message}");
        }
        try
        {
            _cluster.Segment.Destroy();
        }
        catch (AggregateException ex)
        {
            // The segment is gone; report what an on-detach callback could not undo.
            Log($"destroying shared memory segment {_cluster.Segment.Handle.Id}: {ex.Flatten().Message}");
        }
    }

    // ------------------------------------------------------------------
    // Shutdown
    // ------------------------------------------------------------------

    /// <summary>
    /// Shuts the cluster down: <paramref name="mode"/> decides how children are stopped; those still running after
    /// <paramref name="timeout"/> are killed. Then shared memory is destroyed. Returns false when children had to be
    /// killed at the deadline. Idempotent.
    /// </summary>
    public bool Shutdown(ShutdownMode mode, TimeSpan timeout)
    {
        bool inTime = true;
        lock (_lock)
        {
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
        if (!_childrenGone.Wait(timeout))
        {
            inTime = false;
            lock (_lock)
            {
                Log($"shutdown: children still running after {timeout.TotalMilliseconds} ms; killing them");
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
        _childrenGone.Set();
        _stopped.Set();
        return inTime;
    }

    /// <summary>Waits until the cluster has stopped (after a shutdown, or a crash with restart-after-crash off).</summary>
    public bool WaitForStopped(TimeSpan timeout) => _stopped.Wait(timeout);

    /// <summary>Fast shutdown and destroy: nothing is left behind.</summary>
    public void Dispose() => Shutdown(ShutdownMode.Fast, TimeSpan.FromSeconds(10));

    // ------------------------------------------------------------------
    // Helpers
    // ------------------------------------------------------------------

    private static string Describe(ChildRecord r)
        => $"{r.Spec.Kind switch { ProcKind.Auxiliary => "auxiliary process", ProcKind.Backend => "backend process", _ => "background worker" }} \"{r.Spec.Name}\" (PID {r.Pid})";

    /// <summary>LWLocks still held by the slots of <paramref name="pid"/> (their owner has exited).</summary>
    private int HeldLWLocksOf(int pid)
    {
        int held = 0;
        if (pid == 0 || !_cluster.IsAttached)
            return 0;
        foreach (PgProcInfo p in _cluster.Procs.GetProcs())
            if (p.Pid == pid)
                held += p.HeldLWLocks;
        return held;
    }

    private static string ExitReason(int code)
        => code > 128 && code < 128 + 65
            ? $"exited with exit code {code} (on Unix: terminated by signal {code - 128})"
            : $"exited with exit code {code}";

    private void Log(string message)
    {
        lock (_log)
        {
            _log.WriteLine($"pgipc supervisor {_platform.Processes.CurrentProcessId}: {message}");
            _log.Flush();
        }
    }
}
