/*-------------------------------------------------------------------------
 * ShmMqCrossProcessTests.cs
 *   shm_mq between this process and a worker process, per backend: a stream
 *   of pseudo-random messages (with checksums) in each direction arrives
 *   intact; a sender killed with SIGKILL is noticed by the receiver through
 *   the peer check instead of a hang; a receiver process left idle sleeps
 *   (its wait shows in its slot, its CPU time stays far below the idle
 *   stretch) and the next message wakes it. Every test runs with the
 *   handles' SpinBeforeSleep on and off, on both sides.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
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

    private ChildWorker StartWorker()
    {
        ChildWorker w = ChildWorker.Start(backend);
        _workers.Add(w);
        w.Send($"attach {Cluster.Segment.Handle}");
        w.Send("mq-attach");
        return w;
    }

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
    public void AnIdleReceiverProcessSleepsWithoutBurningCpuAndIsWoken()
    {
        const int N = 12, Burst = 10;
        Cluster.CreateQueues(1, Ring);
        ChildWorker w = StartWorker();
        int receiver = int.Parse(w.Send("mq-recv " + Args(1, N, 41)), CultureInfo.InvariantCulture);
        using Process worker = Process.GetProcessById(w.Pid);
        bool sawAsleep = false;
        int asleepSamples = 0, samples = 0;
        TimeSpan cpu = TimeSpan.Zero, stretch = TimeSpan.Zero;
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
            // Wait for the receiver to go to sleep after the burst (it may spin a little first).
            var sw = Stopwatch.StartNew();
            var deadline = TimeSpan.FromSeconds(10);
            while (!(sawAsleep = IsAsleep(receiver)) && sw.Elapsed < deadline)
                Thread.Sleep(5);
            // Then it stays asleep (the 1 s peer check wakes it for a moment: allow a few misses), and its process
            // burns little CPU meanwhile. The stretch starts once it sleeps, so the burst's own work (and the
            // runtime's tiering of the code it ran) is not counted.
            worker.Refresh();
            TimeSpan cpu0 = worker.TotalProcessorTime;
            sw.Restart();
            while (sw.Elapsed < TimeSpan.FromSeconds(1.5))
            {
                Thread.Sleep(50);
                samples++;
                if (IsAsleep(receiver))
                    asleepSamples++;
            }
            worker.Refresh();
            cpu = worker.TotalProcessorTime - cpu0;
            stretch = sw.Elapsed;
            for (int i = Burst; i < N; i++)
                SendMessage(i);
        });
        Assert.That(sawAsleep, Is.True, "the idle receiver never showed the shm_mq receive wait: it did not go to sleep");
        Assert.That(asleepSamples, Is.GreaterThanOrEqualTo(samples * 3 / 4), $"asleep in {asleepSamples} of {samples} looks");
        // A receiver that kept spinning would burn about one CPU for the whole stretch; a sleeping one next to
        // nothing (the margin is for the runtime's own background threads and a loaded machine).
        Assert.That(cpu, Is.LessThan(stretch * 0.5), $"CPU time of the idle receiver's process over {stretch.TotalSeconds:F2} s");
        Assert.That(w.Send("mq-result"), Is.EqualTo("done"), "the sleeping receiver got the messages sent after the stretch");
    }

    private bool IsAsleep(int procNumber)
        => Cluster.Procs.GetProcs().Any(p => p.ProcNumber == procNumber && p.WaitEventInfo == ShmMqHandle.ReceiveWaitEvent);

    [Test]
    public void AKilledSenderIsNoticedInsteadOfAHang()
    {
        Cluster.CreateQueues(1, Ring);
        ChildWorker w = StartWorker();
        w.Send("mq-send " + Args(1, 1_000_000, 31));
        ShmMqResult last = ShmMqResult.Success;
        int received = 0;
        var sw = new Stopwatch();
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
            sw.Start();
            while ((last = h.Receive(out ReadOnlySpan<byte> m)) == ShmMqResult.Success)
            {
                // What it had written before it died still arrives intact (or we stop at a torn tail: never).
                Assert.That(MqMessages.Check(m, 31, received, Max, scratch), Is.Null);
                received++;
            }
            sw.Stop();
        });
        Assert.That(last, Is.EqualTo(ShmMqResult.Detached));
        Assert.That(sw.Elapsed, Is.LessThan(TimeSpan.FromSeconds(10)), "noticed within a few peer-check intervals");
        Assert.That(received, Is.GreaterThanOrEqualTo(20));
    }
}
