/*-------------------------------------------------------------------------
 * DeadHolderTests.cs
 *   "No hang on the dead", without a supervisor: a worker process takes an
 *   LWLock (exclusive, shared) or a spinlock and is killed (SIGKILL, or
 *   TerminateProcess on Windows) while participants in this process and in
 *   another worker wait for it. Every waiter gets LockHolderDiedException
 *   naming the lock and the dead pid instead of hanging; the queue is left
 *   empty and the lock held (only a restart repairs what it protects); the
 *   dead slot stays to name the culprit; a waiter queued behind a killed
 *   waiter still gets the lock without anybody reclaiming slots.
 *
 *   Waiters run on dedicated threads bounded by a generous join; nothing
 *   here measures how soon they are woken.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Tests.Sync;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class DeadHolderTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private LockCluster _c = null!;
    private readonly List<ChildWorker> _workers = [];
    private readonly List<Waiter> _waiters = [];

    [SetUp]
    public void SetUp() => _c = LockCluster.Create(PgIpcPlatform.Get(backend));

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        foreach (Waiter w in _waiters)
            w.Thread.Join(Patience);
        _waiters.Clear();
        Participant.CurrentOrNull?.Dispose();
        _c.Dispose();
    }

    private ChildWorker StartWorker() => Workers.StartAttached(backend, _workers, _c.Segment.Handle, "lw-attach");

    /// <summary>A participant thread in this process that runs one lock operation and records how it ended.</summary>
    private sealed class Waiter
    {
        public required Thread Thread;
        public int ProcNumber = -1;
        public Exception? Error;
        public volatile bool Finished;
        public bool Acquired;
        public long EndedAt;
    }

    /// <summary>Reports (never asserts) how long after the kill the waiter was released.</summary>
    private void Report(string what, long killedAt, Waiter w)
        => TestContext.Out.WriteLine($"{backend}: {what} released {Stopwatch.GetElapsedTime(killedAt, w.EndedAt).TotalMilliseconds:F0} ms after the kill");

    /// <summary>Starts a thread that joins, runs <paramref name="take"/> (true: it now holds the lock, released at once), and leaves.</summary>
    private Waiter StartWaiter(int lockIndex, Func<Participant, bool> take)
    {
        var joined = new ManualResetEventSlim(); // not disposed: the thread sets it again as it ends
        Waiter w = null!;
        var t = new Thread(() =>
        {
            try
            {
                using Participant me = _c.Procs.Join();
                w.ProcNumber = me.ProcNumber;
                joined.Set();
                if (take(me))
                {
                    w.Acquired = true;
                    _c.Locks[lockIndex].Release(me);
                }
            }
            catch (Exception ex)
            {
                w.Error = ex;
            }
            finally
            {
                w.EndedAt = Stopwatch.GetTimestamp();
                joined.Set();
                w.Finished = true;
            }
        }) { IsBackground = true, Name = $"dead-holder waiter on lock {lockIndex}" };
        w = new Waiter { Thread = t };
        _waiters.Add(w);
        t.Start();
        Assert.That(joined.Wait(Patience), Is.True, "the waiter thread joined");
        return w;
    }

    private Waiter StartAcquirer(int lockIndex, LWLockMode mode)
        => StartWaiter(lockIndex, me => { _c.Locks[lockIndex].Acquire(me, mode); return true; });

    private static LockHolderDiedException DiedOf(Waiter w)
    {
        Assert.That(w.Thread.Join(Patience), Is.True, "the waiter was woken instead of hanging");
        Assert.That(w.Acquired, Is.False, "the waiter did not get a lock whose holder died");
        Assert.That(w.Error, Is.TypeOf<LockHolderDiedException>(), $"the waiter's error: {w.Error}");
        return (LockHolderDiedException)w.Error!;
    }

    private int QueueLength(int lockIndex) => _c.Locks[lockIndex].WaitQueue(_c.Procs).Length;

    [Test]
    public void WaitersOnAnExclusiveLockWhoseHolderIsKilledGetTheException()
    {
        ChildWorker victim = StartWorker();
        int victimPid = victim.Pid;
        int victimProc = int.Parse(victim.Send("lw-hold 4 exclusive"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => victim.Send("lw-state") == "acquired", "the victim to hold the lock", Patience);
        Assert.That(_c.Locks[4].ExclusiveHolderProcNumber, Is.EqualTo(victimProc), "the lock records its exclusive holder");

        // Waiters: two here (exclusive, shared) and one in another process.
        Waiter exclusive = StartAcquirer(4, LWLockMode.Exclusive);
        Poll.WaitFor(() => QueueLength(4) == 1, "the exclusive waiter to queue", Patience);
        Waiter shared = StartAcquirer(4, LWLockMode.Shared);
        Poll.WaitFor(() => QueueLength(4) == 2, "the shared waiter to queue", Patience);
        ChildWorker other = StartWorker();
        other.Send("lw-hold 4 shared");
        Poll.WaitFor(() => QueueLength(4) == 3, "the other process's waiter to queue", Patience);

        long killedAt = Stopwatch.GetTimestamp();
        victim.Kill();

        LockHolderDiedException ex = DiedOf(exclusive);
        Report("the exclusive LWLock waiter", killedAt, exclusive);
        Assert.Multiple(() =>
        {
            Assert.That(ex.DeadPid, Is.EqualTo(victimPid));
            Assert.That(ex.DeadProcNumber, Is.EqualTo(victimProc));
            Assert.That(ex.LockName, Is.EqualTo($"LWLock {LockCluster.TrancheName}[4]"));
            Assert.That(ex.Message, Does.Contain(victimPid.ToString(CultureInfo.InvariantCulture)).And.Contain("test.locks[4]"));
        });
        Assert.That(DiedOf(shared).DeadPid, Is.EqualTo(victimPid));
        Poll.WaitFor(() => other.Send("lw-state").StartsWith("died", StringComparison.Ordinal), "the other process's waiter to give up", Patience);
        Assert.That(other.Send("lw-state"), Is.EqualTo($"died {victimPid} LWLock {LockCluster.TrancheName}[4]"));

        // The waiters left the queue; the lock stays held by the dead process, whose slot stays to name it.
        Assert.Multiple(() =>
        {
            Assert.That(_c.Locks[4].WaitQueue(_c.Procs), Is.Empty);
            Assert.That(_c.Locks[4].HasWaiters, Is.False);
            Assert.That(_c.Locks[4].IsHeldExclusive, Is.True);
            Assert.That(_c.Procs.ReclaimDeadSlots(), Is.Zero, "a slot that died holding an LWLock is not reclaimed");
            PgProcInfo dead = _c.Procs.GetProcs().Single(p => p.ProcNumber == victimProc);
            Assert.That(dead.Pid, Is.EqualTo(victimPid));
            Assert.That(dead.HeldLWLocks, Is.EqualTo(1));
        });

        // A later waiter gets the same answer; other locks are untouched.
        using Participant me = _c.Procs.Join();
        var again = Assert.Throws<LockHolderDiedException>(() => _c.Locks[4].Acquire(me, LWLockMode.Exclusive));
        Assert.That(again!.DeadPid, Is.EqualTo(victimPid));
        Assert.That(_c.Locks[4].HasWaiters, Is.False);
        Assert.That(me.HeldLockCount, Is.Zero);
        Assert.That(_c.Locks[5].ConditionalAcquire(me, LWLockMode.Exclusive), Is.True);
        _c.Locks[5].Release(me);
    }

    [Test]
    public void AWaiterOnASharedLockOneOfWhoseHoldersIsKilledGetsTheException()
    {
        // A live shared holder here and one in the victim: the exclusive waiter waits for both.
        using Participant me = _c.Procs.Join();
        _c.Locks[6].Acquire(me, LWLockMode.Shared);
        ChildWorker victim = StartWorker();
        int victimPid = victim.Pid;
        int victimProc = int.Parse(victim.Send("lw-hold 6 shared"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => victim.Send("lw-state") == "acquired", "the victim to hold the lock", Patience);
        Waiter waiter = StartAcquirer(6, LWLockMode.Exclusive);
        Poll.WaitFor(() => QueueLength(6) == 1, "the waiter to queue", Patience);

        // Live holders are never blamed: several check intervals later the waiter still waits.
        Thread.Sleep(3 * LWLock.DeadHolderCheckMs + 100);
        Assert.That(waiter.Finished, Is.False, $"the waiter gave up while every holder lived: {waiter.Error}");

        victim.Kill();
        LockHolderDiedException ex = DiedOf(waiter);
        Assert.Multiple(() =>
        {
            Assert.That(ex.DeadPid, Is.EqualTo(victimPid));
            Assert.That(ex.DeadProcNumber, Is.EqualTo(victimProc));
            Assert.That(ex.LockName, Is.EqualTo($"LWLock {LockCluster.TrancheName}[6]"));
        });
        _c.Locks[6].Release(me);
        Assert.Multiple(() =>
        {
            Assert.That(_c.Locks[6].SharedHolders, Is.EqualTo(1), "the dead holder's share stays");
            Assert.That(_c.Locks[6].HasWaiters, Is.False);
        });
    }

    [Test]
    public void AcquireOrWaitOnALockWhoseHolderIsKilledGetsTheException()
    {
        ChildWorker victim = StartWorker();
        int victimPid = victim.Pid;
        victim.Send("lw-hold 7 exclusive");
        Poll.WaitFor(() => victim.Send("lw-state") == "acquired", "the victim to hold the lock", Patience);
        Waiter waiter = StartWaiter(7, me => _c.Locks[7].AcquireOrWait(me, LWLockMode.Exclusive));
        Poll.WaitFor(() => QueueLength(7) == 1, "the waiter to queue", Patience);
        victim.Kill();
        Assert.That(DiedOf(waiter).DeadPid, Is.EqualTo(victimPid));
        Assert.That(_c.Locks[7].HasWaiters, Is.False);
    }

    [Test]
    public void AWaiterOnASpinlockWhoseHolderIsKilledGetsTheException()
    {
        ChildWorker victim = StartWorker();
        int victimPid = victim.Pid;
        Assert.That(int.Parse(victim.Send("lw-spin-hold 8"), CultureInfo.InvariantCulture), Is.EqualTo(victimPid));
        Assert.That(SLock.HolderPid(ref SpinWord()), Is.EqualTo(victimPid), "the lock word holds the holder's pid");
        Waiter waiter = StartWaiter(0, _ =>
        {
            SLock.Acquire(ref SpinWord(), "test spin");
            SLock.Release(ref SpinWord());
            return false;
        });
        long killedAt = Stopwatch.GetTimestamp();
        victim.Kill();
        Assert.That(waiter.Thread.Join(Patience), Is.True, "the spinning waiter was released instead of hanging");
        Report("the spinlock waiter", killedAt, waiter);
        Assert.That(waiter.Error, Is.TypeOf<LockHolderDiedException>(), $"the waiter's error: {waiter.Error}");
        var ex = (LockHolderDiedException)waiter.Error!;
        Assert.Multiple(() =>
        {
            Assert.That(ex.DeadPid, Is.EqualTo(victimPid));
            Assert.That(ex.LockName, Is.EqualTo("spinlock test spin"));
            Assert.That(ex.DeadProcNumber, Is.EqualTo(-1));
            Assert.That(SLock.IsHeld(ref SpinWord()), Is.True, "the lock stays held");
        });
    }

    private ref int SpinWord() => ref Unsafe.As<long, int>(ref _c.Counter(8));

    [Test]
    public void AWaiterQueuedBehindAKilledWaiterGetsTheLockWithoutAnyReclaim()
    {
        using Participant me = _c.Procs.Join();
        _c.Locks[1].Acquire(me, LWLockMode.Exclusive);
        ChildWorker victim = StartWorker();
        ChildWorker survivor = StartWorker();
        int victimProc = int.Parse(victim.Send("lw-hold 1 exclusive"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => QueueLength(1) == 1, "the victim to queue", Patience);
        int survivorProc = int.Parse(survivor.Send("lw-hold 1 exclusive"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => QueueLength(1) == 2, "the survivor to queue", Patience);
        Assert.That(_c.Locks[1].WaitQueue(_c.Procs), Is.EqualTo(new[] { victimProc, survivorProc }));
        long reclaimedBefore = _c.Procs.Statistics.Reclaimed;

        victim.Kill();
        // The release wakes the dead victim, which will never let releasers wake anybody again; the survivor's own
        // check repairs that.
        _c.Locks[1].Release(me);
        Poll.WaitFor(() => survivor.Send("lw-state") == "acquired", "the survivor to get the lock", Patience);
        survivor.Send("lw-unhold");
        Assert.Multiple(() =>
        {
            Assert.That(_c.Procs.Statistics.Reclaimed, Is.EqualTo(reclaimedBefore), "nobody reclaimed a slot");
            Assert.That(_c.Locks[1].IsHeldExclusive, Is.False);
            Assert.That(_c.Locks[1].HasWaiters, Is.False);
        });
        Assert.That(_c.Locks[1].ConditionalAcquire(me, LWLockMode.Exclusive), Is.True);
        _c.Locks[1].Release(me);
        Assert.That(_c.Procs.ReclaimDeadSlots(), Is.EqualTo(1), "the dead waiter held nothing: its slot is reclaimed");
    }

    [Test]
    public unsafe void AWaiterWhoseWakerIsKilledBeforeItsPostGetsTheLock([Values(0, 1)] int stage)
    {
        // Stage 0: the waker unlinked the sleeper and marked it PendingWakeup; stage 1: it also stored NotWaiting.
        // Either way the post never comes. Before the waker recorded itself, the sleeper slept for good.
        ChildWorker victim = StartWorker();
        victim.Send("lw-hold 6 exclusive");
        Poll.WaitFor(() => victim.Send("lw-state") == "acquired", "the victim to hold the lock", Patience);
        Waiter waiter = StartAcquirer(6, LWLockMode.Exclusive);
        Poll.WaitFor(() => QueueLength(6) == 1, "the waiter to queue", Patience);

        victim.Send($"lw-release-stalling {stage}");
        Poll.WaitFor(() => victim.Send("lw-stalled") == "1", "the victim to stall in its wake-up", Patience);
        var state = (LWLockWaitState)Volatile.Read(ref _c.Procs.Procs[waiter.ProcNumber].LwWaiting);
        Assert.That(state, Is.EqualTo(stage == 0 ? LWLockWaitState.PendingWakeup : LWLockWaitState.NotWaiting));
        Assert.That(waiter.Finished, Is.False, "a live waker is let finish its post");

        long killedAt = Stopwatch.GetTimestamp();
        victim.Kill();
        Assert.That(waiter.Thread.Join(Patience), Is.True, "the sleeper was not left waiting for a dead waker's post");
        Report("the sleeper of a dead waker", killedAt, waiter);
        Assert.That(waiter.Error, Is.Null);
        Assert.That(waiter.Acquired, Is.True, "the lock was released before the wake-up: the sleeper gets it");

        using Participant me = _c.Procs.Join();
        Assert.That(_c.Locks[6].ConditionalAcquire(me, LWLockMode.Exclusive), Is.True);
        _c.Locks[6].Release(me);
        Assert.That(_c.Locks[6].HasWaiters, Is.False);
    }

    [Test]
    public void ASleeperAndItsWakerBothKilledMidWakeUpLeaveNoSlotBehind()
    {
        ChildWorker victim = StartWorker();
        ChildWorker sleeper = StartWorker();
        victim.Send("lw-hold 7 exclusive");
        Poll.WaitFor(() => victim.Send("lw-state") == "acquired", "the victim to hold the lock", Patience);
        int sleeperProc = int.Parse(sleeper.Send("lw-hold 7 exclusive"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => QueueLength(7) == 1, "the sleeper to queue", Patience);
        victim.Send("lw-release-stalling 0");
        Poll.WaitFor(() => victim.Send("lw-stalled") == "1", "the victim to stall in its wake-up", Patience);
        sleeper.Kill(); // dead while PendingWakeup: its own check will never run
        victim.Kill();

        _c.Procs.ReclaimDeadSlots();
        Assert.That(_c.Procs.GetProcs().Any(p => p.ProcNumber == sleeperProc), Is.False,
            "the dead sleeper's slot is reclaimed although its waker never finished");
        Assert.That(_c.Procs.GetProcs(), Is.Empty, "both dead slots are given back");
        using Participant me = _c.Procs.Join();
        Assert.That(_c.Locks[7].ConditionalAcquire(me, LWLockMode.Exclusive), Is.True);
        _c.Locks[7].Release(me);
    }
}
