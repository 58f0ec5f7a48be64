/*-------------------------------------------------------------------------
 * LinuxLatchDescriptorTests.cs
 *   The Linux latch waker's duplicated eventfds are bounded (issue 13,
 *   item 10b): a process that wakes many other-process slots keeps at most
 *   the view's bound of duplicates open, and a slot whose duplicate was
 *   closed by the clock sweep is still woken (its next wake duplicates the
 *   owner's eventfd again).
 *
 * NOTES
 *   One child owns every slot of a set (slot 0 in its wait set, the others
 *   just owned); this process wakes them all through a view bounded to 8
 *   duplicates and counts its own "anon_inode:[eventfd]" descriptors in
 *   /proc/self/fd before and after. Where pidfd_getfd is refused (Yama,
 *   seccomp) the waker falls back to SIGURG and holds no duplicate at all:
 *   the bound holds trivially and the route printed says so. Linux only.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Platform.Linux;
using PgIpc.Shmem;

namespace PgIpc.Tests.Platform;

[OnlyOn(Os.Linux, "the eventfd latch waker is the Linux backend's")]
public sealed class LinuxLatchDescriptorTests
{
    private const int Stride = LatchStorage.MaxSize;
    private const int Slots = 120;
    private const int Bound = 8;
    private ShmemSegment _segment = null!;
    private readonly List<ChildWorker> _children = [];
    private ILatchWakers? _wakers;

    [SetUp]
    public void SetUp() => _segment = ShmemSegment.Create(TestEnvironment.UniqueKey("latchfd"), 1 << 20, PgIpcPlatform.Get("linux"));

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker c in _children)
            c.Dispose();
        _children.Clear();
        _wakers?.Destroy();
        _wakers = null;
        _segment.Destroy();
    }

    private static int EventFdsOfThisProcess()
        => Directory.EnumerateFileSystemEntries("/proc/self/fd").Count(f =>
        {
            try { return new FileInfo(f).LinkTarget == "anon_inode:[eventfd]"; }
            catch (IOException) { return false; } // the enumeration's own descriptor, closed meanwhile
        });

    [Test]
    public unsafe void WakingManySlotsOfAnotherProcessKeepsAtMostTheBoundOfDescriptors()
    {
        string name = $"fd{Environment.ProcessId}.{Guid.NewGuid().ToString("N")[..6]}";
        string structName = "latch." + name;
        nint storage = (nint)_segment.InitStruct(structName, (long)Stride * Slots, out _).Pointer;
        var linux = (LinuxLatchWakers)(_wakers = new LinuxLatchProvider(forceSignalWake: false, maxWakeDescriptors: Bound)
            .Create(name, storage, Stride, Slots));
        ChildWorker child = Workers.StartAttached("linux", _children, _segment.Handle,
            $"latch-attach {name} {structName} {Slots} linux", "latch-own 0", $"latch-own-range 1 {Slots - 1}");
        int before = EventFdsOfThisProcess();

        for (int round = 0; round < 2; round++)
        {
            for (int i = 1; i < Slots; i++)
                linux.Wake(i);
            int held = EventFdsOfThisProcess() - before;
            TestContext.Out.WriteLine($"round {round}: route {linux.WakeRoute(Slots - 1)}, {held} eventfd(s) more than before, {linux.WakeDescriptors} cached");
            Assert.That(held, Is.LessThanOrEqualTo(Bound), $"round {round}: {Slots - 1} slots woken, at most {Bound} duplicates kept");
            Assert.That(linux.WakeDescriptors, Is.LessThanOrEqualTo(Bound));

            // Slot 0's duplicate (if any) was closed by the sweep or never taken: the wake must still arrive.
            linux.Wake(0);
            Assert.That(child.Send("latch-wait 10000"), Is.EqualTo("set"), $"round {round}: slot 0 woken after the others' wakes");
        }
        Assert.That(linux.WakeRoute(1), Is.EqualTo("eventfd").Or.EqualTo("signal").Or.EqualTo("none"));
    }
}
