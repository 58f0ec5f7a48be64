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
 *   mapping. That alone would end a pinned segment with its creator, so a
 *   pin does what dsm_impl_pin_segment does: it duplicates a handle to the
 *   section into the supervisor process (OpenProcess with
 *   PROCESS_DUP_HANDLE, DuplicateHandle), and the control table records the
 *   handle's value there; the unpin, from any process, closes it inside the
 *   supervisor (DuplicateHandle with DUPLICATE_CLOSE_SOURCE). A pinned
 *   segment thus lives as long as the supervisor, as in PostgreSQL. The
 *   kernel closes a dead process's handles, so nothing is ever leaked.
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

    public unsafe long PinSegment(DsmImplementation kind, uint handle, int supervisorPid)
    {
        string name = NameOf(kind, handle, null);
        nint section = Win.OpenFileMappingW(Win.FILE_MAP_ALL_ACCESS, 0, name);
        if (section == 0)
            throw Win.Exception("OpenFileMappingW", Marshal.GetLastPInvokeError(), $"pinning {name}");
        try
        {
            nint supervisor = Win.OpenProcess(Win.PROCESS_DUP_HANDLE, 0, (uint)supervisorPid);
            if (supervisor == 0)
                throw Win.Exception("OpenProcess", Marshal.GetLastPInvokeError(), $"pinning {name} in the supervisor (pid {supervisorPid})");
            try
            {
                nint inSupervisor;
                if (Win.DuplicateHandle(Win.CurrentProcess, section, supervisor, &inSupervisor, 0, 0, Win.DUPLICATE_SAME_ACCESS) == 0)
                    throw Win.Exception("DuplicateHandle", Marshal.GetLastPInvokeError(), $"pinning {name} in the supervisor (pid {supervisorPid})");
                return inSupervisor;
            }
            finally
            {
                Win.CloseHandle(supervisor);
            }
        }
        finally
        {
            Win.CloseHandle(section);
        }
    }

    public unsafe void UnpinSegment(DsmImplementation kind, uint handle, int supervisorPid, long pinned)
    {
        Check(kind);
        if (pinned == 0)
            return;
        nint supervisor = Win.OpenProcess(Win.PROCESS_DUP_HANDLE, 0, (uint)supervisorPid);
        if (supervisor == 0)
            return; // the supervisor is gone, and with it every handle it held
        try
        {
            // Moved into this process (closing it in the supervisor) and closed here. PostgreSQL passes no target
            // process instead, which Wine refuses with ERROR_INVALID_HANDLE; a target works on both.
            nint local;
            if (Win.DuplicateHandle(supervisor, (nint)pinned, Win.CurrentProcess, &local, 0, 0, Win.DUPLICATE_CLOSE_SOURCE | Win.DUPLICATE_SAME_ACCESS) == 0)
                throw Win.Exception("DuplicateHandle", Marshal.GetLastPInvokeError(), $"unpinning {NameOf(kind, handle, null)} in the supervisor (pid {supervisorPid})");
            Win.CloseHandle(local);
        }
        finally
        {
            Win.CloseHandle(supervisor);
        }
    }

    private static void Check(DsmImplementation kind)
    {
        if (kind != DsmImplementation.Windows)
            throw new NotSupportedException($"dynamic shared memory implementation {kind} is not offered by the windows backend");
    }
}
