/*-------------------------------------------------------------------------
 * GenerationContext.cs
 *   A context for objects freed roughly in the order they were made
 *   (FIFO lifetimes): chunks are bumped out of blocks and never reused one
 *   by one; a block goes back when every chunk in it is freed.
 *
 * NOTES
 *   Mirrors PostgreSQL's src/backend/utils/mmgr/generation.c (used there
 *   for logical decoding's reorder buffer and for tuplestores).
 *
 *   Each block counts its chunks and its freed chunks. Free finds the
 *   block through the offset in the chunk header, bumps the freed count,
 *   and when the two are equal the block is empty: the current block and
 *   the keeper are rewound in place, any other block is returned to the
 *   OS. Requests larger than an eighth of the maximum block size get a
 *   dedicated block (one chunk), returned on its free; so do huge ones
 *   (AllocHuge, past MaxAllocSize), up to about 4 GiB, as the header keeps
 *   the requested size in 32 bits. Blocks grow by
 *   doubling from the initial to the maximum size, as in AllocSet.
 *
 *     block:  [GenerationBlock 48 B][hdr|chunk][hdr|chunk]...FreePtr...EndPtr
 *
 *   A chunk's capacity is MAXALIGN(requested + sentinel byte if debug);
 *   the header keeps the requested size, so the capacity is recomputed.
 *   Single-threaded: owned by one participant.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PgIpc.Memory;

/// <summary>GenerationBlock: header of each Generation block. Process-local; owner thread only.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct GenerationBlock
{
    public GenerationBlock* Prev;
    public GenerationBlock* Next;
    public byte* FreePtr;
    public byte* EndPtr;
    /// <summary>Chunks ever carved from this block since it was last empty.</summary>
    public int NChunks;
    /// <summary>Of those, how many are freed.</summary>
    public int NFree;
    private long _pad;
}

/// <summary>generation.c's GenerationContext. Single-threaded: owned by the thread that uses it.</summary>
public sealed unsafe class GenerationContext : MemoryContext
{
    private static readonly int s_blockHeader = sizeof(GenerationBlock);

    private GenerationBlock* _blocks;
    private GenerationBlock* _current;
    private GenerationBlock* _keeper;
    private readonly nuint _initBlockSize;
    private readonly nuint _maxBlockSize;
    private readonly nuint _chunkLimit;
    private nuint _nextBlockSize;

    private GenerationContext(MemoryContext? parent, string name, nuint init, nuint max, long limit, bool? debug)
        : base(parent, name, limit, debug)
    {
        _initBlockSize = init;
        _maxBlockSize = max;
        _nextBlockSize = init;
        _chunkLimit = max / 8;
    }

    /// <summary>GenerationContextCreate. The keeper block (initial size) is taken now.</summary>
    public static GenerationContext Create(MemoryContext? parent, string name,
        int initBlockSize = AllocSetContext.DefaultInitBlockSize, int maxBlockSize = AllocSetContext.DefaultMaxBlockSize,
        long limit = 0, bool? debug = null)
    {
        if (initBlockSize < 1024 || maxBlockSize < initBlockSize)
            throw new ArgumentOutOfRangeException(nameof(initBlockSize), $"need 1024 <= initBlockSize ({initBlockSize}) <= maxBlockSize ({maxBlockSize})");
        var c = new GenerationContext(parent, name, MemoryChunk.MaxAlignUp((nuint)initBlockSize), MemoryChunk.MaxAlignUp((nuint)maxBlockSize), limit, debug);
        try
        {
            c._keeper = c._current = c.NewBlock(c._initBlockSize, 0);
        }
        catch
        {
            c.Delete();
            throw;
        }
        return c;
    }

    internal override int BlockHeaderSize => s_blockHeader;

    private GenerationBlock* NewBlock(nuint size, nuint requested)
    {
        GenerationBlock* b = (GenerationBlock*)AllocBlock(size, requested);
        b->Prev = null;
        b->Next = _blocks;
        if (_blocks != null) _blocks->Prev = b;
        _blocks = b;
        b->FreePtr = (byte*)b + s_blockHeader;
        b->EndPtr = (byte*)b + size;
        b->NChunks = b->NFree = 0;
        return b;
    }

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public override void* Alloc(nuint size)
    {
        nuint capacity = MemoryChunk.MaxAlignUp(size + _extra);
        nuint total = capacity + MemoryChunk.HeaderSize;
        GenerationBlock* b = _current;
        if (capacity > _chunkLimit || b == null || (nuint)(b->EndPtr - b->FreePtr) < total)
            return AllocSlow(size, capacity);
        return Carve(b, size, total);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void* Carve(GenerationBlock* b, nuint size, nuint total)
    {
        MemoryChunk* h = (MemoryChunk*)b->FreePtr;
        b->FreePtr += total;
        b->NChunks++;
        h->Magic = MemoryChunk.LiveMagic | MemoryChunk.KindGeneration;
        h->ContextId = Id;
        h->Size = (uint)size;
        h->Aux = (uint)((byte*)h - (byte*)b);
        _liveChunks++;
        _liveChunkBytes += (long)total;
        if (_extra != 0)
            SetSentinel(h, size);
        return h + 1;
    }

    /// <summary>The largest huge request a Generation chunk takes: its header keeps the requested size in 32 bits.</summary>
    public const long MaxHugeChunkSize = uint.MaxValue - 2 * MemoryChunk.MaxAlign;

    /// <summary>
    /// MemoryContextAllocHuge: as <see cref="Alloc"/>, but past MaxAllocSize too, in a dedicated block, up to
    /// <see cref="MaxHugeChunkSize"/> (about 4 GiB; PostgreSQL's generation.c goes to MaxAllocHugeSize).
    /// </summary>
    public override void* AllocHuge(nuint size)
    {
        if (size <= MemoryChunk.MaxAllocSize)
            return Alloc(size);
        if (size > (nuint)MaxHugeChunkSize)
            throw new InvalidAllocRequestException(Name, unchecked((long)size), $"more than a Generation context's largest huge chunk ({MaxHugeChunkSize}); an AllocSet takes up to MaxAllocHugeSize");
        return AllocSlow(size, MemoryChunk.MaxAlignUp(size + _extra), huge: true);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocSlow(nuint size, nuint capacity, bool huge = false)
    {
        if (size > MemoryChunk.MaxAllocSize && !huge)
            throw new InvalidAllocRequestException(Name, unchecked((long)size), $"more than MaxAllocSize ({MemoryChunk.MaxAllocSize}); MemoryContextAllocHuge (AllocHuge) takes larger requests");
        nuint total = capacity + MemoryChunk.HeaderSize;
        if (capacity > _chunkLimit)
        {
            GenerationBlock* big = NewBlock((nuint)s_blockHeader + total, size);
            return Carve(big, size, total);
        }
        // The keeper, if empty and not current, is reused before asking the OS.
        GenerationBlock* b;
        if (_keeper != null && _keeper != _current && _keeper->NChunks == 0 && (nuint)(_keeper->EndPtr - _keeper->FreePtr) >= total)
            b = _keeper;
        else
        {
            nuint bs = _nextBlockSize;
            while (bs < total + (nuint)s_blockHeader)
                bs *= 2;
            b = NewBlock(bs, size);
            _nextBlockSize = _nextBlockSize * 2 > _maxBlockSize ? _maxBlockSize : _nextBlockSize * 2;
        }
        GenerationBlock* old = _current;
        _current = b;
        if (old != null && old != _keeper && old != b && old->NChunks == 0)
            BlockEmpty(old); // an empty former current block is no longer protected: give it back
        return Carve(b, size, total);
    }

    internal override nuint ChunkCapacity(MemoryChunk* h) => MemoryChunk.MaxAlignUp(h->Size + _extra);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal override void FreeChunk(MemoryChunk* h)
    {
        nuint capacity = MemoryChunk.MaxAlignUp(h->Size + _extra);
        if (_extra != 0)
        {
            CheckSentinel(h, h->Size, "pfree");
            Clobber(h + 1, capacity);
        }
        GenerationBlock* b = (GenerationBlock*)((byte*)h - h->Aux);
        ChunkFreed(h, capacity);
        if (++b->NFree == b->NChunks)
            BlockEmpty(b);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void BlockEmpty(GenerationBlock* b)
    {
        if (b == _current || b == _keeper)
        {
            b->FreePtr = (byte*)b + s_blockHeader;
            b->NChunks = b->NFree = 0;
            return;
        }
        if (b->Prev != null) b->Prev->Next = b->Next;
        else _blocks = b->Next;
        if (b->Next != null) b->Next->Prev = b->Prev;
        FreeBlock(b, (nuint)(b->EndPtr - (byte*)b));
    }

    internal override void* ReallocChunk(MemoryChunk* h, nuint size)
    {
        nuint capacity = MemoryChunk.MaxAlignUp(h->Size + _extra);
        if (_extra != 0)
            CheckSentinel(h, h->Size, "repalloc");
        if (MemoryChunk.MaxAlignUp(size + _extra) == capacity)
        {
            h->Size = (uint)size;
            if (_extra != 0)
                SetSentinel(h, size);
            return h + 1;
        }
        void* n = Alloc(size);
        Buffer.MemoryCopy(h + 1, n, size, h->Size < size ? h->Size : size);
        FreeChunk(h);
        return n;
    }

    /// <inheritdoc/>
    public override void Check()
    {
        for (GenerationBlock* b = _blocks; b != null; b = b->Next)
        {
            int live = 0, freed = 0;
            for (byte* p = (byte*)b + s_blockHeader; p < b->FreePtr;)
            {
                MemoryChunk* h = (MemoryChunk*)p;
                if ((h->Magic & MemoryChunk.MagicMask) == MemoryChunk.LiveMagic)
                {
                    live++;
                    if (_extra != 0)
                        CheckSentinel(h, h->Size, "MemoryContextCheck");
                }
                else if ((h->Magic & MemoryChunk.MagicMask) == MemoryChunk.FreedMagic)
                    freed++;
                else
                    throw new MemoryChunkCorruptedException(Name, (long)(h + 1), "MemoryContextCheck: chunk header overwritten");
                p += MemoryChunk.MaxAlignUp(h->Size + _extra) + MemoryChunk.HeaderSize;
            }
            if (live + freed != b->NChunks || freed != b->NFree)
                throw new MemoryChunkCorruptedException(Name, (long)b, $"MemoryContextCheck: block counts {b->NChunks}/{b->NFree} but holds {live} live and {freed} freed chunks");
        }
    }

    /// <inheritdoc/>
    protected override void ResetBlocks()
    {
        GenerationBlock* b = _blocks;
        while (b != null)
        {
            GenerationBlock* next = b->Next;
            if (b != _keeper)
                FreeBlock(b, (nuint)(b->EndPtr - (byte*)b));
            b = next;
        }
        _blocks = _current = _keeper;
        if (_keeper != null)
        {
            byte* start = (byte*)_keeper + s_blockHeader;
            if (_extra != 0)
                Clobber(start, (nuint)(_keeper->FreePtr - start));
            _keeper->Prev = _keeper->Next = null;
            _keeper->FreePtr = start;
            _keeper->NChunks = _keeper->NFree = 0;
        }
        _nextBlockSize = _initBlockSize;
        _liveChunks = 0;
        _liveChunkBytes = 0;
    }

    /// <inheritdoc/>
    protected override void DeleteBlocks()
    {
        GenerationBlock* b = _blocks;
        while (b != null)
        {
            GenerationBlock* next = b->Next;
            FreeBlock(b, (nuint)(b->EndPtr - (byte*)b));
            b = next;
        }
        _blocks = _current = _keeper = null;
        _liveChunks = 0;
        _liveChunkBytes = 0;
    }
}
