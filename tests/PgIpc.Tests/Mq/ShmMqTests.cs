/*-------------------------------------------------------------------------
 * ShmMqTests.cs
 *   shm_mq between threads of this process, per backend: messages of many
 *   sizes (empty to three rings) arrive intact and in order; nowait sends
 *   and receives resume where they stopped; detach by either side is seen;
 *   a peer that is gone is noticed; zero copy; no allocation per message;
 *   an idle peer (with or without the spin before sleeping) ends up asleep
 *   in the latch wait and is woken by the next message or the freed space.
 *   Every test runs with the handles' SpinBeforeSleep on and off.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Mq;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Tests.Mq;

[TestFixtureSource(nameof(Sources))]
public sealed class ShmMqTests(string backend, bool spin)
{
    private const int Ring = 4096;
    private MqCluster? _c;

    /// <summary>Every backend, with the spin before sleeping on and off.</summary>
    public static IEnumerable<TestFixtureData> Sources()
        => TestEnvironment.Backends().SelectMany(b => new[] { new TestFixtureData(b, true), new TestFixtureData(b, false) });

    /// <summary>Applies this fixture's spin setting to a new handle.</summary>
    private ShmMqHandle Spin(ShmMqHandle h)
    {
        h.SpinBeforeSleep = spin;
        return h;
    }

    [TearDown]
    public void TearDown()
    {
        _c?.Dispose();
        _c = null;
    }

    private MqCluster Cluster => _c ??= MqCluster.Create(PgIpcPlatform.Get(backend));

    private static int[] InterestingSizes()
        => [0, 1, 7, 8, 9, 100, Ring - 9, Ring - 8, Ring - 1, Ring, Ring + 1, 2 * Ring - 3, 3 * Ring, 3 * Ring + 5, 0, 1];

    /// <summary>Runs a sender thread and a receiver thread over queue 1 (each joins as a participant).</summary>
    private void RunPair(Action<ShmMqHandle> sender, Action<ShmMqHandle> receiver)
    {
        MqCluster c = Cluster;
        c.CreateQueues(1, Ring);
        using var bothSet = new Barrier(2);
        TestThreads.Run(2, t =>
        {
            using Participant me = c.Procs.Join();
            ShmMq mq = c.Queue(1, Ring);
            if (t == 0)
                mq.SetSender(me);
            else
                mq.SetReceiver(me);
            // Both slots are taken before either side can finish and give its slot back for the other to reuse.
            bothSet.SignalAndWait();
            using ShmMqHandle h = Spin(mq.Attach(me));
            if (t == 0)
                sender(h);
            else
                receiver(h);
        });
    }

    [TestCase(true)]
    [TestCase(false)]
    public void MessagesOfManySizesArriveIntactInOrder(bool forceFlush)
    {
        int[] sizes = InterestingSizes();
        const int Rounds = 20;
        const ulong Seed = 42;
        var errors = new List<string>();
        RunPair(
            h =>
            {
                byte[] buf = new byte[4 * Ring];
                for (int i = 0; i < Rounds * sizes.Length; i++)
                {
                    Span<byte> m = buf.AsSpan(0, sizes[i % sizes.Length]);
                    MqMessages.Fill(m, Seed, i);
                    Assert.That(h.Send(m, forceFlush: forceFlush), Is.EqualTo(ShmMqResult.Success));
                }
                // Detach publishes whatever forceFlush: false held back.
            },
            h =>
            {
                byte[] expected = new byte[4 * Ring];
                for (int i = 0; i < Rounds * sizes.Length; i++)
                {
                    Assert.That(h.Receive(out ReadOnlySpan<byte> m), Is.EqualTo(ShmMqResult.Success), $"message {i}");
                    Span<byte> e = expected.AsSpan(0, sizes[i % sizes.Length]);
                    MqMessages.Fill(e, Seed, i);
                    if (!m.SequenceEqual(e))
                        lock (errors)
                            errors.Add($"message {i} ({e.Length} bytes) arrived as {m.Length} bytes, differing at {m.CommonPrefixLength(e)}");
                }
                Assert.That(h.Receive(out _), Is.EqualTo(ShmMqResult.Detached), "after the last message the sender's detach");
            });
        Assert.That(errors, Is.Empty);
    }

    [Test]
    public void PseudoRandomStreamArrivesIntact()
    {
        const int N = 3000, Max = 3 * Ring;
        string sent = "", received = "";
        RunPair(h => sent = MqMessages.SendAll(h, N, 7, Max), h => received = MqMessages.ReceiveAll(h, N, 7, Max));
        Assert.That(sent, Is.EqualTo("done"));
        Assert.That(received, Is.EqualTo("done"));
    }

    [Test]
    public void PiecesAreSentAsOneMessage()
    {
        byte[] a = [1, 2, 3], b = new byte[Ring + 3], c = [9];
        b.AsSpan().Fill(5);
        RunPair(
            h =>
            {
                Assert.That(h.SendV([a, b, c]), Is.EqualTo(ShmMqResult.Success));
                Assert.That(h.Send(a, c), Is.EqualTo(ShmMqResult.Success));
                Assert.That(h.SendV([]), Is.EqualTo(ShmMqResult.Success));
            },
            h =>
            {
                Assert.That(h.Receive(out ReadOnlySpan<byte> m), Is.EqualTo(ShmMqResult.Success));
                Assert.That(m.ToArray(), Is.EqualTo(a.Concat(b).Concat(c).ToArray()));
                Assert.That(h.Receive(out m), Is.EqualTo(ShmMqResult.Success));
                Assert.That(m.ToArray(), Is.EqualTo(new byte[] { 1, 2, 3, 9 }));
                Assert.That(h.Receive(out m), Is.EqualTo(ShmMqResult.Success));
                Assert.That(m.Length, Is.Zero);
            });
    }

    [Test]
    public void NowaitReturnsWouldBlockAndResumes()
    {
        MqCluster c = Cluster;
        c.CreateQueues(1, Ring);
        TestThreads.Run(1, thread =>
        {
            using Participant me = c.Procs.Join();
            ShmMq mq = c.Queue(1, Ring);
            mq.SetSender(me);
            mq.SetReceiver(me);
            using ShmMqHandle tx = Spin(mq.AttachAsSender(me));
            using ShmMqHandle rx = Spin(mq.AttachAsReceiver(me));
            Assert.Throws<InvalidOperationException>(() => mq.Attach(me));
            Assert.Throws<InvalidOperationException>(() => rx.Send([1]));
            Assert.Throws<InvalidOperationException>(() => tx.Receive(out _));

            Assert.That(rx.Receive(out _, nowait: true), Is.EqualTo(ShmMqResult.WouldBlock), "empty queue");

            // A message of three rings goes through in pieces, each side resuming after WouldBlock.
            byte[] big = new byte[3 * Ring + 12];
            MqMessages.Fill(big, 3, 0);
            int sendBlocks = 0, recvBlocks = 0;
            bool sent = false, got = false;
            byte[]? received = null;
            for (int spin = 0; spin < 100 && !(sent && got); spin++)
            {
                if (!sent)
                {
                    ShmMqResult r = tx.Send(big, nowait: true);
                    if (r == ShmMqResult.WouldBlock)
                        sendBlocks++;
                    else
                        sent = r == ShmMqResult.Success;
                }
                if (!got)
                {
                    ShmMqResult r = rx.Receive(out ReadOnlySpan<byte> m, nowait: true);
                    if (r == ShmMqResult.WouldBlock)
                        recvBlocks++;
                    else if (r == ShmMqResult.Success)
                    {
                        got = true;
                        received = m.ToArray();
                    }
                }
                if (spin == 0)
                    Assert.Throws<InvalidOperationException>(() => tx.Send(new byte[5], nowait: true), "a half-sent message must be finished first");
            }
            Assert.That(sent && got, Is.True);
            Assert.That(sendBlocks, Is.GreaterThanOrEqualTo(2));
            Assert.That(recvBlocks, Is.GreaterThanOrEqualTo(1));
            Assert.That(received, Is.EqualTo(big));

            // Fill the ring with small messages until it would block; then they all come out.
            int n = 0;
            byte[] small = new byte[100];
            while (tx.Send(small, nowait: true) == ShmMqResult.Success)
                n++;
            Assert.That(n, Is.EqualTo(Ring / 112), "each 100-byte message takes 8 + 104 bytes");
            for (int i = 0; i < n; i++)
                Assert.That(rx.Receive(out _, nowait: true), Is.EqualTo(ShmMqResult.Success));
            // The blocked (partial) one finishes now that there is room.
            Assert.That(tx.Send(small, nowait: true), Is.EqualTo(ShmMqResult.Success));
            Assert.That(rx.Receive(out ReadOnlySpan<byte> last, nowait: true), Is.EqualTo(ShmMqResult.Success));
            Assert.That(last.Length, Is.EqualTo(100));
            Assert.That(rx.Receive(out _, nowait: true), Is.EqualTo(ShmMqResult.WouldBlock));
        });
    }

    [Test]
    public void ContiguousMessagesAreZeroCopyAndWrappedOnesAreAssembled()
    {
        MqCluster c = Cluster;
        c.CreateQueues(1, Ring);
        TestThreads.Run(1, thread =>
        {
            using Participant me = c.Procs.Join();
            ShmMq mq = c.Queue(1, Ring);
            mq.SetSender(me);
            mq.SetReceiver(me);
            using ShmMqHandle tx = Spin(mq.AttachAsSender(me));
            using ShmMqHandle rx = Spin(mq.AttachAsReceiver(me));
            Span<byte> region = c.Region.AsSpan();
            byte[] m1 = new byte[1000];
            m1.AsSpan().Fill(1);
            tx.Send(m1);
            rx.Receive(out ReadOnlySpan<byte> got);
            Assert.That(region.Overlaps(got), Is.True, "a contiguous message is read in place");
            Assert.That(rx.ReceiveBufferSize, Is.Zero);
            // Out of data: the receiver gives the space back (in a loopback queue a blocking send would wait for it forever).
            Assert.That(rx.Receive(out _, nowait: true), Is.EqualTo(ShmMqResult.WouldBlock));
            // 1008 bytes used; a 3500-byte message wraps round the 4096-byte ring.
            byte[] m2 = new byte[3500];
            MqMessages.Fill(m2, 1, 1);
            tx.Send(m2);
            rx.Receive(out got);
            Assert.That(region.Overlaps(got), Is.False, "a wrapped message is copied out");
            Assert.That(got.ToArray(), Is.EqualTo(m2));
            Assert.That(rx.ReceiveBufferSize, Is.EqualTo(4096));
        });
    }

    [Test]
    public void DetachBySenderIsSeenAfterTheLastMessage()
    {
        RunPair(
            h =>
            {
                for (int i = 0; i < 3; i++)
                    h.Send(new byte[i * 1000]);
                h.Detach();
                Assert.That(h.Send([1]), Is.EqualTo(ShmMqResult.Detached));
            },
            h =>
            {
                for (int i = 0; i < 3; i++)
                {
                    Assert.That(h.Receive(out ReadOnlySpan<byte> m), Is.EqualTo(ShmMqResult.Success));
                    Assert.That(m.Length, Is.EqualTo(i * 1000));
                }
                Assert.That(h.Receive(out _), Is.EqualTo(ShmMqResult.Detached));
                Assert.That(h.Receive(out _, nowait: true), Is.EqualTo(ShmMqResult.Detached));
            });
    }

    [Test]
    public void DetachByReceiverWakesABlockedSender()
    {
        ShmMqResult result = ShmMqResult.Success;
        RunPair( // bounded by TestThreads' join: a sender never woken fails instead of hanging
            h =>
            {
                result = h.Send(new byte[10 * Ring]); // blocks: nobody reads
            },
            h =>
            {
                Thread.Sleep(200);
                h.Detach();
            });
        Assert.That(result, Is.EqualTo(ShmMqResult.Detached));
    }

    /// <summary>Waits up to 10 s for participant <paramref name="procNumber"/> to show <paramref name="waitEvent"/>.</summary>
    private bool WaitsIn(int procNumber, WaitEventId waitEvent)
        => Poll.Until(() => Cluster.Procs.GetProcs().Any(p => p.ProcNumber == procNumber && p.WaitEvent == waitEvent),
            TimeSpan.FromSeconds(10), pollMs: 5);

    [Test]
    public void AnIdleReceiverEndsUpAsleepAndTheNextMessageWakesIt()
    {
        bool asleep = false;
        int received = 0;
        RunPair(
            h =>
            {
                // A burst first, so that a spinning receiver has just succeeded (its budget is up), then nothing.
                for (int i = 0; i < 200; i++)
                    Assert.That(h.Send(new byte[i % 50]), Is.EqualTo(ShmMqResult.Success));
                asleep = WaitsIn(h.Queue.ReceiverProcNumber, ShmMqHandle.ReceiveWaitEvent);
                Assert.That(h.Send(new byte[7]), Is.EqualTo(ShmMqResult.Success));
            },
            h =>
            {
                for (int i = 0; i < 201; i++)
                {
                    Assert.That(h.Receive(out ReadOnlySpan<byte> m), Is.EqualTo(ShmMqResult.Success));
                    Assert.That(m.Length, Is.EqualTo(i < 200 ? i % 50 : 7));
                    received++;
                }
            });
        Assert.That(asleep, Is.True, "the receiver never showed the shm_mq receive wait: it did not go to sleep");
        Assert.That(received, Is.EqualTo(201), "the sleeping receiver was not woken by the last message");
    }

    [Test]
    public void ASenderWaitingOnAnIdleReceiverEndsUpAsleepAndFreedSpaceWakesIt()
    {
        bool asleep = false;
        int received = 0;
        const int N = 40; // 40 x 1 KiB: ten rings' worth
        RunPair(
            h =>
            {
                for (int i = 0; i < N; i++)
                    Assert.That(h.Send(new byte[1000]), Is.EqualTo(ShmMqResult.Success));
            },
            h =>
            {
                asleep = WaitsIn(h.Queue.SenderProcNumber, ShmMqHandle.SendWaitEvent);
                for (int i = 0; i < N; i++)
                {
                    Assert.That(h.Receive(out ReadOnlySpan<byte> m), Is.EqualTo(ShmMqResult.Success));
                    Assert.That(m.Length, Is.EqualTo(1000));
                    received++;
                }
            });
        Assert.That(asleep, Is.True, "the sender never showed the shm_mq send wait: it did not go to sleep");
        Assert.That(received, Is.EqualTo(N));
    }

    [Test]
    public void TheSpinSettingIsPerHandleAndItsBudgetStaysBounded()
    {
        TimeSpan min = TimeSpan.FromMicroseconds(ShmMqHandle.MinSpinMicroseconds) - TimeSpan.FromTicks(1);
        TimeSpan max = TimeSpan.FromMicroseconds(ShmMqHandle.MaxSpinMicroseconds) + TimeSpan.FromTicks(1);
        var budgets = new TimeSpan[2];
        bool[] defaults = new bool[2];
        RunPair(
            h =>
            {
                for (int i = 0; i < 3000; i++)
                    h.Send(new byte[i % 3000], forceFlush: (i & 1) == 0);
                budgets[0] = h.SpinBudget;
            },
            h =>
            {
                for (int i = 0; i < 3000; i++)
                {
                    Assert.That(h.Receive(out ReadOnlySpan<byte> m), Is.EqualTo(ShmMqResult.Success));
                    Assert.That(m.Length, Is.EqualTo(i % 3000));
                    if (i % 500 == 0)
                        Thread.Sleep(20); // some waits fail, some succeed
                }
                budgets[1] = h.SpinBudget;
            });
        Assert.That(budgets, Has.All.InRange(min, max));
        MqCluster c = Cluster;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            ShmMq mq = ShmMq.Create(c.Segment.Alloc(ShmMq.SizeFor(Ring)));
            mq.SetSender(me);
            mq.SetReceiver(me);
            using ShmMqHandle tx = mq.AttachAsSender(me), rx = mq.AttachAsReceiver(me);
            defaults[0] = tx.SpinBeforeSleep;
            tx.SpinBeforeSleep = !tx.SpinBeforeSleep;
            defaults[1] = rx.SpinBeforeSleep;
        });
        Assert.That(defaults[0], Is.EqualTo(Environment.ProcessorCount > 1), "on by default, off on one CPU");
        Assert.That(defaults[1], Is.EqualTo(defaults[0]), "changing one handle's setting leaves the other's alone");
    }

    private sealed class FlagPeer : IShmMqPeer
    {
        public volatile bool Alive = true;
        public bool IsAlive => Alive;
    }

    [Test]
    public void APeerThatNeverAttachesIsNoticed()
    {
        MqCluster c = Cluster;
        c.CreateQueues(1, Ring);
        var peer = new FlagPeer();
        ShmMqResult result = ShmMqResult.Success;
        TestThreads.Run(2, t => // bounded by the join: a receiver that never notices fails instead of hanging
        {
            if (t == 1)
            {
                Thread.Sleep(300);
                peer.Alive = false; // the worker that should have become the sender failed to start
                return;
            }
            using Participant me = c.Procs.Join();
            ShmMq mq = c.Queue(1, Ring);
            mq.SetReceiver(me);
            using ShmMqHandle h = Spin(mq.Attach(me, peer));
            result = h.Receive(out _);
        });
        Assert.That(result, Is.EqualTo(ShmMqResult.Detached), "the receiver noticed the peer that never attached");
    }

    [Test]
    public void SteadyStateSendAndReceiveAllocateNothing()
    {
        MqCluster c = Cluster;
        c.CreateQueues(1, Ring);
        long allocated = -1;
        TestThreads.Run(1, thread =>
        {
            using Participant me = c.Procs.Join();
            ShmMq mq = c.Queue(1, Ring);
            mq.SetSender(me);
            mq.SetReceiver(me);
            using ShmMqHandle tx = Spin(mq.AttachAsSender(me));
            using ShmMqHandle rx = Spin(mq.AttachAsReceiver(me));
            // One round fits the ring (at most 2008 + 728 + 728 bytes), so a loopback queue never blocks; the last,
            // nowait receive finds no data and gives the consumed space back.
            byte[] msg = new byte[2000];
            byte[] a = new byte[10], b = new byte[700];
            ReadOnlyMemory<byte> ma = a, mb = b;
            void Loop(int n)
            {
                for (int i = 0; i < n; i++)
                {
                    int size = (i * 397) % msg.Length; // varied sizes and ring positions: some contiguous, some wrapped
                    tx.Send(msg.AsSpan(0, size), forceFlush: false);
                    tx.SendV([ma, mb], forceFlush: (i & 1) == 0);
                    tx.Send(a, b, nowait: true, forceFlush: false);
                    tx.Flush();
                    rx.Receive(out ReadOnlySpan<byte> m);
                    if (m.Length != size)
                        throw new InvalidOperationException($"got {m.Length} bytes, sent {size}");
                    rx.Receive(out m);
                    if (m.Length != 710)
                        throw new InvalidOperationException($"got {m.Length} bytes, sent 710");
                    rx.Receive(out m, nowait: true);
                    if (rx.Receive(out _, nowait: true) != ShmMqResult.WouldBlock)
                        throw new InvalidOperationException("expected an empty queue");
                }
            }
            Loop(2000); // warm up: JIT, tiering, the receive buffer's growth
            long before = GC.GetAllocatedBytesForCurrentThread();
            Loop(20_000);
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        });
        Assert.That(allocated, Is.Zero, "bytes allocated by 20 000 rounds of three sends and four receives");
    }

    [Test]
    public void BadArgumentsAreRefused()
    {
        MqCluster c = Cluster;
        Assert.Throws<ArgumentOutOfRangeException>(() => ShmMq.Create(c.Segment.Alloc(ShmMq.HeaderSize + 8)));
        Assert.Throws<ShmMqCorruptException>(() => ShmMq.Open(c.Segment.Alloc(1024)));
        c.CreateQueues(1, Ring);
        TestThreads.Run(1, thread =>
        {
            using Participant me = c.Procs.Join();
            ShmMq mq = c.Queue(1, Ring);
            Assert.Throws<InvalidOperationException>(() => mq.Attach(me), "neither side yet");
            mq.SetReceiver(me);
            Assert.Throws<InvalidOperationException>(() => mq.SetReceiver(me));
            Assert.Throws<InvalidOperationException>(() => mq.AttachAsSender(me));
            Assert.That(mq.RingSize, Is.EqualTo(Ring));
            Assert.That(mq.ReceiverProcNumber, Is.EqualTo(me.ProcNumber));
            Assert.That(mq.SenderProcNumber, Is.EqualTo(-1));
        });
    }
}
