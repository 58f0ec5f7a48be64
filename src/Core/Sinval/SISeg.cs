/*-------------------------------------------------------------------------
 * SISeg.cs
 *   The shared layout of the invalidation queue: header, per-participant
 *   reader state, and the constants that size and pace the queue.
 *
 * NOTES
 *   "PgIpc.SInvalSeg" is one ShmemInitStruct allocation:
 *
 *     SISegHeader          256 bytes   locks, message numbers, statistics
 *     ring[MaxNumMessages] 16 bytes each (64 KiB)   the circular buffer
 *     ProcState[MaxProcs]  64 bytes each, indexed by procno
 *
 *   Message numbers only grow (until the wraparound reduction). Message
 *   number n lives in ring[n % MaxNumMessages]; messages minMsgNum ..
 *   maxMsgNum-1 are live, so maxMsgNum - minMsgNum never exceeds the ring.
 *   Because MsgNumWraparound is a multiple of MaxNumMessages, subtracting it
 *   from every counter leaves every live message in the same ring slot.
 *
 *   ProcState is padded to a cache line (PostgreSQL does not pad it): the
 *   owner writes its nextMsgNum and hasMessages on every read, and two
 *   readers on one line would keep stealing it from each other.
 *
 *   Mirrors src/backend/storage/ipc/sinvaladt.c (SISeg, ProcState, the
 *   MAXNUMMESSAGES / CLEANUP / SIG_THRESHOLD / WRITE_QUANTUM constants).
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Sinval;

/// <summary>Sizes and thresholds of the queue, the same as sinvaladt.c's.</summary>
internal static class SinvalConstants
{
    /// <summary>Ring capacity in messages (MAXNUMMESSAGES); a power of two.</summary>
    public const int MaxNumMessages = 4096;

    /// <summary>
    /// When minMsgNum reaches this, every counter is reduced by it (MSGNUMWRAPAROUND), so an int never overflows.
    /// A multiple of <see cref="MaxNumMessages"/>: ring positions are unchanged by the reduction.
    /// </summary>
    public const int MsgNumWraparound = MaxNumMessages * 262144;

    /// <summary>Smallest nextThreshold: no cleanup while fewer messages are live (CLEANUP_MIN).</summary>
    public const int CleanupMin = MaxNumMessages / 2;

    /// <summary>nextThreshold is raised in steps of this (CLEANUP_QUANTUM).</summary>
    public const int CleanupQuantum = MaxNumMessages / 16;

    /// <summary>A reader this far behind maxMsgNum at a cleanup may be sent a catch-up signal (SIG_THRESHOLD).</summary>
    public const int SigThreshold = MaxNumMessages / 2;

    /// <summary>Messages inserted per hold of SInvalWriteLock (WRITE_QUANTUM).</summary>
    public const int WriteQuantum = 64;

    /// <summary>Messages fetched per batch by ReceiveAll (sinval.c's MAXINVALMSGS).</summary>
    public const int ReceiveBatch = 32;

    // Compile-time checks (a negative constant for a uint does not compile).
    private const uint RingIsPowerOfTwo = 0u - (uint)(MaxNumMessages & (MaxNumMessages - 1));
    private const uint WraparoundIsRingMultiple = 0u - (uint)(MsgNumWraparound % MaxNumMessages);
    // Counters stay below MsgNumWraparound plus a few rings (cleanup runs at least once per ring's worth of inserts).
    private const uint CountersFitInt = (uint)int.MaxValue - (uint)MsgNumWraparound - 4u * MaxNumMessages;
}

/// <summary>
/// Header of "PgIpc.SInvalSeg" (SISeg without its arrays). Layout (bytes) and protectors:
/// <code>
///   0  WriteLock (64)   SInvalWriteLock: serialises inserters, registration, and cleanup
///  64  ReadLock (64)    SInvalReadLock: readers hold it Shared (each changes only its own ProcState);
///                       cleanup holds it Exclusive (with WriteLock) to look at and change everyone's
/// 128  MsgnumLock (64)  spinlock around every read and write of MaxMsgNum outside the cleanup (msgnumLock);
///                       its Acquire is the full barrier between a reader's "HasMessages = 0" and its load
///                       of MaxMsgNum, paired with the inserter's "store MaxMsgNum, then HasMessages = 1"
/// 192  MinMsgNum        written by cleanup (WriteLock + ReadLock exclusive); read under WriteLock
/// 196  MaxMsgNum        written by inserters (WriteLock + MsgnumLock) and by the wraparound reduction
///                       (WriteLock + ReadLock exclusive); read under MsgnumLock or WriteLock
/// 200  NextThreshold    cleanup (WriteLock + ReadLock exclusive); read under WriteLock
/// 204  LastBackend      WriteLock (Register / Unregister): 1 + highest procno that may be registered
/// 208  MaxProcs         immutable: number of ProcState slots
/// 212  RingSize         immutable: MaxNumMessages (checked by attachers)
/// 216  ResetsIssued     cleanup (both locks); statistics, only grows
/// 224  SignalsSent      cleanup (both locks); statistics, only grows
/// 232  Magic            immutable; written last by the initialiser
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 256)]
internal struct SISegHeader
{
    public const uint MagicValue = 0x53494E56; // "SINV"

    public LWLockPadded WriteLock;
    public LWLockPadded ReadLock;
    public SpinLockPadded MsgnumLock;
    public int MinMsgNum;
    public int MaxMsgNum;
    public int NextThreshold;
    public int LastBackend;
    public int MaxProcs;
    public int RingSize;
    public long ResetsIssued;
    public long SignalsSent;
    public uint Magic;
}

/// <summary>
/// One participant's reader state (ProcState), at index procno. Layout (bytes) and protectors:
/// <code>
///   0  Pid          WriteLock (Register sets it last, Unregister clears it); cleanup clears it, holding both
///                   locks, for a registration whose participant slot has since been given back; ForgetSlot
///                   clears it with an atomic exchange and no lock (its owner is dead). 0 = not a reader.
///   4  Generation   WriteLock (Register): PgProc.Generation of the registering participant, so a stale
///                   registration (the participant left without unregistering) is recognised
///   8  NextMsgNum   the owner under ReadLock shared (advances as it reads); Register under WriteLock;
///                   the wraparound reduction under both locks. Meaningless while ResetState is set.
///  12  ResetState   set by cleanup (both locks); cleared by the owner under ReadLock shared
///  16  Signaled     set by cleanup (both locks) when it sends the catch-up signal; cleared by the owner
///                   under ReadLock shared once caught up (or reset). Also read lock-free (CatchupPending).
///  20  HasMessages  set to 1 by inserters (WriteLock) after MaxMsgNum grows; cleared by the owner under
///                   ReadLock shared before it loads MaxMsgNum (see SISegHeader.MsgnumLock for the pairing);
///                   read lock-free by the owner's fast path
///  24  SendOnly     WriteLock (Register); a send-only slot never receives and never holds back cleanup
///  28  reserve
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct ProcState
{
    public int Pid;
    public int Generation;
    public int NextMsgNum;
    public int ResetState;
    public int Signaled;
    public int HasMessages;
    public int SendOnly;
}
