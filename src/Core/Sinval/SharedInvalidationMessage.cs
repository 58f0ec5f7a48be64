/*-------------------------------------------------------------------------
 * SharedInvalidationMessage.cs
 *   One 16-byte message of the shared invalidation queue, and the delegate
 *   that consumes messages.
 *
 * NOTES
 *   PostgreSQL's SharedInvalidationMessage is a union of small structs
 *   (catcache, catalog, relcache, smgr, relmap, snapshot messages) whose
 *   first byte is a kind code, all fitting in 16 bytes. PgIpc does not
 *   know what its users cache, so the message is four 32-bit words whose
 *   meaning the user chooses: a kind, a database (or other scope), an
 *   object id and a payload (a hash value, a version, a second id). The
 *   queue copies messages bit for bit and never looks inside.
 *
 *   A message is plain data with no pointers or offsets, so it means the
 *   same thing in every process of the cluster.
 *
 *   Mirrors src/include/storage/sinval.h (SharedInvalidationMessage).
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Shmem;

namespace PgIpc.Sinval;

/// <summary>
/// One invalidation message (16 bytes, user-defined meaning). Layout:
/// <code>
///   0  Kind        what kind of thing is invalidated (PostgreSQL: catcache id &gt;= 0, or a negative
///                  code for relcache / smgr / relmap / snapshot messages)
///   4  DatabaseId  scope of the message (PostgreSQL: the database OID, 0 = shared)
///   8  ObjectId    what is invalidated (a relation id, a cache id, ...)
///  12  Payload     anything else (a hash value, a version number, a second id)
/// </code>
/// Written by the sender into the queue's ring under SInvalWriteLock; read by receivers under SInvalReadLock
/// (see <see cref="SinvalQueue"/>). Immutable while in the ring. A value: its fields are read-only; a message is made
/// with the constructor and copied whole into and out of the ring.
/// </summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential, Size = 16)]
public readonly struct SharedInvalidationMessage : IEquatable<SharedInvalidationMessage>
{
    /// <summary>The message kind (the user's own numbering).</summary>
    public readonly int Kind;
    /// <summary>The database the message is about.</summary>
    public readonly uint DatabaseId;
    /// <summary>The object the message is about.</summary>
    public readonly uint ObjectId;
    /// <summary>A value of the message's own.</summary>
    public readonly uint Payload;

    /// <summary>Creates a message.</summary>
    public SharedInvalidationMessage(int kind, uint databaseId, uint objectId, uint payload)
    {
        Kind = kind;
        DatabaseId = databaseId;
        ObjectId = objectId;
        Payload = payload;
    }

    /// <summary>True when every field of both messages is equal.</summary>
    public bool Equals(SharedInvalidationMessage other)
        => Kind == other.Kind && DatabaseId == other.DatabaseId && ObjectId == other.ObjectId && Payload == other.Payload;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is SharedInvalidationMessage m && Equals(m);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Kind, DatabaseId, ObjectId, Payload);

    /// <summary>True when both messages are equal.</summary>
    public static bool operator ==(SharedInvalidationMessage a, SharedInvalidationMessage b) => a.Equals(b);

    /// <summary>True when the messages differ.</summary>
    public static bool operator !=(SharedInvalidationMessage a, SharedInvalidationMessage b) => !a.Equals(b);

    /// <inheritdoc/>
    public override string ToString() => $"sinval(kind {Kind}, db {DatabaseId}, object {ObjectId}, payload {Payload})";
}

/// <summary>
/// Called once per message by <see cref="SinvalQueue.ReceiveAll"/> (PostgreSQL's invalFunction). The message is a
/// process-local copy; it may call ReceiveAll again (recursion is handled as PostgreSQL does).
/// </summary>
public delegate void SinvalConsumer(in SharedInvalidationMessage message);
