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
 *   POSIX keeps no attach count: Core's header attach table answers "is
 *   anyone attached". The descriptor is closed right after mmap; the mapping
 *   keeps the object alive. Descriptors are opened O_CLOEXEC.
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

    public IMappedSegment? TryCreate(string id, long size)
    {
        ValidateId(id);
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, "shared memory segment size must be positive");
        CheckRoom(size);

        int fd = LibC.shm_open(id, LibC.O_RDWR | LibC.O_CREAT | LibC.O_EXCL | LibC.O_CLOEXEC, 0x180 /* 0600 */);
        if (fd < 0)
        {
            int err = Errno.Last;
            if (err == Errno.EEXIST)
                return null;
            throw Errno.Exception("shm_open", err, $"creating {id}");
        }
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
            IMappedSegment seg = Map(fd, id, size);
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

    private static IMappedSegment Map(int fd, string id, long size)
    {
        if ((ulong)size > nuint.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(size), size, "segment larger than the address space");
        void* p = LibC.mmap(null, (nuint)size, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, fd, 0);
        if (p == LibC.MAP_FAILED)
            throw Errno.Exception("mmap", Errno.Last, $"mapping {id} ({size} bytes)");
        return new MmapSegment(id, new SafeMmapHandle(p, (nuint)size), size);
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
