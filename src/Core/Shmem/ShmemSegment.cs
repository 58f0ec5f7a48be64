/*-------------------------------------------------------------------------
 * ShmemSegment.cs
 *   The main shared memory segment of a cluster: create, attach, carve,
 *   inspect, detach, destroy.
 *
 * NOTES
 *   Create. A cluster is named by a key (like PostgreSQL's data directory).
 *   The backend turns the key's hash into candidate OS ids (SysV tries
 *   successive keys, as PostgreSQL tries successive shmem keys from the
 *   port). For each id we try an exclusive create. If something already
 *   exists there PreExistingSegment.cs says what it is: another cluster's
 *   or not PgIpc's (next id), in use (refused: "pre-existing shared memory
 *   block is still in use by pid N"), or a crashed run's leftover (removed,
 *   and the create retried). The caller may supply an IStaleSegmentHandler
 *   (the cluster layer does): it names further pids the stale segment
 *   records as possible attachers, and removes the other OS objects the
 *   segment records before the segment goes; LeftoversRemoved counts them.
 *   Without one, a stale segment is still removed, its other objects not.
 *   Before the header is looked at, a backend whose creator holds a
 *   creation lock (POSIX shm: PosixSharedMemory.cs) is asked
 *   (ProbeCreation): a live creator still at work means in use whatever the
 *   (maybe still zero) header says; an unlocked object too small for a
 *   header is a creator's that died before writing anything, removed as
 *   stale. CleanupStale asks the same first, so such objects are listed.
 *
 *   Attach. By handle (backend, id, size, cookie): the header's magic,
 *   version, size and cookie must all match, so a forged or stale handle is
 *   refused, and a destroyed segment is reported as such. Every attacher
 *   records its pid in the header's attach table; detach clears it
 *   (ShmemAttachTable.cs). The creator's header writes are
 *   PgShmemHeader.Initialize (ShmemHeader.cs).
 *
 *   Carving. ShmemAlloc is a cache-line-aligned bump allocator under a
 *   spinlock; memory is never returned (a structure lives as long as the
 *   segment). Fresh segments are zero-filled by the OS and memory is never
 *   reused, so every allocation starts zeroed. ShmemInitStruct goes through
 *   the ShmemIndex (see ShmemIndex.cs).
 *
 *   Trust. Everything in the segment but this process's own copies was
 *   written by other processes and may be corrupt. The header's sizes, the
 *   index's offset and capacity and the allocator's free offset are checked
 *   once, when this object is made (PgShmemHeader.Validate), and the index's
 *   place is cached here; lookups check each entry's offset and size
 *   (ShmemIndex.ValidateEntry); the allocator checks the free offset under
 *   its lock and reports afterwards. A bad value is a ShmemCorruptException
 *   naming the structure and the field, raised before anything is read or
 *   written through it. The structures above check their own headers the
 *   same way when they attach (ProcArray, DsmRegistry, ShmToc, ShmMq,
 *   SharedHash) and cache what their hot paths use.
 *
 *   Detach (ShmemSegment.Detach.cs) runs this process's on-detach callbacks
 *   (OnDetachCallbacks.cs) and unmaps, unless a hold keeps the mapping for
 *   threads still inside. Destroy marks the header Destroyed (so a late attacher is
 *   refused even where the OS still lets it map), detaches and removes the
 *   OS object.
 *
 *   Mirrors src/backend/storage/ipc/shmem.c, ipci.c and port/sysv_shmem.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Text;
using PgIpc.Platform;
using PgIpc.Sync;

namespace PgIpc.Shmem;

/// <summary>The main shared memory segment of a cluster, as mapped in this process.</summary>
public sealed unsafe partial class ShmemSegment : IDisposable
{
    /// <summary>Largest cluster key, in UTF-8 bytes.</summary>
    public const int MaxKeyLength = PgShmemHeader.KeyCapacity - 1;

    private readonly IPgIpcPlatform _platform;
    private IMappedSegment? _mapping;
    private readonly byte* _base;
    private int _attachSlot = -1;
    private int _state; // 0 attached, 1 detached, 2 destroyed (this object's view)
    private readonly OnDetachCallbacks _onDetach = new();
    private AggregateException? _detachErrors;

    private ShmemSegment(IPgIpcPlatform platform, IMappedSegment mapping, bool isCreator, string key)
    {
        _platform = platform;
        // Spinlock waiters in this process ask the backend of the segments it maps (Sync/DeadHolder.cs).
        HolderLiveness.Use(platform.Processes);
        _mapping = mapping;
        _base = (byte*)mapping.BaseAddress;
        // Another process's word: checked once here, then only the cached values are used (see the file notes).
        PgShmemHeader.Layout layout = PgShmemHeader.Validate(Header, mapping.Size, mapping.Id);
        LiveMappings.Add(_base, mapping.Size);
        _indexOffset = layout.IndexOffset;
        _indexCapacity = layout.IndexCapacity;
        _indexEnd = layout.IndexEnd;
        IsCreator = isCreator;
        Key = key;
        Handle = new ShmemHandle(platform.Name, mapping.Id, layout.TotalSize, Header->Cookie);
    }

    // The index's place and the first allocatable byte, validated at attach (PgShmemHeader.Validate); immutable.
    private readonly long _indexOffset;
    private readonly int _indexCapacity;
    private readonly long _indexEnd;

    /// <summary>Bytes taken by the header (a whole number of cache lines).</summary>
    internal static long HeaderSize => ShmemSize.CacheLineAlign(sizeof(PgShmemHeader));

    /// <summary>Smallest segment that holds the header and an index of <paramref name="indexCapacity"/> entries.</summary>
    public static long MinimumSize(int indexCapacity = ShmemIndex.DefaultCapacity)
        => ShmemSize.Add(HeaderSize, ShmemSize.CacheLineAlign(ShmemIndex.SizeFor(indexCapacity)));

    /// <summary>The handle another process passes to <see cref="Attach(ShmemHandle, IPgIpcPlatform?)"/>.</summary>
    public ShmemHandle Handle { get; }

    /// <summary>The cluster key this segment was created for.</summary>
    public string Key { get; }

    /// <summary>
    /// OS objects of a crashed run of this cluster that Create's stale-segment handler removed before making this
    /// segment (semaphores, latch FIFOs, DSM segments; not the stale segment itself); 0 without a handler.
    /// </summary>
    public int LeftoversRemoved { get; private set; }

    /// <summary>True when Create removed a stale segment of a crashed run of this cluster before making this one.</summary>
    public bool ReplacedStaleSegment { get; private set; }

    /// <summary>The DSM segments among <see cref="LeftoversRemoved"/> (DsmRegistry reports them).</summary>
    internal int DsmLeftoversRemoved { get; private set; }

    /// <summary>True in the process (object) that created the segment.</summary>
    public bool IsCreator { get; }

    /// <summary>The backend that maps this segment.</summary>
    public IPgIpcPlatform Platform => _platform;

    /// <summary>Size of the segment in bytes (immutable: read once at attach, so it stays readable after a detach).</summary>
    public long TotalSize => Handle.Size;

    /// <summary>Bytes not yet allocated.</summary>
    public long FreeBytes
    {
        get
        {
            ThrowIfNotAttached();
            return TotalSize - CheckedFreeOffset(Volatile.Read(ref Header->FreeOffset));
        }
    }

    internal byte* Base
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            ThrowIfNotAttached();
            return _base;
        }
    }

    private PgShmemHeader* Header => (PgShmemHeader*)_base;

    /// <summary>The ShmemIndex header; its entries follow it (ShmemIndex.cs).</summary>
    internal ShmemIndexHeader* IndexHeader => (ShmemIndexHeader*)(_base + _indexOffset);

    /// <summary>The index capacity the segment header records (equal to the index header's; validated at attach).</summary>
    internal int IndexCapacity => _indexCapacity;

    /// <summary>The first byte after the index: where allocations begin (validated at attach).</summary>
    internal long AllocatableStart => _indexEnd;

    // ------------------------------------------------------------------
    // Create / attach
    // ------------------------------------------------------------------

    /// <summary>Creates the segment for <paramref name="key"/> sized by <paramref name="sizes"/>.</summary>
    public static ShmemSegment Create(string key, ShmemSizeBuilder sizes, IPgIpcPlatform? platform = null)
        => Create(key, sizes, platform, staleHandler: null);

    /// <summary>
    /// As <see cref="Create(string, ShmemSizeBuilder, IPgIpcPlatform?)"/>; <paramref name="staleHandler"/> (the
    /// cluster layer's) also reads the pids a stale segment records and removes the OS objects it records.
    /// </summary>
    internal static ShmemSegment Create(string key, ShmemSizeBuilder sizes, IPgIpcPlatform? platform, IStaleSegmentHandler? staleHandler,
        SharedMemoryOptions options = default)
    {
        ArgumentNullException.ThrowIfNull(sizes);
        return CreateCore(key, sizes.CalculateShmemSize(), platform, sizes.IndexCapacity, staleHandler, options);
    }

    /// <summary>
    /// Creates the segment for <paramref name="key"/>. A leftover segment of a crashed run (creator dead,
    /// nobody attached) is removed first; a live one is refused with <see cref="SharedMemoryInUseException"/>.
    /// </summary>
    public static ShmemSegment Create(string key, long size, IPgIpcPlatform? platform = null, int indexCapacity = ShmemIndex.DefaultCapacity)
        => CreateCore(key, size, platform, indexCapacity, null, default);

    /// <summary>As <see cref="Create(string, long, IPgIpcPlatform?, int)"/>, with the huge-pages options of the new segment.</summary>
    internal static ShmemSegment Create(string key, long size, SharedMemoryOptions options, IPgIpcPlatform? platform = null)
        => CreateCore(key, size, platform, ShmemIndex.DefaultCapacity, null, options);

    private static ShmemSegment CreateCore(string key, long size, IPgIpcPlatform? platform, int indexCapacity, IStaleSegmentHandler? staleHandler,
        SharedMemoryOptions options)
    {
        options.Validate();
        ValidateKey(key);
        ShmemIndex.ValidateCapacity(indexCapacity);
        long min = MinimumSize(indexCapacity);
        if (size < min)
            throw new ArgumentOutOfRangeException(nameof(size), size, $"shared memory segment size {size} is too small: the header and an index of {indexCapacity} entries need {min} bytes");
        platform ??= PgIpcPlatform.Current;
        ISharedMemoryProvider shm = platform.SharedMemory;
        ulong keyHash = HashKey(key);

        var leftovers = new PreExistingSegment.Leftovers();
        SharedMemoryNotAccessibleException? notOurs = null;
        string? unknownLayout = null;
        foreach (string id in shm.CandidateIds(keyHash))
        {
            for (int attempt = 0; attempt < 5; attempt++)
            {
                IMappedSegment? mapping = shm.TryCreate(id, size, options);
                if (mapping is not null)
                {
                    ShmemSegment seg = InitializeNew(platform, mapping, key, keyHash, size, indexCapacity);
                    seg.LeftoversRemoved = leftovers.All;
                    seg.ReplacedStaleSegment = leftovers.StaleSegments > 0;
                    seg.DsmLeftoversRemoved = leftovers.Dsm;
                    return seg;
                }

                // A backend with a creation lock (POSIX shm) knows first whether a live creator is still at work (its
                // header may still be zero: never judge that stale) or one died before writing anything.
                SegmentCreation creation = shm.ProbeCreation(id, HeaderSize, removeAbandoned: true);
                if (creation == SegmentCreation.InProgress)
                    throw new SharedMemoryInUseException(id, 0, 0);
                if (creation == SegmentCreation.Abandoned)
                {
                    leftovers.StaleSegments++;
                    continue;
                }

                PreExistingSegment.Verdict verdict;
                try
                {
                    verdict = PreExistingSegment.Examine(platform, id, keyHash, staleHandler, leftovers, out int pid0, out long attached0, out string? damage);
                    if (verdict == PreExistingSegment.Verdict.UnknownLayout)
                    {
                        // Not judged and not touched: it may be another build's live cluster. The next id, if any.
                        unknownLayout = $"shared memory segment {id} is a PgIpc segment of {damage}; remove it with the build that made it or by hand";
                        goto nextId;
                    }
                    if (verdict == PreExistingSegment.Verdict.InUse)
                        throw new SharedMemoryInUseException(id, pid0, attached0);
                }
                catch (SharedMemoryNotAccessibleException ex)
                {
                    // Another user's object we may not read: not ours, as sysv_shmem.c judges EACCES; next id.
                    notOurs = ex;
                    goto nextId;
                }
                if (verdict == PreExistingSegment.Verdict.Foreign)
                    goto nextId;
                if (verdict == PreExistingSegment.Verdict.Stale && shm.Remove(id))
                    leftovers.StaleSegments++;
                // Vanished or removed: try the same id again.
            }
            throw new PgIpcException($"could not create shared memory segment {id} for \"{key}\": it kept reappearing (another process is creating the same cluster)");
        nextId:;
        }
        if (notOurs is not null)
            throw notOurs; // the last candidate another user's (POSIX has only one): name it and its owner
        if (unknownLayout is not null)
            throw new PgIpcException($"could not create shared memory segment for \"{key}\": {unknownLayout}");
        throw new PgIpcException($"could not create shared memory segment for \"{key}\": every candidate id is taken by segments that are not this cluster's");
    }

    /// <summary>Attaches to the segment a handle names (from another process).</summary>
    public static ShmemSegment Attach(string handle) => Attach(ShmemHandle.Parse(handle));

    /// <summary>Attaches to the segment a handle names (from another process).</summary>
    public static ShmemSegment Attach(ShmemHandle handle, IPgIpcPlatform? platform = null)
    {
        if (handle.Backend is null || handle.Id is null)
            throw new InvalidShmemHandleException("shared memory handle is empty");
        platform ??= PgIpcPlatform.Get(handle.Backend);
        if (platform.Name != handle.Backend)
            throw new InvalidShmemHandleException($"handle is for backend \"{handle.Backend}\", not \"{platform.Name}\"");
        ISharedMemoryProvider shm = platform.SharedMemory;

        SegmentOsStatus status = shm.QueryStatus(handle.Id);
        if (!status.Exists)
            throw new SharedMemoryNotFoundException($"shared memory segment {handle.Id} does not exist: it was destroyed or never created");
        if (status.MarkedForRemoval)
            throw new SharedMemoryNotFoundException($"shared memory segment {handle.Id} has been destroyed");

        IMappedSegment mapping = shm.Attach(handle.Id);
        try
        {
            PgShmemHeader* h = (PgShmemHeader*)mapping.BaseAddress;
            if (mapping.Size < sizeof(PgShmemHeader) || h->Magic != PgShmemHeader.MagicValue)
                throw new InvalidShmemHandleException($"shared memory segment {handle.Id} is not a PgIpc segment (bad magic)");
            if (h->LayoutVersion != PgShmemHeader.CurrentLayoutVersion)
                throw new InvalidShmemHandleException($"shared memory segment {handle.Id} has layout version {h->LayoutVersion}; this build understands {PgShmemHeader.CurrentLayoutVersion}");
            if (h->Cookie != handle.Cookie)
                throw new InvalidShmemHandleException($"handle cookie {handle.Cookie:x16} does not match segment {handle.Id}: the handle is forged or stale");
            if (h->TotalSize != handle.Size || mapping.Size < handle.Size)
                throw new InvalidShmemHandleException($"handle says {handle.Size} bytes but segment {handle.Id} is {h->TotalSize} bytes (mapped {mapping.Size})");
            WaitUntilReady(platform, h, handle.Id);
            string key = ReadKey(h);
            var seg = new ShmemSegment(platform, mapping, isCreator: false, key);
            seg.RegisterAttach();
            return seg;
        }
        catch
        {
            mapping.Dispose();
            throw;
        }
    }

    /// <summary>Attaches to the live segment of cluster <paramref name="key"/> without a handle (a process not started by the supervisor).</summary>
    public static ShmemSegment AttachByKey(string key, IPgIpcPlatform? platform = null)
    {
        ShmemHandle? h = Find(key, platform);
        if (h is null)
            throw new SharedMemoryNotFoundException($"no shared memory segment exists for cluster \"{key}\"");
        return Attach(h.Value, platform);
    }

    /// <summary>The handle of the live segment of cluster <paramref name="key"/>, or null.</summary>
    public static ShmemHandle? Find(string key, IPgIpcPlatform? platform = null)
    {
        ValidateKey(key);
        platform ??= PgIpcPlatform.Current;
        ISharedMemoryProvider shm = platform.SharedMemory;
        ulong keyHash = HashKey(key);
        foreach (string id in shm.CandidateIds(keyHash))
        {
            IMappedSegment m;
            try
            {
                SegmentOsStatus st = shm.QueryStatus(id);
                // A gap does not end the search: an earlier candidate may have been destroyed since.
                if (!st.Exists || st.MarkedForRemoval)
                    continue;
                m = shm.Attach(id);
            }
            catch (SharedMemoryNotFoundException) { continue; }
            catch (SharedMemoryNotAccessibleException) { continue; } // another user's: not this cluster's
            using (m)
            {
                PgShmemHeader* h = (PgShmemHeader*)m.BaseAddress;
                if (m.Size < sizeof(PgShmemHeader) || h->Magic != PgShmemHeader.MagicValue || h->KeyHash != keyHash)
                    continue;
                if (Volatile.Read(ref h->State) != (int)ShmemState.Ready)
                    continue;
                return new ShmemHandle(platform.Name, m.Id, h->TotalSize, h->Cookie);
            }
        }
        return null;
    }

    private static ShmemSegment InitializeNew(IPgIpcPlatform platform, IMappedSegment mapping, string key, ulong keyHash, long size, int indexCapacity)
    {
        try
        {
            PgShmemHeader* h = (PgShmemHeader*)mapping.BaseAddress;
            PgShmemHeader.Initialize(h, platform.Processes.CurrentProcessId, key, keyHash, size, HeaderSize, indexCapacity);

            var seg = new ShmemSegment(platform, mapping, isCreator: true, key);
            seg.RegisterAttach();
            // Publish: every header field above is written before State becomes Ready.
            // Pairs with the acquire load in WaitUntilReady / Find.
            Volatile.Write(ref h->State, (int)ShmemState.Ready);
            // From here on the header (creator pid, state) answers "in use?"; the backend's creation lock goes.
            mapping.CreationComplete();
            return seg;
        }
        catch
        {
            string id = mapping.Id;
            mapping.Dispose();
            platform.SharedMemory.Remove(id);
            throw;
        }
    }

    /// <summary>A read-only view over a stale segment's mapping, owned by PreExistingSegment (forget it with <see cref="ReleaseView"/>).</summary>
    internal static ShmemSegment StaleView(IPgIpcPlatform platform, IMappedSegment mapping)
        => new(platform, mapping, isCreator: false, ReadKey((PgShmemHeader*)mapping.BaseAddress));

    /// <summary>A view made by <see cref="StaleView"/> over a mapping it does not own: forget it without unmapping.</summary>
    internal void ReleaseView()
    {
        _state = 1;
        LiveMappings.Remove(_base);
        _mapping = null;
    }

    private static void WaitUntilReady(IPgIpcPlatform platform, PgShmemHeader* h, string id)
    {
        long deadline = Environment.TickCount64 + 30_000;
        while (true)
        {
            // Acquire; pairs with the release store of Ready in InitializeNew and of Destroyed in Destroy.
            int state = Volatile.Read(ref h->State);
            if (state == (int)ShmemState.Ready)
                return;
            if (state == (int)ShmemState.Destroyed)
                throw new SharedMemoryNotFoundException($"shared memory segment {id} has been destroyed");
            // Gone only: an unreaped zombie creator is waited for (up to the deadline) as kill(pid, 0) sees it.
            if (platform.Processes.GetLiveness(h->CreatorPid) == ProcessLiveness.Gone)
                throw new SharedMemoryNotFoundException($"shared memory segment {id} was never finished: its creator pid {h->CreatorPid} died while initialising it");
            if (Environment.TickCount64 > deadline)
                throw new PgIpcException($"shared memory segment {id} is still being initialised by pid {h->CreatorPid} after 30 s");
            Thread.Sleep(1);
        }
    }

    private void RegisterAttach()
    {
        _attachSlot = ShmemAttachTable.Register(Header, _platform.Processes, _platform.Processes.CurrentProcessId);
        if (_attachSlot < 0)
            throw new PgIpcException($"too many attachments to shared memory segment {Handle.Id}: all {PgShmemHeader.AttachTableCapacity} attach slots hold live processes");
    }

    private void UnregisterAttach()
    {
        if (_attachSlot < 0)
            return;
        ShmemAttachTable.Unregister(Header, _attachSlot, _platform.Processes.CurrentProcessId);
        _attachSlot = -1;
    }

    // ------------------------------------------------------------------
    // Allocation
    // ------------------------------------------------------------------

    /// <summary>Allocates <paramref name="size"/> anonymous bytes (ShmemAlloc); throws when the segment is full.</summary>
    public ShmemRegion Alloc(long size, string what = "anonymous allocation")
    {
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, $"shared memory request for {what} must be positive");
        long offset = AllocRaw(size, anonymous: true, out long available);
        if (offset == CorruptFreeOffset)
            ThrowCorruptFreeOffset();
        if (offset < 0)
            throw new OutOfSharedMemoryException(what, size, available);
        return new ShmemRegion(_base + offset, offset, size);
    }

    /// <summary>As <see cref="Alloc"/> but returns false instead of throwing when the segment is full (ShmemAllocNoError).</summary>
    public bool TryAlloc(long size, out ShmemRegion region)
    {
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, "shared memory request must be positive");
        long offset = AllocRaw(size, anonymous: true, out _);
        if (offset == CorruptFreeOffset)
            ThrowCorruptFreeOffset();
        region = offset < 0 ? default : new ShmemRegion(_base + offset, offset, size);
        return offset >= 0;
    }

    /// <summary>What <see cref="AllocAligned"/> returns when the free offset it found is outside the segment.</summary>
    internal const long CorruptFreeOffset = -2;

    /// <summary>Bump allocation under AllocLock. Returns -1 (and what is left) when there is no room, <see cref="CorruptFreeOffset"/> when the free offset is corrupt; never throws while holding the lock.</summary>
    internal long AllocRaw(long size, bool anonymous, out long available)
    {
        ThrowIfNotAttached();
        return AllocAligned(AllocatedSizeOf(size), anonymous, out available);
    }

    /// <summary>
    /// What a request of <paramref name="size"/> (positive) really takes: rounded up to a cache line; long.MaxValue,
    /// which no segment has, when the rounding overflows. Never throws: computed before the allocation's spinlocks.
    /// </summary>
    internal static long AllocatedSizeOf(long size)
        => size > long.MaxValue - (ShmemSize.CacheLineSize - 1) ? long.MaxValue : ShmemSize.CacheLineAlign(size);

    /// <summary>
    /// The bump under AllocLock, for <paramref name="aligned"/> from <see cref="AllocatedSizeOf"/>, in a segment the
    /// caller knows is attached. Throws nothing, so ShmemIndex calls it under its own spinlock. The free offset is
    /// shared (another process may have scribbled on it): one outside [index end, size] returns
    /// <see cref="CorruptFreeOffset"/> and changes nothing; the caller throws after its locks.
    /// </summary>
    internal long AllocAligned(long aligned, bool anonymous, out long available)
    {
        PgShmemHeader* h = Header;
        SLock.Acquire(ref h->AllocLock.Value, "ShmemAlloc");
        long free = h->FreeOffset;
        if (free < _indexEnd || free > TotalSize)
        {
            SLock.Release(ref h->AllocLock.Value);
            available = 0;
            return CorruptFreeOffset;
        }
        available = TotalSize - free;
        if (aligned > available)
        {
            SLock.Release(ref h->AllocLock.Value);
            return -1;
        }
        h->FreeOffset = free + aligned;
        if (anonymous)
        {
            h->AnonymousBytes += aligned;
            h->AnonymousCount++;
        }
        SLock.Release(ref h->AllocLock.Value);
        return free;
    }

    // ------------------------------------------------------------------
    // Named structures (ShmemInitStruct)
    // ------------------------------------------------------------------

    /// <summary>
    /// PostgreSQL's ShmemInitStruct: finds the structure called <paramref name="name"/> (found = true) or
    /// allocates it zero-filled (found = false; the caller initialises it). Safe when initialisation
    /// happens before other processes look the name up; otherwise use the overload with an initialiser.
    /// </summary>
    public ShmemRegion InitStruct(string name, long size, out bool found)
        => InitStructCore(name, size, null, out found);

    /// <summary>
    /// Finds or creates the structure called <paramref name="name"/>. The first caller runs
    /// <paramref name="initializer"/> before anyone else can see the structure; concurrent callers
    /// (in any process) wait for it to finish.
    /// </summary>
    public ShmemRegion InitStruct(string name, long size, ShmemInitializer initializer, out bool found)
    {
        ArgumentNullException.ThrowIfNull(initializer);
        return InitStructCore(name, size, initializer, out found);
    }

    /// <summary>Typed ShmemInitStruct for a fixed-size shared struct.</summary>
    public ref T InitStruct<T>(string name, out bool found) where T : unmanaged
        => ref InitStructCore(name, sizeof(T), null, out found).As<T>();

    /// <summary>Looks up an existing named structure without creating it.</summary>
    public bool TryFindStruct(string name, out ShmemRegion region)
    {
        ThrowIfNotAttached();
        return ShmemIndex.TryFind(this, name, waitReady: true, out region);
    }

    /// <summary>
    /// Looks up a named structure whose initialisation finished, without waiting (a stale segment's leftovers: an
    /// entry still Initializing there belongs to a dead process).
    /// </summary>
    internal bool TryFindReadyStruct(string name, out ShmemRegion region)
    {
        ThrowIfNotAttached();
        return ShmemIndex.TryFind(this, name, waitReady: false, out region);
    }

    private ShmemRegion InitStructCore(string name, long size, ShmemInitializer? initializer, out bool found)
    {
        ThrowIfNotAttached();
        return ShmemIndex.InitStruct(this, name, size, initializer, out found);
    }

    // ------------------------------------------------------------------
    // Inspection
    // ------------------------------------------------------------------

    /// <summary>
    /// The allocations view (pg_shmem_allocations): one row per named structure in offset order, one
    /// "&lt;anonymous&gt;" row (header, index and unnamed allocations; offset -1) and one free row (name null).
    /// </summary>
    public IReadOnlyList<ShmemAllocation> GetAllocations()
    {
        ThrowIfNotAttached();
        List<ShmemAllocation> rows = ShmemIndex.NamedAllocations(this);
        PgShmemHeader* h = Header;
        SLock.Acquire(ref h->AllocLock.Value, "ShmemAlloc");
        long anon = h->AnonymousBytes;
        long free = h->FreeOffset;
        SLock.Release(ref h->AllocLock.Value);
        free = CheckedFreeOffset(free);
        rows.Add(new ShmemAllocation("<anonymous>", -1, anon, anon));
        rows.Add(new ShmemAllocation(null, free, TotalSize - free, TotalSize - free));
        return rows;
    }

    /// <summary>Header fields and live counts.</summary>
    public ShmemSegmentInfo GetInfo()
    {
        ThrowIfNotAttached();
        PgShmemHeader* h = Header;
        return new ShmemSegmentInfo(
            _platform.Name, Handle.Id, Key, h->LayoutVersion, h->CreatorPid,
            CreationTime(h->CreationTimeUnixMs), TotalSize,
            CheckedFreeOffset(Volatile.Read(ref h->FreeOffset)), (ShmemState)Volatile.Read(ref h->State),
            Volatile.Read(ref IndexHeader->Count), _indexCapacity, AttachedProcessCount(), _mapping!.HugePages)
        {
            PageSize = _mapping.PageSize,
        };
    }

    /// <summary>The creation time the header records; a value no clock gives (another process's scribble) reads as the epoch.</summary>
    private static DateTimeOffset CreationTime(long unixMs)
        => unixMs >= 0 && unixMs <= DateTimeOffset.MaxValue.ToUnixTimeMilliseconds()
            ? DateTimeOffset.FromUnixTimeMilliseconds(unixMs) : DateTimeOffset.UnixEpoch;

    /// <summary>
    /// Processes attached now: the OS's count where it keeps one (SysV nattch), else the live pids in the
    /// header's attach table. A process killed without detaching is not counted.
    /// </summary>
    public long AttachedProcessCount()
    {
        ThrowIfNotAttached();
        SegmentOsStatus st = _platform.SharedMemory.QueryStatus(Handle.Id);
        if (st.AttachCount >= 0)
            return st.AttachCount;
        int first = 0;
        return ShmemAttachTable.CountAlive(_platform.Processes, Header, ref first);
    }

    /// <summary>The pids in the attach table that are not gone, an unreaped zombie included (a pid appears once per attachment).</summary>
    public IReadOnlyList<int> AttachedPids()
    {
        ThrowIfNotAttached();
        return ShmemAttachTable.PidsNotGone(_platform.Processes, Header);
    }

    // ------------------------------------------------------------------
    // Keys
    // ------------------------------------------------------------------

    /// <summary>Checks a cluster key: 1 to 63 UTF-8 bytes, no NUL or control characters.</summary>
    internal static void ValidateKey(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (key.Length == 0)
            throw new ArgumentException("cluster key cannot be empty", nameof(key));
        if (key.Length > MaxKeyLength * 3 || Encoding.UTF8.GetByteCount(key) > MaxKeyLength)
            throw new ArgumentException($"cluster key is longer than {MaxKeyLength} bytes in UTF-8", nameof(key));
        foreach (char c in key)
            if (char.IsControl(c))
                throw new ArgumentException("cluster key cannot contain control characters", nameof(key));
    }

    /// <summary>64-bit FNV-1a of the key's UTF-8 bytes; the same in every process.</summary>
    internal static ulong HashKey(string key)
    {
        ulong h = 14695981039346656037UL;
        foreach (byte b in Encoding.UTF8.GetBytes(key))
            h = (h ^ b) * 1099511628211UL;
        return h;
    }

    private static string ReadKey(PgShmemHeader* h) => PgShmemHeader.ReadKey(h);
}
