/*-------------------------------------------------------------------------
 * IBufferManager.cs
 *   The read / write API that the shared buffer pool and a participant's
 *   local buffers have in common, so callers can use either.
 *
 * NOTES
 *   PostgreSQL's bufmgr.c routes every call on a buffer number through
 *   BufferIsLocal (a negative number is a local buffer, a positive one a
 *   shared buffer, 0 none) and calls into localbuf.c or the shared code.
 *   Here the two are separate objects with the same members: a caller that
 *   reads a relation holds an IBufferManager chosen by the relation's
 *   persistence (RelationUsesLocalBuffers), and buffer numbers keep
 *   PostgreSQL's signs, so BufferIsLocal still tells them apart.
 *
 *   Every member takes the calling participant first, as BufferPool's do:
 *   the shared pool counts pins per participant; the local pool checks
 *   that the caller is its owner.
 *
 *   Mirrors the buffer-number dispatch of src/backend/storage/buffer/bufmgr.c
 *   and src/include/storage/bufmgr.h.
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;

namespace PgIpc.Buffers;

/// <summary>A buffer manager: the shared <see cref="BufferPool"/> or a participant's <see cref="LocalBuffers"/>.</summary>
public interface IBufferManager
{
    /// <summary>Number of buffers (shared_buffers or temp_buffers).</summary>
    int NumBuffers { get; }

    /// <summary>The storage manager the buffers are read from and written to.</summary>
    Smgr Smgr { get; }

    /// <summary>
    /// Pins the block and returns its buffer number (ReadBufferExtended): positive for a shared buffer, negative
    /// for a local one. Normal reads it from disk unless resident; ZeroAndLock zeroes a non-resident page instead
    /// and returns it locked exclusive; Extend adds a zeroed block at the end of the fork (pass
    /// <see cref="BufferPool.NewBlock"/>). Local buffers ignore <paramref name="strategy"/>.
    /// </summary>
    int ReadBuffer(Participant me, uint relation, ForkNumber fork, long block,
        ReadBufferMode mode = ReadBufferMode.Normal, BufferAccessStrategy? strategy = null);

    /// <summary>Drops one pin (ReleaseBuffer).</summary>
    void ReleaseBuffer(Participant me, int buffer);

    /// <summary>Pins a buffer the participant already pins once more (IncrBufferRefCount).</summary>
    void IncrBufferRefCount(Participant me, int buffer);

    /// <summary>Drops every pin the participant holds; returns how many buffers it pinned.</summary>
    int ReleaseAllBuffers(Participant me);

    /// <summary>Takes or releases the content lock (LockBuffer); a no-op on a local buffer once its pin is checked.</summary>
    void LockBuffer(Participant me, int buffer, BufferLockMode mode);

    /// <summary>Takes the content lock exclusive if free now (ConditionalLockBuffer); always true on a local buffer.</summary>
    bool ConditionalLockBuffer(Participant me, int buffer);

    /// <summary>Marks the page dirty (MarkBufferDirty).</summary>
    void MarkBufferDirty(Participant me, int buffer);

    /// <summary>Writes the page if dirty (FlushOneBuffer); true when this call wrote it.</summary>
    bool FlushBuffer(Participant me, int buffer);

    /// <summary>The page of a pinned buffer (BufferGetPage).</summary>
    Span<byte> GetPage(Participant me, int buffer);

    /// <summary>The tag of a pinned buffer (BufferGetTag).</summary>
    BufferTag GetTag(Participant me, int buffer);

    /// <summary>This participant's pins of <paramref name="buffer"/>.</summary>
    int PinCount(Participant me, int buffer);

    /// <summary>True for a local buffer number (BufferIsLocal): local buffers are -1 .. -temp_buffers.</summary>
    static bool BufferIsLocal(int buffer) => buffer < 0;
}
