/*-------------------------------------------------------------------------
 * IDsmProvider.cs
 *   The OS side of dynamic shared memory (DSM) segments: create, attach and
 *   remove a segment named by a 32-bit handle, in one of the
 *   implementation kinds a backend offers.
 *
 * NOTES
 *   Core (src/Core/Dsm) owns handles, reference counts and pinning; a
 *   provider only turns (kind, handle) into an OS object. Names:
 *     Posix    "/pgipc.dsm.<handle>"                  shm_open, /dev/shm on Linux
 *     SysV     key 0x60000000 | (handle & 0x0FFFFFFF)  shmget; two handles may
 *              share a key, which Create reports as "exists" and Core retries
 *     Mmap     "<dataDir>/pg_dynshmem/mmap.<handle>"   a file mapped MAP_SHARED
 *     Windows  "Local\pgipc.dsm.<handle>"             paging-file section
 *   Every name starts with "pgipc." so the CI leak counts and `pgipc
 *   cleanup` see them. A full /dev/shm or a size the OS cannot back is
 *   reported at create time as <see cref="DsmNoSpaceException"/>.
 *
 *   Mirrors the interface of src/backend/storage/ipc/dsm_impl.c
 *   (dsm_impl_op with DSM_OP_CREATE / ATTACH / DESTROY).
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform;

/// <summary>How a DSM segment is made (PostgreSQL's dynamic_shared_memory_type).</summary>
public enum DsmImplementation
{
    /// <summary>shm_open + ftruncate + posix_fallocate + mmap.</summary>
    Posix = 1,
    /// <summary>System V shmget / shmat.</summary>
    SysV = 2,
    /// <summary>A file under the data directory's pg_dynshmem, mapped MAP_SHARED.</summary>
    Mmap = 3,
    /// <summary>A paging-file section (CreateFileMappingW).</summary>
    Windows = 4,
    /// <summary>
    /// Pages of the main segment's reserved region (<see cref="Dsm.DsmOptions.MainRegionSize"/>,
    /// min_dynamic_shared_memory): no OS object. DsmSegment.Create picks it by itself while the region has room; it is
    /// never a cluster's implementation and no backend offers it.
    /// </summary>
    MainRegion = 5,
}

/// <summary>Creates, attaches and removes dynamic shared memory segments named by handle.</summary>
public interface IDsmProvider
{
    /// <summary>The kinds this backend offers; the first is its default.</summary>
    IReadOnlyList<DsmImplementation> Implementations { get; }

    /// <summary>The OS name of the segment <paramref name="handle"/> of <paramref name="kind"/> (for messages and inspection).</summary>
    string NameOf(DsmImplementation kind, uint handle, string? dataDirectory);

    /// <summary>
    /// Creates and maps a zero-filled segment of <paramref name="size"/> bytes. Returns null when an object with
    /// that name already exists (the caller picks another handle). Throws <see cref="DsmNoSpaceException"/> when
    /// the OS cannot back the size. <paramref name="dataDirectory"/> is required for <see cref="DsmImplementation.Mmap"/>.
    /// </summary>
    IMappedSegment? Create(DsmImplementation kind, uint handle, long size, string? dataDirectory);

    /// <summary>Maps an existing segment; throws <see cref="SharedMemoryNotFoundException"/> when there is none.</summary>
    IMappedSegment Attach(DsmImplementation kind, uint handle, string? dataDirectory);

    /// <summary>
    /// Removes the segment's name (existing mappings stay valid). False when there was nothing to remove.
    /// On Windows this closes the keep-alive handle the creating process holds.
    /// </summary>
    bool Remove(DsmImplementation kind, uint handle, string? dataDirectory);

    /// <summary>
    /// Makes a pinned segment outlive every process but the supervisor (dsm_impl_pin_segment). Only Windows needs it:
    /// a section lives while a handle is open, so a handle is duplicated into the supervisor process
    /// (<paramref name="supervisorPid"/>). Returns a value the control table keeps for <see cref="UnpinSegment"/>;
    /// 0 (the default) where the OS object lives until removed anyway.
    /// </summary>
    long PinSegment(DsmImplementation kind, uint handle, int supervisorPid) => 0;

    /// <summary>Undoes <see cref="PinSegment"/> from any process (dsm_impl_unpin_segment); <paramref name="pinned"/> is what it returned.</summary>
    void UnpinSegment(DsmImplementation kind, uint handle, int supervisorPid, long pinned) { }
}
