/*-------------------------------------------------------------------------
 * LWLockCrossProcessTests.cs
 *   LWLocks and participant slots across real processes: worker processes
 *   (this test executable in worker mode) with several participant threads
 *   each, one killed with SIGKILL while queued on a lock.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Tests.Sync;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class LWLockCrossProcessTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private LockCluster _c = null!;
    private readonly List<ChildWorker> _workers = [];

    [SetUp]
    public void SetUp() => _c = LockCluster.Create(PgIpcPlatform.Get(backend));

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        Participant.CurrentOrNull?.Dispose();
        _c.Dispose();
    }

    private ChildWorker StartWorker() => Workers.StartAttached(backend, _workers, _c.Segment.Handle, "lw-attach");

    [Test]
    public void CountersStayExactAcrossProcessesAndThreads()
    {
        const int processes = 3, threads = 2, iterations = 4000;
        var workers = Enumerable.Range(0, processes).Select(_ => StartWorker()).ToList();
        foreach (ChildWorker w in workers)
            w.Begin($"lw-count 0 {threads} {iterations}");
        // The parent reads in shared mode meanwhile.
        long parentMismatches = 0;
        using (Participant me = _c.Procs.Join())
        {
            for (int i = 0; i < 2000; i++)
            {
                _c.Locks[0].Acquire(LWLockMode.Shared);
                if (_c.Counter(0) != _c.Counter(1))
                    parentMismatches++;
                _c.Locks[0].Release();
            }
        }
        long childMismatches = workers.Sum(w => long.Parse(w.End("lw-count", TimeSpan.FromSeconds(120)), CultureInfo.InvariantCulture));
        long expected = (long)processes * threads * (iterations - iterations / 8);
        Assert.Multiple(() =>
        {
            Assert.That(_c.Counter(0), Is.EqualTo(expected), "counter 0");
            Assert.That(_c.Counter(1), Is.EqualTo(expected), "counter 1");
            Assert.That(childMismatches + parentMismatches, Is.Zero, "a shared holder saw the counters differ");
            Assert.That(_c.Locks[0].HasWaiters, Is.False);
            Assert.That(_c.Procs.FreeCount(ProcKind.Backend), Is.EqualTo(_c.Procs.Capacity(ProcKind.Backend)), "every slot came back");
        });
    }

    [Test]
    public void AWaiterKilledWithSigkillDoesNotStrandTheOthers()
    {
        using Participant me = _c.Procs.Join();
        ref LWLock l = ref _c.Locks[1];
        l.Acquire(LWLockMode.Exclusive);
        ChildWorker victim = StartWorker();
        ChildWorker survivor = StartWorker();
        int victimProc = int.Parse(victim.Send("lw-hold 1 exclusive"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => _c.Locks[1].WaitQueue(_c.Procs).Length == 1, "the victim to queue");
        int survivorProc = int.Parse(survivor.Send("lw-hold 1 exclusive"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => _c.Locks[1].WaitQueue(_c.Procs).Length == 2, "the survivor to queue");
        Assert.That(_c.Locks[1].WaitQueue(_c.Procs), Is.EqualTo(new[] { victimProc, survivorProc }));

        victim.Kill();
        // The release wakes the (dead) victim, which will never run again nor re-enable wake-ups.
        l.Release();
        Assert.That(_c.Procs.ReclaimDeadSlots(), Is.EqualTo(1), "the victim's slot is reclaimed");
        Poll.WaitFor(() => survivor.Send("lw-state") == "acquired", "the survivor to get the lock");
        survivor.Send("lw-unhold");
        Assert.Multiple(() =>
        {
            Assert.That(_c.Procs.GetProcs().Select(p => p.ProcNumber), Does.Not.Contain(victimProc));
            Assert.That(_c.Locks[1].IsHeldExclusive, Is.False);
            Assert.That(_c.Locks[1].HasWaiters, Is.False);
        });
        Assert.That(_c.Locks[1].ConditionalAcquire(LWLockMode.Exclusive), Is.True);
        _c.Locks[1].Release();
    }

    [Test]
    public void AWaiterKilledBeforeTheReleaseIsTakenOffTheQueue()
    {
        using Participant me = _c.Procs.Join();
        _c.Locks[2].Acquire(LWLockMode.Exclusive);
        ChildWorker victim = StartWorker();
        ChildWorker survivor = StartWorker();
        int victimProc = int.Parse(victim.Send("lw-hold 2 shared"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => _c.Locks[2].WaitQueue(_c.Procs).Length == 1, "the victim to queue");
        int survivorProc = int.Parse(survivor.Send("lw-hold 2 exclusive"), CultureInfo.InvariantCulture);
        Poll.WaitFor(() => _c.Locks[2].WaitQueue(_c.Procs).Length == 2, "the survivor to queue");
        victim.Kill();
        Assert.That(_c.Procs.ReclaimDeadSlots(), Is.EqualTo(1));
        Assert.That(_c.Locks[2].WaitQueue(_c.Procs), Is.EqualTo(new[] { survivorProc }), "the dead waiter left the queue");
        _c.Locks[2].Release();
        Poll.WaitFor(() => survivor.Send("lw-state") == "acquired", "the survivor to get the lock");
        survivor.Send("lw-unhold");
        Assert.That(_c.Procs.GetProcs().Select(p => p.ProcNumber), Does.Not.Contain(victimProc));
    }

    [Test]
    public void AnIdleParticipantKilledWithSigkillDisturbsNobody()
    {
        ChildWorker idle = StartWorker();
        ChildWorker busy = StartWorker();
        int idleProc = int.Parse(idle.Send("lw-join"), CultureInfo.InvariantCulture);
        busy.Begin("lw-count 3 2 3000");
        idle.Kill();
        Assert.That(busy.End("lw-count", TimeSpan.FromSeconds(120)), Is.EqualTo("0"));
        long expected = 2L * (3000 - 3000 / 8);
        Assert.That(_c.Counter(0), Is.EqualTo(expected));
        Assert.That(_c.Procs.GetProcs().Select(p => p.ProcNumber), Does.Contain(idleProc), "the dead slot stays until reclaimed");
        Assert.That(_c.Procs.ReclaimDeadSlots(), Is.EqualTo(1));
        Assert.That(_c.Procs.FreeCount(ProcKind.Backend), Is.EqualTo(_c.Procs.Capacity(ProcKind.Backend)));
    }

    [Test]
    public void AProcessThatExitsGivesItsSlotsBack()
    {
        ChildWorker w = StartWorker();
        w.Send("lw-join");
        Assert.That(_c.Procs.FreeCount(ProcKind.Backend), Is.EqualTo(_c.Procs.Capacity(ProcKind.Backend) - 1));
        long reclaimedBefore = _c.Procs.Statistics.Reclaimed;
        w.Close(); // end of stdin: the worker returns from Main without leaving explicitly
        Assert.That(w.HasExited, Is.True);
        Assert.That(_c.Procs.FreeCount(ProcKind.Backend), Is.EqualTo(_c.Procs.Capacity(ProcKind.Backend)), "the exit hook gave the slot back");
        Assert.That(_c.Procs.Statistics.Reclaimed, Is.EqualTo(reclaimedBefore), "given back, not reclaimed");
    }

    [Test]
    public void AFullSlotArrayReclaimsDeadSlotsBeforeRefusing()
    {
        _c.Dispose();
        _c = LockCluster.Create(PgIpcPlatform.Get(backend), new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 0, MaxBackgroundWorkers: 0));
        ChildWorker a = StartWorker();
        ChildWorker b = StartWorker();
        a.Send("lw-join");
        b.Send("lw-join");
        Assert.That(Assert.Throws<NoFreeProcSlotException>(() => _c.Procs.Join())!.Message, Does.Contain("all 2 are in use"));
        a.Kill();
        using Participant me = _c.Procs.Join();
        Assert.That(me.Kind, Is.EqualTo(ProcKind.Backend));
        Assert.That(_c.Procs.Statistics.Reclaimed, Is.EqualTo(1));
    }
}
