/*-------------------------------------------------------------------------
 * BufferPool.cs
 *   The shared buffer pool: descriptors and 8 KiB blocks in the segment,
 *   the partitioned buffer mapping table, replacement by free list and
 *   clock sweep, and the pin / lock / read / write API.
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
 *   Reading a page that is tagged but not valid is the I/O-in-progress
 *   handshake: StartBufferIO sets IoInProgress under the header lock
 *   unless the buffer became valid or another participant's I/O is under
 *   way, in which case it sleeps on the descriptor's condition variable
 *   until TerminateBufferIO clears the flag and broadcasts. So two
 *   participants that miss on the same block read it from disk once.
 *   A failed read sets IoError and leaves the buffer not valid: the next
 *   reader tries again.
 *
 *   Writes copy the page, stamp the checksum into the copy (the in-memory
 *   page may change under a shared content lock, as with hint bits) and
 *   write the copy; JustDirtied, cleared when the write starts, keeps the
 *   dirty bit if the page was dirtied again meanwhile.
 *
 *   LockBufferForCleanup registers the participant as the buffer's pin-count
 *   waiter (flag and procno in the descriptor) and sleeps on its latch; the
 *   unpin that leaves a single pin clears the flag and sets the latch.
 *
 *   CheckpointBuffers is the buffer half of a checkpoint (BufferSync):
 *   mark every dirty buffer CheckpointNeeded, write them sorted by file and
 *   block, then fsync through Smgr.Sync: the files this process wrote and
 *   the sync requests other processes forwarded to the checkpointer (see
 *   Checkpointer.cs). FlushAllBuffers is the same, run by the caller.
 *   SyncOneBuffer is shared with the background writer (BgWriter.cs), which
 *   writes only unpinned buffers of usage count 0 ahead of the clock hand.
 *   A hibernating background writer leaves its procno in the strategy
 *   control; the next allocation clears it and sets its latch.
 *
 *   Pins of a dead process: the shared refcount counts pinning participants.
 *   A participant that leaves (Dispose, or its slot released by this
 *   process) has its pins dropped (DropLeftoverPins, as resource-owner
 *   cleanup at exit). A process killed with SIGKILL cannot do that: its pins
 *   stay in the refcounts until shared memory is rebuilt, as in PostgreSQL,
 *   where the postmaster treats the death as a crash and reinitialises
 *   (Cluster's crash restart). Dropping them from another process would need
 *   every pinner's private counts in shared memory (which PrivateRefCount
 *   keeps local so that a hit costs one CAS), and a dead process may also
 *   have died holding a header or content lock, so its buffers are not safe
 *   to reuse anyway.
 *
 *   Mirrors src/backend/storage/buffer/bufmgr.c, buf_init.c, buf_table.c
 *   and freelist.c.
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
    internal void Validate()
    {
        if (NumBuffers < 16 || NumBuffers > 1 << 30)
            throw new ArgumentOutOfRangeException(nameof(NumBuffers), NumBuffers, "shared buffers must be between 16 and 2^30");
        ArgumentException.ThrowIfNullOrEmpty(DataDirectory);
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
    Unlock,
    Shared,
    Exclusive,
}

/// <summary>What <see cref="BufferPool.CheckpointBuffers"/> did: dirty buffers found at its start, written by it, files fsynced.</summary>
public readonly record struct CheckpointStats(int BuffersToWrite, int BuffersWritten, int FilesSynced);

/// <summary>Every buffer is pinned: no victim for a new page.</summary>
public sealed class NoUnpinnedBuffersException : PgIpcException
{
    public NoUnpinnedBuffersException(int numBuffers)
        : base($"no unpinned buffers available: all {numBuffers} shared buffers are pinned") { }
}

/// <summary>Misuse of a buffer (not pinned, not locked, bad number).</summary>
public sealed class BufferUsageException : PgIpcException
{
    public BufferUsageException(string message) : base(message) { }
}

/// <summary>The shared buffer pool as mapped in this process.</summary>
public sealed unsafe class BufferPool : IBufferManager, IDisposable
{
    public const int BlockSize = 8192;
    /// <summary>Blocks per fork are below this (InvalidBlockNumber is 0xFFFFFFFF).</summary>
    public const long MaxBlockNumber = 0xFFFFFFFE;
    /// <summary>The block number to pass with <see cref="ReadBufferMode.Extend"/> (P_NEW).</summary>
    public const long NewBlock = -1;
    public const int NumPartitions = 128;
    public const int NumExtensionLocks = 16;
    /// <summary>Buffer numbers are 1-based; 0 is none (InvalidBuffer).</summary>
    public const int InvalidBuffer = 0;

    public const string DescriptorsName = "PgIpc.BufferDescriptors";
    public const string BlocksName = "PgIpc.BufferBlocks";
    public const string StrategyName = "PgIpc.BufferStrategy";
    public const string LocksName = "PgIpc.BufferMappingLocks";
    public const string MappingName = "PgIpc.BufferMapping";

    private readonly ProcArray _procs;
    private readonly BufferDesc* _descs;
    private readonly byte* _blocks;
    private readonly BufferStrategyControl* _ctl;
    private readonly LWLockPadded* _mappingLocks;
    private readonly SharedHash<BufferTag, int> _table;
    private readonly PrivateRefCount?[] _refCounts;
    private readonly int _n;
    private volatile bool _disposed;

    [ThreadStatic] private static byte[]? t_writeCopy;

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

    /// <summary>Number of shared buffers.</summary>
    public int NumBuffers => _n;

    /// <summary>This process's storage manager.</summary>
    public Smgr Smgr { get; }

    /// <summary>Bytes <see cref="Init"/> needs (BufferManagerShmemSize), with alignment slack.</summary>
    public static long ShmemSize(BufferPoolOptions options)
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
    public static BufferPool Init(ShmemSegment segment, ProcArray procs, BufferPoolOptions options, out bool found)
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
        return new BufferPool(procs, (BufferDesc*)descs.Pointer, basePtr + blocksOffset, control, (LWLockPadded*)locks.Pointer,
            table, new Smgr(options.DataDirectory, options.BlocksPerSegment));
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
        if (!valid && StartBufferIO(me, id, forInput: true))
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
    /// Writes the page if dirty (FlushOneBuffer): under the content lock shared (taken here unless the
    /// participant holds it) with the I/O-in-progress handshake. True when this call wrote it.
    /// </summary>
    public bool FlushBuffer(Participant me, int buffer)
    {
        int id = CheckPinned(Refs(me), buffer);
        BufferDesc* d = _descs + id;
        bool lockHere = !me.HoldsInMode(&d->ContentLock, null);
        if (lockHere)
            d->ContentLock.Acquire(me, LWLockMode.Shared);
        try
        {
            return FlushPinned(me, id);
        }
        finally
        {
            if (lockHere)
                d->ContentLock.Release(me);
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
                me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 1000);
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

    /// <summary>
    /// Writes every dirty buffer, sorted by relation, fork and block, then fsyncs the files this process wrote
    /// (BufferSync + smgr sync, the write half of a checkpoint, run by the caller). Buffers dirtied after the scan
    /// began are left for the next call. Returns the number of buffers written. See <see cref="CheckpointBuffers"/>.
    /// </summary>
    public int FlushAllBuffers(Participant me) => CheckpointBuffers(me).BuffersWritten;

    /// <summary>
    /// The buffer half of a checkpoint (BufferSync, then the sync phase): marks every dirty buffer
    /// CheckpointNeeded, sorts them by relation, fork and block, writes each that still needs it (a buffer
    /// written or evicted meanwhile has lost the flag and is skipped; one dirtied again after the scan began
    /// keeps its new changes for the next checkpoint), then fsyncs through <see cref="Smgr.Sync"/>: the files
    /// this process wrote plus every request absorbed into its Smgr (the checkpointer's sync queue).
    /// <paramref name="afterWrite"/> runs after each write with (written so far, to write) and may sleep to
    /// spread the checkpoint (CheckpointWriteDelay); <paramref name="beforeSync"/> runs between the two phases
    /// (the checkpointer absorbs its sync requests there).
    /// </summary>
    public CheckpointStats CheckpointBuffers(Participant me, Action<int, int>? afterWrite = null, Action? beforeSync = null)
    {
        ArgumentNullException.ThrowIfNull(me);
        PrivateRefCount refs = Refs(me);
        var toWrite = new List<(BufferTag Tag, int Id)>();
        for (int id = 0; id < _n; id++)
        {
            uint st = LockBufHdr(id);
            if ((st & (S.Dirty | S.Valid)) == (S.Dirty | S.Valid))
            {
                st |= S.CheckpointNeeded;
                toWrite.Add((_descs[id].Tag, id));
            }
            UnlockBufHdr(id, st);
        }
        // CkptBuffers sorted as ckpt_buforder_comparator does (without the tablespace balancing: one directory).
        toWrite.Sort((a, b) => a.Tag.RelNumber != b.Tag.RelNumber ? a.Tag.RelNumber.CompareTo(b.Tag.RelNumber)
            : a.Tag.Fork != b.Tag.Fork ? a.Tag.Fork.CompareTo(b.Tag.Fork) : a.Tag.BlockNumber.CompareTo(b.Tag.BlockNumber));
        int written = 0;
        for (int i = 0; i < toWrite.Count; i++)
        {
            (BufferTag tag, int id) = toWrite[i];
            // Still needs the write (nobody wrote or evicted it meanwhile)? Then SyncOneBuffer without the usage check.
            uint st = LockBufHdr(id);
            if ((st & S.CheckpointNeeded) == 0 || _descs[id].Tag != tag)
            {
                UnlockBufHdr(id, st);
                continue;
            }
            UnlockBufHdr(id, st);
            if ((SyncOneBuffer(me, refs, id, skipRecentlyUsed: false) & SyncResult.Written) != 0)
            {
                written++;
                afterWrite?.Invoke(written, toWrite.Count);
            }
        }
        beforeSync?.Invoke();
        int files = Smgr.Sync();
        return new CheckpointStats(toWrite.Count, written, files);
    }

    /// <summary>What <see cref="SyncOneBuffer"/> found (BUF_REUSABLE, BUF_WRITTEN).</summary>
    [Flags]
    internal enum SyncResult
    {
        None = 0,
        /// <summary>Unpinned with usage count 0: the clock sweep can reuse it without a write.</summary>
        Reusable = 1,
        Written = 2,
    }

    /// <summary>
    /// SyncOneBuffer: writes buffer <paramref name="id"/> if it is valid and dirty. With
    /// <paramref name="skipRecentlyUsed"/> (the background writer) a pinned or recently used buffer is left
    /// alone and only a reusable one is written. The header check is a snapshot: the buffer may be pinned,
    /// dirtied or evicted right after, which the write path (pin, content lock shared, I/O handshake) copes with.
    /// </summary>
    internal SyncResult SyncOneBuffer(Participant me, int id, bool skipRecentlyUsed) => SyncOneBuffer(me, Refs(me), id, skipRecentlyUsed);

    private SyncResult SyncOneBuffer(Participant me, PrivateRefCount refs, int id, bool skipRecentlyUsed)
    {
        SyncResult result = SyncResult.None;
        uint st = LockBufHdr(id);
        if (S.RefCount(st) == 0 && S.UsageCount(st) == 0)
        {
            result |= SyncResult.Reusable;
        }
        else if (skipRecentlyUsed)
        {
            UnlockBufHdr(id, st);
            return result;
        }
        if ((st & (S.Valid | S.Dirty)) != (S.Valid | S.Dirty))
        {
            UnlockBufHdr(id, st);
            return result;
        }
        // PinBuffer_Locked: the header is locked, so the refcount cannot move under us; a pin of our own
        // already counts in the shared refcount.
        bool alreadyPinned = refs.Get(id) > 0;
        refs.Add(id, 1);
        UnlockBufHdr(id, alreadyPinned ? st : st + S.RefCountOne);
        BufferDesc* d = _descs + id;
        bool lockHere = !me.HoldsInMode(&d->ContentLock, null);
        try
        {
            if (lockHere)
                d->ContentLock.Acquire(me, LWLockMode.Shared);
            try
            {
                if (FlushPinned(me, id))
                    result |= SyncResult.Written;
            }
            finally
            {
                if (lockHere)
                    d->ContentLock.Release(me);
            }
        }
        finally
        {
            Unpin(refs, id);
        }
        return result;
    }

    /// <summary>
    /// Where allocators wake a hibernating background writer (StrategyNotifyBgWriter): its procno, or
    /// <see cref="PgProc.InvalidProcNumber"/> to stop. The next buffer allocation clears it and sets that latch.
    /// </summary>
    public void StrategyNotifyBgWriter(int procno)
    {
        if (procno != PgProc.InvalidProcNumber && (uint)procno >= (uint)_procs.MaxProcs)
            throw new ArgumentOutOfRangeException(nameof(procno), procno, $"procno must be -1 or 0..{_procs.MaxProcs - 1}");
        SLock.Acquire(ref _ctl->Lock, "buffer strategy");
        Volatile.Write(ref _ctl->BgwProcNo, procno);
        SLock.Release(ref _ctl->Lock);
    }

    /// <summary>The hibernating background writer the next allocation will wake, or -1 (unlocked read).</summary>
    public int HibernatingBgWriter => Volatile.Read(ref _ctl->BgwProcNo);

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

    /// <summary>
    /// Where the clock hand is (StrategySyncStart): its buffer index, how many times it went round, and the
    /// allocations since the previous call (the counter is reset).
    /// </summary>
    public int StrategySyncStart(out uint completePasses, out uint numBufferAllocs)
    {
        SLock.Acquire(ref _ctl->Lock, "buffer strategy");
        uint next = Volatile.Read(ref _ctl->NextVictimBuffer);
        int result = (int)(next % (uint)_n);
        completePasses = _ctl->CompletePasses + next / (uint)_n;
        numBufferAllocs = Interlocked.Exchange(ref _ctl->NumBufferAllocs, 0);
        SLock.Release(ref _ctl->Lock);
        return result;
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
            if ((st & S.TagValid) != 0 && !InvalidateVictimBuffer(me, id))
            {
                Unpin(refs, id);
                continue;
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
    // Replacement (freelist.c)
    // ------------------------------------------------------------------

    /// <summary>A victim with refcount 0, returned with its header locked; <paramref name="st"/> is its locked state.</summary>
    private int StrategyGetBuffer(BufferAccessStrategy? strategy, out uint st)
    {
        if (strategy is not null)
        {
            int r = GetBufferFromRing(strategy, out st);
            if (r >= 0)
                return r;
        }
        // A hibernating background writer asked to be woken by the next allocation (StrategyNotifyBgWriter).
        // Unlocked read; the clear is a plain store as in freelist.c: two allocators may both set the latch.
        int bgw = Volatile.Read(ref _ctl->BgwProcNo);
        if (bgw != PgProc.InvalidProcNumber)
        {
            Volatile.Write(ref _ctl->BgwProcNo, PgProc.InvalidProcNumber);
            Latch.Latches.SetLatch(_procs, bgw);
        }
        Interlocked.Increment(ref _ctl->NumBufferAllocs);

        // The free list first (buffers never used, or given back). Unlocked peek; the lock decides.
        while (Volatile.Read(ref _ctl->FirstFreeBuffer) >= 0)
        {
            SLock.Acquire(ref _ctl->Lock, "buffer strategy");
            int id = _ctl->FirstFreeBuffer;
            if (id < 0)
            {
                SLock.Release(ref _ctl->Lock);
                break;
            }
            _ctl->FirstFreeBuffer = _descs[id].FreeNext;
            _descs[id].FreeNext = BufferDesc.FreeNextNotInList;
            SLock.Release(ref _ctl->Lock);
            st = LockBufHdr(id);
            if (S.RefCount(st) == 0 && S.UsageCount(st) == 0)
            {
                AddBufferToRing(strategy, id);
                return id;
            }
            UnlockBufHdr(id, st);
        }

        // The clock sweep: skip pinned buffers, age the others, take the first at usage count 0.
        int tries = _n;
        while (true)
        {
            int id = ClockSweepTick();
            st = LockBufHdr(id);
            if (S.RefCount(st) == 0)
            {
                if (S.UsageCount(st) == 0)
                {
                    AddBufferToRing(strategy, id);
                    return id;
                }
                st -= S.UsageCountOne;
                tries = _n;
            }
            else if (--tries == 0)
            {
                UnlockBufHdr(id, st);
                throw new NoUnpinnedBuffersException(_n);
            }
            UnlockBufHdr(id, st);
        }
    }

    /// <summary>Advances the clock hand; folds the counter and counts a pass when it wraps.</summary>
    private int ClockSweepTick()
    {
        uint victim = Interlocked.Increment(ref _ctl->NextVictimBuffer) - 1;
        if (victim >= (uint)_n)
        {
            uint original = victim;
            victim %= (uint)_n;
            if (victim == 0)
            {
                // We took the hand past the end: fold it back so it never overflows, and count the pass,
                // under the lock so StrategySyncStart sees the two consistently.
                SLock.Acquire(ref _ctl->Lock, "buffer strategy");
                uint expected = original + 1;
                while (true)
                {
                    uint wrapped = expected % (uint)_n;
                    uint seen = Interlocked.CompareExchange(ref _ctl->NextVictimBuffer, wrapped, expected);
                    if (seen == expected)
                    {
                        _ctl->CompletePasses++;
                        break;
                    }
                    expected = seen;
                }
                SLock.Release(ref _ctl->Lock);
            }
        }
        return (int)victim;
    }

    private int GetBufferFromRing(BufferAccessStrategy strategy, out uint st)
    {
        if (++strategy.Current >= strategy.Ring.Length)
            strategy.Current = 0;
        int id = strategy.Ring[strategy.Current];
        if (id < 0)
        {
            st = 0;
            return -1;
        }
        st = LockBufHdr(id);
        // Reuse only if nobody else pinned it and nobody else used it since we did.
        if (S.RefCount(st) == 0 && S.UsageCount(st) <= 1)
            return id;
        UnlockBufHdr(id, st);
        return -1;
    }

    private static void AddBufferToRing(BufferAccessStrategy? strategy, int id)
    {
        if (strategy is not null)
            strategy.Ring[strategy.Current] = id;
    }

    /// <summary>Puts a buffer at the head of the free list (StrategyFreeBuffer).</summary>
    private void StrategyFreeBuffer(int id)
    {
        SLock.Acquire(ref _ctl->Lock, "buffer strategy");
        if (_descs[id].FreeNext == BufferDesc.FreeNextNotInList)
        {
            _descs[id].FreeNext = _ctl->FirstFreeBuffer;
            if (_ctl->FirstFreeBuffer < 0)
                _ctl->LastFreeBuffer = id;
            _ctl->FirstFreeBuffer = id;
        }
        SLock.Release(ref _ctl->Lock);
    }

    // ------------------------------------------------------------------
    // Pins, header lock, I/O
    // ------------------------------------------------------------------

    /// <summary>PinBuffer: one more pin; the first by this participant bumps the shared refcount and usage count.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool Pin(PrivateRefCount refs, int id, BufferAccessStrategy? strategy)
    {
        BufferDesc* d = _descs + id;
        if (refs.Get(id) > 0)
        {
            refs.Add(id, 1);
            return (Volatile.Read(ref d->StateWord) & S.Valid) != 0;
        }
        uint old = Volatile.Read(ref d->StateWord);
        while (true)
        {
            if ((old & S.Locked) != 0)
                old = WaitBufHdrUnlocked(id);
            uint nw = old + S.RefCountOne;
            int usage = S.UsageCount(old);
            if (strategy is null ? usage < S.MaxUsageCount : usage == 0)
                nw += S.UsageCountOne;
            // Full barrier; pairs with UnlockBufHdr's release store and other pinners' CAS.
            uint seen = Interlocked.CompareExchange(ref d->StateWord, nw, old);
            if (seen == old)
            {
                refs.Add(id, 1);
                return (nw & S.Valid) != 0;
            }
            old = seen;
        }
    }

    private void Unpin(PrivateRefCount refs, int id)
    {
        int n = refs.Add(id, -1);
        if (n < 0)
            throw new BufferUsageException($"buffer {id + 1} is not pinned by participant {refs.Owner.ProcNumber}");
        if (n == 0)
            UnpinShared(id);
    }

    private void UnpinShared(int id)
    {
        BufferDesc* d = _descs + id;
        uint old = Volatile.Read(ref d->StateWord);
        while (true)
        {
            if ((old & S.Locked) != 0)
                old = WaitBufHdrUnlocked(id);
            if (S.RefCount(old) == 0)
                Environment.FailFast($"buffer {id + 1} ({d->Tag}): shared refcount would go below zero");
            uint nw = old - S.RefCountOne;
            uint seen = Interlocked.CompareExchange(ref d->StateWord, nw, old);
            if (seen == old)
            {
                // The cleanup waiter wants to be alone with the buffer: wake it when one pin (its own) is left.
                if ((nw & S.PinCountWaiter) != 0 && S.RefCount(nw) == 1)
                    WakePinCountWaiter(id);
                return;
            }
            old = seen;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WakePinCountWaiter(int id)
    {
        uint st = LockBufHdr(id);
        int waiter = PgProc.InvalidProcNumber;
        if ((st & S.PinCountWaiter) != 0 && S.RefCount(st) == 1)
        {
            waiter = _descs[id].WaitBackendProcNo;
            st &= ~S.PinCountWaiter;
        }
        UnlockBufHdr(id, st);
        // The flag is cleared before the latch is set: the waiter resets its latch, then re-checks the flag.
        if (waiter != PgProc.InvalidProcNumber)
            Latch.Latches.SetLatch(_procs, waiter);
    }

    /// <summary>LockBufHdr: sets the header-lock bit, spinning with the spinlock schedule; returns the state (with the bit).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint LockBufHdr(int id)
    {
        ref uint state = ref _descs[id].StateWord;
        // Full barrier (acquire side); pairs with UnlockBufHdr's release store.
        uint old = Interlocked.Or(ref state, S.Locked);
        return (old & S.Locked) == 0 ? old | S.Locked : LockBufHdrSlow(ref state);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static uint LockBufHdrSlow(ref uint state)
    {
        var delay = new SLock.SpinDelay("buffer header lock");
        while (true)
        {
            if ((Volatile.Read(ref state) & S.Locked) == 0)
            {
                uint old = Interlocked.Or(ref state, S.Locked);
                if ((old & S.Locked) == 0)
                {
                    delay.Finish();
                    return old | S.Locked;
                }
            }
            delay.Perform();
        }
    }

    /// <summary>UnlockBufHdr: stores the new state without the lock bit (release; pairs with LockBufHdr).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void UnlockBufHdr(int id, uint state) => Volatile.Write(ref _descs[id].StateWord, state & ~S.Locked);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private uint WaitBufHdrUnlocked(int id)
    {
        ref uint state = ref _descs[id].StateWord;
        var delay = new SLock.SpinDelay("buffer header lock");
        uint s;
        while (((s = Volatile.Read(ref state)) & S.Locked) != 0)
            delay.Perform();
        delay.Finish();
        return s;
    }

    /// <summary>
    /// StartBufferIO: waits out another participant's I/O; false when none is needed any more (valid for input,
    /// clean for output); else sets IoInProgress and returns true.
    /// </summary>
    private bool StartBufferIO(Participant me, int id, bool forInput)
    {
        uint st;
        while (true)
        {
            st = LockBufHdr(id);
            if ((st & S.IoInProgress) == 0)
                break;
            UnlockBufHdr(id, st);
            WaitIO(me, id);
        }
        if (forInput ? (st & S.Valid) != 0 : (st & S.Dirty) == 0)
        {
            UnlockBufHdr(id, st);
            return false;
        }
        UnlockBufHdr(id, st | S.IoInProgress);
        return true;
    }

    private void WaitIO(Participant me, int id)
    {
        BufferDesc* d = _descs + id;
        ConditionVariable.PrepareToSleep(me, ref d->IoCv);
        try
        {
            // TerminateBufferIO clears the flag under the header lock before it broadcasts.
            while ((Volatile.Read(ref d->StateWord) & S.IoInProgress) != 0)
                ConditionVariable.Sleep(me, ref d->IoCv, 1000);
        }
        finally
        {
            ConditionVariable.CancelSleep(me);
        }
    }

    private void TerminateBufferIO(Participant me, int id, bool clearDirty, uint setFlags)
    {
        uint st = LockBufHdr(id);
        st &= ~(S.IoInProgress | S.IoError);
        if (clearDirty && (st & S.JustDirtied) == 0)
            st &= ~(S.Dirty | S.CheckpointNeeded);
        UnlockBufHdr(id, st | setFlags);
        ConditionVariable.Broadcast(me, ref _descs[id].IoCv);
    }

    private void AbortBufferIO(Participant me, int id)
    {
        uint st = LockBufHdr(id);
        UnlockBufHdr(id, (st & ~S.IoInProgress) | S.IoError);
        ConditionVariable.Broadcast(me, ref _descs[id].IoCv);
    }

    /// <summary>Writes a pinned buffer whose content lock the caller holds (FlushBuffer). True when it wrote.</summary>
    private bool FlushPinned(Participant me, int id)
    {
        if (!StartBufferIO(me, id, forInput: false))
            return false;
        BufferDesc* d = _descs + id;
        uint st = LockBufHdr(id);
        BufferTag tag = d->Tag;
        UnlockBufHdr(id, st & ~S.JustDirtied);
        byte[] copy = t_writeCopy ??= new byte[BlockSize];
        try
        {
            PageOf(id).CopyTo(copy);
            PageChecksum.Set(copy, tag.BlockNumber);
            Smgr.Write(tag, copy);
        }
        catch
        {
            AbortBufferIO(me, id);
            throw;
        }
        TerminateBufferIO(me, id, clearDirty: true, setFlags: 0);
        return true;
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
