/*-------------------------------------------------------------------------
 * LatchDescriptorBoundTests.cs
 *   A waker's descriptors for other slots are bounded (issue 13, item
 *   10b): a process that wakes many other-process slots keeps at most the
 *   view's bound of them open (Linux: duplicated eventfds; Posix: FIFO
 *   write ends), and a slot whose descriptor the clock sweep closed is
 *   still woken (its next wake opens or duplicates again).
 *
 * NOTES
 *   One child owns every slot of a set (slot 0 in its wait set, the others
 *   just owned); this process wakes them all through a view bounded to 8
 *   descriptors and counts its own descriptors of the kind in
 *   /proc/self/fd before and after ("anon_inode:[eventfd]" for Linux, the
 *   set's FIFO directory for Posix). Where pidfd_getfd is refused (Yama,
 *   seccomp) the Linux waker falls back to SIGURG and holds no duplicate
 *   at all: the bound holds trivially and the route printed says so.
 *   Linux only (the /proc count); both Unix backends.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Platform.Linux;
using PgIpc.Platform.Posix;
using PgIpc.Shmem;

namespace PgIpc.Tests.Platform;

[OnlyOn(Os.Linux, "counts descriptors in /proc/self/fd")]
[TestFixture("linux")]
[TestFixture("posix")]
public sealed class LatchDescriptorBoundTests(string backend)
{
    private const int Stride = LatchStorage.MaxSize;
    private const int Slots = 120;
    private const int Bound = 8;
    private ShmemSegment _segment = null!;
    private readonly List<ChildWorker> _children = [];
    private ILatchWakers? _wakers;

    [SetUp]
    public void SetUp() => _segment = ShmemSegment.Create(TestEnvironment.UniqueKey("latchfd"), 1 << 20, PgIpcPlatform.Get(backend));

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

    /// <summary>This process's descriptors whose /proc/self/fd link satisfies <paramref name="match"/>.</summary>
    private static int DescriptorsOfThisProcess(Func<string, bool> match)
        => Directory.EnumerateFileSystemEntries("/proc/self/fd").Count(f =>
        {
            try { return new FileInfo(f).LinkTarget is { } t && match(t); }
            catch (IOException) { return false; } // the enumeration's own descriptor, closed meanwhile
        });

    [Test]
    public unsafe void WakingManySlotsOfAnotherProcessKeepsAtMostTheBoundOfDescriptors()
    {
        string name = $"fd{Environment.ProcessId}.{Guid.NewGuid().ToString("N")[..6]}";
        string structName = "latch." + name;
        nint storage = (nint)_segment.InitStruct(structName, (long)Stride * Slots, out _).Pointer;
        ILatchProvider provider = backend == "linux"
            ? new LinuxLatchProvider(forceSignalWake: false, maxWakeDescriptors: Bound)
            : new PosixLatchProvider(useSelect: false, maxWriteEnds: Bound);
        ILatchWakers wakers = _wakers = provider.Create(name, storage, Stride, Slots);
        string fifoDir = PosixLatchProvider.DirectoryOf(name) + "/";
        Func<string, bool> ours = backend == "linux" ? t => t == "anon_inode:[eventfd]" : t => t.StartsWith(fifoDir, StringComparison.Ordinal);
        ChildWorker child = Workers.StartAttached(backend, _children, _segment.Handle,
            $"latch-attach {name} {structName} {Slots} {backend}", "latch-own 0", $"latch-own-range 1 {Slots - 1}");
        int before = DescriptorsOfThisProcess(ours);

        for (int round = 0; round < 2; round++)
        {
            for (int i = 1; i < Slots; i++)
                wakers.Wake(i);
            int held = DescriptorsOfThisProcess(ours) - before;
            int cached = wakers is LinuxLatchWakers l ? l.WakeDescriptors : ((PosixLatchWakers)wakers).WriteEnds;
            string route = wakers is LinuxLatchWakers lw ? lw.WakeRoute(Slots - 1) : "fifo";
            TestContext.Out.WriteLine($"{backend} round {round}: route {route}, {held} descriptor(s) more than before, {cached} cached");
            Assert.That(held, Is.LessThanOrEqualTo(Bound), $"round {round}: {Slots - 1} slots woken, at most {Bound} descriptors kept");
            Assert.That(cached, Is.LessThanOrEqualTo(Bound));

            // Slot 0's descriptor (if any) was closed by the sweep or never taken: the wake must still arrive.
            wakers.Wake(0);
            Assert.That(child.Send("latch-wait 10000"), Is.EqualTo("set"), $"round {round}: slot 0 woken after the others' wakes");
        }
    }
}
