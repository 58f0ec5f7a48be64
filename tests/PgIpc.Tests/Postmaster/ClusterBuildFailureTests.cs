/*-------------------------------------------------------------------------
 * ClusterBuildFailureTests.cs
 *   ClusterBuilder.Build failing after shared memory exists (a startup hook
 *   that throws, more static workers than child slots, a subsystem's
 *   initialisation refusing its options): the exception
 *   reaches the caller, who has no Supervisor to dispose, so Build itself
 *   removes everything it made: the segment, the latch FIFOs and their
 *   directory (Posix), the semaphores; the same key builds again at once.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Postmaster;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class ClusterBuildFailureTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<Supervisor> _clusters = [];

    [TearDown]
    public void TearDown()
    {
        foreach (Supervisor c in _clusters)
            c.Dispose();
        _clusters.Clear();
    }

    private ClusterBuilder Builder(string key, int maxChildren)
        => new ClusterBuilder(key)
            .WithPlatform(_platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 1, MaxBackgroundWorkers: 2))
            .WithMaxChildren(maxChildren)
            .WithLog(TextWriter.Null);

    /// <summary>The OS names of the cluster's objects besides the segment that an administrator would look for.</summary>
    private List<string> ObjectPaths(ShmemHandle h)
    {
        List<string> paths = [];
        if (OperatingSystem.IsWindows())
            return paths;
        string cookie = h.Cookie.ToString("x16");
        if (backend == "posix")
            paths.Add(Path.Combine(Path.GetTempPath(), "pgipc.l" + cookie)); // latch FIFOs and lifeline
        if (Directory.Exists("/dev/shm"))
            paths.AddRange(Directory.GetFiles("/dev/shm").Where(f => f.Contains(cookie, StringComparison.Ordinal)));
        return paths;
    }

    private void AssertNothingLeft(ShmemHandle h, List<string> paths, string key)
    {
        Assert.That(_platform.SharedMemory.QueryStatus(h.Id).Exists, Is.False, $"segment {h.Id} (ipcs -m / /dev/shm)");
        foreach (string p in paths)
            Assert.That(File.Exists(p) || Directory.Exists(p), Is.False, $"{p} is gone");
        // The same key starts again: nothing stale to replace, nothing "in use" by this live process.
        Supervisor again = Builder(key, 2).Build();
        _clusters.Add(again);
        Assert.That(again.Cluster.Segment.ReplacedStaleSegment, Is.False);
    }

    [Test]
    public void StartupHookThatThrowsLeavesNothingBehind()
    {
        string key = TestEnvironment.UniqueKey("pm-hookfail");
        ShmemHandle? handle = null;
        List<string> paths = [];
        var ex = Assert.Throws<InvalidOperationException>(() => Builder(key, 2)
            .OnShmemStartup(c =>
            {
                handle = c.Segment.Handle;
                paths = ObjectPaths(c.Segment.Handle);
                throw new InvalidOperationException("hook failed");
            })
            .Build());
        Assert.That(ex!.Message, Is.EqualTo("hook failed"), "the hook's own exception reaches the caller");
        Assert.That(handle, Is.Not.Null, "the hook ran");
        if (backend == "posix")
            Assert.That(paths, Has.Count.GreaterThanOrEqualTo(1), "the latch directory existed while the hook ran");
        AssertNothingLeft(handle!.Value, paths, key);
    }

    [Test]
    public void MoreStaticWorkersThanChildSlotsLeavesNothingBehind()
    {
        string key = TestEnvironment.UniqueKey("pm-slotfail");
        ShmemHandle? handle = null;
        List<string> paths = [];
        ChildSpec Spec(string name) => PostmasterWorkerCommands.Spec(name, backend, "exit0", 0);
        Assert.Throws<NoFreeBackgroundWorkerSlotException>(() => Builder(key, 1)
            .OnShmemStartup(c =>
            {
                handle = c.Segment.Handle;
                paths = ObjectPaths(c.Segment.Handle);
            })
            .AddBackgroundWorker(Spec("w1"))
            .AddBackgroundWorker(Spec("w2"))
            .Build());
        Assert.That(handle, Is.Not.Null, "shared memory was made before the workers were registered");
        AssertNothingLeft(handle!.Value, paths, key);
    }

    [Test]
    public void SubsystemThatFailsAfterTheSlotsExistLeavesNothingBehind()
    {
        string key = TestEnvironment.UniqueKey("pm-dsmfail");
        // DsmRegistry.Init refuses mmap without a data directory (or a kind the backend lacks), after ProcArray.Init made the slots' objects.
        Assert.Catch<ArgumentException>(() => Builder(key, 2).WithDsmOptions(new DsmOptions(Implementation: DsmImplementation.Mmap)).Build());
        // The segment of a live creator (this process) would make the next Create refuse with "in use"; a stale one would be replaced.
        Supervisor again = Builder(key, 2).Build();
        _clusters.Add(again);
        Assert.That(again.Cluster.Segment.ReplacedStaleSegment, Is.False);
    }
}
