/*-------------------------------------------------------------------------
 * SysVSharedMemory.cs
 *   Main segment through System V shared memory, as PostgreSQL's
 *   sysv_shmem.c.
 *
 * NOTES
 *   Why SysV on Linux: the kernel counts attachments (shm_nattch) and drops
 *   a process's attachment when it dies, even by SIGKILL, so "is anyone
 *   still attached" has an exact answer. PostgreSQL keeps a small SysV
 *   segment for exactly this interlock.
 *
 *   Ids. A cluster key hash gives a first SysV key; on a collision with a
 *   segment that is not this cluster's, Core asks for the next candidate
 *   (key + 1, ...), as PostgreSQL walks keys from port * 1000; a key another
 *   user holds and we may not read (EACCES) is reported as
 *   SharedMemoryNotAccessibleException, with the owner uid from
 *   /proc/sysvipc/shm, and Core moves on from it too. Once created,
 *   a segment's id is "0x<key>/<shmid>": the shmid attaches directly, the key
 *   lets us notice that the shmid was recycled for someone else.
 *
 *   Huge pages follow the cluster's setting (HugePages.cs): Try asks for
 *   SHM_HUGETLB (size rounded up to the page size; a page size other than
 *   the default encoded in the flags above SHM_HUGE_SHIFT, as sysv_shmem.c
 *   does for mmap) when the segment is at least one huge page, and falls
 *   back quietly to normal pages when the kernel has none to give; On asks
 *   whatever the size and fails with the errno and the fix (vm.nr_hugepages,
 *   vm.hugetlb_shm_group, or Try); Off never asks. Permissions 0600.
 *
 *   Linux lets a process shmat a segment already marked for removal
 *   (IPC_RMID); we refuse that ourselves by checking SHM_DEST, so a
 *   destroyed segment cannot gain attachers.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Numerics;
using PgIpc.Platform.Linux.Interop;
using PgIpc.Platform.Posix;

namespace PgIpc.Platform.Linux;

/// <summary>System V shared memory (shmget / shmat / shmdt / shmctl).</summary>
internal sealed unsafe class SysVSharedMemory : ISharedMemoryProvider
{
    private const int Permissions = 0x180; // 0600
    private const int SHM_HUGE_SHIFT = 26;
    private const int Candidates = 16;

    public int MaxIdLength => 32;

    public IEnumerable<string> CandidateIds(ulong keyHash)
    {
        // Keep keys positive, non-zero and clear of IPC_PRIVATE; spread over 2^28 values.
        int first = 0x50000000 | (int)(keyHash & 0x0FFFFFF0);
        for (int i = 0; i < Candidates; i++)
            yield return FormatKey(first + i);
    }

    public IMappedSegment? TryCreate(string id, long size) => TryCreate(id, size, default);

    public IMappedSegment? TryCreate(string id, long size, SharedMemoryOptions options)
    {
        options.Validate();
        ParseId(id, out int key, out int requestedShmid);
        if (requestedShmid >= 0)
            throw new ArgumentException($"create takes a key id (0x........), not \"{id}\"", nameof(id));
        if (size <= 0)
            throw new ArgumentOutOfRangeException(nameof(size), size, "shared memory segment size must be positive");

        long pageSize = 0;
        int sizeFlags = 0;
        if (options.Mode != HugePages.Off)
        {
            pageSize = HugePageSizes.Default();
            if (options.HugePageSize != 0 && options.HugePageSize != pageSize)
            {
                if (!HugePageSizes.IsSupported(options.HugePageSize))
                    throw new ArgumentException($"huge page size {SharedMemoryOptions.FormatSize(options.HugePageSize)} is not a supported huge page size on this machine (supported: {HugePageSizes.List()})", "pageSize");
                pageSize = options.HugePageSize;
                sizeFlags = BitOperations.Log2((ulong)pageSize) << SHM_HUGE_SHIFT;
            }
            if (pageSize == 0 && options.Mode == HugePages.On)
                throw new PgIpcException($"could not create shared memory segment {FormatKey(key)} of {size} bytes with huge pages: this kernel has no huge pages (no Hugepagesize in /proc/meminfo); use HugePages.Try or HugePages.Off");
        }

        bool huge = false;
        int shmid = -1;
        if (pageSize > 0 && (options.Mode == HugePages.On || size >= pageSize))
        {
            long hugeSize = (size + pageSize - 1) & ~(pageSize - 1);
            shmid = LibC.shmget(key, (nuint)hugeSize, LibC.IPC_CREAT | LibC.IPC_EXCL | LibC.SHM_HUGETLB | sizeFlags | Permissions);
            if (shmid >= 0)
            {
                huge = true;
            }
            else
            {
                int err = Errno.Last;
                if (err == Errno.EEXIST)
                    return null;
                if (options.Mode == HugePages.On)
                    throw HugePagesUnavailable(key, size, hugeSize, pageSize, err);
                // Try: any other failure (ENOMEM: no huge pages reserved, EPERM, EINVAL): fall back quietly.
            }
        }
        if (shmid < 0)
        {
            shmid = LibC.shmget(key, (nuint)size, LibC.IPC_CREAT | LibC.IPC_EXCL | Permissions);
            if (shmid < 0)
            {
                int err = Errno.Last;
                if (err == Errno.EEXIST)
                    return null;
                string hint = err == Errno.EINVAL ? " (larger than kernel.shmmax?)" : err == Errno.ENOSPC ? " (kernel.shmall or shmmni exhausted?)" : "";
                throw Errno.Exception("shmget", err, $"creating key {FormatKey(key)} of {size} bytes{hint}");
            }
        }

        void* p = LibC.shmat(shmid, null, 0);
        if (p == (void*)-1)
        {
            int err = Errno.Last;
            LibC.shmctl(shmid, LibC.IPC_RMID, null);
            throw Errno.Exception("shmat", err, $"attaching new segment {shmid}");
        }
        return new SysVSegment($"{FormatKey(key)}/{shmid.ToString(CultureInfo.InvariantCulture)}", new SafeShmAttachHandle(p), size, huge,
            huge ? pageSize : Environment.SystemPageSize);
    }

    public IMappedSegment Attach(string id)
    {
        int shmid = Resolve(id, out LibC.shmid_ds ds);
        if (shmid < 0)
            throw new SharedMemoryNotFoundException($"shared memory segment {id} does not exist");
        if ((ds.shm_perm.mode & LibC.SHM_DEST) != 0)
            throw new SharedMemoryNotFoundException($"shared memory segment {id} has been removed (IPC_RMID)");
        void* p = LibC.shmat(shmid, null, 0);
        if (p == (void*)-1)
        {
            int err = Errno.Last;
            if (err == Errno.EINVAL || err == Errno.EIDRM)
                throw new SharedMemoryNotFoundException($"shared memory segment {id} does not exist");
            if (err == Errno.EACCES)
                throw NotAccessible(id, shmid, "shmat: EACCES");
            throw Errno.Exception("shmat", err, $"attaching {id}");
        }
        ParseId(id, out int key, out _);
        long pageSize = HugePageSizes.OfMapping((nint)p);
        return new SysVSegment($"{FormatKey(key)}/{shmid.ToString(CultureInfo.InvariantCulture)}", new SafeShmAttachHandle(p), (long)ds.shm_segsz,
            pageSize > Environment.SystemPageSize, pageSize);
    }

    /// <summary>The HugePages.On error: the sizes, the errno and the fix.</summary>
    private static PgIpcOsException HugePagesUnavailable(int key, long size, long hugeSize, long pageSize, int err)
    {
        string page = SharedMemoryOptions.FormatSize(pageSize);
        string fix = err == Errno.EPERM
            ? "this user may not create SysV huge-page segments: add its group to vm.hugetlb_shm_group or grant CAP_IPC_LOCK"
            : err == Errno.EINVAL
                ? $"the kernel refused the {page} page size (supported: {HugePageSizes.List()})"
                : $"reserve at least {hugeSize / pageSize} huge page(s) of {page} (sysctl vm.nr_hugepages{(pageSize == HugePageSizes.Default() ? "" : $", or /sys/kernel/mm/hugepages/hugepages-{pageSize / 1024}kB/nr_hugepages")}; HugePages_Free in /proc/meminfo shows the free ones)";
        return Errno.Exception("shmget(SHM_HUGETLB)", err,
            $"creating key {FormatKey(key)} of {size} bytes ({hugeSize} rounded up to {page} huge pages) with huge pages on: {fix}, or use HugePages.Try");
    }

    public SegmentOsStatus QueryStatus(string id)
    {
        int shmid = Resolve(id, out LibC.shmid_ds ds);
        if (shmid < 0)
            return new SegmentOsStatus(false, -1, -1, -1, false);
        return new SegmentOsStatus(true, (long)ds.shm_nattch, ds.shm_cpid, (long)ds.shm_segsz,
            (ds.shm_perm.mode & LibC.SHM_DEST) != 0);
    }

    public bool Remove(string id)
    {
        int shmid = Resolve(id, out _);
        if (shmid < 0)
            return false;
        if (LibC.shmctl(shmid, LibC.IPC_RMID, null) == 0)
            return true;
        int err = Errno.Last;
        if (err == Errno.EINVAL || err == Errno.EIDRM)
            return false;
        throw Errno.Exception("shmctl(IPC_RMID)", err, $"removing {id}");
    }

    public IEnumerable<string> EnumerateCandidates()
    {
        // /proc/sysvipc/shm: key shmid perms size cpid lpid nattch uid ...
        const string path = "/proc/sysvipc/shm";
        if (!File.Exists(path))
            yield break;
        foreach (string line in File.ReadLines(path).Skip(1))
        {
            string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length < 7 || !int.TryParse(f[0], CultureInfo.InvariantCulture, out int key) ||
                !int.TryParse(f[1], CultureInfo.InvariantCulture, out int shmid))
                continue;
            if ((key & 0x70000000) != 0x50000000)
                continue; // not in PgIpc's key range
            yield return $"{FormatKey(key)}/{shmid.ToString(CultureInfo.InvariantCulture)}";
        }
    }

    public bool IsOwnedByCurrentUser(string id)
    {
        try
        {
            return Resolve(id, out LibC.shmid_ds ds) >= 0 && ds.shm_perm.uid == Tmds.Linux.LibC.geteuid();
        }
        catch (PgIpcException)
        {
            return false; // unreadable: someone else's
        }
    }

    /// <summary>The shmid an id names now (and its IPC_STAT), or -1 when there is none.</summary>
    private static int Resolve(string id, out LibC.shmid_ds ds)
    {
        ds = default;
        ParseId(id, out int key, out int shmid);
        if (shmid < 0)
        {
            shmid = LibC.shmget(key, 0, 0);
            if (shmid < 0)
            {
                int err = Errno.Last;
                if (err == Errno.ENOENT || err == Errno.EIDRM)
                    return -1;
                if (err == Errno.EACCES)
                    throw NotAccessible(id, -1, "shmget: EACCES");
                throw Errno.Exception("shmget", err, $"looking up key {FormatKey(key)}");
            }
        }
        LibC.shmid_ds st;
        if (LibC.shmctl(shmid, LibC.IPC_STAT, &st) != 0)
        {
            int err = Errno.Last;
            if (err == Errno.EINVAL || err == Errno.EIDRM)
                return -1;
            // No read permission: another user's segment (PGSharedMemoryAttach calls it foreign).
            if (err == Errno.EACCES)
                throw NotAccessible(id, shmid, "shmctl(IPC_STAT): EACCES");
            throw Errno.Exception("shmctl(IPC_STAT)", err, $"inspecting {id}");
        }
        // A removed segment's key reads as IPC_PRIVATE; any other mismatch means the shmid was recycled.
        if (st.shm_perm.__key != key && (st.shm_perm.mode & LibC.SHM_DEST) == 0)
            return -1;
        ds = st;
        return shmid;
    }

    /// <summary>The segment's owner uid as /proc/sysvipc/shm lists it (readable by anyone), or -1.</summary>
    internal static int OwnerUid(string id)
    {
        ParseId(id, out int key, out int shmid);
        const string path = "/proc/sysvipc/shm";
        try
        {
            foreach (string line in File.ReadLines(path).Skip(1))
            {
                string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (f.Length >= 8 && int.TryParse(f[0], CultureInfo.InvariantCulture, out int k) && k == key &&
                    int.TryParse(f[1], CultureInfo.InvariantCulture, out int s) && (shmid < 0 || s == shmid) &&
                    int.TryParse(f[7], CultureInfo.InvariantCulture, out int uid))
                    return uid;
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return -1;
    }

    private static SharedMemoryNotAccessibleException NotAccessible(string id, int shmid, string detail)
    {
        ParseId(id, out int key, out _);
        string keyId = FormatKey(key);
        return new SharedMemoryNotAccessibleException(keyId, OwnerUid(shmid >= 0 ? $"{keyId}/{shmid.ToString(CultureInfo.InvariantCulture)}" : keyId), detail);
    }

    private static string FormatKey(int key) => "0x" + key.ToString("x8", CultureInfo.InvariantCulture);

    private static void ParseId(string id, out int key, out int shmid)
    {
        ArgumentNullException.ThrowIfNull(id);
        shmid = -1;
        string keyPart = id;
        int slash = id.IndexOf('/');
        if (slash >= 0)
        {
            keyPart = id[..slash];
            if (!int.TryParse(id.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out shmid) || shmid < 0)
                throw new InvalidShmemHandleException($"SysV segment id \"{id}\" has a malformed shmid");
        }
        if (keyPart.Length != 10 || !keyPart.StartsWith("0x", StringComparison.Ordinal) ||
            !int.TryParse(keyPart.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out key) || key == LibC.IPC_PRIVATE)
            throw new InvalidShmemHandleException($"SysV segment id \"{id}\" is malformed: expected 0x<8 hex digits>[/<shmid>]");
    }
}

/// <summary>Owns one shmat attachment; shmdt on release.</summary>
internal sealed unsafe class SafeShmAttachHandle : System.Runtime.InteropServices.SafeHandle
{
    public SafeShmAttachHandle(void* address) : base((nint)(-1), ownsHandle: true) => SetHandle((nint)address);

    public override bool IsInvalid => handle == (nint)(-1) || handle == 0;

    protected override bool ReleaseHandle() => LibC.shmdt((void*)handle) == 0;
}

/// <summary>A SysV segment attached in this process.</summary>
internal sealed class SysVSegment(string id, SafeShmAttachHandle attach, long size, bool huge, long pageSize) : IMappedSegment
{
    public string Id { get; } = id;
    public nint BaseAddress => attach.DangerousGetHandle();
    public long Size { get; } = size;
    public bool HugePages { get; } = huge;
    public long PageSize { get; } = pageSize;
    public void Dispose() => attach.Dispose();
}
