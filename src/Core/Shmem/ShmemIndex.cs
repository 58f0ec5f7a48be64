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
 *   Slot layout (128 bytes):
 *     0   Name[64]       written once, before State leaves Empty
 *     64  NameLength, NameHash, State, InitializerPid
 *     80  Offset, Size, AllocatedSize
 *     104 padding
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Sync;

namespace PgIpc.Shmem;

/// <summary>States of a <see cref="ShmemIndexEntry"/>.</summary>
public enum ShmemEntryState
{
    Empty = 0,
    Initializing = 1,
    Ready = 2,
    Failed = 3,
}

/// <summary>
/// Header of the index. Lock: padded spinlock taken by inserters. Count: under Lock.
/// Capacity: immutable after initialisation.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential)]
public struct ShmemIndexHeader
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
public unsafe struct ShmemIndexEntry
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
public sealed record ShmemAllocation(string? Name, long Offset, long Size, long AllocatedSize);

/// <summary>Sizing and hashing helpers for the index.</summary>
public static unsafe class ShmemIndex
{
    public const int DefaultCapacity = 256;
    public const int MaxCapacity = 1 << 20;

    public static void ValidateCapacity(int capacity)
    {
        if (capacity < 8 || capacity > MaxCapacity || (capacity & (capacity - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, $"ShmemIndex capacity must be a power of two between 8 and {MaxCapacity}");
    }

    public static long SizeFor(int capacity)
        => ShmemSize.Add(sizeof(ShmemIndexHeader), ShmemSize.Mul(capacity, sizeof(ShmemIndexEntry)));

    /// <summary>Validates a structure name and encodes it as UTF-8 into <paramref name="dest"/> (64 bytes); returns its length.</summary>
    public static int EncodeName(string name, Span<byte> dest)
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
    public static uint HashName(ReadOnlySpan<byte> name)
    {
        uint h = 2166136261;
        foreach (byte b in name)
            h = (h ^ b) * 16777619;
        return h == 0 ? 1 : h;
    }
}
