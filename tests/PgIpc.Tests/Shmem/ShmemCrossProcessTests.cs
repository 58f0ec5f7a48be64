/*-------------------------------------------------------------------------
 * ShmemCrossProcessTests.cs
 *   Segments shared between real processes: a child attaches by handle,
 *   finds the parent's structures, each sees the other's writes; a child
 *   killed with SIGKILL leaves the segment usable and uncounted; stale
 *   segments of a killed creator are removed, live ones refused.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Tests.Shmem;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class ShmemCrossProcessTests(string backend)
{
    private const long Size = 1 << 20;
    private IPgIpcPlatform _platform = null!;
    private readonly List<ChildWorker> _children = [];
    private ShmemSegment? _segment;

    [SetUp]
    public void SetUp() => _platform = PgIpcPlatform.Get(backend);

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker c in _children)
            c.Dispose();
        _children.Clear();
        if (_segment is { IsAttached: true })
            _segment.Destroy();
        _segment = null;
    }

    private ChildWorker Child() => Workers.Start(backend, _children);

    private ShmemSegment CreateSegment(string what)
        => _segment = ShmemSegment.Create(TestEnvironment.UniqueKey(what), Size, _platform);

    [Test]
    public void ChildFindsParentStructureAndEachSeesTheOthersWrites()
    {
        ShmemSegment seg = CreateSegment("xp");
        ShmemRegion r = seg.InitStruct("shared.pair", 64, out bool found);
        Assert.That(found, Is.False);
        Span<long> words = r.AsSpan<long>();
        Volatile.Write(ref words[0], 1111);

        ChildWorker child = Child();
        child.Send($"attach {seg.Handle}");
        string[] reply = child.Send("initstruct shared.pair 64").Split(' ');
        Assert.That(reply[0], Is.EqualTo("true"), "the child finds the parent's structure");
        Assert.That(long.Parse(reply[1]), Is.EqualTo(r.Offset));
        Assert.That(child.Send("read shared.pair 0"), Is.EqualTo("1111"));

        child.Send("write shared.pair 8 2222");
        Assert.That(Volatile.Read(ref words[1]), Is.EqualTo(2222));

        // A structure the child creates is found by the parent.
        Assert.That(child.Send("initstruct child.made 128").Split(' ')[0], Is.EqualTo("false"));
        child.Send("write child.made 0 77");
        ShmemRegion made = seg.InitStruct("child.made", 128, out bool parentFound);
        Assert.That(parentFound, Is.True);
        Assert.That(Volatile.Read(ref made.AsSpan<long>()[0]), Is.EqualTo(77));
    }

    [Test]
    [Category(TestEnvironment.BusyAcrossProcesses)]
    public void ProcessesIncrementOneCounterWithoutLosingUpdates()
    {
        ShmemSegment seg = CreateSegment("xpadd");
        ShmemRegion r = seg.InitStruct("ctr", 64, out _);
        ChildWorker a = Child(), b = Child();
        a.Send($"attach {seg.Handle}");
        b.Send($"attach {seg.Handle}");
        const int n = 200_000;
        a.Begin($"add ctr 0 {n}");
        b.Begin($"add ctr 0 {n}");
        ref long ctr = ref r.AsSpan<long>()[0];
        for (int i = 0; i < n; i++)
            Interlocked.Increment(ref ctr);
        a.End("add");
        b.End("add");
        Assert.That(Volatile.Read(ref ctr), Is.EqualTo(3L * n));
    }

    [Test]
    public void HandshakeThroughSharedMemory()
    {
        ShmemSegment seg = CreateSegment("xpwait");
        ShmemRegion r = seg.InitStruct("flag", 64, out _);
        ChildWorker child = Child();
        child.Send($"attach {seg.Handle}");
        child.Begin("wait flag 0 99 20000");
        Thread.Sleep(50);
        Volatile.Write(ref r.AsSpan<long>()[0], 99);
        child.End("wait"); // fails the test if the child timed out waiting for the flag
    }

    [Test]
    [Category(TestEnvironment.BusyAcrossProcesses)]
    public void ChildKilledWithSigkillIsNoLongerCountedAndSegmentStaysUsable()
    {
        ShmemSegment seg = CreateSegment("xpkill");
        ShmemRegion r = seg.InitStruct("work", 64, out _);
        ChildWorker child = Child();
        child.Send($"attach {seg.Handle}");
        Assert.That(seg.AttachedProcessCount(), Is.EqualTo(2));
        Assert.That(seg.AttachedPids(), Does.Contain(child.Pid));

        // Kill it in the middle of its work: it is incrementing when the signal lands.
        child.Begin("add work 0 1000000000");
        Poll.WaitFor(() => Volatile.Read(ref r.AsSpan<long>()[0]) > 0, "the child to start working", TimeSpan.FromSeconds(10), pollMs: 1);
        child.Kill();
        Assert.That(Assert.Catch<InvalidOperationException>(() => child.EndRaw("add", TimeSpan.FromSeconds(30)), "the worker died mid-command")!.Message, Does.Contain("exited"));

        Assert.That(seg.AttachedProcessCount(), Is.EqualTo(1), "the killed child is not counted");
        Assert.That(seg.AttachedPids(), Does.Not.Contain(child.Pid));

        // Still usable: allocate, write, and a new child attaches and sees the state.
        long before = Volatile.Read(ref r.AsSpan<long>()[0]);
        ShmemRegion after = seg.InitStruct("after.kill", 64, out bool found);
        Assert.That(found, Is.False);
        Volatile.Write(ref after.AsSpan<long>()[0], 5);
        ChildWorker next = Child();
        next.Send($"attach {seg.Handle}");
        Assert.That(next.Send("read after.kill 0"), Is.EqualTo("5"));
        Assert.That(long.Parse(next.Send("read work 0")), Is.EqualTo(before));
        Assert.That(seg.AttachedProcessCount(), Is.EqualTo(2));
    }

    [Test]
    public void StaleSegmentOfAKilledCreatorIsRemovedOnCreate()
    {
        string key = TestEnvironment.UniqueKey("stale");
        ChildWorker child = Child();
        ShmemHandle h = ShmemHandle.Parse(child.Send($"create {key} {Size}"));
        child.Send("initstruct left.behind 64");
        child.Kill();

        bool leftover = _platform.SharedMemory.QueryStatus(h.Id).Exists;
        if (backend == "windows")
            Assert.That(leftover, Is.False, "Windows frees a mapping with its last handle");
        else
            Assert.That(leftover, Is.True, "a SIGKILLed creator leaves its segment behind");

        _segment = ShmemSegment.Create(key, Size, _platform);
        Assert.That(_segment.IsCreator, Is.True);
        Assert.That(_segment.TryFindStruct("left.behind", out _), Is.False, "a fresh segment, not the stale one");
        Assert.That(_segment.GetInfo().CreatorPid, Is.EqualTo(Environment.ProcessId));
        if (h.Id != _segment.Handle.Id)
            Assert.That(_platform.SharedMemory.QueryStatus(h.Id).Exists, Is.False, "the stale segment was removed");
    }

    [Test]
    public void SegmentOfALiveCreatorIsRefusedWithItsPid()
    {
        string key = TestEnvironment.UniqueKey("live");
        ChildWorker child = Child();
        ShmemHandle h = ShmemHandle.Parse(child.Send($"create {key} {Size}"));
        var ex = Assert.Throws<SharedMemoryInUseException>(() => ShmemSegment.Create(key, Size, _platform));
        Assert.That(ex!.Pid, Is.EqualTo(child.Pid));
        Assert.That(ex.Message, Does.Contain($"in use by pid {child.Pid}"));
        child.Send("destroy");
        Assert.That(_platform.SharedMemory.QueryStatus(h.Id).Exists, Is.False);
    }

    [Test]
    public void SegmentWhoseCreatorDiedButOthersAreAttachedIsRefused()
    {
        string key = TestEnvironment.UniqueKey("orphan");
        ChildWorker creator = Child();
        ShmemHandle h = ShmemHandle.Parse(creator.Send($"create {key} {Size}"));
        ChildWorker user = Child();
        user.Send($"attach {h}");
        creator.Kill();
        var ex = Assert.Throws<SharedMemoryInUseException>(() => ShmemSegment.Create(key, Size, _platform));
        Assert.That(ex!.Pid, Is.EqualTo(user.Pid));
        user.Send("destroy");
    }

    [Test]
    public void CleanupRemovesStaleSegmentsAndKeepsLiveOnes()
    {
        ShmemSegment live = CreateSegment("cleanlive");
        ChildWorker child = Child();
        ShmemHandle stale = ShmemHandle.Parse(child.Send($"create {TestEnvironment.UniqueKey("cleanstale")} {Size}"));
        child.Kill();
        if (backend == "windows")
        {
            // Nothing can be stale on Windows: the kernel dropped the mapping with the killed creator's handles.
            Assert.That(ShmemSegment.CleanupStale(_platform), Is.Empty);
            return;
        }

        IReadOnlyList<StaleSegmentReport> dry = ShmemSegment.CleanupStale(_platform, dryRun: true);
        Assert.That(dry.Single(r => r.Id == stale.Id).Verdict, Is.EqualTo(StaleVerdict.Stale));
        Assert.That(dry.Single(r => r.Id == live.Handle.Id).Verdict, Is.EqualTo(StaleVerdict.InUse));
        Assert.That(_platform.SharedMemory.QueryStatus(stale.Id).Exists, Is.True, "a dry run removes nothing");

        IReadOnlyList<StaleSegmentReport> done = ShmemSegment.CleanupStale(_platform);
        Assert.That(done.Single(r => r.Id == stale.Id).Removed, Is.True);
        Assert.That(_platform.SharedMemory.QueryStatus(stale.Id).Exists, Is.False);
        Assert.That(live.GetInfo().State, Is.EqualTo(ShmemState.Ready), "the live segment is untouched");
    }

    [Test]
    public void ChildAttachesByKeyWithoutAHandle()
    {
        ShmemSegment seg = CreateSegment("xpkey");
        ChildWorker child = Child();
        Assert.That(child.Send($"attach-key {seg.Key}"), Is.EqualTo(seg.Handle.ToString()));
    }

    [Test]
    public void ChildCannotAttachADestroyedSegment()
    {
        ShmemSegment seg = CreateSegment("xpgone");
        ShmemHandle h = seg.Handle;
        seg.Destroy();
        ChildWorker child = Child();
        Assert.That(child.SendRaw($"attach {h}"), Does.StartWith("error SharedMemoryNotFoundException"));
    }
}
