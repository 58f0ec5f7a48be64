/*-------------------------------------------------------------------------
 * PosixDsmProvider.cs
 *   Dynamic shared memory segments on POSIX systems: shm_open objects and
 *   files under the data directory (PostgreSQL's dsm_impl_posix and
 *   dsm_impl_mmap).
 *
 * NOTES
 *   Posix kind reuses the main segment's PosixSharedMemory: exclusive
 *   shm_open, ftruncate, posix_fallocate on Linux (so a full /dev/shm is an
 *   error at create time, not a SIGBUS on first touch), mmap. Its ENOSPC is
 *   re-raised here as DsmNoSpaceException with PostgreSQL's wording.
 *
 *   Mmap kind: "<dataDir>/pg_dynshmem/mmap.<handle>", created exclusively
 *   with mode 0600 given to open itself (pg_dynshmem made 0700 by mkdir), sized and (on Linux) reserved with posix_fallocate so a
 *   full disk is reported at once, then mapped MAP_SHARED. The descriptor
 *   is a SafeFileHandle closed right after mmap.
 *
 *   Mirrors src/backend/storage/ipc/dsm_impl.c (dsm_impl_posix,
 *   dsm_impl_posix_resize, dsm_impl_mmap).
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using Microsoft.Win32.SafeHandles;
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>DSM through POSIX shared memory objects or files in pg_dynshmem.</summary>
internal class PosixDsmProvider : IDsmProvider
{
    public const string PosixNamePrefix = "/pgipc.dsm.";
    public const string MmapDirectory = "pg_dynshmem";
    public const string MmapFilePrefix = "mmap.";

    private readonly PosixSharedMemory _shm = new();
    private static readonly UnixFileSync s_files = new();

    public virtual IReadOnlyList<DsmImplementation> Implementations { get; } = [DsmImplementation.Posix, DsmImplementation.Mmap];

    public virtual string NameOf(DsmImplementation kind, uint handle, string? dataDirectory) => kind switch
    {
        DsmImplementation.Posix => PosixNamePrefix + handle.ToString(CultureInfo.InvariantCulture),
        DsmImplementation.Mmap => MmapPath(handle, dataDirectory),
        _ => throw Unsupported(kind),
    };

    public virtual IMappedSegment? Create(DsmImplementation kind, uint handle, long size, string? dataDirectory)
    {
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, "dynamic shared memory segment size must be positive");
        switch (kind)
        {
            case DsmImplementation.Posix:
            {
                string name = NameOf(kind, handle, dataDirectory);
                try
                {
                    return _shm.TryCreate(name, size);
                }
                catch (PgIpcOsException e) when (e.ErrorCode == Errno.ENOSPC || e.ErrorCode == Errno.EFBIG || e.ErrorCode == Errno.ENOMEM)
                {
                    throw new DsmNoSpaceException(
                        $"could not resize shared memory segment \"{name}\" to {size} bytes: No space left on device; /dev/shm is probably too small ({e.Message})", size, e);
                }
            }
            case DsmImplementation.Mmap:
                return CreateFile(handle, size, dataDirectory);
            default:
                throw Unsupported(kind);
        }
    }

    public virtual IMappedSegment Attach(DsmImplementation kind, uint handle, string? dataDirectory)
    {
        switch (kind)
        {
            case DsmImplementation.Posix:
                return _shm.Attach(NameOf(kind, handle, dataDirectory));
            case DsmImplementation.Mmap:
            {
                string path = MmapPath(handle, dataDirectory);
                SafeFileHandle fd;
                try
                {
                    fd = s_files.OpenPrivateFile(path, FileMode.Open, FileShare.ReadWrite, FileOptions.None); // O_NOFOLLOW
                }
                catch (FileNotFoundException)
                {
                    throw new SharedMemoryNotFoundException($"dynamic shared memory segment file {path} does not exist");
                }
                using (fd)
                {
                    long size = RandomAccess.GetLength(fd);
                    if (size <= 0)
                        throw new SharedMemoryNotFoundException($"dynamic shared memory segment file {path} is empty");
                    return Map(fd, path, size);
                }
            }
            default:
                throw Unsupported(kind);
        }
    }

    public virtual bool Remove(DsmImplementation kind, uint handle, string? dataDirectory)
    {
        switch (kind)
        {
            case DsmImplementation.Posix:
                return _shm.Remove(NameOf(kind, handle, dataDirectory));
            case DsmImplementation.Mmap:
            {
                string path = MmapPath(handle, dataDirectory);
                if (!File.Exists(path))
                    return false;
                File.Delete(path);
                return true;
            }
            default:
                throw Unsupported(kind);
        }
    }

    private static IMappedSegment? CreateFile(uint handle, long size, string? dataDirectory)
    {
        string path = MmapPath(handle, dataDirectory);
        s_files.CreatePrivateDirectory(Path.GetDirectoryName(path)!); // pg_dynshmem: 0700 from mkdir on
        SafeFileHandle fd;
        try
        {
            // 0600 given to open(O_CREAT | O_EXCL) itself: never a moment with the umask's 0644.
            fd = s_files.OpenPrivateFile(path, FileMode.CreateNew, FileShare.ReadWrite, FileOptions.None);
        }
        catch (IOException) when (File.Exists(path))
        {
            return null;
        }
        try
        {
            using (fd)
            {
                int raw = (int)fd.DangerousGetHandle();
                if (LibC.ftruncate(raw, size) != 0)
                {
                    int err = Errno.Last;
                    throw new DsmNoSpaceException($"could not resize dynamic shared memory file \"{path}\" to {size} bytes: {Errno.Exception("ftruncate", err, "").Message}", size);
                }
                if (OperatingSystem.IsLinux())
                {
                    int rc;
                    do { rc = LibC.posix_fallocate(raw, 0, size); } while (rc == Errno.EINTR);
                    if (rc != 0)
                        throw new DsmNoSpaceException($"could not reserve {size} bytes for dynamic shared memory file \"{path}\": {Errno.Exception("posix_fallocate", rc, "").Message}", size);
                }
                return Map(fd, path, size);
            }
        }
        catch
        {
            File.Delete(path);
            throw;
        }
    }

    private static unsafe IMappedSegment Map(SafeFileHandle fd, string id, long size)
    {
        if ((ulong)size > nuint.MaxValue)
            throw new DsmNoSpaceException($"dynamic shared memory segment {id} of {size} bytes is larger than the address space", size);
        void* p = LibC.mmap(null, (nuint)size, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, (int)fd.DangerousGetHandle(), 0);
        if (p == LibC.MAP_FAILED)
        {
            int err = Errno.Last;
            if (err == Errno.ENOMEM)
                throw new DsmNoSpaceException($"could not map dynamic shared memory segment {id} of {size} bytes: out of address space or memory", size, Errno.Exception("mmap", err, id));
            throw Errno.Exception("mmap", err, $"mapping {id} ({size} bytes)");
        }
        return new MmapSegment(id, new SafeMmapHandle(p, (nuint)size), size);
    }

    /// <summary>"&lt;dataDir&gt;/pg_dynshmem/mmap.&lt;handle&gt;".</summary>
    public static string MmapPath(uint handle, string? dataDirectory)
    {
        if (string.IsNullOrEmpty(dataDirectory))
            throw new ArgumentException("the mmap DSM implementation needs a data directory", nameof(dataDirectory));
        return Path.Combine(dataDirectory, MmapDirectory, MmapFilePrefix + handle.ToString(CultureInfo.InvariantCulture));
    }

    protected static NotSupportedException Unsupported(DsmImplementation kind)
        => new($"dynamic shared memory implementation {kind} is not offered by this backend");
}
