/*-------------------------------------------------------------------------
 * SLock.cs
 *   Cross-process spinlock on an int in shared memory (PostgreSQL's s_lock).
 *
 * NOTES
 *   Test-and-test-and-set: a waiter reads the word until it looks free and
 *   only then tries the compare-and-swap, so a spinning waiter does not keep
 *   stealing the cache line from the holder. While spinning it issues a CPU
 *   pause (SpinWait-style). After SpinsPerDelay failed tries it sleeps, with a
 *   randomised, exponentially growing delay between 1 ms and 1 s, as s_lock.c
 *   does. The spin count adapts per process: a lock we got without sleeping
 *   raises it, one we had to sleep for lowers it (on a uniprocessor spinning
 *   is useless, on a multiprocessor it usually wins).
 *
 *   The lock word holds the holder's pid (0 = free): Acquire is a
 *   compare-and-swap of 0 to this process's pid, as cheap as the exchange of
 *   1 it replaces. A waiter that has come to sleeping between tries checks,
 *   at each sleep, whether that pid still exists; if not, the holder died
 *   inside its critical section and the waiter throws
 *   LockHolderDiedException naming the lock and the pid (DeadHolder.cs),
 *   within a few milliseconds instead of hanging. The lock stays held: a
 *   holder that died while holding a spinlock is a broken invariant that
 *   only a cluster restart repairs. Threads of one process share the pid, so
 *   a lock held by another thread of ours is never taken for dead.
 *
 *   After NumDelays sleeps (about a minute in total) the lock is declared
 *   stuck and a StuckSpinLockException is raised, instead of hanging forever
 *   (a holder that lives but never releases, or one whose pid was reused).
 *
 *   Ordering: Acquire's Interlocked.CompareExchange is a full barrier (acquire
 *   side); Release's Volatile.Write is the release store that pairs with it:
 *   every write made inside the critical section is visible to the next
 *   acquirer.
 *
 *   Spinlocks are for a handful of instructions: never hold one across a call
 *   that can throw, allocate or block.
 *
 *   Mirrors src/backend/storage/lmgr/s_lock.c and include/storage/s_lock.h.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Platform;

using PgIpc.Shmem;

namespace PgIpc.Sync;

/// <summary>
/// One spinlock word padded to a cache line (as PostgreSQL pads hot locks).
/// Layout: offset 0 int Value (0 free, else the holder's pid; atomic only), then padding to 64 bytes.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct SpinLockPadded
{
    /// <summary>0 = free, else the holder's pid. Atomic only, through <see cref="SLock"/>.</summary>
    internal int Value;
}

/// <summary>Operations on a spinlock word in shared memory.</summary>
public static class SLock
{
    private const int MinSpinsPerDelay = 10;
    private const int MaxSpinsPerDelay = 1000;
    private const int DefaultNumDelays = 1000;
    private const int MinDelayUsec = 1000;
    private const int MaxDelayUsec = 1_000_000;

    // Sleeps before a lock is declared stuck; lowered only by tests.
    internal static int NumDelays = DefaultNumDelays;

    // Per-process adaptive spin budget, updated without a lock (a lost update is harmless).
    private static int s_spinsPerDelay = 100;

    /// <summary>Marks the lock free. Used once, when the structure holding it is initialised.</summary>
    public static void Init(ref int lockWord) => Volatile.Write(ref lockWord, 0);

    /// <summary>
    /// Takes the lock, spinning and then sleeping. Throws <see cref="LockHolderDiedException"/> when the holder's
    /// process is found dead, and <see cref="StuckSpinLockException"/> after about a minute otherwise.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Acquire(ref int lockWord, string where = "spinlock")
    {
        // Full barrier; pairs with the Volatile.Write in Release.
        if (Interlocked.CompareExchange(ref lockWord, HolderLiveness.MyPid, 0) != 0)
            AcquireSlow(ref lockWord, where);
    }

    /// <summary>Takes the lock if it is free right now.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryAcquire(ref int lockWord)
        => Volatile.Read(ref lockWord) == 0 && Interlocked.CompareExchange(ref lockWord, HolderLiveness.MyPid, 0) == 0;

    /// <summary>Releases the lock (release store; pairs with the compare-and-swap in Acquire).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Release(ref int lockWord) => Volatile.Write(ref lockWord, 0);

    /// <summary>True when someone holds the lock at this instant (diagnostics only).</summary>
    public static bool IsHeld(ref int lockWord) => Volatile.Read(ref lockWord) != 0;

    /// <summary>Pid of the holder at this instant, 0 when free (diagnostics only).</summary>
    public static int HolderPid(ref int lockWord) => Volatile.Read(ref lockWord);

    /// <summary>
    /// The spin-then-sleep schedule of every spin loop (PostgreSQL's SpinDelayStatus and perform_spin_delay):
    /// <see cref="Acquire"/>'s slow path, the LWLock wait-list bit and buffer headers. Process-local, on the stack.
    /// </summary>
    internal struct SpinDelay
    {
        private readonly string _where;
        private readonly int _spinsPerDelay;
        private int _spins;
        private int _delays;
        private int _curDelayUsec;

        public SpinDelay(string where)
        {
            _where = where;
            _spinsPerDelay = Volatile.Read(ref s_spinsPerDelay);
        }

        /// <summary>
        /// One more failed look at the lock: pause, and after a while sleep; throws when it looks stuck. Returns true
        /// when it slept (the moment for a waiter that can name the holder to check that it still lives).
        /// </summary>
        public bool Perform()
        {
            Thread.SpinWait(1 << Math.Min(_spins & 7, 4));
            if (++_spins < _spinsPerDelay)
                return false;
            if (++_delays > NumDelays)
                throw new StuckSpinLockException(_where, _delays - 1);
            if (_curDelayUsec == 0)
                _curDelayUsec = MinDelayUsec;
            Thread.Sleep(Math.Max(1, _curDelayUsec / 1000));
            // Grow by a random fraction between 1x and 2x; wrap back to the minimum past the maximum.
            _curDelayUsec += (int)(_curDelayUsec * Random.Shared.NextDouble() + 0.5);
            if (_curDelayUsec > MaxDelayUsec)
                _curDelayUsec = MinDelayUsec;
            _spins = 0;
            return true;
        }

        /// <summary>The lock was obtained: adapt the process's spin budget as Acquire does.</summary>
        public readonly void Finish()
        {
            if (_curDelayUsec == 0)
            {
                if (_spinsPerDelay < MaxSpinsPerDelay)
                    Volatile.Write(ref s_spinsPerDelay, Math.Min(_spinsPerDelay + 100, MaxSpinsPerDelay));
            }
            else if (_spinsPerDelay > MinSpinsPerDelay)
            {
                Volatile.Write(ref s_spinsPerDelay, Math.Max(_spinsPerDelay - 1, MinSpinsPerDelay));
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void AcquireSlow(ref int lockWord, string where)
    {
        var delay = new SpinDelay(where);
        while (true)
        {
            // Test, then test-and-set: only go for the compare-and-swap when the word looks free.
            int holder = Volatile.Read(ref lockWord);
            if (holder == 0 && Interlocked.CompareExchange(ref lockWord, HolderLiveness.MyPid, 0) == 0)
                break;
            // Sleeping between tries already: is the holder still there? A dead one never releases. The word is read
            // again after the check, so a pid seen just before a release-and-retake by a live process is not blamed.
            if (delay.Perform() && holder != 0 && HolderLiveness.IsDead(holder) && Volatile.Read(ref lockWord) == holder)
                throw new LockHolderDiedException($"spinlock {where}", holder);
        }
        delay.Finish();
    }
}
