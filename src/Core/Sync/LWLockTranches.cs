/*-------------------------------------------------------------------------
 * LWLockTranches.cs
 *   Names for groups of LWLocks ("tranches"), and the named tranches that
 *   code requests before the segment is made.
 *
 * NOTES
 *   Every LWLock carries a 16-bit tranche id, so an error or a wait report
 *   can say which kind of lock it was. Built-in tranches have fixed ids below
 *   FirstUserDefined. Two ways to add one, as in PostgreSQL:
 *     - at start-up, RequestNamedLWLockTranche(name, n) on the requests
 *       object (an extension's shmem_request_hook); Init then carves n padded
 *       locks for it and any process gets them with GetNamedLWLockTranche;
 *     - at run time, NewTrancheId(name) (LWLockNewTrancheId +
 *       LWLockRegisterTranche) for locks the caller places itself, e.g. in a
 *       DSM segment.
 *   Unlike PostgreSQL, where each backend registers tranche names in its own
 *   memory, the names live in shared memory, so every process (and `pgipc
 *   inspect`) can name every tranche. Asking again for a name already
 *   registered returns the same id, which makes registration idempotent
 *   across processes.
 *
 *   Layout of "PgIpc.LWLockTranches":
 *     LWLockTrancheHeader (128 bytes)
 *     LWLockTrancheEntry[Capacity] (128 bytes each)      header's Lock
 *     LWLockPadded[sum of requested counts]               the locks themselves
 *
 *   Mirrors src/backend/storage/lmgr/lwlock.c (NamedLWLockTrancheRequest,
 *   GetNamedLWLockTranche, LWLockNewTrancheId, GetLWTrancheName).
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Sync;

/// <summary>Ids of the built-in tranches.</summary>
public static class BuiltinTranche
{
    /// <summary>The main array's individual locks.</summary>
    public const int Main = 0;
    /// <summary>The ShmemIndex lock.</summary>
    public const int ShmemIndex = 1;
    /// <summary>The proc array lock.</summary>
    public const int ProcArray = 2;
    /// <summary>Buffer content locks.</summary>
    public const int BufferContent = 3;
    /// <summary>Buffer mapping table partition locks.</summary>
    public const int BufferMapping = 4;
    /// <summary>Lock manager partition locks.</summary>
    public const int LockManager = 5;
    /// <summary>The shared invalidation queue's read lock.</summary>
    public const int SInvalRead = 6;
    /// <summary>The shared invalidation queue's write lock.</summary>
    public const int SInvalWrite = 7;
    /// <summary>The dynamic shared memory control segment's lock.</summary>
    public const int DynamicSharedMemoryControl = 8;
    /// <summary>shm_mq locks.</summary>
    public const int ShmMq = 9;
    /// <summary>Shared hash table partition locks.</summary>
    public const int SharedHashPartition = 10;
    /// <summary>The checkpointer's request queue lock.</summary>
    public const int Checkpointer = 11;
    /// <summary>Locks the tests make.</summary>
    public const int Test = 12;
    /// <summary>The WAL insertion locks (WALInsertLock).</summary>
    public const int WalInsert = 13;
    /// <summary>The WAL write lock (WALWriteLock).</summary>
    public const int WalWrite = 14;
    /// <summary>The WAL buffer mapping lock (WALBufMappingLock).</summary>
    public const int WalBufMapping = 15;
    /// <summary>The control file lock (ControlFileLock).</summary>
    public const int ControlFile = 16;

    /// <summary>First id handed out for named or run-time tranches.</summary>
    public const int FirstUserDefined = 64;

    internal static readonly string[] Names =
    [
        "Main", "ShmemIndex", "ProcArray", "BufferContent", "BufferMapping", "LockManager", "SInvalRead",
        "SInvalWrite", "DynamicSharedMemoryControl", "ShmMq", "SharedHashPartition", "Checkpointer", "Test",
        "WALInsert", "WALWrite", "WALBufMapping", "ControlFile",
    ];
}

/// <summary>Named tranches requested before the segment is created (RequestNamedLWLockTranche).</summary>
public sealed class LWLockTrancheRequests
{
    private readonly List<(string Name, int Count)> _requests = [];

    /// <summary>The requests so far.</summary>
    public IReadOnlyList<(string Name, int Count)> Requests => _requests;

    /// <summary>Asks for <paramref name="numLocks"/> padded LWLocks under the tranche <paramref name="name"/>.</summary>
    public LWLockTrancheRequests RequestNamedLWLockTranche(string name, int numLocks)
    {
        LWLockTranches.ValidateName(name);
        if (numLocks < 1)
            throw new ArgumentOutOfRangeException(nameof(numLocks), numLocks, $"named tranche \"{name}\" needs at least one lock");
        if (_requests.Exists(r => r.Name == name))
            throw new ArgumentException($"named LWLock tranche \"{name}\" was already requested", nameof(name));
        _requests.Add((name, numLocks));
        return this;
    }

    internal long TotalLocks => _requests.Sum(r => (long)r.Count);
}

/// <summary>Header of the tranche table. Lock protects NextTrancheId, Count and the entries; the rest is immutable.</summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 128)]
internal struct LWLockTrancheHeader
{
    public const uint MagicValue = 0x4C57544E; // "LWTN"
    public SpinLockPadded Lock;
    public int NextTrancheId;
    public int Capacity;
    public int Count;
    public uint Magic;
}

/// <summary>
/// One registered tranche. Written under the header's Lock before Count is raised past it; immutable after.
/// Layout: Name[64] at 0, NameLength 64, TrancheId 68, NumLocks 72, LocksOffset 80 (segment offset, 0 = none).
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 128)]
internal unsafe struct LWLockTrancheEntry
{
    public fixed byte Name[64];
    public int NameLength;
    public int TrancheId;
    public int NumLocks;
    private int _pad;
    public long LocksOffset;
}

/// <summary>A named tranche's locks as mapped in this process.</summary>
public readonly unsafe struct LWLockArray
{
    private readonly LWLockPadded* _locks;

    internal LWLockArray(LWLockPadded* locks, int length, int trancheId)
    {
        _locks = locks;
        Length = length;
        TrancheId = trancheId;
    }

    /// <summary>The number of locks in the array.</summary>
    public int Length { get; }

    /// <summary>The tranche id of every lock in the array.</summary>
    public int TrancheId { get; }

    /// <summary>The <paramref name="index"/>-th lock, by reference (never copy an LWLock).</summary>
    public ref LWLock this[int index]
    {
        get
        {
            if ((uint)index >= (uint)Length)
                throw new ArgumentOutOfRangeException(nameof(index), index, $"the tranche has {Length} locks");
            return ref _locks[index].Lock;
        }
    }
}

/// <summary>The shared tranche table.</summary>
public static unsafe class LWLockTranches
{
    internal const string ShmemName = "PgIpc.LWLockTranches";
    /// <summary>The longest tranche name, in bytes (NAMEDATALEN - 1).</summary>
    public const int MaxNameLength = 63;
    internal const int DefaultCapacity = 128;

    /// <summary>Bytes <see cref="Init"/> needs for the table and the requested locks.</summary>
    internal static long ShmemSize(LWLockTrancheRequests? requests, int capacity = DefaultCapacity)
    {
        int cap = Math.Max(capacity, requests?.Requests.Count ?? 0);
        long size = Shmem.ShmemSize.Add(sizeof(LWLockTrancheHeader), Shmem.ShmemSize.Mul(cap, sizeof(LWLockTrancheEntry)));
        return Shmem.ShmemSize.Add(size, Shmem.ShmemSize.Mul(requests?.TotalLocks ?? 0, sizeof(LWLockPadded)));
    }

    /// <summary>Finds or creates the table; the creator also carves and initialises the requested named tranches.</summary>
    internal static void Init(ShmemSegment segment, LWLockTrancheRequests? requests, out bool found, int capacity = DefaultCapacity)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (capacity < 1 || capacity > ushort.MaxValue - BuiltinTranche.FirstUserDefined)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "tranche table capacity must be 1..65471");
        int cap = Math.Max(capacity, requests?.Requests.Count ?? 0);
        segment.InitStruct(ShmemName, ShmemSize(requests, capacity), region =>
        {
            var h = (LWLockTrancheHeader*)region.Pointer;
            SLock.Init(ref h->Lock.Value);
            h->Capacity = cap;
            h->NextTrancheId = BuiltinTranche.FirstUserDefined;
            var entries = (LWLockTrancheEntry*)(h + 1);
            long locksOffset = region.Offset + sizeof(LWLockTrancheHeader) + (long)cap * sizeof(LWLockTrancheEntry);
            if (requests is not null)
            {
                foreach ((string name, int count) in requests.Requests)
                {
                    LWLockTrancheEntry* e = entries + h->Count++;
                    int id = h->NextTrancheId++;
                    WriteName(e, name);
                    e->TrancheId = id;
                    e->NumLocks = count;
                    e->LocksOffset = locksOffset;
                    var locks = (LWLockPadded*)(segment.Base + locksOffset);
                    for (int i = 0; i < count; i++)
                        locks[i].Lock.Initialize(id);
                    locksOffset += (long)count * sizeof(LWLockPadded);
                }
            }
            h->Magic = LWLockTrancheHeader.MagicValue;
        }, out found);
    }

    /// <summary>The locks of a tranche requested at start-up (GetNamedLWLockTranche); throws when none was requested.</summary>
    public static LWLockArray GetNamedLWLockTranche(ShmemSegment segment, string name)
    {
        LWLockTrancheHeader* h = Table(segment, out int capacity);
        LWLockTrancheEntry* e = FindLocked(h, capacity, name);
        if (e is null || e->NumLocks == 0)
            throw new PgIpcException($"requested LWLock tranche \"{name}\" is not registered: request it with RequestNamedLWLockTranche before the segment is created");
        // Immutable once the table is published, but another process's word: the locks must lie in the segment.
        long locksOffset = e->LocksOffset;
        int numLocks = e->NumLocks;
        if (numLocks < 0 || locksOffset < segment.AllocatableStart || locksOffset > segment.TotalSize - (long)numLocks * sizeof(LWLockPadded))
            throw new ShmemCorruptException($"LWLock tranche table entry \"{name}\" of segment {segment.Handle.Id}", "LocksOffset / NumLocks",
                $"0x{locksOffset:x} / {numLocks} do not place the locks inside the segment's {segment.TotalSize} bytes");
        return new LWLockArray((LWLockPadded*)(segment.Base + locksOffset), numLocks, e->TrancheId);
    }

    /// <summary>
    /// A tranche id for locks the caller places itself (LWLockNewTrancheId + LWLockRegisterTranche). Registering
    /// a name that is already registered returns its id.
    /// </summary>
    public static int NewTrancheId(ShmemSegment segment, string name)
    {
        ValidateName(name);
        LWLockTrancheHeader* h = Table(segment, out int capacity);
        SLock.Acquire(ref h->Lock.Value, "LWLockTranches");
        try
        {
            LWLockTrancheEntry* e = FindUnlocked(h, capacity, name);
            if (e is not null)
                return e->TrancheId;
            if (h->Count < 0)
                throw new ShmemCorruptException($"LWLock tranche table of segment {segment.Handle.Id}", "Count", $"{h->Count} is negative");
            if (h->Count >= capacity || h->NextTrancheId > ushort.MaxValue)
                throw new PgIpcException($"no room to register LWLock tranche \"{name}\": all {capacity} tranche entries are used");
            e = (LWLockTrancheEntry*)(h + 1) + h->Count;
            WriteName(e, name);
            e->TrancheId = h->NextTrancheId++;
            e->NumLocks = 0;
            e->LocksOffset = 0;
            // Readers look entries up under the lock too; raising Count last keeps a half-written entry invisible.
            h->Count++;
            return e->TrancheId;
        }
        finally
        {
            SLock.Release(ref h->Lock.Value);
        }
    }

    /// <summary>The name of a tranche id (GetLWTrancheName). Never throws: an unknown id is "tranche N".</summary>
    public static string NameOf(ShmemSegment? segment, int trancheId)
    {
        if ((uint)trancheId < (uint)BuiltinTranche.Names.Length)
            return BuiltinTranche.Names[trancheId];
        try
        {
            if (segment is not null && segment.IsAttached && segment.TryFindStruct(ShmemName, out ShmemRegion r))
            {
                var h = (LWLockTrancheHeader*)r.Pointer;
                // The name is copied raw under the spinlock and its length (input from another process) checked and
                // decoded after the release: nothing under the lock can throw.
                byte* raw = stackalloc byte[64];
                int length = -1;
                var entries = (LWLockTrancheEntry*)(h + 1);
                SLock.Acquire(ref h->Lock.Value, "LWLockTranches");
                int count = Math.Clamp(h->Count, 0, Math.Clamp(h->Capacity, 0, EntriesThatFit(r)));
                for (int i = 0; i < count; i++)
                {
                    if (entries[i].TrancheId == trancheId)
                    {
                        Buffer.MemoryCopy(entries[i].Name, raw, 64, 64);
                        length = entries[i].NameLength;
                    }
                }
                SLock.Release(ref h->Lock.Value);
                if (length > 0 && length <= MaxNameLength)
                    return Encoding.UTF8.GetString(raw, length);
            }
        }
        catch (PgIpcException)
        {
            // A name is for a message; fall through to the number.
        }
        catch (ObjectDisposedException)
        {
        }
        return $"tranche {trancheId}";
    }

    /// <summary>
    /// The index of <paramref name="l"/> in the named tranche requested at start-up that holds it, or -1 (a lock
    /// the caller placed itself, or no tranche table). For messages; never throws.
    /// </summary>
    internal static int IndexInNamedTranche(ShmemSegment? segment, LWLock* l)
    {
        try
        {
            if (segment is null || !segment.IsAttached || !segment.TryFindStruct(ShmemName, out ShmemRegion r))
                return -1;
            var h = (LWLockTrancheHeader*)r.Pointer;
            long offset = (byte*)l - segment.Base;
            int index = -1;
            SLock.Acquire(ref h->Lock.Value, "LWLockTranches");
            var entries = (LWLockTrancheEntry*)(h + 1);
            int count = Math.Clamp(h->Count, 0, Math.Clamp(h->Capacity, 0, EntriesThatFit(r)));
            for (int i = 0; i < count && index < 0; i++)
            {
                LWLockTrancheEntry* e = entries + i;
                long rel = offset - e->LocksOffset;
                if (e->NumLocks > 0 && e->TrancheId == l->Tranche && rel >= 0 && rel % sizeof(LWLockPadded) == 0
                    && rel / sizeof(LWLockPadded) < e->NumLocks)
                    index = (int)(rel / sizeof(LWLockPadded));
            }
            SLock.Release(ref h->Lock.Value);
            return index;
        }
        catch (PgIpcException)
        {
            return -1;
        }
        catch (ObjectDisposedException)
        {
            return -1;
        }
    }

    internal static void ValidateName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length == 0)
            throw new ArgumentException("LWLock tranche name cannot be empty", nameof(name));
        if (Encoding.UTF8.GetByteCount(name) > MaxNameLength)
            throw new ArgumentException($"LWLock tranche name \"{name}\" is longer than {MaxNameLength} bytes in UTF-8", nameof(name));
    }

    /// <summary>The table, with its capacity checked against the structure's size (<paramref name="capacity"/>: the checked value).</summary>
    private static LWLockTrancheHeader* Table(ShmemSegment segment, out int capacity)
    {
        ArgumentNullException.ThrowIfNull(segment);
        if (!segment.TryFindStruct(ShmemName, out ShmemRegion r))
            throw new PgIpcException($"segment {segment.Handle.Id} has no LWLock tranche table ({ShmemName}); call LWLockTranches.Init when creating it");
        var h = (LWLockTrancheHeader*)r.Pointer;
        if (h->Magic != LWLockTrancheHeader.MagicValue)
            throw new PgIpcException($"{ShmemName} in segment {segment.Handle.Id} is not initialised");
        capacity = h->Capacity;
        if (capacity < 0 || capacity > EntriesThatFit(r))
            throw new ShmemCorruptException($"LWLock tranche table of segment {segment.Handle.Id}", "Capacity", $"{capacity} entries do not fit the structure's {r.Size} bytes");
        return h;
    }

    /// <summary>Entries the structure's bytes can hold: the bound on every walk of the table.</summary>
    private static int EntriesThatFit(ShmemRegion r)
        => (int)Math.Clamp((r.Size - sizeof(LWLockTrancheHeader)) / sizeof(LWLockTrancheEntry), 0, int.MaxValue);

    private static LWLockTrancheEntry* FindLocked(LWLockTrancheHeader* h, int capacity, string name)
    {
        SLock.Acquire(ref h->Lock.Value, "LWLockTranches");
        LWLockTrancheEntry* e = FindUnlocked(h, capacity, name);
        SLock.Release(ref h->Lock.Value);
        return e;
    }

    /// <summary>Under the table's spinlock: the walk is clamped to the checked capacity (nothing here throws).</summary>
    private static LWLockTrancheEntry* FindUnlocked(LWLockTrancheHeader* h, int capacity, string name)
    {
        Span<byte> buf = stackalloc byte[MaxNameLength * 3 + 3];
        int n = Encoding.UTF8.GetBytes(name, buf);
        ReadOnlySpan<byte> want = buf[..n];
        var entries = (LWLockTrancheEntry*)(h + 1);
        int count = Math.Clamp(h->Count, 0, capacity);
        for (int i = 0; i < count; i++)
            if (entries[i].NameLength == n && new ReadOnlySpan<byte>(entries[i].Name, n).SequenceEqual(want))
                return entries + i;
        return null;
    }

    private static void WriteName(LWLockTrancheEntry* e, string name)
    {
        int n = Encoding.UTF8.GetBytes(name, new Span<byte>(e->Name, 64));
        e->NameLength = n;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool IsBuiltin(int trancheId) => trancheId < BuiltinTranche.FirstUserDefined;
}
