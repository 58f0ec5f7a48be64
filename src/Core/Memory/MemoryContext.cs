/*-------------------------------------------------------------------------
 * MemoryContext.cs
 *   Per-process memory: a tree of contexts over native memory. A context
 *   hands out chunks; resetting or deleting it frees them all at once.
 *
 * NOTES
 *   Mirrors PostgreSQL's src/backend/utils/mmgr/mcxt.c (the tree, reset
 *   and delete, reset callbacks, pfree/repalloc from the pointer alone,
 *   the standard contexts) and src/include/nodes/memnodes.h. The kinds are
 *   in AllocSetContext.cs (aset.c), GenerationContext.cs (generation.c)
 *   and SlabContext.cs (slab.c).
 *
 *   Threading. A context is owned by one participant (a thread, standing
 *   in for a PostgreSQL backend) and is not thread-safe, exactly as in
 *   PostgreSQL: allocate, free, reset and delete it from its owner only.
 *   The standard tree (TopMemoryContext, ErrorContext, CacheMemoryContext,
 *   MessageContext, TopTransactionContext) and CurrentMemoryContext are
 *   [ThreadStatic], made on first use by each thread.
 *
 *   Finding the context from a pointer. Every chunk has a 16-byte header
 *   (MemoryChunk.cs) holding the context's id: an index into a process-wide
 *   table of contexts. The table is the only shared state; it changes under
 *   a lock when a context is created or deleted, and is read without one
 *   by Free/Realloc (the owner thread made the context, so it sees its
 *   entry). Ids are reused after delete, so a pointer into a deleted
 *   context is not reliably caught (its memory is gone anyway); a pointer
 *   into a reset context is, in debug mode, through the clobbered header.
 *
 *   Budgets. A context may carry a byte limit (work_mem). The limit counts
 *   native bytes held in blocks by the context and its whole subtree (the
 *   quantity PostgreSQL's callers compare with work_mem through
 *   MemoryContextMemAllocated(ctx, recurse: true)); it is checked when a
 *   block is about to be taken from the OS, at every ancestor, so chunks
 *   served from a free list or the current block never pay for it. Going
 *   over raises MemoryContextLimitExceededException and takes nothing.
 *
 *   Debug mode (per context at creation, default from DebugDefault): each
 *   chunk gets a sentinel byte after the requested size, checked on free,
 *   realloc, reset and delete; freed and reset memory is filled with 0x7F
 *   (CLOBBER_FREED_MEMORY); a bad sentinel or header raises
 *   MemoryChunkCorruptedException naming the context.
 *
 *   Allocation (Alloc/Free) allocates nothing managed. Creating a context
 *   allocates its managed object; reset callbacks are managed delegates.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PgIpc.Memory;

/// <summary>A node of the memory context tree. Owned by one thread; see the file banner.</summary>
public abstract unsafe class MemoryContext
{
    // ---- process-wide registry: id -> context, and native byte counters ----

    private static readonly Lock s_registryLock = new();
    private static MemoryContext?[] s_registry = new MemoryContext?[256];
    private static int[] s_freeIds = new int[256];
    private static int s_freeIdCount;
    private static int s_nextId = 1; // id 0 is never used, so a zeroed header is caught
    private static long s_nativeBytes;
    private static long s_nativeAllocations;

    /// <summary>Native bytes currently held by every context in the process (blocks and bookkeeping).</summary>
    public static long NativeBytesAllocated => Volatile.Read(ref s_nativeBytes);
    /// <summary>Native allocations currently held by every context in the process.</summary>
    public static long NativeAllocationsOutstanding => Volatile.Read(ref s_nativeAllocations);
    /// <summary>Contexts alive in the process.</summary>
    public static int LiveContexts { get { lock (s_registryLock) return s_nextId - 1 - s_freeIdCount; } }

    /// <summary>Default of the debug option for contexts created afterwards (a global switch).</summary>
    public static bool DebugDefault { get; set; }

    // ---- the tree; written only by the owner thread ----

    /// <summary>The context's name, shown in statistics.</summary>
    public string Name { get; }
    /// <summary>The parent context; null for a root, or once deleted.</summary>
    public MemoryContext? Parent { get; private set; }
    private MemoryContext? _firstChild;
    private MemoryContext? _nextSibling;
    private MemoryContext? _prevSibling;
    private List<Action>? _resetCallbacks;
    private bool _deleted;

    internal readonly int Id;
    /// <summary>True: sentinel bytes and clobbering (see the banner).</summary>
    public bool DebugChecks { get; }
    /// <summary>Byte limit of this context's subtree; 0 means none.</summary>
    public long Limit { get; }
    /// <summary>1 in debug mode (room for the sentinel), else 0.</summary>
    internal readonly nuint _extra;

    // ---- accounting; owner thread only ----
    internal long _memAllocated;     // native bytes in this context's blocks
    internal long _subtreeAllocated; // the same summed over the subtree (for limits)
    internal int _blockCount;
    internal long _liveChunks;       // Generation and Slab only (AllocSet walks its blocks for stats)
    internal long _liveChunkBytes;   // header + capacity of live chunks; idem

    /// <summary>Creates a context named <paramref name="name"/> under <paramref name="parent"/> (none for a root), with a byte budget <paramref name="limit"/> (0 for none) and the debug checks on, off or (null) as the process default.</summary>
    protected MemoryContext(MemoryContext? parent, string name, long limit, bool? debug)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        Name = name;
        Limit = limit;
        DebugChecks = debug ?? DebugDefault;
        _extra = DebugChecks ? 1u : 0u;
        if (parent is not null)
        {
            if (parent._deleted)
                throw new InvalidOperationException($"memory context {parent.Name} is deleted");
            Parent = parent;
            _nextSibling = parent._firstChild;
            if (_nextSibling is not null)
                _nextSibling._prevSibling = this;
            parent._firstChild = this;
        }
        Id = Register(this);
    }

    private static int Register(MemoryContext c)
    {
        lock (s_registryLock)
        {
            int id;
            if (s_freeIdCount > 0)
                id = s_freeIds[--s_freeIdCount];
            else
            {
                id = s_nextId++;
                if (id >= s_registry.Length)
                {
                    var bigger = new MemoryContext?[s_registry.Length * 2];
                    Array.Copy(s_registry, bigger, s_registry.Length);
                    Volatile.Write(ref s_registry, bigger);
                    Array.Resize(ref s_freeIds, bigger.Length);
                }
            }
            Volatile.Write(ref s_registry[id], c);
            return id;
        }
    }

    private static void Unregister(int id)
    {
        lock (s_registryLock)
        {
            s_registry[id] = null;
            s_freeIds[s_freeIdCount++] = id;
        }
    }

    // ---- the kind's operations ----

    /// <summary>palloc: <paramref name="size"/> bytes, 16-byte aligned, uninitialised.</summary>
    public abstract void* Alloc(nuint size);
    internal abstract void FreeChunk(MemoryChunk* header);
    internal abstract void* ReallocChunk(MemoryChunk* header, nuint size);
    /// <summary>Frees all chunks; keeps the keeper block (kind-specific).</summary>
    protected abstract void ResetBlocks();
    /// <summary>Frees every block, keeper included.</summary>
    protected abstract void DeleteBlocks();
    /// <summary>Size of the kind's block header, for the stats' free-space figure.</summary>
    internal abstract int BlockHeaderSize { get; }
    /// <summary>Capacity (usable bytes) of a live chunk of this context.</summary>
    internal abstract nuint ChunkCapacity(MemoryChunk* header);
    /// <summary>MemoryContextCheck: the sentinel of every live chunk (debug mode only).</summary>
    public abstract void Check();

    // ---- public API ----

    /// <summary>
    /// MemoryContextAllocHuge: as <see cref="Alloc"/>, but requests past MaxAllocSize (1 GiB - 1) are allowed, up to
    /// MaxAllocHugeSize in an AllocSet (aset.c), up to about 4 GiB in a Generation context; Slab refuses them with
    /// <see cref="InvalidAllocRequestException"/> (its chunks have one fixed size), as slab.c does.
    /// </summary>
    public virtual void* AllocHuge(nuint size) => Alloc(size);

    /// <summary>The largest request <see cref="Alloc"/> takes (MaxAllocSize, 1 GiB - 1).</summary>
    public const long MaxAllocSize = (long)MemoryChunk.MaxAllocSize;

    /// <summary>The largest request <see cref="AllocHuge"/> takes (MaxAllocHugeSize, SIZE_MAX / 2).</summary>
    public static long MaxAllocHugeSize => (long)MemoryChunk.MaxAllocHugeSize;

    /// <summary>palloc returning a span over the <paramref name="size"/> bytes.</summary>
    public Span<byte> AllocSpan(int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        return new Span<byte>(Alloc((nuint)size), size);
    }

    /// <summary>palloc0.</summary>
    public void* AllocZero(nuint size)
    {
        void* p = Alloc(size);
        NativeMemory.Clear(p, size);
        return p;
    }

    /// <summary>pfree: the owning context is found from the chunk header.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Free(void* pointer)
    {
        MemoryChunk* h = (MemoryChunk*)pointer - 1;
        ContextOf(h, "pfree").FreeChunk(h);
    }

    /// <summary>repalloc: grows or shrinks a chunk, keeping its contents (up to the smaller size).</summary>
    public static void* Realloc(void* pointer, nuint size)
    {
        MemoryChunk* h = (MemoryChunk*)pointer - 1;
        return ContextOf(h, "repalloc").ReallocChunk(h, size);
    }

    /// <summary>GetMemoryChunkContext.</summary>
    public static MemoryContext GetChunkContext(void* pointer) => ContextOf((MemoryChunk*)pointer - 1, "GetMemoryChunkContext");

    /// <summary>The requested size of a live chunk (GetMemoryChunkSpace gives its capacity).</summary>
    public static nuint GetChunkSpace(void* pointer)
    {
        MemoryChunk* h = (MemoryChunk*)pointer - 1;
        return ContextOf(h, "GetMemoryChunkSpace").ChunkCapacity(h);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static MemoryContext ContextOf(MemoryChunk* h, string op)
    {
        MemoryContext?[] reg = s_registry;
        uint id = (uint)h->ContextId;
        MemoryContext? c = id < (uint)reg.Length ? reg[id] : null;
        if ((h->Magic & MemoryChunk.MagicMask) != MemoryChunk.LiveMagic || c is null)
            ThrowBadHeader(h, c, op);
        return c!;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBadHeader(MemoryChunk* h, MemoryContext? c, string op)
    {
        uint magic = h->Magic;
        string detail = (magic & MemoryChunk.MagicMask) == MemoryChunk.FreedMagic
            ? $"{op} of a chunk that is already free (double free)"
            : magic == 0x7F7F7F7F
                ? $"{op} of a chunk whose memory was freed or reset (header clobbered with 0x7F)"
                : (magic & MemoryChunk.MagicMask) == MemoryChunk.LiveMagic
                    ? $"{op}: chunk names context id {h->ContextId}, which does not exist (deleted?)"
                    : $"{op} of a pointer that is not a live chunk (header magic 0x{magic:x8})";
        throw new MemoryChunkCorruptedException(c?.Name ?? "?", (long)(h + 1), detail);
    }

    /// <summary>MemoryContextReset: deletes the children, runs the reset callbacks, frees every chunk.</summary>
    public void Reset()
    {
        ThrowIfDeleted();
        while (_firstChild is not null)
            _firstChild.Delete();
        RunCallbacks();
        if (DebugChecks)
            Check();
        ResetBlocks();
    }

    /// <summary>MemoryContextResetOnly: frees this context's chunks, leaves the children alone.</summary>
    public void ResetOnly()
    {
        ThrowIfDeleted();
        RunCallbacks();
        if (DebugChecks)
            Check();
        ResetBlocks();
    }

    /// <summary>MemoryContextDelete: this context and its whole subtree; the object is unusable after.</summary>
    public void Delete()
    {
        if (_deleted)
            return;
        while (_firstChild is not null)
            _firstChild.Delete();
        RunCallbacks();
        if (DebugChecks)
            Check();
        DeleteBlocks();
        if (Parent is not null)
        {
            if (_prevSibling is not null) _prevSibling._nextSibling = _nextSibling;
            else Parent._firstChild = _nextSibling;
            if (_nextSibling is not null) _nextSibling._prevSibling = _prevSibling;
            Parent = null;
        }
        _nextSibling = _prevSibling = null;
        _deleted = true;
        Unregister(Id);
        if (ReferenceEquals(t_current, this))
            t_current = t_top;
    }

    /// <summary>True once the context has been deleted.</summary>
    public bool IsDeleted => _deleted;

    /// <summary>MemoryContextRegisterResetCallback: runs (last registered first) at the next reset or delete, once.</summary>
    public void RegisterResetCallback(Action callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        ThrowIfDeleted();
        (_resetCallbacks ??= []).Add(callback);
    }

    private void RunCallbacks()
    {
        List<Action>? list = _resetCallbacks;
        if (list is null || list.Count == 0)
            return;
        while (list.Count > 0)
        {
            Action a = list[^1];
            list.RemoveAt(list.Count - 1);
            a();
        }
    }

    /// <summary>The children, most recent first.</summary>
    public IEnumerable<MemoryContext> Children
    {
        get
        {
            for (MemoryContext? c = _firstChild; c is not null; c = c._nextSibling)
                yield return c;
        }
    }

    /// <summary>MemoryContextMemAllocated: native bytes in blocks of this context, or of its subtree.</summary>
    public long MemAllocated(bool recurse) => recurse ? _subtreeAllocated : _memAllocated;

    /// <summary>This context's own counters (not its children's).</summary>
    public virtual MemoryContextCounters GetCounters()
    {
        long headers = (long)_blockCount * BlockHeaderSize;
        return new MemoryContextCounters(_blockCount, _liveChunks, _memAllocated - _liveChunkBytes - headers, _memAllocated);
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>Throws <see cref="ObjectDisposedException"/> when the context has been deleted.</summary>
    protected void ThrowIfDeleted()
    {
        if (_deleted)
            throw new InvalidOperationException($"memory context {Name} is deleted");
    }

    // ---- native blocks: the only place contexts take memory from the OS ----

    /// <summary>
    /// Takes a block of <paramref name="size"/> bytes from the OS for this context, after checking the
    /// limit of this context and of every ancestor. <paramref name="requested"/> is the caller's request, for the message.
    /// </summary>
    internal byte* AllocBlock(nuint size, nuint requested)
    {
        if (_deleted)
            ThrowIfDeleted();
        for (MemoryContext? c = this; c is not null; c = c.Parent)
            if (c.Limit > 0 && c._subtreeAllocated + (long)size > c.Limit)
                throw new MemoryContextLimitExceededException(c.Name, (long)requested, c.Limit, c._subtreeAllocated);
        byte* b = (byte*)NativeMemory.AlignedAlloc(size, MemoryChunk.MaxAlign);
        if (b is null)
            throw new MemoryContextLimitExceededException(Name, (long)requested, -1, _subtreeAllocated);
        for (MemoryContext? c = this; c is not null; c = c.Parent)
            c._subtreeAllocated += (long)size;
        _memAllocated += (long)size;
        _blockCount++;
        Interlocked.Add(ref s_nativeBytes, (long)size);
        Interlocked.Increment(ref s_nativeAllocations);
        return b;
    }

    internal void FreeBlock(void* block, nuint size)
    {
        NativeMemory.AlignedFree(block);
        for (MemoryContext? c = this; c is not null; c = c.Parent)
            c._subtreeAllocated -= (long)size;
        _memAllocated -= (long)size;
        _blockCount--;
        Interlocked.Add(ref s_nativeBytes, -(long)size);
        Interlocked.Decrement(ref s_nativeAllocations);
    }

    /// <summary>Bookkeeping memory that is not a block (counted process-wide, not in the context's stats or limit).</summary>
    internal static void* AllocBookkeeping(nuint size)
    {
        void* p = NativeMemory.AllocZeroed(size);
        if (p is null)
            throw new OutOfMemoryException();
        Interlocked.Add(ref s_nativeBytes, (long)size);
        Interlocked.Increment(ref s_nativeAllocations);
        return p;
    }

    internal static void FreeBookkeeping(void* p, nuint size)
    {
        NativeMemory.Free(p);
        Interlocked.Add(ref s_nativeBytes, -(long)size);
        Interlocked.Decrement(ref s_nativeAllocations);
    }

    // ---- debug helpers ----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void SetSentinel(MemoryChunk* h, nuint requested) => ((byte*)(h + 1))[requested] = MemoryChunk.Sentinel;

    internal void CheckSentinel(MemoryChunk* h, nuint requested, string op)
    {
        if (((byte*)(h + 1))[requested] != MemoryChunk.Sentinel)
            throw new MemoryChunkCorruptedException(Name, (long)(h + 1),
                $"{op}: sentinel after the requested {requested} bytes was overwritten (write past the end of the chunk)");
    }

    internal static void Clobber(void* p, nuint length) => NativeMemory.Fill(p, length, MemoryChunk.Clobber);

    internal void ChunkFreed(MemoryChunk* h, nuint capacity)
    {
        h->Magic = MemoryChunk.FreedMagic | (h->Magic & 0xFF);
        _liveChunks--;
        _liveChunkBytes -= (long)capacity + MemoryChunk.HeaderSize;
    }

    // ---- the standard tree, per participant (thread) ----

    [ThreadStatic] private static MemoryContext? t_top;
    [ThreadStatic] private static MemoryContext? t_error;
    [ThreadStatic] private static MemoryContext? t_cache;
    [ThreadStatic] private static MemoryContext? t_message;
    [ThreadStatic] private static MemoryContext? t_topTransaction;
    [ThreadStatic] private static MemoryContext? t_current;

    /// <summary>MemoryContextInit: TopMemoryContext and ErrorContext, then the usual children, for this thread.</summary>
    private static MemoryContext InitStandardTree()
    {
        var top = AllocSetContext.Create(null, "TopMemoryContext", AllocSetContext.DefaultInitBlockSize, AllocSetContext.DefaultMaxBlockSize);
        // ErrorContext keeps 8 KiB in its keeper block so error reporting can work when memory is short.
        t_error = AllocSetContext.Create(top, "ErrorContext", 8 * 1024, 8 * 1024);
        t_cache = AllocSetContext.Create(top, "CacheMemoryContext", AllocSetContext.DefaultInitBlockSize, AllocSetContext.DefaultMaxBlockSize);
        t_message = AllocSetContext.Create(top, "MessageContext", AllocSetContext.DefaultInitBlockSize, AllocSetContext.DefaultMaxBlockSize);
        t_topTransaction = AllocSetContext.Create(top, "TopTransactionContext", AllocSetContext.DefaultInitBlockSize, AllocSetContext.DefaultMaxBlockSize);
        t_top = top;
        t_current ??= top;
        return top;
    }

    /// <summary>This thread's root context, created with the standard tree on first use.</summary>
    public static MemoryContext TopMemoryContext => t_top is { IsDeleted: false } t ? t : InitStandardTree();
    /// <summary>This thread's root context if it made one (the memory-context log must not make a tree to report it).</summary>
    internal static MemoryContext? TopMemoryContextIfMade => t_top is { IsDeleted: false } t ? t : null;
    /// <summary>The context reserved for error handling, under <see cref="TopMemoryContext"/>.</summary>
    public static MemoryContext ErrorContext { get { _ = TopMemoryContext; return t_error!; } }
    /// <summary>The context for caches that live as long as the process.</summary>
    public static MemoryContext CacheMemoryContext { get { _ = TopMemoryContext; return t_cache!; } }
    /// <summary>The context for the current message (reset per request).</summary>
    public static MemoryContext MessageContext { get { _ = TopMemoryContext; return t_message!; } }
    /// <summary>The context for the current transaction (reset at its end).</summary>
    public static MemoryContext TopTransactionContext { get { _ = TopMemoryContext; return t_topTransaction!; } }

    /// <summary>CurrentMemoryContext of this thread (TopMemoryContext until set).</summary>
    public static MemoryContext CurrentMemoryContext
    {
        get => t_current is { IsDeleted: false } c ? c : (t_current = TopMemoryContext);
        set => t_current = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>MemoryContextSwitchTo: makes <paramref name="context"/> current, returns the previous one.</summary>
    public static MemoryContext SwitchTo(MemoryContext context)
    {
        MemoryContext old = CurrentMemoryContext;
        CurrentMemoryContext = context;
        return old;
    }

    /// <summary>palloc in CurrentMemoryContext.</summary>
    public static void* Palloc(nuint size) => CurrentMemoryContext.Alloc(size);

    /// <summary>Deletes this thread's standard tree (at the participant's exit); the next use makes a new one.</summary>
    public static void DeleteStandardTree()
    {
        t_top?.Delete();
        t_top = t_error = t_cache = t_message = t_topTransaction = t_current = null;
    }
}

/// <summary>MemoryContextCounters: one context's blocks, live chunks, free and total native bytes.</summary>
public readonly record struct MemoryContextCounters(long Blocks, long Chunks, long FreeSpace, long TotalSpace)
{
    /// <summary>The bytes in use: <c>TotalSpace - FreeSpace</c>.</summary>
    public long UsedSpace => TotalSpace - FreeSpace;
}
