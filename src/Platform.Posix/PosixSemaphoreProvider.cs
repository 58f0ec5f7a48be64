/*-------------------------------------------------------------------------
 * PosixSemaphoreProvider.cs
 *   PGSemaphore through POSIX semaphores: unnamed process-shared sem_t in
 *   the shared storage where the OS has them, named ones where it does not.
 *
 * NOTES
 *   Unnamed mode (Linux, FreeBSD): semaphore i is a sem_t at storage +
 *   i * stride, made with sem_init(sem, pshared = 1, 0). The sem_t lives in
 *   the segment, so another process that maps it uses it as is; Attach does
 *   no OS work, Destroy calls sem_destroy. 32 bytes are reserved (glibc's
 *   sem_t; FreeBSD's is 16), 8-byte aligned.
 *
 *   Named mode (macOS, whose sem_init always fails with ENOSYS, or any OS
 *   where it fails with ENOSYS / ENOTSUP; and on request, so the path is
 *   tested on Linux): semaphore i is "/pgipc.<name>.<i>", made with
 *   sem_open(O_CREAT | O_EXCL, 0600, 0) and opened by others with
 *   sem_open(name, 0). The storage is unused. macOS limits names to 31 bytes
 *   (PSEMNAMLEN), so a set name too long for that is replaced by 12 hex
 *   digits of its FNV-1a hash. An existing name is a collision and fails
 *   Create (the caller's name is unique per segment); PostgreSQL instead
 *   unlinks its named semaphores at once, which a set that other processes
 *   open by name cannot do, so a creator killed before Destroy leaves them
 *   behind (on Linux as /dev/shm/sem.pgipc.*). Each process holds its
 *   sem_t* in a SafeHandle (sem_close); Destroy also sem_unlinks.
 *
 *   Which mode, is decided once per process by trying sem_init on a scratch
 *   sem_t, so every process on a machine picks the same one.
 *
 *   Lock retries sem_wait on EINTR (a signal handler ran; .NET's runtime
 *   sends them to suspend threads). Timed Lock uses sem_timedwait with an
 *   absolute CLOCK_REALTIME deadline; macOS has no sem_timedwait, so there it
 *   polls sem_trywait. Unlock is sem_post, which cannot fail on a valid
 *   semaphore; if it does, the process fails fast.
 *
 *   Mirrors PostgreSQL's port/posix_sema.c (USE_UNNAMED_POSIX_SEMAPHORES and
 *   USE_NAMED_POSIX_SEMAPHORES).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>POSIX semaphores: unnamed process-shared sem_t in shared storage, or named semaphores.</summary>
internal sealed class PosixSemaphoreProvider : IProcSemaphoreProvider
{
    /// <summary>Longest named-semaphore name, with its leading '/' (macOS PSEMNAMLEN).</summary>
    internal const int MaxSemNameLength = 31;

    internal const string NamePrefix = "/pgipc.";

    private readonly bool _forceNamed;

    public PosixSemaphoreProvider() : this(forceNamed: false)
    {
    }

    /// <param name="forceNamed">Use named semaphores even where unnamed ones work (tests the macOS path on Linux).</param>
    internal PosixSemaphoreProvider(bool forceNamed) => _forceNamed = forceNamed;

    /// <summary>True when this provider makes named semaphores.</summary>
    internal bool Named => _forceNamed || !UnnamedSupport.Works;

    public int StorageSize => Named ? 0 : LibC.SIZEOF_sem_t;

    public IProcSemaphoreSet Create(string name, nint storage, int stride, int count)
    {
        bool named = Named;
        ProcSemaphoreArgs.Validate(name, storage, stride, count, named ? 0 : LibC.SIZEOF_sem_t, sizeof(long));
        return named ? PosixSemaphoreSet.CreateNamed(name, count) : PosixSemaphoreSet.CreateUnnamed(name, storage, stride, count);
    }

    public IProcSemaphoreSet Attach(string name, nint storage, int stride, int count)
    {
        bool named = Named;
        ProcSemaphoreArgs.Validate(name, storage, stride, count, named ? 0 : LibC.SIZEOF_sem_t, sizeof(long));
        return named ? PosixSemaphoreSet.AttachNamed(name, count) : new PosixSemaphoreSet(name, storage, stride, count, handles: null);
    }

    /// <summary>The named semaphore for index <paramref name="index"/> of set <paramref name="name"/>: "/pgipc.&lt;name&gt;.&lt;index&gt;", or with a hash of the name when that exceeds 31 bytes.</summary>
    internal static string SemName(string name, int index)
    {
        string plain = $"{NamePrefix}{name}.{index}";
        if (plain.Length <= MaxSemNameLength)
            return plain;
        // FNV-1a, 64-bit: stable across processes and runs (string.GetHashCode is randomised per process).
        ulong h = 14695981039346656037UL;
        foreach (byte b in Encoding.ASCII.GetBytes(name))
            h = (h ^ b) * 1099511628211UL;
        return $"{NamePrefix}{h & 0xFFFF_FFFF_FFFFUL:x12}.{index}"; // at most 7 + 12 + 1 + 10 = 30 bytes
    }

    /// <summary>Whether process-shared unnamed semaphores work here, found once by trying one.</summary>
    private static unsafe class UnnamedSupport
    {
        public static readonly bool Works = Probe();

        private static bool Probe()
        {
            void* scratch = NativeMemory.AlignedAlloc(LibC.SIZEOF_sem_t, 16);
            try
            {
                NativeMemory.Clear(scratch, LibC.SIZEOF_sem_t);
                if (LibC.sem_init(scratch, 1, 0) == 0)
                {
                    LibC.sem_destroy(scratch);
                    return true;
                }
                int e = Errno.Last;
                // Any other error is not about support; Create will meet it again and report it.
                return e != Errno.ENOSYS && e != Errno.ENOTSUP;
            }
            finally
            {
                NativeMemory.AlignedFree(scratch);
            }
        }
    }
}

/// <summary>A sem_t* from sem_open; sem_close on release.</summary>
internal sealed unsafe class SafeSemaphoreHandle : SafeHandle
{
    public SafeSemaphoreHandle(void* sem) : base(0, ownsHandle: true) => SetHandle((nint)sem);

    public override bool IsInvalid => handle == 0 || handle == -1;

    protected override bool ReleaseHandle() => LibC.sem_close((void*)handle) == 0;
}

/// <summary>The POSIX semaphores of one set, as this process sees them.</summary>
internal sealed unsafe class PosixSemaphoreSet : IProcSemaphoreSet
{
    private static readonly bool s_hasTimedWait = !OperatingSystem.IsMacOS();

    private readonly string _name;
    private readonly byte* _storage;
    private readonly int _stride;
    /// <summary>Named mode: this process's handle per index; null in unnamed mode.</summary>
    private readonly SafeSemaphoreHandle[]? _handles;
    private volatile bool _closed;

    internal PosixSemaphoreSet(string name, nint storage, int stride, int count, SafeSemaphoreHandle[]? handles)
    {
        _name = name;
        _storage = (byte*)storage;
        _stride = stride;
        Count = count;
        _handles = handles;
    }

    public int Count { get; }

    public static PosixSemaphoreSet CreateUnnamed(string name, nint storage, int stride, int count)
    {
        for (int i = 0; i < count; i++)
        {
            void* sem = (byte*)storage + (nint)i * stride;
            if (LibC.sem_init(sem, 1, 0) != 0)
            {
                int e = Errno.Last;
                for (int j = 0; j < i; j++)
                    LibC.sem_destroy((byte*)storage + (nint)j * stride); // undo; the sem_init error is the one reported
                throw Errno.Exception("sem_init", e, $"initialising semaphore {i} of {count} of set \"{name}\"");
            }
        }
        return new PosixSemaphoreSet(name, storage, stride, count, handles: null);
    }

    public static PosixSemaphoreSet CreateNamed(string name, int count)
        => new(name, 0, 0, count, OpenNamed(name, count, create: true));

    public static PosixSemaphoreSet AttachNamed(string name, int count)
        => new(name, 0, 0, count, OpenNamed(name, count, create: false));

    private static SafeSemaphoreHandle[] OpenNamed(string name, int count, bool create)
    {
        var handles = new SafeSemaphoreHandle[count];
        int oflag = create ? LibC.O_CREAT | LibC.O_EXCL : 0;
        for (int i = 0; i < count; i++)
        {
            string semName = PosixSemaphoreProvider.SemName(name, i);
            void* sem = LibC.sem_open_variadic(semName, oflag, 0x180 /* 0600 */, 0);
            if (LibC.IsSemFailed(sem))
            {
                int e = Errno.Last;
                // Undo what this call made; the sem_open error is the one reported.
                for (int j = 0; j < i; j++)
                {
                    handles[j].Dispose();
                    if (create)
                        LibC.sem_unlink(PosixSemaphoreProvider.SemName(name, j));
                }
                string what = create
                    ? (e == Errno.EEXIST ? $"creating {semName}: the name is taken (another set of that name, or left by a killed creator)" : $"creating {semName}")
                    : $"opening {semName}";
                throw Errno.Exception("sem_open", e, $"{what} ({i} of {count} of set \"{name}\")");
            }
            handles[i] = new SafeSemaphoreHandle(sem);
        }
        return handles;
    }

    /// <summary>
    /// The sem_t* of <paramref name="index"/>. In named mode the handle is AddRef'd so a concurrent Dispose
    /// cannot sem_close it under a waiter; the caller passes <paramref name="held"/> to <see cref="Leave"/>.
    /// </summary>
    private void* Enter(int index, out SafeSemaphoreHandle? held)
    {
        ProcSemaphoreArgs.CheckIndex(index, Count);
        ProcSemaphoreArgs.CheckOpen(_closed, _name);
        if (_handles is null)
        {
            held = null;
            return _storage + (nint)index * _stride;
        }
        SafeSemaphoreHandle h = _handles[index];
        bool added = false;
        h.DangerousAddRef(ref added); // throws ObjectDisposedException once closed
        held = h;
        return (void*)h.DangerousGetHandle();
    }

    private static void Leave(SafeSemaphoreHandle? held) => held?.DangerousRelease();

    public void Lock(int index)
    {
        void* sem = Enter(index, out SafeSemaphoreHandle? held);
        try
        {
            while (LibC.sem_wait(sem) != 0)
            {
                int e = Errno.Last;
                if (e != Errno.EINTR)
                    throw Errno.Exception("sem_wait", e, $"waiting on semaphore {index} of set \"{_name}\"");
            }
        }
        finally
        {
            Leave(held);
        }
    }

    public bool HasNativeTimedWait => s_hasTimedWait;

    public bool Lock(int index, int timeoutMs)
    {
        if (timeoutMs < 0)
        {
            Lock(index);
            return true;
        }
        void* sem = Enter(index, out SafeSemaphoreHandle? held);
        try
        {
            return s_hasTimedWait ? TimedWait(sem, index, timeoutMs) : PollWait(sem, index, timeoutMs);
        }
        finally
        {
            Leave(held);
        }
    }

    private bool TimedWait(void* sem, int index, int timeoutMs)
    {
        LibC.timespec deadline;
        if (LibC.clock_gettime(LibC.CLOCK_REALTIME, &deadline) != 0)
            throw Errno.Exception("clock_gettime", Errno.Last, "reading CLOCK_REALTIME for a semaphore deadline");
        deadline.tv_sec += timeoutMs / 1000;
        deadline.tv_nsec += timeoutMs % 1000 * 1_000_000L;
        if (deadline.tv_nsec >= 1_000_000_000)
        {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1_000_000_000;
        }
        while (LibC.sem_timedwait(sem, &deadline) != 0)
        {
            int e = Errno.Last;
            if (e == Errno.ETIMEDOUT)
                return false;
            if (e != Errno.EINTR)
                throw Errno.Exception("sem_timedwait", e, $"waiting up to {timeoutMs} ms on semaphore {index} of set \"{_name}\"");
        }
        return true;
    }

    /// <summary>macOS: no sem_timedwait; poll sem_trywait, sleeping 1 ms between tries.</summary>
    private bool PollWait(void* sem, int index, int timeoutMs)
    {
        long deadline = Stopwatch.GetTimestamp() + (long)(timeoutMs * (double)Stopwatch.Frequency / 1000);
        while (!TryWait(sem, index))
        {
            if (Stopwatch.GetTimestamp() >= deadline)
                return false;
            Thread.Sleep(1);
        }
        return true;
    }

    private bool TryWait(void* sem, int index)
    {
        while (LibC.sem_trywait(sem) != 0)
        {
            int e = Errno.Last;
            if (e == Errno.EAGAIN)
                return false;
            if (e != Errno.EINTR)
                throw Errno.Exception("sem_trywait", e, $"semaphore {index} of set \"{_name}\"");
        }
        return true;
    }

    public bool TryLock(int index)
    {
        void* sem = Enter(index, out SafeSemaphoreHandle? held);
        try
        {
            return TryWait(sem, index);
        }
        finally
        {
            Leave(held);
        }
    }

    public void Unlock(int index)
    {
        void* sem = Enter(index, out SafeSemaphoreHandle? held);
        if (LibC.sem_post(sem) != 0)
        {
            int e = Errno.Last;
            Environment.FailFast($"sem_post failed: {Errno.Name(e)} ({e}) on semaphore {index} of set \"{_name}\"");
        }
        Leave(held);
    }

    /// <summary>Takes units until none is left (PostgreSQL's PGSemaphoreReset does the same).</summary>
    public void Reset(int index)
    {
        void* sem = Enter(index, out SafeSemaphoreHandle? held);
        try
        {
            while (TryWait(sem, index))
            {
            }
        }
        finally
        {
            Leave(held);
        }
    }

    public void Destroy()
    {
        ProcSemaphoreArgs.CheckOpen(_closed, _name);
        _closed = true;
        PgIpcOsException? first = null;
        if (_handles is null)
        {
            for (int i = 0; i < Count; i++)
            {
                if (LibC.sem_destroy(_storage + (nint)i * _stride) != 0)
                    first ??= Errno.Exception("sem_destroy", Errno.Last, $"semaphore {i} of set \"{_name}\"");
            }
        }
        else
        {
            for (int i = 0; i < Count; i++)
            {
                _handles[i].Dispose();
                string semName = PosixSemaphoreProvider.SemName(_name, i);
                if (LibC.sem_unlink(semName) != 0)
                {
                    int e = Errno.Last;
                    if (e != Errno.ENOENT) // already gone: nothing to remove
                        first ??= Errno.Exception("sem_unlink", e, $"removing {semName} of set \"{_name}\"");
                }
            }
        }
        if (first is not null)
            throw first;
    }

    public void Dispose()
    {
        _closed = true;
        if (_handles is not null)
        {
            foreach (SafeSemaphoreHandle h in _handles)
                h.Dispose();
        }
    }
}
