/*-------------------------------------------------------------------------
 * ShmemIndex.cs
 *   The directory of named structures in a segment (ShmemInitStruct).
 *
 * NOTES
 *   PostgreSQL's ShmemIndex is a shared hash from a name (up to 63 bytes)
 *   to the location and size of a structure; ShmemInitStruct either finds
 *   the entry (found = true) or allocates the space and makes one (found =
 *   false, the caller initialises it). Ours is the same directory as a
 *   fixed-capacity open-addressing table in the segment, because entries are
 *   never removed (a structure lives as long as the segment).
 *
 *   Concurrency. Inserts take the index spinlock. Lookups take no lock: a
 *   slot's fields (name, hash, offset, size) are written before its State is
 *   release-stored non-empty, and a reader acquire-loads State before reading
 *   them, so a reader sees either an empty slot or a complete entry. Linear
 *   probing never moves an entry, so a lock-free reader cannot miss one that
 *   was published before its probe passed.
 *
 *   PostgreSQL relies on start-up order (the postmaster initialises
 *   everything before any child runs). PgIpc also lets a process attach by
 *   name at any time, so an entry has an Initializing state: the first caller
 *   allocates, runs its initialiser, then publishes Ready; a concurrent caller
 *   for the same name waits for Ready (or learns that the initialiser failed
 *   or died) instead of reading half-built memory.
 *
 *   Nothing under the index spinlock can throw: the name, the hash, the
 *   rounded size are computed before it is taken, the allocator call under
 *   it returns -1 instead of throwing, and the errors are raised after it
 *   is released. A size whose rounding overflows is simply out of shared
 *   memory, like any other request too big for the segment.
 *
 *   The probing code (lookup, insert under the lock, waiting for an
 *   initialiser, the allocations rows) is here; ShmemSegment's InitStruct,
 *   TryFindStruct and GetAllocations check that the segment is attached and
 *   delegate to it.
 *
 *   Slot layout (128 bytes):
 *     0   Name[64]       written once, before State leaves Empty
 *     64  NameLength, NameHash, State, InitializerPid
 *     80  Offset, Size, AllocatedSize
 *     104 padding
 *
 *   Mirrors ShmemInitStruct and the ShmemIndex in
 *   src/backend/storage/ipc/shmem.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PgIpc.Platform;
using PgIpc.Sync;

namespace PgIpc.Shmem;

/// <summary>States of a <see cref="ShmemIndexEntry"/>.</summary>
public enum ShmemEntryState
{
    /// <summary>The slot is free.</summary>
    Empty = 0,
    /// <summary>The structure is allocated and its creator is initialising it.</summary>
    Initializing = 1,
    /// <summary>The structure is initialised and may be used.</summary>
    Ready = 2,
    /// <summary>Its initialisation failed: the structure must not be used.</summary>
    Failed = 3,
}

/// <summary>
/// Header of the index. Lock: padded spinlock taken by inserters. Count: under Lock.
/// Capacity: immutable after initialisation.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential)]
internal struct ShmemIndexHeader
{
    public SpinLockPadded Lock;
    public int Count;
    public int Capacity;
    private long _pad0, _pad1, _pad2, _pad3, _pad4, _pad5, _pad6;
}

/// <summary>
/// One named structure. Name, NameLength, NameHash, Offset, Size, AllocatedSize: written under the index lock
/// before State is release-stored non-empty; immutable after. State: atomic (see file notes).
/// InitializerPid: written under the index lock with State = Initializing; read by waiters.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct ShmemIndexEntry
{
    public const int MaxNameLength = 63;

    public fixed byte Name[64];
    public int NameLength;
    public uint NameHash;
    public int State;
    public int InitializerPid;
    public long Offset;
    public long Size;
    public long AllocatedSize;
    private fixed long _pad[3];
}

/// <summary>One row of the allocations view (pg_shmem_allocations).</summary>
/// <param name="Name">Structure name; "&lt;anonymous&gt;" for unnamed allocations, null for the free space.</param>
/// <param name="Offset">Offset of the allocation from the segment's start.</param>
/// <param name="Size">Bytes asked for.</param>
/// <param name="AllocatedSize">Bytes taken, alignment padding included.</param>
public sealed record ShmemAllocation(string? Name, long Offset, long Size, long AllocatedSize);

/// <summary>Sizing, hashing, and the probing code of the index (lookup, insert, wait for an initialiser).</summary>
public static unsafe class ShmemIndex
{
    /// <summary>The default number of entries the ShmemIndex holds.</summary>
    public const int DefaultCapacity = 256;
    /// <summary>The largest number of entries a ShmemIndex may be given.</summary>
    public const int MaxCapacity = 1 << 20;

    internal static void ValidateCapacity(int capacity)
    {
        if (capacity < 8 || capacity > MaxCapacity || (capacity & (capacity - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"ShmemIndex capacity must be a power of two between 8 and {MaxCapacity}");
    }

    internal static long SizeFor(int capacity)
        => ShmemSize.Add(sizeof(ShmemIndexHeader), ShmemSize.Mul(capacity, sizeof(ShmemIndexEntry)));

    /// <summary>Validates a structure name and encodes it as UTF-8 into <paramref name="dest"/> (64 bytes); returns its length.</summary>
    internal static int EncodeName(string name, Span<byte> dest)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length == 0)
            throw new ArgumentException("shared memory structure name cannot be empty", nameof(name));
        if (name.Length > ShmemIndexEntry.MaxNameLength * 3 ||
            System.Text.Encoding.UTF8.GetByteCount(name) > ShmemIndexEntry.MaxNameLength)
            throw new ArgumentException($"shared memory structure name \"{Truncate(name)}\" is longer than {ShmemIndexEntry.MaxNameLength} bytes in UTF-8", nameof(name));
        int n = System.Text.Encoding.UTF8.GetBytes(name, dest);
        if (dest[..n].Contains((byte)0))
            throw new ArgumentException("shared memory structure name cannot contain NUL", nameof(name));
        return n;
    }

    private static string Truncate(string s) => s.Length <= 80 ? s : s[..80] + "...";

    /// <summary>FNV-1a over the name bytes: deterministic in every process (string.GetHashCode is not).</summary>
    internal static uint HashName(ReadOnlySpan<byte> name)
    {
        uint h = 2166136261;
        foreach (byte b in name)
            h = (h ^ b) * 16777619;
        return h == 0 ? 1 : h;
    }

    // ------------------------------------------------------------------
    // Probing, in a mapped segment (ShmemSegment's InitStruct / TryFindStruct / GetAllocations delegate here;
    // they have checked that the segment is attached)
    // ------------------------------------------------------------------

    /// <summary>ShmemInitStruct: the entry for <paramref name="name"/> (found = true), or a new one allocated and published (see file notes).</summary>
    internal static ShmemRegion InitStruct(ShmemSegment seg, string name, long size, ShmemInitializer? initializer, out bool found)
    {
        Span<byte> nameBytes = stackalloc byte[64];
        int n = EncodeName(name, nameBytes);
        nameBytes = nameBytes[..n];
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, $"size of shared structure \"{name}\" must be positive");
        uint hash = HashName(nameBytes);
        byte* @base = seg.Base;
        IProcessServices processes = seg.Platform.Processes;
        // Everything the insert needs is computed here: nothing that can throw runs under the index spinlock (a
        // throw there would leave it held, and every later insert, in every process, would end stuck).
        long allocated = ShmemSegment.AllocatedSizeOf(size);
        int myPid = processes.CurrentProcessId;

        // Fast path: the structure exists (the common case in every process but the first).
        ShmemIndexEntry* e = LookupLockFree(seg, nameBytes, hash);
        if (e is null)
        {
            ShmemIndexHeader* ih = seg.IndexHeader;
            SLock.Acquire(ref ih->Lock.Value, "ShmemIndexLock");
            e = FindSlotLocked(ih, seg.IndexCapacity, nameBytes, hash, out bool exists);
            if (!exists)
            {
                if (e is null)
                {
                    int cap = seg.IndexCapacity;
                    SLock.Release(ref ih->Lock.Value);
                    throw new OutOfSharedMemoryException($"ShmemIndex (full at {cap} entries) adding \"{name}\"", size, seg.FreeBytes);
                }
                long offset = seg.AllocAligned(allocated, anonymous: false, out long available);
                if (offset < 0)
                {
                    SLock.Release(ref ih->Lock.Value);
                    if (offset == ShmemSegment.CorruptFreeOffset)
                        seg.ThrowCorruptFreeOffset();
                    throw new OutOfSharedMemoryException($"shared structure \"{name}\"", size, available);
                }
                nameBytes.CopyTo(new Span<byte>(e->Name, 64));
                e->NameLength = n;
                e->NameHash = hash;
                e->Offset = offset;
                e->Size = size;
                e->AllocatedSize = allocated;
                e->InitializerPid = myPid;
                ih->Count++;
                // Publish the entry: fields above first. Pairs with the acquire load in LookupLockFree.
                Volatile.Write(ref e->State, (int)(initializer is null ? ShmemEntryState.Ready : ShmemEntryState.Initializing));
                SLock.Release(ref ih->Lock.Value);

                var region = new ShmemRegion(@base + offset, offset, size);
                if (initializer is not null)
                {
                    try
                    {
                        initializer(region);
                    }
                    catch
                    {
                        Volatile.Write(ref e->State, (int)ShmemEntryState.Failed);
                        throw;
                    }
                    // Publish the initialised contents. Pairs with the acquire load in WaitEntryReady.
                    Volatile.Write(ref e->State, (int)ShmemEntryState.Ready);
                }
                found = false;
                return region;
            }
            SLock.Release(ref ih->Lock.Value);
        }

        WaitEntryReady(seg, e, name, processes);
        (long entryOffset, long entrySize) = ValidateEntry(seg, e, name);
        if (entrySize != size)
            throw new PgIpcException($"ShmemIndex entry size is wrong for data structure \"{name}\": expected {size}, actual {entrySize}");
        found = true;
        return new ShmemRegion(@base + entryOffset, entryOffset, entrySize);
    }

    /// <summary>
    /// Looks up <paramref name="name"/> without creating it. With <paramref name="waitReady"/>, waits for an entry
    /// still being initialised; without, only a Ready entry that lies inside the segment is found (a stale segment's
    /// leftovers: an entry still Initializing there belongs to a dead process, and its fields are untrusted input).
    /// </summary>
    internal static bool TryFind(ShmemSegment seg, string name, bool waitReady, out ShmemRegion region)
    {
        Span<byte> nameBytes = stackalloc byte[64];
        int n = EncodeName(name, nameBytes);
        nameBytes = nameBytes[..n];
        ShmemIndexEntry* e = LookupLockFree(seg, nameBytes, HashName(nameBytes));
        if (e is null)
        {
            region = default;
            return false;
        }
        if (waitReady)
        {
            WaitEntryReady(seg, e, name, seg.Platform.Processes);
        }
        // Acquire; pairs with the release store of Ready in InitStruct.
        else if (Volatile.Read(ref e->State) != (int)ShmemEntryState.Ready)
        {
            region = default;
            return false;
        }
        (long offset, long size) = ValidateEntry(seg, e, name);
        region = new ShmemRegion(seg.Base + offset, offset, size);
        return true;
    }

    /// <summary>One row per published entry, in offset order (the named part of pg_shmem_allocations).</summary>
    internal static List<ShmemAllocation> NamedAllocations(ShmemSegment seg)
    {
        List<ShmemAllocation> rows = [];
        var entries = (ShmemIndexEntry*)(seg.IndexHeader + 1);
        int cap = seg.IndexCapacity;
        for (int i = 0; i < cap; i++)
        {
            ShmemIndexEntry* e = entries + i;
            if (Volatile.Read(ref e->State) == (int)ShmemEntryState.Empty)
                continue;
            // Input from another process: a length outside the name buffer is corruption, not a read past it.
            int len = e->NameLength;
            if (len <= 0 || len > ShmemIndexEntry.MaxNameLength)
                throw new ShmemCorruptException($"ShmemIndex entry {i} of segment {seg.Handle.Id}", "name length", $"{len} is not between 1 and {ShmemIndexEntry.MaxNameLength}");
            string name = System.Text.Encoding.UTF8.GetString(e->Name, len);
            (long offset, long size) = ValidateEntry(seg, e, name);
            rows.Add(new ShmemAllocation(name, offset, size, e->AllocatedSize));
        }
        rows.Sort((a, b) => a.Offset.CompareTo(b.Offset));
        return rows;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ShmemIndexEntry* LookupLockFree(ShmemSegment seg, ReadOnlySpan<byte> name, uint hash)
    {
        var entries = (ShmemIndexEntry*)(seg.IndexHeader + 1);
        int cap = seg.IndexCapacity;
        int mask = cap - 1;
        int i = (int)(hash & (uint)mask);
        for (int probes = 0; probes < cap; probes++, i = (i + 1) & mask)
        {
            ShmemIndexEntry* e = entries + i;
            // Acquire; pairs with the release store that published the entry in InitStruct.
            if (Volatile.Read(ref e->State) == (int)ShmemEntryState.Empty)
                return null;
            if (e->NameHash == hash && e->NameLength == name.Length && new ReadOnlySpan<byte>(e->Name, name.Length).SequenceEqual(name))
                return e;
        }
        return null;
    }

    /// <summary>
    /// Under the index lock: the entry for the name (exists = true), or the empty slot to fill, or null when full.
    /// <paramref name="cap"/> is the capacity validated at attach (never the shared copy: the probe stays inside the index).
    /// </summary>
    private static ShmemIndexEntry* FindSlotLocked(ShmemIndexHeader* ih, int cap, ReadOnlySpan<byte> name, uint hash, out bool exists)
    {
        var entries = (ShmemIndexEntry*)(ih + 1);
        int mask = cap - 1;
        int i = (int)(hash & (uint)mask);
        for (int probes = 0; probes < cap; probes++, i = (i + 1) & mask)
        {
            ShmemIndexEntry* e = entries + i;
            if (e->State == (int)ShmemEntryState.Empty)
            {
                exists = false;
                // Keep one slot empty so lock-free probes always terminate early.
                return ih->Count >= cap - 1 ? null : e;
            }
            if (e->NameHash == hash && e->NameLength == name.Length && new ReadOnlySpan<byte>(e->Name, name.Length).SequenceEqual(name))
            {
                exists = true;
                return e;
            }
        }
        exists = false;
        return null;
    }

    /// <summary>
    /// The entry's offset and size, each read once and checked against the segment (another process wrote them):
    /// inside the allocatable bytes, cache-line aligned as the allocator hands them out, size positive and within
    /// the allocated size. Read only after the entry is Ready, when they are immutable.
    /// </summary>
    private static (long Offset, long Size) ValidateEntry(ShmemSegment seg, ShmemIndexEntry* e, string name)
    {
        long offset = e->Offset, size = e->Size, allocated = e->AllocatedSize, total = seg.TotalSize;
        if (offset < seg.AllocatableStart || offset >= total || (offset & (ShmemSize.CacheLineSize - 1)) != 0)
            throw CorruptEntry(seg, e, name, "offset", $"0x{offset:x} is not an allocation inside the segment's {total} bytes (allocations start at 0x{seg.AllocatableStart:x})");
        if (size <= 0 || size > total - offset)
            throw CorruptEntry(seg, e, name, "size", $"{size} at offset 0x{offset:x} runs beyond the segment's {total} bytes");
        if (allocated < size || allocated > total - offset)
            throw CorruptEntry(seg, e, name, "allocated size", $"{allocated} at offset 0x{offset:x} is smaller than the size {size} or runs beyond the segment's {total} bytes");
        return (offset, size);
    }

    private static ShmemCorruptException CorruptEntry(ShmemSegment seg, ShmemIndexEntry* e, string name, string field, string detail)
    {
        long index = e - (ShmemIndexEntry*)(seg.IndexHeader + 1);
        return new ShmemCorruptException($"ShmemIndex entry {index} (\"{name}\") of segment {seg.Handle.Id}", field, detail);
    }

    /// <summary>How long a lookup waits for a live initialiser before it gives up (an initialiser never takes this long).</summary>
    internal const int InitializerPatienceMs = 30_000;

    private static void WaitEntryReady(ShmemSegment seg, ShmemIndexEntry* e, string name, IProcessServices processes)
    {
        int spins = 0;
        long deadline = Environment.TickCount64 + InitializerPatienceMs;
        while (true)
        {
            // Acquire; pairs with the release store of Ready (or Failed) by the initialiser.
            int st = Volatile.Read(ref e->State);
            if (st == (int)ShmemEntryState.Ready)
                return;
            if (st == (int)ShmemEntryState.Failed)
                throw new PgIpcException($"initialisation of shared structure \"{name}\" failed in pid {e->InitializerPid}");
            if (st != (int)ShmemEntryState.Initializing)
                throw CorruptEntry(seg, e, name, "state", $"{st} is not a state of an entry (Empty, Initializing, Ready, Failed)");
            int pid = e->InitializerPid;
            // Gone only: an unreaped zombie initialiser is waited for until reaped (kill(pid, 0)'s view).
            if (pid != processes.CurrentProcessId && processes.GetLiveness(pid) == ProcessLiveness.Gone)
                throw new PgIpcException($"shared structure \"{name}\" was never initialised: its initialiser pid {pid} died");
            // Bounded, as the segment's own ready wait: an entry left Initializing under a live pid (its state or pid
            // overwritten, or an initialiser stuck) is an error, not a hang.
            if (Environment.TickCount64 > deadline)
                throw new PgIpcException($"shared structure \"{name}\" is still being initialised by pid {pid} after {InitializerPatienceMs / 1000} s");
            if (++spins < 50)
                Thread.SpinWait(20);
            else
                Thread.Sleep(1);
        }
    }
}
