/*-------------------------------------------------------------------------
 * ProcArray.cs
 *   The slot array of a cluster as this process sees it: creation and
 *   attachment, handing slots to participants and taking them back, and
 *   reclaiming the slots of processes that died.
 *
 * NOTES
 *   InitProcGlobal builds the array once, in the segment's creator: every
 *   slot gets its number, its kind and its sleep semaphore, and goes on its
 *   kind's free list. Other processes find it through the ShmemIndex and open
 *   the same semaphores (Attach). Join hands a free slot of the asked-for
 *   kind to the calling thread (InitProcess); Participant.Dispose gives it
 *   back (ProcKill). Both run under ProcGlobal's spinlock; they and the
 *   reclaiming of dead slots are in ProcArray.Slots.cs.
 *
 *   A process killed with SIGKILL cannot give its slots back. PostgreSQL
 *   answers with a crash restart; PgIpc additionally reclaims such a slot
 *   when its pid is found dead (on demand, and whenever a kind's free list
 *   runs dry). A dead participant that was queued on an LWLock is first
 *   taken off that queue and the lock's RELEASE_OK restored, so the waiters
 *   behind it still get woken (LWLock.RepairAfterDeadWaiter). A participant
 *   that died while *holding* a lock cannot be repaired this way: only the
 *   supervisor's crash restart can, as in PostgreSQL. Its slot is left in
 *   place, dead pid and held-lock mirror included, so that every waiter on
 *   those locks keeps finding out who died holding them and gets
 *   LockHolderDiedException instead of a hang (see Sync/DeadHolder.cs).
 *
 *   Slots are given back on Dispose, on segment detach (on-detach callback)
 *   and at process exit (a ProcessExit hook), so a process that simply ends
 *   leaves nothing behind.
 *
 *   Mirrors src/backend/storage/lmgr/proc.c (InitProcGlobal, InitProcess,
 *   ProcKill) and ipc/procarray.c's idea of a fixed slot array.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Text;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Proc;

/// <summary>How many slots of each kind a cluster has (max_connections, auxiliary processes, max_worker_processes).</summary>
public sealed record ProcArrayOptions(int MaxBackends = 64, int MaxAuxiliary = 8, int MaxBackgroundWorkers = 16)
{
    /// <summary>Total number of slots.</summary>
    public int TotalProcs => checked(MaxBackends + MaxAuxiliary + MaxBackgroundWorkers);

    internal void Validate()
    {
        if (MaxBackends < 1)
            throw new ArgumentOutOfRangeException(nameof(MaxBackends), MaxBackends, "a cluster needs at least one backend slot");
        if (MaxAuxiliary < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxAuxiliary), MaxAuxiliary, "cannot be negative");
        if (MaxBackgroundWorkers < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxBackgroundWorkers), MaxBackgroundWorkers, "cannot be negative");
        if ((long)MaxBackends + MaxAuxiliary + MaxBackgroundWorkers > ProcArray.MaxProcsLimit)
            throw new ArgumentOutOfRangeException(nameof(MaxBackends), $"at most {ProcArray.MaxProcsLimit} participant slots in all (asked for {(long)MaxBackends + MaxAuxiliary + MaxBackgroundWorkers})");
    }
}

/// <summary>One slot as seen by <see cref="ProcArray.GetProcs"/>.</summary>
/// <remarks><paramref name="HeldLWLocks"/>: LWLocks the slot's owner holds (its mirror; a dead owner's stays as it died).</remarks>
public readonly record struct PgProcInfo(int ProcNumber, ProcKind Kind, int Pid, int Generation, LWLockWaitState LwWaiting, WaitEventId WaitEvent, int HeldLWLocks = 0);

/// <summary>The cluster's participant slots, as mapped in this process.</summary>
public sealed unsafe partial class ProcArray
{
    /// <summary>Name of the structure in the ShmemIndex.</summary>
    internal const string ShmemName = "PgIpc.ProcGlobal";

    /// <summary>Most slots a cluster can have; the LWLock shared-holder count is checked against it.</summary>
    public const int MaxProcsLimit = 1 << 17;

    private static readonly ConditionalWeakTable<ShmemSegment, ProcArray> s_bySegment = new();
    private static readonly Lock s_registryLock = new();
    private static readonly List<ProcArray> s_live = [];
    private static bool s_exitHookInstalled;

    private readonly ShmemSegment _segment;
    private readonly ProcGlobalHeader* _header;
    private readonly PgProc* _procs;
    private readonly byte* _base;
    private readonly long _segmentSize;
    private readonly IProcSemaphoreSet _semaphores;
    private readonly ILatchWakers _wakers;
    private readonly ILatchProvider _latches;
    private readonly string _name;
    private readonly IDisposable? _lifeline;
    private IDisposable? _interruptListener;
    private ISupervisorWatch? _supervisorWatch;
    private readonly List<Action<int>> _slotReleaseHooks = [];
    private readonly List<Action> _interruptHooks = [];
    private readonly IProcessServices _processes;
    private readonly List<Participant> _participants = [];
    // 0 open; 2 detaching (joins refused; the participants still inside keep working until they leave); 1 closed.
    private int _closed;
    private const int ArrayOpen = 0, ArrayClosed = 1, ArrayDetaching = 2;

    private ProcArray(ShmemSegment segment, ProcGlobalHeader* header, Layout layout, IProcSemaphoreSet semaphores, ILatchWakers wakers, IDisposable? lifeline)
    {
        _segment = segment;
        _header = header;
        _base = segment.Base;
        _segmentSize = segment.TotalSize;
        _procs = (PgProc*)(_base + layout.ProcsOffset);
        _numBackends = layout.NumBackends;
        _numAuxiliary = layout.NumAuxiliary;
        _semaphores = semaphores;
        _wakers = wakers;
        _lifeline = lifeline;
        _latches = segment.Platform.Latches;
        _name = NameOf(header);
        _processes = segment.Platform.Processes;
        MaxProcs = layout.MaxProcs;
        _supervisorPid = header->SupervisorPid; // immutable: copied so it stays readable after a detach
    }

    /// <summary>Bytes <see cref="Init"/> takes from the segment for <paramref name="options"/>.</summary>
    internal static long ShmemSize(ProcArrayOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        return Shmem.ShmemSize.Add(Shmem.ShmemSize.CacheLineAlign(sizeof(ProcGlobalHeader)), Shmem.ShmemSize.Mul(options.TotalProcs, sizeof(PgProc)));
    }

    /// <summary>
    /// Finds the slot array in <paramref name="segment"/>, or creates it (with its semaphores) when this is the
    /// first process to ask (found = false). Returns this process's one view of it.
    /// </summary>
    internal static ProcArray Init(ShmemSegment segment, ProcArrayOptions options, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        long size = ShmemSize(options);
        lock (s_registryLock)
        {
            if (s_bySegment.TryGetValue(segment, out ProcArray? existing) && existing._closed == 0)
            {
                found = true;
                return existing;
            }
        }
        IProcSemaphoreProvider provider = segment.Platform.Semaphores;
        if (provider.StorageSize > ProcSemaphoreStorage.MaxSize)
            throw new PgIpcException($"backend {segment.Platform.Name} needs {provider.StorageSize} bytes per semaphore; PGPROC reserves {ProcSemaphoreStorage.MaxSize}");
        if (segment.Platform.Latches.StorageSize > LatchStorage.MaxSize)
            throw new PgIpcException($"backend {segment.Platform.Name} needs {segment.Platform.Latches.StorageSize} bytes per latch; PGPROC reserves {LatchStorage.MaxSize}");
        (IProcSemaphoreSet Sems, ILatchWakers Wakers, IDisposable Lifeline)? created = null;
        ShmemRegion region = segment.InitStruct(ShmemName, size, r => created = Initialize(segment, r, options, provider), out found);
        var header = (ProcGlobalHeader*)region.Pointer;
        if (created is { } c)
            return Register(new ProcArray(segment, header, ValidateHeader(header, region, segment.Handle.Id), c.Sems, c.Wakers, c.Lifeline));
        Layout layout = ValidateHeader(header, region, segment.Handle.Id);
        (IProcSemaphoreSet sems, ILatchWakers wakers) = OpenObjects(segment, header, layout);
        return Register(new ProcArray(segment, header, layout, sems, wakers, null));
    }

    /// <summary>
    /// The slots in use in <paramref name="segment"/>, read without joining and without locks (pg_stat_activity's
    /// view, for inspection tools). False when the segment has no participant slots.
    /// </summary>
    public static bool TryReadProcs(ShmemSegment segment, out IReadOnlyList<PgProcInfo> procs)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (!segment.TryFindStruct(ShmemName, out _))
        {
            procs = [];
            return false;
        }
        procs = Attach(segment).GetProcs();
        return true;
    }

    /// <summary>Opens the slot array another process created in <paramref name="segment"/>.</summary>
    internal static ProcArray Attach(ShmemSegment segment)
    {
        ArgumentNullException.ThrowIfNull(segment);
        lock (s_registryLock)
        {
            if (s_bySegment.TryGetValue(segment, out ProcArray? existing) && existing._closed == 0)
                return existing;
        }
        if (!segment.TryFindStruct(ShmemName, out ShmemRegion region))
            throw new PgIpcException($"shared memory segment {segment.Handle.Id} has no participant slot array ({ShmemName}); the cluster was created without one");
        var header = (ProcGlobalHeader*)region.Pointer;
        Layout layout = ValidateHeader(header, region, segment.Handle.Id);
        (IProcSemaphoreSet sems, ILatchWakers wakers) = OpenObjects(segment, header, layout);
        return Register(new ProcArray(segment, header, layout, sems, wakers, null));
    }

    /// <summary>ProcGlobal's immutable shape, checked once (<see cref="ValidateHeader"/>) and cached by this process.</summary>
    internal readonly record struct Layout(int MaxProcs, int NumBackends, int NumAuxiliary, int NumBackgroundWorkers, long ProcsOffset);

    /// <summary>
    /// Checks the fields every slot address is derived from, each read once: the magic, the per-kind counts and
    /// their sum, and the slot array's offset and extent inside <paramref name="region"/> (the structure as the
    /// ShmemIndex records it, itself checked against the segment). Throws <see cref="ShmemCorruptException"/>; a
    /// structure that was never initialised (magic 0) is the plain PgIpcException it always was. Used at attach and
    /// by the stale-segment handler (Postmaster/ClusterLeftovers.cs) before it walks the slots.
    /// </summary>
    internal static Layout ValidateHeader(ProcGlobalHeader* h, ShmemRegion region, string segmentId)
    {
        string what = $"ProcGlobal of segment {segmentId}";
        uint magic = h->Magic;
        if (magic == 0)
            throw new PgIpcException($"{ShmemName} in segment {segmentId} is not initialised (magic 0x{magic:x8})");
        if (magic != ProcGlobalHeader.MagicValue)
            throw new ShmemCorruptException(what, "Magic", $"0x{magic:x8} is not 0x{ProcGlobalHeader.MagicValue:x8}");
        long headerSize = Shmem.ShmemSize.CacheLineAlign(sizeof(ProcGlobalHeader));
        if (region.Size < headerSize)
            throw new ShmemCorruptException(what, "size", $"{region.Size} bytes cannot hold its {headerSize}-byte header");
        int max = h->MaxProcs, nb = h->NumBackends, na = h->NumAuxiliary, nw = h->NumBackgroundWorkers;
        if (nb < 1 || na < 0 || nw < 0 || (long)nb + na + nw != max || max > MaxProcsLimit)
            throw new ShmemCorruptException(what, "MaxProcs", $"{max} is not the sum of the backend, auxiliary and background worker counts {nb} + {na} + {nw} (at most {MaxProcsLimit})");
        if ((long)max * sizeof(PgProc) > region.Size - headerSize)
            throw new ShmemCorruptException(what, "MaxProcs", $"{max} slots of {sizeof(PgProc)} bytes do not fit the structure's {region.Size} bytes");
        long procsOffset = h->ProcsOffset;
        if (procsOffset != region.Offset + headerSize)
            throw new ShmemCorruptException(what, "ProcsOffset", $"0x{procsOffset:x} is not 0x{region.Offset + headerSize:x}, the first byte after the header");
        // The set name becomes part of OS object names and paths (semaphores, latch FIFOs): letters and digits only.
        var nameBytes = new ReadOnlySpan<byte>(h->SemaphoreName, 32);
        int nameEnd = nameBytes.IndexOf((byte)0);
        foreach (byte b in nameEnd < 0 ? nameBytes : nameBytes[..nameEnd])
            if (!char.IsAsciiLetterOrDigit((char)b))
                throw new ShmemCorruptException(what, "SemaphoreName", $"has byte 0x{b:x2}; a set name is ASCII letters and digits");
        return new Layout(max, nb, na, nw, procsOffset);
    }

    /// <summary>The kind of slot <paramref name="procno"/> from the cached per-kind ranges (never the slot's shared Kind).</summary>
    internal int KindOf(int procno) => procno < _numBackends ? 0 : procno < _numBackends + _numAuxiliary ? 1 : 2;

    /// <summary>The range [start, end) of slots of <paramref name="kind"/> (cached at attach).</summary>
    private (int Start, int End) RangeOf(int kind) => kind switch
    {
        0 => (0, _numBackends),
        1 => (_numBackends, _numBackends + _numAuxiliary),
        _ => (_numBackends + _numAuxiliary, MaxProcs),
    };

    private readonly int _numBackends;
    private readonly int _numAuxiliary;

    private static (IProcSemaphoreSet, ILatchWakers, IDisposable) Initialize(ShmemSegment segment, ShmemRegion region, ProcArrayOptions options, IProcSemaphoreProvider provider)
    {
        var h = (ProcGlobalHeader*)region.Pointer;
        long procsOffset = region.Offset + Shmem.ShmemSize.CacheLineAlign(sizeof(ProcGlobalHeader));
        var procs = (PgProc*)(segment.Base + procsOffset);
        SLock.Init(ref h->Lock.Value);
        h->MaxProcs = options.TotalProcs;
        h->NumBackends = options.MaxBackends;
        h->NumAuxiliary = options.MaxAuxiliary;
        h->NumBackgroundWorkers = options.MaxBackgroundWorkers;
        h->SemaphoreStorageSize = provider.StorageSize;
        h->ProcsOffset = procsOffset;
        string semName = "l" + segment.Handle.Cookie.ToString("x16");
        Encoding.ASCII.GetBytes(semName, new Span<byte>(h->SemaphoreName, 32));

        // Slots of each kind in one range; each range's free list in slot order.
        int start = 0;
        for (int kind = 0; kind < 3; kind++)
        {
            int count = kind switch { 0 => options.MaxBackends, 1 => options.MaxAuxiliary, _ => options.MaxBackgroundWorkers };
            h->FreeHeads[kind] = count > 0 ? start : PgProc.InvalidProcNumber;
            for (int i = 0; i < count; i++)
            {
                PgProc* p = procs + start + i;
                p->ProcNumber = start + i;
                p->Kind = kind;
                p->FreeNext = i + 1 < count ? start + i + 1 : PgProc.InvalidProcNumber;
                ResetWaitState(p);
            }
            start += count;
        }
        h->SupervisorPid = segment.Platform.Processes.CurrentProcessId;
        IProcSemaphoreSet sems = provider.Create(semName, (nint)procs + PgProcSemaphoreOffset, sizeof(PgProc), options.TotalProcs);
        ILatchWakers? wakers = null;
        try
        {
            ILatchProvider latches = segment.Platform.Latches;
            wakers = latches.Create(semName, (nint)procs + PgProcLatchOffset, sizeof(PgProc), options.TotalProcs);
            // The creator is the supervisor until the cluster layer says otherwise: its death is WL_POSTMASTER_DEATH.
            IDisposable lifeline = latches.CreateLifeline(semName);
            // Written last; ShmemInitStruct's ready state publishes everything to other processes.
            h->Magic = ProcGlobalHeader.MagicValue;
            return (sems, wakers, lifeline);
        }
        catch
        {
            wakers?.Destroy();
            sems.Destroy();
            throw;
        }
    }

    private static readonly int PgProcLatchOffset = (int)System.Runtime.InteropServices.Marshal.OffsetOf<PgProc>(nameof(PgProc.LatchWake));

    private static string NameOf(ProcGlobalHeader* h)
    {
        var nameBytes = new ReadOnlySpan<byte>(h->SemaphoreName, 32);
        int n = nameBytes.IndexOf((byte)0);
        return Encoding.ASCII.GetString(n < 0 ? nameBytes : nameBytes[..n]);
    }

    private static (IProcSemaphoreSet, ILatchWakers) OpenObjects(ShmemSegment segment, ProcGlobalHeader* h, Layout layout)
    {
        IProcSemaphoreSet sems = OpenSemaphores(segment, h, layout, segment.Platform.Semaphores);
        try
        {
            ILatchWakers wakers = segment.Platform.Latches.Attach(NameOf(h), (nint)(segment.Base + layout.ProcsOffset) + PgProcLatchOffset, sizeof(PgProc), layout.MaxProcs);
            return (sems, wakers);
        }
        catch
        {
            sems.Dispose();
            throw;
        }
    }

    private static readonly int PgProcSemaphoreOffset = (int)System.Runtime.InteropServices.Marshal.OffsetOf<PgProc>(nameof(PgProc.Semaphore));

    private static IProcSemaphoreSet OpenSemaphores(ShmemSegment segment, ProcGlobalHeader* h, Layout layout, IProcSemaphoreProvider provider)
    {
        if (h->SemaphoreStorageSize != provider.StorageSize)
            throw new PgIpcException($"{ShmemName} was made by a backend with {h->SemaphoreStorageSize}-byte semaphores; backend {segment.Platform.Name} uses {provider.StorageSize}");
        return provider.Attach(NameOf(h), (nint)(segment.Base + layout.ProcsOffset) + PgProcSemaphoreOffset, sizeof(PgProc), layout.MaxProcs);
    }

    private static ProcArray Register(ProcArray array)
    {
        lock (s_registryLock)
        {
            if (s_bySegment.TryGetValue(array._segment, out ProcArray? raced) && raced._closed == 0)
            {
                array._wakers.Dispose();
                array._semaphores.Dispose();
                array._lifeline?.Dispose();
                return raced;
            }
            s_bySegment.AddOrUpdate(array._segment, array);
            s_live.Add(array);
            if (!s_exitHookInstalled)
            {
                // Slots of a process that just ends are given back (ProcKill via on_shmem_exit).
                AppDomain.CurrentDomain.ProcessExit += (_, _) => ReleaseAllAtExit();
                s_exitHookInstalled = true;
            }
        }
        array._segment.RegisterOnDetach(array.OnSegmentDetach);
        // ProcSignal's interrupts: the handler runs on a runtime thread and only sets latches (see OnInterrupt).
        array._interruptListener = array._latches.ListenForInterrupts(array._name, array.OnInterrupt);
        return array;
    }

    private static void ReleaseAllAtExit()
    {
        ProcArray[] all;
        lock (s_registryLock)
            all = [.. s_live];
        foreach (ProcArray a in all)
            a.ReleaseParticipants(processExiting: true);
    }

    // ------------------------------------------------------------------
    // Properties
    // ------------------------------------------------------------------

    /// <summary>The segment the array lives in.</summary>
    public ShmemSegment Segment => _segment;

    /// <summary>Number of slots of every kind.</summary>
    public int MaxProcs { get; }

    /// <summary>Slots of <paramref name="kind"/>.</summary>
    public int Capacity(ProcKind kind) => ThrowIfClosedThen(kind) switch
    {
        ProcKind.Backend => _numBackends,
        ProcKind.Auxiliary => _numAuxiliary,
        ProcKind.BackgroundWorker => MaxProcs - _numBackends - _numAuxiliary,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown participant kind"),
    };

    internal PgProc* Procs => _procs;

    /// <summary>Where this process maps the main segment, and its size (the held-LWLock mirror's offsets).</summary>
    internal byte* SegmentBase => _base;

    internal long SegmentSize => _segmentSize;

    /// <summary>Pid liveness (dead-holder checks).</summary>
    internal IProcessServices Processes => _processes;

    internal IProcSemaphoreSet Semaphores => _semaphores;

    internal ILatchWakers Wakers => _wakers;

    /// <summary>The backend's latch and wait-set provider.</summary>
    internal ILatchProvider Latches => _latches;

    /// <summary>Name of the cluster's OS objects (semaphores, latch wake objects, interrupt events).</summary>
    internal string ObjectName => _name;

    /// <summary>Pid of the supervisor (the creator), whose death WL_POSTMASTER_DEATH reports.</summary>
    public int SupervisorPid => _supervisorPid;

    private readonly int _supervisorPid;

    /// <summary>The supervisor-death watch, opened on first use and shared by this process's wait sets.</summary>
    internal ISupervisorWatch SupervisorWatch
    {
        get
        {
            ThrowIfClosed();
            ISupervisorWatch? w = Volatile.Read(ref _supervisorWatch);
            if (w is not null)
                return w;
            lock (_participants)
            {
                _supervisorWatch ??= _latches.WatchSupervisor(_name, _header->SupervisorPid);
                return _supervisorWatch;
            }
        }
    }

    /// <summary>True when the supervisor has died (PostmasterIsAlive's negation).</summary>
    public bool IsSupervisorDead => SupervisorWatch.IsSupervisorDead;

    /// <summary>Wakes slot <paramref name="procno"/>'s owner (SetLatch's slow path). Never throws.</summary>
    internal void WakeLatchOwner(int procno)
    {
        if (Volatile.Read(ref _closed) != ArrayClosed)
            _wakers.Wake(procno);
    }

    /// <summary>Called with a slot number whenever a slot is given back or reclaimed (per-slot state of other subsystems).</summary>
    internal void AddSlotReleaseHook(Action<int> hook)
    {
        ArgumentNullException.ThrowIfNull(hook);
        lock (_slotReleaseHooks)
            _slotReleaseHooks.Add(hook);
    }

    // ---- leave hooks (lock manager) ------------------------------------
    private readonly List<Action<Participant, bool>> _leaveHooks = [];

    /// <summary>
    /// Called when a participant of this process is about to leave, while it can still take LWLocks: with true on its
    /// own thread (Dispose), with false from another thread (process exit, segment detach) when it holds no LWLock and
    /// is not waiting for one. Subsystems give back what the participant holds (the lock manager's LockReleaseAll).
    /// </summary>
    internal void AddLeaveHook(Action<Participant, bool> hook)
    {
        ArgumentNullException.ThrowIfNull(hook);
        lock (_leaveHooks)
            _leaveHooks.Add(hook);
    }

    internal void RunLeaveHooks(Participant p, bool onItsThread)
    {
        Action<Participant, bool>[] hooks;
        lock (_leaveHooks)
        {
            if (_leaveHooks.Count == 0)
                return;
            hooks = [.. _leaveHooks];
        }
        foreach (Action<Participant, bool> h in hooks)
            h(p, onItsThread);
    }
    // ---------------------------------------------------------------------

    /// <summary>Called after this process receives an interrupt (ProcSignal / PMSignal), on a runtime thread.</summary>
    internal void AddInterruptHook(Action hook)
    {
        lock (_interruptHooks)
            _interruptHooks.Add(hook);
    }

    /// <summary>Runs the interrupt hooks in this process without an OS interrupt (a PMSignal sent by the supervisor's own process).</summary>
    internal void RunInterruptHooksLocally() => OnInterrupt();

    private void RunSlotReleaseHooks(int procno)
    {
        Action<int>[] hooks;
        lock (_slotReleaseHooks)
            hooks = [.. _slotReleaseHooks];
        foreach (Action<int> h in hooks)
            h(procno);
    }

    /// <summary>
    /// The process's interrupt (SIGUSR1 / its event) arrived: set the latch of every participant of this process
    /// that has something pending, so it wakes and runs ProcessInterrupts at its next safe point. Runs on a
    /// runtime thread, never in signal context; does nothing else (no handler code runs here).
    /// </summary>
    private void OnInterrupt()
    {
        if (Volatile.Read(ref _closed) == ArrayClosed)
            return;
        Participant[] all;
        lock (_participants)
            all = [.. _participants];
        foreach (Participant p in all)
        {
            if (p.IsDisposed)
                continue;
            PgProc* proc = p.Proc;
            if (Volatile.Read(ref proc->ProcSignalFlags) != 0 || Volatile.Read(ref proc->BarrierFlags) != 0)
                Latch.Latches.SetLatch(this, p.ProcNumber);
        }
        Action[] hooks;
        lock (_interruptHooks)
            hooks = [.. _interruptHooks];
        foreach (Action h in hooks)
            h();
    }
    /// <summary>Slots handed out since creation, and slots reclaimed from dead processes (both only grow).</summary>
    public (long HandedOut, long Reclaimed) Statistics
    {
        get
        {
            ThrowIfClosed();
            SLock.Acquire(ref _header->Lock.Value, "ProcGlobal");
            var r = (_header->SlotsHandedOut, _header->SlotsReclaimed);
            SLock.Release(ref _header->Lock.Value);
            return r;
        }
    }

    /// <summary>Main-segment offset of an LWLock (for dead-waiter repair), or -2 when it lives elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal long OffsetInMainSegment(void* p)
    {
        long off = (byte*)p - _base;
        return off > 0 && off < _segmentSize ? off : -2;
    }

    // ------------------------------------------------------------------
    // Detach
    // ------------------------------------------------------------------

    private void ReleaseParticipants(bool processExiting, IReadOnlyCollection<Participant>? except = null)
    {
        Participant[] all;
        lock (_participants)
            all = [.. _participants];
        foreach (Participant p in all)
            if (except is null || !except.Contains(p))
                p.Close(fromExit: true, processExiting);
    }

    /// <summary>
    /// How long a detach waits for participants of other threads of this process to leave (ms). Tests lower it.
    /// </summary>
    internal static int DetachGraceMs = 5000;

    // Set by a detach that found participants still inside (stragglers): 1 dispose, 2 destroy the semaphores and
    // wakers once the last of them leaves; with the hold that keeps the segment mapped until then. Under _participants.
    private int _deferredTeardown;
    private IDisposable? _mappingHold;

    private void OnSegmentDetach(bool destroying)
    {
        if (Interlocked.CompareExchange(ref _closed, ArrayDetaching, ArrayOpen) != ArrayOpen)
            return;
        List<Participant> stragglers = AskOtherThreadsToLeave();
        ReleaseParticipants(processExiting: false, stragglers);
        lock (s_registryLock)
        {
            s_live.Remove(this);
            s_bySegment.Remove(_segment);
        }
        _interruptListener?.Dispose();
        _supervisorWatch?.Dispose();
        _lifeline?.Dispose();
        if (stragglers.Count > 0)
        {
            bool deferred;
            lock (_participants)
            {
                deferred = _participants.Count > 0;
                if (deferred)
                {
                    _deferredTeardown = destroying ? 2 : 1;
                    _mappingHold = _segment.HoldMapping();
                }
            }
            if (!deferred)
                Volatile.Write(ref _closed, ArrayClosed);
            if (deferred)
                throw new InvalidOperationException(
                    $"shared memory segment {_segment.Handle.Id} was detached while {stragglers.Count} participant(s) of other threads of this process " +
                    $"were still inside it {DetachGraceMs} ms after being asked to leave ({string.Join(", ", stragglers)}); its memory stays mapped " +
                    "in this process until the last of them is disposed, so they cannot fault; dispose every participant before the cluster");
        }
        Volatile.Write(ref _closed, ArrayClosed);
        TearDownSemaphoresAndWakers(destroying);
    }

    private void TearDownSemaphoresAndWakers(bool destroying)
    {
        if (destroying)
        {
            _wakers.Destroy();
            _semaphores.Destroy();
        }
        else
        {
            _wakers.Dispose();
            _semaphores.Dispose();
        }
    }

    /// <summary>
    /// A detach is under way: asks every participant of another thread of this process to leave (its next lock,
    /// wait or interrupt check throws ObjectDisposedException; its latch is set and its semaphore posted so that a
    /// sleeper notices), then waits up to <see cref="DetachGraceMs"/> for them to be disposed by their threads.
    /// Returns those still inside. Closing them from here instead would release their locks and unmap memory
    /// under threads that are still using it.
    /// </summary>
    private List<Participant> AskOtherThreadsToLeave()
    {
        int me = Environment.CurrentManagedThreadId;
        List<Participant> others;
        lock (_participants)
            others = [.. _participants.Where(p => p.ThreadId != me && !p.IsDisposed)];
        if (others.Count == 0)
            return others;
        foreach (Participant p in others)
        {
            if (!p.RequestLeave())
                continue;
            Latch.Latches.SetLatch(this, p.ProcNumber);
            _semaphores.Unlock(p.ProcNumber);
        }
        long deadline = Environment.TickCount64 + DetachGraceMs;
        lock (_participants)
        {
            while (true)
            {
                others.RemoveAll(p => p.IsDisposed);
                long left = deadline - Environment.TickCount64;
                if (others.Count == 0 || left <= 0)
                    break;
                Monitor.Wait(_participants, (int)Math.Min(left, 100));
            }
        }
        return others;
    }

    private ProcKind ThrowIfClosedThen(ProcKind kind)
    {
        ThrowIfClosed();
        return kind;
    }

    private void ThrowIfClosed()
    {
        if (Volatile.Read(ref _closed) == ArrayClosed)
            throw new ObjectDisposedException(nameof(ProcArray), $"the participant slots of segment {_segment.Handle.Id} are no longer attached in this process");
    }
}
