/*-------------------------------------------------------------------------
 * WaitEventContractTests.cs
 *   The wait-event contract (ILatchProvider, ILatchWakers, ILatchOwner,
 *   ISupervisorWatch, IPlatformWaitSet) every backend must pass: wake-ups
 *   kept until waited for, timeouts, several events in one wait, Modify,
 *   wake-ups between threads and between processes, a long cross-process
 *   ping-pong, supervisor death, interrupts, no descriptor leaks, nothing
 *   left after Destroy, bad arguments, and no-ops on absent owners.
 *
 * NOTES
 *   The fixture runs once per backend on the machine, plus two forced
 *   variants where their backend runs: "linux-signal" (the Linux backend
 *   waking other processes only with SIGURG, its fallback when
 *   pidfd_getfd is refused) and "posix-select" (the Posix backend's
 *   select() wait set). Storage comes from a real segment, one structure
 *   per set with stride LatchStorage.MaxSize, as PGPROC slots give it; names
 *   are unique per test. Every wait that expects an event is bounded (10 s),
 *   so a lost wake-up fails instead of hanging; no test asserts a duration.
 *   Checks that do not apply to a variant are conditions inside a test;
 *   a whole test that does not apply is skipped at discovery
 *   (SkipAtDiscovery.cs), never returned from early. Children are killed
 *   in teardown.
 *-------------------------------------------------------------------------
 */
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Platform.Linux;
using PgIpc.Platform.Posix;
using PgIpc.Shmem;

namespace PgIpc.Tests.Platform;

[TestFixtureSource(nameof(Variants))]
public sealed class WaitEventContractTests(string variant)
{
    private const int Stride = LatchStorage.MaxSize;
    private const int Wait = 10_000;
    private const string LinuxSignal = "linux-signal";
    private const string PosixSelect = "posix-select";
    private static int s_counter;

    private readonly string _backend = BackendOf(variant);
    private ILatchProvider _latches = null!;
    private ShmemSegment _segment = null!;
    private readonly List<ILatchWakers> _created = [];
    private readonly List<IDisposable> _cleanup = [];
    private readonly List<ChildWorker> _children = [];

    /// <summary>Every backend on this machine, plus linux-signal and posix-select where their backend runs.</summary>
    public static IEnumerable<string> Variants()
        => TestEnvironment.Backends().SelectMany(b => b switch
        {
            "linux" => new[] { b, LinuxSignal },
            "posix" => [b, PosixSelect],
            _ => [b],
        });

    private static string BackendOf(string variant) => variant switch
    {
        LinuxSignal => "linux",
        PosixSelect => "posix",
        _ => variant,
    };

    /// <summary>The provider a variant tests (also used by the worker's latch-attach).</summary>
    internal static ILatchProvider Provider(string variant) => variant switch
    {
        LinuxSignal => new LinuxLatchProvider(forceSignalWake: true),
        PosixSelect => new PosixLatchProvider(useSelect: true),
        _ => PgIpcPlatform.Get(variant).Latches,
    };

    private bool IsWindows => _backend == "windows";

    [SetUp]
    public void SetUp()
    {
        _latches = Provider(variant);
        _segment = ShmemSegment.Create(TestEnvironment.UniqueKey("latch"), 1 << 20, PgIpcPlatform.Get(_backend));
    }

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker c in _children)
            c.Dispose();
        _children.Clear();
        for (int i = _cleanup.Count - 1; i >= 0; i--)
            _cleanup[i].Dispose();
        _cleanup.Clear();
        foreach (ILatchWakers w in _created)
        {
            try { w.Destroy(); }
            catch (ObjectDisposedException) { } // the test destroyed it itself
        }
        _created.Clear();
        _segment.Destroy();
    }

    /// <summary>A latch set name no other test uses: "t&lt;pid&gt;.&lt;n&gt;.&lt;4 hex&gt;" (at most 22 characters).</summary>
    private static string NewName()
        => $"t{Environment.ProcessId}.{Interlocked.Increment(ref s_counter)}.{Guid.NewGuid().ToString("N")[..4]}";

    private static string StructName(string name) => "latch." + name;

    /// <summary>The storage of a set's structure in this process's mapping (created when missing), room for at least 8 slots.</summary>
    private unsafe nint Storage(string name, int count)
        => (nint)_segment.InitStruct(StructName(name), (long)Stride * Math.Max(count, 8), out _).Pointer;

    private ILatchWakers Create(int count, string? name = null)
    {
        name ??= NewName();
        ILatchWakers w = _latches.Create(name, Storage(name, count), Stride, count);
        _created.Add(w);
        return w;
    }

    private ILatchWakers Attach(string name, int count)
    {
        ILatchWakers w = _latches.Attach(name, Storage(name, count), Stride, count);
        _cleanup.Add(w);
        return w;
    }

    private T Keep<T>(T d) where T : IDisposable
    {
        _cleanup.Add(d);
        return d;
    }

    private IPlatformWaitSet WaitSet(int capacity = 4) => Keep(_latches.CreateWaitSet(capacity));

    /// <summary>A worker attached to the segment and to latch set <paramref name="name"/>.</summary>
    private ChildWorker ChildAttachedTo(string name, int count)
    {
        ChildWorker c = StartChild();
        c.Send($"attach {_segment.Handle}");
        Storage(name, count); // the structure exists before the child looks for it
        c.Send($"latch-attach {name} {StructName(name)} {count} {variant}");
        return c;
    }

    private ChildWorker StartChild() => Workers.Start(_backend, _children);

    /// <summary>A pid that belonged to a process that is gone (a worker, killed and reaped).</summary>
    private int DeadPid()
    {
        ChildWorker c = StartChild();
        int pid = c.Pid;
        c.Kill();
        return pid;
    }

    /// <summary>A connected loopback TCP pair, closed in teardown.</summary>
    private (Socket Near, Socket Far) SocketPair()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var far = Keep(new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp));
        far.Connect(listener.LocalEndPoint!);
        Socket near = Keep(listener.Accept());
        return (near, far);
    }

    /// <summary>Open descriptors of this process (Linux: entries of /proc/self/fd); -1 where they cannot be counted.</summary>
    private static int OpenDescriptors()
        => OperatingSystem.IsLinux() ? Directory.GetFileSystemEntries("/proc/self/fd").Length : -1;

    private static WaitEvent Single(IPlatformWaitSet set, int timeoutMs)
    {
        Span<WaitEvent> occurred = new WaitEvent[4];
        int n = set.Wait(timeoutMs, occurred);
        Assert.That(n, Is.EqualTo(1), "one event");
        return occurred[0];
    }

    private static int WaitCount(IPlatformWaitSet set, int timeoutMs)
    {
        Span<WaitEvent> occurred = new WaitEvent[4];
        return set.Wait(timeoutMs, occurred);
    }

    [Test]
    public void StorageSizeFitsTheReservation()
    {
        int expected = _backend switch { "linux" => 16, _ => 0 };
        Assert.That(_latches.StorageSize, Is.EqualTo(expected));
        Assert.That(_latches.StorageSize, Is.InRange(0, LatchStorage.MaxSize));
    }

    [Test]
    public void WakeBeforeWaitIsNotLost()
    {
        ILatchWakers w = Create(2);
        ILatchOwner owner = Keep(w.Own(1));
        Assert.That(owner.Index, Is.EqualTo(1));
        IPlatformWaitSet set = WaitSet();
        int pos = set.AddLatch(owner);
        Assert.That(set.Count, Is.EqualTo(1));
        w.Wake(1);
        WaitEvent e = Single(set, Wait);
        Assert.That(e.Position, Is.EqualTo(pos));
        Assert.That(e.Events, Is.EqualTo(WaitEvents.LatchSet));
        Assert.That(e.Handle, Is.EqualTo(owner.WaitHandle));
        Assert.That(WaitCount(set, 0), Is.Zero, "the latch was drained before it was reported");
    }

    [Test]
    public void WakeThenPollWithZeroTimeoutReportsIt()
    {
        ILatchWakers w = Create(1);
        ILatchOwner owner = Keep(w.Own(0));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        w.Wake(0);
        Assert.That(Single(set, 0).Events, Is.EqualTo(WaitEvents.LatchSet));
    }

    [Test]
    public void ManyWakesBeforeAWaitAreOneWakeUp()
    {
        ILatchWakers w = Create(1);
        ILatchOwner owner = Keep(w.Own(0));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        for (int i = 0; i < 100; i++)
            w.Wake(0);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet));
        Assert.That(WaitCount(set, 0), Is.Zero);
    }

    [Test]
    public void WaitWithNothingReadyTimesOut()
    {
        ILatchWakers w = Create(2);
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(Keep(w.Own(0)));
        Assert.That(WaitCount(set, 0), Is.Zero);
        Assert.That(WaitCount(set, 20), Is.Zero);
        w.Wake(1); // another slot, not owned: not ours
        Assert.That(WaitCount(set, 0), Is.Zero);
    }

    [Test]
    public void DrainConsumesAPendingWakeUp()
    {
        ILatchWakers w = Create(1);
        ILatchOwner owner = Keep(w.Own(0));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        w.Wake(0);
        owner.Drain();
        Assert.That(WaitCount(set, 0), Is.Zero);
        owner.Drain(); // nothing pending: returns at once
    }

    [Test]
    public void OwnDrainsWakeUpsLeftForAnEarlierOwner()
    {
        ILatchWakers w = Create(1);
        ILatchOwner first = w.Own(0);
        w.Wake(0);
        first.Dispose();
        ILatchOwner second = Keep(w.Own(0));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(second);
        Assert.That(WaitCount(set, 0), Is.Zero, "the first owner's wake-up does not reach the second");
        w.Wake(0);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet));
    }

    [Test]
    public void LatchAndReadableSocketComeBackInOneWait()
    {
        ILatchWakers w = Create(1);
        ILatchOwner owner = Keep(w.Own(0));
        (Socket near, Socket far) = SocketPair();
        IPlatformWaitSet set = WaitSet();
        int latchPos = set.AddLatch(owner);
        int sockPos = set.AddSocket(near.Handle, WaitEvents.SocketReadable);
        far.Send([42]);
        Assert.That(near.Poll(Wait * 1000, SelectMode.SelectRead), Is.True, "the byte arrived");
        w.Wake(0);
        Span<WaitEvent> occurred = new WaitEvent[4];
        int n = set.Wait(Wait, occurred);
        Assert.That(n, Is.EqualTo(2), "both events from one wait");
        var got = occurred[..n].ToArray().ToDictionary(e => e.Position, e => e.Events);
        Assert.That(got[latchPos], Is.EqualTo(WaitEvents.LatchSet));
        Assert.That(got[sockPos], Is.EqualTo(WaitEvents.SocketReadable));
        Assert.That(occurred[..n].ToArray().Single(e => e.Position == sockPos).Handle, Is.EqualTo(near.Handle));
    }

    [Test]
    public void WaitReportsNoMoreThanTheSpanHolds()
    {
        ILatchWakers w = Create(1);
        ILatchOwner owner = Keep(w.Own(0));
        (Socket near, Socket far) = SocketPair();
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        set.AddSocket(near.Handle, WaitEvents.SocketReadable);
        far.Send([42]);
        Assert.That(near.Poll(Wait * 1000, SelectMode.SelectRead), Is.True);
        w.Wake(0);
        Span<WaitEvent> one = new WaitEvent[1];
        Assert.That(set.Wait(Wait, one), Is.EqualTo(1));
        WaitEvents first = one[0].Events;
        Assert.That(set.Wait(Wait, one), Is.EqualTo(1), "the other event is still there");
        Assert.That(first | one[0].Events, Is.EqualTo(WaitEvents.LatchSet | WaitEvents.SocketReadable));
    }

    [Test]
    public void ModifySwitchesSocketInterest()
    {
        (Socket near, Socket far) = SocketPair();
        IPlatformWaitSet set = WaitSet();
        int pos = set.AddSocket(near.Handle, WaitEvents.SocketReadable);
        Assert.That(WaitCount(set, 0), Is.Zero, "nothing to read yet");

        set.Modify(pos, WaitEvents.SocketWriteable);
        WaitEvent e = Single(set, Wait);
        Assert.That(e.Position, Is.EqualTo(pos));
        Assert.That(e.Events, Is.EqualTo(WaitEvents.SocketWriteable), "an idle connected socket has room to write");

        set.Modify(pos, WaitEvents.SocketReadable);
        Assert.That(WaitCount(set, 0), Is.Zero, "back to reading: still nothing");

        far.Send([1, 2, 3]);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.SocketReadable));

        set.Modify(pos, WaitEvents.None);
        Assert.That(WaitCount(set, 0), Is.Zero, "switched off: unread data is not reported");

        set.Modify(pos, WaitEvents.SocketReadable | WaitEvents.SocketWriteable);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.SocketReadable | WaitEvents.SocketWriteable));
    }

    [Test]
    public void PeerCloseIsReportedAsClosed()
    {
        (Socket near, Socket far) = SocketPair();
        IPlatformWaitSet set = WaitSet();
        int pos = set.AddSocket(near.Handle, WaitEvents.SocketReadable | WaitEvents.SocketClosed);
        Assert.That(WaitCount(set, 0), Is.Zero);
        far.Shutdown(SocketShutdown.Both);
        far.Close();
        WaitEvent e = Single(set, Wait);
        Assert.That(e.Position, Is.EqualTo(pos));
        Assert.That(e.Events & WaitEvents.SocketClosed, Is.EqualTo(WaitEvents.SocketClosed));
    }

    [Test]
    public void ModifySwitchesALatchOffAndOn()
    {
        ILatchWakers w = Create(1);
        ILatchOwner owner = Keep(w.Own(0));
        IPlatformWaitSet set = WaitSet();
        int pos = set.AddLatch(owner);
        set.Modify(pos, WaitEvents.None);
        w.Wake(0);
        Assert.That(WaitCount(set, 0), Is.Zero, "switched off");
        set.Modify(pos, WaitEvents.LatchSet);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet), "the wake-up waited for it");
    }

    [Test]
    public void AThreadBlockedInWaitIsWokenByAnotherThreadsWake()
    {
        ILatchWakers w = Create(2);
        ILatchOwner owner = Keep(w.Own(1));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        int got = -1;
        WaitEvents events = WaitEvents.None;
        var sleeper = new Thread(() =>
        {
            var occurred = new WaitEvent[4];
            int n = set.Wait(Wait, occurred);
            events = n > 0 ? occurred[0].Events : WaitEvents.None;
            Volatile.Write(ref got, n);
        }) { IsBackground = true };
        sleeper.Start();
        Thread.Sleep(20); // most likely asleep in the kernel by now; the test passes either way
        w.Wake(1);
        Assert.That(sleeper.Join(Wait * 2), Is.True, "the sleeper returned");
        Assert.That(Volatile.Read(ref got), Is.EqualTo(1), "woken, not timed out");
        Assert.That(events, Is.EqualTo(WaitEvents.LatchSet));
    }

    [Test]
    public void ASecondViewInThisProcessWakesTheOwner()
    {
        string name = NewName();
        ILatchWakers w = Create(2, name);
        ILatchWakers view = Attach(name, 2);
        ILatchOwner owner = Keep(w.Own(0));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        view.Wake(0);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet));
        view.Dispose();
        view.Wake(0); // disposed view: no-op
        w.Wake(0);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet), "disposing a view leaves the set working");
    }

    [Test]
    public void ChildProcessWakesParentAndParentWakesChild()
    {
        string name = NewName();
        ILatchWakers w = Create(2, name);
        ILatchOwner owner = Keep(w.Own(0));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        ChildWorker child = ChildAttachedTo(name, 2);
        child.Send("latch-own 1");

        child.Send("latch-wake 0");
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet), "the child's wake reached the parent");

        child.Begin($"latch-wait {Wait}");
        Thread.Sleep(20); // the child is most likely asleep by now; the test passes either way
        w.Wake(1);
        Assert.That(child.End("latch-wait"), Is.EqualTo("set"), "the parent's wake reached the child");
        if (w is LinuxLatchWakers linux)
        {
            string route = linux.WakeRoute(1);
            TestContext.Out.WriteLine($"{variant}: the parent woke the child through {route}");
            // linux: pidfd_getfd, unless this machine refuses it (Yama, seccomp), where the fallback is right too.
            Assert.That(route, variant == LinuxSignal ? Is.EqualTo("signal") : Is.EqualTo("eventfd").Or.EqualTo("signal"));
        }

        Assert.That(child.Send("latch-wait 20"), Is.EqualTo("timeout"));
        Assert.That(WaitCount(set, 0), Is.Zero);

        // The child's slot changes owner: the parent's cached way to wake it must follow.
        child.Send("latch-disown");
        w.Wake(1); // nobody: no-op
        child.Send("latch-own 1");
        w.Wake(1);
        Assert.That(child.Send($"latch-wait {Wait}"), Is.EqualTo("set"), "the new owner is woken");
    }

    [Test]
    [Category(TestEnvironment.BusyAcrossProcesses)]
    public void PingPongBetweenProcessesLosesNoWakeUp()
    {
        string name = NewName();
        ILatchWakers w = Create(2, name);
        ILatchOwner owner = Keep(w.Own(0));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        ChildWorker child = ChildAttachedTo(name, 2);
        child.Send("latch-own 1");
        int rounds = IsWindows ? 2_000 : 10_000; // every Windows wait is a wineserver round trip under Wine
        child.Begin($"latch-pingpong {rounds} 1 0");
        Span<WaitEvent> occurred = new WaitEvent[4];
        for (int i = 0; i < rounds; i++)
        {
            w.Wake(1);
            if (set.Wait(Wait, occurred) == 0)
                Assert.Fail($"round {i}: the child's wake-up was lost ({child.EndRaw("latch-pingpong", TimeSpan.FromSeconds(1))})");
        }
        child.End("latch-pingpong", TimeSpan.FromSeconds(60));
        Assert.That(WaitCount(set, 0), Is.Zero);
        Assert.That(child.Send("latch-wait 0"), Is.EqualTo("timeout"));
    }

    [Test]
    public void SteadyStateWakeAndWaitAllocateNothing()
    {
        string name = NewName();
        ILatchWakers w = Create(2, name);
        ILatchOwner owner = Keep(w.Own(0));
        (Socket near, _) = SocketPair();
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        set.AddSocket(near.Handle, WaitEvents.SocketReadable);
        Span<WaitEvent> occurred = new WaitEvent[4];
        for (int i = 0; i < 10; i++) // warm up (first calls, tiering)
        {
            w.Wake(0);
            set.Wait(Wait, occurred);
        }
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1_000; i++)
        {
            w.Wake(0);
            if (set.Wait(Wait, occurred) != 1)
                Assert.Fail($"round {i}: the wake-up was lost");
            set.Wait(0, occurred);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(allocated, Is.Zero, "bytes allocated by 1,000 rounds of Wake and two Waits in this process");

        // Another process waking our slot, after its first wake of this owner.
        ChildWorker child = ChildAttachedTo(name, 2);
        Assert.That(child.Send("latch-wake-many 0 1000"), Is.EqualTo("0"), "bytes the child allocated in 1,000 Wakes");
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet));
    }

    [Test]
    public void WakeOfAnAbsentOrDeadOwnerIsANoOp()
    {
        string name = NewName();
        ILatchWakers w = Create(3, name);
        Assert.DoesNotThrow(() => w.Wake(0), "never owned");

        ILatchOwner gone = w.Own(2);
        gone.Dispose();
        Assert.DoesNotThrow(() => w.Wake(2), "owner left");

        ChildWorker child = ChildAttachedTo(name, 3);
        child.Send("latch-own 1");
        w.Wake(1);
        Assert.That(child.Send($"latch-wait {Wait}"), Is.EqualTo("set"));
        child.Kill();
        Assert.DoesNotThrow(() => w.Wake(1), "owner killed");
        Assert.DoesNotThrow(() => w.Wake(1), "again, from the cache");

        // The slot still works for a new owner here.
        ILatchOwner owner = Keep(w.Own(1));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(owner);
        Assert.That(WaitCount(set, 0), Is.Zero, "nothing left from the killed owner");
        w.Wake(1);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet));
    }

    [Test]
    public void SupervisorDeathIsReported()
    {
        string name = NewName();
        Create(1, name); // the Posix lifeline FIFO lives in the set's directory
        ChildWorker supervisor = StartChild();
        supervisor.Send($"lifeline {name}");
        ISupervisorWatch watch = Keep(_latches.WatchSupervisor(name, supervisor.Pid));
        Assert.That(watch.IsSupervisorDead, Is.False);
        IPlatformWaitSet set = WaitSet();
        int pos = set.AddSupervisorWatch(watch);
        Assert.That(WaitCount(set, 0), Is.Zero, "alive");

        supervisor.Kill();
        WaitEvent e = Single(set, Wait);
        Assert.That(e.Position, Is.EqualTo(pos));
        Assert.That(e.Events, Is.EqualTo(WaitEvents.SupervisorDeath));
        Assert.That(watch.IsSupervisorDead, Is.True);
        Assert.That(Single(set, 0).Events, Is.EqualTo(WaitEvents.SupervisorDeath), "death stays reported");
    }

    [Test]
    public void SupervisorDeathWakesAWaitThatAlsoWatchesALatch()
    {
        string name = NewName();
        ILatchWakers w = Create(1, name);
        ChildWorker supervisor = StartChild();
        supervisor.Send($"lifeline {name}");
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(Keep(w.Own(0)));
        int pos = set.AddSupervisorWatch(Keep(_latches.WatchSupervisor(name, supervisor.Pid)));
        Assert.That(WaitCount(set, 0), Is.Zero);
        var killer = new Thread(() =>
        {
            Thread.Sleep(20);
            supervisor.Kill();
        }) { IsBackground = true };
        killer.Start();
        WaitEvent e = Single(set, Wait);
        Assert.That(killer.Join(Wait), Is.True);
        Assert.That((e.Position, e.Events), Is.EqualTo((pos, WaitEvents.SupervisorDeath)));
    }

    [Test]
    public void WatchOfASupervisorAlreadyGoneIsReadyAtOnce()
    {
        string name = NewName();
        Create(1, name); // a lifeline FIFO nobody holds (Posix)
        int pid = DeadPid();
        ISupervisorWatch watch = Keep(_latches.WatchSupervisor(name, pid));
        Assert.That(watch.IsSupervisorDead, Is.True);
        IPlatformWaitSet set = WaitSet();
        set.AddSupervisorWatch(watch);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.SupervisorDeath));
    }

    [Test]
    public void WatchWithoutALatchSetFallsBackToTheProcessId()
    {
        // No set of this name exists (Posix: no lifeline FIFO, the watch checks kill(pid, 0)).
        ChildWorker supervisor = StartChild();
        ISupervisorWatch watch = Keep(_latches.WatchSupervisor(NewName(), supervisor.Pid));
        Assert.That(watch.IsSupervisorDead, Is.False);
        IPlatformWaitSet set = WaitSet();
        int pos = set.AddSupervisorWatch(watch);
        Assert.That(WaitCount(set, 0), Is.Zero);
        supervisor.Kill();
        Assert.That(watch.IsSupervisorDead, Is.True);
        WaitEvent e = Single(set, Wait);
        Assert.That((e.Position, e.Events), Is.EqualTo((pos, WaitEvents.SupervisorDeath)));
    }

    [Test]
    public void InterruptReachesAListeningProcess()
    {
        string name = NewName();
        ChildWorker child = StartChild();
        child.Send($"interrupt-listen {name}");
        Assert.That(child.Send("interrupt-count"), Is.EqualTo("0"));
        Assert.That(_latches.Interrupt(name, child.Pid), Is.True);
        Poll.WaitFor(() => child.Send("interrupt-count") != "0", "the interrupt to arrive", TimeSpan.FromMilliseconds(Wait), pollMs: 5);
        Assert.That(child.HasExited, Is.False, "the interrupt did not kill the listener");
    }

    [Test]
    public void InterruptInThisProcessRunsTheCallback()
    {
        string name = NewName();
        using var got = new ManualResetEventSlim();
        using (IDisposable listener = _latches.ListenForInterrupts(name, got.Set))
        {
            Assert.That(_latches.Interrupt(name, Environment.ProcessId), Is.True);
            Assert.That(got.Wait(Wait), Is.True, "the callback ran");
        }
    }

    [Test]
    public void InterruptOfAGoneProcessReturnsFalse()
    {
        string name = NewName();
        int pid = DeadPid();
        bool result = true;
        Assert.DoesNotThrow(() => result = _latches.Interrupt(name, pid));
        Assert.That(result, Is.False);
        Assert.That(_latches.Interrupt(name, 0), Is.False);
        Assert.That(_latches.Interrupt(name, -1), Is.False);
        Assert.That(_latches.Interrupt("a/b", pid), Is.False, "a bad name: false, not an exception");
    }

    [Test]
    public void WaitSetCreateDisposeLeaksNoDescriptors()
    {
        string name = NewName();
        ILatchWakers w = Create(1, name);
        ILatchOwner owner = Keep(w.Own(0));
        ISupervisorWatch watch = Keep(_latches.WatchSupervisor(name, Environment.ProcessId));
        int cycles = IsWindows ? 1_000 : 10_000;
        int before = OpenDescriptors();
        for (int i = 0; i < cycles; i++)
        {
            using IPlatformWaitSet set = _latches.CreateWaitSet(3);
            set.AddLatch(owner);
            set.AddSupervisorWatch(watch);
        }
        int after = OpenDescriptors();
        if (before >= 0)
            Assert.That(after, Is.LessThanOrEqualTo(before + 4), $"descriptors before {before}, after {cycles} cycles {after}");
    }

    [Test]
    public void OwnWakeDisposeCyclesLeakNoDescriptors()
    {
        string name = NewName();
        ILatchWakers w = Create(2, name);
        ILatchWakers view = Attach(name, 2);
        int before = OpenDescriptors();
        for (int i = 0; i < 1_000; i++)
        {
            using ILatchOwner owner = w.Own(i & 1);
            view.Wake(i & 1);
            w.Wake(i & 1);
            owner.Drain();
        }
        int after = OpenDescriptors();
        if (before >= 0)
            Assert.That(after, Is.LessThanOrEqualTo(before + 4), $"descriptors before {before}, after {after}");
    }

    [Test]
    public void DestroyLeavesNothingBehind()
    {
        int before = OpenDescriptors();
        string name = NewName();
        ILatchWakers w = _latches.Create(name, Storage(name, 4), Stride, 4);
        ILatchOwner owner = w.Own(0);
        w.Wake(0);
        w.Wake(1);
        owner.Dispose();
        w.Destroy();
        Assert.DoesNotThrow(() => w.Wake(0), "Wake after Destroy is a no-op");
        Assert.Throws<ObjectDisposedException>(() => w.Own(0));
        if (before >= 0)
            Assert.That(OpenDescriptors(), Is.LessThanOrEqualTo(before + 2), "descriptors closed");
        if (_backend == "posix")
        {
            Assert.That(Directory.Exists(PosixLatchProvider.DirectoryOf(name)), Is.False, "the FIFO directory is gone");
            Assert.Throws<PgIpcOsException>(() => _latches.Attach(name, 0, 0, 4));
        }
        // The name can be used again.
        ILatchWakers again = Create(4, name);
        Assert.That(again.Count, Is.EqualTo(4));
    }

    [Test]
    public void DisposingTheWakersReleasesTheirOwners()
    {
        string name = NewName();
        ILatchWakers w = Create(1, name);
        ILatchWakers view = Attach(name, 1);
        ILatchOwner owner = view.Own(0);
        view.Dispose();
        Assert.DoesNotThrow(() => owner.Dispose(), "owner disposed after its wakers: harmless");
        ILatchOwner again = Keep(w.Own(0));
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(again);
        w.Wake(0);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet));
    }

    [TestCase("")]
    [TestCase("abcdefghijklmnopqrstuvwxy")] // 25 characters
    [TestCase("a/b")]
    [TestCase("a-b")]
    [TestCase("a b")]
    [TestCase("a\\b")]
    [TestCase("é")]
    public void BadNamesAreRejected(string name)
    {
        nint storage = Storage("badname", 1);
        Assert.Multiple(() =>
        {
            Assert.Throws<ArgumentException>(() => _latches.Create(name, storage, Stride, 1));
            Assert.Throws<ArgumentException>(() => _latches.Attach(name, storage, Stride, 1));
            Assert.Throws<ArgumentException>(() => _latches.CreateLifeline(name));
            Assert.Throws<ArgumentException>(() => _latches.WatchSupervisor(name, Environment.ProcessId));
            Assert.Throws<ArgumentException>(() => _latches.ListenForInterrupts(name, () => { }));
        });
    }

    [Test]
    public void LongestNameWorks()
    {
        string name = NewName();
        name += new string('x', 24 - name.Length);
        ILatchWakers w = Create(2, name);
        IPlatformWaitSet set = WaitSet();
        set.AddLatch(Keep(w.Own(1)));
        w.Wake(1);
        Assert.That(Single(set, Wait).Events, Is.EqualTo(WaitEvents.LatchSet));
    }

    [TestCase(0)]
    [TestCase(-1)]
    public void NonPositiveCountIsRejected(int count)
    {
        nint storage = Storage("badcount", 1);
        Assert.Throws<ArgumentOutOfRangeException>(() => _latches.Create(NewName(), storage, Stride, count));
        Assert.Throws<ArgumentOutOfRangeException>(() => _latches.Attach(NewName(), storage, Stride, count));
    }

    [TestCase(-1)]
    [TestCase(3)]
    [TestCase(int.MinValue)]
    [TestCase(int.MaxValue)]
    public void BadIndexIsOutOfRangeForOwnAndANoOpForWake(int index)
    {
        ILatchWakers w = Create(3);
        Assert.Throws<ArgumentOutOfRangeException>(() => w.Own(index));
        Assert.DoesNotThrow(() => w.Wake(index), "Wake never throws");
    }

    [Test]
    public void OtherBadArgumentsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => _latches.CreateWaitSet(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => _latches.CreateWaitSet(-1));
        Assert.Throws<ArgumentOutOfRangeException>(() => _latches.WatchSupervisor(NewName(), 0));

        ILatchWakers w = Create(1);
        IPlatformWaitSet set = WaitSet(1);
        int pos = set.AddLatch(Keep(w.Own(0)));
        Assert.Throws<InvalidOperationException>(() => set.AddLatch(Keep(Create(1).Own(0))), "full");
        Assert.Throws<ArgumentException>(() => set.Modify(pos, WaitEvents.SocketReadable), "a latch is only on or off");
        Assert.Throws<ArgumentOutOfRangeException>(() => set.Modify(1, WaitEvents.None));
        Assert.Throws<ArgumentException>(() => set.Wait(0, Span<WaitEvent>.Empty));
        if (!IsWindows)
            Assert.Throws<PlatformNotSupportedException>(() => set.AddHandle(1));
    }

    [Test]
    public void UseAfterDisposeIsAnObjectDisposedException()
    {
        ILatchWakers w = Create(1);
        IPlatformWaitSet set = _latches.CreateWaitSet(2);
        set.AddLatch(Keep(w.Own(0)));
        set.Dispose();
        Assert.Throws<ObjectDisposedException>(() => set.Wait(0, new WaitEvent[1]));
        Assert.DoesNotThrow(() => set.Dispose(), "Dispose twice is harmless");
    }
}

/// <summary>Layout of the Linux backend's per-slot latch storage (shared between processes).</summary>
public sealed class LinuxLatchSlotLayoutTests
{
    [Test]
    public unsafe void SizeAndOffsets()
    {
        Assert.That(sizeof(LinuxLatchSlot), Is.EqualTo(16));
        Assert.That(sizeof(LinuxLatchSlot), Is.LessThanOrEqualTo(LatchStorage.MaxSize));
        Assert.That(Marshal.OffsetOf<LinuxLatchSlot>(nameof(LinuxLatchSlot.Generation)), Is.EqualTo((nint)0));
        Assert.That(Marshal.OffsetOf<LinuxLatchSlot>(nameof(LinuxLatchSlot.Pid)), Is.EqualTo((nint)4));
        Assert.That(Marshal.OffsetOf<LinuxLatchSlot>(nameof(LinuxLatchSlot.Fd)), Is.EqualTo((nint)8));
    }

    /// <summary>
    /// Tmds.LibC's struct epoll_event, which EpollWaitSet hands to the kernel, is the kernel's: packed (12 bytes,
    /// data at 4) on x86_64 only, 16 bytes with data at 8 elsewhere. Tmds.LibC's assembly exists only for Linux,
    /// so the Tmds types are touched inside the backend, not in this method.
    /// </summary>
    [Test]
    public void TmdsEpollEventIsTheKernels()
    {
        if (!OperatingSystem.IsLinux())
        {
            TestContext.Out.WriteLine("Linux only");
            return;
        }
        bool packed = RuntimeInformation.ProcessArchitecture == Architecture.X64;
        Assert.That(EpollWaitSet.EventSize, Is.EqualTo(packed ? 12 : 16));
        Assert.That(EpollWaitSet.DataOffset, Is.EqualTo(packed ? 4 : 8));
    }
}
