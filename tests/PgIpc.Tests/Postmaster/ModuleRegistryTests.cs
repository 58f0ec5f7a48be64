/*-------------------------------------------------------------------------
 * ModuleRegistryTests.cs
 *   The module registry: one list that sizes, creates and (recorded in the
 *   segment) attaches every subsystem in every process; the user's modules
 *   beside the library's; clear errors for a module that is missing, named
 *   twice, or recorded corruptly by another process.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sinval;

namespace PgIpc.Tests.Postmaster;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class ModuleRegistryTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<Supervisor> _supervisors = [];
    private readonly List<int> _pids = [];
    private string? _dataDir;

    [TearDown]
    public void TearDown()
    {
        foreach (Supervisor s in _supervisors)
            s.Dispose();
        _supervisors.Clear();
        foreach (int pid in _pids)
            if (!SupervisorDeathTests.IsGone(pid))
                SupervisorDeathTests.KillHard(pid);
        _pids.Clear();
        if (_dataDir is not null && Directory.Exists(_dataDir))
            Directory.Delete(_dataDir, recursive: true);
        _dataDir = null;
    }

    private ClusterBuilder Builder(string what)
        => new ClusterBuilder(TestEnvironment.UniqueKey(what))
            .WithPlatform(_platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithMaxChildren(2)
            .WithLog(TextWriter.Null);

    private Supervisor Build(ClusterBuilder b)
    {
        Supervisor s = b.Build();
        _supervisors.Add(s);
        return s;
    }

    [Test]
    public void AnAttachedViewHasTheSupervisorsModulesInTheSameOrderWithTheirOptions()
    {
        _dataDir = Directory.CreateTempSubdirectory("pgipc-mod").FullName;
        var ckpt = new CheckpointerOptions(TimeoutMs: 7_000, CompletionTarget: 0.25, MaxRequests: 77, StartupWaitMs: 1234);
        var bgw = new BgWriterOptions(DelayMs: 33, LruMaxPages: 44, LruMultiplier: 1.5, HibernateFactor: 9);
        Supervisor s = Build(Builder("mod-list").WithDataDirectory(_dataDir).WithBufferPool(32, blocksPerSegment: 64)
            .WithCheckpointer(ckpt).WithBackgroundWriter(bgw).AddModule(PostmasterWorkerCommands.UserModule).RequestShmem("mod.raw", 100));

        using Cluster view = Cluster.Attach(s.Handle, PostmasterWorkerCommands.UserModule);
        Assert.Multiple(() =>
        {
            Assert.That(view.ModuleNames, Is.EqualTo(s.Cluster.ModuleNames));
            Assert.That(view.ModuleNames, Is.EqualTo(new[]
            {
                ProcArray.ShmemName, "PgIpc.LWLockTranches", "PgIpc.ProcSignal", "PgIpc.PMSignal", SinvalQueue.ShmemName,
                "PgIpc.DsmControl", BackgroundWorkerArray.ShmemName, SupervisorRequests.ShmemName, "PgIpc.LockManager", "PgIpc.Stats", "PgIpc.BufferPool", Checkpointer.ShmemName,
                "PgIpc.BgWriter", PostmasterWorkerCommands.UserModuleName, "mod.raw",
            }));
            Assert.That(view.Get<BufferPool>().NumBuffers, Is.EqualTo(32));
            Assert.That(view.Get<BufferPool>().Smgr.BlocksPerSegment, Is.EqualTo(64));
            Assert.That(view.Get<BufferPool>().Smgr.DataDirectory, Is.EqualTo(_dataDir));
            Assert.That(view.Get<Checkpointer>().Options, Is.EqualTo(ckpt));
            Assert.That(view.Get<BackgroundWriter>().Options, Is.EqualTo(bgw));
            Assert.That(view.Get(PostmasterWorkerCommands.UserModule).AsSpan<long>()[0], Is.EqualTo(PostmasterWorkerCommands.UserModuleMagic));
            Assert.That(view.Procs.MaxProcs, Is.EqualTo(s.Cluster.Procs.MaxProcs));
        });
    }

    [Test]
    public void AUsersModuleNotPassedToAttachIsAttachedOnFirstUseThroughItsDescriptor()
    {
        Supervisor s = Build(Builder("mod-lazy").AddModule(PostmasterWorkerCommands.UserModule));
        using Cluster view = Cluster.Attach(s.Handle);
        ShmemRegion r = view.Get(PostmasterWorkerCommands.UserModule);
        Assert.That(r.AsSpan<long>()[0], Is.EqualTo(PostmasterWorkerCommands.UserModuleMagic));
        Assert.That(view.Get(PostmasterWorkerCommands.UserModule).Offset, Is.EqualTo(r.Offset), "once attached, the same view");
    }

    [Test]
    public void AChildProcessAttachesTheUsersModuleByItsDescriptor()
    {
        Supervisor s = Build(Builder("mod-child").AddModule(PostmasterWorkerCommands.UserModule));
        s.Start();
        BackgroundWorkerHandle h = s.StartChild(PostmasterWorkerCommands.Spec("module user", backend, "user-module"));
        int pid = h.WaitForStartup(Poll.Patience);
        _pids.Add(pid);
        h.WaitForShutdown(Poll.Patience);
        Assert.That(s.CrashRestarts, Is.Zero, "the child found the supervisor's initialised module (it exits 4 otherwise)");
        long written = s.ReadShared(c => Volatile.Read(ref c.Get(PostmasterWorkerCommands.UserModule).AsSpan<long>()[1]));
        Assert.That(written, Is.EqualTo(pid));
    }

    [Test]
    public void AModuleTheSupervisorDidNotRegisterIsAClearError()
    {
        Supervisor s = Build(Builder("mod-missing"));
        var other = new ShmemModule<ShmemRegion>("mod.never", _ => 8, c => c.Segment.InitStruct("mod.never", 8, out _));
        var ex = Assert.Throws<ModuleNotFoundException>(() => Cluster.Attach(s.Handle, other).Dispose());
        Assert.That(ex!.Message, Does.Contain("mod.never"));
        using Cluster view = Cluster.Attach(s.Handle);
        Assert.That(Assert.Throws<ModuleNotFoundException>(() => view.Get(other))!.Message, Does.Contain("mod.never"));
        Assert.That(Assert.Throws<ModuleNotFoundException>(() => view.Get<BufferPool>())!.Message, Does.Contain(nameof(BufferPool)));
        Assert.That(view.Buffers, Is.Null);
        Assert.That(s.Cluster.Segment.TryFindStruct("mod.never", out _), Is.False, "a refused attach creates nothing");
    }

    [Test]
    public void ModuleNamesMustBeUnique()
    {
        var a = new ShmemModule<ShmemRegion>("mod.twice", _ => 8, c => c.Segment.InitStruct("mod.twice", 8, out _));
        var b = new ShmemModule<ShmemRegion>("mod.twice", _ => 16, c => c.Segment.InitStruct("mod.twice", 16, out _));
        Assert.Throws<ArgumentException>(() => Builder("mod-dup").AddModule(a).AddModule(b));
        Assert.Throws<ArgumentException>(() => Builder("mod-dup2").RequestShmem("mod.twice", 8).AddModule(a));
        var squatter = new ShmemModule<ShmemRegion>(ProcArray.ShmemName, _ => 8, c => c.Segment.InitStruct("x", 8, out _));
        string key = TestEnvironment.UniqueKey("mod-squat");
        var ex = Assert.Throws<ArgumentException>(() => new ClusterBuilder(key).WithPlatform(_platform).WithLog(TextWriter.Null).AddModule(squatter).Build());
        Assert.That(ex!.Message, Does.Contain(ProcArray.ShmemName));
        Assert.Throws<ArgumentException>(() => _ = new ShmemModule<ShmemRegion>(new string('m', 64), _ => 8, c => c.Segment.InitStruct("m", 8, out _)));
    }

    [Test]
    public void TheBackgroundWriterNeedsTheBufferPool()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => Build(Builder("mod-bgw").WithBackgroundWriter()));
        Assert.That(ex!.Message, Does.Contain("WithBufferPool"));
    }

    [Test]
    public void AModuleWhoseInitThrowsLeavesNothingBehind()
    {
        string key = TestEnvironment.UniqueKey("mod-throw");
        var bad = new ShmemModule<ShmemRegion>("mod.bad", _ => 8, _ => throw new InvalidDataException("refused by the module"));
        var ex = Assert.Throws<InvalidDataException>(() => new ClusterBuilder(key).WithPlatform(_platform).WithLog(TextWriter.Null).AddModule(bad).Build());
        Assert.That(ex!.Message, Does.Contain("refused"));
        // The key builds again at once: no stale segment, nothing in use.
        Supervisor again = new ClusterBuilder(key).WithPlatform(_platform).WithLog(TextWriter.Null).Build();
        _supervisors.Add(again);
        Assert.That(again.Cluster.Segment.ReplacedStaleSegment, Is.False);
    }

    [Test]
    public void ACorruptModuleRecordIsAClearErrorNotACrash()
    {
        Supervisor s = Build(Builder("mod-corrupt").AddModule(PostmasterWorkerCommands.UserModule));
        Assert.That(s.Cluster.Segment.TryFindStruct(ClusterConfig.ShmemName, out ShmemRegion r), Is.True);
        Span<byte> bytes = r.AsSpan<byte>();
        byte[] saved = bytes.ToArray();
        try
        {
            // Another process wrote a count far past the record.
            BinaryPrimitives.WriteInt32LittleEndian(bytes[4..], 1_000);
            Assert.That(Assert.Throws<PgIpcException>(() => Cluster.Attach(s.Handle).Dispose())!.Message, Does.Contain("corrupt"));
            saved.CopyTo(bytes);
            // The first entry's name length runs past the end.
            BinaryPrimitives.WriteInt32LittleEndian(bytes[ClusterConfig.HeaderBytes..], int.MaxValue - 3);
            Assert.That(Assert.Throws<PgIpcException>(() => Cluster.Attach(s.Handle).Dispose())!.Message, Does.Contain("corrupt"));
            saved.CopyTo(bytes);
            // A bad magic.
            BinaryPrimitives.WriteUInt32LittleEndian(bytes, 0xDEADBEEF);
            Assert.That(Assert.Throws<PgIpcException>(() => Cluster.Attach(s.Handle).Dispose())!.Message, Does.Contain("magic"));
        }
        finally
        {
            saved.CopyTo(bytes);
        }
        using Cluster view = Cluster.Attach(s.Handle, PostmasterWorkerCommands.UserModule);
        Assert.That(view.Get(PostmasterWorkerCommands.UserModule).AsSpan<long>()[0], Is.EqualTo(PostmasterWorkerCommands.UserModuleMagic));
    }

    [Test]
    public void TheSupervisorsViewIsOwnedByTheSupervisor()
    {
        Supervisor s = Build(Builder("mod-owned"));
        s.Cluster.Dispose(); // does nothing: the supervisor owns it
        Assert.That(s.Cluster.IsAttached, Is.True);
        Assert.That(s.Shutdown(ShutdownMode.Fast, Poll.Patience), Is.True);
        Assert.That(s.Cluster.IsAttached, Is.False);
    }
}
