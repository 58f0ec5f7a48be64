/*-------------------------------------------------------------------------
 * LinuxLatchProvider.cs
 *   Latch wake objects on Linux: an eventfd per owned slot, woken from any
 *   process through a duplicate taken with pidfd_getfd, or by SIGURG where
 *   that is refused; epoll wait sets; a pidfd supervisor watch; SIGUSR1
 *   interrupts.
 *
 * NOTES
 *   Owner. Own(i) makes an eventfd (EFD_NONBLOCK | EFD_CLOEXEC) and
 *   publishes it in slot i's shared storage (LinuxLatchSlot below) as a
 *   seqlock: it first moves the generation to the next even value (no
 *   owner), writes its pid and the fd number, then release-stores the next
 *   odd value. Dispose moves the generation to even (a full barrier) before
 *   closing the fd, so a waker that duplicated the fd after the close sees
 *   the change when it re-checks. Generations only grow, so an owner is
 *   never mistaken for an earlier one of the same slot; an owner killed
 *   without Dispose leaves an odd generation, and the next Own skips past
 *   it. Every owner of this process is also in a process-wide table keyed
 *   by fd number, used for wake-ups from this process and by the SIGURG
 *   handler.
 *
 *   Waker. Wake(i) acquire-reads the generation, reads pid and fd, and
 *   re-reads the generation (a seqlock read). If the owner is this process
 *   it writes the owner's eventfd found in the process table. Otherwise it
 *   keeps, per slot, the generation and pid it last saw and what it got
 *   for them: a duplicate of the owner's eventfd, the signal fallback, or
 *   "dead". When the slot's generation or pid differ from the cached ones it
 *   refills: pidfd_open(pid), pidfd_getfd(pidfd, fd), closes the pidfd,
 *   checks the duplicate is an eventfd (readlink /proc/self/fd/N, which
 *   allocates; only here), and re-checks the generation, retrying if the
 *   owner changed meanwhile. Then it writes 1 to the eventfd; EAGAIN means
 *   the counter is saturated, so the owner is awake anyway. The cache is
 *   preallocated (Count entries) and each entry is guarded by its own lock,
 *   so the steady-state Wake allocates nothing and makes one write(2).
 *
 *   Fallback. pidfd_getfd needs ptrace-attach rights over the owner (EPERM
 *   under Yama ptrace_scope >= 1 between siblings, across users, in many
 *   containers' seccomp profiles) and Linux 5.6 (ENOSYS before). Then the
 *   waker sends SIGURG to the owner's pid. Each process that owns a slot has
 *   registered, at its first Own, a SIGURG handler (PosixSignalRegistration,
 *   run on a runtime thread, not in signal context) that writes the eventfd
 *   of every slot it owns: it cannot know which one was meant, and a
 *   spurious latch wake-up is harmless (Core re-checks is_set). SIGURG's
 *   default action is to do nothing, so a process that owns no latch is
 *   unharmed. This is PostgreSQL 17's design for latches on Linux
 *   (WAIT_USE_SIGNALFD: SIGURG to the owner), with pidfd_getfd in front to
 *   avoid the signal and the handler's thread hop in the common case. The
 *   signal path depends on the thread pool running the handler; it is
 *   forced for other processes' slots by the internal forceSignalWake flag
 *   so tests cover it.
 *
 *   Bounded descriptors. A duplicate is a descriptor of this process, one
 *   per remote slot woken, and a process that wakes thousands of slots
 *   over its life must not hold thousands (max_files_per_process is the
 *   same concern in fd.c). At most MaxWakeDescriptors (64 by default)
 *   duplicates are cached per view; taking one more closes another slot's
 *   by a clock sweep: each entry has a reference bit, set by every wake
 *   through it, and the hand clears set bits and closes the first cached
 *   duplicate whose bit is clear. A victim's lock is only tried
 *   (Lock.TryEnter), never waited for, while the waker holds its own
 *   slot's lock, so two wakers evicting each other's entries cannot
 *   deadlock; a busy entry is passed over (the count may then stay one
 *   over the bound until the next refill sweeps again). An evicted entry
 *   is emptied: the next wake of that slot refills it (pidfd_open and
 *   pidfd_getfd again). A slot re-owned by another process closes its old
 *   duplicate at the refill, as before.
 *
 *   A dead owner (ESRCH) is cached as dead until the slot is re-owned. A
 *   dead owner's pid reused by an unrelated process could receive a
 *   harmless SIGURG, or, improbably, a write to an eventfd of its own that
 *   has the dead owner's fd number.
 *
 *   Wait sets are epoll (EpollWaitSet.cs). The supervisor watch is a pidfd
 *   of the supervisor's pid (readable once it exits); the lifeline is
 *   nothing. A supervisor already gone when watched gives a watch whose
 *   eventfd is written once and never read (always ready); where pidfd_open
 *   is refused (ENOSYS before 5.3, EPERM under seccomp) the watch polls
 *   kill(pid, 0) (KillSupervisorWatch, Posix). Interrupts are SIGUSR1
 *   (UnixInterrupts.cs, Posix).
 *
 *   Bindings: eventfd, close, kill and the pidfd system calls go through
 *   Tmds.LibC (the pidfd numbers are ours, Interop/LibC.pidfd.cs); the
 *   eventfd write, a hot path, and poll (which Tmds.LibC declares without
 *   SetLastError) stay on our own bindings, see WriteOne and
 *   PidfdSupervisorWatch.
 *
 *   Mirrors PostgreSQL's storage/ipc/latch.c and waiteventset.c
 *   (WAIT_USE_EPOLL with WAIT_USE_SIGNALFD's SIGURG wake-ups).
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Platform.Linux.Interop;
using PgIpc.Platform.Posix;
using PosixLibC = PgIpc.Platform.Posix.Interop.LibC;
using TmdsLibC = Tmds.Linux.LibC;

namespace PgIpc.Platform.Linux;

/// <summary>
/// Slot i's latch storage on Linux (16 of the <see cref="LatchStorage.MaxSize"/> bytes each PGPROC reserves):
/// <code>
///  0  Generation  even: no owner; odd: owned. Written only by the owner: moved to the next even value,
///                 then Pid and Fd written, then release-stored to the next odd value (Own); moved to the
///                 next even value with a full barrier before the fd is closed (Dispose). Wakers
///                 acquire-read it before Pid and Fd and again after (seqlock), and after duplicating Fd.
///  4  Pid         the owner's pid; written by the owner while Generation is even
///  8  Fd          the owner's eventfd, a descriptor number in the owner's process; as Pid
/// 12  reserved
/// </code>
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct LinuxLatchSlot
{
    public uint Generation;
    public int Pid;
    public int Fd;
    public int Reserved;
}

/// <summary>eventfd latches woken through pidfd_getfd (or SIGURG), epoll wait sets, pidfd supervisor watch.</summary>
internal sealed class LinuxLatchProvider : ILatchProvider
{
    /// <summary>Duplicated eventfds a view keeps at most (see the banner).</summary>
    internal const int DefaultMaxWakeDescriptors = 64;

    private readonly bool _forceSignalWake;
    private readonly int _maxWakeDescriptors;

    public LinuxLatchProvider() : this(forceSignalWake: false)
    {
    }

    /// <param name="forceSignalWake">Wake other processes' latches only with SIGURG (the fallback), even where pidfd_getfd works (this process's own latches are still written directly).</param>
    /// <param name="maxWakeDescriptors">Most duplicated eventfds of other processes each view keeps open.</param>
    internal LinuxLatchProvider(bool forceSignalWake, int maxWakeDescriptors = DefaultMaxWakeDescriptors)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxWakeDescriptors, 1);
        _forceSignalWake = forceSignalWake;
        _maxWakeDescriptors = maxWakeDescriptors;
    }

    public unsafe int StorageSize => sizeof(LinuxLatchSlot);

    public unsafe ILatchWakers Create(string name, nint storage, int stride, int count)
    {
        LatchArgs.Validate(name, storage, stride, count, StorageSize, sizeof(int));
        for (int i = 0; i < count; i++)
            *(LinuxLatchSlot*)(storage + (nint)i * stride) = default;
        return new LinuxLatchWakers(name, storage, stride, count, _forceSignalWake, _maxWakeDescriptors);
    }

    public ILatchWakers Attach(string name, nint storage, int stride, int count)
    {
        LatchArgs.Validate(name, storage, stride, count, StorageSize, sizeof(int));
        return new LinuxLatchWakers(name, storage, stride, count, _forceSignalWake, _maxWakeDescriptors);
    }

    public IPlatformWaitSet CreateWaitSet(int capacity) => new EpollWaitSet(capacity);

    /// <summary>Nothing: watchers watch the supervisor's pid itself.</summary>
    public IDisposable CreateLifeline(string name)
    {
        LatchArgs.ValidateName(name);
        return new NoLifeline();
    }

    public ISupervisorWatch WatchSupervisor(string name, int supervisorPid)
    {
        LatchArgs.ValidateName(name);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(supervisorPid);
        int fd = LibC.pidfd_open(supervisorPid, 0);
        if (fd >= 0)
            return new PidfdSupervisorWatch(new SafeFdHandle(fd));
        int e = Errno.Last;
        if (e == Errno.ESRCH)
            return DeadSupervisorWatch.Create(supervisorPid);
        if (e == Errno.ENOSYS || e == Errno.EPERM)
            return new KillSupervisorWatch(supervisorPid);
        throw Errno.Exception("pidfd_open", e, $"watching supervisor pid {supervisorPid}");
    }

    public IDisposable ListenForInterrupts(string name, Action onInterrupt) => UnixInterrupts.Listen(name, onInterrupt);

    public bool Interrupt(string name, int pid) => UnixInterrupts.Interrupt(name, pid);

    /// <summary>
    /// pidfd_open(pid) pins the process that has the pid now; the identity read after it is that process's (it held
    /// the pid continuously since it recorded its identity), so pidfd_send_signal reaches it or, if it has exited
    /// since, nobody: a pid reused between the check and the signal is never signalled. Without pidfd (ENOSYS,
    /// EPERM under seccomp): the check, then kill.
    /// </summary>
    public bool Interrupt(string name, int pid, long expectedIdentity, IProcessServices processes)
    {
        ArgumentNullException.ThrowIfNull(processes);
        if (pid <= 0 || !LatchArgs.IsValidName(name))
            return false;
        if (expectedIdentity == 0)
            return UnixInterrupts.Interrupt(name, pid);
        int pidfd = LibC.pidfd_open(pid, 0);
        if (pidfd < 0)
        {
            if (Errno.Last == Errno.ESRCH)
                return false;
            return processes.GetIdentity(pid) == expectedIdentity && UnixInterrupts.Interrupt(name, pid);
        }
        try
        {
            if (processes.GetIdentity(pid) != expectedIdentity)
                return false;
            return LibC.pidfd_send_signal(pidfd, TmdsLibC.SIGUSR1) == 0;
        }
        finally
        {
            TmdsLibC.close(pidfd);
        }
    }

    private sealed class NoLifeline : IDisposable
    {
        public void Dispose()
        {
        }
    }
}

/// <summary>One slot's wake objects as this process sees them (see the banner).</summary>
internal sealed unsafe class LinuxLatchWakers : ILatchWakers
{
    private enum WakeMode : byte
    {
        /// <summary>The owner is gone: nothing to wake.</summary>
        Dead,
        /// <summary>Write the duplicated eventfd.</summary>
        EventFd,
        /// <summary>kill(pid, SIGURG).</summary>
        Signal,
    }

    /// <summary>What this process last found for a slot's owner. Under the slot's lock.</summary>
    private struct OwnerCache
    {
        /// <summary>Generation the entry is for; 0 (even) matches no owner.</summary>
        public uint Generation;
        public int Pid;
        public WakeMode Mode;
        /// <summary>Mode EventFd: this process's duplicate of the owner's eventfd.</summary>
        public SafeFdHandle? Fd;
        /// <summary>The clock sweep's reference bit: set by each wake through Fd, cleared by the passing hand.</summary>
        public bool Referenced;
    }

    private static readonly int s_selfPid = Environment.ProcessId;

    private readonly string _name;
    private readonly byte* _storage;
    private readonly int _stride;
    private readonly bool _forceSignal;
    private readonly OwnerCache[] _cache;
    private readonly Lock[] _slotLocks;
    /// <summary>Slots this view's Own handed out and not yet released; under _ownLock.</summary>
    private readonly LinuxLatchOwner?[] _owners;
    private readonly Lock _ownLock = new();
    private volatile bool _closed;
    private readonly int _maxDescriptors;
    /// <summary>Entries holding a duplicate (Interlocked: changed under each entry's own lock, so by several locks).</summary>
    private int _descriptors;
    /// <summary>The clock hand over _cache (Interlocked; taken modulo Count).</summary>
    private uint _hand;

    public LinuxLatchWakers(string name, nint storage, int stride, int count, bool forceSignal,
        int maxDescriptors = LinuxLatchProvider.DefaultMaxWakeDescriptors)
    {
        _name = name;
        _storage = (byte*)storage;
        _stride = stride;
        _forceSignal = forceSignal;
        _maxDescriptors = maxDescriptors;
        Count = count;
        _cache = new OwnerCache[count];
        _slotLocks = new Lock[count];
        _owners = new LinuxLatchOwner?[count];
        for (int i = 0; i < count; i++)
            _slotLocks[i] = new Lock();
    }

    public int Count { get; }

    private LinuxLatchSlot* Slot(int index) => (LinuxLatchSlot*)(_storage + (nint)index * _stride);

    public ILatchOwner Own(int index)
    {
        LatchArgs.CheckIndex(index, Count);
        lock (_ownLock)
        {
            LatchArgs.CheckOpen(_closed, _name);
            if (_owners[index] is not null)
                throw new InvalidOperationException($"latch slot {index} of set \"{_name}\" is already owned by this process");
            LinuxLatchOwner owner = LinuxLatchOwner.Create(this, index, Slot(index));
            _owners[index] = owner;
            return owner;
        }
    }

    internal void Release(LinuxLatchOwner owner)
    {
        lock (_ownLock)
        {
            if (_owners[owner.Index] == owner)
                _owners[owner.Index] = null;
        }
    }

    public void Wake(int index)
    {
        if ((uint)index >= (uint)Count || _closed)
            return; // never throws: a bad index or a closed set wakes nobody
        LinuxLatchSlot* slot = Slot(index);
        for (int attempt = 0; attempt < 4; attempt++)
        {
            // Seqlock read; the acquire loads pair with Own's release store of Generation.
            uint gen = Volatile.Read(ref slot->Generation);
            if ((gen & 1) == 0)
                return; // no owner
            int pid = Volatile.Read(ref slot->Pid);
            int fd = Volatile.Read(ref slot->Fd);
            if (Volatile.Read(ref slot->Generation) != gen)
                continue; // the owner changed while we read
            if (pid <= 0)
                return; // broken storage; never kill(0) or kill(-1)
            if (pid == s_selfPid)
            {
                LinuxLatchOwner.WakeLocal(fd, gen);
                return;
            }
            lock (_slotLocks[index])
            {
                if (_closed)
                    return;
                ref OwnerCache c = ref _cache[index];
                if (c.Generation != gen || c.Pid != pid)
                {
                    bool refilled = Refill(ref c, slot, gen, pid, fd, _forceSignal, ref _descriptors);
                    if (c.Fd is not null && Volatile.Read(ref _descriptors) > _maxDescriptors)
                        EvictOne(index);
                    if (!refilled)
                        continue; // the owner changed while we duplicated its fd
                }
                switch (c.Mode)
                {
                    case WakeMode.EventFd:
                        c.Referenced = true;
                        LinuxLatchOwner.WriteOne(c.Fd!.Fd);
                        break;
                    case WakeMode.Signal:
                        TmdsLibC.kill(pid, TmdsLibC.SIGURG);
                        break;
                }
                return;
            }
        }
        // Four owner changes during one Wake: each new owner drained stale wake-ups on Own and is no sleeper we were asked to wake.
    }

    /// <summary>
    /// The clock sweep (see the banner): closes one cached duplicate other than slot <paramref name="self"/>'s, whose
    /// lock the caller holds. Victims' locks are only tried. Never throws.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void EvictOne(int self)
    {
        // Two full turns: the first may only clear reference bits.
        for (int step = 0; step < 2 * Count; step++)
        {
            int j = (int)(Interlocked.Increment(ref _hand) % (uint)Count);
            if (j == self || !_slotLocks[j].TryEnter())
                continue;
            try
            {
                ref OwnerCache v = ref _cache[j];
                if (v.Fd is null)
                    continue;
                if (v.Referenced)
                {
                    v.Referenced = false;
                    continue;
                }
                v.Fd.Dispose();
                v = default; // empty: the next wake of slot j refills it
                Interlocked.Decrement(ref _descriptors);
                return;
            }
            finally
            {
                _slotLocks[j].Exit();
            }
        }
    }

    /// <summary>Duplicated eventfds this view holds now (at most the bound, see the banner; for tests).</summary>
    internal int WakeDescriptors => Volatile.Read(ref _descriptors);

    /// <summary>
    /// Finds how to wake owner (gen, pid, fd) and caches it. False when the slot's generation moved meanwhile
    /// (the entry is then empty). Keeps <paramref name="descriptors"/> (the count of entries holding a duplicate)
    /// up to date. Allocates (SafeHandle, readlink); never throws.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool Refill(ref OwnerCache c, LinuxLatchSlot* slot, uint gen, int pid, int fd, bool forceSignal, ref int descriptors)
    {
        if (c.Fd is not null)
        {
            c.Fd.Dispose();
            Interlocked.Decrement(ref descriptors);
        }
        c = default;
        if (forceSignal)
        {
            c = new OwnerCache { Generation = gen, Pid = pid, Mode = WakeMode.Signal };
            return true;
        }
        int pidfd = LibC.pidfd_open(pid, 0);
        if (pidfd == -1)
        {
            int e = Errno.Last;
            c = new OwnerCache { Generation = gen, Pid = pid, Mode = e == Errno.ESRCH ? WakeMode.Dead : WakeMode.Signal };
            return true;
        }
        int dup = LibC.pidfd_getfd(pidfd, fd, 0);
        int getfdErrno = dup == -1 ? Errno.Last : 0;
        TmdsLibC.close(pidfd);
        if (dup == -1)
        {
            if (getfdErrno == Errno.EBADF && Volatile.Read(ref slot->Generation) != gen)
                return false; // the owner closed it: it left
            WakeMode mode = getfdErrno is Errno.ESRCH or Errno.EBADF ? WakeMode.Dead : WakeMode.Signal;
            c = new OwnerCache { Generation = gen, Pid = pid, Mode = mode };
            return true;
        }
        var handle = new SafeFdHandle(dup);
        bool eventFd = IsEventFd(dup);
        Interlocked.MemoryBarrier(); // the re-check below is read after the duplicate was taken
        if (Volatile.Read(ref slot->Generation) != gen)
        {
            handle.Dispose();
            return false;
        }
        if (!eventFd)
        {
            handle.Dispose(); // the generation held, so this cannot happen; do not write into a stranger's fd
            c = new OwnerCache { Generation = gen, Pid = pid, Mode = WakeMode.Dead };
            return true;
        }
        c = new OwnerCache { Generation = gen, Pid = pid, Mode = WakeMode.EventFd, Fd = handle };
        Interlocked.Increment(ref descriptors);
        return true;
    }

    /// <summary>What readlink("/proc/self/fd/N") returns for an eventfd.</summary>
    private const string EventFdLinkTarget = "anon_inode:[eventfd]";

    /// <summary>readlink("/proc/self/fd/N") is "anon_inode:[eventfd]"; true also when /proc cannot say (the generation check still holds).</summary>
    private static bool IsEventFd(int fd)
    {
        try
        {
            string? target = new FileInfo("/proc/self/fd/" + fd.ToString(System.Globalization.CultureInfo.InvariantCulture)).LinkTarget;
            return target is null || target == EventFdLinkTarget;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return true;
        }
    }

    /// <summary>How this view last woke slot <paramref name="index"/>'s owner in another process: "eventfd", "signal", "dead" or "none" (for tests).</summary>
    internal string WakeRoute(int index)
    {
        lock (_slotLocks[index])
        {
            OwnerCache c = _cache[index];
            return c.Generation == 0 ? "none" : c.Mode switch { WakeMode.EventFd => "eventfd", WakeMode.Signal => "signal", _ => "dead" };
        }
    }

    /// <summary>Nothing to remove (the storage goes with the segment); closes this view's descriptors.</summary>
    public void Destroy()
    {
        LatchArgs.CheckOpen(_closed, _name);
        Dispose();
    }

    /// <summary>Releases the slots this view owns (clearing their storage) and closes the cached duplicates.</summary>
    public void Dispose()
    {
        LinuxLatchOwner?[] owned;
        lock (_ownLock)
        {
            if (_closed)
                return;
            _closed = true;
            owned = (LinuxLatchOwner?[])_owners.Clone();
        }
        foreach (LinuxLatchOwner? o in owned)
            o?.Dispose();
        for (int i = 0; i < Count; i++)
        {
            lock (_slotLocks[i])
            {
                if (_cache[i].Fd is { } dup)
                {
                    dup.Dispose();
                    Interlocked.Decrement(ref _descriptors);
                }
                _cache[i] = default;
            }
        }
    }
}

/// <summary>This process's eventfd for one slot, published in the slot's storage.</summary>
internal sealed unsafe class LinuxLatchOwner : ILatchOwner
{
    /// <summary>Every live owner of this process by eventfd number (unique while open); under s_ownedLock.</summary>
    private static readonly Dictionary<int, LinuxLatchOwner> s_owned = [];
    private static readonly Lock s_ownedLock = new();
    /// <summary>The SIGURG handler, registered at this process's first Own and kept for its lifetime.</summary>
    private static PosixSignalRegistration? s_sigurg;

    private readonly LinuxLatchWakers _wakers;
    private readonly LinuxLatchSlot* _slot;
    private readonly SafeFdHandle _fd;
    private int _disposed;

    private LinuxLatchOwner(LinuxLatchWakers wakers, int index, LinuxLatchSlot* slot, SafeFdHandle fd, uint generation)
    {
        _wakers = wakers;
        Index = index;
        _slot = slot;
        _fd = fd;
        Generation = generation;
    }

    public int Index { get; }

    /// <summary>The odd generation this owner published.</summary>
    public uint Generation { get; }

    public nint WaitHandle => _fd.Fd;

    public static LinuxLatchOwner Create(LinuxLatchWakers wakers, int index, LinuxLatchSlot* slot)
    {
        lock (s_ownedLock)
            s_sigurg ??= PosixSignalRegistration.Create((PosixSignal)TmdsLibC.SIGURG, OnSigUrg);
        int fd = TmdsLibC.eventfd(0, TmdsLibC.EFD_NONBLOCK | TmdsLibC.EFD_CLOEXEC);
        if (fd == -1)
            throw Errno.Exception("eventfd", Errno.Last, $"latch slot {index}");
        var handle = new SafeFdHandle(fd);
        try
        {
            return Publish(wakers, index, slot, handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static LinuxLatchOwner Publish(LinuxLatchWakers wakers, int index, LinuxLatchSlot* slot, SafeFdHandle handle)
    {
        int fd = handle.Fd;
        // Seqlock write: even (no owner) with a full barrier, the payload, then the odd value with release
        // semantics (pairs with Wake's acquire reads).
        uint old = Volatile.Read(ref slot->Generation);
        uint closedGen = (old | 1) + 1;
        var owner = new LinuxLatchOwner(wakers, index, slot, handle, closedGen + 1);
        lock (s_ownedLock)
            s_owned.Add(fd, owner);
        Interlocked.Exchange(ref slot->Generation, closedGen);
        slot->Pid = Environment.ProcessId;
        slot->Fd = fd;
        Volatile.Write(ref slot->Generation, owner.Generation);
        return owner; // a fresh eventfd has no stale wake-ups to drain
    }

    /// <summary>A Wake from this process: writes the owner with eventfd <paramref name="fd"/> if it is still generation <paramref name="generation"/>.</summary>
    public static void WakeLocal(int fd, uint generation)
    {
        lock (s_ownedLock)
        {
            if (s_owned.TryGetValue(fd, out LinuxLatchOwner? o) && o.Generation == generation)
                WriteOne(fd); // the owner closes its fd only after leaving the table, under this lock
        }
    }

    /// <summary>SIGURG: some process wanted one of our latches; we cannot tell which, so all are set.</summary>
    private static void OnSigUrg(PosixSignalContext context)
    {
        context.Cancel = true;
        lock (s_ownedLock)
        {
            foreach (KeyValuePair<int, LinuxLatchOwner> kv in s_owned)
                WriteOne(kv.Key);
        }
    }

    /// <summary>Adds 1 to an eventfd. EAGAIN (counter at its maximum: already awake) and other errors are ignored: wake-ups never throw.</summary>
    /// <remarks>
    /// write(2) through our binding (the Posix backend's [LibraryImport]), not Tmds.LibC's: this is the wake-up of
    /// every SetLatch on a sleeping owner, and Tmds.LibC's [DllImport(SetLastError = true)] runs through a
    /// runtime-generated IL stub where ours is a blittable P/Invoke the JIT inlines. Measured with
    /// `perf -- bindings` (perf/Platform/BindingAbHarness.cs: alternating blocks of 2000 writes of 8 bytes to a
    /// non-blocking eventfd, 200 pairs, median per call), three runs on 2026-12-03 12:32-12:33 UTC on the 2-vCPU
    /// VM at load 43: ours 381.4 / 318.5 / 396.2 ns, Tmds.LibC 393.5 / 337.8 / 415.4 ns, paired ratio
    /// 1.060 / 1.085 / 1.062 (about +19 ns a wake-up).
    /// </remarks>
    public static void WriteOne(int fd)
    {
        ulong one = 1;
        while (PosixLibC.write(fd, &one, sizeof(ulong)) == -1 && Errno.Last == Errno.EINTR)
        {
        }
    }

    public void Drain()
    {
        if (!_fd.IsClosed)
            Fifo.Drain(_fd);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        lock (s_ownedLock)
            s_owned.Remove(_fd.Fd);
        // Full barrier: wakers that duplicate the fd after the close below see the generation move.
        Interlocked.CompareExchange(ref _slot->Generation, Generation + 1, Generation);
        _fd.Dispose();
        _wakers.Release(this);
    }
}

/// <summary>A pidfd of the supervisor: readable once it has exited.</summary>
internal sealed unsafe class PidfdSupervisorWatch(SafeFdHandle fd) : ISupervisorWatch
{
    public nint WaitHandle => fd.Fd;

    public bool IsSupervisorDead
    {
        get
        {
            ObjectDisposedException.ThrowIf(fd.IsClosed, this);
            // Our poll binding, not Tmds.LibC's: Tmds.LibC 0.5.0 declares poll without SetLastError, so the
            // errno this loop retries on (EINTR) would not be seen.
            var p = new PosixLibC.pollfd { fd = fd.Fd, events = PosixLibC.POLLIN };
            int r;
            do
                r = PosixLibC.poll(&p, 1, 0);
            while (r == -1 && Errno.Last == Errno.EINTR);
            return r == 1 && p.revents != 0;
        }
    }

    public void Dispose() => fd.Dispose();
}

/// <summary>The supervisor was gone when watched: an eventfd written once and never read, so always ready.</summary>
internal sealed class DeadSupervisorWatch : ISupervisorWatch
{
    private readonly SafeFdHandle _fd;

    private DeadSupervisorWatch(SafeFdHandle fd) => _fd = fd;

    public static DeadSupervisorWatch Create(int pid)
    {
        int fd = TmdsLibC.eventfd(1, TmdsLibC.EFD_NONBLOCK | TmdsLibC.EFD_CLOEXEC);
        if (fd == -1)
            throw Errno.Exception("eventfd", Errno.Last, $"watch of supervisor pid {pid}, which is gone");
        return new DeadSupervisorWatch(new SafeFdHandle(fd));
    }

    public nint WaitHandle => _fd.Fd;

    public bool IsSupervisorDead => true;

    public void Dispose() => _fd.Dispose();
}
