/*-------------------------------------------------------------------------
 * PgProc.cs
 *   The per-participant slot in shared memory (PostgreSQL's PGPROC) and the
 *   header of the slot array (PROC_HDR, ProcGlobal).
 *
 * NOTES
 *   Every participant (a thread that uses locks, in any process of the
 *   cluster) owns one slot of a fixed array carved from the main segment at
 *   creation. Other participants find it by its number (procno), never by
 *   address: each process maps the segment at its own address. LWLock wait
 *   queues, condition-variable queues and ProcSignal all link slots by
 *   procno.
 *
 *   The array is split into ranges by kind (backends, auxiliary processes,
 *   background workers), each with its own free list, as InitProcGlobal
 *   splits PGPROCs between freeProcs, walsenderFreeProcs, bgworkerFreeProcs
 *   and the auxiliary processes. A slot's kind never changes.
 *
 *   The slot is 256 bytes: identity and wait state in the first cache line,
 *   the latch and signal words in the second (set by other processes), the
 *   sleep semaphore on a line of its own (posted by wakers), and on the last
 *   line the latch wake storage and the mirror of the LWLocks the owner
 *   holds.
 *
 *   The held-LWLock mirror (NumHeldLWLocks, HeldLWLocks) copies the owner's
 *   private held-lock list into shared memory with plain stores, so that a
 *   waiter whose lock is held by a process that has died can name that
 *   process (a shared holder is recorded nowhere else) and so that dead-slot
 *   reclamation leaves such a slot alone. Only the count and the first
 *   MirroredHeldLWLocks entries fit; a holder of more counts as holding any
 *   lock. Others read it only once the owner's pid is dead, when no store
 *   of the owner can still be in flight: no ordering is needed.
 *
 *   Mirrors src/include/storage/proc.h and src/backend/storage/lmgr/proc.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Proc;

/// <summary>What a slot is for; each kind has its own range of slots and free list.</summary>
public enum ProcKind
{
    /// <summary>An ordinary participant (PostgreSQL's backends).</summary>
    Backend = 0,
    /// <summary>An auxiliary process (checkpointer, background writer, ...).</summary>
    Auxiliary = 1,
    /// <summary>A background worker.</summary>
    BackgroundWorker = 2,
}

/// <summary>Where a participant stands with respect to an LWLock wait queue (lwWaiting, as PG 16's LWLockWaitState).</summary>
public enum LWLockWaitState
{
    /// <summary>Not queued on any LWLock.</summary>
    NotWaiting = 0,
    /// <summary>Queued on a lock's wait list.</summary>
    Waiting = 1,
    /// <summary>Removed from the list by a releaser that is about to post the semaphore.</summary>
    PendingWakeup = 2,
}

/// <summary>
/// A latch (set by anyone, waited on by its owner). Reserved here; the latch layer fills in the protocol.
/// Layout: 16 bytes. IsSet, MaybeSleeping: atomic only. OwnerPid, OwnerProcNumber: written by the owner
/// when it takes the slot, read by anyone.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 16)]
internal struct PgLatch
{
    public int IsSet;
    public int MaybeSleeping;
    public int OwnerPid;
    public int OwnerProcNumber;
}

/// <summary>
/// One participant slot. Layout (bytes) and protectors:
/// <code>
///   0  Pid               ProcGlobal.Lock for the 0 &lt;-&gt; pid transitions; read atomically by anyone (liveness scans)
///   4  ProcNumber        immutable after initialisation
///   8  Kind              immutable after initialisation
///  12  FreeNext          ProcGlobal.Lock (next free slot of the same kind, -1 = end)
///  16  Generation        ProcGlobal.Lock (bumped on every hand-out)
///  20  OwnerThreadId     the owner (diagnostics)
///  24  AcquiredAtUnixMs  ProcGlobal.Lock
///  32  LwWaiting         the wait-list lock of the LWLock waited on (Waiting, PendingWakeup); the waker's final
///                        store of NotWaiting is a release store paired with the owner's acquire load after it wakes
///  36  LwWaitMode        the owner, before it queues (read under the wait-list lock)
///  40  LwWaitNext        the wait-list lock of the LWLock waited on (procno, -1 = none)
///  44  LwWaitPrev        the same
///  48  LwWaitLockOffset  the owner: main-segment offset of the LWLock it is acquiring (-1 = none or outside the
///                        main segment); read by dead-slot reclamation to repair that lock's queue
///  56  CvWaitNext        the condition variable's spinlock (reserved for the condition-variable layer)
///  60  CvWaitPrev        the same
///  64  Latch             see PgLatch
///  80  ProcSignalFlags   atomic only: one bit per ProcSignalReason; senders Or, the owner Exchanges to 0
///  88  WaitEventInfo     written by the owner, read by anyone (atomic only)
///  92  LwWakerPid        the wait-list lock of the LWLock waited on: the pid of the process that unlinked the owner
///                        to wake it, stored before LwWaiting = PendingWakeup (release) and read by the owner after
///                        its acquire load of LwWaiting, only when a timed-out sleep finds itself unlinked but not
///                        posted (the waker may have died in between)
///  96  BarrierGeneration atomic only: the last ProcSignalBarrier generation this participant absorbed; written
///                        by the owner (release), read by the barrier's emitter (acquire)
/// 104  BarrierFlags      atomic only: barrier kinds pending absorption (emitter Or, owner Exchange)
/// 108  InterruptRequesterPid  the pid of the process that last asked for a Cancel or Terminate: the sender's plain
///                        volatile store before its Or on ProcSignalFlags (full barrier), read by the owner after its
///                        Exchange / And that took the reason (Participant.Interrupts.cs); 0 = none
/// 112  PidIdentity       ProcGlobal.Lock, with Pid: the owner's IProcessServices.GetIdentity (start time) when it
///                        joined, 0 when the backend cannot tell; compared before a signal goes to Pid, so a reused
///                        pid never gets an interrupt meant for the dead owner
/// 128  Semaphore[64]     the backend's sleep semaphore (futex word, sem_t); only through IProcSemaphoreSet
/// 192  LatchWake[32]     the backend's latch wake storage (Linux: the owner's eventfd); only through ILatchWakers
/// 224  NumHeldLWLocks    the owner (plain stores, after each acquire and release): LWLocks it holds now
/// 228  HeldLWLocks[7]    the owner: its first 7 held LWLocks, each as main-segment offset / 4 (0 = outside the main
///                        segment); entries at or past NumHeldLWLocks are stale. Read by others only when the
///                        owner's pid is dead (LWLock dead-holder checks, ReclaimDeadSlots)
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 256)]
internal unsafe struct PgProc
{
    public const int InvalidProcNumber = -1;

    public int Pid;
    public int ProcNumber;
    public int Kind;
    public int FreeNext;
    public int Generation;
    public int OwnerThreadId;
    public long AcquiredAtUnixMs;
    public int LwWaiting;
    public int LwWaitMode;
    public int LwWaitNext;
    public int LwWaitPrev;
    public long LwWaitLockOffset;
    public int CvWaitNext;
    public int CvWaitPrev;
    public PgLatch Latch;
    public long ProcSignalFlags;
    public uint WaitEventInfo;
    public int LwWakerPid;
    public ulong BarrierGeneration;
    public uint BarrierFlags;
    public int InterruptRequesterPid;
    public long PidIdentity;
    private fixed byte _reserve0[8];
    public fixed byte Semaphore[ProcSemaphoreStorage.MaxSize];
    public fixed byte LatchWake[LatchStorage.MaxSize];
    public int NumHeldLWLocks;
    public fixed uint HeldLWLocks[MirroredHeldLWLocks];

    /// <summary>Held LWLocks whose identity the slot mirrors (the rest are only counted).</summary>
    public const int MirroredHeldLWLocks = 7;
}

/// <summary>
/// Header of the slot array (PROC_HDR). Layout (bytes) and protectors:
/// <code>
///   0  Lock (64, padded spinlock)   protects the free lists and every slot's Pid/FreeNext/Generation
///  64  MaxProcs                     immutable
///  68  NumBackends, NumAuxiliary, NumBackgroundWorkers   immutable
///  80  FreeHeads[3]                 Lock (first free slot per kind, -1 = none)
///  92  SemaphoreStorageSize         immutable (what the backend said when the array was made)
///  96  ProcsOffset                  immutable: segment offset of slot 0
/// 104  SemaphoreName[32]            immutable: ASCII name of the semaphore set
/// 136  SlotsHandedOut, SlotsReclaimed   Lock (statistics; only grow)
/// 152  Magic                        immutable; written last by the initialiser
/// 156  SupervisorPid                immutable: the creator's pid, whose death WL_POSTMASTER_DEATH reports
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 192)]
internal unsafe struct ProcGlobalHeader
{
    public const uint MagicValue = 0x50524F43; // "PROC"
    public SpinLockPadded Lock;
    public int MaxProcs;
    public int NumBackends;
    public int NumAuxiliary;
    public int NumBackgroundWorkers;
    public fixed int FreeHeads[3];
    public int SemaphoreStorageSize;
    public long ProcsOffset;
    public fixed byte SemaphoreName[32];
    public long SlotsHandedOut;
    public long SlotsReclaimed;
    public uint Magic;
    public int SupervisorPid;
}
