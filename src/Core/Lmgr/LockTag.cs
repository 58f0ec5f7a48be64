/*-------------------------------------------------------------------------
 * LockTag.cs
 *   What the heavyweight lock manager locks (the lock tag), the eight
 *   table-lock modes and their conflict table, and the small enums of its
 *   API (scope, acquire result).
 *
 * NOTES
 *   A tag is 20 bytes: four 32-bit fields, a user kind number and a type.
 *   The meaning of the fields depends on the type, as PostgreSQL's LOCKTAG
 *   (locktag_field1..4 and locktag_type) does:
 *
 *     Relation   database, relation
 *     Page       database, relation, block
 *     Tuple      database, relation, block, offset
 *     Object     database, class id, object id, sub-id
 *     Advisory   key high 32 bits, key low 32 bits, -, 1 (one 64-bit key)
 *                                             or 2 (two 32-bit keys)
 *     User       four fields of the user's, kind = the user's number
 *
 *   Tags are compared and hashed bytewise in shared memory, so every byte
 *   is set (the padding byte is zero). The default tag (type 0) is not a
 *   tag: every API call rejects it with an ArgumentException.
 *
 *   Modes and the conflict table are PostgreSQL's (lock.c LockConflicts),
 *   numbered 1..8 so a mode is a bit of a 32-bit mask (LOCKBIT_ON).
 *   AccessShare, RowShare and RowExclusive are the "weak" relation modes
 *   that the fast path may record; Share and above are "strong" and force
 *   every weak holder of the relation into the main table first
 *   (LockManager.FastPath.cs).
 *
 *   Mirrors src/include/storage/lock.h, lockdefs.h and the top of
 *   src/backend/storage/lmgr/lock.c.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PgIpc.Lmgr;

/// <summary>The kind of object a <see cref="LockTag"/> names (locktag_type).</summary>
public enum LockTagType : byte
{
    /// <summary>Not a tag (the default value).</summary>
    Invalid = 0,
    /// <summary>A whole relation: database, relation.</summary>
    Relation = 1,
    /// <summary>One page of a relation: database, relation, block.</summary>
    Page = 2,
    /// <summary>One tuple: database, relation, block, offset.</summary>
    Tuple = 3,
    /// <summary>A non-relation object: database, class id, object id, sub-id.</summary>
    Object = 4,
    /// <summary>An advisory lock on a user-chosen key (pg_advisory_lock).</summary>
    Advisory = 5,
    /// <summary>A user-defined tag: a kind number and four 32-bit fields.</summary>
    User = 6,
}

/// <summary>
/// The eight table-lock modes (lockdefs.h), weakest first. Their conflicts are PostgreSQL's
/// (<see cref="LockModes.Conflicts"/>).
/// </summary>
public enum LockMode
{
    /// <summary>Not a mode.</summary>
    NoLock = 0,
    /// <summary>SELECT.</summary>
    AccessShare = 1,
    /// <summary>SELECT FOR UPDATE / FOR SHARE.</summary>
    RowShare = 2,
    /// <summary>INSERT, UPDATE, DELETE.</summary>
    RowExclusive = 3,
    /// <summary>VACUUM, ANALYZE, CREATE INDEX CONCURRENTLY.</summary>
    ShareUpdateExclusive = 4,
    /// <summary>CREATE INDEX.</summary>
    Share = 5,
    /// <summary>Like Exclusive but allows RowShare.</summary>
    ShareRowExclusive = 6,
    /// <summary>Blocks RowShare and SELECT ... FOR UPDATE.</summary>
    Exclusive = 7,
    /// <summary>ALTER TABLE, DROP TABLE, VACUUM FULL: conflicts with everything.</summary>
    AccessExclusive = 8,
}

/// <summary>Whose lifetime a lock follows (a transaction-level or a session-level lock).</summary>
public enum LockScope
{
    /// <summary>Released by <c>ReleaseAll(LockScope.Transaction)</c> (the end of a unit of work) and when the participant leaves.</summary>
    Transaction = 0,
    /// <summary>Released only explicitly, by <c>ReleaseAll(LockScope.Session)</c> or when the participant leaves.</summary>
    Session = 1,
}

/// <summary>What <c>LockManager.Acquire</c> did (LockAcquireResult).</summary>
public enum LockAcquireResult
{
    /// <summary>The request could not be granted at once and the caller asked not to wait (LOCKACQUIRE_NOT_AVAIL).</summary>
    NotAvailable = 0,
    /// <summary>Granted now (LOCKACQUIRE_OK).</summary>
    Granted = 1,
    /// <summary>This participant already held the lock in this mode; its count went up (LOCKACQUIRE_ALREADY_HELD).</summary>
    AlreadyHeld = 2,
}

/// <summary>The conflict table and the names of the modes.</summary>
public static class LockModes
{
    /// <summary>Highest mode number.</summary>
    public const int Count = 8;

    /// <summary>LOCKBIT_ON: the mask bit of <paramref name="mode"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Bit(LockMode mode) => 1 << (int)mode;

    // Bit i set: mode i conflicts. Index 0 (NoLock) conflicts with nothing.
    private static readonly int[] ConflictTable =
    [
        0,
        // AccessShare
        Bit(LockMode.AccessExclusive),
        // RowShare
        Bit(LockMode.Exclusive) | Bit(LockMode.AccessExclusive),
        // RowExclusive
        Bit(LockMode.Share) | Bit(LockMode.ShareRowExclusive) | Bit(LockMode.Exclusive) | Bit(LockMode.AccessExclusive),
        // ShareUpdateExclusive
        Bit(LockMode.ShareUpdateExclusive) | Bit(LockMode.Share) | Bit(LockMode.ShareRowExclusive) | Bit(LockMode.Exclusive) | Bit(LockMode.AccessExclusive),
        // Share
        Bit(LockMode.RowExclusive) | Bit(LockMode.ShareUpdateExclusive) | Bit(LockMode.ShareRowExclusive) | Bit(LockMode.Exclusive) | Bit(LockMode.AccessExclusive),
        // ShareRowExclusive
        Bit(LockMode.RowExclusive) | Bit(LockMode.ShareUpdateExclusive) | Bit(LockMode.Share) | Bit(LockMode.ShareRowExclusive) | Bit(LockMode.Exclusive) | Bit(LockMode.AccessExclusive),
        // Exclusive
        Bit(LockMode.RowShare) | Bit(LockMode.RowExclusive) | Bit(LockMode.ShareUpdateExclusive) | Bit(LockMode.Share) | Bit(LockMode.ShareRowExclusive) | Bit(LockMode.Exclusive) | Bit(LockMode.AccessExclusive),
        // AccessExclusive
        Bit(LockMode.AccessShare) | Bit(LockMode.RowShare) | Bit(LockMode.RowExclusive) | Bit(LockMode.ShareUpdateExclusive) | Bit(LockMode.Share) | Bit(LockMode.ShareRowExclusive) | Bit(LockMode.Exclusive) | Bit(LockMode.AccessExclusive),
    ];

    private static readonly string[] Names =
    [
        "NoLock", "AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
        "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock",
    ];


    /// <summary>The modes <paramref name="mode"/> conflicts with, as a mask of <see cref="Bit"/>s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ConflictMask(LockMode mode) => ConflictTable[(int)mode];

    /// <summary>True when a holder of <paramref name="a"/> blocks a request for <paramref name="b"/> (the table is symmetric).</summary>
    public static bool Conflicts(LockMode a, LockMode b)
    {
        Validate(a);
        Validate(b);
        return (ConflictTable[(int)a] & Bit(b)) != 0;
    }

    /// <summary>PostgreSQL's name of the mode ("AccessShareLock", ...), as pg_locks shows it.</summary>
    public static string NameOf(LockMode mode) => (uint)mode <= Count ? Names[(int)mode] : $"mode {(int)mode}";

    /// <summary>Throws ArgumentOutOfRangeException unless <paramref name="mode"/> is one of the eight modes.</summary>
    public static void Validate(LockMode mode)
    {
        if ((uint)mode - 1 >= Count)
            ThrowBadMode(mode);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBadMode(LockMode mode)
        => throw new ArgumentOutOfRangeException(nameof(mode), mode, $"lock mode {(int)mode} is not one of the eight modes (1 AccessShare .. 8 AccessExclusive)");
}

/// <summary>
/// What a heavyweight lock names (LOCKTAG): a type, an optional user kind, and four 32-bit fields whose meaning
/// depends on the type. Make one with the static factories. 20 bytes, compared bytewise.
/// </summary>
[Shmem.SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 20)]
public readonly struct LockTag : IEquatable<LockTag>
{
    /// <summary>First field (relation tags: the database).</summary>
    public readonly uint Field1;
    /// <summary>Second field (relation tags: the relation).</summary>
    public readonly uint Field2;
    /// <summary>Third field (page and tuple tags: the block).</summary>
    public readonly uint Field3;
    /// <summary>Fourth field (tuple tags: the offset; advisory tags: 1 for one 64-bit key, 2 for two 32-bit keys).</summary>
    public readonly uint Field4;
    /// <summary>The user's kind number (<see cref="LockTagType.User"/> tags; 0 otherwise).</summary>
    public readonly ushort Kind;
    /// <summary>The type of object.</summary>
    public readonly LockTagType Type;
    private readonly byte _zero;

    private LockTag(LockTagType type, uint f1, uint f2, uint f3, uint f4, ushort kind = 0)
    {
        Field1 = f1;
        Field2 = f2;
        Field3 = f3;
        Field4 = f4;
        Kind = kind;
        Type = type;
        _zero = 0;
    }

    /// <summary>A whole relation (SET_LOCKTAG_RELATION).</summary>
    public static LockTag Relation(uint database, uint relation) => new(LockTagType.Relation, database, relation, 0, 0);

    /// <summary>A page of a relation (SET_LOCKTAG_PAGE).</summary>
    public static LockTag Page(uint database, uint relation, uint block) => new(LockTagType.Page, database, relation, block, 0);

    /// <summary>A tuple (SET_LOCKTAG_TUPLE).</summary>
    public static LockTag Tuple(uint database, uint relation, uint block, ushort offset) => new(LockTagType.Tuple, database, relation, block, offset);

    /// <summary>A non-relation object (SET_LOCKTAG_OBJECT).</summary>
    public static LockTag Object(uint database, uint classId, uint objectId, ushort subId = 0) => new(LockTagType.Object, database, classId, objectId, subId);

    /// <summary>An advisory lock on one 64-bit key (pg_advisory_lock(bigint)).</summary>
    public static LockTag Advisory(long key) => new(LockTagType.Advisory, (uint)((ulong)key >> 32), (uint)key, 0, 1);

    /// <summary>An advisory lock on two 32-bit keys (pg_advisory_lock(int, int)).</summary>
    public static LockTag Advisory(int key1, int key2) => new(LockTagType.Advisory, (uint)key1, (uint)key2, 0, 2);

    /// <summary>A user-defined tag: the user's kind number (1..65535) and up to four 32-bit fields.</summary>
    public static LockTag User(ushort kind, uint field1, uint field2 = 0, uint field3 = 0, uint field4 = 0)
    {
        if (kind == 0)
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "a user lock tag's kind is 1..65535 (0 is reserved)");
        return new(LockTagType.User, field1, field2, field3, field4, kind);
    }

    /// <summary>True for a tag made by one of the factories (not the default value).</summary>
    public bool IsValid => Type is > LockTagType.Invalid and <= LockTagType.User;

    /// <summary>The advisory key of a one-key advisory tag.</summary>
    public long AdvisoryKey => (long)(((ulong)Field1 << 32) | Field2);

    /// <summary>pg_locks' locktype column ("relation", "page", "tuple", "object", "advisory", "userlock").</summary>
    public string TypeName => Type switch
    {
        LockTagType.Relation => "relation",
        LockTagType.Page => "page",
        LockTagType.Tuple => "tuple",
        LockTagType.Object => "object",
        LockTagType.Advisory => "advisory",
        LockTagType.User => "userlock",
        _ => $"invalid({(int)Type})",
    };

    /// <inheritdoc/>
    public bool Equals(LockTag other)
        => Field1 == other.Field1 && Field2 == other.Field2 && Field3 == other.Field3 && Field4 == other.Field4
           && Kind == other.Kind && Type == other.Type;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is LockTag t && Equals(t);

    /// <inheritdoc/>
    public override int GetHashCode() => (int)HashOf(in this);

    /// <summary>
    /// The tag's hash (LockTagHashCode): the same in every process (plain arithmetic on the fields), its low four bits
    /// choose the lock partition. Used for the shared tables and the local one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint HashOf(in LockTag t)
    {
        ulong a = (((ulong)t.Field1 << 32) | t.Field2) * 0x9E3779B97F4A7C15UL;
        ulong b = ((((ulong)t.Field3 << 32) | t.Field4) ^ ((ulong)t.Kind << 40) ^ ((ulong)t.Type << 56)) * 0xC2B2AE3D27D4EB4FUL;
        ulong h = (a ^ ((b << 31) | (b >> 33))) * 0x94D049BB133111EBUL;
        h ^= h >> 29;
        h ^= h >> 32;
        return (uint)h;
    }

    /// <summary>True when both tags name the same object.</summary>
    public static bool operator ==(LockTag a, LockTag b) => a.Equals(b);

    /// <summary>True when the tags name different objects.</summary>
    public static bool operator !=(LockTag a, LockTag b) => !a.Equals(b);

    /// <summary>DescribeLockTag: "relation 5 of database 1", "advisory lock [42]", ...</summary>
    public override string ToString() => Type switch
    {
        LockTagType.Relation => $"relation {Field2} of database {Field1}",
        LockTagType.Page => $"page {Field3} of relation {Field2} of database {Field1}",
        LockTagType.Tuple => $"tuple ({Field3},{Field4}) of relation {Field2} of database {Field1}",
        LockTagType.Object => $"object {Field3} of class {Field2} of database {Field1}" + (Field4 != 0 ? $" (sub-id {Field4})" : ""),
        LockTagType.Advisory => Field4 == 1 ? $"advisory lock [{AdvisoryKey}]" : $"advisory lock [{(int)Field1},{(int)Field2}]",
        LockTagType.User => $"user lock kind {Kind} [{Field1},{Field2},{Field3},{Field4}]",
        _ => $"invalid lock tag (type {(int)Type})",
    };
}
