/*-------------------------------------------------------------------------
 * LockManagerTests.cs
 *   The heavyweight lock manager across real processes: every pair of
 *   modes against the conflict table, queue order and the rule that a
 *   request conflicting with an earlier waiter waits behind it,
 *   lock_timeout, the full-table error, bad tags and modes, the fast path
 *   and its strong-lock transfer, release on leave, advisory locks.
 *
 *   The parent's participants live on threads of their own (LmParticipant);
 *   each worker process has one participant (LmWorkerCommands). Waits are
 *   bounded; nothing asserts a time.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using NUnit.Framework;
using PgIpc.Latch;
using PgIpc.Lmgr;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Tests.Lmgr;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class LockManagerTests(string backend)
{
    private LmCluster _c = null!;
    private readonly List<ChildWorker> _workers = [];
    private readonly List<LmParticipant> _parts = [];

    [SetUp]
    public void SetUp() => _c = LmCluster.Create(PgIpcPlatform.Get(backend));

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

    private ChildWorker StartWorker(out int procno)
    {
        ChildWorker w = Workers.StartAttached(backend, _workers, _c.Segment.Handle);
        procno = int.Parse(w.Send("lm-attach").Split(' ')[0], CultureInfo.InvariantCulture);
        return w;
    }

    private LmParticipant Part()
    {
        var p = new LmParticipant(_c.Procs);
        _parts.Add(p);
        return p;
    }

    private LockManager Lm => _c.Locks;

    private IReadOnlyList<int> Queue(LmParticipant p, LockTag tag) => p.Run(me => string.Join(",", Lm.WaitQueue(me, tag))).Split(',', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToList();

    private static string Spec(LockTag t) => t.Type switch
    {
        LockTagType.Relation => $"rel:{t.Field1}:{t.Field2}",
        LockTagType.Object => $"obj:{t.Field1}:{t.Field2}:{t.Field3}",
        LockTagType.Advisory => $"adv:{t.AdvisoryKey}",
        _ => throw new ArgumentException(t.ToString()),
    };

    [Test]
    public void EveryPairOfModesFollowsTheConflictTableAcrossProcesses()
    {
        ChildWorker w = StartWorker(out _);
        LmParticipant me = Part();
        var wrong = new List<string>();
        foreach (LockTag tag in new[] { LockTag.Relation(1, 100), LockTag.Object(1, 2, 3) })
        {
            for (int held = 1; held <= 8; held++)
            {
                for (int asked = 1; asked <= 8; asked++)
                {
                    var h = (LockMode)held;
                    var a = (LockMode)asked;
                    Assert.That(me.Run(p => Lm.Acquire(p, tag, h).ToString()), Is.EqualTo("Granted"));
                    string got = w.Send($"lm acquire {Spec(tag)} {asked} nowait");
                    bool conflicts = LockModes.Conflicts(h, a);
                    if (got != (conflicts ? "notavailable" : "granted"))
                        wrong.Add($"{tag.TypeName}: held {h}, asked {a}: {got}");
                    if (got == "granted")
                        w.Send($"lm release {Spec(tag)} {asked}");
                    me.Run(p => { Lm.Release(p, tag, h); return ""; });
                }
            }
        }
        Assert.Multiple(() =>
        {
            Assert.That(wrong, Is.Empty);
            Assert.That(Lm.Count, Is.EqualTo((0L, 0L)), "no LOCK or PROCLOCK left");
            Assert.That(Lm.StrongLockCountTotal, Is.Zero, "strong-lock counters back to zero");
        });
    }

    [Test]
    public void TheConflictTableIsPostgreSqls()
    {
        // Spot checks against lock.c's table, and its symmetry.
        Assert.Multiple(() =>
        {
            Assert.That(LockModes.Conflicts(LockMode.AccessShare, LockMode.AccessExclusive), Is.True);
            Assert.That(LockModes.Conflicts(LockMode.AccessShare, LockMode.Exclusive), Is.False);
            Assert.That(LockModes.Conflicts(LockMode.RowShare, LockMode.Exclusive), Is.True);
            Assert.That(LockModes.Conflicts(LockMode.RowExclusive, LockMode.RowExclusive), Is.False);
            Assert.That(LockModes.Conflicts(LockMode.RowExclusive, LockMode.Share), Is.True);
            Assert.That(LockModes.Conflicts(LockMode.ShareUpdateExclusive, LockMode.ShareUpdateExclusive), Is.True);
            Assert.That(LockModes.Conflicts(LockMode.Share, LockMode.Share), Is.False);
            Assert.That(LockModes.Conflicts(LockMode.ShareRowExclusive, LockMode.ShareRowExclusive), Is.True);
            Assert.That(LockModes.Conflicts(LockMode.ShareRowExclusive, LockMode.RowShare), Is.False);
            for (int a = 1; a <= 8; a++)
                for (int b = 1; b <= 8; b++)
                    Assert.That(LockModes.Conflicts((LockMode)a, (LockMode)b), Is.EqualTo(LockModes.Conflicts((LockMode)b, (LockMode)a)), $"{a} vs {b}");
        });
    }

    [Test]
    public void WaitersAreGrantedInQueueOrderAndALaterConflictingRequestWaitsBehindAnEarlierWaiter()
    {
        LockTag tag = LockTag.Object(1, 2, 77);
        LmParticipant holder = Part();
        ChildWorker w1 = StartWorker(out int p1);
        ChildWorker w2 = StartWorker(out int p2);
        Assert.That(holder.Run(me => Lm.Acquire(me, tag, LockMode.Share).ToString()), Is.EqualTo("Granted"));
        // W1 wants Exclusive: conflicts with the granted Share, waits.
        w1.Send($"lm-async acquire {Spec(tag)} Exclusive");
        Poll.WaitFor(() => Queue(holder, tag).SequenceEqual([p1]), "W1 queued");
        // Set by the waiter just after it queued: polled.
        Poll.WaitFor(() => _c.Procs.GetProcs().Single(p => p.ProcNumber == p1).WaitEvent == LockManager.WaitEventFor(LockTagType.Object), "W1's wait event");
        PgProcInfo w1Info = _c.Procs.GetProcs().Single(p => p.ProcNumber == p1);
        Assert.That(WaitEventRegistry.ClassNameOf(w1Info.WaitEvent) + ": " + w1Info.WaitEvent.Name, Is.EqualTo("Lock: object"));
        Assert.That(Lm.GetLockStatus().Single(r => !r.Granted), Is.EqualTo(Lm.GetLockStatus().Single(r => !r.Granted) with { Tag = tag, Mode = LockMode.Exclusive, ProcNumber = p1 }),
            "pg_locks shows the waited-for tag and mode");
        // W2 wants Share: compatible with what is granted, but conflicts with W1's earlier request: it waits behind W1.
        w2.Send($"lm-async acquire {Spec(tag)} Share");
        Poll.WaitFor(() => Queue(holder, tag).SequenceEqual([p1, p2]), "W2 queued behind W1");
        Assert.That(w2.Send("lm-result 50"), Is.EqualTo("pending"), "W2 does not overtake W1");
        holder.Run(me => { Lm.Release(me, tag, LockMode.Share); return ""; });
        Assert.That(w1.Send("lm-result 30000"), Is.EqualTo("done granted"), "W1 is granted first");
        Assert.That(w2.Send("lm-result 50"), Is.EqualTo("pending"), "W2 still waits for W1's Exclusive");
        w1.Send($"lm release {Spec(tag)} Exclusive");
        Assert.That(w2.Send("lm-result 30000"), Is.EqualTo("done granted"));
        w2.Send($"lm release {Spec(tag)} Share");
        Assert.That(Lm.Count, Is.EqualTo((0L, 0L)));
    }

    [Test]
    public void ACompatibleRequestWithNoConflictingWaiterIsGrantedAtOnce()
    {
        LockTag tag = LockTag.Object(1, 2, 78);
        LmParticipant holder = Part();
        ChildWorker w = StartWorker(out _);
        holder.Run(me => Lm.Acquire(me, tag, LockMode.RowExclusive).ToString());
        Assert.That(w.Send($"lm acquire {Spec(tag)} RowExclusive nowait"), Is.EqualTo("granted"));
        Assert.That(w.Send($"lm acquire {Spec(tag)} RowExclusive nowait"), Is.EqualTo("alreadyheld"));
        Assert.That(w.Send("lm releaseall"), Is.EqualTo("1"));
    }

    [Test]
    public void LockTimeoutEndsTheWaitWithLockTimeoutExceptionAndLeavesTheQueue()
    {
        LockTag tag = LockTag.Object(1, 2, 79);
        LmParticipant holder = Part();
        ChildWorker w = StartWorker(out _);
        holder.Run(me => Lm.Acquire(me, tag, LockMode.AccessExclusive).ToString());
        w.Send("lm timeouts 10000 200");
        string reply = w.SendRaw($"lm acquire {Spec(tag)} AccessShare");
        Assert.That(reply, Does.StartWith("error LockTimeoutException"));
        Assert.That(reply, Does.Contain("lock timeout"));
        Assert.That(Queue(holder, tag), Is.Empty, "the timed-out request left the queue");
        holder.Run(me => Lm.ReleaseAll(me).ToString());
        Assert.That(Lm.Count, Is.EqualTo((0L, 0L)));
    }

    [Test]
    public void AFullTableIsTheClearErrorAndLeavesNothingBehind()
    {
        _c.Dispose();
        _c = LmCluster.Create(PgIpcPlatform.Get(backend), new LockManagerOptions(MaxLocksPerParticipant: 10),
            new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 0, MaxBackgroundWorkers: 0));
        LmParticipant me = Part();
        int capacity = Lm.Capacity.Locks;
        string result = me.Run(p =>
        {
            int n = 0;
            try
            {
                for (; n < capacity + 10; n++)
                    Lm.Acquire(p, LockTag.Object(1, 9, (uint)n), LockMode.Exclusive);
                return $"no error after {n}";
            }
            catch (LockTableFullException ex)
            {
                return $"{n} {ex.Message}";
            }
        });
        Assert.That(result, Does.StartWith(capacity.ToString(CultureInfo.InvariantCulture) + " out of shared memory: increase max_locks_per_participant"));
        Assert.That(Lm.Count.Locks, Is.EqualTo(capacity), "the failed request left no entry");
        Assert.That(me.Run(p => Lm.ReleaseAll(p).ToString()), Is.EqualTo(capacity.ToString(CultureInfo.InvariantCulture)));
        Assert.That(Lm.Count, Is.EqualTo((0L, 0L)));
        Assert.That(me.Run(p => Lm.Acquire(p, LockTag.Object(1, 9, 1), LockMode.Exclusive).ToString()), Is.EqualTo("Granted"));
    }

    [Test]
    public void BadTagsModesAndScopesAreClearErrors()
    {
        LmParticipant me = Part();
        string r = me.Run(p =>
        {
            var errors = new List<string>();
            errors.Add(Outcome.Capture(() => Lm.Acquire(p, default, LockMode.Share))?.GetType().Name ?? "none");
            errors.Add(Outcome.Capture(() => Lm.Acquire(p, LockTag.Object(1, 1, 1), LockMode.NoLock))?.GetType().Name ?? "none");
            errors.Add(Outcome.Capture(() => Lm.Acquire(p, LockTag.Object(1, 1, 1), (LockMode)9))?.GetType().Name ?? "none");
            errors.Add(Outcome.Capture(() => Lm.Acquire(p, LockTag.Object(1, 1, 1), LockMode.Share, (LockScope)7))?.GetType().Name ?? "none");
            errors.Add(Outcome.Capture(() => Lm.Release(p, LockTag.Object(1, 1, 1), LockMode.Share))?.GetType().Name ?? "none");
            errors.Add(Outcome.Capture(() => LockTag.User(0, 1))?.GetType().Name ?? "none");
            return string.Join(",", errors);
        });
        Assert.That(r, Is.EqualTo("ArgumentException,ArgumentOutOfRangeException,ArgumentOutOfRangeException,ArgumentOutOfRangeException,InvalidOperationException,ArgumentOutOfRangeException"));
    }

    [Test]
    public void WeakLocksStayInTheFastPathUntilAStrongRequestMovesThemAndWaitsForThem()
    {
        LockTag rel = LockTag.Relation(5, 500);
        LmParticipant me = Part();
        ChildWorker w = StartWorker(out int wp);
        me.Run(p => Lm.Acquire(p, rel, LockMode.AccessShare).ToString());
        me.Run(p => Lm.Acquire(p, rel, LockMode.RowExclusive).ToString());
        IReadOnlyList<LockStatus> rows = Lm.GetLockStatus();
        Assert.Multiple(() =>
        {
            Assert.That(rows.Count(r => r.Tag == rel && r.FastPath && r.Granted), Is.EqualTo(2), "both weak modes in the fast path");
            Assert.That(Lm.Count, Is.EqualTo((0L, 0L)), "nothing in the main table");
        });
        // A strong request moves them to the main table, then finds them conflicting.
        Assert.That(w.Send($"lm acquire {Spec(rel)} AccessExclusive nowait"), Is.EqualTo("notavailable"));
        rows = Lm.GetLockStatus();
        Assert.Multiple(() =>
        {
            Assert.That(rows.Count(r => r.Tag == rel && !r.FastPath && r.Granted && r.ProcNumber == me.ProcNumber), Is.EqualTo(2), "moved to the main table");
            Assert.That(rows.Any(r => r.FastPath), Is.False);
            Assert.That(Lm.StrongLockCountTotal, Is.Zero, "the abandoned strong request's count is gone");
        });
        // Now a waiting strong request: it waits for both weak locks.
        w.Send($"lm-async acquire {Spec(rel)} AccessExclusive");
        Poll.WaitFor(() => Queue(me, rel).SequenceEqual([wp]), "the strong request queued");
        Assert.That(Lm.StrongLockCountTotal, Is.EqualTo(1));
        // A new weak request of ours goes to the main table (strong count set) and conflicts with the waiter? We hold locks
        // already, so it may be granted ahead; not part of this test. Release ours:
        me.Run(p => { Lm.Release(p, rel, LockMode.AccessShare); return ""; });
        Assert.That(w.Send("lm-result 100"), Is.EqualTo("pending"), "still one weak lock held");
        me.Run(p => { Lm.Release(p, rel, LockMode.RowExclusive); return ""; });
        Assert.That(w.Send("lm-result 30000"), Is.EqualTo("done granted"));
        w.Send($"lm release {Spec(rel)} AccessExclusive");
        Assert.Multiple(() =>
        {
            Assert.That(Lm.StrongLockCountTotal, Is.Zero, "counters back to zero");
            Assert.That(Lm.Count, Is.EqualTo((0L, 0L)));
        });
        // And the fast path is used again.
        me.Run(p => Lm.Acquire(p, rel, LockMode.AccessShare).ToString());
        Assert.That(Lm.GetLockStatus().Count(r => r.FastPath), Is.EqualTo(1));
    }

    [Test]
    public void LocksAreReleasedWhenTheParticipantLeaves()
    {
        LockTag tag = LockTag.Object(1, 2, 80);
        LockTag rel = LockTag.Relation(1, 81);
        ChildWorker w = StartWorker(out _);
        w.Send($"lm acquire {Spec(tag)} AccessExclusive session");
        w.Send($"lm acquire {Spec(rel)} AccessShare");
        LmParticipant me = Part();
        Assert.That(me.Run(p => Lm.Acquire(p, tag, LockMode.AccessShare, dontWait: true).ToString()), Is.EqualTo("NotAvailable"));
        w.Send("lm-leave");
        Assert.That(me.Run(p => Lm.Acquire(p, tag, LockMode.AccessShare, dontWait: true).ToString()), Is.EqualTo("Granted"));
        Assert.That(me.Run(p => Lm.Acquire(p, rel, LockMode.AccessExclusive, dontWait: true).ToString()), Is.EqualTo("Granted"));
        me.Run(p => Lm.ReleaseAll(p).ToString());
        Assert.That(Lm.Count, Is.EqualTo((0L, 0L)));
        Assert.That(Lm.StrongLockCountTotal, Is.Zero);
    }

    [Test]
    public void ReleaseAllOfTheTransactionScopeKeepsSessionLocks()
    {
        LmParticipant me = Part();
        LockTag a = LockTag.Object(1, 3, 1), b = LockTag.Object(1, 3, 2);
        string r = me.Run(p =>
        {
            Lm.Acquire(p, a, LockMode.Exclusive, LockScope.Session);
            Lm.Acquire(p, b, LockMode.Exclusive);
            Lm.Acquire(p, a, LockMode.Exclusive); // also at transaction level
            int n1 = Lm.ReleaseAll(p, LockScope.Transaction);
            long heldA = Lm.HeldCount(p, a, LockMode.Exclusive), heldB = Lm.HeldCount(p, b, LockMode.Exclusive);
            int n2 = Lm.ReleaseAll(p, LockScope.Session);
            return $"{n1} {heldA} {heldB} {n2}";
        });
        Assert.That(r, Is.EqualTo("1 1 0 1"));
    }

    [Test]
    public void PageTupleAndUserTagsAreLockedAsDistinctObjects()
    {
        LmParticipant a = Part(), b = Part();
        LockTag[] tags =
        [
            LockTag.Page(1, 10, 3), LockTag.Page(1, 10, 4), LockTag.Tuple(1, 10, 3, 1), LockTag.Tuple(1, 10, 3, 2),
            LockTag.User(7, 1, 2, 3, 4), LockTag.User(8, 1, 2, 3, 4), LockTag.User(7, 1, 2, 3, 5), LockTag.Advisory(1, 2),
        ];
        foreach (LockTag t in tags)
            a.Run(p => Lm.Acquire(p, t, LockMode.Exclusive).ToString());
        Assert.Multiple(() =>
        {
            foreach (LockTag t in tags)
                Assert.That(b.Run(p => Lm.Acquire(p, t, LockMode.Exclusive, dontWait: true).ToString()), Is.EqualTo("NotAvailable"), t.ToString());
            // Same fields, other type or kind: other objects.
            Assert.That(b.Run(p => Lm.Acquire(p, LockTag.User(9, 1, 2, 3, 4), LockMode.Exclusive, dontWait: true).ToString()), Is.EqualTo("Granted"));
            Assert.That(b.Run(p => Lm.Acquire(p, LockTag.Object(1, 10, 3), LockMode.Exclusive, dontWait: true).ToString()), Is.EqualTo("Granted"));
            Assert.That(Lm.GetLockStatus().Select(r => r.Tag.TypeName).Distinct(), Is.EquivalentTo(new[] { "page", "tuple", "userlock", "advisory", "object" }));
        });
        a.Run(p => Lm.ReleaseAll(p).ToString());
        b.Run(p => Lm.ReleaseAll(p).ToString());
        Assert.That(Lm.Count, Is.EqualTo((0L, 0L)));
    }

    [Test]
    public void TransactionLevelAdvisoryLocksGoWithReleaseAllOfTheTransaction()
    {
        LmParticipant a = Part(), b = Part();
        a.Run(p => { Lm.AdvisoryLock(p, 5, exclusive: true, LockScope.Transaction); Lm.AdvisoryLock(p, 6); return ""; });
        Assert.That(b.Run(p => Lm.TryAdvisoryLock(p, 5).ToString()), Is.EqualTo("False"));
        Assert.That(a.Run(p => Lm.AdvisoryUnlock(p, 5).ToString()), Is.EqualTo("False"), "pg_advisory_unlock does not release a transaction-level lock");
        a.Run(p => Lm.ReleaseAll(p, LockScope.Transaction).ToString());
        Assert.That(b.Run(p => Lm.TryAdvisoryLock(p, 5).ToString()), Is.EqualTo("True"));
        Assert.That(b.Run(p => Lm.TryAdvisoryLock(p, 6).ToString()), Is.EqualTo("False"), "the session-level one stays");
    }

    [Test]
    public void AdvisoryLocksAcrossProcesses()
    {
        ChildWorker w1 = StartWorker(out _);
        ChildWorker w2 = StartWorker(out _);
        LmParticipant me = Part();
        w1.Send("lm adv-lock 42");
        Assert.That(w2.Send("lm adv-try 42"), Is.EqualTo("false"), "exclusive held elsewhere");
        Assert.That(w2.Send("lm adv-try 42 shared"), Is.EqualTo("false"));
        Assert.That(w2.Send("lm adv-try 43"), Is.EqualTo("true"), "another key is free");
        w2.Send("lm-async adv-lock 42 shared");
        Assert.That(w2.Send("lm-result 50"), Is.EqualTo("pending"));
        Assert.That(w1.Send("lm adv-unlock 42"), Is.EqualTo("true"));
        Assert.That(w1.Send("lm adv-unlock 42"), Is.EqualTo("false"), "not held any more");
        Assert.That(w2.Send("lm-result 30000"), Is.EqualTo("done locked"));
        Assert.That(me.Run(p => Lm.TryAdvisoryLock(p, 42, exclusive: false).ToString()), Is.EqualTo("True"), "shared with shared");
        Assert.That(me.Run(p => Lm.TryAdvisoryLock(p, 42).ToString()), Is.EqualTo("False"), "exclusive against shared");
        Assert.That(me.Run(p => Lm.AdvisoryUnlockAll(p).ToString()), Is.EqualTo("1"));
        Assert.That(Lm.GetLockStatus(null).Count(r => r.Tag == LockTag.Advisory(42)), Is.EqualTo(1), "w2's shared lock");
    }

    [Test]
    public void FastPathLocksOnEverNewRelationsAllocateNothing()
    {
        // Each new tag leaves an idle entry in the local table; every half table of them the table is rebuilt. That
        // rebuild must reuse its arrays: the acquire and release of a fast-path lock allocate nothing.
        LmParticipant me = Part();
        LockManager lm = Lm;
        string allocated = me.Run(p =>
        {
            void Cycle(uint database)
            {
                for (uint r = 0; r < 3000; r++)
                {
                    LockTag rel = LockTag.Relation(database, r);
                    lm.Acquire(p, rel, LockMode.AccessShare);
                    lm.Release(p, rel, LockMode.AccessShare);
                }
            }
            Cycle(9); // warm-up: JIT, and the local table's first rebuilds
            long before = GC.GetAllocatedBytesForCurrentThread();
            Cycle(10);
            return (GC.GetAllocatedBytesForCurrentThread() - before).ToString(CultureInfo.InvariantCulture);
        });
        Assert.That(allocated, Is.EqualTo("0"), "bytes allocated by 3000 fast-path acquire + release pairs on distinct relations");
        Assert.That(lm.GetLockStatus(), Is.Empty);
        Assert.That(me.Run(p => lm.HeldLockCount(p).ToString(CultureInfo.InvariantCulture)), Is.EqualTo("0"));
    }

    [Test]
    public void DisposingAParticipantFromAnotherThreadWhileItWaitsForALockIsRefused()
    {
        // As for a participant waiting for an LWLock: leaving from another thread would release its locks and its slot
        // under its thread, still queued (its strong-lock count then taken back twice, by the leave and by its wait's end).
        LockTag rel = LockTag.Relation(1, 90);
        LockManager lm = Lm;
        LmParticipant holder = Part();
        LmParticipant waiter = Part();
        Participant? waiterSelf = null;
        waiter.Run(p => { waiterSelf = p; return ""; });
        holder.Run(p => lm.Acquire(p, rel, LockMode.AccessExclusive).ToString());
        Task<string> wait = waiter.Start(p => lm.Acquire(p, rel, LockMode.AccessExclusive).ToString());
        Poll.WaitFor(() => Queue(holder, rel).SequenceEqual([waiter.ProcNumber]), "the waiter queued");
        string outcome = Outcome.Capture(() => waiterSelf!.Dispose())?.GetType().Name ?? "none";
        holder.Run(p => { lm.Release(p, rel, LockMode.AccessExclusive); return ""; });
        Assert.That(outcome, Is.EqualTo(nameof(InvalidOperationException)), "Dispose from another thread during the wait");
        Assert.That(((IAsyncResult)wait).AsyncWaitHandle.WaitOne(30_000), Is.True, "the wait ended");
        Assert.That(wait.Result, Is.EqualTo("Granted"));
        waiter.Run(p => lm.ReleaseAll(p).ToString());
        Assert.Multiple(() =>
        {
            Assert.That(lm.StrongLockCountTotal, Is.Zero);
            Assert.That(lm.Count, Is.EqualTo((0L, 0L)));
        });
    }
}
