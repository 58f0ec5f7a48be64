/*-------------------------------------------------------------------------
 * DataDirectoryPermissionTests.cs
 *   Files and directories private to their user (issue 13, item 3): every
 *   directory and file a cluster makes has PostgreSQL's modes (0700 for
 *   the data directory and pg_dynshmem; 0600 for relation files, the DSM
 *   control file and mmap DSM files), a data directory open to others or
 *   owned by another user is refused at start with a clear error
 *   (checkDataDir), 0750 is allowed, and a symbolic link planted as a
 *   relation file is not followed.
 *
 * NOTES
 *   Modes are read back with stat (File.GetUnixFileMode). The process's
 *   umask (022 in CI) would give the runtime's defaults 0755 / 0644. The
 *   other-owner case chowns the directory to uid 54321, which needs root
 *   (OnlyAsRootOnLinux, as ForeignObjectTests). Unix only: Windows has no
 *   modes, and the check is skipped there.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Tests.Buffers;
using PgIpc.Tests.Shmem;

namespace PgIpc.Tests.Postmaster;

[OnlyOn(Os.Unix, "Windows has no Unix modes: the data directory check is skipped there")]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed partial class DataDirectoryPermissionTests(string backend)
{
    private const UnixFileMode Private = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode PrivateDir = Private | UnixFileMode.UserExecute;
    private const int OtherUid = 54321;
    private readonly List<string> _roots = [];
    private Supervisor? _supervisor;

    [TearDown]
    public void TearDown()
    {
        _supervisor?.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
        _supervisor = null;
        foreach (string r in _roots)
        {
            if (Directory.Exists(r))
                Directory.Delete(r, recursive: true);
        }
        _roots.Clear();
    }

    /// <summary>A path under a new temporary root (0700, deleted in teardown) that does not exist yet.</summary>
    private string NewPath(string leaf)
    {
        string root = Directory.CreateTempSubdirectory("pgipc-perm-").FullName;
        _roots.Add(root);
        return Path.Combine(root, leaf);
    }

    private ClusterBuilder Builder(string dataDir) => new ClusterBuilder(TestEnvironment.UniqueKey("perm"))
        .WithPlatform(PgIpcPlatform.Get(backend))
        .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
        .WithDataDirectory(dataDir)
        .WithLog(TextWriter.Null);

    private static string Octal(UnixFileMode m) => Convert.ToString((int)m, 8).PadLeft(4, '0');

    [Test]
    public void EveryDirectoryAndFileTheClusterMakesIsPrivateToItsUser()
    {
        string dataDir = NewPath("data");
        _supervisor = Builder(dataDir).WithBufferPool(16, blocksPerSegment: 1)
            .WithDsmOptions(new DsmOptions(8, DsmImplementation.Mmap)).Build();
        Cluster c = _supervisor.Cluster;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            BufferStress.Create(c.Buffers!, me, 7, 2); // "7" and "7.1"
            c.Buffers!.FlushAllBuffers(me);
        });
        DsmSegment seg = DsmSegment.Create(c.Dsm, 8192)!;
        string dyn = Path.Combine(dataDir, "pg_dynshmem");
        string[] files = [Path.Combine(dataDir, "7"), Path.Combine(dataDir, "7.1"), Path.Combine(dyn, "control"), c.Dsm.OsNameOf(seg.Handle)];
        Assert.Multiple(() =>
        {
            foreach (string d in (string[])[dataDir, dyn])
                Assert.That(Octal(File.GetUnixFileMode(d)), Is.EqualTo("0700"), $"directory {d}");
            foreach (string f in files)
            {
                Assert.That(File.Exists(f), Is.True, f);
                Assert.That(Octal(File.GetUnixFileMode(f)), Is.EqualTo("0600"), $"file {f}");
            }
        });
        seg.Detach();
    }

    [Test]
    public void ADataDirectoryOpenToOthersIsRefusedAtStartNamingTheFix()
    {
        string dataDir = NewPath("open");
        Directory.CreateDirectory(dataDir);
        File.SetUnixFileMode(dataDir, (UnixFileMode)0x1FF); // 0777
        var ex = Assert.Catch<DataDirectoryPermissionException>(() => _supervisor = Builder(dataDir).WithBufferPool(16).Build());
        Assert.That(_supervisor, Is.Null);
        Assert.That(ex!.Path, Is.EqualTo(dataDir));
        Assert.That(Octal(ex.Mode), Is.EqualTo("0777"));
        Assert.That(ex.Message, Does.Contain(dataDir).And.Contain("0777").And.Contain("chmod 0700"));

        // The storage manager checks on its own too (every process that opens relation files).
        var smgrError = Assert.Catch<DataDirectoryPermissionException>(() => new Smgr(dataDir, 1, 4, PgIpcPlatform.Get(backend).Files).Dispose());
        Assert.That(smgrError!.Path, Is.EqualTo(dataDir));

        // Group write is refused; group read and search (0750) is what PostgreSQL also allows.
        File.SetUnixFileMode(dataDir, PrivateDir | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute);
        Assert.Catch<DataDirectoryPermissionException>(() => _supervisor = Builder(dataDir).Build());
        File.SetUnixFileMode(dataDir, PrivateDir | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
        _supervisor = Builder(dataDir).WithBufferPool(16).Build();
        Assert.That(_supervisor.Cluster.Buffers, Is.Not.Null, "0750 is accepted");
    }

    [Test, OnlyAsRootOnLinux]
    public void ADataDirectoryOwnedByAnotherUserIsRefusedNamingItsOwner()
    {
        string dataDir = NewPath("theirs");
        Directory.CreateDirectory(dataDir, PrivateDir);
        Assert.That(chown(dataDir, OtherUid, OtherUid), Is.EqualTo(0), $"chown errno {Marshal.GetLastPInvokeError()}");
        var ex = Assert.Catch<DataDirectoryPermissionException>(() => _supervisor = Builder(dataDir).WithBufferPool(16).Build());
        Assert.That(_supervisor, Is.Null);
        Assert.That(ex!.OwnerUid, Is.EqualTo(OtherUid));
        Assert.That(ex.CurrentUid, Is.EqualTo(0));
        Assert.That(ex.Message, Does.Contain(dataDir).And.Contain($"uid {OtherUid}").And.Contain("chown"));
    }

    [Test]
    public void ASymbolicLinkPlantedAsARelationFileIsNotFollowed()
    {
        string dataDir = NewPath("links");
        string outside = NewPath("outside");
        File.WriteAllBytes(outside, new byte[BufferPool.BlockSize]);
        using var smgr = new Smgr(dataDir, 1, 4, PgIpcPlatform.Get(backend).Files);
        File.CreateSymbolicLink(smgr.PathOf(9, ForkNumber.Main, 0), outside);

        Exception? read = Assert.Catch(() => smgr.Read(new BufferTag(9, ForkNumber.Main, 0), new byte[BufferPool.BlockSize]));
        byte[] page = new byte[BufferPool.BlockSize];
        page[100] = 0x5A;
        Exception? write = Assert.Catch(() => smgr.Write(new BufferTag(9, ForkNumber.Main, 0), page));

        Assert.That(read, Is.InstanceOf<IOException>(), $"read: {read}");
        Assert.That(read!.Message, Does.Contain("ELOOP"));
        Assert.That(write, Is.InstanceOf<IOException>(), $"write: {write}");
        Assert.That(File.ReadAllBytes(outside).All(b => b == 0), Is.True, "the link's target is untouched");
    }

    [LibraryImport("libc", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int chown(string path, int owner, int group);
}
