/*-------------------------------------------------------------------------
 * LWLockTests.cs
 *   LWLock semantics in one process, per backend: modes, conditional
 *   acquire, wake-up order, AcquireOrWait, WaitForVar / UpdateVar, the
 *   held-lock list and its limit, release on error, bad use, tranches.
 *   Participants are threads (dedicated, never the pool).
 *-------------------------------------------------------------------------
 */
using System.Collections.Concurrent;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Sync;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed unsafe class LWLockTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);
    private LockCluster _c = null!;
    private Participant? _me;
    private readonly List<Thread> _threads = [];

    [SetUp]
    public void SetUp()
    {
        _c = LockCluster.Create(PgIpcPlatform.Get(backend));
        _me = _c.Procs.Join();
    }

    [TearDown]
    public void TearDown()
    {
        _me?.Dispose();
        foreach (Thread t in _threads)
            if (!t.Join(Patience))
                Assert.Fail($"thread {t.Name} did not finish");
        _threads.Clear();
        _c.Dispose();
    }

    private ref LWLock Lock(int i) => ref _c.Locks[i];

    /// <summary>Starts a participant thread running <paramref name="body"/>; exceptions go to <paramref name="errors"/>.</summary>
    private Thread Spawn(string name, ConcurrentQueue<Exception> errors, Action<Participant> body)
    {
        var t = new Thread(() =>
        {
            try
            {
                using Participant p = _c.Procs.Join();
                body(p);
            }
            catch (Exception ex)
            {
                errors.Enqueue(ex);
            }
        }) { IsBackground = true, Name = name };
        _threads.Add(t);
        t.Start();
        return t;
    }

    private int QueueLength(int lockIndex) => Lock(lockIndex).WaitQueue(_c.Procs).Length;

    private static void NoErrors(ConcurrentQueue<Exception> errors)
    {
        if (!errors.IsEmpty)
            throw new AggregateException(errors);
    }

    [Test]
    public void TheLockRecordsItsExclusiveHolderWhileHeld()
    {
        ref LWLock l = ref Lock(3);
        Assert.That(l.ExclusiveHolderProcNumber, Is.EqualTo(-1));
        l.Acquire(LWLockMode.Exclusive);
        Assert.That(l.ExclusiveHolderProcNumber, Is.EqualTo(_me!.ProcNumber));

        // A waiter that sleeps through several dead-holder checks while the holder lives, then gets the lock.
        var errors = new ConcurrentQueue<Exception>();
        int waiterProc = -1, recorded = -2;
        Thread t = Spawn("waiter", errors, p =>
        {
            waiterProc = p.ProcNumber;
            _c.Locks[3].Acquire(p, LWLockMode.Exclusive);
            recorded = _c.Locks[3].ExclusiveHolderProcNumber;
            _c.Locks[3].Release(p);
        });
        Poll.WaitFor(() => QueueLength(3) == 1, "the waiter to queue", Patience, pollMs: 1);
        Thread.Sleep(3 * LWLock.DeadHolderCheckMs + 50);
        Assert.That(t.IsAlive, Is.True, "a waiter on a live holder keeps waiting");
        l.Release();
        Assert.That(t.Join(Patience), Is.True);
        NoErrors(errors);
        Assert.That(recorded, Is.EqualTo(waiterProc), "the woken waiter recorded itself");
        Assert.That(l.ExclusiveHolderProcNumber, Is.EqualTo(-1), "a release clears the record");
        l.Acquire(LWLockMode.Shared);
        Assert.That(l.ExclusiveHolderProcNumber, Is.EqualTo(-1), "shared holders are not recorded in the lock");
        l.Release();
    }

    [Test]
    public void ExclusiveExcludesAndSharedShares()
    {
        ref LWLock l = ref Lock(0);
        Assert.That(l.Acquire(LWLockMode.Shared), Is.True, "an uncontended acquire is had without sleeping");
        Assert.That(l.ConditionalAcquire(LWLockMode.Shared), Is.True, "shared is compatible with shared");
        Assert.That(l.SharedHolders, Is.EqualTo(2));
        Assert.That(l.ConditionalAcquire(LWLockMode.Exclusive), Is.False, "exclusive conflicts with shared");
        l.Release();
        l.Release();
        Assert.That(l.ConditionalAcquire(LWLockMode.Exclusive), Is.True);
        Assert.That(l.IsHeldExclusive, Is.True);
        Assert.That(l.HeldByMe(), Is.True);
        Assert.That(l.HeldByMeInMode(LWLockMode.Exclusive), Is.True);
        Assert.That(l.HeldByMeInMode(LWLockMode.Shared), Is.False);
        Assert.That(l.ConditionalAcquire(LWLockMode.Shared), Is.False, "shared conflicts with exclusive");
        l.Release();
        Assert.That(l.HeldByMe(), Is.False);
        Assert.That(l.IsHeldExclusive, Is.False);
        Assert.That(_me!.HeldLockCount, Is.Zero);
    }

    [Test]
    public void ExclusiveWaitersAreWokenInArrivalOrder()
    {
        ref LWLock l = ref Lock(1);
        l.Acquire(LWLockMode.Exclusive);
        var order = new ConcurrentQueue<int>();
        var errors = new ConcurrentQueue<Exception>();
        LWLockArray locks = _c.Locks;
        for (int i = 0; i < 4; i++)
        {
            int id = i;
            Spawn($"x{i}", errors, _ =>
            {
                locks[1].Acquire(LWLockMode.Exclusive);
                order.Enqueue(id);
                locks[1].Release();
            });
            Poll.WaitFor(() => QueueLength(1) == id + 1, $"waiter {id} to queue", Patience, pollMs: 1);
        }
        l.Release();
        foreach (Thread t in _threads)
            Assert.That(t.Join(Patience), Is.True, "a waiter was never woken");
        NoErrors(errors);
        Assert.That(order, Is.EqualTo(new[] { 0, 1, 2, 3 }));
        Assert.That(l.HasWaiters, Is.False);
    }

    [Test]
    public void ReleaseWakesEverySharedWaiterButNotTheExclusiveOne()
    {
        ref LWLock l = ref Lock(2);
        l.Acquire(LWLockMode.Exclusive);
        var errors = new ConcurrentQueue<Exception>();
        var go = new ManualResetEventSlim();
        int sharedIn = 0;
        bool exclusiveIn = false;
        LWLockArray locks = _c.Locks;
        LWLockMode[] modes = [LWLockMode.Shared, LWLockMode.Shared, LWLockMode.Exclusive, LWLockMode.Shared];
        for (int i = 0; i < modes.Length; i++)
        {
            LWLockMode mode = modes[i];
            Spawn($"w{i}", errors, _ =>
            {
                locks[2].Acquire(mode);
                if (mode == LWLockMode.Shared)
                    Interlocked.Increment(ref sharedIn);
                else
                    Volatile.Write(ref exclusiveIn, true);
                go.Wait(Patience);
                locks[2].Release();
            });
            int expect = i + 1;
            Poll.WaitFor(() => QueueLength(2) == expect, $"waiter {i} to queue", Patience, pollMs: 1);
        }
        int exclusiveProc = Lock(2).WaitQueue(_c.Procs)[2];
        l.Release();
        Poll.WaitFor(() => Volatile.Read(ref sharedIn) == 3, "the three shared waiters to get the lock together", Patience, pollMs: 1);
        Assert.That(Volatile.Read(ref exclusiveIn), Is.False);
        Assert.That(Lock(2).WaitQueue(_c.Procs), Is.EqualTo(new[] { exclusiveProc }), "only the exclusive waiter stays queued");
        go.Set();
        Poll.WaitFor(() => Volatile.Read(ref exclusiveIn), "the exclusive waiter after the shared holders left", Patience, pollMs: 1);
        foreach (Thread t in _threads)
            Assert.That(t.Join(Patience), Is.True);
        NoErrors(errors);
    }

    [Test]
    public void NoLostWakeupsUnderHeavyContention()
    {
        const int threads = 6, iterations = 20_000;
        var errors = new ConcurrentQueue<Exception>();
        long* c = (long*)_c.Segment.Alloc(16, "test counters").Pointer;
        long mismatches = 0;
        LWLockArray locks = _c.Locks;
        for (int i = 0; i < threads; i++)
        {
            Spawn($"c{i}", errors, _ =>
            {
                for (int k = 0; k < iterations; k++)
                {
                    if ((k & 7) == 7)
                    {
                        locks[3].Acquire(LWLockMode.Shared);
                        if (c[0] != c[1])
                            Interlocked.Increment(ref mismatches);
                        locks[3].Release();
                    }
                    else
                    {
                        locks[3].Acquire(LWLockMode.Exclusive);
                        c[0]++;
                        c[1]++;
                        locks[3].Release();
                    }
                }
            });
        }
        foreach (Thread t in _threads)
            Assert.That(t.Join(TimeSpan.FromSeconds(120)), Is.True, "a participant hung: a wake-up was lost");
        _threads.Clear();
        NoErrors(errors);
        long expected = threads * (iterations - iterations / 8);
        Assert.Multiple(() =>
        {
            Assert.That(c[0], Is.EqualTo(expected));
            Assert.That(c[1], Is.EqualTo(expected));
            Assert.That(Interlocked.Read(ref mismatches), Is.Zero, "a shared holder saw the counters differ");
            Assert.That(Lock(3).HasWaiters, Is.False);
            Assert.That(Lock(3).SharedHolders, Is.Zero);
        });
    }

    [Test]
    public void AcquireOrWaitWaitsForFreeWithoutTakingIt()
    {
        ref LWLock l = ref Lock(4);
        Assert.That(l.AcquireOrWait(LWLockMode.Exclusive), Is.True, "free: taken at once");
        var errors = new ConcurrentQueue<Exception>();
        int result = -1;
        LWLockArray locks = _c.Locks;
        Spawn("aow", errors, p =>
        {
            bool got = locks[4].AcquireOrWait(LWLockMode.Exclusive);
            Volatile.Write(ref result, got ? 1 : 0);
            if (got)
                locks[4].Release();
            if (p.HeldLockCount != 0)
                throw new InvalidOperationException("AcquireOrWait left a lock in the held list");
        });
        Poll.WaitFor(() => QueueLength(4) == 1, "the waiter to queue", Patience, pollMs: 1);
        Assert.That(Volatile.Read(ref result), Is.EqualTo(-1));
        l.Release();
        Assert.That(_threads[0].Join(Patience), Is.True);
        NoErrors(errors);
        Assert.That(result, Is.Zero, "woken when free, without the lock");
        Assert.That(l.IsHeldExclusive, Is.False);
        Assert.That(l.ConditionalAcquire(LWLockMode.Exclusive), Is.True);
        l.Release();
    }

    [Test]
    public void WaitForVarSeesUpdatesAndRelease()
    {
        ref LWLock l = ref Lock(5);
        ulong* v = (ulong*)_c.Segment.Alloc(8, "test var").Pointer;
        l.Acquire(LWLockMode.Exclusive);
        var errors = new ConcurrentQueue<Exception>();
        var results = new ConcurrentQueue<(bool Free, ulong Value)>();
        LWLockArray locks = _c.Locks;
        Spawn("var", errors, _ =>
        {
            bool free = locks[5].WaitForVar(ref *v, 0, out ulong nv);
            results.Enqueue((free, nv));
            free = locks[5].WaitForVar(ref *v, nv, out nv);
            results.Enqueue((free, nv));
        });
        Poll.WaitFor(() => QueueLength(5) == 1, "the WaitForVar waiter to queue", Patience, pollMs: 1);
        l.UpdateVar(ref *v, 5);
        Poll.WaitFor(() => results.Count == 1, "the waiter to see the new value", Patience, pollMs: 1);
        Poll.WaitFor(() => QueueLength(5) == 1, "the waiter to queue again", Patience, pollMs: 1);
        Assert.That(l.IsHeldExclusive, Is.True, "UpdateVar keeps the lock");
        l.ReleaseClearVar(ref *v, 0);
        Assert.That(_threads[0].Join(Patience), Is.True);
        NoErrors(errors);
        Assert.That(results.ToArray(), Is.EqualTo(new[] { (false, 5UL), (true, 0UL) }));
        // Not held: nothing to wait for.
        Assert.That(l.WaitForVar(ref *v, 0, out _), Is.True);
    }

    [Test]
    public void ExplicitParticipantOverloadsMatchTheConvenienceOnes()
    {
        ref LWLock l = ref Lock(6);
        Participant me = _me!;
        using (l.Hold(me, LWLockMode.Shared))
        {
            Assert.That(l.HeldByMe(me), Is.True);
            Assert.That(l.HeldByMeInMode(me, LWLockMode.Shared), Is.True);
            Assert.That(l.HeldByMeInMode(me, LWLockMode.Exclusive), Is.False);
            Assert.That(l.HeldByMe(), Is.EqualTo(l.HeldByMe(me)));
        }
        Assert.That(l.HeldByMe(me), Is.False);
        ulong* v = (ulong*)_c.Segment.Alloc(8, "test var 6").Pointer;
        Assert.That(l.Acquire(me, LWLockMode.Exclusive), Is.True, "free: had without sleeping");
        l.ReleaseClearVar(me, ref *v, 7);
        Assert.That(*v, Is.EqualTo(7UL));
        Assert.That(l.HeldByMe(me), Is.False);
    }

    [Test]
    public void UpdateVarWithoutHoldingIsRefused()
    {
        ulong v = 0;
        Assert.That(Assert.Throws<LWLockUsageException>(() => Lock(5).UpdateVar(ref v, 1))!.Message, Does.Contain("does not hold it exclusive"));
    }

    [Test]
    public void ReleasingALockNotHeldIsAnError()
    {
        Assert.That(Assert.Throws<LWLockNotHeldException>(() => Lock(0).Release())!.Message, Does.Contain(LockCluster.TrancheName).And.Contain("not held"));
        // Held by someone else does not count as held by me.
        var errors = new ConcurrentQueue<Exception>();
        var release = new ManualResetEventSlim();
        LWLockArray locks = _c.Locks;
        Spawn("holder", errors, _ =>
        {
            locks[0].Acquire(LWLockMode.Exclusive);
            release.Wait(Patience);
            locks[0].Release();
        });
        Poll.WaitFor(() => Lock(0).IsHeldExclusive, "the other thread to hold the lock", Patience, pollMs: 1);
        Assert.Throws<LWLockNotHeldException>(() => Lock(0).Release());
        Assert.That(Lock(0).IsHeldExclusive, Is.True, "a refused release changes nothing");
        release.Set();
        Assert.That(_threads[0].Join(Patience), Is.True);
        NoErrors(errors);
    }

    [Test]
    public void HeldLockLimitIsEnforced()
    {
        ShmemRegion r = _c.Segment.Alloc((LWLock.MaxHeldLocks + 1) * sizeof(LWLockPadded), "many locks");
        var locks = (LWLockPadded*)r.Pointer;
        for (int i = 0; i <= LWLock.MaxHeldLocks; i++)
            locks[i].Lock.Initialize(BuiltinTranche.Test);
        for (int i = 0; i < LWLock.MaxHeldLocks; i++)
            locks[i].Lock.Acquire(LWLockMode.Shared);
        Assert.That(Assert.Throws<LWLockUsageException>(() => locks[LWLock.MaxHeldLocks].Lock.Acquire(LWLockMode.Exclusive))!.Message, Does.Contain("too many LWLocks"));
        Assert.That(locks[LWLock.MaxHeldLocks].Lock.IsHeldExclusive, Is.False, "the refused lock was not taken");
        Assert.That(_me!.HeldLockCount, Is.EqualTo(LWLock.MaxHeldLocks));
        _me.ReleaseAllLWLocks();
        Assert.That(_me.HeldLockCount, Is.Zero);
        for (int i = 0; i <= LWLock.MaxHeldLocks; i++)
            Assert.That(locks[i].Lock.SharedHolders, Is.Zero);
    }

    [Test]
    public void AnExceptionInsideAGuardReleasesTheLock()
    {
        LWLockArray locks = _c.Locks;
        Assert.Throws<InvalidOperationException>(() =>
        {
            using (locks[6].Hold(LWLockMode.Exclusive))
                throw new InvalidOperationException("boom");
        });
        Assert.That(Lock(6).IsHeldExclusive, Is.False);
        Assert.That(_me!.HeldLockCount, Is.Zero);
    }

    [Test]
    public void ReleaseAllOnAbortReleasesEverything()
    {
        LWLockArray locks = _c.Locks;
        try
        {
            locks[0].Acquire(LWLockMode.Exclusive);
            locks[1].Acquire(LWLockMode.Shared);
            locks[2].Acquire(LWLockMode.Exclusive);
            throw new InvalidOperationException("error while holding three locks");
        }
        catch (InvalidOperationException)
        {
            _me!.ReleaseAllLWLocks();
        }
        Assert.Multiple(() =>
        {
            Assert.That(_me!.HeldLockCount, Is.Zero);
            Assert.That(Lock(0).IsHeldExclusive || Lock(2).IsHeldExclusive, Is.False);
            Assert.That(Lock(1).SharedHolders, Is.Zero);
        });
    }

    [Test]
    public void DisposingAParticipantReleasesItsLocksAndWakesWaiters()
    {
        var errors = new ConcurrentQueue<Exception>();
        var holding = new ManualResetEventSlim();
        LWLockArray locks = _c.Locks;
        Spawn("leaver", errors, _ =>
        {
            locks[7].Acquire(LWLockMode.Exclusive);
            holding.Set();
            // Leaves (Spawn disposes the participant) while holding.
        });
        Assert.That(holding.Wait(Patience), Is.True);
        Assert.That(_threads[0].Join(Patience), Is.True);
        NoErrors(errors);
        Assert.That(Lock(7).IsHeldExclusive, Is.False, "Dispose released the lock");
        Assert.That(Lock(7).ConditionalAcquire(LWLockMode.Exclusive), Is.True);
        Lock(7).Release();
    }

    [Test]
    public void AcquiringWhileAlreadyWaitingIsRefused()
    {
        ref LWLock l = ref Lock(0);
        l.Acquire(LWLockMode.Exclusive);
        var errors = new ConcurrentQueue<Exception>();
        Participant? waiter = null;
        LWLockArray locks = _c.Locks;
        Spawn("waiter", errors, p =>
        {
            Volatile.Write(ref waiter, p);
            locks[0].Acquire(LWLockMode.Exclusive);
            locks[0].Release();
        });
        Poll.WaitFor(() => QueueLength(0) == 1, "the waiter to queue", Patience, pollMs: 1);
        Participant w = Volatile.Read(ref waiter)!;
        Assert.That(Assert.Throws<LWLockUsageException>(() => Lock(1).Acquire(w, LWLockMode.Exclusive))!.Message, Does.Contain("already waiting"));
        Assert.That(Lock(1).IsHeldExclusive, Is.False);
        l.Release();
        Assert.That(_threads[0].Join(Patience), Is.True);
        NoErrors(errors);
    }

    [Test]
    public void BadModeIsRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Lock(0).Acquire(LWLockMode.WaitUntilFree));
        Assert.Throws<ArgumentOutOfRangeException>(() => Lock(0).Acquire((LWLockMode)17));
        Assert.That(Lock(0).IsHeldExclusive || Lock(0).SharedHolders != 0, Is.False);
    }

    [Test]
    public void AThreadThatHasNotJoinedCannotLock()
    {
        Exception? seen = null;
        LWLockArray locks = _c.Locks;
        var t = new Thread(() =>
        {
            try { locks[0].Acquire(LWLockMode.Shared); }
            catch (Exception ex) { seen = ex; }
        });
        t.Start();
        Assert.That(t.Join(Patience), Is.True);
        Assert.That(seen, Is.TypeOf<InvalidOperationException>().With.Message.Contains("not a PgIpc participant"));
        Assert.That(Assert.Throws<InvalidOperationException>(() => _c.Procs.Join())!.Message, Does.Contain("already participant"));
    }

    [Test]
    public void StuckWaitListLockIsReportedNotHung()
    {
        ref LWLock l = ref Lock(0);
        int saved = SLock.NumDelays;
        SLock.NumDelays = 3;
        // Another participant holds it exclusive and "died" holding the wait-list bit.
        Interlocked.Or(ref l.State, LWLock.Bits.ValExclusive | LWLock.Bits.FlagLocked);
        try
        {
            Assert.That(Assert.Throws<StuckSpinLockException>(() => Lock(0).Acquire(LWLockMode.Exclusive))!.Message, Does.Contain("LWLock wait list"));
            Assert.That(_me!.HeldLockCount, Is.Zero);
        }
        finally
        {
            SLock.NumDelays = saved;
            Interlocked.And(ref l.State, ~(LWLock.Bits.ValExclusive | LWLock.Bits.FlagLocked));
        }
        Assert.That(l.ConditionalAcquire(LWLockMode.Exclusive), Is.True, "usable again once repaired");
        l.Release();
    }

    [Test]
    public void NamedTranchesAreFoundAndNamed()
    {
        LWLockArray locks = LWLockTranches.GetNamedLWLockTranche(_c.Segment, LockCluster.TrancheName);
        Assert.Multiple(() =>
        {
            Assert.That(locks.Length, Is.EqualTo(LockCluster.NumLocks));
            Assert.That(locks.TrancheId, Is.GreaterThanOrEqualTo(BuiltinTranche.FirstUserDefined));
            Assert.That(locks[3].Tranche, Is.EqualTo(locks.TrancheId));
            Assert.That(LWLockTranches.NameOf(_c.Segment, locks.TrancheId), Is.EqualTo(LockCluster.TrancheName));
            Assert.That(LWLockTranches.NameOf(_c.Segment, BuiltinTranche.BufferMapping), Is.EqualTo("BufferMapping"));
            Assert.That(LWLockTranches.NameOf(_c.Segment, 9999), Is.EqualTo("tranche 9999"));
        });
        int id = LWLockTranches.NewTrancheId(_c.Segment, "my.dsm.locks");
        Assert.That(LWLockTranches.NewTrancheId(_c.Segment, "my.dsm.locks"), Is.EqualTo(id), "registering again returns the same id");
        Assert.That(LWLockTranches.NameOf(_c.Segment, id), Is.EqualTo("my.dsm.locks"));
        Assert.That(Assert.Throws<PgIpcException>(() => LWLockTranches.GetNamedLWLockTranche(_c.Segment, "never.requested"))!.Message, Does.Contain("is not registered"));
        Assert.Throws<PgIpcException>(() => LWLockTranches.GetNamedLWLockTranche(_c.Segment, "my.dsm.locks"), "a run-time tranche has no locks of its own");
        Assert.Throws<ArgumentOutOfRangeException>(() => _ = locks[LockCluster.NumLocks]);
        Assert.Throws<ArgumentException>(() => new LWLockTrancheRequests().RequestNamedLWLockTranche("", 1));
        Assert.Throws<ArgumentException>(() => new LWLockTrancheRequests().RequestNamedLWLockTranche(new string('x', 64), 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LWLockTrancheRequests().RequestNamedLWLockTranche("a", 0));
        Assert.Throws<ArgumentException>(() => new LWLockTrancheRequests().RequestNamedLWLockTranche("a", 1).RequestNamedLWLockTranche("a", 2));
    }

    [Test]
    public void NameOfACorruptTrancheEntryIsItsNumberAndLeavesTheTableLockFree()
    {
        // Issue 13: the name was decoded under the table's spinlock with the length another process wrote.
        int id = LWLockTranches.NewTrancheId(_c.Segment, "corrupt.later");
        Assert.That(_c.Segment.TryFindStruct(LWLockTranches.ShmemName, out ShmemRegion r), Is.True);
        var h = (LWLockTrancheHeader*)r.Pointer;
        var entries = (LWLockTrancheEntry*)(h + 1);
        LWLockTrancheEntry* e = null;
        for (int i = 0; i < h->Count; i++)
            if (entries[i].TrancheId == id)
                e = entries + i;
        Assert.That(e is not null, Is.True);
        int length = e->NameLength;
        foreach (int bad in (int[])[-1, 64, int.MaxValue])
        {
            e->NameLength = bad;
            string? name = null;
            Exception? thrown = null;
            try { name = LWLockTranches.NameOf(_c.Segment, id); }
            catch (Exception ex) { thrown = ex; }
            bool held = SLock.IsHeld(ref h->Lock.Value);
            if (held)
                SLock.Release(ref h->Lock.Value);
            Assert.That(held, Is.False, $"NameLength {bad}: NameOf left the {LWLockTranches.ShmemName} spinlock held ({thrown?.GetType().Name}: {thrown?.Message})");
            Assert.That(thrown, Is.Null);
            Assert.That(name, Is.EqualTo($"tranche {id}"), $"NameLength {bad}");
        }
        e->NameLength = length;
        Assert.That(LWLockTranches.NameOf(_c.Segment, id), Is.EqualTo("corrupt.later"));
        Assert.That(LWLockTranches.NewTrancheId(_c.Segment, "after.corruption"), Is.GreaterThan(id));
    }

    [Test]
    public void BitBudgetHoldsEveryParticipant()
    {
        Assert.Multiple(() =>
        {
            Assert.That(LWLock.Bits.MaxSharedHolders, Is.GreaterThanOrEqualTo((uint)ProcArray.MaxProcsLimit));
            Assert.That(LWLock.Bits.LockMask & (LWLock.Bits.FlagLocked | LWLock.Bits.FlagReleaseOk | LWLock.Bits.FlagHasWaiters), Is.Zero);
            Assert.That(LWLock.Bits.ValExclusive, Is.EqualTo(LWLock.Bits.SharedMask + 1));
        });
    }
}
