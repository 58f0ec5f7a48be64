/*-------------------------------------------------------------------------
 * Exceptions.cs
 *   Every error PgIpc raises on purpose, in the root namespace, so a
 *   consumer needs one `using PgIpc;` to catch them. Each carries the
 *   values that explain it.
 *
 * NOTES
 *   One convention, as .NET's own libraries draw the line:
 *     - The caller's code is wrong: ArgumentException and its kin for a
 *       bad argument, InvalidOperationException (or a typed subclass that
 *       names the rule: LWLockUsageException, LWLockNotHeldException,
 *       BufferUsageException) for a call in the wrong state, and
 *       ObjectDisposedException after a detach or dispose. Fix the code;
 *       do not catch these to go on.
 *     - The world is not as the call needs it: PgIpcException and its
 *       subclasses. Another process died holding a lock, shared memory
 *       written by another process is corrupt, the OS refused, a table is
 *       full, a segment is in use. These can happen with correct code and
 *       are worth catching (PostgreSQL's ERROR level; a broken invariant of
 *       this process's own state is Environment.FailFast, its PANIC).
 *-------------------------------------------------------------------------
 */
namespace PgIpc;

/// <summary>Base of every error PgIpc raises on purpose.</summary>
public class PgIpcException : Exception
{
    public PgIpcException(string message) : base(message) { }
    public PgIpcException(string message, Exception? inner) : base(message, inner) { }
}

/// <summary>An OS call failed. <see cref="Call"/> names it, <see cref="ErrorCode"/> is errno or GetLastError.</summary>
public sealed class PgIpcOsException : PgIpcException
{
    public string Call { get; }
    public int ErrorCode { get; }
    public string ErrorName { get; }

    public PgIpcOsException(string call, int errorCode, string errorName, string detail)
        : base($"{call} failed: {errorName} ({errorCode}){(detail.Length > 0 ? ": " + detail : "")}")
    {
        Call = call;
        ErrorCode = errorCode;
        ErrorName = errorName;
    }
}

/// <summary>A segment named by a handle or id does not exist (or is being removed).</summary>
public sealed class SharedMemoryNotFoundException : PgIpcException
{
    public SharedMemoryNotFoundException(string message) : base(message) { }
}

/// <summary>A cluster's segment exists and is in use by a live process.</summary>
public sealed class SharedMemoryInUseException : PgIpcException
{
    public int Pid { get; }
    public SharedMemoryInUseException(string segment, int pid, long attached)
        : base($"pre-existing shared memory block is still in use by pid {pid} (segment {segment}, {attached} process(es) attached); stop that process or remove the segment first")
    {
        Pid = pid;
    }
}

/// <summary>The segment has no room for a request (PostgreSQL's "out of shared memory").</summary>
public sealed class OutOfSharedMemoryException : PgIpcException
{
    public long Requested { get; }
    public long Available { get; }
    public OutOfSharedMemoryException(string what, long requested, long available)
        : base($"out of shared memory: {what} asked for {requested} bytes, {available} bytes left")
    {
        Requested = requested;
        Available = available;
    }
}

/// <summary>A handle string is malformed, forged, or names a segment that does not match it.</summary>
public sealed class InvalidShmemHandleException : PgIpcException
{
    public InvalidShmemHandleException(string message) : base(message) { }
}
