/*-------------------------------------------------------------------------
 * SharedHash.cs
 *   Fixed-capacity, partitioned hash table in shared memory (ShmemInitHash).
 *
 * NOTES
 *   PostgreSQL's shared hash tables (dynahash with HASH_PARTITION) never
 *   grow: their element count is fixed at start-up. The key space is split
 *   into partitions by the low bits of the hash code; the caller locks the
 *   partition (the buffer mapping table uses one LWLock per partition) and
 *   the table itself takes no lock for lookups and bucket changes. Elements
 *   come from free lists; each free list has its own spinlock, because a
 *   partition that runs dry borrows an element from another partition's free
 *   list while holding only its own partition lock.
 *
 *   Ours follows that shape:
 *     - keys and values are blittable (unmanaged) and compared bytewise;
 *     - the hash function is deterministic across processes (string and
 *       HashCode hashes are randomised per process, so cannot be used);
 *     - links are element indexes, never addresses;
 *     - partition p owns buckets [p*B, (p+1)*B) and free list p.
 *
 *   Caller contract: hold the lock of PartitionOf(hash) shared for Find,
 *   exclusive for Insert / Remove / EnterOrFind. The table cannot check
 *   which lock that is; it is the caller's, as in PostgreSQL.
 *
 *   Layout, from the structure's offset:
 *     SharedHashHeader (64 bytes)
 *     SharedHashPartition[P] (64 bytes each: free-list spinlock, head, counts)
 *     int buckets[P * B]                       partition lock
 *     element[capacity]: { int Next; uint Hash; TKey; TValue } (8-aligned)
 *                                              partition lock (free elements: free-list lock)
 *
 *   Trust. Init checks the header against what the caller's capacity and
 *   partition count give, and this view derives every pointer from those
 *   arguments, never from the shared header. Links are shared: each is
 *   checked to be an element index, and a chain walk ends after capacity
 *   steps (a cycle) with a ShmemCorruptException; one compare and one count
 *   per step, on chains about one element long.
 *
 *   Mirrors src/backend/utils/hash/dynahash.c (partitioned mode, freelists)
 *   and storage/ipc/shmem.c's ShmemInitHash.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Sync;

namespace PgIpc.Shmem;

/// <summary>
/// Header of a shared hash table. Every field is written once by the initialiser, immutable after
/// (ShmemInitStruct publishes it).
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct SharedHashHeader
{
    public const uint MagicValue = 0x48534850; // "PHSH"
    public uint Magic;
    public int KeySize;
    public int ValueSize;
    public int ElementSize;
    public int Capacity;
    public int NumPartitions;
    public int BucketsPerPartition;
    public int BucketMaskShift;
    public long BucketsOffset;   // from the table start
    public long ElementsOffset;  // from the table start
}

/// <summary>
/// One partition's bookkeeping, padded to 64 bytes. FreeListLock: spinlock. FreeHead, FreeCount: FreeListLock.
/// Count: the caller's partition lock (held exclusive by every insert and remove in this partition).
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct SharedHashPartition
{
    public int FreeListLock;
    public int FreeHead;
    public int FreeCount;
    public int Count;
}

/// <summary>Deterministic hashing of blittable keys (same value in every process).</summary>
public static class SharedHashFunction
{
    /// <summary>A 32-bit hash of the key's bytes (64-bit multiply-mix, folded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Hash<TKey>(in TKey key) where TKey : unmanaged
        => Hash(MemoryMarshal.AsBytes(new ReadOnlySpan<TKey>(in key)));

    /// <summary>The hash of <paramref name="data"/> (PostgreSQL's hash_bytes), the same in every process.</summary>
    public static uint Hash(ReadOnlySpan<byte> data)
    {
        const ulong m = 0x9E3779B97F4A7C15UL;
        ulong h = 0xCBF29CE484222325UL ^ (ulong)data.Length;
        while (data.Length >= 8)
        {
            h = (h ^ MemoryMarshal.Read<ulong>(data)) * m;
            h ^= h >> 29;
            data = data[8..];
        }
        if (data.Length >= 4)
        {
            h = (h ^ MemoryMarshal.Read<uint>(data)) * m;
            h ^= h >> 29;
            data = data[4..];
        }
        foreach (byte b in data)
            h = (h ^ b) * m;
        h ^= h >> 32;
        h *= 0xD6E8FEB86659FD93UL;
        h ^= h >> 32;
        return (uint)h;
    }
}

/// <summary>
/// A fixed-capacity partitioned hash table of <typeparamref name="TKey"/> to <typeparamref name="TValue"/>
/// in shared memory. This object is a per-process view; the table lives in the segment.
/// </summary>
public sealed unsafe class SharedHash<TKey, TValue>
    where TKey : unmanaged
    where TValue : unmanaged
{
    private const int NoElement = -1;

    private readonly byte* _table;
    private readonly SharedHashHeader* _header;
    private readonly SharedHashPartition* _partitions;
    private readonly int* _buckets;
    private readonly byte* _elements;
    private readonly int _elementSize;
    private readonly int _numPartitions;
    private readonly int _bucketMask;
    private readonly int _bucketShift;
    private readonly int _capacity;

    /// <summary>Name of the table (its ShmemIndex name).</summary>
    public string Name { get; }

    /// <summary>Number of elements the table can hold.</summary>
    public int Capacity => _capacity;

    /// <summary>Number of partitions (power of two).</summary>
    public int NumPartitions => _numPartitions;

    private static int KeyOffset => 8;
    private static int ValueOffset => (int)AlignUp(8 + sizeof(TKey), Math.Min(8, AlignOf<TValue>()));
    private static int ElementSize => (int)AlignUp(ValueOffset + sizeof(TValue), 8);

    private SharedHash(string name, byte* table, int capacity, int numPartitions)
    {
        // Every derived value comes from this process's arguments (Layout), not from the shared header, which Init
        // has checked equals them: the walks below stay inside the structure whatever is written there later.
        Layout(capacity, numPartitions, out int bpp, out long elementsOffset);
        Name = name;
        _table = table;
        _header = (SharedHashHeader*)table;
        _partitions = (SharedHashPartition*)(table + sizeof(SharedHashHeader));
        _buckets = (int*)(table + sizeof(SharedHashHeader) + (long)numPartitions * sizeof(SharedHashPartition));
        _elements = table + elementsOffset;
        _elementSize = ElementSize;
        _numPartitions = numPartitions;
        _bucketMask = bpp - 1;
        _bucketShift = System.Numerics.BitOperations.Log2((uint)numPartitions);
        _capacity = capacity;
    }

    /// <summary>Bytes the table needs in shared memory (for the size builder).</summary>
    public static long EstimateSize(int capacity, int numPartitions)
    {
        Validate(capacity, numPartitions);
        Layout(capacity, numPartitions, out _, out long elementsOffset);
        return ShmemSize.Add(elementsOffset, ShmemSize.Mul(capacity, ElementSize));
    }

    /// <summary>
    /// ShmemInitHash: finds or creates the table called <paramref name="name"/> in <paramref name="segment"/>.
    /// Every process gets the same table; the key and value sizes must match what the creator used.
    /// </summary>
    public static SharedHash<TKey, TValue> Init(ShmemSegment segment, string name, int capacity, int numPartitions, out bool found)
    {
        ArgumentNullException.ThrowIfNull(segment);
        Validate(capacity, numPartitions);
        long size = EstimateSize(capacity, numPartitions);
        ShmemRegion region = segment.InitStruct(name, size, r => Initialize(r.Pointer, capacity, numPartitions), out found);
        SharedHashHeader* h = (SharedHashHeader*)region.Pointer;
        if (h->Magic != SharedHashHeader.MagicValue || h->KeySize != sizeof(TKey) || h->ValueSize != sizeof(TValue) ||
            h->Capacity != capacity || h->NumPartitions != numPartitions)
            throw new PgIpcException(
                $"shared hash table \"{name}\" exists with key {h->KeySize} B, value {h->ValueSize} B, capacity {h->Capacity}, {h->NumPartitions} partitions; " +
                $"asked for key {sizeof(TKey)} B, value {sizeof(TValue)} B, capacity {capacity}, {numPartitions} partitions");
        // The layout fields follow from the ones compared above; anything else was written over them.
        Layout(capacity, numPartitions, out int bpp, out long elementsOffset);
        if (h->ElementSize != ElementSize || h->BucketsPerPartition != bpp || h->ElementsOffset != elementsOffset ||
            h->BucketsOffset != sizeof(SharedHashHeader) + (long)numPartitions * sizeof(SharedHashPartition) ||
            h->BucketMaskShift != System.Numerics.BitOperations.Log2((uint)numPartitions))
            throw new ShmemCorruptException($"shared hash table \"{name}\"", "layout",
                $"element size {h->ElementSize}, {h->BucketsPerPartition} buckets per partition, buckets at +{h->BucketsOffset}, elements at +{h->ElementsOffset} " +
                $"differ from what capacity {capacity} and {numPartitions} partitions give ({ElementSize}, {bpp}, elements at +{elementsOffset})");
        return new SharedHash<TKey, TValue>(name, region.Pointer, capacity, numPartitions);
    }

    private static void Validate(int capacity, int numPartitions)
    {
        if (numPartitions < 1 || numPartitions > 1 << 16 || (numPartitions & (numPartitions - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(numPartitions), numPartitions, "number of partitions must be a power of two between 1 and 65536");
        if (capacity < 1 || capacity > 1 << 28)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "capacity must be between 1 and 2^28 elements");
    }

    private static void Layout(int capacity, int numPartitions, out int bucketsPerPartition, out long elementsOffset)
    {
        // Load factor at most 1 per partition's share, rounded to a power of two.
        int share = (capacity + numPartitions - 1) / numPartitions;
        bucketsPerPartition = (int)Math.Max(1, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)share));
        long bucketsOffset = sizeof(SharedHashHeader) + (long)numPartitions * sizeof(SharedHashPartition);
        elementsOffset = ShmemSize.AlignUp(ShmemSize.Add(bucketsOffset, ShmemSize.Mul((long)numPartitions * bucketsPerPartition, sizeof(int))), 64);
    }

    private static void Initialize(byte* table, int capacity, int numPartitions)
    {
        Layout(capacity, numPartitions, out int bpp, out long elementsOffset);
        SharedHashHeader* h = (SharedHashHeader*)table;
        h->KeySize = sizeof(TKey);
        h->ValueSize = sizeof(TValue);
        h->ElementSize = ElementSize;
        h->Capacity = capacity;
        h->NumPartitions = numPartitions;
        h->BucketsPerPartition = bpp;
        h->BucketMaskShift = System.Numerics.BitOperations.Log2((uint)numPartitions);
        h->BucketsOffset = sizeof(SharedHashHeader) + (long)numPartitions * sizeof(SharedHashPartition);
        h->ElementsOffset = elementsOffset;
        new Span<int>(table + h->BucketsOffset, numPartitions * bpp).Fill(NoElement);

        SharedHashPartition* parts = (SharedHashPartition*)(table + sizeof(SharedHashHeader));
        for (int p = 0; p < numPartitions; p++)
        {
            parts[p].FreeHead = NoElement;
            parts[p].FreeCount = 0;
            parts[p].Count = 0;
            SLock.Init(ref parts[p].FreeListLock);
        }
        // Deal elements round-robin onto the free lists so each partition starts with its share.
        for (int i = capacity - 1; i >= 0; i--)
        {
            int p = i % numPartitions;
            int* next = (int*)(table + elementsOffset + (long)i * ElementSize);
            *next = parts[p].FreeHead;
            parts[p].FreeHead = i;
            parts[p].FreeCount++;
        }
        h->Magic = SharedHashHeader.MagicValue;
    }

    // ------------------------------------------------------------------

    /// <summary>The deterministic hash of <paramref name="key"/>; compute once and pass to the other calls.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint GetHashCode(in TKey key) => SharedHashFunction.Hash(in key);

    /// <summary>The partition whose lock guards <paramref name="hash"/> (low bits, as BufTableHashPartition).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int PartitionOf(uint hash) => (int)(hash & (uint)(_numPartitions - 1));

    /// <summary>Elements in one partition (caller holds that partition's lock).</summary>
    public int CountInPartition(int partition) => _partitions[partition].Count;

    /// <summary>Elements in the whole table; exact only when no partition is changing.</summary>
    public long Count
    {
        get
        {
            long n = 0;
            for (int p = 0; p < _numPartitions; p++)
                n += Volatile.Read(ref _partitions[p].Count);
            return n;
        }
    }

    /// <summary>Looks the key up (partition lock held, shared is enough).</summary>
    public bool TryFind(in TKey key, uint hash, out TValue value)
    {
        int e = FindElement(in key, hash, out _);
        if (e == NoElement)
        {
            value = default;
            return false;
        }
        value = *ValuePtr(e);
        return true;
    }

    /// <summary>A reference to the key's value in shared memory, or a null reference (partition lock held).</summary>
    public ref TValue FindRef(in TKey key, uint hash, out bool found)
    {
        int e = FindElement(in key, hash, out _);
        found = e != NoElement;
        return ref found ? ref *ValuePtr(e) : ref Unsafe.NullRef<TValue>();
    }

    /// <summary>Inserts a new key; false (table unchanged) when the key is present. Throws when full. Partition lock exclusive.</summary>
    public bool TryInsert(in TKey key, uint hash, in TValue value)
    {
        ref TValue slot = ref EnterOrFind(in key, hash, out bool found);
        if (found)
            return false;
        slot = value;
        return true;
    }

    /// <summary>
    /// HASH_ENTER: the key's value, inserting the key with a zeroed value when absent (found = false).
    /// Throws <see cref="SharedHashFullException"/> when no element is free. Partition lock exclusive.
    /// </summary>
    public ref TValue EnterOrFind(in TKey key, uint hash, out bool found)
    {
        int e = FindElement(in key, hash, out int bucket);
        if (e != NoElement)
        {
            found = true;
            return ref *ValuePtr(e);
        }
        int partition = PartitionOf(hash);
        e = TakeFreeElement(partition);
        if (e == NoElement)
            throw new SharedHashFullException(Name, Capacity);
        if ((uint)e >= (uint)_capacity)
            ThrowBadLink("free list", e);
        byte* el = Element(e);
        *(uint*)(el + 4) = hash;
        *(TKey*)(el + KeyOffset) = key;
        *ValuePtr(e) = default;
        *(int*)el = _buckets[bucket];
        _buckets[bucket] = e;
        _partitions[partition].Count++;
        found = false;
        return ref *ValuePtr(e);
    }

    /// <summary>Removes the key, returning its value; false when absent. Partition lock exclusive.</summary>
    public bool Remove(in TKey key, uint hash, out TValue value)
    {
        int bucket = BucketOf(hash);
        int* link = &_buckets[bucket];
        int steps = 0;
        while (*link != NoElement)
        {
            int e = *link;
            // Bounded as FindElement: a wild index or a cycle is reported, never followed.
            if ((uint)e >= (uint)_capacity || ++steps > _capacity)
                ThrowBadLink($"bucket {bucket}", e);
            byte* el = Element(e);
            if (*(uint*)(el + 4) == hash && KeyEquals(el, in key))
            {
                value = *ValuePtr(e);
                *link = *(int*)el;
                int partition = PartitionOf(hash);
                _partitions[partition].Count--;
                ReturnFreeElement(partition, e);
                return true;
            }
            link = (int*)el;
        }
        value = default;
        return false;
    }

    // ------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int BucketOf(uint hash)
        => PartitionOf(hash) * (_bucketMask + 1) + (int)((hash >> _bucketShift) & (uint)_bucketMask);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* Element(int index) => _elements + (long)index * _elementSize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private TValue* ValuePtr(int index) => (TValue*)(Element(index) + ValueOffset);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool KeyEquals(byte* element, in TKey key)
        => new ReadOnlySpan<byte>(element + KeyOffset, sizeof(TKey)).SequenceEqual(MemoryMarshal.AsBytes(new ReadOnlySpan<TKey>(in key)));

    private int FindElement(in TKey key, uint hash, out int bucket)
    {
        bucket = BucketOf(hash);
        int e = _buckets[bucket];
        // The chain's links are shared: each must be an element index, and a chain longer than the table is a cycle.
        // One unsigned compare and one count per step (the chain is about one element long at the load factor).
        int steps = 0;
        while (e != NoElement)
        {
            if ((uint)e >= (uint)_capacity || ++steps > _capacity)
                ThrowBadLink($"bucket {bucket}", e);
            byte* el = Element(e);
            if (*(uint*)(el + 4) == hash && KeyEquals(el, in key))
                return e;
            e = *(int*)el;
        }
        return NoElement;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadLink(string where, int e)
        => throw new ShmemCorruptException($"shared hash table \"{Name}\"", $"{where} chain",
            (uint)e >= (uint)_capacity ? $"links to element {e}, outside its {_capacity} elements" : $"is longer than the table's {_capacity} elements (a cycle)");

    /// <summary>Pops an element from the partition's free list, else borrows from the others (each under its free-list spinlock).</summary>
    private int TakeFreeElement(int partition)
    {
        for (int i = 0; i < _numPartitions; i++)
        {
            int p = (partition + i) & (_numPartitions - 1);
            ref SharedHashPartition part = ref _partitions[p];
            if (Volatile.Read(ref part.FreeCount) == 0)
                continue;
            SLock.Acquire(ref part.FreeListLock, "SharedHash free list");
            int e = part.FreeHead;
            // A wild head is left in place and returned for the caller to report after the spinlock.
            if (e != NoElement && (uint)e < (uint)_capacity)
            {
                part.FreeHead = *(int*)Element(e);
                part.FreeCount--;
            }
            SLock.Release(ref part.FreeListLock);
            if (e != NoElement)
                return e;
        }
        return NoElement;
    }

    private void ReturnFreeElement(int partition, int e)
    {
        ref SharedHashPartition part = ref _partitions[partition];
        SLock.Acquire(ref part.FreeListLock, "SharedHash free list");
        *(int*)Element(e) = part.FreeHead;
        part.FreeHead = e;
        part.FreeCount++;
        SLock.Release(ref part.FreeListLock);
    }

    private static long AlignUp(long v, long a) => (v + a - 1) & ~(a - 1);

    private static int AlignOf<T>() where T : unmanaged
    {
        int s = sizeof(T);
        return s >= 8 ? 8 : s >= 4 ? 4 : s >= 2 ? 2 : 1;
    }
}
