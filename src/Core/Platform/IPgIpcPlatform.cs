/*-------------------------------------------------------------------------
 * IPgIpcPlatform.cs
 *   The operating-system services PgIpc's Core is built on.
 *
 * NOTES
 *   Core never calls the OS. Everything it needs from one (shared memory,
 *   process liveness, directory fsync) is behind these interfaces; src/Platform.Linux,
 *   src/Platform.Posix and src/Platform.Windows implement them. The
 *   implementations reference Core, so Core cannot reference them; it finds
 *   them at run time by assembly name (see PgIpcPlatform).
 *
 *   Mirrors the split PostgreSQL makes between src/backend/storage/ipc (what)
 *   and src/backend/port (how: sysv_shmem.c, win32_shmem.c, posix_sema.c).
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform;

/// <summary>One OS backend: the factory of every OS service Core uses.</summary>
public interface IPgIpcPlatform
{
    /// <summary>Short lower-case name used in handles and by the selector: "linux", "posix", "windows".</summary>
    string Name { get; }

    /// <summary>True when this backend can run on the current machine (asked by the selector).</summary>
    bool IsSupported { get; }

    /// <summary>Shared memory segments for this backend.</summary>
    ISharedMemoryProvider SharedMemory { get; }

    /// <summary>Process identity and liveness.</summary>
    IProcessServices Processes { get; }

    /// <summary>Per-slot sleep/wake semaphores (PGSemaphore) for LWLock waits.</summary>
    IProcSemaphoreProvider Semaphores { get; }

    /// <summary>Latch wake objects, wait-event sets, the supervisor-death watch and process interrupts.</summary>
    ILatchProvider Latches { get; }

    /// <summary>Dynamic shared memory segments (DSM) for this backend.</summary>
    IDsmProvider Dsm { get; }

    /// <summary>Directory fsync (the storage manager's, when it creates a file).</summary>
    IFileSync Files { get; }
}

/// <summary>Process identity and liveness checks (kill(pid, 0) / OpenProcess).</summary>
public interface IProcessServices
{
    /// <summary>This process's id.</summary>
    int CurrentProcessId { get; }

    /// <summary>
    /// Whether a process with this id runs, has exited unreaped (<see cref="ProcessLiveness.Zombie"/>, where the
    /// backend can tell), or does not exist. Never throws; a pid of 0 or below is <see cref="ProcessLiveness.Gone"/>.
    /// A pid the OS has given to a new process reports that process.
    /// </summary>
    ProcessLiveness GetLiveness(int pid);

    /// <summary>
    /// A number that tells this process apart from any later process given the same pid (its start time in the
    /// OS's units), or 0 when the backend cannot tell. Recorded when a participant joins, compared before a signal
    /// is sent to the pid recorded in a slot, so a reused pid never receives another process's interrupt. Never
    /// throws; 0 for a process that does not exist.
    /// </summary>
    long GetIdentity(int pid);

    /// <summary>
    /// Whether <paramref name="path"/> exists, is not a symbolic link (or other reparse point) and is owned by this
    /// process's effective user: the test before deleting anything a stale segment names (another process wrote it).
    /// Where the backend cannot read owners, only the link test is made.
    /// </summary>
    bool IsOwnedByCurrentUser(string path)
    {
        FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
        return info.Exists && info.LinkTarget is null && (info.Attributes & FileAttributes.ReparsePoint) == 0;
    }
}

/// <summary>What the OS itself knows about a segment, without attaching to it.</summary>
/// <param name="Exists">The segment exists.</param>
/// <param name="AttachCount">Number of attached mappings as the OS counts them (SysV nattch), or -1 when the OS does not keep one.</param>
/// <param name="CreatorPid">Pid the OS records as creator (SysV shm_cpid), or -1 when unknown.</param>
/// <param name="Size">Size in bytes, or -1 when unknown.</param>
/// <param name="MarkedForRemoval">The segment is marked for removal and can no longer be attached by a newcomer.</param>
public readonly record struct SegmentOsStatus(
    bool Exists,
    long AttachCount,
    int CreatorPid,
    long Size,
    bool MarkedForRemoval);

/// <summary>
/// Creates, attaches, inspects and removes shared memory segments.
/// A segment is named by an opaque backend-specific id string (a SysV shmid, a POSIX
/// shm name, a Windows mapping name); Core stores it in its handles unchanged.
/// </summary>
public interface ISharedMemoryProvider
{
    /// <summary>The largest name, in bytes, this backend accepts for a segment id.</summary>
    int MaxIdLength { get; }

    /// <summary>
    /// The ids a segment for a cluster key with hash <paramref name="keyHash"/> could have, in the order the
    /// backend would try them when creating (SysV tries successive keys on collision).
    /// </summary>
    IEnumerable<string> CandidateIds(ulong keyHash);

    /// <summary>
    /// Creates a new segment of <paramref name="size"/> bytes with the exact <paramref name="id"/>
    /// (one of <see cref="CandidateIds"/>). Returns null when an object with that id already exists.
    /// The new segment is zero-filled and mapped read-write.
    /// </summary>
    IMappedSegment? TryCreate(string id, long size);

    /// <summary>
    /// <see cref="TryCreate(string, long)"/> with the main segment's creation options (huge pages). A backend that
    /// cannot use huge pages creates the segment with normal pages for <see cref="HugePages.Try"/> and
    /// <see cref="HugePages.Off"/>, and throws <see cref="PgIpcException"/> for <see cref="HugePages.On"/>.
    /// A page size this machine does not support is an <see cref="ArgumentException"/>.
    /// </summary>
    IMappedSegment? TryCreate(string id, long size, SharedMemoryOptions options)
    {
        options.Validate();
        if (options.Mode == HugePages.On)
            throw new PgIpcException($"could not create shared memory segment {id} of {size} bytes with huge pages: this backend cannot use huge pages; use HugePages.Try or HugePages.Off");
        return TryCreate(id, size);
    }

    /// <summary>Maps an existing segment. Throws <see cref="SharedMemoryNotFoundException"/> when it does not exist or is being removed.</summary>
    IMappedSegment Attach(string id);

    /// <summary>OS-level status without attaching.</summary>
    SegmentOsStatus QueryStatus(string id);

    /// <summary>
    /// Removes the segment's name so nobody new can attach; existing mappings stay valid until
    /// detached. Returns false when it did not exist, or (POSIX shm) when the object now at that name is a live
    /// creator's still being made (<see cref="ProbeCreation"/>): not the one the caller judged. On Windows, where a mapping lives as long
    /// as a handle to it, this only releases the creator's keep-alive handle.
    /// </summary>
    bool Remove(string id);

    /// <summary>Ids of every segment on this machine that may be a PgIpc one (for `pgipc cleanup`).</summary>
    IEnumerable<string> EnumerateCandidates();

    /// <summary>
    /// What the backend's creation lock says about the object at <paramref name="id"/>, for a backend whose creator
    /// holds one from the exclusive create until <see cref="IMappedSegment.CreationComplete"/>: a live creator still at
    /// work (<see cref="SegmentCreation.InProgress"/>: never remove it), or one that died before the object was
    /// <paramref name="minimumSize"/> bytes (<see cref="SegmentCreation.Abandoned"/>: nothing was written; with
    /// <paramref name="removeAbandoned"/> it is removed, under the lock, before this returns). Backends without such a
    /// lock (SysV, whose create and size are one call; Windows) answer <see cref="SegmentCreation.Unknown"/>.
    /// </summary>
    SegmentCreation ProbeCreation(string id, long minimumSize, bool removeAbandoned) => SegmentCreation.Unknown;

    /// <summary>
    /// Whether the segment at <paramref name="id"/> is owned by this process's effective user (SysV shm_perm.uid):
    /// only then are the OS objects and paths a stale segment records trusted. True where the backend cannot tell.
    /// </summary>
    bool IsOwnedByCurrentUser(string id) => true;
}

/// <summary>What <see cref="ISharedMemoryProvider.ProbeCreation"/> found.</summary>
public enum SegmentCreation
{
    /// <summary>The backend cannot tell, or nothing is there: the caller examines the header.</summary>
    Unknown,
    /// <summary>Nobody holds the creation lock and the object is big enough for a header: the caller examines the header.</summary>
    NotInProgress,
    /// <summary>A live process holds the creation lock: the segment is being created.</summary>
    InProgress,
    /// <summary>Nobody holds the creation lock and the object is smaller than the minimum: its creator died before writing anything.</summary>
    Abandoned,
}

/// <summary>One mapping of a segment into this process. Dispose detaches (shmdt / munmap / UnmapViewOfFile).</summary>
public interface IMappedSegment : IDisposable
{
    /// <summary>The segment's OS name or id.</summary>
    string Id { get; }

    /// <summary>Address of the mapping in this process; valid until Dispose.</summary>
    nint BaseAddress { get; }

    /// <summary>The size of the mapping, in bytes.</summary>
    long Size { get; }

    /// <summary>True when huge pages back the mapping (Linux SHM_HUGETLB, Windows SEC_LARGE_PAGES).</summary>
    bool HugePages { get; }

    /// <summary>The size in bytes of the pages backing the mapping: the huge page size when <see cref="HugePages"/>, else the system's page size.</summary>
    long PageSize => Environment.SystemPageSize;

    /// <summary>
    /// Called by the creator once the segment's header is written and published: a backend that holds a creation
    /// lock from the exclusive create on (POSIX shm) releases it here. Dispose releases it too.
    /// </summary>
    void CreationComplete() { }
}
