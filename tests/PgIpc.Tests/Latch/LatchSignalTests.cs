/*-------------------------------------------------------------------------
 * LatchSignalTests.cs
 *   Latches, wait-event sets, ProcSignal, barriers, PMSignal and condition
 *   variables over a cluster, per backend, with real worker processes:
 *   ping-pong across processes, timeouts, several events at once,
 *   supervisor death, coalesced signals, barriers, Signal vs Broadcast.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using NUnit.Framework;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sync;
using PgIpc.Tests.Sync;

namespace PgIpc.Tests.Latch;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class LatchSignalTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private LockCluster? _c;
    private readonly List<ChildWorker> _workers = [];
    private readonly List<Thread> _threads = [];

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        Participant.CurrentOrNull?.Dispose();
        foreach (Thread t in _threads)
            t.Join(Patience);
        _threads.Clear();
        _c?.Dispose();
        _c = null;
    }

    private LockCluster Cluster => _c ??= LockCluster.Create(PgIpcPlatform.Get(backend));

    private ChildWorker StartWorker(bool attach = true)
        => attach ? Workers.StartAttached(backend, _workers, Cluster.Segment.Handle, "cl-attach") : Workers.Start(backend, _workers);

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);

    [Test]
    public void SetLatchIsRememberedUntilReset()
    {
        using Participant me = Cluster.Procs.Join();
        me.SetLatch();
        me.SetLatch(); // already set: nothing more happens
        Assert.That(Latches.IsSet(me), Is.True);
        Assert.That(me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 5000), Is.EqualTo(WaitEvents.LatchSet), "a set latch returns at once");
        Assert.That(me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 5000), Is.EqualTo(WaitEvents.LatchSet), "still set: Wait does not reset");
        me.ResetLatch();
        Assert.That(Latches.IsSet(me), Is.False);
        Assert.That(me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 0), Is.EqualTo(WaitEvents.Timeout));
        // SetLatch of a slot nobody owns, or out of range, is ignored rather than thrown.
        Latches.SetLatch(Cluster.Procs, Cluster.Procs.MaxProcs - 1);
        Latches.SetLatch(Cluster.Procs, -1);
        Latches.SetLatch(Cluster.Procs, 1_000_000);
    }

    [Test]
    public void TimeoutsReturnTimeoutAndNeverEarly()
    {
        using Participant me = Cluster.Procs.Join();
        foreach (int ms in new[] { 1, 30, 120 })
        {
            var sw = Stopwatch.StartNew();
            WaitEvents got = me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, ms);
            sw.Stop();
            Assert.That(got, Is.EqualTo(WaitEvents.Timeout));
            Assert.That(sw.Elapsed.TotalMilliseconds, Is.GreaterThanOrEqualTo(ms), $"a {ms} ms wait returned early");
        }
    }

    [Test]
    public void BadWaitArgumentsAreRefused()
    {
        using Participant me = Cluster.Procs.Join();
        Assert.Throws<ArgumentException>(() => me.WaitLatch(WaitEvents.None, 10));
        Assert.Throws<ArgumentException>(() => me.WaitLatch(WaitEvents.SocketReadable, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => me.WaitLatch(WaitEvents.Timeout, -5));
        using var set = new WaitEventSet(me, 2);
        set.AddLatch();
        Assert.Throws<InvalidOperationException>(() => set.AddLatch());
        Assert.Throws<ArgumentException>(() => set.AddSocket(0, WaitEvents.LatchSet));
        Assert.Throws<ArgumentOutOfRangeException>(() => set.Modify(7, WaitEvents.None));
    }

    [Test]
    public void AnotherThreadsSetLatchWakesTheWaiter()
    {
        ProcArray procs = Cluster.Procs;
        using Participant me = procs.Join();
        int myProc = me.ProcNumber;
        var t = new Thread(() =>
        {
            Thread.Sleep(50);
            Latches.SetLatch(procs, myProc);
        });
        t.Start();
        Assert.That(me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 30_000), Is.EqualTo(WaitEvents.LatchSet));
        Assert.That(t.Join(Patience), Is.True);
    }

    [Test]
    public void SeveralEventsComeBackFromOneWait()
    {
        using Participant me = Cluster.Procs.Join();
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        client.Connect(listener.LocalEndPoint!);
        using Socket server = listener.Accept();
        using var set = new WaitEventSet(me, 4);
        int latchPos = set.AddLatch("latch");
        int sockPos = set.AddSocket(server.Handle, WaitEvents.SocketReadable, "socket");
        var got = new WaitEvent[4];
        Assert.That(set.Wait(0, got), Is.Zero, "nothing ready yet");
        client.Send([1, 2, 3]);
        me.SetLatch();
        int n = 0;
        var seen = new HashSet<int>();
        var sw = Stopwatch.StartNew();
        while (seen.Count < 2 && sw.Elapsed < Patience)
        {
            n = set.Wait(1000, got);
            for (int i = 0; i < n; i++)
                seen.Add(got[i].Position);
        }
        Assert.That(seen, Is.EquivalentTo(new[] { latchPos, sockPos }));
        me.ResetLatch();
        // Switch the latch off: only the (still readable) socket is reported.
        set.Modify(latchPos, WaitEvents.None);
        me.SetLatch();
        n = set.Wait(1000, got);
        Assert.That(n, Is.EqualTo(1));
        Assert.That(got[0].Position, Is.EqualTo(sockPos));
        Assert.That(got[0].UserData, Is.EqualTo("socket"));
        Assert.That(got[0].Events & WaitEvents.SocketReadable, Is.EqualTo(WaitEvents.SocketReadable));
    }

    [Test]
    public void LatchPingPongAcrossProcessesLosesNoWakeUp()
    {
        // 100,000 round trips on Unix; fewer under Wine, where a round trip costs far more.
        int rounds = backend == "windows" ? 5_000 : 100_000;
        ProcArray procs = Cluster.Procs;
        using Participant me = procs.Join();
        ChildWorker w = StartWorker();
        int peer = Int(w.Send("cl-join"));
        w.Begin($"cl-pingpong {rounds} {me.ProcNumber}");
        for (int i = 0; i < rounds; i++)
        {
            Latches.SetLatch(procs, peer);
            WaitEvents got = me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 20_000);
            if ((got & WaitEvents.LatchSet) == 0)
                Assert.Fail($"round {i}: no answer from the worker within 20 s (a lost wake-up)");
            me.ResetLatch();
        }
        Assert.That(w.End("cl-pingpong", TimeSpan.FromSeconds(60)), Is.Empty);
    }

    [Test]
    public void SupervisorDeathWakesEveryWaiter()
    {
        ChildWorker supervisor = StartWorker(attach: false);
        string handle = supervisor.Send($"cl-create {TestEnvironment.UniqueKey("pm")}");
        ShmemSegment seg = ShmemSegment.Attach(ShmemHandle.Parse(handle), PgIpcPlatform.Get(backend));
        try
        {
            ProcArray procs = ProcArray.Attach(seg);
            Assert.That(procs.SupervisorPid, Is.EqualTo(supervisor.Pid));
            ChildWorker other = ChildWorker.Start(backend);
            _workers.Add(other);
            other.Send($"attach {handle}");
            other.Send("cl-attach");
            other.Send("cl-wait-death");
            using Participant me = procs.Join();
            Assert.That(procs.IsSupervisorDead, Is.False);
            WaitEvents mine = WaitEvents.None;
            var waiter = new Thread(() =>
            {
                using Participant p = procs.Join();
                mine = p.WaitLatch(WaitEvents.SupervisorDeath | WaitEvents.Timeout, 60_000);
            });
            waiter.Start();
            Assert.That(me.WaitLatch(WaitEvents.SupervisorDeath | WaitEvents.Timeout, 100), Is.EqualTo(WaitEvents.Timeout), "alive: nothing to report");
            supervisor.Kill();
            Assert.That(me.WaitLatch(WaitEvents.SupervisorDeath | WaitEvents.LatchSet | WaitEvents.Timeout, 30_000) & WaitEvents.SupervisorDeath,
                Is.EqualTo(WaitEvents.SupervisorDeath));
            Assert.That(waiter.Join(Patience), Is.True);
            Assert.That(mine, Is.EqualTo(WaitEvents.SupervisorDeath));
            Poll.WaitFor(() => other.Send("cl-result") != "pending", "the other process's waiter");
            Assert.That(other.Send("cl-result"), Is.EqualTo("SupervisorDeath"));
            Assert.That(procs.IsSupervisorDead, Is.True);
        }
        finally
        {
            // The supervisor is dead: the survivors clean up (destroy removes the OS objects).
            Participant.CurrentOrNull?.Dispose();
            if (seg.IsAttached)
                seg.Destroy();
        }
    }

    [Test]
    public void ProcSignalReasonsAreDeliveredCoalescedAndNeverLost()
    {
        const int sends = 500;
        LockCluster c = Cluster;
        using Participant me = c.Procs.Join();
        int calls = 0;
        long lastSeen = 0;
        var reason = (ProcSignalReason)40;
        me.SetProcSignalHandler(reason, _ =>
        {
            calls++;
            lastSeen = Volatile.Read(ref c.Counter(2));
        });
        ChildWorker w = StartWorker();
        w.Begin($"cl-signal {me.ProcNumber} {(int)reason} {sends}");
        var sw = Stopwatch.StartNew();
        while (lastSeen < sends && sw.Elapsed < Patience)
        {
            me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 1000);
            me.ResetLatch();
            me.ProcessInterrupts();
        }
        Assert.That(Int(w.End("cl-signal")), Is.EqualTo(sends), "every send found the participant");
        me.ProcessInterrupts();
        Assert.Multiple(() =>
        {
            Assert.That(lastSeen, Is.EqualTo(sends), "the last send was handled");
            Assert.That(calls, Is.InRange(1, sends), "sends are coalesced, never multiplied");
        });
        // An absent slot is refused without throwing.
        Assert.That(ProcSignal.SendProcSignal(c.Procs, c.Procs.MaxProcs - 1, reason), Is.False);
        Assert.That(ProcSignal.SendProcSignal(c.Procs, me.ProcNumber, reason, expectedPid: 1), Is.False, "wrong pid");
        Assert.Throws<ArgumentOutOfRangeException>(() => ProcSignal.SendProcSignal(c.Procs, 0, (ProcSignalReason)64));
    }

    [Test]
    public void ABarrierWaitsForEveryParticipant()
    {
        LockCluster c = Cluster;
        using Participant me = c.Procs.Join();
        int mine = 0;
        me.SetBarrierHandler(0, (_, kind) => mine++);
        ChildWorker a = StartWorker();
        ChildWorker b = StartWorker();
        a.Send("cl-serve");
        b.Send("cl-serve");
        ulong generation = ProcSignal.EmitProcSignalBarrier(c.Procs, 0);
        Assert.That(ProcSignal.WaitForProcSignalBarrier(me, generation, 30_000), Is.True);
        Assert.Multiple(() =>
        {
            Assert.That(Volatile.Read(ref c.Counter(3)), Is.EqualTo(2), "both workers absorbed before the wait returned");
            Assert.That(mine, Is.EqualTo(1), "the emitter absorbed its own");
        });
        ulong second = ProcSignal.EmitProcSignalBarrier(c.Procs, 0);
        Assert.That(second, Is.GreaterThan(generation));
        Assert.That(ProcSignal.WaitForProcSignalBarrier(me, second, 30_000), Is.True);
        Assert.That(Volatile.Read(ref c.Counter(3)), Is.EqualTo(4));
        a.Send("cl-stop");
        b.Send("cl-stop");
    }

    [Test]
    public void ConditionVariableSignalWakesOneAndBroadcastWakesAll()
    {
        LockCluster c = Cluster;
        using Participant me = c.Procs.Join();
        ChildWorker w = StartWorker();
        w.Send("cl-cv-wait 0 2");
        // And one waiter in this process.
        var local = new Thread(() =>
        {
            using Participant p = c.Procs.Join();
            ConditionVariable.PrepareToSleep(p, ref c.Cv(0));
            while (Volatile.Read(ref c.Counter(4)) == 0)
                ConditionVariable.Sleep(p, ref c.Cv(0), 30_000, CoreLatchWorkerCommands.CvWaitEvent);
            ConditionVariable.CancelSleep(p);
            Interlocked.Increment(ref c.Counter(5));
        });
        _threads.Add(local);
        local.Start();
        // Every waiter must be asleep in Sleep, not merely on the list: one that is on the list but has not yet
        // looked at the condition would see it true and leave by itself, without the signal.
        Poll.WaitFor(() => ConditionVariable.Waiters(c.Procs, ref c.Cv(0)).Length == 3, "three waiters");
        int[] waiters = ConditionVariable.Waiters(c.Procs, ref c.Cv(0));
        Poll.WaitFor(() => waiters.All(n => c.Procs.GetProcs().Any(p => p.ProcNumber == n && p.WaitEvent == CoreLatchWorkerCommands.CvWaitEvent)), "the three waiters asleep");
        Volatile.Write(ref c.Counter(4), 1);
        ConditionVariable.Signal(me, ref c.Cv(0));
        Poll.WaitFor(() => Volatile.Read(ref c.Counter(5)) >= 1, "the signalled waiter");
        int[] left = ConditionVariable.Waiters(c.Procs, ref c.Cv(0));
        Assert.That(left, Is.EqualTo(waiters[1..]), "Signal took exactly the longest waiter off the list");
        Assert.That(Volatile.Read(ref c.Counter(5)), Is.EqualTo(1), "Signal woke exactly one");
        ConditionVariable.Broadcast(me, ref c.Cv(0));
        Poll.WaitFor(() => Volatile.Read(ref c.Counter(5)) == 3, "every waiter after Broadcast");
        Assert.That(ConditionVariable.Waiters(c.Procs, ref c.Cv(0)), Is.Empty);
    }

    [Test]
    public void ConditionVariableSleepTimesOutAndCancelPassesTheSignalOn()
    {
        LockCluster c = Cluster;
        using Participant me = c.Procs.Join();
        Assert.That(ConditionVariable.Sleep(me, ref c.Cv(1), 10), Is.False, "the first call only prepares");
        Assert.That(ConditionVariable.Sleep(me, ref c.Cv(1), 20), Is.True, "nobody signals: timed out");
        Assert.That(ConditionVariable.Waiters(c.Procs, ref c.Cv(1)), Is.EqualTo(new[] { me.ProcNumber }), "still prepared");
        // A signal that chose us while we were leaving is passed to the next waiter.
        int other = -1;
        var t = new Thread(() =>
        {
            using Participant p = c.Procs.Join();
            Volatile.Write(ref other, p.ProcNumber);
            ConditionVariable.PrepareToSleep(p, ref c.Cv(1));
            while (Volatile.Read(ref c.Counter(6)) == 0)
                ConditionVariable.Sleep(p, ref c.Cv(1), 30_000);
            ConditionVariable.CancelSleep(p);
        });
        _threads.Add(t);
        t.Start();
        Poll.WaitFor(() => ConditionVariable.Waiters(c.Procs, ref c.Cv(1)).Length == 2, "the second waiter");
        Volatile.Write(ref c.Counter(6), 1);
        ConditionVariable.Signal(c.Procs, ref c.Cv(1)); // takes us (the head)
        Assert.That(ConditionVariable.CancelSleep(me), Is.True, "we had been signalled");
        Assert.That(t.Join(Patience), Is.True, "the signal was passed on to the other waiter");
    }

    [Test]
    public void PMSignalReachesTheSupervisor()
    {
        LockCluster c = Cluster;
        using var signalled = new ManualResetEventSlim();
        PMSignal.OnSignal(c.Procs, () => signalled.Set());
        Assert.That(PMSignal.CheckPostmasterSignal(c.Procs, PMSignalReason.StartWorker), Is.False);
        ChildWorker w = StartWorker();
        Assert.That(w.Send($"cl-pmsignal {(int)PMSignalReason.StartWorker}"), Is.EqualTo("True"));
        Assert.That(signalled.Wait(Patience), Is.True, "the supervisor's process was interrupted");
        Assert.That(PMSignal.CheckPostmasterSignal(c.Procs, PMSignalReason.StartWorker), Is.True);
        Assert.That(PMSignal.CheckPostmasterSignal(c.Procs, PMSignalReason.StartWorker), Is.False, "checking clears it");
        Assert.That(PMSignal.CheckPostmasterSignal(c.Procs, PMSignalReason.RestartChild), Is.False, "other reasons untouched");
    }
}
