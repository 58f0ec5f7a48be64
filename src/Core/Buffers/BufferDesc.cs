/*-------------------------------------------------------------------------
 * BufferDesc.cs
 *   Shared buffer descriptors: one per 8 KiB block of the pool, each on its
 *   own cache line, with the packed atomic state word.
 *
 * NOTES
 *   The state word packs what PostgreSQL 9.6+ packs into BufferDesc.state:
 *
 *     bits  0-17  reference count (shared pins; one per pinning participant)
 *     bits 18-21  usage count (clock sweep popularity, capped at MaxUsageCount)
 *     bits 22-31  flags: header lock, dirty, valid, tag valid, I/O in
 *                 progress, I/O error, just dirtied, pin-count waiter,
 *                 checkpoint needed, permanent
 *
 *   Pinning and unpinning are a compare-and-swap on the word that waits
 *   while the header-lock bit is set; everything else (tag changes, I/O
 *   flags) takes the header lock bit (LockBufHdr), changes the word and
 *   the fields it guards, and stores the new word without the bit
 *   (UnlockBufHdr, a release store paired with LockBufHdr's CAS).
 *
 *   Each participant counts its own pins privately (PrivateRefCount): the
 *   shared refcount counts pinning participants, so it never exceeds
 *   MaxProcsLimit, which the bit budget checks at compile time.
 *
 *   The content lock is an LWLock inside the descriptor (PostgreSQL <= 18
 *   kept it there too). I/O waiters sleep on a condition variable that is
 *   also in the descriptor (PostgreSQL keeps an array of them beside).
 *
 *   Mirrors src/include/storage/buf_internals.h.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Buffers;

/// <summary>
/// A buffer descriptor, padded to 64 bytes (BufferDescPadded). Layout:
/// <code>
///  0  Tag              header lock (readers of a pinned, valid buffer may read it without the lock)
/// 12  BufferId         immutable after initialisation (0-based)
/// 16  StateWord        atomic only; see <see cref="State"/>
/// 20  WaitBackendProcNo header lock: procno waiting for the pin count to drop (with PinCountWaiter)
/// 24  FreeNext         the strategy spinlock: next free buffer, -1 end, -2 not in the list
/// 28  IoOwnerPid       header lock: pid of the process whose participant set IoInProgress (0 = none); set and
///                      cleared with the flag, read by I/O waiters to find an owner that died mid-I/O
/// 32  ContentLock      LWLock (tranche BufferContent): the page's contents
/// 48  IoCv             condition variable: waiters for I/O in progress to end
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct BufferDesc
{
    public const int FreeNextEndOfList = -1;
    public const int FreeNextNotInList = -2;

    public BufferTag Tag;
    public int BufferId;
    public uint StateWord;
    public int WaitBackendProcNo;
    public int FreeNext;
    public int IoOwnerPid;
    public LWLock ContentLock;
    public ConditionVariable IoCv;

    /// <summary>The state word's bit budget (BUF_REFCOUNT_*, BUF_USAGECOUNT_*, BM_*).</summary>
    public static class State
    {
        /// <summary>Bits 0-17: shared pin count.</summary>
        public const int RefCountBits = 18;
        /// <summary>Bits 18-21: usage count.</summary>
        public const int UsageCountBits = 4;
        public const int FlagBits = 32 - RefCountBits - UsageCountBits;

        public const uint RefCountOne = 1;
        public const uint RefCountMask = (1u << RefCountBits) - 1;
        public const int UsageCountShift = RefCountBits;
        public const uint UsageCountOne = 1u << UsageCountShift;
        public const uint UsageCountMask = ((1u << UsageCountBits) - 1) << UsageCountShift;
        public const uint FlagMask = ~(RefCountMask | UsageCountMask);

        /// <summary>Highest usage count (BM_MAX_USAGE_COUNT).</summary>
        public const int MaxUsageCount = 5;

        // Bits 22-31: flags.
        public const uint Locked = 1u << 22;            // BM_LOCKED: header lock
        public const uint Dirty = 1u << 23;             // BM_DIRTY
        public const uint Valid = 1u << 24;             // BM_VALID: page contents are good
        public const uint TagValid = 1u << 25;          // BM_TAG_VALID: tag is in the mapping table
        public const uint IoInProgress = 1u << 26;      // BM_IO_IN_PROGRESS
        public const uint IoError = 1u << 27;           // BM_IO_ERROR: last I/O failed
        public const uint JustDirtied = 1u << 28;       // BM_JUST_DIRTIED: dirtied since write began
        public const uint PinCountWaiter = 1u << 29;    // BM_PIN_COUNT_WAITER
        public const uint CheckpointNeeded = 1u << 30;  // BM_CHECKPOINT_NEEDED
        public const uint Permanent = 1u << 31;         // BM_PERMANENT

        // Compile-time checks (a negative constant converted to uint does not compile):
        // every participant can pin a buffer at once, the usage count fits, and the first flag sits above it.
        private const uint ParticipantsFitRefCount = RefCountMask - (uint)ProcArray.MaxProcsLimit;
        private const uint MaxUsageFits = (UsageCountMask >> UsageCountShift) - MaxUsageCount;
        private const uint FlagsAboveUsage = Locked - UsageCountMask - 1;
        private const uint FlagsFit = (uint)(FlagBits - 10);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static int RefCount(uint state) => (int)(state & RefCountMask);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static int UsageCount(uint state) => (int)((state & UsageCountMask) >> UsageCountShift);
    }
}

/// <summary>
/// The clock sweep's shared state (BufferStrategyControl). Layout: 128 bytes.
/// <code>
///  0  Lock              spinlock (buffer_strategy_lock)
///  4  FirstFreeBuffer   Lock: head of the free list, -1 = empty
///  8  LastFreeBuffer    Lock: tail of the free list
/// 12  CompletePasses    Lock: times the clock hand wrapped round
/// 16  NumBuffers        immutable
/// 20  Magic             immutable, written last by the initialiser
/// 24  BgwProcNo         written under Lock, read atomically by allocators: the hibernating background
///                       writer's procno, -1 when none (whoever allocates next clears it and sets that latch)
/// 64  NextVictimBuffer  atomic only: clock hand (grows, taken modulo NumBuffers; folded under Lock when it wraps)
/// 68  NumBufferAllocs   atomic only: allocations since the last StrategySyncStart
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Explicit, Size = 128)]
internal struct BufferStrategyControl
{
    public const uint MagicValue = 0x42554653; // "SFUB"
    [FieldOffset(0)] public int Lock;
    [FieldOffset(4)] public int FirstFreeBuffer;
    [FieldOffset(8)] public int LastFreeBuffer;
    [FieldOffset(12)] public uint CompletePasses;
    [FieldOffset(16)] public int NumBuffers;
    [FieldOffset(20)] public uint Magic;
    [FieldOffset(24)] public int BgwProcNo;
    [FieldOffset(64)] public uint NextVictimBuffer;
    [FieldOffset(68)] public uint NumBufferAllocs;
}
