/*-------------------------------------------------------------------------
 * SlabContext.cs
 *   A context for many objects of one fixed size: each block is an array
 *   of equal chunks with its own free list.
 *
 * NOTES
 *   Mirrors PostgreSQL's src/backend/utils/mmgr/slab.c.
 *
 *   A block holds ChunksPerBlock chunks of stride 16 + MAXALIGN(size). It
 *   hands out chunks from its free list first, then from its never-used
 *   tail (so a new block is not threaded up front). Blocks that have a
 *   free chunk are on a doubly linked "has space" list; Alloc takes the
 *   head. A block whose chunks are all free again goes back to the OS,
 *   except that one empty block is kept aside for the next Alloc, so a
 *   pattern that frees and reallocates one object at a block boundary does
 *   not call the OS each time. (PostgreSQL keeps up to 10 and prefers the
 *   fullest block to make blocks empty sooner; this keeps 1 and takes the
 *   head of the list.)
 *
 *     block:  [SlabBlock 48 B][hdr|obj][hdr|obj]...[never used]...
 *
 *   Slab has no keeper block (neither has PostgreSQL's): Reset frees all.
 *   Single-threaded: owned by one participant.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PgIpc.Memory;

/// <summary>SlabBlock: header of each Slab block. Process-local; owner thread only.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct SlabBlock
{
    /// <summary>Every block (for Reset, Delete and Check).</summary>
    public SlabBlock* AllPrev;
    public SlabBlock* AllNext;
    /// <summary>Blocks with at least one free chunk.</summary>
    public SlabBlock* SpacePrev;
    public SlabBlock* SpaceNext;
    /// <summary>Freed chunks of this block, linked through their first 8 bytes.</summary>
    public byte* FreeHead;
    public int NFree;
    /// <summary>Index of the first never-used chunk.</summary>
    public int NUnused;
}

/// <summary>slab.c's SlabContext. Single-threaded: owned by the thread that uses it.</summary>
public sealed unsafe class SlabContext : MemoryContext
{
    private static readonly int s_blockHeader = sizeof(SlabBlock);

    private readonly nuint _chunkSize;
    private readonly nuint _stride;
    private readonly nuint _blockSize;
    private readonly int _chunksPerBlock;
    private SlabBlock* _all;
    private SlabBlock* _space;
    private SlabBlock* _spare;

    /// <summary>The size of every chunk this context hands out.</summary>
    public int ChunkSize => (int)_chunkSize;
    /// <summary>The number of chunks in one block.</summary>
    public int ChunksPerBlock => _chunksPerBlock;

    private SlabContext(MemoryContext? parent, string name, nuint blockSize, nuint chunkSize, long limit, bool? debug)
        : base(parent, name, limit, debug)
    {
        _chunkSize = chunkSize;
        _stride = MemoryChunk.HeaderSize + MemoryChunk.MaxAlignUp(chunkSize + _extra);
        _blockSize = blockSize;
        _chunksPerBlock = (int)((blockSize - (nuint)s_blockHeader) / _stride);
        if (_chunksPerBlock < 1)
        {
            Delete();
            throw new ArgumentOutOfRangeException(nameof(blockSize), $"block size {blockSize} cannot hold one chunk of {chunkSize} bytes");
        }
    }

    /// <summary>SlabContextCreate: objects of exactly <paramref name="chunkSize"/> bytes in blocks of <paramref name="blockSize"/>.</summary>
    public static SlabContext Create(MemoryContext? parent, string name, int blockSize, int chunkSize, long limit = 0, bool? debug = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(blockSize, 256);
        return new SlabContext(parent, name, MemoryChunk.MaxAlignUp((nuint)blockSize), (nuint)chunkSize, limit, debug);
    }

    internal override int BlockHeaderSize => s_blockHeader;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public override void* Alloc(nuint size)
    {
        if (size != _chunkSize)
            ThrowWrongSize(size);
        SlabBlock* b = _space;
        if (b == null)
            b = NewBlock();
        MemoryChunk* h;
        if (b->FreeHead != null)
        {
            h = (MemoryChunk*)b->FreeHead;
            b->FreeHead = *(byte**)(h + 1);
        }
        else
        {
            h = (MemoryChunk*)((byte*)b + s_blockHeader + (nuint)b->NUnused * _stride);
            b->NUnused++;
            h->ContextId = Id;
            h->Size = (uint)size;
            h->Aux = (uint)((byte*)h - (byte*)b);
        }
        h->Magic = MemoryChunk.LiveMagic | MemoryChunk.KindSlab;
        if (--b->NFree == 0)
            RemoveFromSpace(b);
        _liveChunks++;
        _liveChunkBytes += (long)_stride;
        if (_extra != 0)
            SetSentinel(h, size);
        return h + 1;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowWrongSize(nuint size)
        => throw new InvalidAllocRequestException(Name, (long)size, $"slab context allocates exactly {_chunkSize} bytes");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private SlabBlock* NewBlock()
    {
        SlabBlock* b = _spare;
        if (b != null)
            _spare = null;
        else
        {
            b = (SlabBlock*)AllocBlock(_blockSize, _chunkSize);
        }
        b->FreeHead = null;
        b->NFree = _chunksPerBlock;
        b->NUnused = 0;
        b->AllPrev = null;
        b->AllNext = _all;
        if (_all != null) _all->AllPrev = b;
        _all = b;
        b->SpacePrev = null;
        b->SpaceNext = _space;
        if (_space != null) _space->SpacePrev = b;
        _space = b;
        return b;
    }

    private void RemoveFromSpace(SlabBlock* b)
    {
        if (b->SpacePrev != null) b->SpacePrev->SpaceNext = b->SpaceNext;
        else _space = b->SpaceNext;
        if (b->SpaceNext != null) b->SpaceNext->SpacePrev = b->SpacePrev;
        b->SpacePrev = b->SpaceNext = null;
    }

    internal override nuint ChunkCapacity(MemoryChunk* h) => _stride - MemoryChunk.HeaderSize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal override void FreeChunk(MemoryChunk* h)
    {
        if (_extra != 0)
        {
            CheckSentinel(h, _chunkSize, "pfree");
            Clobber(h + 1, _stride - MemoryChunk.HeaderSize);
        }
        SlabBlock* b = (SlabBlock*)((byte*)h - h->Aux);
        h->Magic = MemoryChunk.FreedMagic | MemoryChunk.KindSlab;
        _liveChunks--;
        _liveChunkBytes -= (long)_stride;
        *(byte**)(h + 1) = b->FreeHead;
        b->FreeHead = (byte*)h;
        int nfree = ++b->NFree;
        if (nfree == 1)
        {
            b->SpacePrev = null;
            b->SpaceNext = _space;
            if (_space != null) _space->SpacePrev = b;
            _space = b;
        }
        else if (nfree == _chunksPerBlock)
            BlockEmpty(b);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void BlockEmpty(SlabBlock* b)
    {
        RemoveFromSpace(b);
        if (b->AllPrev != null) b->AllPrev->AllNext = b->AllNext;
        else _all = b->AllNext;
        if (b->AllNext != null) b->AllNext->AllPrev = b->AllPrev;
        if (_spare == null)
            _spare = b;
        else
            FreeBlock(b, _blockSize);
    }

    internal override void* ReallocChunk(MemoryChunk* h, nuint size)
    {
        if (_extra != 0)
            CheckSentinel(h, _chunkSize, "repalloc");
        if (size != _chunkSize)
            throw new InvalidAllocRequestException(Name, (long)size, $"slab chunks cannot be resized from {_chunkSize} bytes");
        return h + 1;
    }

    /// <inheritdoc/>
    public override void Check()
    {
        for (SlabBlock* b = _all; b != null; b = b->AllNext)
        {
            int live = 0;
            for (int i = 0; i < b->NUnused; i++)
            {
                MemoryChunk* h = (MemoryChunk*)((byte*)b + s_blockHeader + (nuint)i * _stride);
                if ((h->Magic & MemoryChunk.MagicMask) == MemoryChunk.LiveMagic)
                {
                    live++;
                    if (_extra != 0)
                        CheckSentinel(h, _chunkSize, "MemoryContextCheck");
                }
                else if ((h->Magic & MemoryChunk.MagicMask) != MemoryChunk.FreedMagic)
                    throw new MemoryChunkCorruptedException(Name, (long)(h + 1), "MemoryContextCheck: chunk header overwritten");
            }
            if (live != _chunksPerBlock - b->NFree)
                throw new MemoryChunkCorruptedException(Name, (long)b, $"MemoryContextCheck: block counts {b->NFree} free but holds {live} live chunks");
        }
    }

    /// <inheritdoc/>
    protected override void ResetBlocks()
    {
        SlabBlock* b = _all;
        while (b != null)
        {
            SlabBlock* next = b->AllNext;
            FreeBlock(b, _blockSize);
            b = next;
        }
        if (_spare != null)
        {
            FreeBlock(_spare, _blockSize);
            _spare = null;
        }
        _all = _space = null;
        _liveChunks = 0;
        _liveChunkBytes = 0;
    }

    /// <inheritdoc/>
    protected override void DeleteBlocks() => ResetBlocks();
}
