/*-------------------------------------------------------------------------
 * LocalBuffers.cs
 *   Local buffers (temp_buffers): one participant's private pool for its
 *   temporary relations, behind the same API as the shared buffer pool.
 *
 * NOTES
 *   A temporary relation is visible to one backend only, so its pages need
 *   no shared memory, no mapping-partition locks, no content locks and no
 *   I/O-in-progress handshake: the owner is the only reader and writer.
 *   As localbuf.c, the pool is a plain array of descriptors, a private hash
 *   table from tag to buffer, a private pin count per buffer
 *   (LocalRefCount) and its own clock hand (nextFreeLocalBufId).
 *
 *   Buffer numbers are negative, -1 .. -NumBuffers, as PostgreSQL's local
 *   buffers are (buffer -(i + 1) is descriptor i), so a buffer number says
 *   which manager it belongs to (IBufferManager.BufferIsLocal).
 *
 *   Nothing is allocated until the first ReadBuffer (InitLocalBuffers):
 *   then the descriptors, pin counts and hash table; page memory comes
 *   later still, when a buffer is first taken as a victim, in chunks that
 *   double from 16 blocks (GetLocalBufferStorage), aligned to the block size
 *   with NativeMemory and freed by Dispose. So a session that touches one
 *   temporary page holds 16 blocks, not temp_buffers of them. NumBuffers
 *   may be changed until then, and not after (check_temp_buffers).
 *
 *   Each descriptor's state word uses BufferDesc.State's layout, so the
 *   inspection code reads local and shared buffers alike: the refcount
 *   field is 1 while the owner pins the buffer at all (the count itself is
 *   in LocalRefCount), the usage count and the dirty, valid and tag-valid
 *   flags mean what they mean for shared buffers, and a failed read sets
 *   IoError and leaves the buffer not valid.
 *
 *   Replacement is the clock sweep over unpinned buffers: a pinned buffer
 *   is skipped, an unpinned one with a usage count loses one, the first at
 *   zero is the victim; a full turn meeting only pinned buffers is the
 *   "no empty local buffer available" error. A dirty victim is written
 *   first: the checksum is stamped into the page in place (nobody else can
 *   look at it) and the page written through the storage manager.
 *   Temporary relations are never fsynced (they do not survive a crash).
 *
 *   Only the owner participant may call in, on its own thread: nothing here
 *   is thread-safe, on purpose.
 *
 *   Mirrors src/backend/storage/buffer/localbuf.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Proc;
using S = PgIpc.Buffers.BufferDesc.State;

namespace PgIpc.Buffers;

/// <summary>One participant's pool of local buffers for temporary relations (localbuf.c).</summary>
public sealed unsafe class LocalBuffers : IBufferManager, IDisposable
{
    /// <summary>temp_buffers' default: 1024 buffers (8 MiB).</summary>
    public const int DefaultNumBuffers = 1024;
    /// <summary>Upper bound of temp_buffers (buffer numbers must fit in an int, negated).</summary>
    public const int MaxNumBuffers = 1 << 30;
    /// <summary>The first chunk of page memory is this many blocks; each next one doubles.</summary>
    internal const int FirstChunkBlocks = 16;

    /// <summary>A local descriptor: process-private, written by the owner only.</summary>
    private struct LocalBufferDesc
    {
        public BufferTag Tag;   // valid while State has TagValid
        public uint State;      // BufferDesc.State layout; no header lock, no atomics
    }

    private readonly Participant _owner;
    private readonly bool _ownsSmgr;
    private int _n;
    private bool _disposed;

    // Allocated on first use (InitLocalBuffers).
    private LocalBufferDesc[]? _descs;
    private int[] _refCount = [];                         // LocalRefCount: the owner's pins per buffer
    private Dictionary<BufferTag, int> _table = null!;    // LocalBufHash: tag -> descriptor index
    private byte*[] _pages = [];                          // page of each descriptor, null until first used
    private int _nextVictim;                              // nextFreeLocalBufId: the clock hand
    private int _numPinned;                               // NLocalPinnedBuffers

    // Page memory (GetLocalBufferStorage): chunks of aligned native memory.
    private readonly List<nint> _chunks = [];
    private byte* _chunk;
    private int _chunkBlocks;
    private int _chunkUsed;
    private int _blocksAllocated;

    /// <summary>A pool of <paramref name="numBuffers"/> local buffers for <paramref name="owner"/>, over its own storage manager on <paramref name="dataDirectory"/>.</summary>
    public LocalBuffers(Participant owner, string dataDirectory, int numBuffers = DefaultNumBuffers, int blocksPerSegment = Smgr.DefaultBlocksPerSegment)
        : this(owner, new Smgr(dataDirectory, blocksPerSegment), numBuffers, ownsSmgr: true)
    {
    }

    /// <summary>A pool over <paramref name="smgr"/>, which stays the caller's (not disposed here).</summary>
    public LocalBuffers(Participant owner, Smgr smgr, int numBuffers = DefaultNumBuffers)
        : this(owner, smgr, numBuffers, ownsSmgr: false)
    {
    }

    private LocalBuffers(Participant owner, Smgr smgr, int numBuffers, bool ownsSmgr)
    {
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentNullException.ThrowIfNull(smgr);
        _ownsSmgr = ownsSmgr;
        Smgr = smgr;
        try
        {
            CheckNumBuffers(numBuffers);
        }
        catch
        {
            if (ownsSmgr)
                smgr.Dispose();
            throw;
        }
        _owner = owner;
        _n = numBuffers;
    }

    /// <summary>The participant whose pool this is.</summary>
    public Participant Owner => _owner;

    /// <summary>The storage manager temporary pages are read from and written to.</summary>
    public Smgr Smgr { get; }

    /// <summary>temp_buffers: may be changed until the first buffer is read, not after (check_temp_buffers).</summary>
    public int NumBuffers
    {
        get => _n;
        set
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            CheckNumBuffers(value);
            if (_descs is not null && value != _n)
                throw new BufferUsageException($"cannot change temp_buffers from {_n} to {value} after temporary tables have been accessed");
            _n = value;
        }
    }

    /// <summary>True once the first ReadBuffer allocated the descriptors (InitLocalBuffers ran).</summary>
    public bool IsInitialized => _descs is not null;

    /// <summary>Bytes of page memory allocated so far (the chunks; 0 before first use).</summary>
    public long AllocatedBytes => (long)_blocksAllocated * BufferPool.BlockSize;

    /// <summary>Buffers the owner pins at least once (NLocalPinnedBuffers).</summary>
    public int PinnedBuffers => _numPinned;

    private static void CheckNumBuffers(int n)
    {
        if (n < 1 || n > MaxNumBuffers)
            throw new ArgumentOutOfRangeException(nameof(NumBuffers), n, $"temp_buffers must be between 1 and {MaxNumBuffers}");
    }

    // ------------------------------------------------------------------
    // IBufferManager
    // ------------------------------------------------------------------

    /// <inheritdoc/>
    public int ReadBuffer(Participant me, uint relation, ForkNumber fork, long block,
        ReadBufferMode mode = ReadBufferMode.Normal, BufferAccessStrategy? strategy = null)
    {
        CheckOwner(me);
        if (mode == ReadBufferMode.Extend)
        {
            if (block != BufferPool.NewBlock)
                throw new ArgumentOutOfRangeException(nameof(block), block, "extend with block BufferPool.NewBlock (P_NEW)");
            _ = BufferTag.Create(relation, fork, 0);
            return Extend(relation, fork);
        }
        if (mode is not (ReadBufferMode.Normal or ReadBufferMode.ZeroAndLock))
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown read buffer mode");
        BufferTag tag = BufferTag.Create(relation, fork, block);
        EnsureInitialized();
        int id = LocalBufferAlloc(tag, out bool valid);
        if (!valid)
        {
            Span<byte> page = PageOf(id);
            try
            {
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
                // As a failed shared read: not valid, IoError; the next ReadBuffer tries again.
                _descs![id].State |= S.IoError;
                Unpin(id);
                throw;
            }
            _descs![id].State = (_descs[id].State & ~S.IoError) | S.Valid;
        }
        return -(id + 1);
    }

    /// <inheritdoc/>
    public void ReleaseBuffer(Participant me, int buffer)
    {
        CheckOwner(me);
        Unpin(CheckPinned(buffer));
    }

    /// <inheritdoc/>
    public void IncrBufferRefCount(Participant me, int buffer)
    {
        CheckOwner(me);
        _refCount[CheckPinned(buffer)]++;
    }

    /// <inheritdoc/>
    public int ReleaseAllBuffers(Participant me)
    {
        CheckOwner(me);
        if (_descs is null)
            return 0;
        int released = 0;
        for (int id = 0; id < _n && _numPinned > 0; id++)
        {
            if (_refCount[id] > 0)
            {
                _refCount[id] = 1;
                Unpin(id);
                released++;
            }
        }
        return released;
    }

    /// <inheritdoc/>
    public void LockBuffer(Participant me, int buffer, BufferLockMode mode)
    {
        CheckOwner(me);
        _ = CheckPinned(buffer);
        if (mode is not (BufferLockMode.Unlock or BufferLockMode.Shared or BufferLockMode.Exclusive))
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown buffer lock mode");
        // Nobody else can see a local buffer: nothing to lock (LockBuffer returns at once for local buffers).
    }

    /// <inheritdoc/>
    public bool ConditionalLockBuffer(Participant me, int buffer)
    {
        CheckOwner(me);
        _ = CheckPinned(buffer);
        return true;
    }

    /// <inheritdoc/>
    public void MarkBufferDirty(Participant me, int buffer)
    {
        CheckOwner(me);
        int id = CheckPinned(buffer);
        if ((_descs![id].State & S.Valid) == 0)
            throw new BufferUsageException($"MarkBufferDirty of local buffer {buffer} ({_descs[id].Tag}), which is not valid");
        _descs[id].State |= S.Dirty; // MarkLocalBufferDirty
    }

    /// <inheritdoc/>
    public bool FlushBuffer(Participant me, int buffer)
    {
        CheckOwner(me);
        return WriteIfDirty(CheckPinned(buffer));
    }

    /// <inheritdoc/>
    public Span<byte> GetPage(Participant me, int buffer)
    {
        CheckOwner(me);
        return PageOf(CheckPinned(buffer));
    }

    /// <inheritdoc/>
    public BufferTag GetTag(Participant me, int buffer)
    {
        CheckOwner(me);
        return _descs![CheckPinned(buffer)].Tag;
    }

    /// <inheritdoc/>
    public int PinCount(Participant me, int buffer)
    {
        CheckOwner(me);
        int id = CheckBuffer(buffer);
        return _descs is null ? 0 : _refCount[id];
    }

    // ------------------------------------------------------------------
    // Beyond the common API
    // ------------------------------------------------------------------

    /// <summary>Writes every dirty local buffer (no fsync: temporary relations need none); returns how many.</summary>
    public int FlushAllBuffers(Participant me)
    {
        CheckOwner(me);
        if (_descs is null)
            return 0;
        int written = 0;
        for (int id = 0; id < _n; id++)
            if (WriteIfDirty(id))
                written++;
        return written;
    }

    /// <summary>
    /// Forgets every buffer of <paramref name="relation"/>'s <paramref name="fork"/> at or beyond
    /// <paramref name="firstBlock"/> without writing it (DropRelationLocalBuffers: the relation is being dropped
    /// or truncated). A pinned one is an error. Returns how many buffers were dropped.
    /// </summary>
    public int DropRelationBuffers(Participant me, uint relation, ForkNumber fork, uint firstBlock = 0)
    {
        CheckOwner(me);
        _ = BufferTag.Create(relation, fork, 0);
        if (_descs is null)
            return 0;
        int dropped = 0;
        for (int id = 0; id < _n; id++)
        {
            ref LocalBufferDesc d = ref _descs[id];
            if ((d.State & S.TagValid) == 0 || d.Tag.RelNumber != relation || d.Tag.Fork != fork || d.Tag.BlockNumber < firstBlock)
                continue;
            if (_refCount[id] != 0)
                throw new BufferUsageException($"block {d.Tag.BlockNumber} of relation {relation} fork {fork} is still referenced (local buffer {-(id + 1)}, {_refCount[id]} pins)");
            _table.Remove(d.Tag);
            d.State &= ~(S.UsageCountMask | S.Valid | S.TagValid | S.Dirty | S.IoError);
            dropped++;
        }
        return dropped;
    }

    /// <summary>The local buffer that holds <paramref name="tag"/>, or <see cref="BufferPool.InvalidBuffer"/> (no pin).</summary>
    public int Lookup(Participant me, BufferTag tag)
    {
        CheckOwner(me);
        return _descs is not null && _table.TryGetValue(tag, out int id) ? -(id + 1) : BufferPool.InvalidBuffer;
    }

    /// <summary>A local buffer's state word (BufferDesc.State layout; 0 before first use).</summary>
    public uint ReadState(int buffer)
    {
        int id = CheckBuffer(buffer);
        return _descs is null ? 0 : _descs[id].State;
    }

    /// <summary>A local buffer's tag (meaningful when its state says TagValid).</summary>
    public BufferTag ReadTag(int buffer)
    {
        int id = CheckBuffer(buffer);
        return _descs is null ? default : _descs[id].Tag;
    }

    /// <summary>The owner's pins of a local buffer (LocalRefCount), for inspection.</summary>
    internal int LocalRefCount(int buffer)
    {
        int id = CheckBuffer(buffer);
        return _descs is null ? 0 : _refCount[id];
    }

    // ------------------------------------------------------------------
    // Allocation and replacement
    // ------------------------------------------------------------------

    /// <summary>InitLocalBuffers: descriptors, pin counts and hash table, on the first read.</summary>
    private void EnsureInitialized()
    {
        if (_descs is not null)
            return;
        InitLocalBuffers();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void InitLocalBuffers()
    {
        _refCount = new int[_n];
        _pages = new byte*[_n];
        _table = new Dictionary<BufferTag, int>(Math.Min(_n, 1 << 16));
        _nextVictim = 0;
        _descs = new LocalBufferDesc[_n];
    }

    /// <summary>LocalBufferAlloc: the pinned buffer for <paramref name="tag"/>, taking a victim on a miss.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int LocalBufferAlloc(in BufferTag tag, out bool valid)
    {
        if (_table.TryGetValue(tag, out int id))
        {
            Pin(id, adjustUsage: true);
            valid = (_descs![id].State & S.Valid) != 0;
            return id;
        }
        id = GetLocalVictimBuffer();
        ref LocalBufferDesc d = ref _descs![id];
        d.Tag = tag;
        d.State = (d.State & ~(S.UsageCountMask | S.Valid | S.Dirty | S.IoError)) | S.TagValid | S.UsageCountOne;
        _table.Add(tag, id);
        valid = false;
        return id;
    }

    /// <summary>GetLocalVictimBuffer: a pinned, empty buffer (clock sweep; a dirty victim is written first).</summary>
    private int GetLocalVictimBuffer()
    {
        int tries = _n;
        int id;
        while (true)
        {
            id = _nextVictim;
            if (++_nextVictim >= _n)
                _nextVictim = 0;
            if (_refCount[id] == 0)
            {
                uint st = _descs![id].State;
                if (S.UsageCount(st) == 0)
                    break;
                _descs[id].State = st - S.UsageCountOne;
                tries = _n;
            }
            else if (--tries == 0)
            {
                throw new NoEmptyLocalBufferException(_n);
            }
        }
        // Write it out before it is reused; a failed write leaves it dirty, unpinned and still mapped.
        WriteIfDirty(id);
        Pin(id, adjustUsage: false);
        ref LocalBufferDesc d = ref _descs![id];
        if (_pages[id] is null)
            _pages[id] = GetLocalBufferStorage();
        if ((d.State & S.TagValid) != 0)
        {
            _table.Remove(d.Tag);
            d.State &= ~(S.UsageCountMask | S.Valid | S.TagValid | S.IoError);
        }
        return id;
    }

    /// <summary>GetLocalBufferStorage: the next block of page memory, allocating chunks of 16, 32, 64 ... blocks.</summary>
    private byte* GetLocalBufferStorage()
    {
        if (_chunkUsed >= _chunkBlocks)
        {
            int blocks = Math.Max(_chunkBlocks * 2, FirstChunkBlocks);
            blocks = Math.Min(blocks, _n - _blocksAllocated);
            // At most 1 GiB per chunk, as MaxAllocSize bounds PostgreSQL's.
            blocks = Math.Min(blocks, (1 << 30) / BufferPool.BlockSize);
            var p = (byte*)NativeMemory.AlignedAlloc((nuint)blocks * BufferPool.BlockSize, BufferPool.BlockSize);
            _chunks.Add((nint)p);
            _chunk = p;
            _chunkBlocks = blocks;
            _chunkUsed = 0;
            _blocksAllocated += blocks;
        }
        return _chunk + (long)_chunkUsed++ * BufferPool.BlockSize;
    }

    private int Extend(uint relation, ForkNumber fork)
    {
        EnsureInitialized();
        uint nblocks = Smgr.NBlocks(relation, fork);
        BufferTag tag = BufferTag.Create(relation, fork, nblocks);
        if (_table.TryGetValue(tag, out int existing) && (_descs![existing].State & S.Valid) != 0)
            throw new BufferUsageException($"unexpected data beyond the end of {tag}: local buffer {-(existing + 1)} already holds it");
        int id = LocalBufferAlloc(tag, out _);
        Span<byte> page = PageOf(id);
        try
        {
            page.Clear();
            Smgr.Extend(tag, page);
        }
        catch
        {
            _descs![id].State |= S.IoError;
            Unpin(id);
            throw;
        }
        _descs![id].State = (_descs[id].State & ~S.IoError) | S.Valid;
        return -(id + 1);
    }

    /// <summary>Writes a dirty, valid buffer with its checksum stamped in place; true when it wrote.</summary>
    private bool WriteIfDirty(int id)
    {
        ref LocalBufferDesc d = ref _descs![id];
        if ((d.State & (S.Dirty | S.Valid)) != (S.Dirty | S.Valid))
            return false;
        Span<byte> page = PageOf(id);
        PageChecksum.Set(page, d.Tag.BlockNumber);
        Smgr.Write(d.Tag, page);
        d.State &= ~S.Dirty;
        return true;
    }

    // ------------------------------------------------------------------
    // Pins
    // ------------------------------------------------------------------

    /// <summary>PinLocalBuffer: the first pin sets the refcount field and (unless a victim) bumps the usage count.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Pin(int id, bool adjustUsage)
    {
        if (_refCount[id]++ == 0)
        {
            _numPinned++;
            uint st = _descs![id].State + S.RefCountOne;
            if (adjustUsage && S.UsageCount(st) < S.MaxUsageCount)
                st += S.UsageCountOne;
            _descs[id].State = st;
        }
    }

    /// <summary>UnpinLocalBuffer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Unpin(int id)
    {
        if (--_refCount[id] == 0)
        {
            _numPinned--;
            _descs![id].State -= S.RefCountOne;
        }
    }

    // ------------------------------------------------------------------

    private Span<byte> PageOf(int id) => new(_pages[id], BufferPool.BlockSize);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckOwner(Participant me)
    {
        if (!ReferenceEquals(me, _owner) || _disposed || me.IsDisposed)
            ThrowBadCaller(me);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadCaller(Participant? me)
    {
        ArgumentNullException.ThrowIfNull(me);
        if (!ReferenceEquals(me, _owner))
            throw new BufferUsageException($"local buffers belong to {_owner}; {me} cannot use them");
        if (_disposed)
            throw new ObjectDisposedException(nameof(LocalBuffers), $"the local buffers of {_owner} were disposed");
        throw new BufferUsageException($"{me} has left the cluster; its local buffers are unusable");
    }

    /// <summary>Descriptor index of a local buffer number (-1 .. -NumBuffers).</summary>
    private int CheckBuffer(int buffer)
    {
        if (buffer >= 0 || buffer < -_n)
            throw new BufferUsageException($"bad local buffer number {buffer}: local buffers are -1..-{_n}");
        return -buffer - 1;
    }

    private int CheckPinned(int buffer)
    {
        int id = CheckBuffer(buffer);
        if (_descs is null || _refCount[id] <= 0)
            throw new BufferUsageException($"local buffer {buffer} is not pinned by {_owner}");
        return id;
    }

    /// <summary>Frees the page memory and closes the storage manager if this pool opened it. Pins are dropped, dirty pages are not written.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        foreach (nint p in _chunks)
            NativeMemory.AlignedFree((void*)p);
        _chunks.Clear();
        _chunk = null;
        _pages = [];
        _descs = null;
        _refCount = [];
        _numPinned = 0;
        _blocksAllocated = 0;
        if (_ownsSmgr)
            Smgr.Dispose();
    }
}
