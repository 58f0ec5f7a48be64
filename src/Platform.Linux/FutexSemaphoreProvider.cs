/*-------------------------------------------------------------------------
 * FutexSemaphoreProvider.cs
 *   PGSemaphore on Linux: a counting semaphore that is one 32-bit word in
 *   shared memory, slept on and woken with the futex system call.
 *
 * NOTES
 *   The word is the count, nothing else. Lock takes a unit with a CAS when
 *   the count is positive; when it is zero it sleeps in FUTEX_WAIT(word, 0),
 *   which the kernel only enters while the word still reads 0, so an Unlock
 *   landing between our read and the sleep makes the call return EAGAIN
 *   instead of sleeping: no wake-up is lost. Unlock increments the word and
 *   then always calls FUTEX_WAKE(word, 1). Skipping that call when nobody
 *   sleeps would need a waiter count beside the word; the LWLock protocol
 *   only posts a semaphore when it dequeued a waiter, so the wake almost
 *   always has somebody to wake and the saving would be small.
 *
 *   The futex ops are the shared ones (no FUTEX_PRIVATE_FLAG): the kernel
 *   keys a shared futex by the page and offset in the mapping, so the same
 *   word mapped at different addresses in different processes is the same
 *   futex. A timed wait passes a relative timeout, recomputed after every
 *   wake-up from a monotonic deadline.
 *
 *   The futex call goes through our own syscall binding, not Tmds.LibC's,
 *   which measured about 4-6% (+17 ns) slower per call: see
 *   Interop/LibC.syscall.cs for why and the figures.
 *
 *   Nothing here is an OS object: Create zero-fills the words, Destroy and
 *   Dispose only forget them. The storage must be 4-byte aligned (the
 *   kernel refuses unaligned futex words with EINVAL).
 *
 *   Mirrors PostgreSQL's port/posix_sema.c in role; glibc's sem_wait is built
 *   the same way (nptl/sem_waitcommon.c), with a waiter count added.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Platform.Linux.Interop;
using PgIpc.Platform.Posix;

namespace PgIpc.Platform.Linux;

/// <summary>Futex-word semaphores in shared storage (4 bytes each).</summary>
internal sealed class FutexSemaphoreProvider : IProcSemaphoreProvider
{
    public int StorageSize => sizeof(int);

    public IProcSemaphoreSet Create(string name, nint storage, int stride, int count)
    {
        ProcSemaphoreArgs.Validate(name, storage, stride, count, StorageSize, sizeof(int));
        CheckArchitecture();
        var set = new FutexSemaphoreSet(name, storage, stride, count);
        for (int i = 0; i < count; i++)
            set.Reset(i);
        return set;
    }

    public IProcSemaphoreSet Attach(string name, nint storage, int stride, int count)
    {
        ProcSemaphoreArgs.Validate(name, storage, stride, count, StorageSize, sizeof(int));
        CheckArchitecture();
        return new FutexSemaphoreSet(name, storage, stride, count);
    }

    private static void CheckArchitecture()
    {
        if (LibC.SYS_futex < 0)
            throw new PlatformNotSupportedException($"futex semaphores are not supported on {RuntimeInformation.ProcessArchitecture}");
    }
}

/// <summary>The futex words of one set, as this process maps them.</summary>
internal sealed unsafe class FutexSemaphoreSet : IProcSemaphoreSet
{
    private readonly string _name;
    private readonly byte* _storage;
    private readonly int _stride;
    private volatile bool _closed;

    public FutexSemaphoreSet(string name, nint storage, int stride, int count)
    {
        _name = name;
        _storage = (byte*)storage;
        _stride = stride;
        Count = count;
    }

    public int Count { get; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int* Word(int index)
    {
        ProcSemaphoreArgs.CheckIndex(index, Count);
        ProcSemaphoreArgs.CheckOpen(_closed, _name);
        return (int*)(_storage + (nint)index * _stride);
    }

    /// <summary>Takes one unit if the count is positive. The CAS is a full barrier: pairs with Unlock's increment.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryDecrement(int* word)
    {
        int v;
        while ((v = Volatile.Read(ref *word)) > 0)
        {
            if (Interlocked.CompareExchange(ref *word, v - 1, v) == v)
                return true;
        }
        return false;
    }

    public void Lock(int index)
    {
        int* word = Word(index);
        while (!TryDecrement(word))
        {
            // Sleeps only while *word is still 0; an Unlock in between makes this return EAGAIN.
            if (LibC.syscall(LibC.SYS_futex, word, LibC.FUTEX_WAIT, 0, null, null, 0) == -1)
            {
                int e = Errno.Last;
                if (e != Errno.EINTR && e != Errno.EAGAIN)
                    throw Errno.Exception("futex(FUTEX_WAIT)", e, $"waiting on semaphore {index} of set \"{_name}\"");
            }
        }
    }

    public bool HasNativeTimedWait => true;

    public bool Lock(int index, int timeoutMs)
    {
        if (timeoutMs < 0)
        {
            Lock(index);
            return true;
        }
        int* word = Word(index);
        long deadline = Stopwatch.GetTimestamp() + (long)(timeoutMs * (double)Stopwatch.Frequency / 1000);
        while (!TryDecrement(word))
        {
            long remaining = deadline - Stopwatch.GetTimestamp();
            if (remaining <= 0)
                return false;
            long ns = (long)(remaining * (1_000_000_000.0 / Stopwatch.Frequency));
            var ts = new Tmds.Linux.timespec { tv_sec = ns / 1_000_000_000, tv_nsec = (Tmds.Linux.long_t)(ns % 1_000_000_000) };
            if (LibC.syscall(LibC.SYS_futex, word, LibC.FUTEX_WAIT, 0, &ts, null, 0) == -1)
            {
                int e = Errno.Last;
                if (e != Errno.EINTR && e != Errno.EAGAIN && e != Errno.ETIMEDOUT)
                    throw Errno.Exception("futex(FUTEX_WAIT)", e, $"waiting up to {timeoutMs} ms on semaphore {index} of set \"{_name}\"");
                // ETIMEDOUT: the loop takes a unit posted at the last moment, else sees the deadline passed.
            }
        }
        return true;
    }

    public bool TryLock(int index) => TryDecrement(Word(index));

    public void Unlock(int index)
    {
        int* word = Word(index);
        // Full barrier: everything written before Unlock is visible to the Lock that takes this unit.
        if (Interlocked.Increment(ref *word) <= 0)
        {
            // The word is in shared memory: a count that overflowed (or was negative) was written over. A wake-up path
            // never throws, and the sleeper only needs a unit to take: reset the count to one posted unit (at worst a
            // spurious wake-up, which every sleeper re-checks for) rather than end the process.
            Interlocked.Exchange(ref *word, 1);
        }
        if (LibC.syscall(LibC.SYS_futex, word, LibC.FUTEX_WAKE, 1, null, null, 0) == -1)
        {
            int e = Errno.Last;
            Environment.FailFast($"futex(FUTEX_WAKE) failed: {Errno.Name(e)} ({e}) on semaphore {index} of set \"{_name}\"");
        }
    }

    public void Reset(int index) => Interlocked.Exchange(ref *Word(index), 0);

    /// <summary>Nothing to remove: the words live in the segment and go with it.</summary>
    public void Destroy()
    {
        ProcSemaphoreArgs.CheckOpen(_closed, _name);
        _closed = true;
    }

    public void Dispose() => _closed = true;
}
