/*-------------------------------------------------------------------------
 * AllocSetContext.cs
 *   The general-purpose context: blocks carved into power-of-two chunks,
 *   freed chunks kept on a free list per size class.
 *
 * NOTES
 *   Mirrors PostgreSQL's src/backend/utils/mmgr/aset.c.
 *
 *   Blocks. The first (keeper) block has the initial size and survives
 *   Reset, so a context reset every query or tuple does not go back to
 *   the OS. Each further block doubles the previous size up to the maximum.
 *   The head of the block list is the active block; new chunks are carved
 *   from it by bumping FreePtr. When it is too small for a request, its
 *   remaining space is cut into free-list chunks (nothing is wasted) and a
 *   new block becomes the head.
 *
 *   Chunks. A request of up to ChunkLimit (8 KiB) bytes is rounded up to a
 *   power of two, from 16 B (the MAXALIGN: PostgreSQL's smallest class is
 *   8 B with 8-byte alignment; with 16-byte alignment the 8 B class would
 *   break it) to 8 KiB: 10 classes. A freed chunk goes on its class's free
 *   list (the link lives in its first 8 bytes) and is reused by the next
 *   request of that class; it never goes back to the OS before Reset.
 *   Larger requests get a dedicated block holding one chunk, released to
 *   the OS by Free at once.
 *
 *     block:  [AllocSetBlock 32 B][hdr|chunk][hdr|chunk]...FreePtr...EndPtr
 *
 *   The free-list heads are a small native array (no managed array on the
 *   hot path, no bounds checks). Alloc and Free allocate nothing managed
 *   and keep no counters (a counter updated by both is a store-to-load
 *   chain between consecutive calls): the stats walk the blocks instead,
 *   as PostgreSQL's AllocSetStats does.
 *
 *   Differences from aset.c. The chunk limit is a fixed 8 KiB (aset.c
 *   lowers it for small maximum block sizes so a chunk is at most 1/4 of
 *   a block; here a block grows past the maximum when one chunk needs it).
 *   Optional retainOnReset (off by default): Reset keeps up to that many
 *   bytes of non-keeper blocks and reuses them for the next fill, so a
 *   context filled and reset over and over does not give its pages back to
 *   the OS and fault them in again each time; PostgreSQL keeps only the
 *   keeper block (and recycles whole contexts through its freelists).
 *-------------------------------------------------------------------------
 */
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PgIpc.Memory;

/// <summary>AllocBlockData: header of each AllocSet block. Process-local; owner thread only.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct AllocSetBlock
{
    public AllocSetBlock* Prev;
    public AllocSetBlock* Next;
    /// <summary>First free byte (== EndPtr for a dedicated large-chunk block).</summary>
    public byte* FreePtr;
    public byte* EndPtr;
}

/// <summary>aset.c's AllocSet. Single-threaded: owned by the thread that uses it.</summary>
public sealed unsafe class AllocSetContext : MemoryContext
{
    /// <summary>The first block's size of a default context (ALLOCSET_DEFAULT_INITSIZE).</summary>
    public const int DefaultInitBlockSize = 8 * 1024;
    /// <summary>The largest block a default context allocates (ALLOCSET_DEFAULT_MAXSIZE).</summary>
    public const int DefaultMaxBlockSize = 8 * 1024 * 1024;
    /// <summary>The first block's size of a small context (ALLOCSET_SMALL_INITSIZE).</summary>
    public const int SmallInitBlockSize = 1024;
    /// <summary>The largest block a small context allocates (ALLOCSET_SMALL_MAXSIZE).</summary>
    public const int SmallMaxBlockSize = 8 * 1024;
    /// <summary>Largest request served from the free lists (ALLOC_CHUNK_LIMIT).</summary>
    public const int ChunkLimit = 8 * 1024;
    internal const int NumFreeLists = 10;      // 16, 32, ..., 8192
    private const int MinChunkShift = 4;       // 16 B
    private static readonly int s_blockHeader = sizeof(AllocSetBlock);
    /// <summary>Free lists of a deleted context: all empty, never written, so Alloc falls to the path that throws.</summary>
    private static readonly byte** s_noFreeLists = (byte**)NativeMemory.AllocZeroed((nuint)(NumFreeLists * sizeof(byte*)));

    private AllocSetBlock* _blocks;  // head = active block
    private AllocSetBlock* _keeper;
    private byte** _freeList = s_noFreeLists; // NumFreeLists heads, native
    private readonly nuint _initBlockSize;
    private readonly nuint _maxBlockSize;
    private nuint _nextBlockSize;
    private AllocSetBlock* _retained; // blocks kept by Reset for reuse (linked by Next)
    private nuint _retainedBytes;
    private readonly nuint _retainLimit;

    private AllocSetContext(MemoryContext? parent, string name, nuint initBlockSize, nuint maxBlockSize, long limit, bool? debug, nuint retainOnReset)
        : base(parent, name, limit, debug)
    {
        _retainLimit = retainOnReset;
        _initBlockSize = initBlockSize;
        _maxBlockSize = maxBlockSize;
        _nextBlockSize = initBlockSize;
    }

    /// <summary>
    /// AllocSetContextCreate. Block sizes are rounded to 16 bytes; the keeper block is taken now.
    /// <paramref name="retainOnReset"/> (not in PostgreSQL; default 0): Reset keeps up to that many bytes of
    /// non-keeper blocks for the context to reuse instead of returning them to the OS, for contexts that are
    /// filled and reset over and over (a per-batch context). They stay counted in its stats and limit.
    /// </summary>
    public static AllocSetContext Create(MemoryContext? parent, string name,
        int initBlockSize = DefaultInitBlockSize, int maxBlockSize = DefaultMaxBlockSize, long limit = 0, bool? debug = null,
        long retainOnReset = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(retainOnReset);
        if (initBlockSize < 1024 || maxBlockSize < initBlockSize)
            throw new ArgumentOutOfRangeException(nameof(initBlockSize), $"need 1024 <= initBlockSize ({initBlockSize}) <= maxBlockSize ({maxBlockSize})");
        var c = new AllocSetContext(parent, name, MemoryChunk.MaxAlignUp((nuint)initBlockSize), MemoryChunk.MaxAlignUp((nuint)maxBlockSize), limit, debug, (nuint)retainOnReset);
        try
        {
            c._freeList = (byte**)AllocBookkeeping((nuint)(NumFreeLists * sizeof(byte*)));
            AllocSetBlock* k = (AllocSetBlock*)c.AllocBlock(c._initBlockSize, 0);
            k->Prev = k->Next = null;
            k->FreePtr = (byte*)k + s_blockHeader;
            k->EndPtr = (byte*)k + c._initBlockSize;
            c._keeper = c._blocks = k;
            c._nextBlockSize = c._initBlockSize * 2 > c._maxBlockSize ? c._maxBlockSize : c._initBlockSize * 2;
        }
        catch
        {
            c.Delete();
            throw;
        }
        return c;
    }

    internal override int BlockHeaderSize => s_blockHeader;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public override void* Alloc(nuint size)
    {
        nuint need = size + _extra;
        if (need <= ChunkLimit)
        {
            int idx = need <= 16 ? 0 : BitOperations.Log2((uint)need - 1) - (MinChunkShift - 1);
            byte* c = _freeList[idx];
            if (c != null)
            {
                MemoryChunk* h = (MemoryChunk*)c;
                _freeList[idx] = *(byte**)(h + 1);
                h->Magic = MemoryChunk.LiveMagic | MemoryChunk.KindAllocSet;
                h->Aux = (uint)size;
                if (_extra != 0)
                    SetSentinel(h, size);
                return h + 1;
            }
            return AllocFromBlock(idx, size);
        }
        return AllocLarge(size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocFromBlock(int idx, nuint size)
    {
        nuint chunkSize = (nuint)1 << (idx + MinChunkShift);
        nuint total = chunkSize + MemoryChunk.HeaderSize;
        AllocSetBlock* b = _blocks;
        if (b == null || (nuint)(b->EndPtr - b->FreePtr) < total)
        {
            if (b != null)
                CarveRemainder(b);
            b = NewBlock(total, size);
        }
        MemoryChunk* h = (MemoryChunk*)b->FreePtr;
        b->FreePtr += total;
        h->Magic = MemoryChunk.LiveMagic | MemoryChunk.KindAllocSet;
        h->ContextId = Id;
        h->Size = (uint)chunkSize;
        h->Aux = (uint)size;
        if (_extra != 0)
            SetSentinel(h, size);
        return h + 1;
    }

    /// <summary>Cuts what is left of the active block into free-list chunks, largest class first.</summary>
    private void CarveRemainder(AllocSetBlock* b)
    {
        nuint avail = (nuint)(b->EndPtr - b->FreePtr);
        while (avail >= 2 * MemoryChunk.HeaderSize)
        {
            int idx = BitOperations.Log2((uint)(avail - MemoryChunk.HeaderSize)) - MinChunkShift;
            if (idx >= NumFreeLists) idx = NumFreeLists - 1;
            nuint chunkSize = (nuint)1 << (idx + MinChunkShift);
            MemoryChunk* h = (MemoryChunk*)b->FreePtr;
            h->Magic = MemoryChunk.FreedMagic | MemoryChunk.KindAllocSet;
            h->ContextId = Id;
            h->Size = (uint)chunkSize;
            h->Aux = 0;
            *(byte**)(h + 1) = _freeList[idx];
            _freeList[idx] = (byte*)h;
            b->FreePtr += chunkSize + MemoryChunk.HeaderSize;
            avail -= chunkSize + MemoryChunk.HeaderSize;
        }
    }

    private AllocSetBlock* NewBlock(nuint needed, nuint requested)
    {
        nuint size = _nextBlockSize;
        while (size < needed + (nuint)s_blockHeader)
            size *= 2;
        AllocSetBlock* b = _retained != null ? TakeRetained(size) : null;
        if (b != null)
            size = (nuint)(b->EndPtr - (byte*)b);
        else
            b = (AllocSetBlock*)AllocBlock(size, requested);
        _nextBlockSize = _nextBlockSize * 2 > _maxBlockSize ? _maxBlockSize : _nextBlockSize * 2;
        b->Prev = null;
        b->Next = _blocks;
        if (_blocks != null) _blocks->Prev = b;
        b->FreePtr = (byte*)b + s_blockHeader;
        b->EndPtr = (byte*)b + size;
        _blocks = b;
        return b;
    }

    /// <summary>A retained block of at least <paramref name="size"/> bytes, unlinked, or null.</summary>
    private AllocSetBlock* TakeRetained(nuint size)
    {
        AllocSetBlock* prev = null;
        for (AllocSetBlock* b = _retained; b != null; prev = b, b = b->Next)
        {
            nuint bs = (nuint)(b->EndPtr - (byte*)b);
            if (bs < size)
                continue;
            if (prev != null) prev->Next = b->Next;
            else _retained = b->Next;
            _retainedBytes -= bs;
            return b;
        }
        return null;
    }

    /// <summary>
    /// MemoryContextAllocHuge: as <see cref="Alloc"/>, but up to <see cref="MemoryChunk.MaxAllocHugeSize"/> bytes; a
    /// request past MaxAllocSize gets a dedicated block, as every large chunk does.
    /// </summary>
    public override void* AllocHuge(nuint size)
    {
        if (size <= MemoryChunk.MaxAllocSize)
            return Alloc(size);
        if (size > MemoryChunk.MaxAllocHugeSize)
            throw new InvalidAllocRequestException(Name, unchecked((long)size), $"more than MaxAllocHugeSize ({MemoryChunk.MaxAllocHugeSize})");
        return AllocLarge(size, huge: true);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocLarge(nuint size, bool huge = false)
    {
        if (size > MemoryChunk.MaxAllocSize && !huge)
            throw new InvalidAllocRequestException(Name, unchecked((long)size), $"more than MaxAllocSize ({MemoryChunk.MaxAllocSize}); MemoryContextAllocHuge (AllocHuge) takes larger requests");
        nuint capacity = MemoryChunk.MaxAlignUp(size + _extra);
        nuint blockSize = (nuint)s_blockHeader + MemoryChunk.HeaderSize + capacity;
        AllocSetBlock* b = (AllocSetBlock*)AllocBlock(blockSize, size);
        b->FreePtr = b->EndPtr = (byte*)b + blockSize;
        // Behind the active block, so the active block stays the head.
        if (_blocks != null)
        {
            b->Prev = _blocks;
            b->Next = _blocks->Next;
            if (b->Next != null) b->Next->Prev = b;
            _blocks->Next = b;
        }
        else
        {
            b->Prev = b->Next = null;
            _blocks = b;
        }
        MemoryChunk* h = (MemoryChunk*)((byte*)b + s_blockHeader);
        h->Magic = MemoryChunk.LiveMagic | MemoryChunk.KindAllocSetLarge;
        h->ContextId = Id;
        h->Size = (uint)capacity;
        h->Aux = (uint)size;
        if (_extra != 0)
            SetSentinel(h, size);
        return h + 1;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal override void FreeChunk(MemoryChunk* h)
    {
        if ((h->Magic & 0xFF) == MemoryChunk.KindAllocSet)
        {
            if (_extra != 0)
                DebugFree(h);
            int idx = BitOperations.Log2(h->Size) - MinChunkShift;
            h->Magic = MemoryChunk.FreedMagic | MemoryChunk.KindAllocSet;
            *(byte**)(h + 1) = _freeList[idx];
            _freeList[idx] = (byte*)h;
            return;
        }
        FreeLarge(h);
    }

    private void DebugFree(MemoryChunk* h)
    {
        if (h->Aux < h->Size)
            CheckSentinel(h, h->Aux, "pfree");
        Clobber(h + 1, h->Size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeLarge(MemoryChunk* h)
    {
        if (_extra != 0)
            CheckSentinel(h, RequestedOf(h), "pfree");
        AllocSetBlock* b = (AllocSetBlock*)((byte*)h - s_blockHeader);
        h->Magic = MemoryChunk.FreedMagic | MemoryChunk.KindAllocSetLarge;
        UnlinkBlock(b);
        FreeBlock(b, (nuint)(b->EndPtr - (byte*)b));
    }

    private void UnlinkBlock(AllocSetBlock* b)
    {
        if (b->Prev != null) b->Prev->Next = b->Next;
        else _blocks = b->Next;
        if (b->Next != null) b->Next->Prev = b->Prev;
    }

    internal override nuint ChunkCapacity(MemoryChunk* h) => CapacityOf(h);

    /// <summary>A chunk's capacity: in its header, or for a large (maybe huge) chunk from its dedicated block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static nuint CapacityOf(MemoryChunk* h)
        => (h->Magic & 0xFF) == MemoryChunk.KindAllocSetLarge
            ? (nuint)(((AllocSetBlock*)((byte*)h - s_blockHeader))->EndPtr - (byte*)(h + 1))
            : h->Size;

    /// <summary>
    /// A chunk's requested size. A large chunk's Aux holds its low 32 bits only; the capacity exceeds the request by
    /// less than 2^32 (by under 32 bytes when allocated; ReallocChunk shrinks in place only within that bound), so
    /// capacity - (low32(capacity) - Aux) is exact.
    /// </summary>
    private static nuint RequestedOf(MemoryChunk* h)
    {
        if ((h->Magic & 0xFF) != MemoryChunk.KindAllocSetLarge)
            return h->Aux;
        nuint capacity = CapacityOf(h);
        return capacity - unchecked((uint)capacity - h->Aux);
    }

    internal override void* ReallocChunk(MemoryChunk* h, nuint size)
    {
        nuint capacity = CapacityOf(h);
        nuint requested = RequestedOf(h);
        bool large = (h->Magic & 0xFF) == MemoryChunk.KindAllocSetLarge;
        if (_extra != 0 && requested < capacity)
            CheckSentinel(h, requested, "repalloc");
        // In place when it fits and stays in its kind (a large chunk shrunk under the limit moves), and, for a large
        // chunk, when RequestedOf can still recover the new size from its low 32 bits.
        if (size + _extra <= capacity && (size + _extra > ChunkLimit) == large && (!large || capacity - size <= uint.MaxValue))
        {
            // Fits where it is (and stays in its kind: a large chunk shrunk under the limit moves).
            if (_extra != 0)
            {
                if (size > requested)
                    Clobber((byte*)(h + 1) + requested, size - requested);
                SetSentinel(h, size);
            }
            h->Aux = (uint)size;
            return h + 1;
        }
        void* n = Alloc(size);
        nuint keep = requested < size ? requested : size;
        Buffer.MemoryCopy(h + 1, n, size, keep);
        FreeChunk(h);
        return n;
    }

    /// <summary>
    /// AllocSetStats: live chunks and their bytes found by walking the blocks (as PostgreSQL does), so
    /// Alloc and Free keep no counters.
    /// </summary>
    public override MemoryContextCounters GetCounters()
    {
        long live = 0, liveBytes = 0;
        for (AllocSetBlock* b = _blocks; b != null; b = b->Next)
        {
            for (byte* p = (byte*)b + s_blockHeader; p < b->FreePtr;)
            {
                MemoryChunk* h = (MemoryChunk*)p;
                if ((h->Magic & MemoryChunk.MagicMask) == MemoryChunk.LiveMagic)
                {
                    live++;
                    liveBytes += (long)CapacityOf(h) + MemoryChunk.HeaderSize;
                }
                if ((h->Magic & 0xFF) == MemoryChunk.KindAllocSetLarge || h->Size == 0)
                    break;
                p += h->Size + MemoryChunk.HeaderSize;
            }
        }
        long headers = (long)_blockCount * s_blockHeader;
        return new MemoryContextCounters(_blockCount, live, _memAllocated - liveBytes - headers, _memAllocated);
    }

    /// <inheritdoc/>
    public override void Check()
    {
        for (AllocSetBlock* b = _blocks; b != null; b = b->Next)
        {
            byte* p = (byte*)b + s_blockHeader;
            while (p < b->FreePtr)
            {
                MemoryChunk* h = (MemoryChunk*)p;
                uint kind = h->Magic & 0xFF;
                if ((h->Magic & MemoryChunk.MagicMask) == MemoryChunk.LiveMagic && _extra != 0 && RequestedOf(h) < CapacityOf(h))
                    CheckSentinel(h, RequestedOf(h), "MemoryContextCheck");
                if (kind == MemoryChunk.KindAllocSetLarge)
                    break;
                if (h->Size == 0 || (h->Magic & 0xFF) != MemoryChunk.KindAllocSet)
                    throw new MemoryChunkCorruptedException(Name, (long)(h + 1), "MemoryContextCheck: chunk header overwritten");
                p += h->Size + MemoryChunk.HeaderSize;
            }
        }
    }

    /// <inheritdoc/>
    protected override void ResetBlocks()
    {
        AllocSetBlock* b = _blocks;
        while (b != null)
        {
            AllocSetBlock* next = b->Next;
            if (b != _keeper)
            {
                nuint bs = (nuint)(b->EndPtr - (byte*)b);
                if (_retainedBytes + bs <= _retainLimit)
                {
                    if (_extra != 0)
                        Clobber((byte*)b + s_blockHeader, (nuint)(b->FreePtr - ((byte*)b + s_blockHeader)));
                    b->Next = _retained;
                    _retained = b;
                    _retainedBytes += bs;
                }
                else
                    FreeBlock(b, bs);
            }
            b = next;
        }
        if (_keeper != null)
        {
            byte* start = (byte*)_keeper + s_blockHeader;
            if (_extra != 0)
                Clobber(start, (nuint)(_keeper->FreePtr - start));
            _keeper->FreePtr = start;
            _keeper->Prev = _keeper->Next = null;
        }
        _blocks = _keeper;
        if (_freeList != s_noFreeLists)
            NativeMemory.Clear(_freeList, (nuint)(NumFreeLists * sizeof(byte*)));
        _nextBlockSize = _initBlockSize * 2 > _maxBlockSize ? _maxBlockSize : _initBlockSize * 2;
        _liveChunks = 0;
        _liveChunkBytes = 0;
    }

    /// <inheritdoc/>
    protected override void DeleteBlocks()
    {
        AllocSetBlock* b = _blocks;
        while (b != null)
        {
            AllocSetBlock* next = b->Next;
            FreeBlock(b, (nuint)(b->EndPtr - (byte*)b));
            b = next;
        }
        _blocks = _keeper = null;
        for (b = _retained; b != null;)
        {
            AllocSetBlock* next = b->Next;
            FreeBlock(b, (nuint)(b->EndPtr - (byte*)b));
            b = next;
        }
        _retained = null;
        _retainedBytes = 0;
        if (_freeList != s_noFreeLists)
        {
            FreeBookkeeping(_freeList, (nuint)(NumFreeLists * sizeof(byte*)));
            _freeList = s_noFreeLists;
        }
        _liveChunks = 0;
        _liveChunkBytes = 0;
    }
}
