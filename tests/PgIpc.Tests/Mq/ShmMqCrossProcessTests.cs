/*-------------------------------------------------------------------------
 * ShmMqCrossProcessTests.cs
 *   shm_mq between this process and a worker process, per backend: a stream
 *   of pseudo-random messages (with checksums) in each direction arrives
 *   intact; a sender killed with SIGKILL is noticed by the receiver through
 *   the peer check instead of a hang; a receiver process left idle ends up
 *   asleep and stays so (its PGPROC shows the receive wait event and its
 *   latch's maybe_sleeping; no CPU time or duration is asserted) and the
 *   next message wakes it. Every test runs with the
 *   handles' SpinBeforeSleep on and off, on both sides.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using NUnit.Framework;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Tests.Mq;

[TestFixtureSource(nameof(Sources))]
public sealed class ShmMqCrossProcessTests(string backend, bool spin)
{
    /// <summary>Every backend, with the spin before sleeping on and off.</summary>
    public static IEnumerable<TestFixtureData> Sources()
        => TestEnvironment.Backends().SelectMany(b => new[] { new TestFixtureData(b, true), new TestFixtureData(b, false) });

    private ShmMqHandle Spin(ShmMqHandle h)
    {
        h.SpinBeforeSleep = spin;
        return h;
    }

    private const int Ring = 8192;
    private const int Max = 3 * Ring;
    private MqCluster? _c;
    private readonly List<ChildWorker> _workers = [];

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        _c?.Dispose();
        _c = null;
    }

    private MqCluster Cluster => _c ??= MqCluster.Create(PgIpcPlatform.Get(backend));

    private ChildWorker StartWorker() => Workers.StartAttached(backend, _workers, Cluster.Segment.Handle, "mq-attach");

    private string Args(int key, int n, ulong seed)
        => string.Create(CultureInfo.InvariantCulture, $"{key} {Ring} {seed} {n} {Max} {(spin ? "spin" : "nospin")}");

    [Test]
    public void WorkerSendsAndThisProcessReceives()
    {
        const int N = 2000;
        Cluster.CreateQueues(2, Ring);
        ChildWorker w = StartWorker();
        w.Send("mq-send " + Args(1, N, 11));
        string received = "";
        TestThreads.Run(1, thread =>
        {
            using Participant me = Cluster.Procs.Join();
            ShmMq mq = Cluster.Queue(1, Ring);
            mq.SetReceiver(me);
            using ShmMqHandle h = Spin(mq.Attach(me, new ShmMqProcessPeer(Cluster.Segment.Platform.Processes, w.Pid)));
            received = MqMessages.ReceiveAll(h, N, 11, Max);
            Assert.That(h.Receive(out _), Is.EqualTo(ShmMqResult.Detached), "the worker detaches after its last message");
        });
        Assert.That(received, Is.EqualTo("done"));
        Assert.That(w.Send("mq-result"), Is.EqualTo("done"));
    }

    [Test]
    public void ThisProcessSendsAndWorkerReceives()
    {
        const int N = 2000;
        Cluster.CreateQueues(2, Ring);
        ChildWorker w = StartWorker();
        w.Send("mq-recv " + Args(2, N, 12));
        string sent = "";
        TestThreads.Run(1, thread =>
        {
            using Participant me = Cluster.Procs.Join();
            ShmMq mq = Cluster.Queue(2, Ring);
            mq.SetSender(me);
            using ShmMqHandle h = Spin(mq.Attach(me, new ShmMqProcessPeer(Cluster.Segment.Platform.Processes, w.Pid)));
            sent = MqMessages.SendAll(h, N, 12, Max);
        });
        Assert.That(sent, Is.EqualTo("done"));
        Assert.That(w.Send("mq-result"), Is.EqualTo("done"));
    }

    [Test]
    public void BothDirectionsAtOnce()
    {
        const int N = 1000;
        Cluster.CreateQueues(2, Ring);
        ChildWorker tx = StartWorker(), rx = StartWorker();
        tx.Send("mq-send " + Args(1, N, 21));
        rx.Send("mq-recv " + Args(2, N, 22));
        var results = new string[2];
        TestThreads.Run(2, t =>
        {
            using Participant me = Cluster.Procs.Join();
            ShmMq mq = Cluster.Queue(t + 1, Ring);
            if (t == 0)
                mq.SetReceiver(me);
            else
                mq.SetSender(me);
            using ShmMqHandle h = Spin(mq.Attach(me));
            results[t] = t == 0 ? MqMessages.ReceiveAll(h, N, 21, Max) : MqMessages.SendAll(h, N, 22, Max);
        });
        Assert.That(results, Is.EqualTo(new[] { "done", "done" }));
        Assert.That(tx.Send("mq-result"), Is.EqualTo("done"));
        Assert.That(rx.Send("mq-result"), Is.EqualTo("done"));
    }

    [Test]
    public void AnIdleReceiverProcessEndsUpAsleepStaysAsleepAndIsWoken()
    {
        const int N = 12, Burst = 10, Looks = 30;
        Cluster.CreateQueues(1, Ring);
        ChildWorker w = StartWorker();
        int receiver = int.Parse(w.Send("mq-recv " + Args(1, N, 41)), CultureInfo.InvariantCulture);
        int asleepLooks = 0;
        TestThreads.Run(1, thread =>
        {
            using Participant me = Cluster.Procs.Join();
            ShmMq mq = Cluster.Queue(1, Ring);
            mq.SetSender(me);
            using ShmMqHandle h = Spin(mq.Attach(me, new ShmMqProcessPeer(Cluster.Segment.Platform.Processes, w.Pid)));
            byte[] buf = new byte[Max];
            void SendMessage(int i)
            {
                Span<byte> m = buf.AsSpan(0, MqMessages.SizeOf(41, i, Max));
                MqMessages.Fill(m, 41, i);
                Assert.That(h.Send(m), Is.EqualTo(ShmMqResult.Success), $"message {i}");
            }
            for (int i = 0; i < Burst; i++)
                SendMessage(i);
            // The receiver goes to sleep after the burst (it may spin a little first): a state, shown in its PGPROC.
            Poll.WaitFor(() => IsAsleep(receiver), "the idle receiver to sleep in the shm_mq receive wait");
            // And it stays asleep: a receiver that spun, or whose wait returned at once again and again, would
            // rarely be seen in the kernel wait. The peer check (once a second) wakes it for a moment, hence
            // "most looks", not all.
            for (int look = 0; look < Looks; look++)
            {
                Thread.Sleep(50);
                if (IsAsleep(receiver))
                    asleepLooks++;
            }
            for (int i = Burst; i < N; i++)
                SendMessage(i);
        });
        Assert.That(asleepLooks, Is.GreaterThanOrEqualTo(Looks * 3 / 4), $"asleep in {asleepLooks} of {Looks} looks");
        Assert.That(w.Send("mq-result"), Is.EqualTo("done"), "the sleeping receiver got the messages sent after the looks");
    }

    /// <summary>
    /// Participant <paramref name="procNumber"/> is asleep in the shm_mq receive wait: its PGPROC shows that wait
    /// event, and its latch shows it may be blocked in the kernel (maybe_sleeping raised, the latch not set).
    /// </summary>
    private unsafe bool IsAsleep(int procNumber)
    {
        PgProc* p = Cluster.Procs.Procs + procNumber;
        return Volatile.Read(ref p->WaitEventInfo) == ShmMqHandle.ReceiveWaitEvent.Value
            && Volatile.Read(ref p->Latch.MaybeSleeping) == 1
            && Volatile.Read(ref p->Latch.IsSet) == 0;
    }

    [Test]
    public void AKilledSenderIsNoticedInsteadOfAHang()
    {
        Cluster.CreateQueues(1, Ring);
        ChildWorker w = StartWorker();
        w.Send("mq-send " + Args(1, 1_000_000, 31));
        ShmMqResult last = ShmMqResult.Success;
        int received = 0;
        // Bounded by TestThreads' join (a receiver that never noticed fails instead of hanging); how soon it
        // notices is a measurement, not asserted here.
        TestThreads.Run(1, thread =>
        {
            using Participant me = Cluster.Procs.Join();
            ShmMq mq = Cluster.Queue(1, Ring);
            mq.SetReceiver(me);
            // No IShmMqPeer: the pid the sender recorded when it attached is what gets checked.
            using ShmMqHandle h = Spin(mq.Attach(me));
            byte[] scratch = new byte[Max];
            for (; received < 20; received++)
            {
                Assert.That(h.Receive(out ReadOnlySpan<byte> m), Is.EqualTo(ShmMqResult.Success));
                Assert.That(MqMessages.Check(m, 31, received, Max, scratch), Is.Null);
            }
            w.Kill(); // SIGKILL: no detach, its slot and the queue left as they were
            while ((last = h.Receive(out ReadOnlySpan<byte> m)) == ShmMqResult.Success)
            {
                // What it had written before it died still arrives intact (or we stop at a torn tail: never).
                Assert.That(MqMessages.Check(m, 31, received, Max, scratch), Is.Null);
                received++;
            }
        });
        Assert.That(last, Is.EqualTo(ShmMqResult.Detached), "the receiver noticed the killed sender");
        Assert.That(received, Is.GreaterThanOrEqualTo(20));
    }
}
