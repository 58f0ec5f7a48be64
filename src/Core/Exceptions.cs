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
using PgIpc.Buffers;
using PgIpc.Latch;
using PgIpc.Proc;

namespace PgIpc;

/// <summary>Base of every error PgIpc raises on purpose.</summary>
public class PgIpcException : Exception
{
    /// <summary>Creates the exception with its message.</summary>
    public PgIpcException(string message) : base(message) { }
    /// <summary>Creates the exception with its message and the exception that caused it.</summary>
    public PgIpcException(string message, Exception? inner) : base(message, inner) { }
}

/// <summary>An OS call failed. <see cref="Call"/> names it, <see cref="ErrorCode"/> is errno or GetLastError.</summary>
public sealed class PgIpcOsException : PgIpcException
{
    /// <summary>The system call that failed.</summary>
    public string Call { get; }
    /// <summary>The OS error code (errno, or the Windows error).</summary>
    public int ErrorCode { get; }
    /// <summary>The symbolic name of the error (ENOSPC, ERROR_ACCESS_DENIED).</summary>
    public string ErrorName { get; }

    /// <summary>Creates the exception for <paramref name="call"/>, failed with <paramref name="errorCode"/> (<paramref name="errorName"/>), and what was being done.</summary>
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
    /// <summary>Creates the exception with its message.</summary>
    public SharedMemoryNotFoundException(string message) : base(message) { }
}

/// <summary>A cluster's segment exists and is in use by a live process.</summary>
public sealed class SharedMemoryInUseException : PgIpcException
{
    /// <summary>The process that is still attached.</summary>
    public int Pid { get; }
    /// <summary>Creates the exception for <paramref name="segment"/>, still attached by process <paramref name="pid"/> (<paramref name="attached"/> attachments in all).</summary>
    public SharedMemoryInUseException(string segment, int pid, long attached)
        : base(pid > 0
            ? $"pre-existing shared memory block is still in use by pid {pid} (segment {segment}, {attached} process(es) attached); stop that process or remove the segment first"
            : $"pre-existing shared memory block {segment} is still being created by a live process (it holds the creation lock); wait for it or stop that process")
    {
        Pid = pid;
    }
}

/// <summary>
/// An OS object at one of a cluster's ids belongs to another user and this process may not read it (EACCES): it is
/// not this cluster's, and not ours to judge or remove. Create moves on to the next candidate id where the backend
/// has one (SysV keys), as PostgreSQL skips keys it cannot use; where it has none (POSIX names) this is the error.
/// </summary>
public sealed class SharedMemoryNotAccessibleException : PgIpcException
{
    /// <summary>The OS object's id (SysV key, POSIX name).</summary>
    public string Segment { get; }

    /// <summary>The owner's uid as the OS reports it, or -1 when it could not be read.</summary>
    public int OwnerUid { get; }

    /// <summary>Creates the exception for <paramref name="segment"/>, owned by user <paramref name="ownerUid"/>, and the OS's word.</summary>
    public SharedMemoryNotAccessibleException(string segment, int ownerUid, string detail)
        : base($"shared memory object {segment} exists but is owned by {(ownerUid >= 0 ? "uid " + ownerUid.ToString(System.Globalization.CultureInfo.InvariantCulture) : "another user")} and cannot be read by this process ({detail}); it is not this cluster's: its owner or root must remove it, or use another cluster key")
    {
        Segment = segment;
        OwnerUid = ownerUid;
    }
}

/// <summary>
/// A data directory this process would use is not private to its user (checkDataDir): owned by another user, or
/// open to the group beyond read and search, or to others at all. Its files would be readable or writable by
/// others, or planted by them; the cluster refuses to start rather than trust or expose them.
/// </summary>
public sealed class DataDirectoryPermissionException : PgIpcException
{
    /// <summary>The data directory.</summary>
    public string Path { get; }

    /// <summary>Its owner's uid, or -1 when the OS could not say.</summary>
    public long OwnerUid { get; }

    /// <summary>This process's effective uid.</summary>
    public long CurrentUid { get; }

    /// <summary>Its permission bits.</summary>
    public UnixFileMode Mode { get; }

    /// <summary>Creates the exception for <paramref name="path"/>, owned by <paramref name="ownerUid"/> while this process runs as <paramref name="currentUid"/>, with permissions <paramref name="mode"/>.</summary>
    public DataDirectoryPermissionException(string path, long ownerUid, long currentUid, UnixFileMode mode)
        : base(Describe(path, ownerUid, currentUid, mode))
    {
        Path = path;
        OwnerUid = ownerUid;
        CurrentUid = currentUid;
        Mode = mode;
    }

    private static string Describe(string path, long owner, long current, UnixFileMode mode)
    {
        string octal = Convert.ToString((int)mode & 0xFFF, 8).PadLeft(4, '0');
        return owner >= 0 && owner != current
            ? $"data directory \"{path}\" has wrong ownership: it is owned by uid {owner} (mode {octal}), and this process runs as uid {current}; " +
              $"start the cluster as the user that owns the data directory, or give it to uid {current} (chown -R {current} \"{path}\")"
            : $"data directory \"{path}\" has invalid permissions: mode {octal} (owner uid {owner}); it must be u=rwx (0700) or u=rwx,g=rx (0750); " +
              $"fix it with chmod 0700 \"{path}\"";
    }
}

/// <summary>The segment has no room for a request (PostgreSQL's "out of shared memory").</summary>
public sealed class OutOfSharedMemoryException : PgIpcException
{
    /// <summary>The bytes asked for.</summary>
    public long Requested { get; }
    /// <summary>The bytes that were left in the segment.</summary>
    public long Available { get; }
    /// <summary>Creates the exception for an allocation of <paramref name="requested"/> bytes for <paramref name="what"/> when <paramref name="available"/> were left.</summary>
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
    /// <summary>Creates the exception with its message.</summary>
    public InvalidShmemHandleException(string message) : base(message) { }
}

// ------------------------------------------------------------------
// Backends
// ------------------------------------------------------------------

/// <summary>The OS could not provide a DSM segment of the asked-for size (full /dev/shm, no memory, too large).</summary>
public sealed class DsmNoSpaceException : PgIpcException
{
    /// <summary>The bytes asked for.</summary>
    public long Requested { get; }

    /// <summary>Creates the exception with its message, the size asked for and the OS error, if any.</summary>
    public DsmNoSpaceException(string message, long requested, Exception? inner = null) : base(message, inner)
        => Requested = requested;
}

// ------------------------------------------------------------------
// Shared memory
// ------------------------------------------------------------------

/// <summary>
/// A value read from shared memory (an offset, count, length or index written by another process, or left by a dead
/// one) is out of range for the structure that holds it: the memory is corrupt, or was written by another layout.
/// Raised where the value is first read (attach, lookup, cleanup), before anything is read or written through it.
/// <see cref="Structure"/> names the structure ("ShmemIndex entry 3", "ProcGlobal", "shm_toc"), <see cref="Field"/>
/// the field ("offset", "MaxProcs").
/// </summary>
public sealed class ShmemCorruptException : PgIpcException
{
    /// <summary>The structure that holds the bad value, with its index where it is one of many.</summary>
    public string Structure { get; }

    /// <summary>The field whose value is out of range.</summary>
    public string Field { get; }

    /// <summary>Message "<paramref name="structure"/>: <paramref name="field"/> <paramref name="detail"/>" (the detail carries the values).</summary>
    public ShmemCorruptException(string structure, string field, string detail)
        : base($"{structure}: {field} {detail} (shared memory is corrupt)")
    {
        Structure = structure;
        Field = field;
    }
}

/// <summary>The shared hash table is full.</summary>
public sealed class SharedHashFullException : PgIpcException
{
    /// <summary>Creates the exception for the table <paramref name="table"/>, full at <paramref name="capacity"/> entries.</summary>
    public SharedHashFullException(string table, int capacity)
        : base($"shared hash table \"{table}\" is full: all {capacity} elements are in use") { }
}

// ------------------------------------------------------------------
// Locks and condition variables
// ------------------------------------------------------------------

/// <summary>The supervisor died while this participant waited (WL_EXIT_ON_PM_DEATH): the process should exit.</summary>
public sealed class SupervisorDiedException : PgIpcException
{
    /// <summary>Creates the exception.</summary>
    public SupervisorDiedException() : base("the cluster's supervisor process died; this process must exit") { }
}

/// <summary>A spinlock that stayed held for about a minute: its holder is probably dead.</summary>
public sealed class StuckSpinLockException : PgIpcException
{
    /// <summary>Creates the exception for the spinlock at <paramref name="where"/>, given up after <paramref name="delays"/> delays.</summary>
    public StuckSpinLockException(string where, int delays)
        : base($"stuck spinlock detected at {where} after {delays} delays: the holder has probably died; restart the cluster")
    { }
}

/// <summary>Releasing an LWLock the participant does not hold (misuse: an <see cref="InvalidOperationException"/>).</summary>
public sealed class LWLockNotHeldException : InvalidOperationException
{
    /// <summary>Creates the exception for a lock of tranche <paramref name="tranche"/> released by participant <paramref name="procNumber"/>, which did not hold it.</summary>
    public LWLockNotHeldException(string tranche, int procNumber)
        : base($"lock {tranche} is not held by participant {procNumber}") { }
}

/// <summary>Misuse of an LWLock (too many held, acquiring while waiting, bad mode): an <see cref="InvalidOperationException"/>.</summary>
public sealed class LWLockUsageException : InvalidOperationException
{
    /// <summary>Creates the exception with its message.</summary>
    public LWLockUsageException(string message) : base(message) { }
}

/// <summary>
/// A lock is held by a process that has died: waiting would never end. The lock stays held (the data it protects
/// may be half-changed); restart the cluster. <see cref="LockName"/> names the lock, <see cref="DeadPid"/> the process.
/// </summary>
public sealed class LockHolderDiedException : PgIpcException
{
    /// <summary>The lock: "LWLock &lt;tranche&gt;[index]" (or "... at offset 0x..."), or "spinlock &lt;where&gt;".</summary>
    public string LockName { get; }

    /// <summary>Pid of the dead holder.</summary>
    public int DeadPid { get; }

    /// <summary>The dead holder's participant slot, or -1 when the lock does not record one (spinlocks).</summary>
    public int DeadProcNumber { get; }

    /// <summary>Creates the exception for the lock <paramref name="lockName"/>, whose holder (process <paramref name="deadPid"/>, slot <paramref name="deadProcNumber"/> or -1 if unknown) died.</summary>
    public LockHolderDiedException(string lockName, int deadPid, int deadProcNumber = -1)
        : base($"{lockName} is held by process {deadPid}{(deadProcNumber >= 0 ? $" (participant {deadProcNumber})" : "")}, "
            + "which has died while holding it: the data it protects may be half-changed; restart the cluster")
    {
        LockName = lockName;
        DeadPid = deadPid;
        DeadProcNumber = deadProcNumber;
    }
}

// ------------------------------------------------------------------
// Participant slots
// ------------------------------------------------------------------

/// <summary>No slot of the asked-for kind is free ("sorry, too many clients already").</summary>
public sealed class NoFreeProcSlotException : PgIpcException
{
    /// <summary>The kind of slot that was asked for.</summary>
    public ProcKind Kind { get; }
    /// <summary>Creates the exception for a slot of <paramref name="kind"/>, all <paramref name="capacity"/> of which are taken.</summary>
    public NoFreeProcSlotException(ProcKind kind, int capacity)
        : base($"no free {kind} participant slot: all {capacity} are in use by live participants")
    {
        Kind = kind;
    }
}

// ------------------------------------------------------------------
// Latches and wait events
// ------------------------------------------------------------------

/// <summary>A wait event number or name registered twice in one class.</summary>
public sealed class DuplicateWaitEventException : PgIpcException
{
    /// <summary>The wait event whose registration clashed.</summary>
    public WaitEventId Event { get; }

    /// <summary>Creates the exception for <paramref name="id"/>, asked to be named <paramref name="name"/> while it is already named <paramref name="clash"/>.</summary>
    public DuplicateWaitEventException(WaitEventId id, string name, string clash)
        : base($"wait event 0x{id.Value:X8} \"{name}\" of class {id.Class} cannot be registered: {clash}")
    {
        Event = id;
    }
}

// ------------------------------------------------------------------
// Cluster, supervisor, modules
// ------------------------------------------------------------------

/// <summary>No free background worker slot (RegisterDynamicBackgroundWorker returning false in PostgreSQL).</summary>
public sealed class NoFreeBackgroundWorkerSlotException(int capacity)
    : PgIpcException($"no free background worker slot: all {capacity} are in use (raise MaxChildren)")
{
    /// <summary>The number of background worker slots (max_worker_processes).</summary>
    public int Capacity { get; } = capacity;
}

/// <summary>The cluster has no such module (or this process has not attached it).</summary>
public sealed class ModuleNotFoundException(string message) : PgIpcException(message);

// ------------------------------------------------------------------
// Dynamic shared memory
// ------------------------------------------------------------------

/// <summary>Every control table slot is taken ("too many dynamic shared memory segments").</summary>
public sealed class DsmSlotsExhaustedException : PgIpcException
{
    /// <summary>The number of dynamic shared memory slots.</summary>
    public int MaxSegments { get; }
    /// <summary>Creates the exception for a control segment with <paramref name="max"/> slots, all in use.</summary>
    public DsmSlotsExhaustedException(int max)
        : base($"too many dynamic shared memory segments: all {max} control slots are in use")
        => MaxSegments = max;
}

// ------------------------------------------------------------------
// shm_toc and shm_mq
// ------------------------------------------------------------------

/// <summary>The queue's shared memory looks corrupt (a message length no sender could have written).</summary>
public sealed class ShmMqCorruptException(string message) : PgIpcException(message);

/// <summary>The region does not hold a toc with the expected magic number.</summary>
public sealed class InvalidShmTocException : PgIpcException
{
    /// <summary>The magic number the caller expected.</summary>
    public ulong Expected { get; }
    /// <summary>The magic number found at the start of the segment.</summary>
    public ulong Found { get; }

    /// <summary>Creates the exception for a table of contents whose magic is <paramref name="found"/> instead of <paramref name="expected"/>, in <paramref name="size"/> bytes.</summary>
    public InvalidShmTocException(ulong expected, ulong found, long size)
        : base($"invalid magic number in shared memory table of contents: expected 0x{expected:x16}, found 0x{found:x16} (region of {size} bytes)")
    {
        Expected = expected;
        Found = found;
    }

    /// <summary>Creates the exception with its message.</summary>
    public InvalidShmTocException(string message) : base(message) { }
}

/// <summary>A toc's region has no room for another entry or chunk.</summary>
public sealed class ShmTocOutOfSpaceException : PgIpcException
{
    /// <summary>The bytes asked for.</summary>
    public long Requested { get; }
    /// <summary>The size of the space the table of contents manages.</summary>
    public long TotalBytes { get; }
    /// <summary>The bytes already allocated.</summary>
    public long AllocatedBytes { get; }
    /// <summary>The number of entries already in the table of contents.</summary>
    public int Entries { get; }

    /// <summary>Creates the exception for an allocation for <paramref name="what"/> that does not fit: sizes as in the properties, <paramref name="entryBytes"/> being the room the entries take.</summary>
    public ShmTocOutOfSpaceException(string what, long requested, long totalBytes, long allocatedBytes, int entries, long entryBytes)
        : base($"out of shared memory in toc: entries and chunks would meet ({what} of {requested} bytes; toc of {totalBytes} bytes " +
               $"has {entries} entries using {entryBytes} bytes at the front and {allocatedBytes} bytes of chunks at the back)")
    {
        Requested = requested;
        TotalBytes = totalBytes;
        AllocatedBytes = allocatedBytes;
        Entries = entries;
    }
}

// ------------------------------------------------------------------
// Parallel workers
// ------------------------------------------------------------------

/// <summary>A parallel worker reported an error, or died without reporting (the leader's rethrow).</summary>
public sealed class ParallelWorkerException(int workerNumber, string workerMessage, bool reported)
    : PgIpcException(reported
        ? $"parallel worker {workerNumber} failed: {workerMessage}"
        : $"parallel worker {workerNumber} terminated without reporting: {workerMessage}")
{
    /// <summary>Number of the worker (0..n-1).</summary>
    public int WorkerNumber { get; } = workerNumber;

    /// <summary>The worker's own message, or what the leader saw when it did not report.</summary>
    public string WorkerMessage { get; } = workerMessage;

    /// <summary>True when the worker sent its error; false when it died (or never started) without a word.</summary>
    public bool Reported { get; } = reported;
}

// ------------------------------------------------------------------
// Buffer pool, storage, checkpointer
// ------------------------------------------------------------------

/// <summary>Every local buffer is pinned: no victim for a new temporary page.</summary>
public sealed class NoEmptyLocalBufferException : PgIpcException
{
    /// <summary>Creates the exception for a pool of <paramref name="numBuffers"/> local buffers, all pinned.</summary>
    public NoEmptyLocalBufferException(int numBuffers)
        : base($"no empty local buffer available: all {numBuffers} local buffers (temp_buffers) are pinned") { }
}

/// <summary>Every buffer is pinned: no victim for a new page.</summary>
public sealed class NoUnpinnedBuffersException : PgIpcException
{
    /// <summary>Creates the exception for a pool of <paramref name="numBuffers"/> shared buffers, all pinned.</summary>
    public NoUnpinnedBuffersException(int numBuffers)
        : base($"no unpinned buffers available: all {numBuffers} shared buffers are pinned") { }
}

/// <summary>Misuse of a buffer (not pinned, not locked, bad number): an <see cref="InvalidOperationException"/>.</summary>
public sealed class BufferUsageException : InvalidOperationException
{
    /// <summary>Creates the exception with its message.</summary>
    public BufferUsageException(string message) : base(message) { }
}

/// <summary>A checkpoint the caller asked for with <see cref="CheckpointFlags.Wait"/> ended with an error.</summary>
public sealed class CheckpointRequestFailedException : PgIpcException
{
    /// <summary>Creates the exception, with what the checkpointer reported, if anything.</summary>
    public CheckpointRequestFailedException(string? detail)
        : base("checkpoint request failed" + (string.IsNullOrEmpty(detail) ? "" : $": {detail}")) { }
}

/// <summary>No checkpointer to serve a waiting request (none started in time, or it stopped or died meanwhile).</summary>
public sealed class CheckpointerNotRunningException : PgIpcException
{
    /// <summary>Creates the exception with its message.</summary>
    public CheckpointerNotRunningException(string message) : base(message) { }
}

/// <summary>
/// An fsync of a data file or directory failed (PANIC in PostgreSQL with data_sync_retry=off): the kernel may have
/// dropped the pages written since the last successful fsync and will not report it again, so a retried fsync
/// proves nothing. <see cref="PgIpc.Buffers.Checkpointer.Run"/> throws it after failing the checkpoint; a host must
/// treat it as fatal for the process (exit with a crash code so a supervisor does a crash restart), not retry.
/// </summary>
public sealed class DataSyncFailedException : PgIpcException
{
    /// <summary>The file or directory whose fsync failed.</summary>
    public string Path { get; }

    /// <summary>Creates the exception for the file <paramref name="path"/> whose fsync failed with <paramref name="inner"/>.</summary>
    public DataSyncFailedException(string path, Exception inner)
        : base($"could not fsync file \"{path}\": {inner.Message}", inner) => Path = path;
}

/// <summary>A block the storage manager cannot read or write (missing file, short read, I/O error).</summary>
public sealed class SmgrException : PgIpcException
{
    /// <summary>The page the operation was on.</summary>
    public BufferTag Tag { get; }

    /// <summary>Creates the exception for the page <paramref name="tag"/> with its message and the I/O error, if any.</summary>
    public SmgrException(BufferTag tag, string message, Exception? inner = null)
        : base($"{message} ({tag})", inner) => Tag = tag;
}

/// <summary>A page read from disk whose checksum does not match.</summary>
public sealed class PageChecksumException : PgIpcException
{
    /// <summary>The page whose checksum did not match.</summary>
    public BufferTag Tag { get; }

    /// <summary>Creates the exception for the page <paramref name="tag"/> of file <paramref name="path"/>, whose stored checksum <paramref name="stored"/> is not the computed <paramref name="computed"/>.</summary>
    public PageChecksumException(BufferTag tag, ushort stored, ushort computed, string path)
        : base($"invalid page in block {tag.BlockNumber} of relation {tag.RelNumber} fork {tag.Fork} (file \"{path}\"): " +
               $"checksum on disk {stored}, computed {computed}") => Tag = tag;
}

// ------------------------------------------------------------------
// Memory contexts
// ------------------------------------------------------------------

/// <summary>
/// A request would take a context's subtree over its byte limit (its work_mem), or native memory is
/// exhausted (<see cref="Limit"/> is then -1). The context named is the one whose limit tripped.
/// </summary>
public sealed class MemoryContextLimitExceededException : PgIpcException
{
    /// <summary>The name of the memory context.</summary>
    public string ContextName { get; }
    /// <summary>The bytes asked for.</summary>
    public long Requested { get; }
    /// <summary>The context's byte budget.</summary>
    public long Limit { get; }
    /// <summary>Native bytes the limited context's subtree held when the request came.</summary>
    public long Allocated { get; }

    /// <summary>Creates the exception for <paramref name="requested"/> bytes asked of <paramref name="contextName"/>, which holds <paramref name="allocated"/> of its <paramref name="limit"/>.</summary>
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
    /// <summary>The address of the damaged chunk.</summary>
    public long Address { get; }

    /// <summary>Creates the exception for the chunk at <paramref name="address"/> of <paramref name="contextName"/>, and what was found wrong.</summary>
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
    /// <summary>The size asked for.</summary>
    public long Requested { get; }
    /// <summary>Creates the exception for <paramref name="requested"/> bytes asked of <paramref name="contextName"/>, and why the size is refused.</summary>
    public InvalidAllocRequestException(string contextName, long requested, string why)
        : base($"invalid memory alloc request size {requested} in context {contextName}: {why}")
    {
        Requested = requested;
    }
}

/// <summary>
/// The heavyweight lock tables are full ("out of shared memory" in PostgreSQL): more objects are locked at once than
/// max_locks_per_participant x participant slots allows. The request that found the table full left nothing behind.
/// </summary>
public sealed class LockTableFullException : PgIpcException
{
    /// <summary>The table that is full ("PgIpc.LockTable" or "PgIpc.ProcLockTable").</summary>
    public string Table { get; }

    /// <summary>Its capacity.</summary>
    public int Capacity { get; }

    /// <summary>The lock table <paramref name="table"/> of <paramref name="capacity"/> entries is full at <paramref name="maxLocksPerParticipant"/>.</summary>
    public LockTableFullException(string table, int capacity, int maxLocksPerParticipant)
        : base($"out of shared memory: increase max_locks_per_participant (the lock table \"{table}\" holds {capacity} entries, " +
               $"{maxLocksPerParticipant} per participant slot, and all are in use)")
    {
        Table = table;
        Capacity = capacity;
    }
}

/// <summary>
/// A heavyweight lock wait closed a cycle of waits (ERRCODE_T_R_DEADLOCK_DETECTED): this participant's request was
/// withdrawn so the others can go on. <see cref="Cycle"/> names every process, lock and mode of the cycle, the
/// message says who waits for what, blocked by whom, as PostgreSQL's does. The locks already held are still held.
/// </summary>
public sealed class DeadlockDetectedException : PgIpcException
{
    /// <summary>The cycle: element i waits for its lock, blocked by element i + 1 (the last by the first).</summary>
    public IReadOnlyList<Lmgr.DeadlockInfo> Cycle { get; }

    /// <summary>A deadlock whose waits-for cycle is <paramref name="cycle"/> (each process, the lock it waits for and the mode).</summary>
    public DeadlockDetectedException(IReadOnlyList<Lmgr.DeadlockInfo> cycle)
        : base(Describe(cycle))
    {
        Cycle = cycle;
    }

    private static string Describe(IReadOnlyList<Lmgr.DeadlockInfo> cycle)
    {
        var sb = new System.Text.StringBuilder("deadlock detected");
        for (int i = 0; i < cycle.Count; i++)
        {
            Lmgr.DeadlockInfo e = cycle[i];
            Lmgr.DeadlockInfo next = cycle[(i + 1) % cycle.Count];
            sb.Append(i == 0 ? ": " : " ")
              .Append($"Process {e.Pid} (participant {e.ProcNumber}) waits for {Lmgr.LockModes.NameOf(e.Mode)} on {e.Tag}; blocked by process {next.Pid} (participant {next.ProcNumber}).");
        }
        return sb.ToString();
    }
}

/// <summary>A heavyweight lock was not granted within lock_timeout; the request was withdrawn.</summary>
public sealed class LockTimeoutException : PgIpcException
{
    /// <summary>The lock waited for.</summary>
    public Lmgr.LockTag Tag { get; }

    /// <summary>The mode asked for.</summary>
    public Lmgr.LockMode Mode { get; }

    /// <summary>The wait for <paramref name="mode"/> on <paramref name="tag"/> passed lock_timeout (<paramref name="timeoutMs"/> ms).</summary>
    public LockTimeoutException(Lmgr.LockTag tag, Lmgr.LockMode mode, int timeoutMs)
        : base($"canceling the wait for {Lmgr.LockModes.NameOf(mode)} on {tag}: lock timeout ({timeoutMs} ms)")
    {
        Tag = tag;
        Mode = mode;
    }
}

// ------------------------------------------------------------------
// Cancel and terminate requests (Proc/ProcArray.Interrupts.cs, Proc/Participant.Interrupts.cs)
// ------------------------------------------------------------------

/// <summary>A participant's wait or interrupt check ended because another process asked: the slot and the asker.</summary>
public abstract class ParticipantInterruptedException : OperationCanceledException
{
    /// <summary>Creates the exception with its message, the interrupted slot and the pid that asked.</summary>
    protected ParticipantInterruptedException(string message, int procNumber, int requesterPid) : base(message)
    {
        ProcNumber = procNumber;
        RequesterPid = requesterPid;
    }

    /// <summary>The interrupted participant's slot.</summary>
    public int ProcNumber { get; }

    /// <summary>The process that asked (0 when unknown).</summary>
    public int RequesterPid { get; }
}

/// <summary>
/// A participant's wait or interrupt check ended because another process asked it to cancel
/// (<see cref="ProcArray.CancelParticipant"/>, pg_cancel_backend). The participant stays usable.
/// </summary>
public sealed class ParticipantCanceledException : ParticipantInterruptedException
{
    /// <summary>Creates the exception for slot <paramref name="procNumber"/>, canceled at the request of <paramref name="requesterPid"/>.</summary>
    public ParticipantCanceledException(int procNumber, int requesterPid)
        : base($"participant {procNumber} (pid {Environment.ProcessId}): canceling its wait at the request of pid {requesterPid}", procNumber, requesterPid)
    {
    }
}

/// <summary>
/// A participant was terminated at another process's request (<see cref="ProcArray.TerminateParticipant"/>,
/// pg_terminate_backend): its LWLocks are released and its slot given back. Thrown only in the supervisor's own
/// process; elsewhere the process exits with <see cref="ParticipantExitCodes.Terminated"/>.
/// </summary>
public sealed class ParticipantTerminatedException : ParticipantInterruptedException
{
    /// <summary>Creates the exception for slot <paramref name="procNumber"/>, terminated at the request of <paramref name="requesterPid"/>.</summary>
    public ParticipantTerminatedException(int procNumber, int requesterPid)
        : base($"participant {procNumber} (pid {Environment.ProcessId}): terminating at the request of pid {requesterPid}", procNumber, requesterPid)
    {
    }
}
