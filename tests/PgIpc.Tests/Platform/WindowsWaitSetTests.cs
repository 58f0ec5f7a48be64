/*-------------------------------------------------------------------------
 * WindowsWaitSetTests.cs
 *   What only the Windows backend's latches and wait sets do: the 64-handle
 *   limit, arbitrary HANDLEs, several events reported from one
 *   WaitForMultipleObjects (the lowest index plus polling of the rest),
 *   nothing consumed beyond the caller's span, WSAEventSelect sockets, the
 *   process-handle supervisor watch, named-event interrupts, and the
 *   WSANETWORKEVENTS layout.
 *
 * NOTES
 *   The backend-neutral contract is WaitEventContractTests; this fixture
 *   adds the Windows-specific cases. It is instantiated for the windows
 *   backend only, and reported skipped (decided at discovery, nothing
 *   thrown: SkipAtDiscovery.cs) where this machine lacks it. Every wait is
 *   bounded (10 s) so a lost wake-up fails instead of hanging; no test
 *   asserts a duration.
 *-------------------------------------------------------------------------
 */
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Platform.Windows;
using WinApi = PgIpc.Platform.Windows.Interop.Windows;

namespace PgIpc.Tests.Platform;

[TestFixtureSource(nameof(Backend))]
public sealed class WindowsWaitSetTests(string backend)
{
    private const int Wait = 10_000;
    private static int s_counter;

    private ILatchProvider _latches = null!;
    private readonly List<IDisposable> _cleanup = [];

    /// <summary>The windows backend alone: skipped at discovery where this machine lacks it.</summary>
    public static IEnumerable<TestFixtureData> Backend() => SkipAtDiscovery.OnlyBackend("windows");

    [SetUp]
    public void SetUp() => _latches = PgIpcPlatform.Get(backend).Latches;

    [TearDown]
    public void TearDown()
    {
        for (int i = _cleanup.Count - 1; i >= 0; i--)
            _cleanup[i].Dispose();
        _cleanup.Clear();
    }

    private T Keep<T>(T d) where T : IDisposable
    {
        _cleanup.Add(d);
        return d;
    }

    private static string NewName()
        => $"w{Environment.ProcessId}.{Interlocked.Increment(ref s_counter)}.{Guid.NewGuid().ToString("N")[..4]}";

    private ILatchWakers NewLatches(int count, out string name)
    {
        name = NewName();
        return Keep(_latches.Create(name, 0, 0, count));
    }

    [Test]
    public void StorageIsUnused()
    {
        Assert.That(_latches.StorageSize, Is.Zero);
    }

    [Test]
    public void CapacityAbove64IsRefused()
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() => _latches.CreateWaitSet(65))!;
        Assert.That(ex.Message, Does.Contain("64").And.Contain("MAXIMUM_WAIT_OBJECTS"));
        Assert.Throws<ArgumentOutOfRangeException>(() => _latches.CreateWaitSet(0));
        using IPlatformWaitSet set = _latches.CreateWaitSet(64);
        Assert.That(set.Capacity, Is.EqualTo(64));
    }

    [Test]
    public void SixtyFourHandlesFillTheSetAndTheLastIsReported()
    {
        using IPlatformWaitSet set = _latches.CreateWaitSet(64);
        var events = new ManualResetEvent[64];
        for (int i = 0; i < 64; i++)
        {
            events[i] = Keep(new ManualResetEvent(false));
            Assert.That(set.AddHandle(events[i].SafeWaitHandle.DangerousGetHandle()), Is.EqualTo(i));
        }
        Assert.Throws<InvalidOperationException>(() => set.AddHandle(events[0].SafeWaitHandle.DangerousGetHandle()));
        events[63].Set();
        Span<WaitEvent> got = new WaitEvent[4];
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1));
        Assert.That(got[0].Position, Is.EqualTo(63));
        Assert.That(got[0].Events, Is.EqualTo(WaitEvents.HandleSignaled));
    }

    [Test]
    public void AddHandleReportsAnArbitraryEvent()
    {
        using var ev = new AutoResetEvent(false);
        nint h = ev.SafeWaitHandle.DangerousGetHandle();
        using IPlatformWaitSet set = _latches.CreateWaitSet(2);
        int pos = set.AddHandle(h);
        Span<WaitEvent> got = new WaitEvent[2];
        Assert.That(set.Wait(0, got), Is.Zero, "nothing signalled yet");
        Assert.That(set.Wait(50, got), Is.Zero, "timeout");
        ev.Set();
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1));
        Assert.That(got[0], Is.EqualTo(new WaitEvent(pos, WaitEvents.HandleSignaled, h)));
        Assert.That(set.Wait(0, got), Is.Zero, "the wait consumed the auto-reset event");

        set.Modify(pos, WaitEvents.None);
        ev.Set();
        Assert.That(set.Wait(0, got), Is.Zero, "switched off");
        set.Modify(pos, WaitEvents.HandleSignaled);
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1), "switched on again: still signalled");
        Assert.Throws<ArgumentException>(() => set.Modify(pos, WaitEvents.LatchSet));
    }

    [Test]
    public void AddHandleRefusesNullAndInvalid()
    {
        using IPlatformWaitSet set = _latches.CreateWaitSet(2);
        Assert.Throws<ArgumentException>(() => set.AddHandle(0));
        Assert.Throws<ArgumentException>(() => set.AddHandle(-1));
    }

    [Test]
    public void OneWaitReportsSeveralEvents()
    {
        ILatchWakers wakers = NewLatches(3, out _);
        ILatchOwner[] owners = [Keep(wakers.Own(0)), Keep(wakers.Own(1)), Keep(wakers.Own(2))];
        using var manual = new ManualResetEvent(false);
        using IPlatformWaitSet set = _latches.CreateWaitSet(4);
        foreach (ILatchOwner o in owners)
            set.AddLatch(o);
        int handlePos = set.AddHandle(manual.SafeWaitHandle.DangerousGetHandle());

        wakers.Wake(0);
        wakers.Wake(2);
        manual.Set();
        Span<WaitEvent> got = new WaitEvent[8];
        int n = set.Wait(Wait, got);
        Assert.That(n, Is.EqualTo(3));
        Assert.That(got[0], Is.EqualTo(new WaitEvent(0, WaitEvents.LatchSet, owners[0].WaitHandle)));
        Assert.That(got[1], Is.EqualTo(new WaitEvent(2, WaitEvents.LatchSet, owners[2].WaitHandle)));
        Assert.That(got[2].Position, Is.EqualTo(handlePos));
        Assert.That(got[2].Events, Is.EqualTo(WaitEvents.HandleSignaled));

        // The polled latch events were consumed (reported as drained); the manual-reset handle stays signalled.
        n = set.Wait(0, got);
        Assert.That(n, Is.EqualTo(1));
        Assert.That(got[0].Position, Is.EqualTo(handlePos));
    }

    [Test]
    public void NothingIsConsumedBeyondTheCallersSpan()
    {
        ILatchWakers wakers = NewLatches(3, out _);
        using IPlatformWaitSet set = _latches.CreateWaitSet(3);
        for (int i = 0; i < 3; i++)
            set.AddLatch(Keep(wakers.Own(i)));
        for (int i = 0; i < 3; i++)
            wakers.Wake(i);
        Span<WaitEvent> one = new WaitEvent[1];
        for (int i = 0; i < 3; i++)
        {
            Assert.That(set.Wait(Wait, one), Is.EqualTo(1), $"wait {i}");
            Assert.That(one[0].Position, Is.EqualTo(i));
            Assert.That(one[0].Events, Is.EqualTo(WaitEvents.LatchSet));
        }
        Assert.That(set.Wait(0, one), Is.Zero, "all three wakes reported, one per wait");
    }

    [Test]
    public void CreateCollisionFailsAndLeavesTheFirstSetWorking()
    {
        ILatchWakers first = NewLatches(2, out string name);
        var ex = Assert.Throws<PgIpcOsException>(() => _latches.Create(name, 0, 0, 2))!;
        Assert.That(ex.ErrorCode, Is.EqualTo(WinApi.ERROR_ALREADY_EXISTS));
        Assert.That(ex.Message, Does.Contain(name));
        using ILatchOwner owner = first.Own(1);
        using IPlatformWaitSet set = _latches.CreateWaitSet(1);
        set.AddLatch(owner);
        first.Wake(1);
        Span<WaitEvent> got = new WaitEvent[1];
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1));
    }

    [Test]
    public void AttachWakesLazilyAndOwnDrainsStaleWakes()
    {
        ILatchWakers created = NewLatches(4, out string name);
        ILatchWakers attached = Keep(_latches.Attach(name, 0, 0, 4));
        attached.Wake(3); // before anyone owns slot 3: a stale wake
        using ILatchOwner owner = created.Own(3);
        using IPlatformWaitSet set = _latches.CreateWaitSet(1);
        set.AddLatch(owner);
        Span<WaitEvent> got = new WaitEvent[1];
        Assert.That(set.Wait(0, got), Is.Zero, "Own drained the wake meant for an earlier owner");
        attached.Wake(3);
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1));
        attached.Wake(-1);
        attached.Wake(4);
        Assert.Throws<InvalidOperationException>(() => created.Own(3), "owned twice through one object");
        Assert.Throws<PgIpcOsException>(() => _latches.Attach(NewName(), 0, 0, 1), "no such set");
    }

    [Test]
    public void WakeAllocatesNothingAfterTheFirst()
    {
        ILatchWakers created = NewLatches(2, out string name);
        ILatchWakers attached = Keep(_latches.Attach(name, 0, 0, 2));
        using ILatchOwner owner = created.Own(1);
        attached.Wake(1);
        created.Wake(1);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            attached.Wake(1);
            created.Wake(1);
            owner.Drain();
        }
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
    }

    [Test]
    public void WaitAllocatesNothing()
    {
        ILatchWakers wakers = NewLatches(2, out _);
        using ILatchOwner a = wakers.Own(0), b = wakers.Own(1);
        using IPlatformWaitSet set = _latches.CreateWaitSet(2);
        set.AddLatch(a);
        set.AddLatch(b);
        Span<WaitEvent> got = new WaitEvent[2];
        wakers.Wake(0);
        wakers.Wake(1);
        set.Wait(Wait, got);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 200; i++)
        {
            wakers.Wake(0);
            wakers.Wake(1);
            if (set.Wait(Wait, got) != 2)
                Assert.Fail($"round {i}: expected both latches");
        }
        Assert.That(GC.GetAllocatedBytesForCurrentThread() - before, Is.Zero);
    }

    [Test]
    public void SocketReadableWriteableAndClosed()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using IPlatformWaitSet set = _latches.CreateWaitSet(3);
        int lpos = set.AddSocket(listener.Handle, WaitEvents.SocketReadable);
        Span<WaitEvent> got = new WaitEvent[3];
        Assert.That(set.Wait(0, got), Is.Zero, "no pending connection");
        client.Connect(listener.LocalEndPoint!);
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1), "a pending connection is readable");
        Assert.That(got[0], Is.EqualTo(new WaitEvent(lpos, WaitEvents.SocketReadable, listener.Handle)));
        using Socket server = listener.Accept();

        int cpos = set.AddSocket(client.Handle, WaitEvents.SocketReadable);
        set.Modify(lpos, WaitEvents.None);
        Assert.That(set.Wait(0, got), Is.Zero, "nothing to read");
        server.Send([42]);
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1));
        Assert.That(got[0], Is.EqualTo(new WaitEvent(cpos, WaitEvents.SocketReadable, client.Handle)));
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1), "still readable while the byte is unread");

        Span<byte> buf = stackalloc byte[4];
        Assert.That(client.Receive(buf), Is.EqualTo(1));
        Assert.That(set.Wait(0, got), Is.Zero, "read: nothing left");

        set.Modify(cpos, WaitEvents.SocketWriteable);
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1));
        Assert.That(got[0], Is.EqualTo(new WaitEvent(cpos, WaitEvents.SocketWriteable, client.Handle)));

        set.Modify(cpos, WaitEvents.SocketReadable | WaitEvents.SocketClosed);
        server.Shutdown(SocketShutdown.Both);
        server.Close();
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1));
        Assert.That(got[0].Events, Is.EqualTo(WaitEvents.SocketReadable | WaitEvents.SocketClosed));
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1), "EOF stays readable (FD_CLOSE is posted once; the peek finds it)");
    }

    [Test]
    public void SocketAndLatchInOneWait()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using Socket server = listener.Accept();
        ILatchWakers wakers = NewLatches(1, out _);
        using ILatchOwner owner = wakers.Own(0);
        using IPlatformWaitSet set = _latches.CreateWaitSet(2);
        set.AddLatch(owner);
        int cpos = set.AddSocket(client.Handle, WaitEvents.SocketReadable);
        Span<WaitEvent> got = new WaitEvent[2];
        server.Send([1]);
        // Let the byte arrive so it is already readable when the wait starts.
        Assert.That(SpinWait.SpinUntil(() => client.Available > 0, Wait), Is.True);
        wakers.Wake(0);
        int n = set.Wait(Wait, got);
        WaitEvents all = WaitEvents.None;
        for (int i = 0; i < n; i++)
            all |= got[i].Events;
        if (n == 1)
        {
            // The socket probe found data before the wait; the latch is still signalled for the next wait.
            Assert.That(got[0].Position, Is.EqualTo(cpos));
            Assert.That(set.Wait(Wait, got), Is.GreaterThanOrEqualTo(1));
            for (int i = 0; i < 2; i++)
                all |= got[i].Events;
        }
        Assert.That(all, Is.EqualTo(WaitEvents.LatchSet | WaitEvents.SocketReadable));
    }

    [Test]
    public void AddSocketRefusesANonSocket()
    {
        using var ev = new ManualResetEvent(false);
        using IPlatformWaitSet set = _latches.CreateWaitSet(1);
        var ex = Assert.Throws<PgIpcOsException>(() => set.AddSocket(ev.SafeWaitHandle.DangerousGetHandle(), WaitEvents.SocketReadable))!;
        Assert.That(ex.Call, Is.EqualTo("getsockopt"));
        Assert.That(set.Count, Is.Zero);
    }

    [Test]
    public void SupervisorWatchOfAMissingPidIsDead()
    {
        // Windows pids are multiples of 4; an odd one never exists.
        using ISupervisorWatch watch = _latches.WatchSupervisor("sup", 0x7FFFFFF1);
        Assert.That(watch.IsSupervisorDead, Is.True);
        using IPlatformWaitSet set = _latches.CreateWaitSet(1);
        int pos = set.AddSupervisorWatch(watch);
        Span<WaitEvent> got = new WaitEvent[1];
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1));
        Assert.That(got[0], Is.EqualTo(new WaitEvent(pos, WaitEvents.SupervisorDeath, watch.WaitHandle)));
        Assert.That(set.Wait(0, got), Is.EqualTo(1), "death stays reported");
    }

    [Test]
    public void SupervisorWatchSeesAChildDie()
    {
        using ChildWorker child = ChildWorker.Start(backend);
        using ISupervisorWatch watch = _latches.WatchSupervisor("sup", child.Pid);
        Assert.That(watch.IsSupervisorDead, Is.False);
        using IPlatformWaitSet set = _latches.CreateWaitSet(1);
        set.AddSupervisorWatch(watch);
        Span<WaitEvent> got = new WaitEvent[1];
        Assert.That(set.Wait(0, got), Is.Zero);
        child.Kill();
        Assert.That(set.Wait(Wait, got), Is.EqualTo(1));
        Assert.That(got[0].Events, Is.EqualTo(WaitEvents.SupervisorDeath));
        Assert.That(watch.IsSupervisorDead, Is.True);
    }

    [Test]
    public void InterruptsRunEveryListenerAndStopOnDispose()
    {
        string name = NewName();
        int pid = Environment.ProcessId;
        Assert.That(_latches.Interrupt(name, pid), Is.False, "nobody listens yet");
        using var a = new SemaphoreSlim(0);
        using var b = new SemaphoreSlim(0);
        IDisposable la = _latches.ListenForInterrupts(name, () => a.Release());
        IDisposable lb = _latches.ListenForInterrupts(name, () => b.Release());
        try
        {
            Assert.That(_latches.Interrupt(name, pid), Is.True);
            Assert.That(a.Wait(Wait), Is.True);
            Assert.That(b.Wait(Wait), Is.True);
            lb.Dispose();
            Assert.That(_latches.Interrupt(name, pid), Is.True);
            Assert.That(a.Wait(Wait), Is.True);
            Assert.That(b.Wait(200), Is.False, "disposed listener");
        }
        finally
        {
            la.Dispose();
            lb.Dispose();
        }
        Assert.That(_latches.Interrupt(name, pid), Is.False, "the event went with the last listener");
        Assert.That(_latches.Interrupt("bad name!", pid), Is.False);
        Assert.That(_latches.Interrupt(name, -4), Is.False);
    }

    [Test]
    public void ListenerMayDisposeItselfFromItsAction()
    {
        string name = NewName();
        using var done = new ManualResetEventSlim();
        IDisposable? self = null;
        self = _latches.ListenForInterrupts(name, () =>
        {
            self!.Dispose();
            done.Set();
        });
        Assert.That(_latches.Interrupt(name, Environment.ProcessId), Is.True);
        Assert.That(done.Wait(Wait), Is.True);
        Assert.That(SpinWait.SpinUntil(() => !_latches.Interrupt(name, Environment.ProcessId), Wait), Is.True, "the thread left and closed the event");
    }

    [Test]
    public void WsaNetworkEventsLayout()
    {
        Assert.That(Unsafe.SizeOf<WinApi.WSANETWORKEVENTS>(), Is.EqualTo(44));
        Assert.That(System.Runtime.InteropServices.Marshal.OffsetOf<WinApi.WSANETWORKEVENTS>("iErrorCode"), Is.EqualTo((nint)4));
    }
}
