/*-------------------------------------------------------------------------
 * SinvalQueueTests.cs
 *   The shared invalidation queue, per backend, at its real size (a ring
 *   of 4096): delivery intact and in order, batches larger than the ring,
 *   the catch-up signal and its daisy chain, resets, send-only
 *   participants, message-number wraparound, and a worker process on each
 *   side of the queue.
 *
 * NOTES
 *   Participants are threads. Most tests join helper participants on
 *   dedicated threads (never the pool) and then drive them from the test
 *   thread one at a time, which LWLock allows for an explicit participant;
 *   that makes the cleanup's decisions (who is signalled, who is reset)
 *   deterministic. One test runs its readers concurrently on their own
 *   threads.
 *
 *   Message numbers below follow the queue's rules: the writer's chunks are
 *   64 messages; the cleanup runs before a chunk when at least
 *   nextThreshold (2048, then rounded up to the next 256 above the live
 *   count) messages are live; it signals the furthest-behind reader more
 *   than 2048 behind, and resets readers more than 4096 - 64 behind.
 *-------------------------------------------------------------------------
 */
using System.Collections.Concurrent;
using System.Globalization;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sinval;
using static PgIpc.Sinval.SinvalConstants;

namespace PgIpc.Tests.Sinval;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class SinvalQueueTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private const uint WriterId = 1;

    private SinvalCluster _c = null!;
    private Participant _writer = null!;
    private readonly List<Participant> _helpers = [];
    private readonly List<ChildWorker> _workers = [];
    private readonly ConcurrentQueue<(int Procno, int Pid)> _signals = new();
    private readonly ConcurrentDictionary<int, Action> _onSignal = new();
    private uint _nextSeq;

    [SetUp]
    public void SetUp()
    {
        _c = SinvalCluster.Create(PgIpcPlatform.Get(backend));
        _c.Queue.CatchupSignal = (procno, pid) =>
        {
            _signals.Enqueue((procno, pid));
            // What ProcSignal's catch-up interrupt would make the reader do, where a test asks for it.
            if (_onSignal.TryGetValue(procno, out Action? answer))
                answer();
        };
        _writer = _c.Procs.Join();
        _nextSeq = 0;
    }

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        foreach (Participant p in _helpers)
            p.Dispose();
        _helpers.Clear();
        _writer.Dispose();
        while (_signals.TryDequeue(out _)) { }
        _onSignal.Clear();
        _c.Dispose();
    }

    /// <summary>Joins a participant on a dedicated thread (which then ends) and registers it as a reader.</summary>
    private Participant Reader(bool sendOnly = false)
    {
        Participant? p = null;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { p = _c.Procs.Join(); }
            catch (Exception ex) { error = ex; }
        }) { IsBackground = true, Name = "sinval helper join" };
        t.Start();
        if (!t.Join(Patience))
            Assert.Fail("joining a helper participant hung");
        if (error is not null)
            throw error;
        _helpers.Add(p!);
        _c.Queue.RegisterBackend(p!, sendOnly);
        return p!;
    }

    /// <summary>Sends the next <paramref name="count"/> numbered messages in calls of <paramref name="batch"/>.</summary>
    private void Send(int count, int batch)
    {
        var buf = new SharedInvalidationMessage[batch];
        while (count > 0)
        {
            int n = Math.Min(batch, count);
            for (int i = 0; i < n; i++)
                buf[i] = SinvalCluster.Message(WriterId, _nextSeq++);
            _c.Queue.SendMessages(_writer, buf.AsSpan(0, n));
            count -= n;
        }
    }

    /// <summary>What one reader got: messages, and a marker where it was reset.</summary>
    private sealed class Inbox
    {
        public readonly List<SharedInvalidationMessage> Messages = [];
        public readonly List<int> ResetAt = []; // index in Messages where a reset happened
        public int Damaged;

        public void OnMessage(in SharedInvalidationMessage m)
        {
            if (!SinvalCluster.IsIntact(m))
                Damaged++;
            Messages.Add(m);
        }

        public void OnReset() => ResetAt.Add(Messages.Count);

        public IEnumerable<uint> Seqs => Messages.Select(m => m.ObjectId);
    }

    private Inbox Receive(Participant p, Inbox? into = null)
    {
        into ??= new Inbox();
        _c.Queue.ReceiveAll(p, into.OnMessage, into.OnReset);
        return into;
    }

    private static IEnumerable<uint> Range(uint start, int count) => Enumerable.Range((int)start, count).Select(i => (uint)i);

    [Test]
    public void MessagesArriveIntactAndInOrderAtEveryReader()
    {
        Participant[] readers = [Reader(), Reader(), Reader()];
        var inboxes = readers.Select(_ => new Inbox()).ToArray();
        for (int round = 0; round < 5; round++)
        {
            Send(1000, batch: 100 + round * 37);
            for (int r = 0; r < readers.Length; r++)
                Receive(readers[r], inboxes[r]);
        }
        // A send of exactly one message and a receive with nothing new.
        Send(1, batch: 1);
        foreach ((Participant p, Inbox box) in readers.Zip(inboxes))
        {
            Receive(p, box);
            Assert.That(Receive(p).Messages, Is.Empty, "nothing new");
            SeqAssert.Equal(box.Seqs, Range(0, 5001), $"reader {p.ProcNumber}: every message, in order");
            Assert.That(box.Damaged, Is.Zero);
            Assert.That(box.ResetAt, Is.Empty);
        }
        SinvalStatistics st = _c.Queue.GetStatistics();
        Assert.Multiple(() =>
        {
            Assert.That(st.MaxMsgNum, Is.EqualTo(5001));
            Assert.That(st.ResetsIssued, Is.Zero);
            Assert.That(st.SignalsSent, Is.Zero);
            Assert.That(st.Readers.Select(r => r.NextMsgNum), Is.All.EqualTo(5001));
            Assert.That(_signals, Is.Empty);
        });
    }

    [Test]
    public void GetMessagesFillsTheCallersBufferInBatches()
    {
        Participant r = Reader();
        Send(100, batch: 100);
        var buf = new SharedInvalidationMessage[30];
        var got = new List<uint>();
        int n;
        while ((n = _c.Queue.GetMessages(r, buf)) > 0)
            got.AddRange(buf.Take(n).Select(m => m.ObjectId));
        Assert.That(n, Is.Zero);
        SeqAssert.Equal(got, Range(0, 100), "");
    }

    [Test]
    public void ABatchLargerThanTheRingReachesReadersThatAnswerTheCatchupSignal()
    {
        // The readers do nothing but answer the catch-up signal (ReceiveAll), as a ProcSignal handler would. The
        // callback runs on the sender's thread with the queue's locks released, and each reader's ReceiveAll passes
        // the signal on to the next slowest: all are served long before anyone falls off the ring.
        Participant[] readers = [Reader(), Reader(), Reader()];
        var inboxes = readers.Select(_ => new Inbox()).ToArray();
        for (int i = 0; i < readers.Length; i++)
        {
            Participant p = readers[i];
            Inbox box = inboxes[i];
            _onSignal[p.ProcNumber] = () => _c.Queue.ReceiveAll(p, box.OnMessage, box.OnReset);
        }
        const int total = 3 * MaxNumMessages + 123;
        Send(total, batch: total); // one SendMessages call
        for (int i = 0; i < readers.Length; i++)
        {
            Receive(readers[i], inboxes[i]);
            SeqAssert.Equal(inboxes[i].Seqs, Range(0, total), $"reader {i}: every message, in order");
            Assert.That(inboxes[i].ResetAt, Is.Empty, $"reader {i}: never reset");
            Assert.That(inboxes[i].Damaged, Is.Zero);
        }
        List<int> order = _signals.Select(s => s.Procno).ToList();
        Assert.That(order, Has.Count.GreaterThanOrEqualTo(3 * 3), "several rounds of signals");
        Assert.That(order.Take(3), Is.EqualTo(readers.Select(r => r.ProcNumber)), "each round is a daisy chain through every reader");
        Assert.That(_c.Queue.GetStatistics().ResetsIssued, Is.Zero);
    }

    [Test]
    public void ConcurrentReadersSeeUnbrokenRunsWhileABatchLargerThanTheRingIsSent()
    {
        const int total = 200_000;
        const int readerCount = 3;
        var inboxes = new Inbox[readerCount];
        var registered = new CountdownEvent(readerCount);
        int writerDone = 0;
        var errors = new ConcurrentQueue<Exception>();
        var threads = new Thread[readerCount];
        for (int i = 0; i < readerCount; i++)
        {
            int index = i;
            inboxes[i] = new Inbox();
            threads[i] = new Thread(() =>
            {
                try
                {
                    using Participant me = _c.Procs.Join();
                    _c.Queue.RegisterBackend(me);
                    registered.Signal();
                    Inbox box = inboxes[index];
                    while (Volatile.Read(ref writerDone) == 0)
                    {
                        _c.Queue.ReceiveAll(me, box.OnMessage, box.OnReset);
                        Thread.SpinWait(20);
                    }
                    _c.Queue.ReceiveAll(me, box.OnMessage, box.OnReset);
                    _c.Queue.UnregisterBackend(me);
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex);
                    registered.Signal();
                }
            }) { IsBackground = true, Name = $"sinval reader {i}" };
            threads[i].Start();
        }
        Assert.That(registered.Wait(Patience), Is.True);
        var all = new SharedInvalidationMessage[total];
        for (uint s = 0; s < total; s++)
            all[s] = SinvalCluster.Message(WriterId, s);
        // Calls of 5000 (more than the ring): the writer never waits; a reader that cannot keep up is reset.
        for (int at = 0; at < total; at += 5000)
        {
            _c.Queue.SendMessages(_writer, all.AsSpan(at, Math.Min(5000, total - at)));
            Thread.Yield();
        }
        Volatile.Write(ref writerDone, 1);
        foreach (Thread t in threads)
            Assert.That(t.Join(Patience), Is.True, $"{t.Name} finished");
        if (!errors.IsEmpty)
            throw new AggregateException(errors);

        for (int i = 0; i < readerCount; i++)
        {
            Inbox box = inboxes[i];
            Assert.That(box.Damaged, Is.Zero, $"reader {i}: messages intact");
            // Between resets the sequence has no gap; a reset may skip ahead.
            int start = 0;
            foreach (int end in box.ResetAt.Append(box.Messages.Count))
            {
                List<uint> run = box.Messages.Skip(start).Take(end - start).Select(m => m.ObjectId).ToList();
                if (run.Count > 0)
                    SeqAssert.Equal(run, Range(run[0], run.Count), $"reader {i}: run after reset {start} is contiguous");
                start = end;
            }
            if (box.ResetAt.Count == 0)
                SeqAssert.Equal(box.Seqs, Range(0, total), $"reader {i} kept up: every message");
            TestContext.Out.WriteLine($"reader {i}: {box.Messages.Count} of {total} messages, {box.ResetAt.Count} resets");
        }
        Assert.That(_c.Queue.GetStatistics().Readers, Is.Empty, "every reader unregistered");
    }

    [Test]
    public void ASlowReaderIsSignaledAndPassesTheSignalOn()
    {
        Participant fast = Reader();
        Participant slow1 = Reader();
        Participant slow2 = Reader();
        var fastBox = new Inbox();
        // 38 calls of one chunk: cleanups before the chunks at 2048 live messages (nobody past the signal
        // threshold yet) and at 2304 (slow1 and slow2 are 2304 behind; slow1 comes first); the next would be 2560.
        for (int i = 0; i < 38; i++)
        {
            Send(WriteQuantum, batch: WriteQuantum);
            Receive(fast, fastBox);
        }
        int pid = Environment.ProcessId;
        Assert.Multiple(() =>
        {
            Assert.That(_signals, Is.EqualTo(new[] { (slow1.ProcNumber, pid) }), "the slowest reader, and only it, is signalled");
            Assert.That(_c.Queue.CatchupPending(slow1), Is.True);
            Assert.That(_c.Queue.CatchupPending(slow2), Is.False);
            Assert.That(_c.Queue.CatchupPending(fast), Is.False);
        });

        Inbox box1 = Receive(slow1);
        Assert.Multiple(() =>
        {
            SeqAssert.Equal(box1.Seqs, Range(0, 38 * WriteQuantum), "the signalled reader catches up with everything");
            Assert.That(box1.ResetAt, Is.Empty);
            Assert.That(_c.Queue.CatchupPending(slow1), Is.False, "caught up: the request is answered");
            Assert.That(_signals.Select(s => s.Procno), Is.EqualTo(new[] { slow1.ProcNumber, slow2.ProcNumber }),
                "once caught up, slow1's cleanup passed the signal to the next slowest");
            Assert.That(_c.Queue.CatchupPending(slow2), Is.True);
        });

        Inbox box2 = Receive(slow2);
        Assert.Multiple(() =>
        {
            SeqAssert.Equal(box2.Seqs, Range(0, 38 * WriteQuantum), "");
            Assert.That(_c.Queue.CatchupPending(slow2), Is.False);
            Assert.That(_signals, Has.Count.EqualTo(2), "nobody is behind any more: the chain ends");
            SinvalStatistics st = _c.Queue.GetStatistics();
            Assert.That(st.SignalsSent, Is.EqualTo(2));
            Assert.That(st.ResetsIssued, Is.Zero);
            Assert.That(st.MinMsgNum, Is.EqualTo(st.MaxMsgNum), "slow2's cleanup moved minMsgNum up to everyone");
            SeqAssert.Equal(fastBox.Seqs, Range(0, 38 * WriteQuantum), "");
        });
    }

    [Test]
    public void AStalledReaderIsResetToldOnceAndThenContinues()
    {
        Participant fast = Reader();
        Participant stalled = Reader();
        Participant stalled2 = Reader();
        var fastBox = new Inbox();
        for (int i = 0; i < 10; i++)
        {
            Send(500, batch: 500);
            Receive(fast, fastBox);
        }
        SinvalStatistics st = _c.Queue.GetStatistics();
        Assert.Multiple(() =>
        {
            Assert.That(st.Readers.Single(r => r.ProcNumber == stalled.ProcNumber).ResetPending, Is.True);
            Assert.That(st.Readers.Single(r => r.ProcNumber == stalled2.ProcNumber).ResetPending, Is.True);
            Assert.That(st.Readers.Single(r => r.ProcNumber == fast.ProcNumber).ResetPending, Is.False);
            Assert.That(st.ResetsIssued, Is.EqualTo(2));
            Assert.That(st.MaxMsgNum - st.MinMsgNum, Is.LessThanOrEqualTo(MaxNumMessages));
        });

        // GetMessages: -1 once, then it stands at the newest message.
        var buf = new SharedInvalidationMessage[64];
        Assert.That(_c.Queue.GetMessages(stalled, buf), Is.EqualTo(-1), "told it was reset");
        Assert.That(_c.Queue.GetMessages(stalled, buf), Is.Zero, "told only once; nothing newer yet");
        Assert.That(_c.Queue.CatchupPending(stalled), Is.False, "a reset answers any catch-up request");
        Send(10, batch: 10);
        Assert.That(_c.Queue.GetMessages(stalled, buf), Is.EqualTo(10));
        SeqAssert.Equal(buf.Take(10).Select(m => m.ObjectId), Range(5000, 10), "continues with new messages");

        // ReceiveAll: onReset once, then the messages sent after the reset.
        Inbox box2 = Receive(stalled2);
        Assert.That(box2.ResetAt, Is.EqualTo(new[] { 0 }), "onReset called once");
        Assert.That(box2.Messages, Is.Empty, "the 10 were sent before it learnt of the reset");
        Send(5, batch: 5);
        Receive(stalled2, box2);
        SeqAssert.Equal(box2.Seqs, Range(5010, 5), "");
        Assert.That(box2.ResetAt, Has.Count.EqualTo(1));

        Receive(fast, fastBox);
        SeqAssert.Equal(fastBox.Seqs, Range(0, 5015), "the reader that kept up lost nothing");
        Assert.That(fastBox.ResetAt, Is.Empty);
    }

    [Test]
    public void ASendOnlyParticipantNeverHoldsBackTheQueueAndNeverReceives()
    {
        Participant sendOnly = Reader(sendOnly: true);
        Participant reader = Reader();
        var box = new Inbox();
        for (int i = 0; i < 50; i++)
        {
            Send(256, batch: 256);
            Receive(reader, box);
        }
        var buf = new SharedInvalidationMessage[16];
        Assert.That(_c.Queue.GetMessages(sendOnly, buf), Is.Zero, "a send-only participant receives nothing");
        Assert.That(Receive(sendOnly).Messages, Is.Empty);
        // It can send.
        var mine = Enumerable.Range(0, 10).Select(i => SinvalCluster.Message(9, (uint)i)).ToArray();
        _c.Queue.SendMessages(sendOnly, mine);
        Receive(reader, box);
        SinvalStatistics st = _c.Queue.GetStatistics();
        SinvalReaderInfo so = st.Readers.Single(r => r.ProcNumber == sendOnly.ProcNumber);
        Assert.Multiple(() =>
        {
            SeqAssert.Equal(box.Messages.Take(12_800).Select(m => m.ObjectId), Range(0, 12_800), "");
            Assert.That(box.Messages.Skip(12_800), Is.EqualTo(mine));
            Assert.That(box.ResetAt, Is.Empty);
            Assert.That(so.SendOnly, Is.True);
            Assert.That(so.ResetPending, Is.False, "never reset");
            Assert.That(so.Signaled, Is.False, "never signalled");
            Assert.That(st.ResetsIssued, Is.Zero);
            Assert.That(_signals, Is.Empty);
            Assert.That(st.MaxMsgNum - st.MinMsgNum, Is.LessThan(MaxNumMessages), "cleanup advanced past the send-only slot");
        });
    }

    [Test]
    public void MessageNumbersWrapAround()
    {
        Participant a = Reader();
        Participant b = Reader();
        Participant lagging = Reader();
        _c.Queue.ShiftMessageNumbersForTesting(_writer, MsgNumWraparound - 1000);
        int startMax = _c.Queue.GetStatistics().MaxMsgNum;
        Assert.That(startMax, Is.InRange(MsgNumWraparound - MaxNumMessages, MsgNumWraparound - 1000));
        Assert.That(_c.Queue.GetStatistics().Readers.Select(r => r.NextMsgNum), Is.All.EqualTo(startMax));

        var boxes = new[] { new Inbox(), new Inbox(), new Inbox() };
        const int calls = 100;
        for (int i = 0; i < calls; i++)
        {
            Send(WriteQuantum, batch: WriteQuantum);
            Receive(a, boxes[0]);
            Receive(b, boxes[1]);
            if (i % 3 == 2)
                Receive(lagging, boxes[2]); // up to 128 behind at a cleanup: its nextMsgNum is reduced too
        }
        Receive(lagging, boxes[2]);
        SinvalStatistics st = _c.Queue.GetStatistics();
        Assert.Multiple(() =>
        {
            foreach (Inbox box in boxes)
            {
                SeqAssert.Equal(box.Seqs, Range(0, calls * WriteQuantum), "every message across the wraparound");
                Assert.That(box.ResetAt, Is.Empty);
                Assert.That(box.Damaged, Is.Zero);
            }
            Assert.That(startMax + calls * WriteQuantum, Is.GreaterThan(MsgNumWraparound), "the test crossed the wraparound point");
            Assert.That(st.MaxMsgNum, Is.LessThan(calls * WriteQuantum), "counters were reduced by MsgNumWraparound");
            Assert.That(st.MaxMsgNum, Is.EqualTo(startMax + calls * WriteQuantum - MsgNumWraparound));
            Assert.That(st.MinMsgNum, Is.InRange(0, st.MaxMsgNum));
            Assert.That(st.Readers.Select(r => r.NextMsgNum), Is.All.EqualTo(st.MaxMsgNum));
        });
    }

    [Test]
    public void RegistrationRules()
    {
        Participant r = Reader();
        Assert.Throws<InvalidOperationException>(() => _c.Queue.RegisterBackend(r), "registered twice");
        var buf = new SharedInvalidationMessage[4];
        Assert.Throws<InvalidOperationException>(() => _c.Queue.GetMessages(_writer, buf), "the writer never registered");
        Assert.Throws<ArgumentException>(() => _c.Queue.GetMessages(r, Span<SharedInvalidationMessage>.Empty));
        _c.Queue.UnregisterBackend(r);
        Assert.That(_c.Queue.GetStatistics().Readers, Is.Empty);
        _c.Queue.RegisterBackend(r);
        Send(3, batch: 3);
        SeqAssert.Equal(Receive(r).Seqs, Range(0, 3), "a reader starts at the newest message");

        // A reader whose participant left without unregistering stops counting; its slot can register again.
        int procno = r.ProcNumber;
        _helpers.Remove(r);
        r.Dispose();
        Send(WriteQuantum * 40, batch: WriteQuantum); // several cleanups
        Assert.That(_c.Queue.GetStatistics().Readers.Select(x => x.ProcNumber), Does.Not.Contain(procno));
        Participant again = Reader();
        Assert.That(again.ProcNumber, Is.EqualTo(procno), "the same slot, handed out again");

        // ForgetSlot (a dead participant's slot) drops the registration without a lock.
        _c.Queue.ForgetSlot(again.ProcNumber);
        Assert.That(_c.Queue.GetStatistics().Readers, Is.Empty);
    }

    // ------------------------------------------------------------------
    // Across processes
    // ------------------------------------------------------------------

    private ChildWorker StartWorker() => Workers.StartAttached(backend, _workers, _c.Segment.Handle, "si-attach");

    [Test]
    public void AWorkerProcessReceivesWhatTheParentSentAndViceVersa()
    {
        Participant mine = Reader();
        ChildWorker w = StartWorker();
        int workerProc = int.Parse(w.Send("si-join"), CultureInfo.InvariantCulture);

        // Parent -> worker: 38 chunks (past the signal threshold) while the worker does not read.
        var box = new Inbox();
        for (int i = 0; i < 38; i++)
        {
            Send(WriteQuantum, batch: WriteQuantum);
            Receive(mine, box);
        }
        Assert.That(_signals, Is.EqualTo(new[] { (workerProc, w.Pid) }), "the worker is asked to catch up, by procno and pid");
        Assert.That(w.Send("si-pending"), Is.EqualTo("true"));
        Assert.That(w.Send($"si-receive {WriterId}"), Is.EqualTo($"{38 * WriteQuantum} 0 0 {38 * WriteQuantum - 1} ok"));
        Assert.That(w.Send("si-pending"), Is.EqualTo("false"));

        // Worker -> parent: more than a ring's worth in one call, in pieces the parent reads between.
        const uint workerId = 2;
        for (int part = 0; part < 3; part++)
        {
            w.Send($"si-send {workerId} {part * 2000} 2000");
            Receive(mine, box);
        }
        w.Send("si-receive 0"); // the worker's own messages come back to it too; drain them
        List<uint> fromWorker = box.Messages.Where(m => m.DatabaseId == workerId).Select(m => m.ObjectId).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(box.Damaged, Is.Zero);
            Assert.That(box.ResetAt, Is.Empty);
            SeqAssert.Equal(box.Messages.Where(m => m.DatabaseId == WriterId).Select(m => m.ObjectId), Range(0, 38 * WriteQuantum), "");
            SeqAssert.Equal(fromWorker, Range(0, 6000), "the worker's messages arrive intact and in order");
        });
        w.Send("si-leave");
        Assert.That(_c.Queue.GetStatistics().Readers.Select(r => r.ProcNumber), Is.EqualTo(new[] { mine.ProcNumber }));
    }
}
