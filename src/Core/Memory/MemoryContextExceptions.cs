/*-------------------------------------------------------------------------
 * MemoryContextExceptions.cs
 *   Errors raised by memory contexts: a budget (work_mem-style limit)
 *   exceeded, native memory exhausted, and a corrupted or foreign chunk
 *   (overrun, double free, use after reset).
 *
 * NOTES
 *   PostgreSQL raises ERRCODE_OUT_OF_MEMORY "out of memory" with
 *   "Failed on request of size N in memory context X." (mcxt.c), and
 *   elog(WARNING/ERROR) on a bad sentinel or a bad chunk header (aset.c
 *   AllocSetCheck, mcxt.c pfree). Here each is a typed exception carrying
 *   the values so a caller (a sort, a hash join) can catch the budget one
 *   and spill to disk.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;

namespace PgIpc.Memory;

/// <summary>
/// A request would take a context's subtree over its byte limit (its work_mem), or native memory is
/// exhausted (<see cref="Limit"/> is then -1). The context named is the one whose limit tripped.
/// </summary>
public sealed class MemoryContextLimitExceededException : PgIpcException
{
    public string ContextName { get; }
    public long Requested { get; }
    public long Limit { get; }
    /// <summary>Native bytes the limited context's subtree held when the request came.</summary>
    public long Allocated { get; }

    public MemoryContextLimitExceededException(string contextName, long requested, long limit, long allocated)
        : base(limit >= 0
            ? $"out of memory in context {contextName}: requested {requested}, limit {limit}"
            : $"out of memory in context {contextName}: requested {requested}, native allocation failed")
    {
        ContextName = contextName;
        Requested = requested;
        Limit = limit;
        Allocated = allocated;
    }
}

/// <summary>A chunk's header or sentinel is wrong: an overrun, a double free, a use after reset, or a foreign pointer.</summary>
public sealed class MemoryChunkCorruptedException : PgIpcException
{
    /// <summary>The owning context's name, or "?" when the header is too damaged to find it.</summary>
    public string ContextName { get; }
    public long Address { get; }

    public MemoryChunkCorruptedException(string contextName, long address, string detail)
        : base($"memory chunk 0x{address:x} in context {contextName}: {detail}")
    {
        ContextName = contextName;
        Address = address;
    }
}

/// <summary>A request size is out of range (PostgreSQL's "invalid memory alloc request size").</summary>
public sealed class InvalidAllocRequestException : PgIpcException
{
    public long Requested { get; }
    public InvalidAllocRequestException(string contextName, long requested, string why)
        : base($"invalid memory alloc request size {requested} in context {contextName}: {why}")
    {
        Requested = requested;
    }
}
