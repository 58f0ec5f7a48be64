/*-------------------------------------------------------------------------
 * BgWriterTests.cs
 *   The background writer: it cleans the buffers ahead of the clock hand so
 *   that backends reuse clean victims, keeps to its per-round budget, and
 *   hibernates until a buffer allocation wakes it.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;
using S = PgIpc.Buffers.BufferDesc.State;

namespace PgIpc.Tests.Buffers;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class BgWriterTests(string backend)
{
    private BufferCluster? _c;

    [TearDown]
    public void TearDown()
    {
        _c?.Dispose();
        _c = null;
    }

    private BufferCluster Cluster(int numBuffers) => _c = BufferCluster.Create(PgIpcPlatform.Get(backend), numBuffers);

    private void AsParticipant(Action<Participant> body, ProcKind kind = ProcKind.Backend)
        => TestThreads.Run(1, _ =>
        {
            using Participant me = _c!.Procs.Join(kind);
            body(me);
        });

    private static int DirtyBuffers(BufferPool pool)
    {
        int n = 0;
        for (int b = 1; b <= pool.NumBuffers; b++)
            if ((pool.ReadState(b) & S.Dirty) != 0)
                n++;
        return n;
    }

    private static void ReadPages(BufferPool pool, Participant me, uint rel, int from, int count)
    {
        for (int i = from; i < from + count; i++)
            pool.ReleaseBuffer(me, pool.ReadBuffer(me, rel, ForkNumber.Main, i));
    }

    [Test]
    public void BgWriterCleansAheadOfTheClockHandSoBackendsReuseCleanBuffers()
    {
        BufferCluster c = Cluster(64);
        const int pages = 400;
        var bgw = new BackgroundWriter(c.Pool, new BgWriterOptions(DelayMs: 10, LruMaxPages: 1000));
        int dirtyBefore = 0, dirtyAfter = -1;
        long backendWrites = 0;
        AsParticipant(me =>
        {
            BufferStress.Create(c.Pool, me, 1, pages);
            BufferStress.Increment(c.Pool, me, 1, 64, 2000, 5); // pages 0..63 dirty: every buffer
        });
        dirtyBefore = DirtyBuffers(c.Pool);
        // Rounds of the writer (its own auxiliary participant) between bursts of clean reads by a backend.
        for (int next = 64; next < pages; next += 8)
        {
            AsParticipant(bg => bgw.BgBufferSync(bg), ProcKind.Auxiliary);
            long before = c.Pool.Smgr.Writes;
            AsParticipant(me => ReadPages(c.Pool, me, 1, next, 8));
            backendWrites += c.Pool.Smgr.Writes - before;
        }
        AsParticipant(bg => bgw.BgBufferSync(bg), ProcKind.Auxiliary);
        dirtyAfter = DirtyBuffers(c.Pool);
        long sum = 0;
        AsParticipant(me => sum = BufferStress.Sum(c.Pool, me, 1, pages));
        Assert.Multiple(() =>
        {
            Assert.That(dirtyBefore, Is.EqualTo(64), "the increments dirtied the whole pool");
            Assert.That(dirtyAfter, Is.Zero, "the dirty pages were written");
            Assert.That(bgw.BuffersWritten, Is.GreaterThanOrEqualTo(48), "the background writer wrote most of them");
            Assert.That(backendWrites, Is.LessThanOrEqualTo(16), "backends mostly found clean victims");
            Assert.That(bgw.BuffersAllocated, Is.GreaterThanOrEqualTo(pages - 64), "the rounds saw the allocations");
            Assert.That(sum, Is.EqualTo(2000), "every increment is on disk or in the pool");
        });
    }

    [Test]
    public void BgWriterKeepsToItsPerRoundBudget()
    {
        BufferCluster c = Cluster(64);
        const int pages = 300, budget = 5;
        var bgw = new BackgroundWriter(c.Pool, new BgWriterOptions(DelayMs: 10, LruMaxPages: budget));
        var written = new List<int>();
        bool sawBudget = false;
        AsParticipant(me => BufferStress.Create(c.Pool, me, 1, pages));
        var rng = new Random(3);
        for (int round = 0; round < 40; round++)
        {
            // Dirty a burst of pages, so every round has more to do than its budget.
            int seed = rng.Next();
            AsParticipant(me => BufferStress.Increment(c.Pool, me, 1, pages, 24, seed));
            AsParticipant(bg => bgw.BgBufferSync(bg), ProcKind.Auxiliary);
            written.Add(bgw.LastRound.Written);
            sawBudget |= bgw.LastRound.HitMaxPages;
        }
        Assert.Multiple(() =>
        {
            Assert.That(written, Has.All.LessThanOrEqualTo(budget), "no round wrote more than lru_maxpages");
            Assert.That(sawBudget, Is.True, "some round stopped at the budget");
            Assert.That(bgw.MaxWrittenClean, Is.GreaterThan(0));
        });
    }

    [Test]
    public void IdleBgWriterHibernatesAndTheNextAllocationWakesIt()
    {
        BufferCluster c = Cluster(32);
        AsParticipant(me => BufferStress.Create(c.Pool, me, 1, 100));
        // A 10 ms delay with a ten-minute hibernation: only the allocation's latch can wake it within the test.
        var bgw = new BackgroundWriter(c.Pool, new BgWriterOptions(DelayMs: 10, HibernateFactor: 60_000));
        using var stop = new CancellationTokenSource();
        Exception? error = null;
        int procno = -1;
        var thread = new Thread(() =>
        {
            try
            {
                using Participant bg = c.Procs.Join(ProcKind.Auxiliary);
                Volatile.Write(ref procno, bg.ProcNumber);
                bgw.Run(bg, stop.Token);
            }
            catch (Exception e)
            {
                error = e;
            }
        }) { IsBackground = true };
        thread.Start();
        bool hibernated = Poll.Until(() => bgw.IsHibernating && c.Pool.HibernatingBgWriter == Volatile.Read(ref procno), pollMs: 5);
        long roundsAsleep = bgw.Rounds;
        long roundsAfter = 0;
        bool woke = false;
        if (hibernated)
        {
            AsParticipant(me => ReadPages(c.Pool, me, 1, 50, 40)); // allocations
            woke = Poll.Until(() => bgw.Rounds > roundsAsleep, pollMs: 5);
            roundsAfter = bgw.Rounds;
        }
        stop.Cancel();
        Assert.That(thread.Join(TimeSpan.FromSeconds(30)), Is.True, "the writer stopped when cancelled");
        Assert.Multiple(() =>
        {
            Assert.That(error, Is.Null);
            Assert.That(hibernated, Is.True, "an idle writer hibernated and told the strategy where to wake it");
            Assert.That(woke, Is.True, $"an allocation woke it (rounds {roundsAsleep} -> {roundsAfter})");
            Assert.That(c.Pool.HibernatingBgWriter, Is.EqualTo(PgProc.InvalidProcNumber));
        });
    }

    [Test]
    public void BadOptionsAreClearErrors()
    {
        BufferCluster c = Cluster(16);
        Assert.Throws<ArgumentOutOfRangeException>(() => new BackgroundWriter(c.Pool, new BgWriterOptions(DelayMs: 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BackgroundWriter(c.Pool, new BgWriterOptions(LruMaxPages: -1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BackgroundWriter(c.Pool, new BgWriterOptions(LruMultiplier: double.NaN)));
        Assert.Throws<ArgumentOutOfRangeException>(() => c.Pool.StrategyNotifyBgWriter(c.Procs.MaxProcs));
    }

}
