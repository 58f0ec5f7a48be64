/*-------------------------------------------------------------------------
 * BufferPool.cs
 *   The shared buffer pool: descriptors and 8 KiB blocks in the segment,
 *   the partitioned buffer mapping table, its size and initialisation, and
 *   the public pin / lock / read / write API. The rest of the class is in
 *   BufferPool.Pin.cs (pins, header lock), BufferPool.IO.cs (I/O handshake,
 *   writes, checkpoint writes) and BufferPool.Freelist.cs (replacement).
 *
 * NOTES
 *   Shared memory (each an InitStruct in the main segment):
 *     "PgIpc.BufferDescriptors"   BufferDesc[NumBuffers], 64 bytes each
 *     "PgIpc.BufferBlocks"        NumBuffers blocks of 8 KiB, 8 KiB-aligned
 *     "PgIpc.BufferStrategy"      BufferStrategyControl (clock hand, free list)
 *     "PgIpc.BufferMappingLocks"  128 mapping partition locks + 16 extension locks
 *     "PgIpc.BufferMapping"       SharedHash<BufferTag, int>, 128 partitions
 *
 *   Lookup (BufferAlloc): hash the tag, take its partition lock shared,
 *   find and pin. On a miss, find a victim (GetVictimBuffer): a buffer with
 *   refcount 0 from the ring, the free list or the clock sweep, returned
 *   with its header locked; pin it; write it out if dirty (content lock
 *   shared, I/O-in-progress handshake); then, if it holds another page,
 *   take the old partition lock exclusive, check nobody else pinned or
 *   dirtied it meanwhile, clear its tag and remove the old mapping
 *   (InvalidateVictimBuffer, as PostgreSQL 16+). Then take the new
 *   partition exclusive and insert; if someone inserted the tag first, use
 *   theirs and put the victim back on the free list. Only one partition
 *   lock is ever held at a time.
 *
 *   Mirrors the API, lookup and allocation parts of
 *   src/backend/storage/buffer/bufmgr.c, and buf_init.c and buf_table.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;
using S = PgIpc.Buffers.BufferDesc.State;

namespace PgIpc.Buffers;

/// <summary>Size of the pool and where its relations live.</summary>
public sealed record BufferPoolOptions(int NumBuffers, string DataDirectory, int BlocksPerSegment = Smgr.DefaultBlocksPerSegment)
{
    /// <summary>Most relation segment files each process keeps open (max_files_per_process; see <see cref="Smgr.MaxOpenFiles"/>).</summary>
    public int MaxOpenFiles { get; init; } = Smgr.DefaultMaxOpenFiles;

    internal void Validate()
    {
        if (NumBuffers < 16 || NumBuffers > 1 << 30)
            throw new ArgumentOutOfRangeException(nameof(NumBuffers), NumBuffers, "shared buffers must be between 16 and 2^30");
        ArgumentException.ThrowIfNullOrEmpty(DataDirectory);
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxOpenFiles, 1);
    }
}

/// <summary>How ReadBuffer obtains the page (ReadBufferMode).</summary>
public enum ReadBufferMode
{
    /// <summary>Read it from disk unless resident.</summary>
    Normal,
    /// <summary>Do not read: a zeroed page if not resident, returned locked exclusive (RBM_ZERO_AND_LOCK).</summary>
    ZeroAndLock,
    /// <summary>Add a new zeroed block at the end of the fork (P_NEW); pass <see cref="BufferPool.NewBlock"/>.</summary>
    Extend,
}

/// <summary>Content lock modes (BUFFER_LOCK_*).</summary>
public enum BufferLockMode
{
    /// <summary>Releases the content lock.</summary>
    Unlock,
    /// <summary>Takes the content lock shared (readers of the page).</summary>
    Shared,
    /// <summary>Takes the content lock exclusive (a writer of the page).</summary>
    Exclusive,
}

/// <summary>What <see cref="BufferPool.CheckpointBuffers"/> did: dirty buffers found at its start, written by it, files fsynced.</summary>
public readonly record struct CheckpointStats(int BuffersToWrite, int BuffersWritten, int FilesSynced);

/// <summary>The shared buffer pool as mapped in this process.</summary>
public sealed unsafe partial class BufferPool : IBufferManager, IDisposable
{
    /// <summary>The size of a page and of a buffer, in bytes (BLCKSZ).</summary>
    public const int BlockSize = 8192;
    /// <summary>Blocks per fork are below this (InvalidBlockNumber is 0xFFFFFFFF).</summary>
    public const long MaxBlockNumber = 0xFFFFFFFE;
    /// <summary>The block number to pass with <see cref="ReadBufferMode.Extend"/> (P_NEW).</summary>
    public const long NewBlock = -1;
    internal const int NumPartitions = 128;
    internal const int NumExtensionLocks = 16;
    /// <summary>Buffer numbers are 1-based; 0 is none (InvalidBuffer).</summary>
    public const int InvalidBuffer = 0;

    /// <summary>The ShmemIndex name of the buffer descriptors array.</summary>
    public const string DescriptorsName = "PgIpc.BufferDescriptors";
    internal const string BlocksName = "PgIpc.BufferBlocks";
    internal const string StrategyName = "PgIpc.BufferStrategy";
    internal const string LocksName = "PgIpc.BufferMappingLocks";
    internal const string MappingName = "PgIpc.BufferMapping";

    private readonly ProcArray _procs;
    private readonly BufferDesc* _descs;
    private readonly byte* _blocks;
    private readonly BufferStrategyControl* _ctl;
    private readonly LWLockPadded* _mappingLocks;
    private readonly SharedHash<BufferTag, int> _table;
    private readonly PrivateRefCount?[] _refCounts;
    private readonly int _n;
    private volatile bool _disposed;

    private BufferPool(ProcArray procs, BufferDesc* descs, byte* blocks, BufferStrategyControl* ctl, LWLockPadded* locks,
        SharedHash<BufferTag, int> table, Smgr smgr)
    {
        _procs = procs;
        _descs = descs;
        _blocks = blocks;
        _ctl = ctl;
        _mappingLocks = locks;
        _table = table;
        _n = ctl->NumBuffers;
        Smgr = smgr;
        _refCounts = new PrivateRefCount?[procs.MaxProcs];
        procs.AddSlotReleaseHook(OnSlotReleased);
    }

    /// <summary>Descriptor <paramref name="id"/> (0-based), for inspection and fault-injection tests.</summary>
    internal BufferDesc* Descriptor(int id) => _descs + id;

    /// <summary>Number of shared buffers.</summary>
    public int NumBuffers => _n;

    /// <summary>The cluster's write-ahead log, when it has one: a page is written only after WAL up to its LSN is flushed.</summary>
    internal IWalForBuffers? Wal { get; set; }

    /// <summary>This process's storage manager.</summary>
    public Smgr Smgr { get; }

    /// <summary>Bytes <see cref="Init"/> needs (BufferManagerShmemSize), with alignment slack.</summary>
    internal static long ShmemSize(BufferPoolOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        long size = Shmem.ShmemSize.Mul(options.NumBuffers, sizeof(BufferDesc));
        size = Shmem.ShmemSize.Add(size, Shmem.ShmemSize.Add(Shmem.ShmemSize.Mul(options.NumBuffers, BlockSize), BlockSize));
        size = Shmem.ShmemSize.Add(size, sizeof(BufferStrategyControl));
        size = Shmem.ShmemSize.Add(size, Shmem.ShmemSize.Mul(NumPartitions + NumExtensionLocks, sizeof(LWLockPadded)));
        size = Shmem.ShmemSize.Add(size, SharedHash<BufferTag, int>.EstimateSize(options.NumBuffers + NumPartitions, NumPartitions));
        return Shmem.ShmemSize.Add(size, 5 * Shmem.ShmemSize.CacheLineSize);
    }

    /// <summary>Finds or creates the pool's structures (BufferManagerShmemInit) and opens this process's view.</summary>
    internal static BufferPool Init(ShmemSegment segment, ProcArray procs, BufferPoolOptions options, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(procs);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        int n = options.NumBuffers;

        ShmemRegion descs = segment.InitStruct(DescriptorsName, (long)n * sizeof(BufferDesc), r =>
        {
            var d = (BufferDesc*)r.Pointer;
            for (int i = 0; i < n; i++)
            {
                d[i] = default;
                d[i].BufferId = i;
                d[i].WaitBackendProcNo = PgProc.InvalidProcNumber;
                d[i].FreeNext = i + 1 < n ? i + 1 : BufferDesc.FreeNextEndOfList;
                d[i].ContentLock.Initialize(BuiltinTranche.BufferContent);
                d[i].IoCv.Initialize();
            }
        }, out found);
        ShmemRegion blocks = segment.InitStruct(BlocksName, (long)n * BlockSize + BlockSize, out _);
        long blocksOffset = Shmem.ShmemSize.AlignUp(blocks.Offset, BlockSize);
        ShmemRegion locks = segment.InitStruct(LocksName, (long)(NumPartitions + NumExtensionLocks) * sizeof(LWLockPadded), r =>
        {
            var l = (LWLockPadded*)r.Pointer;
            for (int i = 0; i < NumPartitions; i++)
                l[i].Lock.Initialize(BuiltinTranche.BufferMapping);
            // Stand-in for the heavyweight relation extension lock, which PostgreSQL's lock manager keeps.
            for (int i = NumPartitions; i < NumPartitions + NumExtensionLocks; i++)
                l[i].Lock.Initialize(BuiltinTranche.LockManager);
        }, out _);
        var table = SharedHash<BufferTag, int>.Init(segment, MappingName, n + NumPartitions, NumPartitions, out _);
        ShmemRegion ctl = segment.InitStruct(StrategyName, sizeof(BufferStrategyControl), r =>
        {
            var c = (BufferStrategyControl*)r.Pointer;
            SLock.Init(ref c->Lock);
            c->FirstFreeBuffer = 0;
            c->LastFreeBuffer = n - 1;
            c->NumBuffers = n;
            c->BgwProcNo = PgProc.InvalidProcNumber;
            c->Magic = BufferStrategyControl.MagicValue;
        }, out _);
        var control = (BufferStrategyControl*)ctl.Pointer;
        if (control->Magic != BufferStrategyControl.MagicValue || control->NumBuffers != n)
            throw new PgIpcException($"the buffer pool in this segment has {control->NumBuffers} buffers; asked for {n}");
        byte* basePtr = blocks.Pointer - blocks.Offset;
        // The shared pool's files must survive a crash: the Smgr fsyncs the directory of each file it creates.
        var smgr = new Smgr(options.DataDirectory, options.BlocksPerSegment, options.MaxOpenFiles, segment.Platform.Files) { Files = segment.Platform.Files };
        return new BufferPool(procs, (BufferDesc*)descs.Pointer, basePtr + blocksOffset, control, (LWLockPadded*)locks.Pointer,
            table, smgr);
    }

    // ------------------------------------------------------------------
    // Public API
    // ------------------------------------------------------------------

    /// <summary>
    /// Pins the block and returns its buffer number (ReadBufferExtended). Normal reads it from disk unless it
    /// is resident; ZeroAndLock zeroes a non-resident page instead and returns it locked exclusive; Extend adds a
    /// zeroed block at the end of the fork (pass <see cref="NewBlock"/>).
    /// </summary>
    public int ReadBuffer(Participant me, uint relation, ForkNumber fork, long block,
        ReadBufferMode mode = ReadBufferMode.Normal, BufferAccessStrategy? strategy = null)
    {
        ArgumentNullException.ThrowIfNull(me);
        PrivateRefCount refs = Refs(me);
        if (mode == ReadBufferMode.Extend)
        {
            if (block != NewBlock)
                throw new ArgumentOutOfRangeException(nameof(block), block, "extend with block BufferPool.NewBlock (P_NEW)");
            _ = BufferTag.Create(relation, fork, 0);
            return Extend(me, refs, relation, fork, strategy);
        }
        BufferTag tag = BufferTag.Create(relation, fork, block);
        int id = BufferAlloc(me, refs, tag, strategy, out bool valid);
        if (valid)
            me.Counters.BufferHits++; // the meter's count: a plain add by the participant's own thread (PgIpcMetrics.cs)
        else if (StartBufferIO(me, id, forInput: true))
        {
            try
            {
                Span<byte> page = PageOf(id);
                if (mode == ReadBufferMode.ZeroAndLock)
                {
                    page.Clear();
                }
                else
                {
                    Smgr.ReadVerified(tag, page);
                    me.Counters.BufferReads++;
                }
            }
            catch
            {
                AbortBufferIO(me, id);
                Unpin(refs, id);
                throw;
            }
            TerminateBufferIO(me, id, clearDirty: false, setFlags: S.Valid);
        }
        if (mode == ReadBufferMode.ZeroAndLock)
            _descs[id].ContentLock.Acquire(me, LWLockMode.Exclusive);
        return id + 1;
    }

    /// <summary>Drops one pin (ReleaseBuffer).</summary>
    public void ReleaseBuffer(Participant me, int buffer)
    {
        ArgumentNullException.ThrowIfNull(me);
        Unpin(Refs(me), CheckBuffer(buffer));
    }

    /// <summary>Pins a buffer the participant already pins once more (IncrBufferRefCount).</summary>
    public void IncrBufferRefCount(Participant me, int buffer)
    {
        PrivateRefCount refs = Refs(me);
        int id = CheckPinned(refs, buffer);
        refs.Add(id, 1);
    }

    /// <summary>Drops every pin the participant holds (AtEOXact_Buffers / resource owner cleanup); returns how many buffers.</summary>
    public int ReleaseAllBuffers(Participant me)
    {
        ArgumentNullException.ThrowIfNull(me);
        PrivateRefCount refs = Refs(me);
        var all = refs.All();
        foreach ((int id, int count) in all)
        {
            refs.Add(id, -count);
            UnpinShared(id);
        }
        return all.Count;
    }

    /// <summary>Takes or releases the content lock (LockBuffer).</summary>
    public void LockBuffer(Participant me, int buffer, BufferLockMode mode)
    {
        int id = CheckPinned(Refs(me), buffer);
        ref LWLock l = ref _descs[id].ContentLock;
        switch (mode)
        {
            case BufferLockMode.Unlock: l.Release(me); break;
            case BufferLockMode.Shared: l.Acquire(me, LWLockMode.Shared); break;
            case BufferLockMode.Exclusive: l.Acquire(me, LWLockMode.Exclusive); break;
            default: throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown buffer lock mode");
        }
    }

    /// <summary>Takes the content lock exclusive if free now (ConditionalLockBuffer).</summary>
    public bool ConditionalLockBuffer(Participant me, int buffer)
    {
        int id = CheckPinned(Refs(me), buffer);
        return _descs[id].ContentLock.ConditionalAcquire(me, LWLockMode.Exclusive);
    }

    /// <summary>Marks the page dirty (MarkBufferDirty); the participant holds the content lock exclusive.</summary>
    public void MarkBufferDirty(Participant me, int buffer)
    {
        int id = CheckPinned(Refs(me), buffer);
        BufferDesc* d = _descs + id;
        if (!me.HoldsInMode(&d->ContentLock, LWLockMode.Exclusive))
            throw new BufferUsageException($"MarkBufferDirty of buffer {buffer} ({d->Tag}) without its content lock held exclusive");
        uint old = Volatile.Read(ref d->StateWord);
        while (true)
        {
            if ((old & S.Locked) != 0)
                old = WaitBufHdrUnlocked(id);
            uint seen = Interlocked.CompareExchange(ref d->StateWord, old | S.Dirty | S.JustDirtied, old);
            if (seen == old)
                return;
            old = seen;
        }
    }

    /// <summary>
    /// Takes the content lock exclusive once the participant holds the only pin (LockBufferForCleanup). While
    /// others pin the buffer it registers as the pin-count waiter and sleeps on its latch; the unpin that
    /// leaves one pin sets it. Only one participant may wait per buffer.
    /// </summary>
    public void LockBufferForCleanup(Participant me, int buffer)
    {
        PrivateRefCount refs = Refs(me);
        int id = CheckPinned(refs, buffer);
        if (refs.Get(id) != 1)
            throw new BufferUsageException($"LockBufferForCleanup of buffer {buffer}: participant {me.ProcNumber} pins it {refs.Get(id)} times, must be once");
        BufferDesc* d = _descs + id;
        while (true)
        {
            d->ContentLock.Acquire(me, LWLockMode.Exclusive);
            uint st = LockBufHdr(id);
            if (S.RefCount(st) == 1)
            {
                // Only our pin: done, with the content lock held. Clear a registration of ours left by a timeout.
                if ((st & S.PinCountWaiter) != 0 && d->WaitBackendProcNo == me.ProcNumber)
                    st &= ~S.PinCountWaiter;
                UnlockBufHdr(id, st);
                return;
            }
            if ((st & S.PinCountWaiter) != 0 && d->WaitBackendProcNo != me.ProcNumber)
            {
                UnlockBufHdr(id, st);
                d->ContentLock.Release(me);
                throw new BufferUsageException($"multiple participants attempting to wait for pincount 1 on buffer {buffer} ({d->Tag})");
            }
            d->WaitBackendProcNo = me.ProcNumber;
            UnlockBufHdr(id, st | S.PinCountWaiter);
            d->ContentLock.Release(me);
            // Reset, re-check, wait: a wake-up between the check and the wait stays in the latch.
            while (true)
            {
                me.ResetLatch();
                uint now = Volatile.Read(ref d->StateWord);
                if ((now & S.PinCountWaiter) == 0 || S.RefCount(now) == 1)
                    break;
                // Not interrupted by a cancel: the PinCountWaiter registration would stay behind (an LWLock-like wait).
                Latch.Latches.WaitLatchHoldingInterrupts(me, WaitEvents.LatchSet | WaitEvents.Timeout, 1000);
            }
        }
    }

    /// <summary>Takes the content lock exclusive if it is free and the participant holds the only pin, else false (ConditionalLockBufferForCleanup).</summary>
    public bool ConditionalLockBufferForCleanup(Participant me, int buffer)
    {
        PrivateRefCount refs = Refs(me);
        int id = CheckPinned(refs, buffer);
        if (refs.Get(id) != 1)
            return false;
        BufferDesc* d = _descs + id;
        if (!d->ContentLock.ConditionalAcquire(me, LWLockMode.Exclusive))
            return false;
        if (S.RefCount(Volatile.Read(ref d->StateWord)) == 1)
            return true;
        d->ContentLock.Release(me);
        return false;
    }

    /// <summary>The page of a pinned buffer (BufferGetPage). Modify it only under the content lock exclusive.</summary>
    public Span<byte> GetPage(Participant me, int buffer) => PageOf(CheckPinned(Refs(me), buffer));

    /// <summary>The tag of a pinned buffer (BufferGetTag).</summary>
    public BufferTag GetTag(Participant me, int buffer) => _descs[CheckPinned(Refs(me), buffer)].Tag;

    /// <summary>This participant's pins of <paramref name="buffer"/>.</summary>
    public int PinCount(Participant me, int buffer) => Refs(me).Get(CheckBuffer(buffer));

    /// <summary>A snapshot of a buffer's state word (for inspection and tests; unlocked read).</summary>
    public uint ReadState(int buffer) => Volatile.Read(ref _descs[CheckBuffer(buffer)].StateWord);

    /// <summary>A buffer's tag (unlocked read; meaningful when the state says TagValid).</summary>
    public BufferTag ReadTag(int buffer) => _descs[CheckBuffer(buffer)].Tag;

    /// <summary>The buffer that holds <paramref name="tag"/>, or <see cref="InvalidBuffer"/> (BufTableLookup, no pin).</summary>
    public int Lookup(Participant me, BufferTag tag)
    {
        uint hash = SharedHash<BufferTag, int>.GetHashCode(in tag);
        ref LWLock part = ref PartitionLock(hash);
        part.Acquire(me, LWLockMode.Shared);
        bool found = _table.TryFind(in tag, hash, out int id);
        part.Release(me);
        return found ? id + 1 : InvalidBuffer;
    }

    // ------------------------------------------------------------------
    // Lookup and allocation
    // ------------------------------------------------------------------

    private int BufferAlloc(Participant me, PrivateRefCount refs, in BufferTag tag, BufferAccessStrategy? strategy, out bool valid)
    {
        uint hash = SharedHash<BufferTag, int>.GetHashCode(in tag);
        ref LWLock part = ref PartitionLock(hash);
        part.Acquire(me, LWLockMode.Shared);
        if (_table.TryFind(in tag, hash, out int existing))
        {
            valid = Pin(refs, existing, strategy);
            part.Release(me);
            return existing;
        }
        part.Release(me);

        int victim = GetVictimBuffer(me, refs, strategy);
        part.Acquire(me, LWLockMode.Exclusive);
        ref int slot = ref _table.EnterOrFind(in tag, hash, out bool found);
        if (found)
        {
            // Someone loaded the page while we looked for a victim: use theirs, give the victim back.
            int other = slot;
            valid = Pin(refs, other, strategy);
            part.Release(me);
            Unpin(refs, victim);
            StrategyFreeBuffer(victim);
            return other;
        }
        slot = victim;
        BufferDesc* d = _descs + victim;
        uint st = LockBufHdr(victim);
        d->Tag = tag;
        st &= ~(S.UsageCountMask | S.Valid | S.Dirty | S.JustDirtied | S.CheckpointNeeded | S.IoError);
        st |= S.TagValid | S.Permanent | S.UsageCountOne;
        UnlockBufHdr(victim, st);
        part.Release(me);
        valid = false;
        return victim;
    }

    private int GetVictimBuffer(Participant me, PrivateRefCount refs, BufferAccessStrategy? strategy)
    {
        while (true)
        {
            int id = StrategyGetBuffer(strategy, out uint st);
            // PinBuffer_Locked: the header is locked and the refcount 0, so a plain store publishes the pin.
            refs.Add(id, 1);
            UnlockBufHdr(id, st + S.RefCountOne);
            BufferDesc* d = _descs + id;
            if ((st & S.Dirty) != 0)
            {
                // Someone may hold the content lock exclusive for a long time: pick another victim instead of waiting.
                if (!d->ContentLock.ConditionalAcquire(me, LWLockMode.Shared))
                {
                    Unpin(refs, id);
                    continue;
                }
                try
                {
                    FlushPinned(me, id);
                }
                catch
                {
                    d->ContentLock.Release(me);
                    Unpin(refs, id);
                    throw;
                }
                d->ContentLock.Release(me);
            }
            if ((st & S.TagValid) != 0)
            {
                if (!InvalidateVictimBuffer(me, id))
                {
                    Unpin(refs, id);
                    continue;
                }
                me.Counters.BufferEvictions++;
            }
            return id;
        }
    }

    /// <summary>Removes a pinned victim's old mapping if nobody else pinned or dirtied it; false to choose another.</summary>
    private bool InvalidateVictimBuffer(Participant me, int id)
    {
        BufferDesc* d = _descs + id;
        // The tag cannot change while we hold a pin and TagValid is set: changing it needs the only pin.
        BufferTag old = d->Tag;
        uint hash = SharedHash<BufferTag, int>.GetHashCode(in old);
        ref LWLock part = ref PartitionLock(hash);
        part.Acquire(me, LWLockMode.Exclusive);
        uint st = LockBufHdr(id);
        if (S.RefCount(st) != 1 || (st & (S.Dirty | S.IoInProgress)) != 0)
        {
            UnlockBufHdr(id, st);
            part.Release(me);
            return false;
        }
        st &= ~(S.UsageCountMask | S.Valid | S.TagValid | S.Dirty | S.JustDirtied | S.CheckpointNeeded | S.IoError | S.Permanent);
        UnlockBufHdr(id, st);
        _table.Remove(in old, hash, out _);
        part.Release(me);
        return true;
    }

    private int Extend(Participant me, PrivateRefCount refs, uint relation, ForkNumber fork, BufferAccessStrategy? strategy)
    {
        uint h = SharedHashFunction.Hash(in relation) ^ (uint)fork;
        ref LWLock ext = ref _mappingLocks[NumPartitions + (int)(h % NumExtensionLocks)].Lock;
        ext.Acquire(me, LWLockMode.Exclusive);
        try
        {
            uint nblocks = Smgr.NBlocks(relation, fork);
            BufferTag tag = BufferTag.Create(relation, fork, nblocks);
            int id = BufferAlloc(me, refs, tag, strategy, out bool valid);
            if (valid || !StartBufferIO(me, id, forInput: true))
            {
                Unpin(refs, id);
                throw new BufferUsageException($"unexpected data beyond the end of {tag}: a buffer for it is already valid");
            }
            try
            {
                Span<byte> page = PageOf(id);
                page.Clear();
                Smgr.Extend(tag, page);
            }
            catch
            {
                AbortBufferIO(me, id);
                Unpin(refs, id);
                throw;
            }
            TerminateBufferIO(me, id, clearDirty: false, setFlags: S.Valid);
            return id + 1;
        }
        finally
        {
            ext.Release(me);
        }
    }

    // ------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref LWLock PartitionLock(uint hash) => ref _mappingLocks[hash & (NumPartitions - 1)].Lock;

    private Span<byte> PageOf(int id) => new(_blocks + (long)id * BlockSize, BlockSize);

    private int CheckBuffer(int buffer)
    {
        if (buffer < 1 || buffer > _n)
            throw new BufferUsageException($"bad buffer number {buffer}: the pool has buffers 1..{_n}");
        return buffer - 1;
    }

    private int CheckPinned(PrivateRefCount refs, int buffer)
    {
        int id = CheckBuffer(buffer);
        if (refs.Get(id) <= 0)
            throw new BufferUsageException($"buffer {buffer} is not pinned by participant {refs.Owner.ProcNumber}");
        return id;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PrivateRefCount Refs(Participant me)
    {
        PrivateRefCount? r = _refCounts[me.ProcNumber];
        return r is not null && ReferenceEquals(r.Owner, me) ? r : NewRefs(me);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PrivateRefCount NewRefs(Participant me)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (me.IsDisposed)
            throw new BufferUsageException($"{me} has left the cluster");
        DropLeftoverPins(me.ProcNumber);
        var r = new PrivateRefCount(me);
        _refCounts[me.ProcNumber] = r;
        return r;
    }

    private void OnSlotReleased(int procno)
    {
        if (!_disposed && (uint)procno < (uint)_refCounts.Length && _refCounts[procno] is { } r && r.Owner.IsDisposed)
            DropLeftoverPins(procno);
    }

    /// <summary>A participant that left still holding pins: drop them, as resource-owner cleanup at exit would.</summary>
    private void DropLeftoverPins(int procno)
    {
        PrivateRefCount? old = Interlocked.Exchange(ref _refCounts[procno], null);
        if (old is null)
            return;
        foreach ((int id, _) in old.All())
            UnpinShared(id);
    }

    /// <summary>Closes this process's files. The shared structures stay in the segment.</summary>
    public void Dispose()
    {
        _disposed = true;
        Smgr.Dispose();
    }
}
