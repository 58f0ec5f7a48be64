/*-------------------------------------------------------------------------
 * DsmRegistry.cs
 *   Dynamic shared memory: the cluster's control table and this process's
 *   view of it; creation, attachment, reference counting, pinning and the
 *   removal of segments left behind by a crashed cluster.
 *
 * NOTES
 *   Handles are random non-zero 32-bit numbers, drawn again on a collision
 *   with an existing OS object or a live table entry, as dsm_create does.
 *   The OS object is made first, outside the lock; then a free table slot is
 *   taken under the control LWLock. When none is free the OS object is
 *   removed again and the caller gets an error (or null with NoFail:
 *   DSM_CREATE_NULL_IF_MAXSEGMENTS).
 *
 *   Attach takes a reference under the lock before mapping, so a segment
 *   cannot be removed between the lookup and the map. The last reference
 *   going away (refcount falling to 1, "moribund") removes the OS object
 *   outside the lock and only then frees the slot, so a new segment cannot
 *   reuse the slot while the removal is in flight.
 *
 *   The control LWLock needs a participant. A thread that has joined the
 *   cluster uses its own; any other thread (a worker's command thread)
 *   joins a slot for the length of the operation. During the cluster
 *   detach, when joining is no longer possible, only the ItemsLock spinlock
 *   is taken (see DsmControl.cs).
 *
 *   Detaching at process exit, removing every segment when the main
 *   segment is destroyed, and crash leftovers (the stale table, the data
 *   directory's control file) are in DsmRegistry.Leftovers.cs.
 *
 *   Mirrors src/backend/storage/ipc/dsm.c (dsm_postmaster_startup,
 *   dsm_create, dsm_attach, dsm_detach, dsm_pin_segment,
 *   dsm_unpin_segment).
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Dsm;

/// <summary>Settings of a cluster's dynamic shared memory.</summary>
/// <param name="MaxSegments">Control table slots: most segments alive at once.</param>
/// <param name="Implementation">How segments are made; null: the backend's default (its first).</param>
/// <param name="DataDirectory">Where mmap segments and the crash-cleanup control file live; null: neither.</param>
/// <param name="MainRegionSize">
/// Bytes of the main segment reserved for dynamic segments (min_dynamic_shared_memory), rounded up to 4 KiB pages;
/// 0 (the default): none. Segments are carved from it first, with no OS object and no system call, and made by the OS
/// only when it has no room.
/// </param>
public sealed record DsmOptions(int MaxSegments = 64, DsmImplementation? Implementation = null, string? DataDirectory = null, long MainRegionSize = 0)
{
    /// <summary>Largest <see cref="MainRegionSize"/>: 2^31 - 1 pages of 4 KiB would overflow the page numbers; 64 GiB is far below.</summary>
    public const long MaxMainRegionSize = 64L << 30;

    /// <summary>Longest data directory path, in UTF-8 bytes, the control table records.</summary>
    public const int MaxDataDirectoryBytes = 1024;

    internal void Validate()
    {
        if (MaxSegments < 1 || MaxSegments > 1 << 20)
            throw new ArgumentOutOfRangeException(nameof(MaxSegments), MaxSegments, "between 1 and 1048576 dynamic shared memory segments");
        if (DataDirectory is not null && Encoding.UTF8.GetByteCount(DataDirectory) > MaxDataDirectoryBytes)
            throw new ArgumentOutOfRangeException(nameof(DataDirectory), DataDirectory, $"data directory path longer than {MaxDataDirectoryBytes} bytes");
        if (MainRegionSize < 0 || MainRegionSize > MaxMainRegionSize)
            throw new ArgumentOutOfRangeException(nameof(MainRegionSize), MainRegionSize, $"the main region for dynamic segments is 0 to {MaxMainRegionSize} bytes");
    }
}

/// <summary>Flags of <see cref="DsmSegment.Create"/>.</summary>
[Flags]
public enum DsmCreateFlags
{
    /// <summary>No flag: the segment is created as asked or an exception is thrown.</summary>
    None = 0,
    /// <summary>Return null instead of throwing when the control table is full or the OS has no room.</summary>
    NoFail = 1,
}

/// <summary>The cluster's dynamic shared memory, as this process sees it.</summary>
public sealed unsafe partial class DsmRegistry
{
    /// <summary>Name of the control table in the ShmemIndex.</summary>
    internal const string ShmemName = "PgIpc.DsmControl";

    /// <summary>File under "&lt;dataDir&gt;/pg_dynshmem" that lists the live handles (see file notes).</summary>
    internal const string ControlFileName = "control";

    private const string DynShmemDirectory = "pg_dynshmem";

    private static readonly ConditionalWeakTable<ShmemSegment, DsmRegistry> s_bySegment = new();
    private static readonly Lock s_registryLock = new();

    private readonly ShmemSegment _segment;
    private readonly ProcArray _procs;
    private readonly DsmControlHeader* _header;
    private readonly DsmControlItem* _items;
    private readonly IDsmProvider _provider;
    private readonly List<DsmSegment> _attached = [];

    private DsmRegistry(ShmemSegment segment, ProcArray procs, DsmControlHeader* header, ControlLayout layout)
    {
        _segment = segment;
        _procs = procs;
        _header = header;
        _items = (DsmControlItem*)((byte*)header + sizeof(DsmControlHeader));
        _provider = segment.Platform.Dsm;
        _maxItems = layout.MaxItems;
        Implementation = layout.Implementation;
        DataDirectory = layout.DataDirectory;
        MapMainRegion(new ShmemRegionLayout(layout.MainRegionPages));
    }

    // MaxItems as validated at attach (ValidateControl); every walk of the items is bounded by it, never by the shared copy.
    private readonly int _maxItems;

    /// <summary>How this cluster's segments are made.</summary>
    public DsmImplementation Implementation { get; }

    /// <summary>The cluster's data directory (mmap segments, control file), or null.</summary>
    public string? DataDirectory { get; }

    /// <summary>Control table slots.</summary>
    public int MaxSegments => _maxItems;

    /// <summary>
    /// OS objects of a crashed run removed for this table: those ShmemSegment.Create found through the stale main
    /// segment's table (see RemoveLeftoversOf) plus those the Init which created the table found in the data directory.
    /// </summary>
    public int LeftoversRemoved { get; private set; }

    /// <summary>The main segment this registry lives in.</summary>
    public ShmemSegment Segment => _segment;

    /// <summary>The OS name of a segment of this cluster (for messages and tests).</summary>
    public string OsNameOf(uint handle) => _provider.NameOf(Implementation, handle, DataDirectory);

    /// <summary>
    /// NItems (the high-water mark, shared) clamped to the validated capacity: read under ItemsLock, where nothing may
    /// throw; a value out of range was already reported at attach and is at worst a short or full walk here.
    /// </summary>
    private int UsedItems() => Math.Clamp(_header->NItems, 0, _maxItems);

    /// <summary>Bytes <see cref="Init"/> takes from the main segment.</summary>
    internal static long ShmemSize(DsmOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        long items = Shmem.ShmemSize.Mul(options.MaxSegments, sizeof(DsmControlItem));
        long table = Shmem.ShmemSize.Add(Shmem.ShmemSize.Add(sizeof(DsmControlHeader), items), sizeof(int) + DsmOptions.MaxDataDirectoryBytes);
        int pages = MainRegionPages(options);
        return pages == 0 ? table : Shmem.ShmemSize.Add(BitmapOffset(options.MaxSegments), MainRegionBytes(pages));
    }

    /// <summary>
    /// Finds the control table in <paramref name="segment"/> or creates it (found = false). The creating call also
    /// removes the leftovers of a crashed run recorded in the data directory (see <see cref="LeftoversRemoved"/>).
    /// </summary>
    internal static DsmRegistry Init(ShmemSegment segment, ProcArray procs, DsmOptions options, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(procs);
        long size = ShmemSize(options);
        IDsmProvider provider = segment.Platform.Dsm;
        DsmImplementation kind = options.Implementation ?? provider.Implementations[0];
        if (!provider.Implementations.Contains(kind))
            throw new ArgumentException($"backend {segment.Platform.Name} offers dynamic shared memory implementations {string.Join(", ", provider.Implementations)}, not {kind}", nameof(options));
        if (kind == DsmImplementation.Mmap && string.IsNullOrEmpty(options.DataDirectory))
            throw new ArgumentException("the mmap dynamic shared memory implementation needs a data directory", nameof(options));
        if (options.DataDirectory is not null)
            DataDirectoryCheck.CreateOrCheck(segment.Platform.Files, options.DataDirectory); // ours and private, or created 0700
        lock (s_registryLock)
        {
            if (s_bySegment.TryGetValue(segment, out DsmRegistry? existing))
            {
                found = true;
                return existing;
            }
        }
        ShmemRegion region = segment.InitStruct(ShmemName, size, r =>
        {
            var h = (DsmControlHeader*)r.Pointer;
            h->Lock.Lock.Initialize(BuiltinTranche.DynamicSharedMemoryControl);
            SLock.Init(ref h->ItemsLock);
            h->MaxItems = options.MaxSegments;
            h->NItems = 0;
            h->Implementation = (int)kind;
            byte* dd = r.Pointer + sizeof(DsmControlHeader) + (long)options.MaxSegments * sizeof(DsmControlItem);
            *(int*)dd = options.DataDirectory is null ? 0 : Encoding.UTF8.GetBytes(options.DataDirectory, new Span<byte>(dd + sizeof(int), DsmOptions.MaxDataDirectoryBytes));
            int pages = MainRegionPages(options);
            h->MainRegionPages = pages;
            h->MainRegionFree = pages;
            if (pages > 0)
                new Span<ulong>(r.Pointer + BitmapOffset(options.MaxSegments), BitmapWords(pages)).Clear();
            // Written last; the ShmemIndex's ready state publishes the whole struct.
            h->Magic = DsmControlHeader.MagicValue;
        }, out found);
        var header = (DsmControlHeader*)region.Pointer;
        DsmRegistry reg = Register(new DsmRegistry(segment, procs, header, ValidateControl(header, region, segment.Handle.Id)));
        if (!found)
            reg.LeftoversRemoved = segment.DsmLeftoversRemoved + (reg.DataDirectory is null ? 0 : CleanupUsingControlFile(segment.Platform, reg.DataDirectory));
        if (!found)
            reg.SyncControlFile();
        return reg;
    }

    /// <summary>Opens the control table another process created (a worker's side).</summary>
    internal static DsmRegistry Attach(ShmemSegment segment)
    {
        ArgumentNullException.ThrowIfNull(segment);
        lock (s_registryLock)
        {
            if (s_bySegment.TryGetValue(segment, out DsmRegistry? existing))
                return existing;
        }
        if (!segment.TryFindStruct(ShmemName, out ShmemRegion region))
            throw new PgIpcException($"shared memory segment {segment.Handle.Id} has no dynamic shared memory control table ({ShmemName})");
        var header = (DsmControlHeader*)region.Pointer;
        ControlLayout layout = ValidateControl(header, region, segment.Handle.Id);
        return Register(new DsmRegistry(segment, ProcArray.Attach(segment), header, layout));
    }

    /// <summary>The control table's immutable shape, checked once (<see cref="ValidateControl"/>) and cached.</summary>
    internal readonly record struct ControlLayout(int MaxItems, DsmImplementation Implementation, string? DataDirectory, int NItems, int MainRegionPages);

    /// <summary>
    /// Checks, each read once, what every walk of the table is bounded by: the magic, MaxItems against the structure's
    /// size (the ShmemIndex's, itself checked against the segment), the data directory's length, NItems against
    /// MaxItems, the implementation. Throws <see cref="ShmemCorruptException"/>. Used at attach and before a stale
    /// segment's table is walked (RemoveLeftoversOf).
    /// </summary>
    internal static ControlLayout ValidateControl(DsmControlHeader* h, ShmemRegion region, string segmentId)
    {
        string what = $"DSM control table of segment {segmentId}";
        if (region.Size < sizeof(DsmControlHeader))
            throw new ShmemCorruptException(what, "size", $"{region.Size} bytes cannot hold its {sizeof(DsmControlHeader)}-byte header");
        uint magic = h->Magic;
        if (magic != DsmControlHeader.MagicValue)
            throw new ShmemCorruptException(what, "Magic", $"0x{magic:x8} is not 0x{DsmControlHeader.MagicValue:x8}");
        int max = h->MaxItems;
        long itemsEnd = sizeof(DsmControlHeader) + (long)max * sizeof(DsmControlItem);
        if (max < 1 || max > 1 << 20 || itemsEnd + sizeof(int) > region.Size)
            throw new ShmemCorruptException(what, "MaxItems", $"{max} items of {sizeof(DsmControlItem)} bytes do not fit the structure's {region.Size} bytes");
        byte* dd = (byte*)h + itemsEnd;
        int ddLen = *(int*)dd;
        if (ddLen < 0 || ddLen > DsmOptions.MaxDataDirectoryBytes || itemsEnd + sizeof(int) + ddLen > region.Size)
            throw new ShmemCorruptException(what, "data directory length", $"{ddLen} is not between 0 and {DsmOptions.MaxDataDirectoryBytes} bytes inside the structure's {region.Size} bytes");
        int nItems = h->NItems;
        if (nItems < 0 || nItems > max)
            throw new ShmemCorruptException(what, "NItems", $"{nItems} is not between 0 and MaxItems {max}");
        int impl = h->Implementation;
        if (!Enum.IsDefined((DsmImplementation)impl) || impl == (int)DsmImplementation.MainRegion)
            throw new ShmemCorruptException(what, "Implementation", $"{impl} is not a DsmImplementation a cluster can have");
        int pages = h->MainRegionPages;
        if (pages < 0 || (long)pages * MainRegionPageSize > DsmOptions.MaxMainRegionSize
            || (pages > 0 && BitmapOffset(max) + MainRegionBytes(pages) > region.Size))
            throw new ShmemCorruptException(what, "MainRegionPages", $"{pages} pages of {MainRegionPageSize} bytes do not fit the structure's {region.Size} bytes");
        return new ControlLayout(max, (DsmImplementation)impl, ddLen == 0 ? null : Encoding.UTF8.GetString(dd + sizeof(int), ddLen), nItems, pages);
    }

    private static DsmRegistry Register(DsmRegistry reg)
    {
        lock (s_registryLock)
        {
            if (s_bySegment.TryGetValue(reg._segment, out DsmRegistry? existing))
                return existing;
            s_bySegment.Add(reg._segment, reg);
        }
        reg._segment.RegisterOnDetach(reg.OnClusterDetach);
        return reg;
    }

    // ------------------------------------------------------------------
    // Create / attach / reference counting
    // ------------------------------------------------------------------

    internal DsmSegment? Create(long size, DsmCreateFlags flags)
    {
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, "dynamic shared memory segment size must be positive");
        bool noFail = (flags & DsmCreateFlags.NoFail) != 0;
        if (CreateInMainRegion(size) is { } fromMainRegion)
            return fromMainRegion;
        for (int attempt = 0; attempt < 1000; attempt++)
        {
            uint handle;
            // Even: odd handles are the main region's (DsmRegistry.MainRegion.cs).
            do { handle = BitConverter.ToUInt32(RandomNumberGenerator.GetBytes(4)) & ~1u; } while (handle == 0);

            IMappedSegment? mapping;
            try
            {
                mapping = _provider.Create(Implementation, handle, size, DataDirectory);
            }
            catch (DsmNoSpaceException) when (noFail)
            {
                return null;
            }
            if (mapping is null)
                continue; // name taken: draw another handle

            int slot = -1;
            bool collision = false;
            using (LockControl())
            {
                int n = UsedItems();
                for (int i = 0; i < n; i++)
                {
                    if (_items[i].RefCnt != 0 && _items[i].Handle == handle)
                        collision = true;
                    else if (slot < 0 && _items[i].RefCnt == 0)
                        slot = i;
                }
                if (!collision)
                {
                    if (slot < 0 && n < _maxItems)
                    {
                        slot = n;
                        _header->NItems = n + 1;
                    }
                    if (slot >= 0)
                    {
                        DsmControlItem* it = &_items[slot];
                        it->Handle = handle;
                        it->RefCnt = 2; // 1 for existing, 1 for this mapping
                        it->Size = size;
                        it->Implementation = (int)Implementation;
                        it->Pinned = 0;
                        it->FirstPage = -1;
                        it->PinnedOsHandle = 0;
                        _header->CreatedCount++;
                    }
                }
            }
            if (!collision && slot >= 0)
            {
                try
                {
                    // After the locks: file I/O under the ItemsLock spinlock would leave it held by a throw.
                    SyncControlFile();
                }
                catch (PgIpcException)
                {
                    // Not recorded for crash clean-up: give the segment back rather than leave it unlisted.
                    using (LockControl())
                    {
                        _items[slot].RefCnt = 0;
                        _header->DestroyedCount++;
                    }
                    mapping.Dispose();
                    _provider.Remove(Implementation, handle, DataDirectory);
                    throw;
                }
            }
            if (collision || slot < 0)
            {
                mapping.Dispose();
                _provider.Remove(Implementation, handle, DataDirectory);
                if (collision)
                    continue; // an entry with this handle is still being removed: draw another
                if (noFail)
                    return null;
                throw new DsmSlotsExhaustedException(_maxItems);
            }
            return Track(new DsmSegment(this, mapping, handle, size, Implementation, slot));
        }
        throw new PgIpcException("could not find a free dynamic shared memory handle after 1000 attempts");
    }

    internal DsmSegment Attach(uint handle)
    {
        int slot = -1, firstPage = -1;
        long size = 0;
        DsmImplementation kind = Implementation;
        using (LockControl())
        {
            int n = UsedItems();
            for (int i = 0; i < n; i++)
            {
                // RefCnt 1 is moribund: being removed, no new attachers (as dsm_attach).
                if (_items[i].Handle == handle && _items[i].RefCnt >= 2)
                {
                    slot = i;
                    _items[i].RefCnt++;
                    size = _items[i].Size;
                    kind = (DsmImplementation)_items[i].Implementation;
                    firstPage = _items[i].FirstPage;
                    break;
                }
            }
        }
        if (slot < 0)
            throw new SharedMemoryNotFoundException($"could not attach to dynamic shared memory segment {handle}: it does not exist (destroyed, or never created in this cluster)");
        IMappedSegment mapping;
        try
        {
            if (kind == DsmImplementation.MainRegion)
                return Track(new DsmSegment(this, MapMainItem(slot, handle, size, firstPage), handle, size, kind, slot));
            // The item's fields are shared: an implementation this backend lacks, or a size no segment has, is corrupt.
            if (!_provider.Implementations.Contains(kind) || size <= 0)
                throw new ShmemCorruptException($"DSM control table of segment {_segment.Handle.Id}, item {slot}", !_provider.Implementations.Contains(kind) ? "Implementation" : "Size",
                    $"{(int)kind} / {size} for segment {handle} is not a segment this backend can map");
            mapping = _provider.Attach(kind, handle, DataDirectory);
            if (mapping.Size < size)
                throw new PgIpcException($"dynamic shared memory segment {handle} maps {mapping.Size} bytes; the control table says {size}");
        }
        catch
        {
            DropReference(slot, handle);
            throw;
        }
        return Track(new DsmSegment(this, mapping, handle, size, kind, slot));
    }

    /// <summary>Gives up one reference; the last one removes the OS object (dsm_detach's second half).</summary>
    internal void DropReference(int slot, uint handle)
    {
        bool destroy = false;
        DsmImplementation kind = Implementation;
        uint foundHandle, foundRefCnt;
        using (LockControl())
        {
            DsmControlItem* it = &_items[slot];
            foundHandle = it->Handle;
            foundRefCnt = it->RefCnt;
            // This process holds a reference in this slot (its own bookkeeping): a slot that says otherwise was
            // overwritten. Reported (after the locks) rather than a PANIC: nothing is changed, and the segment's OS
            // object is left for the cluster's destroy or a crash restart.
            if (foundHandle == handle && foundRefCnt >= 2)
            {
                destroy = --it->RefCnt == 1;
                kind = (DsmImplementation)it->Implementation;
            }
        }
        if (foundHandle != handle || foundRefCnt < 2)
            throw new ShmemCorruptException($"DSM control table of segment {_segment.Handle.Id}, item {slot}", "Handle / RefCnt",
                $"{foundHandle} / {foundRefCnt}, but this process holds a reference to segment {handle} there");
        if (destroy)
            RemoveMoribund(slot, handle, kind);
    }

    /// <summary>Removes the OS object of a moribund entry (outside the lock), then frees its slot.</summary>
    private void RemoveMoribund(int slot, uint handle, DsmImplementation kind)
    {
        if (kind == DsmImplementation.MainRegion)
        {
            // No OS object and nothing in the control file: the pages go back with the slot.
            using (LockControl())
            {
                DsmControlItem* it = &_items[slot];
                if (it->FirstPage >= 0 && it->Size > 0 && it->FirstPage + (it->Size + MainRegionPageSize - 1) / MainRegionPageSize <= _mainPages)
                    FreeMainPages(it->FirstPage, it->Size); // a corrupt range leaks its pages rather than free others'
                it->RefCnt = 0;
                _header->DestroyedCount++;
            }
            return;
        }
        try
        {
            _provider.Remove(kind, handle, DataDirectory);
        }
        finally
        {
            using (LockControl())
            {
                _items[slot].RefCnt = 0;
                _header->DestroyedCount++;
            }
            SyncControlFile();
        }
    }

    internal void Pin(int slot, uint handle, DsmImplementation kind)
    {
        // The OS part first, outside the locks (a system call; Windows duplicates a handle into the supervisor).
        // Windows handles are 32-bit values also in 64-bit processes, so the item's int holds one.
        long os = kind == DsmImplementation.MainRegion ? 0 : _provider.PinSegment(kind, handle, _procs.SupervisorPid);
        bool already = false;
        using (LockControl())
        {
            DsmControlItem* it = &_items[slot];
            if (it->Pinned != 0)
                already = true;
            else
            {
                it->Pinned = 1;
                it->RefCnt++;
                it->PinnedOsHandle = (int)os;
            }
        }
        if (already)
        {
            _provider.UnpinSegment(kind, handle, _procs.SupervisorPid, os);
            throw new InvalidOperationException($"dynamic shared memory segment {handle} is already pinned");
        }
    }

    /// <summary>
    /// Drops the extra reference <see cref="DsmSegment.Pin"/> took (dsm_unpin_segment), from any process. The
    /// segment is removed now if nobody maps it.
    /// </summary>
    public void Unpin(uint handle)
    {
        int slot = -1, os = 0;
        bool destroy = false;
        DsmImplementation kind = Implementation;
        using (LockControl())
        {
            for (int i = 0, n = UsedItems(); i < n; i++)
            {
                if (_items[i].Handle == handle && _items[i].RefCnt >= 2)
                {
                    slot = i;
                    break;
                }
            }
            if (slot < 0)
                throw new SharedMemoryNotFoundException($"cannot unpin dynamic shared memory segment {handle}: it does not exist");
            DsmControlItem* it = &_items[slot];
            if (it->Pinned == 0)
                throw new InvalidOperationException($"cannot unpin dynamic shared memory segment {handle}: it is not pinned");
            it->Pinned = 0;
            os = it->PinnedOsHandle;
            it->PinnedOsHandle = 0;
            destroy = --it->RefCnt == 1;
            kind = (DsmImplementation)it->Implementation;
        }
        if (os != 0)
            _provider.UnpinSegment(kind, handle, _procs.SupervisorPid, os); // before the removal: the section's last handle may be this one
        if (destroy)
            RemoveMoribund(slot, handle, kind);
    }

    /// <summary>Reference count of <paramref name="handle"/> in the control table (0 when absent).</summary>
    public int ReferenceCount(uint handle)
    {
        using (LockControl())
        {
            for (int i = 0, n = UsedItems(); i < n; i++)
                if (_items[i].Handle == handle && _items[i].RefCnt != 0)
                    return (int)_items[i].RefCnt;
        }
        return 0;
    }

    /// <summary>Whether some process holds the ItemsLock spinlock now (for tests: no path may leave it held).</summary>
    internal bool ItemsLockHeld => SLock.IsHeld(ref _header->ItemsLock);

    /// <summary>Segments alive in the control table.</summary>
    public int LiveSegments()
    {
        int n = 0;
        using (LockControl())
        {
            for (int i = 0, used = UsedItems(); i < used; i++)
                if (_items[i].RefCnt >= 2)
                    n++;
        }
        return n;
    }

    private DsmSegment Track(DsmSegment seg)
    {
        lock (_attached)
            _attached.Add(seg);
        return seg;
    }

    internal void Forget(DsmSegment seg)
    {
        lock (_attached)
            _attached.Remove(seg);
    }

    // ------------------------------------------------------------------
    // The control lock
    // ------------------------------------------------------------------

    private ControlLockScope LockControl()
    {
        Participant? me = Participant.CurrentOrNull;
        Participant? temporary = null;
        if (me is not null && me.ProcArray != _procs)
            throw new InvalidOperationException($"this thread is {me} of another cluster; it cannot use dynamic shared memory of {_segment.Handle.Id}");
        if (me is null && _segment.IsAttached)
            me = temporary = JoinTemporary();
        // me is null only while the main segment is being detached (OnClusterDetach): ItemsLock alone.
        if (me is not null)
        {
            try
            {
                _header->Lock.Lock.Acquire(me, LWLockMode.Exclusive);
            }
            catch
            {
                temporary?.Dispose();
                throw;
            }
        }
        // Held for the scope; released before the LWLock (ControlLockScope.Dispose).
        SLock.Acquire(ref _header->ItemsLock, "DSM control items");
        return new ControlLockScope(_header, me, temporary);
    }

    private Participant JoinTemporary()
    {
        NoFreeProcSlotException? last = null;
        foreach (ProcKind kind in (ReadOnlySpan<ProcKind>)[ProcKind.Auxiliary, ProcKind.Backend, ProcKind.BackgroundWorker])
        {
            try { return _procs.Join(kind); }
            catch (NoFreeProcSlotException ex) { last = ex; }
        }
        throw new PgIpcException("dynamic shared memory: this thread is no participant and no participant slot is free to take the control lock", last);
    }

    /// <summary>Holds ItemsLock, the control LWLock when there is a participant, and a temporary participant, until disposed.</summary>
    private readonly struct ControlLockScope(DsmControlHeader* header, Participant? me, Participant? temporary) : IDisposable
    {
        public void Dispose()
        {
            SLock.Release(ref header->ItemsLock);
            if (me is not null)
                header->Lock.Lock.Release(me);
            temporary?.Dispose();
        }
    }
}
