/*-------------------------------------------------------------------------
 * LockShmem.cs
 *   The lock manager's structures in shared memory: its header (partition
 *   locks, strong-lock counters, settings), one LOCK per locked object,
 *   one PROCLOCK per holder and object, and one LockProcState per
 *   participant slot (its lock wait and its fast-path slots).
 *
 * NOTES
 *   LOCK and PROCLOCK are the values of two SharedHash tables partitioned
 *   16 ways by the lock tag's hash (a PROCLOCK's hash keeps its lock's low
 *   four bits, so both live in the same partition). Everything in a LOCK or
 *   PROCLOCK, and the per-partition PROCLOCK lists of every slot, is under
 *   that partition's LWLock: exclusive to change, shared to read.
 *
 *   Links are offsets from the main segment's base (0 = none: the segment
 *   header is at 0), never addresses: each process maps the segment at its
 *   own address. Hash elements never move, so an offset stays valid for the
 *   life of the entry.
 *
 *   Wait queues link participant slots by procno through LockProcState's
 *   WaitNext / WaitPrev (-1 ends), in the order the lock grants them.
 *
 *   PostgreSQL 18 moved the fast-path arrays out of PGPROC into their own
 *   array; here too they live in LockProcState, owned by this module, not
 *   in the 256-byte PgProc. The per-slot fast-path LWLock (fpInfoLock)
 *   protects FpLockBits and FpRel.
 *
 *   Mirrors src/include/storage/lock.h (LOCK, PROCLOCK,
 *   FastPathStrongRelationLockData) and the lock fields of proc.h.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Lmgr;

/// <summary>
/// The lock manager's header. Layout (bytes) and protectors:
/// <code>
///    0  Magic                  immutable; written last by the initialiser
///    4  MaxProcs               immutable (slots of the ProcArray it was made for)
///    8  MaxLocksPerParticipant immutable (max_locks_per_participant)
///   12  LockCapacity           immutable (LOCK entries)
///   16  ProcLockCapacity       immutable (PROCLOCK entries)
///   20  DeadlockTimeoutMs      immutable: the default deadlock_timeout of every process
///   24  LockTimeoutMs          immutable: the default lock_timeout (0 = none)
///   32  PartitionLocksOffset   immutable: segment offset of LWLockPadded[16]
///   40  StrongLocksOffset      immutable: segment offset of the strong-lock counters
///   48  ProcStatesOffset       immutable: segment offset of LockProcState[MaxProcs]
///   56  DeadlockChecks         atomic only (statistics: deadlock checks run, only grows)
///   64  DeadlocksFound         atomic only (hard deadlocks reported, only grows)
///   72  SoftDeadlocksResolved  atomic only (queues rearranged, only grows)
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 128)]
internal struct LockManagerHeader
{
    public const uint MagicValue = 0x4C4D4752; // "LMGR"
    public uint Magic;
    public int MaxProcs;
    public int MaxLocksPerParticipant;
    public int LockCapacity;
    public int ProcLockCapacity;
    public int DeadlockTimeoutMs;
    public int LockTimeoutMs;
    private int _pad0;
    public long PartitionLocksOffset;
    public long StrongLocksOffset;
    public long ProcStatesOffset;
    public long DeadlockChecks;
    public long DeadlocksFound;
    public long SoftDeadlocksResolved;
}

/// <summary>
/// FastPathStrongRelationLocks: how many strong relation locks are held or being taken per hash partition of
/// relations (1024 partitions). Layout: Mutex (64, padded spinlock) then Count[1024]. Count: Mutex to change; read
/// by weak lockers without it, after taking their own fast-path LWLock (whose acquire is a full barrier that pairs
/// with the strong locker's acquire of the same LWLock during the transfer, after its increment).
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 64 + 4 * LockManager.StrongLockPartitions)]
internal unsafe struct StrongLockCounts
{
    public SpinLockPadded Mutex;
    public fixed int Count[LockManager.StrongLockPartitions];
}

/// <summary>
/// One locked object (LOCK), the value of the lock table keyed by its tag. All fields: the partition's LWLock.
/// <code>
///    0  Tag            copy of the key (immutable while the entry exists)
///   20  HashCode       the tag's hash (immutable while the entry exists)
///   24  GrantMask      modes granted to someone (bit per mode)
///   28  WaitMask       modes someone waits for
///   32  NRequested     requests: granted + waiting, every mode
///   36  NGranted       granted, every mode
///   40  Requested[9]   per mode (index 0 unused)
///   76  Granted[9]     per mode
///  112  WaitHead       first waiting procno (-1 = none)
///  116  WaitTail       last waiting procno
///  120  WaitCount      waiters
///  128  ProcLocksHead  segment offset of the first PROCLOCK on this lock (0 = none)
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 136)]
internal unsafe struct LockEntry
{
    public LockTag Tag;
    public uint HashCode;
    public int GrantMask;
    public int WaitMask;
    public int NRequested;
    public int NGranted;
    public fixed int Requested[LockModes.Count + 1];
    public fixed int Granted[LockModes.Count + 1];
    public int WaitHead;
    public int WaitTail;
    public int WaitCount;
    private int _pad0;
    public long ProcLocksHead;
}

/// <summary>The key of a PROCLOCK: the lock's tag and the holder's slot. Layout: Tag at 0, ProcNumber at 20; 24 bytes.</summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 24)]
internal struct ProcLockKey(LockTag tag, int procNumber)
{
    public LockTag Tag = tag;
    public int ProcNumber = procNumber;
}

/// <summary>
/// One holder (or waiter) of one lock (PROCLOCK). All fields: the partition's LWLock.
/// <code>
///    0  LockOffset   segment offset of its LOCK (immutable while the entry exists)
///    8  ProcNumber   the holder's slot (immutable while the entry exists)
///   12  HoldMask     modes it holds
///   16  NextOnLock   segment offset of the next PROCLOCK of the same LOCK (0 = end)
///   24  PrevOnLock   the previous one (0 = it is the head)
///   32  NextOnProc   the next PROCLOCK of the same slot in the same partition (0 = end)
///   40  PrevOnProc   the previous one (0 = it is the head)
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 48)]
internal struct ProcLockEntry
{
    public long LockOffset;
    public int ProcNumber;
    public int HoldMask;
    public long NextOnLock;
    public long PrevOnLock;
    public long NextOnProc;
    public long PrevOnProc;
}

/// <summary>How a slot's lock wait stands (PGPROC's waitStatus).</summary>
internal enum LockWaitStatus
{
    /// <summary>Not waiting for a heavyweight lock.</summary>
    None = 0,
    /// <summary>Queued on WaitLockOffset's LOCK.</summary>
    Waiting = 1,
    /// <summary>Granted by another participant, which took it off the queue (PROC_WAIT_STATUS_OK).</summary>
    Granted = 2,
    /// <summary>Taken off the queue without the lock: a deadlock was found or the wait was cancelled (PROC_WAIT_STATUS_ERROR).</summary>
    Error = 3,
}

/// <summary>
/// The lock manager's part of one participant slot (the lock fields of PGPROC, and its fast-path arrays as
/// PostgreSQL 18 keeps them outside PGPROC). Layout (bytes) and protectors:
/// <code>
///    0  FpInfoLock       the fast-path LWLock (its own protocol)
///   16  OwnerPid         all 16 partition LWLocks (exclusive) to change; the pid of the participant that last used
///                        the lock manager from this slot (0 = none, or its leftovers cleaned)
///   20  OwnerGeneration  the same: the slot generation (PgProc.Generation) of that participant
///   24  WaitStatus       the partition LWLock of the awaited lock; the waker's release store pairs with the
///                        owner's acquire load after its semaphore returns (LockWaitStatus)
///   28  WaitMode         the partition LWLock of the awaited lock
///   32  WaitLockOffset   the same: segment offset of the awaited LOCK (0 = none)
///   40  WaitProcLockOffset the same: the owner's PROCLOCK on it
///   48  WaitNext         the same: next procno in the wait queue (-1 = end)
///   52  WaitPrev         the same: previous procno (-1 = head)
///   56  HeldLocksOnWait  the same: the owner's hold mask on the awaited lock when it queued (heldLocks)
///   64  WaitStartUnixMs  the owner (plain store before it queues; read by the view)
///   72  FpLockBits       FpInfoLock: 3 bits per slot (AccessShare, RowShare, RowExclusive), slot i at bits 3i..3i+2
///   80  FpRel[16]        FpInfoLock: (database &lt;&lt; 32) | relation of each fast-path slot
///  208  ProcLockHeads[16] partition p's LWLock: segment offset of the first PROCLOCK of this slot in partition p
///  336  (reserve to 384)
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 384)]
internal unsafe struct LockProcState
{
    public LWLock FpInfoLock;
    public int OwnerPid;
    public int OwnerGeneration;
    public int WaitStatus;
    public int WaitMode;
    public long WaitLockOffset;
    public long WaitProcLockOffset;
    public int WaitNext;
    public int WaitPrev;
    public int HeldLocksOnWait;
    private int _pad0;
    public long WaitStartUnixMs;
    public ulong FpLockBits;
    public fixed ulong FpRel[LockManager.FastPathSlots];
    public fixed long ProcLockHeads[LockManager.NumPartitions];
}
