/*-------------------------------------------------------------------------
 * WindowsSharedMemory.cs
 *   Main segment through a named file mapping backed by the paging file,
 *   as PostgreSQL's win32_shmem.c.
 *
 * NOTES
 *   Names are "Local\PgIpc.<16 hex digits of the cluster key hash>" (the
 *   session namespace; Global\ would need SeCreateGlobalPrivilege).
 *
 *   A Windows kernel object lives exactly as long as some process holds a
 *   handle to it, and the kernel closes a dead process's handles. So there is
 *   no stale segment after a crash: if the name exists, somebody alive holds
 *   it. Remove therefore has nothing to delete; destroying is closing the
 *   creator's handle, and Core's header state (Destroyed) refuses late
 *   attachers while other processes still keep the object alive.
 *
 *   Each mapping object keeps its own section handle open next to its view,
 *   so the segment survives its creator detaching while others use it.
 *   Sizes above 4 GiB are passed as high and low DWORDs.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Platform.Windows.Interop;
using Win = PgIpc.Platform.Windows.Interop.Windows;

namespace PgIpc.Platform.Windows;

/// <summary>Named paging-file mappings (CreateFileMappingW / OpenFileMappingW / MapViewOfFile).</summary>
internal sealed unsafe class WindowsSharedMemory : ISharedMemoryProvider
{
    public const string NamePrefix = @"Local\PgIpc.";

    public int MaxIdLength => 260;

    public IEnumerable<string> CandidateIds(ulong keyHash)
    {
        yield return $"{NamePrefix}{keyHash:x16}";
    }

    public IMappedSegment? TryCreate(string id, long size)
    {
        ValidateId(id);
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, "shared memory segment size must be positive");
        uint high = (uint)((ulong)size >> 32);
        uint low = (uint)((ulong)size & 0xFFFFFFFF);
        nint h = Win.CreateFileMappingW(Win.INVALID_HANDLE_VALUE, null, Win.PAGE_READWRITE, high, low, id);
        int err = Marshal.GetLastPInvokeError();
        if (h == 0)
            throw Win.Exception("CreateFileMappingW", err, $"creating {id} of {size} bytes");
        var mapping = new SafeFileMappingHandle(h);
        if (err == Win.ERROR_ALREADY_EXISTS)
        {
            mapping.Dispose();
            return null;
        }
        return MapView(id, mapping, size);
    }

    public IMappedSegment Attach(string id)
    {
        ValidateId(id);
        nint h = Win.OpenFileMappingW(Win.FILE_MAP_ALL_ACCESS, 0, id);
        if (h == 0)
        {
            int err = Marshal.GetLastPInvokeError();
            if (err == Win.ERROR_FILE_NOT_FOUND)
                throw new SharedMemoryNotFoundException($"shared memory segment {id} does not exist");
            throw Win.Exception("OpenFileMappingW", err, $"attaching {id}");
        }
        return MapView(id, new SafeFileMappingHandle(h), -1);
    }

    public SegmentOsStatus QueryStatus(string id)
    {
        ValidateId(id);
        nint h = Win.OpenFileMappingW(Win.FILE_MAP_READ, 0, id);
        if (h == 0)
        {
            int err = Marshal.GetLastPInvokeError();
            if (err == Win.ERROR_FILE_NOT_FOUND)
                return new SegmentOsStatus(false, -1, -1, -1, false);
            throw Win.Exception("OpenFileMappingW", err, $"inspecting {id}");
        }
        Win.CloseHandle(h);
        return new SegmentOsStatus(true, -1, -1, -1, false);
    }

    /// <summary>Nothing to delete: the object goes with its last handle (see file notes). Reports whether it still exists.</summary>
    public bool Remove(string id) => QueryStatus(id).Exists;

    /// <summary>Windows leaves no orphaned mappings behind a crash, so there is never anything to clean.</summary>
    public IEnumerable<string> EnumerateCandidates() => [];

    private static IMappedSegment MapView(string id, SafeFileMappingHandle mapping, long size)
    {
        try
        {
            void* p = Win.MapViewOfFile(mapping.DangerousGetHandle(), Win.FILE_MAP_ALL_ACCESS, 0, 0, 0);
            if (p == null)
                throw Win.Exception("MapViewOfFile", Marshal.GetLastPInvokeError(), $"mapping {id}");
            var view = new SafeMapViewHandle(p);
            if (size < 0)
            {
                Win.MEMORY_BASIC_INFORMATION mbi;
                if (Win.VirtualQuery(p, &mbi, (nuint)sizeof(Win.MEMORY_BASIC_INFORMATION)) == 0)
                {
                    int err = Marshal.GetLastPInvokeError();
                    view.Dispose();
                    throw Win.Exception("VirtualQuery", err, $"sizing the view of {id}");
                }
                size = (long)mbi.RegionSize;
            }
            return new WindowsSegment(id, mapping, view, size);
        }
        catch
        {
            mapping.Dispose();
            throw;
        }
    }

    private static void ValidateId(string id)
    {
        ArgumentNullException.ThrowIfNull(id);
        if (id.Length == 0 || id.Length > 260 || id.Contains('\0'))
            throw new ArgumentException($"Windows mapping name \"{id}\" must be 1 to 260 characters without NUL", nameof(id));
    }
}

/// <summary>A section handle; CloseHandle on release.</summary>
internal sealed class SafeFileMappingHandle : SafeHandle
{
    public SafeFileMappingHandle(nint h) : base(0, ownsHandle: true) => SetHandle(h);
    public override bool IsInvalid => handle == 0 || handle == -1;
    protected override bool ReleaseHandle() => Win.CloseHandle(handle) != 0;
}

/// <summary>A mapped view; UnmapViewOfFile on release.</summary>
internal sealed unsafe class SafeMapViewHandle : SafeHandle
{
    public SafeMapViewHandle(void* p) : base(0, ownsHandle: true) => SetHandle((nint)p);
    public override bool IsInvalid => handle == 0;
    protected override bool ReleaseHandle() => Win.UnmapViewOfFile((void*)handle) != 0;
}

/// <summary>One mapping of a named section in this process: the view, and the section handle that keeps it alive.</summary>
internal sealed class WindowsSegment(string id, SafeFileMappingHandle mapping, SafeMapViewHandle view, long size) : IMappedSegment
{
    public string Id { get; } = id;
    public nint BaseAddress => view.DangerousGetHandle();
    public long Size { get; } = size;
    public bool HugePages => false;

    public void Dispose()
    {
        view.Dispose();
        mapping.Dispose();
    }
}
