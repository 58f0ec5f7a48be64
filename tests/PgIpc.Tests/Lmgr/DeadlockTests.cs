/*-------------------------------------------------------------------------
 * DeadlockTests.cs
 *   Deadlock detection across real processes (deadlock_timeout 100 ms):
 *   cycles of two and three processes are found and exactly one process
 *   gets DeadlockDetectedException, naming every process, lock and mode of
 *   the cycle, while the others go on; a soft deadlock (a cycle through a
 *   wait-queue order) is resolved by rearranging the queue, without an
 *   exception; a long queue of compatible requests is no deadlock.
 *
 *   Each worker process has one participant (LmWorkerCommands). Waits are
 *   bounded; nothing asserts a time (the time to detection is reported).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using NUnit.Framework;
using PgIpc.Lmgr;
using PgIpc.Platform;

namespace PgIpc.Tests.Lmgr;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class DeadlockTests(string backend)
{
    private LmCluster _c = null!;
    private readonly List<ChildWorker> _workers = [];
    private readonly List<LmParticipant> _parts = [];

    [SetUp]
    public void SetUp() => _c = LmCluster.Create(PgIpcPlatform.Get(backend), new LockManagerOptions(DeadlockTimeoutMs: 100));

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        foreach (LmParticipant p in _parts)
            p.Dispose();
        _parts.Clear();
        _c.Dispose();
    }

    private sealed record W(ChildWorker Worker, int ProcNumber, int Pid);

    private W Start()
    {
        ChildWorker w = Workers.StartAttached(backend, _workers, _c.Segment.Handle);
        string[] r = w.Send("lm-attach").Split(' ');
        return new W(w, int.Parse(r[0], CultureInfo.InvariantCulture), int.Parse(r[1], CultureInfo.InvariantCulture));
    }

    private LmParticipant Part()
    {
        var p = new LmParticipant(_c.Procs);
        _parts.Add(p);
        return p;
    }

    private LockManager Lm => _c.Locks;

    private static string Obj(int n) => $"obj:1:7:{n}";

    private IReadOnlyList<int> Queue(string spec)
    {
        LmParticipant p = _parts.Count > 0 ? _parts[0] : Part();
        LockTag tag = LmCluster.Tag(spec);
        return p.Run(me => string.Join(",", Lm.WaitQueue(me, tag))).Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToList();
    }

    /// <summary>Polls each worker's async result until every one has answered; returns the replies.</summary>
    private static string[] Results(IReadOnlyList<W> ws, Func<int, bool>? stopWhen = null)
    {
        var replies = new string?[ws.Count];
        long deadline = Environment.TickCount64 + 60_000;
        while (replies.Any(r => r is null) && Environment.TickCount64 < deadline)
        {
            for (int i = 0; i < ws.Count; i++)
            {
                if (replies[i] is not null)
                    continue;
                string r = ws[i].Worker.SendRaw("lm-result 20");
                if (r != "ok pending")
                    replies[i] = r;
            }
            if (stopWhen is not null && stopWhen(replies.Count(r => r is not null)))
                break;
        }
        return replies.Select(r => r ?? "pending").ToArray();
    }

    private void Cycle(int n)
    {
        var ws = Enumerable.Range(0, n).Select(_ => Start()).ToList();
        for (int i = 0; i < n; i++)
            ws[i].Worker.Send($"lm acquire {Obj(i)} Exclusive");
        long formedAt = 0;
        for (int i = 0; i < n; i++)
        {
            ws[i].Worker.Send($"lm-async acquire {Obj((i + 1) % n)} Exclusive");
            int procno = ws[i].ProcNumber;
            Poll.WaitFor(() => Queue(Obj((i + 1) % n)).Contains(procno), $"worker {i} queued");
            formedAt = Stopwatch.GetTimestamp();
        }
        // Exactly one gets the exception; then, once it lets go of its lock, every other is granted in turn.
        string[] first = Results(ws, done => done >= 1);
        TestContext.Out.WriteLine($"{backend}: {n}-process deadlock reported {Stopwatch.GetElapsedTime(formedAt).TotalMilliseconds:F0} ms after it formed (deadlock_timeout 100 ms)");
        int loser = Array.FindIndex(first, r => r != "pending");
        Assert.That(loser, Is.GreaterThanOrEqualTo(0), "someone found the deadlock");
        string error = first[loser];
        Assert.That(error, Does.StartWith("error DeadlockDetectedException: deadlock detected"));
        foreach (W w in ws)
            Assert.That(error, Does.Contain($"Process {w.Pid} (participant {w.ProcNumber})"), "the message names every process of the cycle");
        Assert.That(error, Does.Contain("waits for ExclusiveLock on object"));
        Assert.That(ws.Where((_, i) => i != loser).Select(w => w.Worker.SendRaw("lm-result 300")), Is.All.EqualTo("ok pending"),
            "the others still wait (for the loser's lock)");
        // The loser aborts: releases what it holds; the waiter on it goes, and so on round the cycle.
        ws[loser].Worker.Send("lm releaseall");
        for (int k = 1; k < n; k++)
        {
            int i = ((loser - k) % n + n) % n;
            Assert.That(ws[i].Worker.Send("lm-result 30000"), Is.EqualTo("done granted"), $"worker {i} proceeds");
            ws[i].Worker.Send("lm releaseall");
        }
        Assert.Multiple(() =>
        {
            Assert.That(Lm.DeadlockStatistics.Hard, Is.EqualTo(1));
            Assert.That(Lm.Count, Is.EqualTo((0L, 0L)));
        });
    }

    [Test]
    public void ADeadlockOfTwoProcessesIsDetectedAndExactlyOneGetsTheException() => Cycle(2);

    [Test]
    public void ADeadlockOfThreeProcessesIsDetectedAndExactlyOneGetsTheException() => Cycle(3);

    [Test]
    public void ASoftDeadlockIsResolvedByRearrangingTheQueueWithoutAnException()
    {
        W p1 = Start(), p2 = Start(), p3 = Start();
        string x = Obj(100), y = Obj(101);
        p1.Worker.Send($"lm acquire {x} AccessShare");
        p3.Worker.Send($"lm acquire {y} Exclusive");
        // P2 waits for AccessExclusive on X (P1's AccessShare blocks it).
        p2.Worker.Send($"lm-async acquire {x} AccessExclusive");
        Poll.WaitFor(() => Queue(x).SequenceEqual([p2.ProcNumber]), "P2 queued on X");
        // P3's AccessShare on X is compatible with what is granted but queues behind P2's request: a soft edge P3 -> P2.
        p3.Worker.Send($"lm-async acquire {x} AccessShare");
        Poll.WaitFor(() => Queue(x).SequenceEqual([p2.ProcNumber, p3.ProcNumber]), "P3 queued behind P2");
        // P1 waits for Y, held by P3: P1 -> P3 -> (soft) P2 -> P1.
        p1.Worker.Send($"lm-async acquire {y} Exclusive");
        // The detector moves P3 ahead of P2 on X: P3 is granted and nobody gets an exception.
        Assert.That(p3.Worker.SendRaw("lm-result 30000"), Is.EqualTo("ok done granted"));
        Assert.That(p1.Worker.SendRaw("lm-result 200"), Is.EqualTo("ok pending"));
        Assert.That(p2.Worker.SendRaw("lm-result 200"), Is.EqualTo("ok pending"));
        p3.Worker.Send("lm releaseall");
        Assert.That(p1.Worker.SendRaw("lm-result 30000"), Is.EqualTo("ok done granted"));
        p1.Worker.Send("lm releaseall");
        Assert.That(p2.Worker.SendRaw("lm-result 30000"), Is.EqualTo("ok done granted"));
        p2.Worker.Send("lm releaseall");
        Assert.Multiple(() =>
        {
            Assert.That(Lm.DeadlockStatistics.Soft, Is.GreaterThanOrEqualTo(1), "a queue was rearranged");
            Assert.That(Lm.DeadlockStatistics.Hard, Is.Zero);
            Assert.That(Lm.Count, Is.EqualTo((0L, 0L)));
        });
    }

    [Test]
    public void ALongQueueOfCompatibleRequestsIsNoDeadlock()
    {
        LmParticipant holder = Part();
        LockTag x = LmCluster.Tag(Obj(200));
        holder.Run(me => Lm.Acquire(me, x, LockMode.AccessExclusive).ToString());
        var ws = Enumerable.Range(0, 4).Select(_ => Start()).ToList();
        foreach (W w in ws)
        {
            w.Worker.Send($"lm acquire {Obj(300 + w.ProcNumber)} Exclusive"); // each holds something of its own too
            w.Worker.Send($"lm-async acquire {Obj(200)} AccessShare");
        }
        Poll.WaitFor(() => Queue(Obj(200)).Count == 4, "all four queued");
        // Every waiter runs its deadlock check (after 100 ms); none finds a cycle.
        Poll.WaitFor(() => Lm.DeadlockStatistics.Checks >= 4, "the waiters' deadlock checks");
        Assert.That(ws.Select(w => w.Worker.SendRaw("lm-result 10")), Is.All.EqualTo("ok pending"));
        holder.Run(me => Lm.ReleaseAll(me).ToString());
        Assert.That(ws.Select(w => w.Worker.SendRaw("lm-result 30000")), Is.All.EqualTo("ok done granted"));
        foreach (W w in ws)
            w.Worker.Send("lm releaseall");
        Assert.Multiple(() =>
        {
            Assert.That(Lm.DeadlockStatistics.Hard, Is.Zero);
            Assert.That(Lm.DeadlockStatistics.Soft, Is.Zero);
            Assert.That(Lm.Count, Is.EqualTo((0L, 0L)));
        });
    }
}
