/*-------------------------------------------------------------------------
 * WindowsDsmProvider.cs
 *   Dynamic shared memory segments on Windows: named paging-file sections
 *   (PostgreSQL's dsm_impl_windows).
 *
 * NOTES
 *   Names are "Local\pgipc.dsm.<handle>". A section lives while any handle
 *   to it is open, so "remove" cannot delete it: the creating process keeps
 *   one extra keep-alive handle per segment it created (so the segment
 *   outlives the creator's own mapping, as a pinned segment must), and
 *   Remove closes that handle. The object then disappears with the last
 *   mapping. Where PostgreSQL duplicates the handle into the postmaster for
 *   a pinned segment, we keep it in the creating process: a pinned segment
 *   lives as long as that process, or as long as someone still maps it.
 *   The kernel closes a dead process's handles, so nothing is ever leaked.
 *
 *   A size the paging file cannot back (ERROR_NOT_ENOUGH_MEMORY,
 *   ERROR_COMMITMENT_LIMIT, ERROR_DISK_FULL) is DsmNoSpaceException.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Runtime.InteropServices;
using Win = PgIpc.Platform.Windows.Interop.Windows;

namespace PgIpc.Platform.Windows;

/// <summary>DSM through paging-file sections.</summary>
internal sealed class WindowsDsmProvider : IDsmProvider
{
    public const string NamePrefix = @"Local\pgipc.dsm.";
    private const int ERROR_DISK_FULL = 112;

    private readonly WindowsSharedMemory _shm = new();
    private readonly Dictionary<uint, SafeFileMappingHandle> _keepAlive = [];

    public IReadOnlyList<DsmImplementation> Implementations { get; } = [DsmImplementation.Windows];

    public string NameOf(DsmImplementation kind, uint handle, string? dataDirectory)
    {
        Check(kind);
        return NamePrefix + handle.ToString(CultureInfo.InvariantCulture);
    }

    public IMappedSegment? Create(DsmImplementation kind, uint handle, long size, string? dataDirectory)
    {
        string name = NameOf(kind, handle, dataDirectory);
        IMappedSegment? seg;
        try
        {
            seg = _shm.TryCreate(name, size);
        }
        catch (PgIpcOsException e) when (e.ErrorCode is Win.ERROR_NOT_ENOUGH_MEMORY or Win.ERROR_COMMITMENT_LIMIT or ERROR_DISK_FULL or Win.ERROR_INVALID_PARAMETER)
        {
            throw new DsmNoSpaceException($"could not create shared memory segment \"{name}\" of {size} bytes: {e.ErrorName} (the paging file cannot back it)", size, e);
        }
        if (seg is null)
            return null;
        nint h = Win.OpenFileMappingW(Win.FILE_MAP_ALL_ACCESS, 0, name);
        if (h == 0)
        {
            int err = Marshal.GetLastPInvokeError();
            seg.Dispose();
            throw Win.Exception("OpenFileMappingW", err, $"keeping {name} alive");
        }
        lock (_keepAlive)
        {
            if (_keepAlive.Remove(handle, out SafeFileMappingHandle? old))
                old.Dispose();
            _keepAlive[handle] = new SafeFileMappingHandle(h);
        }
        return seg;
    }

    public IMappedSegment Attach(DsmImplementation kind, uint handle, string? dataDirectory)
        => _shm.Attach(NameOf(kind, handle, dataDirectory));

    public bool Remove(DsmImplementation kind, uint handle, string? dataDirectory)
    {
        Check(kind);
        SafeFileMappingHandle? h;
        lock (_keepAlive)
            _keepAlive.Remove(handle, out h);
        if (h is null)
            return false;
        h.Dispose();
        return true;
    }

    private static void Check(DsmImplementation kind)
    {
        if (kind != DsmImplementation.Windows)
            throw new NotSupportedException($"dynamic shared memory implementation {kind} is not offered by the windows backend");
    }
}
