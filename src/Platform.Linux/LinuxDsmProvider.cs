/*-------------------------------------------------------------------------
 * LinuxDsmProvider.cs
 *   Dynamic shared memory segments on Linux: POSIX shm (the default), System
 *   V and mmap'd files (PostgreSQL's dsm_impl_posix / _sysv / _mmap).
 *
 * NOTES
 *   SysV kind reuses the main segment's SysVSharedMemory. The key is
 *   0x60000000 | (handle & 0x0FFFFFFF): positive, never IPC_PRIVATE and
 *   clear of the main segments' 0x5....... range, so `pgipc cleanup` never
 *   takes a DSM segment for a cluster. Two handles that share the low 28
 *   bits share a key; Create then reports "exists" and Core draws another
 *   handle, as dsm_create does on any collision. A size the kernel refuses
 *   (ENOMEM, ENOSPC: shmall / shmmni; EINVAL: shmmax) is reported as
 *   DsmNoSpaceException.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Platform.Posix;

namespace PgIpc.Platform.Linux;

/// <summary>DSM for the Linux backend: Posix, SysV and Mmap.</summary>
internal sealed class LinuxDsmProvider : PosixDsmProvider
{
    private readonly SysVSharedMemory _sysv = new();

    public override IReadOnlyList<DsmImplementation> Implementations { get; } =
        [DsmImplementation.Posix, DsmImplementation.SysV, DsmImplementation.Mmap];

    /// <summary>The SysV key of a handle (see file notes).</summary>
    public static int SysVKey(uint handle) => 0x60000000 | (int)(handle & 0x0FFFFFFF);

    public override string NameOf(DsmImplementation kind, uint handle, string? dataDirectory)
        => kind == DsmImplementation.SysV
            ? "0x" + SysVKey(handle).ToString("x8", CultureInfo.InvariantCulture)
            : base.NameOf(kind, handle, dataDirectory);

    public override IMappedSegment? Create(DsmImplementation kind, uint handle, long size, string? dataDirectory)
    {
        if (kind != DsmImplementation.SysV)
            return base.Create(kind, handle, size, dataDirectory);
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, "dynamic shared memory segment size must be positive");
        string key = NameOf(kind, handle, dataDirectory);
        try
        {
            return _sysv.TryCreate(key, size);
        }
        catch (PgIpcOsException e) when (e.Call == "shmget" && (e.ErrorCode == Errno.ENOMEM || e.ErrorCode == Errno.ENOSPC || e.ErrorCode == Errno.EINVAL))
        {
            throw new DsmNoSpaceException(
                $"could not create System V shared memory segment {key} of {size} bytes: {e.ErrorName} (kernel.shmmax / shmall / shmmni too small, or out of memory)", size, e);
        }
    }

    public override IMappedSegment Attach(DsmImplementation kind, uint handle, string? dataDirectory)
        => kind == DsmImplementation.SysV
            ? _sysv.Attach(NameOf(kind, handle, dataDirectory))
            : base.Attach(kind, handle, dataDirectory);

    public override bool Remove(DsmImplementation kind, uint handle, string? dataDirectory)
        => kind == DsmImplementation.SysV
            ? _sysv.Remove(NameOf(kind, handle, dataDirectory))
            : base.Remove(kind, handle, dataDirectory);
}
