/*-------------------------------------------------------------------------
 * LockDeadProcessTests.cs
 *   A heavyweight lock holder killed with SIGKILL (TerminateProcess on
 *   Windows). Without a supervisor's restart (worker processes the
 *   supervisor did not start): waiters in this process, on a main-table
 *   lock and on a relation whose weak lock the dead process held in its
 *   fast path, are released (the dead slot's locks freed, the slot
 *   reclaimed) instead of hanging. With a supervisor: the crash restart
 *   makes the tables anew and the dead child's locks are gone.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using NUnit.Framework;
using PgIpc.Lmgr;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;

namespace PgIpc.Tests.Lmgr;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class LockDeadProcessTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);
    private LmCluster? _c;
    private Supervisor? _supervised;
    private readonly List<ChildWorker> _workers = [];
    private readonly List<LmParticipant> _parts = [];
    private readonly List<int> _pids = [];

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        foreach (LmParticipant p in _parts)
            p.Dispose();
        _parts.Clear();
        _c?.Dispose();
        _c = null;
        _supervised?.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
        _supervised?.Dispose();
        _supervised = null;
        foreach (int pid in _pids)
            PgIpc.Tests.Postmaster.SupervisorDeathTests.KillHard(pid);
        _pids.Clear();
    }

    [Test]
    public void WaitersOnAKilledHoldersLocksAreReleasedWithoutASupervisorRestart()
    {
        _c = LmCluster.Create(PgIpcPlatform.Get(backend), new LockManagerOptions(DeadlockTimeoutMs: 100));
        LockManager lm = _c.Locks;
        ChildWorker victim = Workers.StartAttached(backend, _workers, _c.Segment.Handle);
        int victimProcno = int.Parse(victim.Send("lm-attach").Split(' ')[0], CultureInfo.InvariantCulture);
        victim.Send("lm acquire obj:1:7:600 AccessExclusive");
        victim.Send("lm acquire rel:1:601 RowExclusive"); // fast path
        victim.Send("lm adv-lock 77");
        victim.Send("lm acquire rel:1:602 AccessExclusive"); // strong: counted in the strong-lock counters
        Assert.That(lm.StrongLockCountTotal, Is.EqualTo(1));
        Assert.That(lm.GetLockStatus().Count(r => r.ProcNumber == victimProcno && r.FastPath), Is.EqualTo(1));

        var p1 = new LmParticipant(_c.Procs);
        var p2 = new LmParticipant(_c.Procs);
        var p3 = new LmParticipant(_c.Procs);
        _parts.AddRange([p1, p2, p3]);
        Task<string> onObject = p1.Start(me => lm.Acquire(me, LockTag.Object(1, 7, 600), LockMode.AccessShare).ToString());
        Task<string> onRelation = p2.Start(me => lm.Acquire(me, LockTag.Relation(1, 601), LockMode.AccessExclusive).ToString());
        Task<string> onKey = p3.Start(me => { lm.AdvisoryLock(me, 77); return "locked"; });
        Poll.WaitFor(() => lm.GetLockStatus().Count(r => !r.Granted) == 3, "three waiters queued");
        Assert.That(onObject.IsCompleted || onRelation.IsCompleted || onKey.IsCompleted, Is.False);

        long killedAt = Stopwatch.GetTimestamp();
        victim.Kill();
        Assert.Multiple(() =>
        {
            Assert.That(onObject.Wait(Patience), Is.True, "the waiter on the object lock was released");
            Assert.That(onRelation.Wait(Patience), Is.True, "the strong waiter on the fast-path relation was released");
            Assert.That(onKey.Wait(Patience), Is.True, "the waiter on the advisory key was released");
        });
        TestContext.Out.WriteLine($"{backend}: waiters released {Stopwatch.GetElapsedTime(killedAt).TotalMilliseconds:F0} ms after the kill");
        Assert.Multiple(() =>
        {
            Assert.That(onObject.Result, Is.EqualTo("Granted"));
            Assert.That(onRelation.Result, Is.EqualTo("Granted"));
            Assert.That(onKey.Result, Is.EqualTo("locked"));
            Assert.That(lm.GetLockStatus().Where(r => r.ProcNumber == victimProcno), Is.Empty, "nothing of the dead slot is left");
            Assert.That(_c.Procs.GetProcs().Select(p => p.ProcNumber), Does.Not.Contain(victimProcno), "the dead slot was reclaimed");
        });
        foreach (LmParticipant p in _parts)
            p.Run(me => lm.ReleaseAll(me, LockScope.Session).ToString());
        Assert.That(lm.Count, Is.EqualTo((0L, 0L)));
        Assert.That(lm.StrongLockCountTotal, Is.Zero, "the dead holder's strong-lock count was taken back");
    }

    [Test]
    public void ANewOwnerOfADeadSlotCleansWhatTheDeadProcessLeft()
    {
        _c = LmCluster.Create(PgIpcPlatform.Get(backend), procs: new ProcArrayOptions(MaxBackends: 2, MaxAuxiliary: 0, MaxBackgroundWorkers: 0));
        LockManager lm = _c.Locks;
        ChildWorker victim = Workers.StartAttached(backend, _workers, _c.Segment.Handle);
        int victimProcno = int.Parse(victim.Send("lm-attach").Split(' ')[0], CultureInfo.InvariantCulture);
        victim.Send("lm acquire obj:1:7:700 Exclusive");
        victim.Kill();
        // Nobody waits; the slot is reclaimed by a later Join and its new owner finds the leftovers at its first lock call.
        _c.Procs.ReclaimDeadSlots();
        var a = new LmParticipant(_c.Procs);
        var b = new LmParticipant(_c.Procs);
        _parts.AddRange([a, b]);
        Assert.That(new[] { a.ProcNumber, b.ProcNumber }, Does.Contain(victimProcno));
        LmParticipant heir = a.ProcNumber == victimProcno ? a : b;
        Assert.That(heir.Run(me => lm.Acquire(me, LockTag.Object(1, 7, 700), LockMode.Exclusive, dontWait: true).ToString()), Is.EqualTo("Granted"));
        heir.Run(me => lm.ReleaseAll(me).ToString());
        Assert.That(lm.Count, Is.EqualTo((0L, 0L)));
    }

    [Test]
    public void TheCrashRestartClearsTheLocksOfAKilledChild()
    {
        string[] childArgs = ["--backend", backend, LmWorkerCommands.RunChildOption, "hold"];
        _supervised = new ClusterBuilder(TestEnvironment.UniqueKey("lm-crash"))
            .WithPlatform(PgIpcPlatform.Get(backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
            .WithMaxChildren(4)
            .WithLog(TextWriter.Null)
            .WithStopGrace(TimeSpan.FromSeconds(2))
            .AddBackgroundWorker(ChildSpec.ForThisProgram("holder", TestWorker.Verb, childArgs))
            .Build();
        Supervisor s = _supervised;
        s.Start();
        Poll.WaitFor(() => s.Cluster.Segment.IsAttached && s.Cluster.Get<LockManager>().GetLockStatus().Count(r => r.Granted) == 2,
            "the child holding its two locks", Patience, pollMs: 20);
        int pid = s.GetChildren().Single().Pid;
        _pids.Add(pid);
        Assert.That(s.Cluster.Get<LockManager>().GetLockStatus().All(r => r.Pid == pid), Is.True);
        using (Process p = Process.GetProcessById(pid))
            p.Kill();
        Poll.WaitFor(() => s.CrashRestarts == 1 && s.Cluster.Segment.IsAttached, "the crash restart", Patience, pollMs: 20);
        LockManager fresh = s.Cluster.Get<LockManager>();
        Assert.That(fresh.GetLockStatus(), Is.Empty, "the new tables hold nothing of the dead child");
        var me = new LmParticipant(s.Cluster.Procs);
        _parts.Add(me);
        Assert.That(me.Run(p => fresh.Acquire(p, LmWorkerCommands.HeldByChild, LockMode.AccessExclusive, dontWait: true).ToString()), Is.EqualTo("Granted"));
        Assert.That(me.Run(p => fresh.TryAdvisoryLock(p, LmWorkerCommands.ChildAdvisoryKey).ToString()), Is.EqualTo("True"));
        me.Run(p => fresh.ReleaseAll(p, LockScope.Session).ToString());
    }
}
