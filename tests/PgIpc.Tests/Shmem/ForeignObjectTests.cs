/*-------------------------------------------------------------------------
 * ForeignObjectTests.cs
 *   Another user's object at a cluster's id (issue 13, item 4): a SysV key
 *   is skipped as PostgreSQL skips keys it cannot use, a POSIX name is a
 *   typed error naming its owner, `pgipc cleanup` reports it and goes on,
 *   and a stale segment's recorded paths are not trusted blindly.
 *
 * NOTES
 *   The squatter belongs to uid 54321 with mode 0600: a SysV one made by
 *   this thread with its effective uid set to 54321 (the creator uid keeps
 *   owner rights, so IPC_SET of a root-made one is not enough), a POSIX
 *   one made by root and chowned. Root passes every permission check, so the
 *   code under test runs with this thread's effective capabilities
 *   CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER and CAP_IPC_OWNER
 *   dropped (capset applies to the calling thread only, and they are put
 *   back after): it then meets EACCES as any other user would. Linux and
 *   root only (skipped at discovery otherwise).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.InteropServices;
using NUnit.Framework;
using NUnit.Framework.Interfaces;
using NUnit.Framework.Internal;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Shmem;
using SysV = PgIpc.Platform.Linux.Interop.LibC;

namespace PgIpc.Tests.Shmem;

/// <summary>Runs a test only on Linux as root (it makes objects owned by another uid); skipped at discovery elsewhere.</summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Method, AllowMultiple = false, Inherited = false)]
public sealed class OnlyAsRootOnLinuxAttribute : NUnitAttribute, IApplyToTest
{
    public void ApplyToTest(NUnit.Framework.Internal.Test test)
    {
        if (!OperatingSystem.IsLinux() || !Environment.IsPrivilegedProcess)
            SkipAtDiscovery.Skip(test, "needs Linux and root: the test gives objects to another uid");
    }
}

[OnlyAsRootOnLinux]
public sealed unsafe partial class ForeignObjectTests
{
    private const int OtherUid = 54321;
    private const long Size = 1 << 20;
    private readonly List<int> _shmids = [];
    private readonly List<string> _paths = [];
    private readonly List<ShmemSegment> _segments = [];
    private readonly List<(IPgIpcPlatform, string)> _ids = [];

    [TearDown]
    public void TearDown()
    {
        foreach (ShmemSegment s in _segments)
        {
            if (s.IsAttached)
                s.Destroy();
        }
        foreach ((IPgIpcPlatform p, string id) in _ids)
            p.SharedMemory.Remove(id);
        foreach (int shmid in _shmids)
            SysV.shmctl(shmid, SysV.IPC_RMID, null);
        foreach (string path in _paths)
        {
            if (Directory.Exists(path) && !File.GetAttributes(path).HasFlag(FileAttributes.ReparsePoint))
                Directory.Delete(path, recursive: true);
            else
                File.Delete(path);
        }
        _segments.Clear();
        _ids.Clear();
        _shmids.Clear();
        _paths.Clear();
    }

    // ------------------------------------------------------------------
    // (a) SysV: a key another user holds is skipped
    // ------------------------------------------------------------------

    [Test]
    public void SysVKeyHeldByAnotherUserIsSkippedAndTheSquatterLeftAlone()
    {
        IPgIpcPlatform linux = PgIpcPlatform.Get("linux");
        string key = TestEnvironment.UniqueKey("foreign-sysv");
        string[] candidates = [.. linux.SharedMemory.CandidateIds(ShmemSegment.HashKey(key)).Take(2)];
        int squatter = SysVSquatter(candidates[0]);

        ShmemSegment seg = Unprivileged(() => ShmemSegment.Create(key, Size, linux));
        _segments.Add(seg);

        Assert.That(seg.Handle.Id, Does.StartWith(candidates[1] + "/"), "created at the next key");
        SysV.shmid_ds ds;
        Assert.That(SysV.shmctl(squatter, SysV.IPC_STAT, &ds), Is.EqualTo(0), "the squatter is still there");
        Assert.That(ds.shm_perm.uid, Is.EqualTo((uint)OtherUid));
        Assert.That(Unprivileged(() => ShmemSegment.Find(key, linux)), Is.EqualTo(seg.Handle), "Find skips the squatter too");
    }

    // ------------------------------------------------------------------
    // (b) POSIX: one name per key, so the error names the object and its owner
    // ------------------------------------------------------------------

    [Test]
    public void PosixNameHeldByAnotherUserIsATypedErrorNamingTheOwner()
    {
        IPgIpcPlatform posix = PgIpcPlatform.Get("posix");
        string key = TestEnvironment.UniqueKey("foreign-posix");
        string id = posix.SharedMemory.CandidateIds(ShmemSegment.HashKey(key)).Single();
        string path = PosixSquatter(id);

        var ex = Assert.Throws<SharedMemoryNotAccessibleException>(() => Unprivileged(() => ShmemSegment.Create(key, Size, posix)));
        Assert.That(ex!.Segment, Is.EqualTo(id));
        Assert.That(ex.OwnerUid, Is.EqualTo(OtherUid));
        Assert.That(ex.Message, Does.Contain(id).And.Contain($"uid {OtherUid}"));
        Assert.That(File.Exists(path), Is.True, "the squatter is left alone");
    }

    // ------------------------------------------------------------------
    // (d) cleanup reports an unreadable object and goes on
    // ------------------------------------------------------------------

    [Test]
    public void CleanupReportsAnUnreadableSegmentAndGoesOnWithTheOthers()
    {
        IPgIpcPlatform linux = PgIpcPlatform.Get("linux");
        string squatterKey = linux.SharedMemory.CandidateIds(ShmemSegment.HashKey(TestEnvironment.UniqueKey("foreign-sweep"))).First();
        SysVSquatter(squatterKey);
        string staleId = StaleSegment(linux, TestEnvironment.UniqueKey("foreign-stale"));

        IReadOnlyList<StaleSegmentReport> report = Unprivileged(() => ClusterLeftovers.CleanupStale(linux, dryRun: true));

        StaleSegmentReport? unreadable = report.SingleOrDefault(r => r.Id.StartsWith(squatterKey, StringComparison.Ordinal));
        Assert.That(unreadable, Is.Not.Null, "the unreadable segment is reported");
        Assert.That(unreadable!.Verdict, Is.EqualTo(StaleVerdict.Unreadable));
        Assert.That(unreadable.Reason, Does.Contain($"uid {OtherUid}"));
        StaleSegmentReport? stale = report.SingleOrDefault(r => r.Id == staleId);
        Assert.That(stale, Is.Not.Null, "the sweep went on past it");
        Assert.That(stale!.Verdict, Is.EqualTo(StaleVerdict.Stale));
    }

    // ------------------------------------------------------------------
    // (c) a stale segment's recorded data directory is not trusted blindly
    // ------------------------------------------------------------------

    [Test]
    public void StaleSegmentWhosePgDynshmemIsASymlinkDoesNotDeleteTheFilesItPointsAt()
    {
        string dataDir = NewDirectory("foreign-dd");
        string outside = NewDirectory("foreign-outside");
        string[] bait = [Path.Combine(outside, "mmap.7"), Path.Combine(outside, "control")];
        foreach (string b in bait)
            File.WriteAllText(b, "bait");
        File.CreateSymbolicLink(Path.Combine(dataDir, "pg_dynshmem"), outside);

        CreateOverStaleSegmentRecording(dataDir);

        foreach (string b in bait)
            Assert.That(File.Exists(b), Is.True, $"{b}, outside the data directory, survives");
    }

    [Test]
    public void StaleSegmentNamingAnotherUsersDataDirectoryDoesNotDeleteInIt()
    {
        string dataDir = NewDirectory("foreign-dd-other");
        string dyn = Directory.CreateDirectory(Path.Combine(dataDir, "pg_dynshmem")).FullName;
        string[] bait = [Path.Combine(dyn, "mmap.7"), Path.Combine(dyn, "control")];
        foreach (string b in bait)
            File.WriteAllText(b, "bait");
        foreach (string p in (string[])[dataDir, dyn, .. bait])
            Assert.That(chown(p, OtherUid, OtherUid), Is.EqualTo(0), $"chown errno {Marshal.GetLastPInvokeError()}");

        CreateOverStaleSegmentRecording(dataDir);

        foreach (string b in bait)
            Assert.That(File.Exists(b), Is.True, $"{b}, in uid {OtherUid}'s directory, survives");
    }

    [Test]
    public void StaleSegmentNamingOurOwnDataDirectoryStillHasItsLeftoversRemoved()
    {
        string dataDir = NewDirectory("foreign-dd-own");
        string dyn = Directory.CreateDirectory(Path.Combine(dataDir, "pg_dynshmem")).FullName;
        string mmap = Path.Combine(dyn, "mmap.7");
        File.WriteAllText(mmap, "left by a crashed run");

        CreateOverStaleSegmentRecording(dataDir);

        Assert.That(File.Exists(mmap), Is.False, "our own data directory's leftovers still go");
    }

    [Test]
    public void StaleSegmentOwnedByAnotherUserHasNothingItRecordsRemoved()
    {
        string dataDir = NewDirectory("foreign-dd-seg");
        string dyn = Directory.CreateDirectory(Path.Combine(dataDir, "pg_dynshmem")).FullName;
        string mmap = Path.Combine(dyn, "mmap.7");
        File.WriteAllText(mmap, "bait");

        // A readable segment given to another uid (IPC_SET), forged to name our data directory.
        CreateOverStaleSegmentRecording(dataDir, staleId =>
        {
            int shmid = int.Parse(staleId.AsSpan(staleId.IndexOf('/') + 1), System.Globalization.CultureInfo.InvariantCulture);
            SysV.shmid_ds ds;
            Assert.That(SysV.shmctl(shmid, SysV.IPC_STAT, &ds), Is.EqualTo(0));
            ds.shm_perm.uid = OtherUid;
            ds.shm_perm.mode = 0x1A4; // 0644
            Assert.That(SysV.shmctl(shmid, IpcSet, &ds), Is.EqualTo(0), $"IPC_SET errno {Marshal.GetLastPInvokeError()}");
        });

        Assert.That(File.Exists(mmap), Is.True, "a segment of uid 54321 does not drive deletions in our directory");
    }

    private const int IpcSet = 1;

    /// <summary>
    /// A stale segment of ours (dead creator) whose DSM control table records <paramref name="dataDir"/>, then a
    /// Create of the same key with the cluster's stale-segment handler (which removes its leftovers).
    /// </summary>
    private void CreateOverStaleSegmentRecording(string dataDir, Action<string>? then = null)
    {
        IPgIpcPlatform linux = PgIpcPlatform.Get("linux");
        string key = TestEnvironment.UniqueKey("foreign-forged");
        string staleId = StaleSegment(linux, key, seg => ForgeDsmTable(seg, dataDir));
        then?.Invoke(staleId);
        ShmemSegment seg = ShmemSegment.Create(key, new ShmemSizeBuilder().RequestAddinShmemSpace("test", 4096), linux, ClusterLeftovers.Instance);
        _segments.Add(seg);
        Assert.That(seg.ReplacedStaleSegment, Is.True, $"the forged segment {staleId} was judged stale");
    }

    private static void ForgeDsmTable(ShmemSegment seg, string dataDir)
    {
        const int maxItems = 1;
        long size = sizeof(DsmControlHeader) + maxItems * sizeof(DsmControlItem) + sizeof(int) + DsmOptions.MaxDataDirectoryBytes;
        seg.InitStruct(DsmRegistry.ShmemName, size, r =>
        {
            var h = (DsmControlHeader*)r.Pointer;
            h->MaxItems = maxItems;
            h->NItems = 0;
            h->Implementation = (int)DsmImplementation.Mmap;
            byte* dd = r.Pointer + sizeof(DsmControlHeader) + maxItems * sizeof(DsmControlItem);
            *(int*)dd = System.Text.Encoding.UTF8.GetBytes(dataDir, new Span<byte>(dd + sizeof(int), DsmOptions.MaxDataDirectoryBytes));
            h->Magic = DsmControlHeader.MagicValue;
        }, out _);
    }

    private string NewDirectory(string what)
    {
        string d = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), TestEnvironment.UniqueKey(what))).FullName;
        _paths.Add(d);
        return d;
    }

    // ------------------------------------------------------------------
    // Helpers
    // ------------------------------------------------------------------

    /// <summary>A 4 KiB SysV segment at <paramref name="keyId"/> ("0x........") owned by <see cref="OtherUid"/>, mode 0600.</summary>
    private int SysVSquatter(string keyId)
    {
        int key = int.Parse(keyId.AsSpan(2), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture);
        // Made with this thread's effective uid set to OtherUid: the creator uid (cuid) keeps owner rights too, so
        // a segment root made and handed over with IPC_SET would stay readable to root without capabilities.
        int shmid = AsOtherUid(() => SysV.shmget(key, 4096, SysV.IPC_CREAT | SysV.IPC_EXCL | 0x180), out int err);
        Assert.That(shmid, Is.GreaterThanOrEqualTo(0), $"shmget errno {err}");
        _shmids.Add(shmid);
        SysV.shmid_ds ds;
        Assert.That(SysV.shmctl(shmid, SysV.IPC_STAT, &ds), Is.EqualTo(0));
        Assert.That(ds.shm_perm.cuid, Is.EqualTo((uint)OtherUid));
        Assert.That(ds.shm_perm.uid, Is.EqualTo((uint)OtherUid));
        return shmid;
    }

    /// <summary>/dev/shm&lt;id&gt; owned by <see cref="OtherUid"/>, mode 0600.</summary>
    private string PosixSquatter(string id)
    {
        string path = "/dev/shm" + id;
        File.WriteAllBytes(path, new byte[4096]);
        _paths.Add(path);
        if (OperatingSystem.IsLinux()) // always: the fixture runs on Linux only
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Assert.That(chown(path, OtherUid, OtherUid), Is.EqualTo(0), $"chown errno {Marshal.GetLastPInvokeError()}");
        return path;
    }

    /// <summary>A PgIpc segment of ours whose creator is a process that has exited and that nobody is attached to.</summary>
    internal string StaleSegment(IPgIpcPlatform platform, string key, Action<ShmemSegment>? forge = null)
    {
        ShmemSegment seg = ShmemSegment.Create(key, Size, platform);
        string id = seg.Handle.Id;
        _ids.Add((platform, id));
        forge?.Invoke(seg);
        ((PgShmemHeader*)seg.Base)->CreatorPid = DeadPid();
        seg.Dispose();
        return id;
    }

    internal static int DeadPid()
    {
        using Process p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!;
        Assert.That(p.WaitForExit(30_000), Is.True);
        return p.Id;
    }

    // ------------------------------------------------------------------
    // This thread without the capabilities that let root past permission checks
    // ------------------------------------------------------------------

    private const int CapDacOverride = 1, CapDacReadSearch = 2, CapFowner = 3, CapIpcOwner = 15;
    private const uint LinuxCapabilityVersion3 = 0x20080522;

    [StructLayout(LayoutKind.Sequential)]
    private struct CapHeader { public uint Version; public int Pid; }

    [StructLayout(LayoutKind.Sequential)]
    private struct CapData { public uint Effective, Permitted, Inheritable; }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int capget(CapHeader* header, CapData* data);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int capset(CapHeader* header, CapData* data);

    /// <summary>syscall(2) with three int arguments (setresuid: the raw call changes the calling thread only, unlike glibc's wrapper).</summary>
    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long syscall3(long number, int a, int b, int c);

    private static long SysSetresuid => RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 147 : 117;

    /// <summary>Runs <paramref name="action"/> with this thread's effective uid <see cref="OtherUid"/>; errno of the action in <paramref name="errno"/>.</summary>
    private static int AsOtherUid(Func<int> action, out int errno)
    {
        Assert.That(syscall3(SysSetresuid, -1, OtherUid, -1), Is.EqualTo(0), $"setresuid errno {Marshal.GetLastPInvokeError()}");
        try
        {
            int r = action();
            errno = Marshal.GetLastPInvokeError();
            return r;
        }
        finally
        {
            if (syscall3(SysSetresuid, -1, 0, -1) != 0)
                Environment.FailFast("could not restore this thread's effective uid");
        }
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int chown(string path, int owner, int group);

    /// <summary>Runs <paramref name="action"/> on this thread with the permission-bypassing capabilities dropped from its effective set.</summary>
    internal static T Unprivileged<T>(Func<T> action)
    {
        CapHeader h = new() { Version = LinuxCapabilityVersion3, Pid = 0 };
        CapData* saved = stackalloc CapData[2];
        Assert.That(capget(&h, saved), Is.EqualTo(0), $"capget errno {Marshal.GetLastPInvokeError()}");
        CapData* less = stackalloc CapData[2];
        less[0] = saved[0];
        less[1] = saved[1];
        less[0].Effective &= ~((1u << CapDacOverride) | (1u << CapDacReadSearch) | (1u << CapFowner) | (1u << CapIpcOwner));
        h = new() { Version = LinuxCapabilityVersion3, Pid = 0 };
        Assert.That(capset(&h, less), Is.EqualTo(0), $"capset errno {Marshal.GetLastPInvokeError()}");
        try
        {
            return action();
        }
        finally
        {
            h = new() { Version = LinuxCapabilityVersion3, Pid = 0 };
            if (capset(&h, saved) != 0)
                Environment.FailFast("could not restore this thread's capabilities");
        }
    }
}
