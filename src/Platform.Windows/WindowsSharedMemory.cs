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
 *
 *   Large pages (HugePages.cs), as win32_shmem.c: the section is created
 *   with SEC_COMMIT | SEC_LARGE_PAGES and its size rounded up to
 *   GetLargePageMinimum(), which needs the SeLockMemoryPrivilege user right
 *   ("Lock pages in memory") held and enabled in the process token; we
 *   enable it with AdjustTokenPrivileges, which reports a right the account
 *   lacks as ERROR_NOT_ALL_ASSIGNED. Try asks when the segment is at least
 *   one large page and falls back quietly to normal pages on any refusal;
 *   On fails with an error that names the right; Off never asks. An
 *   attacher learns the page size from QueryWorkingSetEx (the LargePage bit
 *   of the view's first page).
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

    public IMappedSegment? TryCreate(string id, long size) => TryCreate(id, size, new SharedMemoryOptions(HugePages.Off));

    public IMappedSegment? TryCreate(string id, long size, SharedMemoryOptions options)
    {
        ValidateId(id);
        options.Validate();
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, "shared memory segment size must be positive");
        if (options.Mode != HugePages.Off)
        {
            long large = (long)Win.GetLargePageMinimum();
            if (options.HugePageSize != 0 && options.HugePageSize != large)
                throw new ArgumentException($"huge page size {SharedMemoryOptions.FormatSize(options.HugePageSize)} is not a supported huge page size on this machine " +
                    (large > 0 ? $"(its only large page size is {SharedMemoryOptions.FormatSize(large)})" : "(it has no large pages)"), "pageSize");
            if (large <= 0)
            {
                if (options.Mode == HugePages.On)
                    throw new PgIpcException($"could not create shared memory segment {id} of {size} bytes with huge pages on: this system has no large pages (GetLargePageMinimum is 0); use HugePages.Try or HugePages.Off");
            }
            else if (options.Mode == HugePages.On || size >= large)
            {
                long rounded = (size + large - 1) / large * large;
                if (TryCreateLarge(id, size, rounded, large, options.Mode == HugePages.On, out IMappedSegment? seg))
                    return seg;
            }
        }
        return CreateSection(id, size, Win.PAGE_READWRITE, out int err) is { } mapping ? MapView(id, mapping, size)
            : err == Win.ERROR_ALREADY_EXISTS ? null : throw Win.Exception("CreateFileMappingW", err, $"creating {id} of {size} bytes");
    }

    /// <summary>
    /// A SEC_LARGE_PAGES section of <paramref name="rounded"/> bytes. True with the segment (null: the name exists), or
    /// false when large pages cannot be had and <paramref name="required"/> is not set (Try: the caller falls back).
    /// </summary>
    private static bool TryCreateLarge(string id, long size, long rounded, long large, bool required, out IMappedSegment? seg)
    {
        seg = null;
        string page = SharedMemoryOptions.FormatSize(large);
        string? refused = EnableLockMemoryPrivilege();
        if (refused is not null)
        {
            if (!required)
                return false;
            throw new PgIpcException($"could not create shared memory segment {id} of {size} bytes with huge pages on: could not enable user right " +
                $"\"{Win.SE_LOCK_MEMORY_NAME}\" ({refused}); assign the \"Lock pages in memory\" right ({Win.SE_LOCK_MEMORY_NAME}) to the Windows user account " +
                "that runs this process and log on again, or use HugePages.Try");
        }
        SafeFileMappingHandle? mapping = CreateSection(id, rounded, Win.PAGE_READWRITE | Win.SEC_COMMIT | Win.SEC_LARGE_PAGES, out int err);
        if (mapping is null)
        {
            if (err == Win.ERROR_ALREADY_EXISTS)
                return true;
            if (!required)
                return false; // ERROR_NO_SYSTEM_RESOURCES (no contiguous memory), ERROR_PRIVILEGE_NOT_HELD, ...: normal pages
            throw Win.Exception("CreateFileMappingW(SEC_LARGE_PAGES)", err,
                $"creating {id} of {size} bytes ({rounded} rounded up to {page} large pages) with huge pages on: large pages need the " +
                $"{Win.SE_LOCK_MEMORY_NAME} user right (\"Lock pages in memory\") and enough free physical memory in {page} runs; or use HugePages.Try");
        }
        seg = MapView(id, mapping, size, large);
        return true;
    }

    /// <summary>CreateFileMappingW on the paging file; null with the error (ERROR_ALREADY_EXISTS included: the object is closed).</summary>
    private static SafeFileMappingHandle? CreateSection(string id, long size, uint protect, out int err)
    {
        uint high = (uint)((ulong)size >> 32);
        uint low = (uint)((ulong)size & 0xFFFFFFFF);
        nint h = Win.CreateFileMappingW(Win.INVALID_HANDLE_VALUE, null, protect, high, low, id);
        err = Marshal.GetLastPInvokeError();
        if (h == 0)
            return null;
        var mapping = new SafeFileMappingHandle(h);
        if (err == Win.ERROR_ALREADY_EXISTS)
        {
            mapping.Dispose();
            return null;
        }
        err = 0;
        return mapping;
    }

    /// <summary>Enables SeLockMemoryPrivilege in this process's token; null when enabled, else why not (EnableLockPagesPrivilege of win32_shmem.c).</summary>
    private static string? EnableLockMemoryPrivilege()
    {
        nint token;
        if (Win.OpenProcessToken(Win.CurrentProcess, Win.TOKEN_ADJUST_PRIVILEGES | Win.TOKEN_QUERY, &token) == 0)
            return $"OpenProcessToken failed: {Win.ErrorName(Marshal.GetLastPInvokeError())}";
        try
        {
            Win.TOKEN_PRIVILEGES_1 tp = default;
            if (Win.LookupPrivilegeValueW(null, Win.SE_LOCK_MEMORY_NAME, &tp.Luid) == 0)
                return $"LookupPrivilegeValue failed: {Win.ErrorName(Marshal.GetLastPInvokeError())}";
            tp.PrivilegeCount = 1;
            tp.Attributes = Win.SE_PRIVILEGE_ENABLED;
            if (Win.AdjustTokenPrivileges(token, 0, &tp, 0, null, null) == 0)
                return $"AdjustTokenPrivileges failed: {Win.ErrorName(Marshal.GetLastPInvokeError())}";
            int err = Marshal.GetLastPInvokeError();
            if (err == Win.ERROR_NOT_ALL_ASSIGNED)
                return "the user account does not hold it: ERROR_NOT_ALL_ASSIGNED";
            return err == 0 ? null : $"AdjustTokenPrivileges: {Win.ErrorName(err)}";
        }
        finally
        {
            Win.CloseHandle(token);
        }
    }

    /// <summary>The large page size when the page at <paramref name="p"/> (touched first, so it is in the working set) is a large page, else 0.</summary>
    private static long LargePageAt(void* p)
    {
        _ = Volatile.Read(ref *(byte*)p);
        Win.PSAPI_WORKING_SET_EX_INFORMATION info = default;
        info.VirtualAddress = p;
        try
        {
            if (Win.QueryWorkingSetEx(Win.CurrentProcess, &info, (uint)sizeof(Win.PSAPI_WORKING_SET_EX_INFORMATION)) == 0)
                return 0;
        }
        catch (EntryPointNotFoundException)
        {
            return 0; // a kernel32 without K32QueryWorkingSetEx (before Windows 7, some Wine builds): reported as normal pages
        }
        const nuint valid = 1, largePage = (nuint)1 << 23;
        return (info.VirtualAttributes & (valid | largePage)) == (valid | largePage) ? (long)Win.GetLargePageMinimum() : 0;
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
        return MapView(id, new SafeFileMappingHandle(h), -1, -1);
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

    /// <summary>Maps a view of the whole section; <paramref name="largePage"/> is the large page size it was made with, 0 for normal pages, -1 to ask the view (attach).</summary>
    private static IMappedSegment MapView(string id, SafeFileMappingHandle mapping, long size, long largePage = 0)
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
            if (largePage < 0)
                largePage = LargePageAt(p);
            return new WindowsSegment(id, mapping, view, size, largePage);
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
internal sealed class WindowsSegment(string id, SafeFileMappingHandle mapping, SafeMapViewHandle view, long size, long largePage) : IMappedSegment
{
    public string Id { get; } = id;
    public nint BaseAddress => view.DangerousGetHandle();
    public long Size { get; } = size;
    public bool HugePages => largePage > 0;
    public long PageSize => largePage > 0 ? largePage : Environment.SystemPageSize;

    public void Dispose()
    {
        view.Dispose();
        mapping.Dispose();
    }
}
