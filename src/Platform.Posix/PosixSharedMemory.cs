/*-------------------------------------------------------------------------
 * PosixSharedMemory.cs
 *   Main segment through shm_open + ftruncate + mmap (any POSIX system).
 *
 * NOTES
 *   Names are "/pgipc.<16 hex digits of the cluster key hash>": 23 bytes,
 *   within macOS's 31-byte PSHMNAMLEN, and a leading slash only, as
 *   portable shm_open names must be.
 *
 *   tmpfs (/dev/shm) hands out pages lazily: a segment larger than the free
 *   space maps fine and the process dies of SIGBUS on first touch of a page
 *   that cannot be backed. On Linux we therefore check statvfs first and
 *   reserve every page with posix_fallocate at create time, as PostgreSQL's
 *   dsm_impl_posix_resize does, turning a full /dev/shm into a clear error.
 *
 *   Huge pages: none. shm_open objects live on tmpfs, and mmap's
 *   MAP_HUGETLB is only for anonymous mappings and hugetlbfs files; a
 *   hugetlbfs file would need a mounted hugetlbfs (often absent, and its own
 *   naming and cleanup), and an anonymous MAP_HUGETLB mapping cannot be
 *   attached by an unrelated process. So HugePages.Try and Off create with
 *   normal pages and On is an error that names the linux backend, which
 *   has them (SysV SHM_HUGETLB).
 *
 *   POSIX keeps no attach count: Core's header attach table answers "is
 *   anyone attached". Descriptors are opened O_CLOEXEC; an attacher closes
 *   its descriptor right after mmap (the mapping keeps the object alive).
 *
 *   The creation lock. Creation is several calls (shm_open O_EXCL,
 *   ftruncate, posix_fallocate, mmap, then Core writes the header), so an
 *   object can exist with no header: 0 bytes before ftruncate, zeroes
 *   during a long posix_fallocate. Its header cannot say whether its
 *   creator lives (there is no pid yet), and a creator killed there left an
 *   object that no header examination recognises (an empty object cannot
 *   even be mapped). So the creator takes flock(LOCK_EX) on its descriptor
 *   right after the exclusive create and holds it until Core has published
 *   the header (IMappedSegment.CreationComplete, which unlocks explicitly:
 *   the mapping refers to the same open file description, so closing the
 *   descriptor alone would keep the lock until munmap) or gives up. flock belongs
 *   to the open file description, not the process: the kernel drops it when
 *   the creator dies, however it dies, and this process's other descriptors
 *   of the object (attach, inspection) do not disturb it, unlike fcntl
 *   locks. Everyone else only ever takes LOCK_SH | LOCK_NB (ProbeCreation,
 *   Remove), so they never block each other and never block a creator for
 *   longer than one check:
 *     - LOCK_SH refused: a live creator is at work; in use, never removed
 *       (Remove declines too, so even a caller that judged the object by its
 *       zero header cannot unlink it);
 *     - LOCK_SH granted and the object smaller than a header: its creator
 *       died before writing anything; unlinked while the shared lock is
 *       held, so no creator can be at work on it;
 *     - LOCK_SH granted otherwise: creation finished or died after sizing;
 *       Core's header examination decides (PreExistingSegment.cs).
 *   One window remains between the exclusive create and the creator's
 *   flock: a remover may find the new object empty and unlocked and unlink
 *   it. The creator therefore checks, once it holds the lock, that its
 *   object still has a name (on Linux /proc/self/fd/N reads "(deleted)"
 *   once unlinked; elsewhere the name must lead to an object whose shared
 *   lock is refused) and creates afresh if not. No time-based grace is
 *   needed anywhere. Where flock is refused on shm descriptors (some BSDs,
 *   macOS) the creator goes on unlocked and ProbeCreation answers Unknown:
 *   the header examination alone decides, as before.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>POSIX shared memory (shm_open / mmap / shm_unlink).</summary>
internal sealed unsafe class PosixSharedMemory : ISharedMemoryProvider
{
    public const string NamePrefix = "/pgipc.";
    private const string DevShm = "/dev/shm";

    /// <summary>macOS's PSHMNAMLEN; the strictest system we aim at.</summary>
    public int MaxIdLength => 31;

    public IEnumerable<string> CandidateIds(ulong keyHash)
    {
        yield return $"{NamePrefix}{keyHash:x16}";
    }

    /// <summary>
    /// Huge pages: none on this backend (file notes). Try and Off create with normal pages; On is a clear error.
    /// </summary>
    public IMappedSegment? TryCreate(string id, long size, SharedMemoryOptions options)
    {
        options.Validate();
        if (options.Mode == HugePages.On)
            throw new PgIpcException($"could not create shared memory segment {id} of {size} bytes with huge pages on: the posix backend cannot use huge pages " +
                "(its shm_open objects live on tmpfs, where MAP_HUGETLB does not apply); huge pages need the linux backend (SysV SHM_HUGETLB), or use HugePages.Try or HugePages.Off");
        return TryCreate(id, size);
    }

    public IMappedSegment? TryCreate(string id, long size)
    {
        ValidateId(id);
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, "shared memory segment size must be positive");
        CheckRoom(size);

        for (int attempt = 0; ; attempt++)
        {
            int fd = LibC.shm_open(id, LibC.O_RDWR | LibC.O_CREAT | LibC.O_EXCL | LibC.O_CLOEXEC, 0x180 /* 0600 */);
            if (fd < 0)
            {
                int err = Errno.Last;
                if (err == Errno.EEXIST)
                    return null;
                throw Errno.Exception("shm_open", err, $"creating {id}");
            }
            bool locked;
            try
            {
                locked = LockForCreation(fd, id);
            }
            catch
            {
                LibC.close(fd);
                LibC.shm_unlink(id);
                throw;
            }
            if (locked && !StillNamed(fd, id))
            {
                // A remover found it empty and unlocked before our flock and unlinked it (file notes): not ours to
                // unlink again. Create afresh.
                LibC.close(fd);
                if (attempt < 4)
                    continue;
                throw new PgIpcException($"could not create shared memory segment {id}: it was removed under its creator {attempt + 1} times");
            }
            return SizeAndMap(fd, id, size, locked);
        }
    }

    /// <summary>ftruncate, posix_fallocate and mmap the new object; with <paramref name="locked"/> its descriptor (and lock) go to the mapping.</summary>
    private static IMappedSegment SizeAndMap(int fd, string id, long size, bool locked)
    {
        try
        {
            if (LibC.ftruncate(fd, size) != 0)
                throw Errno.Exception("ftruncate", Errno.Last, $"sizing {id} to {size} bytes");
            if (OperatingSystem.IsLinux())
            {
                int rc;
                do { rc = LibC.posix_fallocate(fd, 0, size); } while (rc == Errno.EINTR);
                if (rc != 0)
                    throw Errno.Exception("posix_fallocate", rc, $"reserving {size} bytes for {id}" + (rc == Errno.ENOSPC ? $": {DevShm} is full" : ""));
            }
            IMappedSegment seg = Map(fd, id, size, keepLockFd: locked);
            if (!locked)
                LibC.close(fd);
            fd = -1;
            return seg;
        }
        catch
        {
            if (fd >= 0)
                LibC.close(fd);
            LibC.shm_unlink(id);
            throw;
        }
    }

    public IMappedSegment Attach(string id)
    {
        ValidateId(id);
        int fd = LibC.shm_open(id, LibC.O_RDWR | LibC.O_CLOEXEC, 0);
        if (fd < 0)
        {
            int err = Errno.Last;
            if (err == Errno.ENOENT)
                throw new SharedMemoryNotFoundException($"shared memory segment {id} does not exist");
            if (err == Errno.EACCES)
                throw ForeignObject.ShmName(id, "shm_open");
            throw Errno.Exception("shm_open", err, $"attaching {id}");
        }
        try
        {
            long size = LibC.lseek(fd, 0, LibC.SEEK_END);
            if (size < 0)
                throw Errno.Exception("lseek", Errno.Last, $"sizing {id}");
            if (size == 0)
                throw new SharedMemoryNotFoundException($"shared memory segment {id} is empty (its creator has not sized it, or died before)");
            return Map(fd, id, size);
        }
        finally
        {
            LibC.close(fd);
        }
    }

    public SegmentOsStatus QueryStatus(string id)
    {
        ValidateId(id);
        int fd = LibC.shm_open(id, LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        if (fd < 0)
        {
            int err = Errno.Last;
            if (err == Errno.ENOENT)
                return new SegmentOsStatus(false, -1, -1, -1, false);
            if (err == Errno.EACCES)
                throw ForeignObject.ShmName(id, "shm_open");
            throw Errno.Exception("shm_open", err, $"inspecting {id}");
        }
        long size = LibC.lseek(fd, 0, LibC.SEEK_END);
        LibC.close(fd);
        return new SegmentOsStatus(true, -1, -1, size, false);
    }

    public bool Remove(string id)
    {
        ValidateId(id);
        int fd = LibC.shm_open(id, LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        if (fd >= 0)
        {
            try
            {
                // The object now at this name is a live creator's, still being made: not the one the caller means.
                if (TryLock(fd, LibC.LOCK_SH) == LockResult.Held)
                    return false;
                return Unlink(id);
            }
            finally
            {
                LibC.close(fd); // drops the shared lock
            }
        }
        return Unlink(id);
    }

    /// <summary>
    /// Owner check of a stale segment before its records are trusted: where POSIX shm objects are files under
    /// /dev/shm (Linux), their owner is read there; elsewhere the backend cannot tell (true).
    /// </summary>
    public bool IsOwnedByCurrentUser(string id)
    {
        ValidateId(id);
        string path = "/dev/shm" + id;
        return !Directory.Exists("/dev/shm") || !File.Exists(path) || ForeignObject.IsOwnedByCurrentUser(path);
    }

    public SegmentCreation ProbeCreation(string id, long minimumSize, bool removeAbandoned)
    {
        ValidateId(id);
        int fd = LibC.shm_open(id, LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        if (fd < 0)
            return SegmentCreation.Unknown; // gone, or not ours to open: the header examination says which
        try
        {
            LockResult r = TryLock(fd, LibC.LOCK_SH);
            if (r == LockResult.Held)
                return SegmentCreation.InProgress;
            if (r == LockResult.Unsupported)
                return SegmentCreation.Unknown;
            long size = LibC.lseek(fd, 0, LibC.SEEK_END);
            if (size < 0 || size >= minimumSize)
                return SegmentCreation.NotInProgress;
            if (!removeAbandoned)
                return SegmentCreation.Abandoned;
            // Unlinked under the shared lock: no creator can be at work on it (file notes).
            return Unlink(id) ? SegmentCreation.Abandoned : SegmentCreation.Unknown;
        }
        finally
        {
            LibC.close(fd);
        }
    }

    private enum LockResult { Taken, Held, Unsupported }

    /// <summary>flock(<paramref name="op"/> | LOCK_NB): taken, held by someone else (EWOULDBLOCK), or refused on this descriptor.</summary>
    private static LockResult TryLock(int fd, int op)
    {
        while (true)
        {
            if (LibC.flock(fd, op | LibC.LOCK_NB) == 0)
                return LockResult.Taken;
            int err = Errno.Last;
            if (err == Errno.EINTR)
                continue;
            return err == Errno.EAGAIN ? LockResult.Held : LockResult.Unsupported;
        }
    }

    /// <summary>
    /// The creator's LOCK_EX on its new object. Others hold LOCK_SH for one check at a time, so a refusal is retried
    /// (for 10 s, then an error: someone is squatting a lock on our object). False where flock is refused on shm descriptors.
    /// </summary>
    private static bool LockForCreation(int fd, string id)
    {
        long deadline = Environment.TickCount64 + 10_000;
        while (true)
        {
            LockResult r = TryLock(fd, LibC.LOCK_EX);
            if (r != LockResult.Held)
                return r == LockResult.Taken;
            if (Environment.TickCount64 > deadline)
                throw new PgIpcOsException("flock", Errno.EAGAIN, "EAGAIN", $"another process holds a lock on the new shared memory object {id} for more than 10 s");
            Thread.Sleep(1);
        }
    }

    /// <summary>True when the object <paramref name="fd"/> (locked LOCK_EX by us) is still the one named <paramref name="id"/>.</summary>
    private static bool StillNamed(int fd, string id)
    {
        if (OperatingSystem.IsLinux())
        {
            try
            {
                string? target = new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
                if (target is not null)
                    return !target.EndsWith(" (deleted)", StringComparison.Ordinal);
            }
            catch (IOException)
            {
                // no /proc: the lock test below
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        int other = LibC.shm_open(id, LibC.O_RDONLY | LibC.O_CLOEXEC, 0);
        if (other < 0)
            return false;
        LockResult r = TryLock(other, LibC.LOCK_SH);
        LibC.close(other);
        return r == LockResult.Held; // refused by our LOCK_EX: the same object
    }

    private static bool Unlink(string id)
    {
        if (LibC.shm_unlink(id) == 0)
            return true;
        int err = Errno.Last;
        if (err == Errno.ENOENT)
            return false;
        throw Errno.Exception("shm_unlink", err, $"removing {id}");
    }

    public IEnumerable<string> EnumerateCandidates()
    {
        // Only Linux exposes POSIX shm objects as files; elsewhere there is no portable listing.
        if (!OperatingSystem.IsLinux() || !Directory.Exists(DevShm))
            yield break;
        foreach (string path in Directory.EnumerateFiles(DevShm, NamePrefix[1..] + "*"))
            yield return "/" + Path.GetFileName(path);
    }

    /// <summary>mmap the whole object; with <paramref name="keepLockFd"/> the mapping owns <paramref name="fd"/> (the creation lock) once mapped.</summary>
    private static IMappedSegment Map(int fd, string id, long size, bool keepLockFd = false)
    {
        if ((ulong)size > nuint.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(size), size, "segment larger than the address space");
        void* p = LibC.mmap(null, (nuint)size, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, fd, 0);
        if (p == LibC.MAP_FAILED)
            throw Errno.Exception("mmap", Errno.Last, $"mapping {id} ({size} bytes)");
        return new MmapSegment(id, new SafeMmapHandle(p, (nuint)size), size, keepLockFd ? new SafeFdHandle(fd) : null);
    }

    private static void CheckRoom(long size)
    {
        if (!OperatingSystem.IsLinux())
            return;
        LibC.statvfs_t st;
        if (LibC.statvfs(DevShm, &st) != 0)
            return; // no /dev/shm to ask; posix_fallocate still reports ENOSPC
        ulong avail = st.f_bavail * (st.f_frsize != 0 ? st.f_frsize : st.f_bsize);
        if ((ulong)size > avail)
            throw new PgIpcOsException("statvfs", Errno.ENOSPC, "ENOSPC",
                $"{DevShm} has {avail} bytes free, not enough for a {size}-byte segment (a container's /dev/shm is often 64 MB)");
    }

    private void ValidateId(string id)
    {
        ArgumentNullException.ThrowIfNull(id);
        if (id.Length < 2 || id[0] != '/' || id.IndexOf('/', 1) >= 0 || id.Contains('\0'))
            throw new ArgumentException($"POSIX shared memory name \"{id}\" must be '/' followed by a name without slashes", nameof(id));
        if (System.Text.Encoding.UTF8.GetByteCount(id) > MaxIdLength)
            throw new ArgumentException($"POSIX shared memory name \"{id}\" is longer than {MaxIdLength} bytes (macOS's limit)", nameof(id));
    }
}
