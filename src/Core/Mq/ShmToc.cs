/*-------------------------------------------------------------------------
 * ShmToc.cs
 *   A table of contents at the start of a shared memory region: named
 *   (64-bit key) chunks carved out of the rest of the region.
 *
 * NOTES
 *   Layout of a region managed by a toc:
 *
 *     +--------+---------+---------+-- ... --+-----------+---------+
 *     | header | entry 0 | entry 1 |  free   |  chunk 1  | chunk 0 |
 *     +--------+---------+---------+-- ... --+-----------+---------+
 *     0        32        48                  ^ end - allocated      end
 *
 *   Entries grow from the front, chunks from the back (each rounded up to a
 *   cache line, our "buffer alignment"); the region is full when the two
 *   would meet. Nothing is ever freed: a toc lives as long as its region,
 *   which is how a parallel query's DSM segment is used (size it with the
 *   estimator, create, allocate + insert everything, hand the segment's
 *   handle to the workers, who attach and look things up).
 *
 *   Every position is an offset from the toc's first byte, never an address:
 *   processes map the region at different addresses.
 *
 *   Concurrency. Allocate and Insert take the toc's spinlock. Lookup takes
 *   no lock: Insert writes the entry first and then release-stores the new
 *   entry count; Lookup acquire-loads the count and only then reads entries
 *   below it, so a reader never sees a half-written entry (the same
 *   publish-last pairing as shm_toc_insert's write barrier and
 *   shm_toc_lookup's read barrier). Keys are not checked for uniqueness on
 *   insert (the first match wins on lookup), as in PostgreSQL.
 *
 *   Trust. The region may be mapped by processes that scribble on it:
 *   TotalBytes is checked at Create / Attach and cached; the entry count
 *   and the chunk bytes are checked at Attach and wherever they are used
 *   (under the spinlock only computed, reported after it); an entry's
 *   offset is checked when a lookup returns it. A bad value is a
 *   ShmemCorruptException naming the field.
 *
 *   Mirrors src/backend/storage/ipc/shm_toc.c and include/storage/shm_toc.h.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Mq;

/// <summary>
/// The toc header, at offset 0 of its region. Layout (bytes) and protectors:
/// <code>
///   0  Magic           immutable after Create (written last there, with a release store)
///   8  Mutex           the spinlock word (SLock)
///  12  NumEntries      written under Mutex with a release store after the entry it counts; read lock-free with
///                      an acquire load (Lookup)
///  16  TotalBytes      immutable after Create (usable size: the region's size rounded down to the alignment)
///  24  AllocatedBytes  Mutex (bytes of chunks carved from the back)
///  32  entries follow  (ShmTocEntry[NumEntries])
/// </code>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential)]
internal struct ShmTocHeader
{
    public ulong Magic;
    public int Mutex;
    public int NumEntries;
    public long TotalBytes;
    public long AllocatedBytes;
}

/// <summary>
/// One toc entry. Layout: 0 Key (ulong), 8 Offset (long, from the toc's first byte). Written once under the toc's
/// Mutex before the entry count that covers it is published; immutable afterwards.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential)]
internal struct ShmTocEntry
{
    public ulong Key;
    public long Offset;
}

/// <summary>A chunk handed out by <see cref="ShmToc.Allocate"/>: its offset from the toc and its size. Process-local.</summary>
public readonly unsafe struct ShmTocChunk
{
    private readonly byte* _pointer;

    internal ShmTocChunk(byte* pointer, long offset, long size)
    {
        _pointer = pointer;
        Offset = offset;
        Size = size;
    }

    /// <summary>Bytes from the toc's first byte (what to insert under a key).</summary>
    public long Offset { get; }

    /// <summary>Usable size (the requested size; the chunk may be padded beyond it).</summary>
    public long Size { get; }

    internal byte* Pointer => _pointer;

    /// <summary>The chunk's bytes.</summary>
    public Span<byte> AsSpan()
    {
        if (Size > int.MaxValue)
            throw new InvalidOperationException($"toc chunk of {Size} bytes is too large for a Span");
        return new Span<byte>(_pointer, (int)Size);
    }

    /// <summary>The chunk's start as a <typeparamref name="T"/>.</summary>
    public ref T As<T>() where T : unmanaged
    {
        if (Size < sizeof(T))
            throw new InvalidOperationException($"toc chunk of {Size} bytes is smaller than {typeof(T).Name} ({sizeof(T)} bytes)");
        return ref Unsafe.AsRef<T>(_pointer);
    }
}

/// <summary>
/// Sizes a toc and its chunks before the region is made (shm_toc_estimator). Process-local; use as a local:
/// <c>var e = ShmTocEstimator.InitializeEstimator(); e.EstimateChunk(n); e.EstimateKeys(1); long size = e.Estimate();</c>
/// Every add is overflow-checked.
/// </summary>
public struct ShmTocEstimator
{
    /// <summary>Bytes for chunks, each rounded up to <see cref="ShmToc.Alignment"/>.</summary>
    public long SpaceForChunks { get; private set; }

    /// <summary>Entries the toc will hold.</summary>
    public long NumberOfKeys { get; private set; }

    /// <summary>A fresh estimator (shm_toc_initialize_estimator).</summary>
    public static ShmTocEstimator InitializeEstimator() => default;

    /// <summary>Makes room for one chunk of <paramref name="size"/> bytes (shm_toc_estimate_chunk).</summary>
    public void EstimateChunk(long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        SpaceForChunks = ShmemSize.Add(SpaceForChunks, ShmemSize.AlignUp(size, ShmToc.Alignment));
    }

    /// <summary>Makes room for <paramref name="count"/> more entries (shm_toc_estimate_keys).</summary>
    public void EstimateKeys(long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        NumberOfKeys = ShmemSize.Add(NumberOfKeys, count);
    }

    /// <summary>Bytes the region needs: header, entries and chunks, rounded up to the alignment (shm_toc_estimate).</summary>
    public readonly long Estimate()
    {
        long size = ShmToc.HeaderSize;
        size = ShmemSize.Add(size, ShmemSize.Mul(NumberOfKeys, ShmToc.EntrySize));
        size = ShmemSize.Add(size, SpaceForChunks);
        return ShmemSize.AlignUp(size, ShmToc.Alignment);
    }
}

/// <summary>
/// This process's view of a table of contents at the start of a shared memory region. Valid while the region
/// stays mapped in this process. Thread-safe (the shared state is protected as described in the file banner).
/// </summary>
public sealed unsafe class ShmToc
{
    /// <summary>Alignment of every chunk (a cache line; PostgreSQL's BUFFERALIGN).</summary>
    public const int Alignment = ShmemSize.CacheLineSize;

    /// <summary>Bytes of the header before the first entry.</summary>
    internal static int HeaderSize => sizeof(ShmTocHeader);

    /// <summary>Bytes per entry.</summary>
    internal static int EntrySize => sizeof(ShmTocEntry);

    private readonly byte* _base;
    private readonly long _regionSize;
    // TotalBytes as checked at Create / Attach; the shared copy is never read again.
    private readonly long _totalBytes;
    // Most entries that fit between the header and the end of the region: bounds every walk of the entries.
    private readonly int _maxEntries;

    private ShmToc(byte* address, long regionSize, long totalBytes)
    {
        _base = address;
        _regionSize = regionSize;
        _totalBytes = totalBytes;
        _maxEntries = (int)Math.Min(int.MaxValue, (totalBytes - sizeof(ShmTocHeader)) / sizeof(ShmTocEntry));
    }

    private ShmTocHeader* Header => (ShmTocHeader*)_base;
    private ShmTocEntry* Entries => (ShmTocEntry*)(_base + sizeof(ShmTocHeader));

    /// <summary>The magic number the toc was created with.</summary>
    public ulong Magic => Header->Magic;

    /// <summary>Usable bytes (the region rounded down to <see cref="Alignment"/>).</summary>
    public long TotalBytes => _totalBytes;

    /// <summary>Entries inserted so far (acquire load).</summary>
    public int Count => Volatile.Read(ref Header->NumEntries);

    /// <summary>Bytes still free between the entries and the chunks, at this instant.</summary>
    public long FreeBytes
    {
        get
        {
            ShmTocHeader* h = Header;
            SLock.Acquire(ref h->Mutex, "ShmToc.FreeBytes");
            long allocated = h->AllocatedBytes;
            int n = h->NumEntries;
            SLock.Release(ref h->Mutex);
            CheckCounts(n, allocated);
            return _totalBytes - allocated - EntriesEnd(n);
        }
    }

    // ------------------------------------------------------------------
    // Create / attach
    // ------------------------------------------------------------------

    /// <summary>Creates a toc over all of <paramref name="region"/> (shm_toc_create).</summary>
    public static ShmToc Create(ulong magic, ShmemRegion region) => Create(magic, region.Pointer, region.Size);

    /// <summary>Attaches to the toc at the start of <paramref name="region"/> (shm_toc_attach).</summary>
    public static ShmToc Attach(ulong magic, ShmemRegion region) => Attach(magic, region.Pointer, region.Size);

    /// <summary>Creates a toc over <paramref name="size"/> bytes at <paramref name="address"/> (a DSM segment's mapping).</summary>
    internal static ShmToc Create(ulong magic, byte* address, long size)
    {
        CheckRegion(address, size);
        long total = size & ~((long)Alignment - 1);
        if (total < sizeof(ShmTocHeader))
            throw new ArgumentOutOfRangeException(nameof(size), size, $"a toc needs at least {Alignment} bytes");
        ShmTocHeader* h = (ShmTocHeader*)address;
        SLock.Init(ref h->Mutex);
        h->TotalBytes = total;
        h->AllocatedBytes = 0;
        h->NumEntries = 0;
        // Publish last: an attacher that sees the magic sees the fields above (pairs with the acquire load in Attach).
        Volatile.Write(ref h->Magic, magic);
        return new ShmToc(address, size, total);
    }

    /// <summary>Attaches to the toc at <paramref name="address"/>; the magic must match.</summary>
    internal static ShmToc Attach(ulong magic, byte* address, long size)
    {
        CheckRegion(address, size);
        if (size < sizeof(ShmTocHeader))
            throw new InvalidShmTocException($"region of {size} bytes is too small to hold a shared memory table of contents");
        ShmTocHeader* h = (ShmTocHeader*)address;
        // Acquire; pairs with the release store of Magic in Create.
        ulong found = Volatile.Read(ref h->Magic);
        if (found != magic)
            throw new InvalidShmTocException(magic, found, size);
        long total = h->TotalBytes; // read once: the value checked is the value used
        if (total > size || total < sizeof(ShmTocHeader))
            throw new ShmemCorruptException("shm_toc header", "TotalBytes", $"{total} is not between its {sizeof(ShmTocHeader)}-byte header and the region's {size} bytes");
        var toc = new ShmToc(address, size, total);
        // The counts are checked once here too (they change later, under the toc's spinlock, and are checked again
        // where they are used: Allocate, Insert, Lookup).
        toc.CheckCounts(Volatile.Read(ref h->NumEntries), Volatile.Read(ref h->AllocatedBytes));
        return toc;
    }

    private static void CheckRegion(byte* address, long size)
    {
        if (address == null)
            throw new ArgumentNullException(nameof(address), "toc region has no address");
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        if (((nint)address & 7) != 0)
            throw new ArgumentException("a toc must start at an 8-byte aligned address", nameof(address));
    }

    // ------------------------------------------------------------------
    // Allocate / insert / lookup
    // ------------------------------------------------------------------

    /// <summary>
    /// Carves <paramref name="size"/> bytes from the back of the region (shm_toc_allocate); the chunk is aligned to
    /// <see cref="Alignment"/> relative to the toc. Throws <see cref="ShmTocOutOfSpaceException"/> when it would
    /// meet the entries.
    /// </summary>
    public ShmTocChunk Allocate(long size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        long rounded = ShmemSize.AlignUp(size, Alignment);
        ShmTocHeader* h = Header;
        SLock.Acquire(ref h->Mutex, "ShmToc.Allocate");
        long total = _totalBytes;
        long allocated = h->AllocatedBytes;
        int n = h->NumEntries;
        long used = EntriesEnd(n) + allocated;
        if (!CountsValid(n, allocated) || rounded > total - used)
        {
            SLock.Release(ref h->Mutex);
            CheckCounts(n, allocated); // after the lock: a corrupt count throws ShmemCorruptException
            throw new ShmTocOutOfSpaceException("chunk", size, total, allocated, n, EntriesEnd(n));
        }
        h->AllocatedBytes = allocated + rounded;
        SLock.Release(ref h->Mutex);
        long offset = total - allocated - rounded;
        return new ShmTocChunk(_base + offset, offset, size);
    }

    /// <summary>Records <paramref name="chunk"/> under <paramref name="key"/> (shm_toc_insert).</summary>
    public void Insert(ulong key, ShmTocChunk chunk) => Insert(key, chunk.Offset);

    /// <summary>
    /// Records <paramref name="offset"/> (bytes from the toc's first byte, inside the region) under
    /// <paramref name="key"/>. Throws <see cref="ShmTocOutOfSpaceException"/> when the entry would meet the chunks.
    /// </summary>
    public void Insert(ulong key, long offset)
    {
        ShmTocHeader* h = Header;
        if (offset < sizeof(ShmTocHeader) || offset >= _totalBytes)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"a toc entry must point inside the toc's {_totalBytes} bytes, past its header");
        SLock.Acquire(ref h->Mutex, "ShmToc.Insert");
        int n = h->NumEntries;
        long total = _totalBytes;
        long allocated = h->AllocatedBytes;
        if (!CountsValid(n, allocated) || EntriesEnd(n) + sizeof(ShmTocEntry) > total - allocated || n == int.MaxValue)
        {
            SLock.Release(ref h->Mutex);
            CheckCounts(n, allocated); // after the lock: a corrupt count throws ShmemCorruptException
            throw new ShmTocOutOfSpaceException("entry", sizeof(ShmTocEntry), total, allocated, n, EntriesEnd(n));
        }
        ShmTocEntry* e = Entries + n;
        e->Key = key;
        e->Offset = offset;
        // Publish last: the entry above is visible to anyone who sees the new count. Release store; pairs with
        // the acquire load of NumEntries in Lookup (shm_toc_insert's write barrier).
        Volatile.Write(ref h->NumEntries, n + 1);
        SLock.Release(ref h->Mutex);
    }

    /// <summary>
    /// The offset inserted under <paramref name="key"/> (shm_toc_lookup). When the key is absent: 0 with
    /// <paramref name="noError"/> (offset 0 is the toc header, never a chunk), else a <see cref="KeyNotFoundException"/>.
    /// Takes no lock.
    /// </summary>
    public long Lookup(ulong key, bool noError = false)
    {
        if (TryLookup(key, out long offset))
            return offset;
        if (noError)
            return 0;
        throw new KeyNotFoundException($"could not find key 0x{key:x} in shm TOC ({Count} entries)");
    }

    /// <summary>Looks <paramref name="key"/> up without a lock; false when absent.</summary>
    public bool TryLookup(ulong key, out long offset)
    {
        // Acquire; pairs with the release store in Insert: entries below n are complete.
        int n = Volatile.Read(ref Header->NumEntries);
        if ((uint)n > (uint)_maxEntries)
            throw new ShmemCorruptException("shm_toc header", "NumEntries", $"{n} is not between 0 and the {_maxEntries} entries its {_totalBytes} bytes hold");
        ShmTocEntry* entries = Entries;
        for (int i = 0; i < n; i++)
        {
            if (entries[i].Key == key)
            {
                offset = entries[i].Offset;
                if (offset < sizeof(ShmTocHeader) || offset >= _totalBytes)
                    throw new ShmemCorruptException($"shm_toc entry {i} (key 0x{key:x})", "offset", $"{offset} is not inside the toc's {_totalBytes} bytes past its header");
                return true;
            }
        }
        offset = 0;
        return false;
    }

    /// <summary>The chunk at <paramref name="offset"/> with <paramref name="size"/> usable bytes (bounds-checked).</summary>
    public ShmTocChunk ChunkAt(long offset, long size)
    {
        long total = _totalBytes;
        if (offset < sizeof(ShmTocHeader) || size < 0 || offset > total || size > total - offset)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"chunk [{offset}, +{size}) is not inside the toc's {total} bytes");
        return new ShmTocChunk(_base + offset, offset, size);
    }

    /// <summary>The chunk inserted under <paramref name="key"/>, assumed to be <paramref name="size"/> bytes.</summary>
    public ShmTocChunk LookupChunk(ulong key, long size) => ChunkAt(Lookup(key), size);

    /// <summary>Whether the entry count and the chunk bytes fit the toc together (nothing here throws: used under its spinlock).</summary>
    private bool CountsValid(int n, long allocated)
        => (uint)n <= (uint)_maxEntries && allocated >= 0 && allocated <= _totalBytes - EntriesEnd(n);

    /// <summary>Throws <see cref="ShmemCorruptException"/> when <see cref="CountsValid"/> is false (never under the spinlock).</summary>
    private void CheckCounts(int n, long allocated)
    {
        if ((uint)n > (uint)_maxEntries)
            throw new ShmemCorruptException("shm_toc header", "NumEntries", $"{n} is not between 0 and the {_maxEntries} entries its {_totalBytes} bytes hold");
        if (allocated < 0 || allocated > _totalBytes - EntriesEnd(n))
            throw new ShmemCorruptException("shm_toc header", "AllocatedBytes", $"{allocated} does not fit the toc's {_totalBytes} bytes beside {n} entries");
    }

    /// <summary>Bytes from the toc's start to the end of <paramref name="n"/> entries.</summary>
    private static long EntriesEnd(int n) => sizeof(ShmTocHeader) + (long)n * sizeof(ShmTocEntry);

    /// <inheritdoc/>
    public override string ToString() => $"shm_toc magic 0x{Magic:x} ({Count} entries, {TotalBytes} bytes)";
}
