/*-------------------------------------------------------------------------
 * PgShmemHeader.cs
 *   The header at offset 0 of every PgIpc main segment.
 *
 * NOTES
 *   As PostgreSQL's PGShmemHeader it identifies the segment (magic, layout
 *   version, creator pid, creation time, total size) and holds the bump
 *   allocator's free offset. PgIpc adds:
 *     - a random cookie, copied into every handle, so a forged or stale
 *       handle (a recycled SysV id, a guessed name) is refused on attach;
 *     - the cluster key, so a SysV key collision with another cluster is told
 *       apart from our own stale segment;
 *     - a table of attached pids. SysV counts attachments itself (nattch);
 *       POSIX and Windows do not, so on those backends "is anyone still
 *       attached" is answered by the live pids in this table. A process killed
 *       with SIGKILL leaves its pid behind, but a dead pid is not counted.
 *
 *   The creator writes it once (PgShmemHeader.Initialize) before
 *   ShmemSegment release-stores State = Ready.
 *
 *   Layout (bytes):
 *     0   Magic, LayoutVersion, CreatorPid, State          immutable / atomic
 *     16  CreationTimeUnixMs, TotalSize, Cookie, KeyHash   immutable
 *     48  IndexOffset, IndexCapacity, AttachTableSize      immutable
 *     64  Key[64]                                          immutable
 *     128 AllocLock (64, padded spinlock)
 *     192 FreeOffset, AnonymousBytes, AnonymousCount       AllocLock
 *     256 AttachedPids[128]                                atomic only (CAS)
 *     768 end
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using PgIpc.Sync;

namespace PgIpc.Shmem;

/// <summary>Life-cycle states of a segment, in <see cref="PgShmemHeader.State"/>.</summary>
public enum ShmemState
{
    /// <summary>The creator is still writing the header and index.</summary>
    Initializing = 0,
    /// <summary>Attachable.</summary>
    Ready = 1,
    /// <summary>Destroyed; attaching fails.</summary>
    Destroyed = 2,
}

/// <summary>
/// Header of the main segment. Field protectors:
/// <list type="bullet">
/// <item>Magic, LayoutVersion, CreatorPid, CreationTimeUnixMs, TotalSize, Cookie, KeyHash, IndexOffset,
/// IndexCapacity, AttachTableSize, Key: written by the creator before State becomes Ready; immutable after.</item>
/// <item>State: atomic. The creator release-stores Ready after writing everything above; attachers acquire-load it
/// before reading anything else. Destroy release-stores Destroyed.</item>
/// <item>FreeOffset, AnonymousBytes, AnonymousCount: AllocLock.</item>
/// <item>AttachedPids: atomic only; a process CASes 0 (or a dead pid) to its pid on attach and its pid to 0 on detach.</item>
/// </list>
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct PgShmemHeader
{
    public const uint MagicValue = 0x50474950; // "PGIP"
    public const uint CurrentLayoutVersion = 6; // 4: DsmControlItem grew to 32 bytes (FirstPage), the main region; 5: the PgIpc.SupervisorRequests and PgIpc.Stats modules; 6: XLogCtlData counters moved under the insert-position spinlock
    public const int KeyCapacity = 64;
    public const int AttachTableCapacity = 128;

    public uint Magic;
    public uint LayoutVersion;
    public int CreatorPid;
    public int State;
    public long CreationTimeUnixMs;
    public long TotalSize;
    public ulong Cookie;
    public ulong KeyHash;
    public long IndexOffset;
    public int IndexCapacity;
    public int AttachTableSize;
    public fixed byte Key[KeyCapacity];
    public SpinLockPadded AllocLock;
    public long FreeOffset;
    public long AnonymousBytes;
    public long AnonymousCount;
    private fixed long _pad0[5];
    public fixed int AttachedPids[AttachTableCapacity];

    /// <summary>
    /// The creator's writes to a fresh (zero-filled) segment: every immutable field, the allocator, and the index
    /// header at <paramref name="indexOffset"/>. State stays Initializing: the caller publishes Ready.
    /// </summary>
    internal static void Initialize(PgShmemHeader* h, int creatorPid, string key, ulong keyHash, long size, long indexOffset, int indexCapacity)
    {
        h->Magic = MagicValue;
        h->LayoutVersion = CurrentLayoutVersion;
        h->CreatorPid = creatorPid;
        h->CreationTimeUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        h->TotalSize = size;
        ulong cookie;
        do { cookie = BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8)); } while (cookie == 0);
        h->Cookie = cookie;
        h->KeyHash = keyHash;
        h->AttachTableSize = AttachTableCapacity;
        Span<byte> keyBytes = new(h->Key, KeyCapacity);
        keyBytes.Clear();
        Encoding.UTF8.GetBytes(key, keyBytes);
        SLock.Init(ref h->AllocLock.Value);

        h->IndexOffset = indexOffset;
        h->IndexCapacity = indexCapacity;
        ShmemIndexHeader* ih = (ShmemIndexHeader*)((byte*)h + indexOffset);
        SLock.Init(ref ih->Lock.Value);
        ih->Capacity = indexCapacity;
        ih->Count = 0;
        h->FreeOffset = ShmemSize.Add(indexOffset, ShmemSize.CacheLineAlign(ShmemIndex.SizeFor(indexCapacity)));
        h->AnonymousBytes = h->FreeOffset;
        h->AnonymousCount = 0;
    }

    /// <summary>
    /// Checks the fields every reader of the segment derives addresses from (the sizes, the index's offset and
    /// capacity, the allocator's free offset) against the <paramref name="mappedSize"/> bytes this process maps, and
    /// returns them with the end of the index (the first allocatable byte). Called once per attach (and before a stale segment
    /// is walked); afterwards readers use the values cached in ShmemSegment. The magic and layout version are the
    /// caller's to check first: only this layout's fields are read here.
    /// </summary>
    internal static Layout Validate(PgShmemHeader* h, long mappedSize, string id)
    {
        string what = $"segment header of {id}";
        long total = h->TotalSize;
        long headerSize = ShmemSize.CacheLineAlign(sizeof(PgShmemHeader));
        if (total < headerSize || total > mappedSize)
            throw new ShmemCorruptException(what, "TotalSize", $"{total} is not between the header's {headerSize} bytes and the {mappedSize} bytes mapped");
        int cap = h->IndexCapacity;
        if (cap < 8 || cap > ShmemIndex.MaxCapacity || (cap & (cap - 1)) != 0)
            throw new ShmemCorruptException(what, "IndexCapacity", $"{cap} is not a power of two between 8 and {ShmemIndex.MaxCapacity}");
        long indexOffset = h->IndexOffset;
        long indexSize = ShmemSize.CacheLineAlign(ShmemIndex.SizeFor(cap));
        if (indexOffset < headerSize || (indexOffset & (ShmemSize.CacheLineSize - 1)) != 0 || indexOffset > total - indexSize)
            throw new ShmemCorruptException(what, "IndexOffset", $"0x{indexOffset:x} does not place an index of {cap} entries ({indexSize} bytes) after the header inside the segment's {total} bytes");
        long indexEnd = indexOffset + indexSize;
        ShmemIndexHeader* ih = (ShmemIndexHeader*)((byte*)h + indexOffset);
        if (ih->Capacity != cap)
            throw new ShmemCorruptException("ShmemIndex header", "Capacity", $"{ih->Capacity} differs from the segment header's {cap}");
        int count = Volatile.Read(ref ih->Count);
        if (count < 0 || count >= cap)
            throw new ShmemCorruptException("ShmemIndex header", "Count", $"{count} is not between 0 and {cap - 1}");
        long free = Volatile.Read(ref h->FreeOffset);
        if (free < indexEnd || free > total)
            throw new ShmemCorruptException(what, "FreeOffset", $"0x{free:x} is outside the allocatable bytes [0x{indexEnd:x}, 0x{total:x}]");
        return new Layout(total, indexOffset, cap, indexEnd);
    }

    /// <summary>The header's checked values (<see cref="Validate"/>), each read once: what ShmemSegment caches.</summary>
    internal readonly record struct Layout(long TotalSize, long IndexOffset, int IndexCapacity, long IndexEnd);

    /// <summary>The cluster key in <paramref name="h"/> (up to its first NUL). The bytes come from another process: never longer than the field.</summary>
    internal static string ReadKey(PgShmemHeader* h)
    {
        var bytes = new ReadOnlySpan<byte>(h->Key, KeyCapacity);
        int n = bytes.IndexOf((byte)0);
        return Encoding.UTF8.GetString(n < 0 ? bytes : bytes[..n]);
    }
}
