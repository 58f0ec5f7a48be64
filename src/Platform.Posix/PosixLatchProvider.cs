/*-------------------------------------------------------------------------
 * PosixLatchProvider.cs
 *   Latch wake objects for the Posix backend: a named FIFO per slot (a
 *   self-pipe any process can open by name), poll() or select() wait sets,
 *   a lifeline FIFO for the supervisor-death watch, SIGUSR1 interrupts.
 *
 * NOTES
 *   Layout: Create makes the directory "<temp>/pgipc.<name>" (mode 0700:
 *   only this user's processes can wake or watch) holding the FIFO "l<i>"
 *   for slot i and the lifeline FIFO "pm" (all mode 0600). A name that
 *   exists makes Create fail (EEXIST): the caller's name is unique per
 *   segment, so it is a live set or one a crashed creator left behind, and
 *   neither may be taken over silently. Destroy unlinks every FIFO and
 *   removes the directory. No shared storage is used (StorageSize 0).
 *
 *   Owner: Own(i) opens "l<i>" O_RDWR | O_NONBLOCK. Being a writer too, the
 *   owner never sees end of file, and the open never blocks (POSIX leaves
 *   O_RDWR on a FIFO undefined; Linux, macOS and the BSDs all allow it). It
 *   drains bytes left for an earlier owner. The wait set polls this fd for
 *   POLLIN and drains it before reporting the latch.
 *
 *   Waker: Wake(i) writes one byte to slot i's FIFO through a write end it
 *   opens lazily (O_WRONLY | O_NONBLOCK) and caches per slot. ENXIO from
 *   open means nobody has the FIFO open for reading: no owner, nothing to
 *   do (the next Wake tries again). EAGAIN from write means the pipe is
 *   full, so the owner has plenty to wake it. EPIPE means the owner left
 *   (the .NET runtime ignores SIGPIPE): the cached end is closed and the
 *   open retried once, since a new owner may be there. A cached write end
 *   keeps the kernel pipe alive across owners, so a byte written just
 *   before an owner leaves can reach the next one; Own drains it, and a
 *   spurious latch wake-up is harmless anyway (Core re-checks is_set). The
 *   FIFO paths are kept as NUL-terminated bytes, made once per set, so a
 *   Wake allocates nothing but the SafeHandle of a newly opened write end.
 *   Each slot's cache is guarded by its own lock; Wake never throws.
 *   At most MaxWriteEnds (64 by default) write ends are cached per view,
 *   so a process that wakes thousands of slots over its life does not hold
 *   thousands of descriptors: opening one more closes another slot's by a
 *   clock sweep (a reference bit per slot, set by each write through it;
 *   the hand clears set bits and closes the first end whose bit is clear;
 *   a victim's lock is only tried, never waited for, so wakers holding
 *   their own slot's lock cannot deadlock). The evicted slot's next Wake
 *   opens its FIFO again; bytes already written stay in the pipe, which
 *   its owner holds open.
 *
 *   Supervisor death: the supervisor opens "pm" O_RDWR and keeps it open
 *   (CreateLifeline), O_CLOEXEC so no child holds it. A watcher opens it
 *   O_RDONLY | O_NONBLOCK; when the last writer is gone (the supervisor
 *   died), poll reports POLLHUP and select readability. Linux reports that
 *   hang-up only to a reader opened before some writer opened (pipe_poll
 *   compares the writer counter with its value at the reader's open), so a
 *   watcher opening after the supervisor died would never see it: the
 *   watcher therefore opens and at once closes a write end after its own
 *   open. That is harmless while the supervisor lives and makes an
 *   already-dead supervisor show at once. IsSupervisorDead polls the fd
 *   without waiting, or sees kill(pid, 0) fail with ESRCH. When "pm" does
 *   not exist (the set was made without a lifeline, or on another machine),
 *   the watch has no descriptor and is checked with kill(pid, 0) only, at
 *   least once a second by the wait set (see UnixWaitSet.cs); pid reuse can
 *   hide a death from that check.
 *
 *   Interrupts: SIGUSR1 (UnixInterrupts.cs).
 *
 *   Mirrors PostgreSQL's latch.c self-pipe (WAIT_USE_POLL) with the pipe
 *   made nameable, and its postmaster-death pipe (postmaster.c,
 *   postmaster_alive_fds).
 *-------------------------------------------------------------------------
 */
using System.Text;
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>FIFO latches, poll/select wait sets, the lifeline FIFO and SIGUSR1 interrupts.</summary>
internal sealed class PosixLatchProvider : ILatchProvider
{
    internal const string DirectoryPrefix = "pgipc.";

    /// <summary>Write ends a view keeps open at most (see the banner).</summary>
    internal const int DefaultMaxWriteEnds = 64;

    private readonly bool _useSelect;
    private readonly int _maxWriteEnds;

    public PosixLatchProvider() : this(useSelect: false)
    {
    }

    /// <param name="useSelect">Wait sets use select() instead of poll() (descriptors below 1024 only).</param>
    /// <param name="maxWriteEnds">Most FIFO write ends each view keeps open.</param>
    internal PosixLatchProvider(bool useSelect, int maxWriteEnds = DefaultMaxWriteEnds)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxWriteEnds, 1);
        _useSelect = useSelect;
        _maxWriteEnds = maxWriteEnds;
    }

    public int StorageSize => 0;

    /// <summary>The directory holding set <paramref name="name"/>'s FIFOs.</summary>
    internal static string DirectoryOf(string name) => Path.Combine(Path.GetTempPath(), DirectoryPrefix + name);

    internal static string LifelinePath(string name) => Path.Combine(DirectoryOf(name), "pm");

    public ILatchWakers Create(string name, nint storage, int stride, int count)
    {
        LatchArgs.Validate(name, storage, stride, count, storageSize: 0, alignment: 1);
        string dir = DirectoryOf(name);
        if (LibC.mkdir(dir, 0x1C0 /* 0700 */) == -1)
        {
            int e = Errno.Last;
            throw Errno.Exception("mkdir", e, e == Errno.EEXIST
                ? $"latch directory {dir} exists: a live latch set \"{name}\", or one a crashed creator left behind (remove it)"
                : $"latch directory {dir}");
        }
        var made = new List<string>(count + 1);
        try
        {
            for (int i = 0; i <= count; i++)
            {
                string fifo = i < count ? SlotPath(dir, i) : Path.Combine(dir, "pm");
                if (LibC.mkfifo(fifo, 0x180 /* 0600 */) == -1)
                    throw Errno.Exception("mkfifo", Errno.Last, $"FIFO {fifo} of latch set \"{name}\"");
                made.Add(fifo);
            }
        }
        catch
        {
            foreach (string f in made)
                LibC.unlink(f);
            LibC.rmdir(dir);
            throw;
        }
        return new PosixLatchWakers(name, dir, count, _maxWriteEnds);
    }

    public ILatchWakers Attach(string name, nint storage, int stride, int count)
    {
        LatchArgs.Validate(name, storage, stride, count, storageSize: 0, alignment: 1);
        string dir = DirectoryOf(name);
        if (!Directory.Exists(dir))
            throw Errno.Exception("stat", Errno.ENOENT, $"latch directory {dir} of latch set \"{name}\" does not exist (not created, or destroyed)");
        return new PosixLatchWakers(name, dir, count, _maxWriteEnds);
    }

    internal static string SlotPath(string dir, int index) => Path.Combine(dir, "l" + index.ToString(System.Globalization.CultureInfo.InvariantCulture));

    public IPlatformWaitSet CreateWaitSet(int capacity)
        => _useSelect ? new PosixSelectWaitSet(capacity) : new PosixPollWaitSet(capacity);

    public IDisposable CreateLifeline(string name)
    {
        LatchArgs.ValidateName(name);
        string path = LifelinePath(name);
        // The only writer of the FIFO; O_CLOEXEC: a child holding it would keep the supervisor "alive" after it died.
        int fd = Fifo.Open(path, LibC.O_RDWR | LibC.O_NONBLOCK | LibC.O_CLOEXEC);
        if (fd == -1)
        {
            int e = Errno.Last;
            throw Errno.Exception("open", e, e == Errno.ENOENT
                ? $"lifeline FIFO {path}: the latch set \"{name}\" was not created on this machine"
                : $"lifeline FIFO {path}");
        }
        return new SafeFdHandle(fd);
    }

    public ISupervisorWatch WatchSupervisor(string name, int supervisorPid)
    {
        LatchArgs.ValidateName(name);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(supervisorPid);
        string path = LifelinePath(name);
        int fd = Fifo.Open(path, LibC.O_RDONLY | LibC.O_NONBLOCK | LibC.O_CLOEXEC);
        if (fd == -1)
        {
            int e = Errno.Last;
            if (e == Errno.ENOENT)
                return new KillSupervisorWatch(supervisorPid); // no lifeline: kill(pid, 0) only (see the banner)
            throw Errno.Exception("open", e, $"lifeline FIFO {path}");
        }
        var handle = new SafeFdHandle(fd);
        // Open and close a write end so Linux reports the hang-up even if the supervisor is already gone (see the banner).
        int w = Fifo.Open(path, LibC.O_WRONLY | LibC.O_NONBLOCK | LibC.O_CLOEXEC);
        if (w >= 0)
            LibC.close(w);
        return new FifoSupervisorWatch(handle, supervisorPid);
    }

    public IDisposable ListenForInterrupts(string name, Action onInterrupt) => UnixInterrupts.Listen(name, onInterrupt);

    public bool Interrupt(string name, int pid) => UnixInterrupts.Interrupt(name, pid);
}

/// <summary>open(2) of a FIFO by path, retried on EINTR.</summary>
internal static unsafe class Fifo
{
    /// <summary>A path as the NUL-terminated UTF-8 bytes open() takes.</summary>
    public static byte[] PathBytes(string path)
    {
        byte[] b = new byte[Encoding.UTF8.GetByteCount(path) + 1];
        Encoding.UTF8.GetBytes(path, b);
        return b;
    }

    public static int Open(string path, int flags) => Open(PathBytes(path), flags);

    /// <summary>The fd, or -1 with errno in <see cref="Errno.Last"/>.</summary>
    public static int Open(byte[] path, int flags)
    {
        fixed (byte* p = path)
        {
            int fd;
            do
                fd = LibC.open(p, flags);
            while (fd == -1 && Errno.Last == Errno.EINTR);
            return fd;
        }
    }

    /// <summary>Reads everything pending from a non-blocking fd (a latch FIFO or eventfd) and throws it away.</summary>
    public static void Drain(SafeFdHandle handle)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            byte* buf = stackalloc byte[64];
            while (true)
            {
                nint n = LibC.read(handle.Fd, buf, 64);
                if (n == 64)
                    continue; // maybe more
                if (n == -1 && Errno.Last == Errno.EINTR)
                    continue;
                return; // less than a buffer, EAGAIN (empty), or an error nobody can act on
            }
        }
        finally
        {
            if (added)
                handle.DangerousRelease();
        }
    }
}

/// <summary>Slot FIFOs of one latch set, as this process sees them.</summary>
internal sealed unsafe class PosixLatchWakers : ILatchWakers
{
    private readonly string _name;
    private readonly string _dir;
    private readonly byte[][] _paths;
    /// <summary>Cached write end per slot; read and replaced only under that slot's lock.</summary>
    private readonly SafeFdHandle?[] _writers;
    private readonly Lock[] _slotLocks;
    /// <summary>Slots this view's Own handed out and not yet released; under _ownLock.</summary>
    private readonly PosixLatchOwner?[] _owners;
    private readonly Lock _ownLock = new();
    private volatile bool _closed;
    /// <summary>The clock sweep's reference bit per slot: set by each write through its end, under the slot's lock.</summary>
    private readonly bool[] _referenced;
    private readonly int _maxWriteEnds;
    /// <summary>Cached write ends (Interlocked: changed under each slot's own lock, so by several locks).</summary>
    private int _writeEnds;
    /// <summary>The clock hand over the slots (Interlocked; taken modulo Count).</summary>
    private uint _hand;

    public PosixLatchWakers(string name, string dir, int count, int maxWriteEnds = PosixLatchProvider.DefaultMaxWriteEnds)
    {
        _name = name;
        _dir = dir;
        Count = count;
        _maxWriteEnds = maxWriteEnds;
        _referenced = new bool[count];
        _paths = new byte[count][];
        _writers = new SafeFdHandle?[count];
        _slotLocks = new Lock[count];
        _owners = new PosixLatchOwner?[count];
        for (int i = 0; i < count; i++)
        {
            _paths[i] = Fifo.PathBytes(PosixLatchProvider.SlotPath(dir, i));
            _slotLocks[i] = new Lock();
        }
    }

    public int Count { get; }

    public ILatchOwner Own(int index)
    {
        LatchArgs.CheckIndex(index, Count);
        lock (_ownLock)
        {
            LatchArgs.CheckOpen(_closed, _name);
            if (_owners[index] is not null)
                throw new InvalidOperationException($"latch slot {index} of set \"{_name}\" is already owned by this process");
            int fd = Fifo.Open(_paths[index], LibC.O_RDWR | LibC.O_NONBLOCK | LibC.O_CLOEXEC);
            if (fd == -1)
                throw Errno.Exception("open", Errno.Last, $"FIFO {PosixLatchProvider.SlotPath(_dir, index)} of latch slot {index}");
            var owner = new PosixLatchOwner(this, index, new SafeFdHandle(fd));
            owner.Drain(); // wake-ups left for an earlier owner
            _owners[index] = owner;
            return owner;
        }
    }

    internal void Release(PosixLatchOwner owner)
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
        lock (_slotLocks[index])
        {
            if (_closed)
                return;
            for (int attempt = 0; attempt < 2; attempt++)
            {
                SafeFdHandle? w = _writers[index];
                if (w is null)
                {
                    int fd = Fifo.Open(_paths[index], LibC.O_WRONLY | LibC.O_NONBLOCK | LibC.O_CLOEXEC);
                    if (fd == -1)
                        return; // ENXIO: no owner now; anything else (ENOENT after Destroy): nothing to wake
                    _writers[index] = w = new SafeFdHandle(fd);
                    if (Interlocked.Increment(ref _writeEnds) > _maxWriteEnds)
                        EvictOne(index);
                }
                byte one = 1;
                nint n;
                int e;
                do
                {
                    n = LibC.write(w.Fd, &one, 1);
                    e = n == -1 ? Errno.Last : 0;
                }
                while (e == Errno.EINTR);
                if (n == 1 || e == Errno.EAGAIN)
                {
                    _referenced[index] = true;
                    return; // written, or the pipe is full: the owner has a wake-up pending
                }
                _writers[index] = null;
                w.Dispose();
                Interlocked.Decrement(ref _writeEnds);
                if (e != Errno.EPIPE)
                    return;
                // EPIPE: that owner left; a new one may have the FIFO open: reopen once.
            }
        }
    }

    /// <summary>
    /// The clock sweep (see the banner): closes one cached write end other than slot <paramref name="self"/>'s, whose
    /// lock the caller holds. Victims' locks are only tried. Never throws.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
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
                if (_writers[j] is not { } victim)
                    continue;
                if (_referenced[j])
                {
                    _referenced[j] = false;
                    continue;
                }
                _writers[j] = null;
                victim.Dispose();
                Interlocked.Decrement(ref _writeEnds);
                return;
            }
            finally
            {
                _slotLocks[j].Exit();
            }
        }
    }

    /// <summary>Write ends this view holds open now (at most the bound, see the banner; for tests).</summary>
    internal int WriteEnds => Volatile.Read(ref _writeEnds);

    public void Destroy()
    {
        LatchArgs.CheckOpen(_closed, _name);
        Dispose();
        PgIpcOsException? first = null;
        for (int i = 0; i <= Count; i++)
        {
            string fifo = i < Count ? PosixLatchProvider.SlotPath(_dir, i) : Path.Combine(_dir, "pm");
            if (LibC.unlink(fifo) == -1 && Errno.Last is int e && e != Errno.ENOENT)
                first ??= Errno.Exception("unlink", e, $"FIFO {fifo} of latch set \"{_name}\"");
        }
        if (LibC.rmdir(_dir) == -1 && Errno.Last is int re && re != Errno.ENOENT)
            first ??= Errno.Exception("rmdir", re, $"latch directory {_dir}");
        if (first is not null)
            throw first;
    }

    /// <summary>Closes the cached write ends and releases the slots this view owns.</summary>
    public void Dispose()
    {
        PosixLatchOwner?[] owned;
        lock (_ownLock)
        {
            if (_closed)
                return;
            _closed = true;
            owned = (PosixLatchOwner?[])_owners.Clone();
        }
        foreach (PosixLatchOwner? o in owned)
            o?.Dispose();
        for (int i = 0; i < Count; i++)
        {
            lock (_slotLocks[i])
            {
                if (_writers[i] is { } w)
                {
                    w.Dispose();
                    Interlocked.Decrement(ref _writeEnds);
                }
                _writers[i] = null;
            }
        }
    }
}

/// <summary>This process's read end of one slot's FIFO.</summary>
internal sealed class PosixLatchOwner : ILatchOwner
{
    private readonly PosixLatchWakers _wakers;
    private readonly SafeFdHandle _fd;

    public PosixLatchOwner(PosixLatchWakers wakers, int index, SafeFdHandle fd)
    {
        _wakers = wakers;
        Index = index;
        _fd = fd;
    }

    public int Index { get; }

    public nint WaitHandle => _fd.Fd;

    public void Drain()
    {
        if (!_fd.IsClosed)
            Fifo.Drain(_fd);
    }

    public void Dispose()
    {
        if (_fd.IsClosed)
            return;
        _fd.Dispose();
        _wakers.Release(this);
    }
}

/// <summary>A watcher's read end of the lifeline FIFO: hang-up once the supervisor (its only writer) is gone.</summary>
internal sealed unsafe class FifoSupervisorWatch : ISupervisorWatch
{
    private readonly SafeFdHandle _fd;
    private readonly int _pid;

    public FifoSupervisorWatch(SafeFdHandle fd, int pid)
    {
        _fd = fd;
        _pid = pid;
    }

    public nint WaitHandle => _fd.Fd;

    public bool IsSupervisorDead
    {
        get
        {
            ObjectDisposedException.ThrowIf(_fd.IsClosed, this);
            var p = new LibC.pollfd { fd = _fd.Fd, events = LibC.POLLIN };
            int r;
            do
                r = LibC.poll(&p, 1, 0);
            while (r == -1 && Errno.Last == Errno.EINTR);
            if (r == 1 && (p.revents & (LibC.POLLIN | LibC.POLLHUP | LibC.POLLERR)) != 0)
                return true;
            return KillSupervisorWatch.IsGone(_pid);
        }
    }

    public void Dispose() => _fd.Dispose();
}

/// <summary>A watch with no descriptor: the supervisor is dead when kill(pid, 0) says ESRCH. Polled by wait sets.</summary>
internal sealed class KillSupervisorWatch(int pid) : ISupervisorWatch
{
    /// <summary>-1: nothing to wait on (UnixWaitSet polls <see cref="IsSupervisorDead"/>).</summary>
    public nint WaitHandle => -1;

    public bool IsSupervisorDead => IsGone(pid);

    internal static bool IsGone(int pid) => LibC.kill(pid, 0) == -1 && Errno.Last == Errno.ESRCH;

    public void Dispose()
    {
    }
}
