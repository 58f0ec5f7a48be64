/*-------------------------------------------------------------------------
 * IProcSemaphoreProvider.cs
 *   Per-slot sleep/wake semaphores: what a participant sleeps on while it
 *   waits for an LWLock (PostgreSQL's PGSemaphore).
 *
 * NOTES
 *   One counting semaphore per PGPROC slot, created with the slot array and
 *   never destroyed until the cluster is. Only the slot's owner ever waits on
 *   it (Lock); anyone in any process may post it (Unlock). A post that finds
 *   nobody waiting is remembered (the count goes up), so a wake-up sent just
 *   before the owner goes to sleep is never lost; that is why the LWLock
 *   protocol can queue itself, re-check, and only then sleep.
 *
 *   Where the semaphore lives depends on the backend, so Core reserves
 *   ProcSemaphoreStorage.MaxSize bytes in every PGPROC and the backend uses
 *   as many as it needs (StorageSize):
 *     - Linux: a 32-bit futex word (shared, not FUTEX_PRIVATE);
 *     - Posix: a process-shared unnamed sem_t, or, where the OS has no
 *       unnamed process-shared semaphores (macOS), a named semaphore whose
 *       name is derived from the set's name and the index (storage unused);
 *     - Windows: a named semaphore object per slot (storage unused).
 *
 *   Mirrors src/include/storage/pg_sema.h and port/posix_sema.c,
 *   port/sysv_sema.c, port/win32_sema.c.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform;

/// <summary>Sizes of the shared storage Core reserves for each semaphore.</summary>
public static class ProcSemaphoreStorage
{
    /// <summary>Bytes reserved per semaphore in shared memory; a backend's <see cref="IProcSemaphoreProvider.StorageSize"/> must not exceed it.</summary>
    public const int MaxSize = 64;

    /// <summary>Longest name a set accepts (ASCII letters, digits, '.' and '_'); backends add their own prefix and the index.</summary>
    public const int MaxNameLength = 24;
}

/// <summary>Creates and opens the semaphore sets of a backend.</summary>
public interface IProcSemaphoreProvider
{
    /// <summary>Bytes of shared storage each semaphore uses (0 for named OS objects); at most <see cref="ProcSemaphoreStorage.MaxSize"/>.</summary>
    int StorageSize { get; }

    /// <summary>
    /// Creates <paramref name="count"/> semaphores with count 0. Semaphore i uses the shared bytes at
    /// <paramref name="storage"/> + i * <paramref name="stride"/> (zero-filled on entry), and, where the backend
    /// needs named objects, a name made from <paramref name="name"/> (unique per segment) and i.
    /// Throws <see cref="PgIpcOsException"/> naming the call that failed; on failure nothing is left behind.
    /// </summary>
    IProcSemaphoreSet Create(string name, nint storage, int stride, int count);

    /// <summary>Opens, in another process, the set another process created with the same arguments (its own mapping's storage address).</summary>
    IProcSemaphoreSet Attach(string name, nint storage, int stride, int count);
}

/// <summary>
/// The semaphores of one slot array, as this process sees them. Thread-safe. Dispose closes this
/// process's handles; <see cref="Destroy"/> (the creator, when the cluster goes) also removes the OS objects.
/// </summary>
public interface IProcSemaphoreSet : IDisposable
{
    /// <summary>The number of semaphores in the set.</summary>
    int Count { get; }

    /// <summary>Waits until the count is positive, then decrements it (PGSemaphoreLock). Interrupted waits are resumed.</summary>
    void Lock(int index);

    /// <summary>As <see cref="Lock(int)"/> but gives up after <paramref name="timeoutMs"/> ms (negative: forever); false on timeout.</summary>
    bool Lock(int index, int timeoutMs);

    /// <summary>
    /// True when <see cref="Lock(int, int)"/> sleeps in the OS until a post or the deadline (futex, sem_timedwait,
    /// WaitForSingleObject), as cheaply as <see cref="Lock(int)"/>; false when it has to poll (macOS, which has no
    /// sem_timedwait). LWLock waiters sleep with a timeout, to look for a dead holder, only when this is true.
    /// </summary>
    bool HasNativeTimedWait { get; }

    /// <summary>Decrements the count if it is positive, without waiting (PGSemaphoreTryLock).</summary>
    bool TryLock(int index);

    /// <summary>
    /// Increments the count, waking the waiter if there is one (PGSemaphoreUnlock). A wake-up path: it does
    /// not throw for a valid index; an OS failure here is a broken invariant and fails the process fast.
    /// </summary>
    void Unlock(int index);

    /// <summary>Sets the count back to zero (PGSemaphoreReset), when a slot is handed to a new owner.</summary>
    void Reset(int index);

    /// <summary>Removes the OS objects (sem_destroy, sem_unlink, or the last handle) and closes this process's handles.</summary>
    void Destroy();
}
