/*-------------------------------------------------------------------------
 * CancelTerminateTests.cs
 *   Cancelling and terminating one participant (pg_cancel_backend /
 *   pg_terminate_backend) and WaitLatch's ExitOnSupervisorDeath
 *   (WL_EXIT_ON_PM_DEATH), per backend, with real worker processes:
 *   a cancel ends a latch wait, a condition-variable sleep and a shm_mq
 *   receive with ParticipantCanceledException naming the asker, and the
 *   participant goes on working; an LWLock sleep is not interrupted, the
 *   cancel comes at the first check after the lock is granted; a
 *   terminated supervised child holding an LWLock exits in order (lock
 *   free, slot freed, no crash restart); a waiter asking to exit on the
 *   supervisor's death exits with its code when the supervisor is killed;
 *   a condition-variable sleeper gets SupervisorDiedException.
 *
 * NOTES
 *   Workers are the test executable ("ci-*" commands,
 *   InterruptWorkerCommands.cs; the supervised child is
 *   PostmasterWorkerCommands' "hold-lwlock-wait"). At most three processes
 *   per test; TearDown kills what is left. The supervisor is killed with
 *   Process.Kill (SIGKILL, TerminateProcess on Windows): portable.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Text;
using NUnit.Framework;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;
using PgIpc.Tests.Postmaster;
using PgIpc.Tests.Sync;

namespace PgIpc.Tests.Signals;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class CancelTerminateTests(string backend)
{
    private static readonly TimeSpan Patience = Poll.Patience;
    private LockCluster? _c;
    private Supervisor? _supervisor;
    private readonly List<ChildWorker> _workers = [];
    private readonly List<int> _pids = [];

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        Participant.CurrentOrNull?.Dispose();
        _c?.Dispose();
        _c = null;
        _supervisor?.Dispose();
        _supervisor = null;
        foreach (int pid in _pids)
            SupervisorDeathTests.KillHard(pid);
        _pids.Clear();
    }

    private LockCluster Cluster => _c ??= LockCluster.Create(PgIpcPlatform.Get(backend));

    private ChildWorker StartWorker() => Workers.StartAttached(backend, _workers, Cluster.Segment.Handle, "cl-attach");

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);

    private static string Result(ChildWorker w) => w.Send("cl-result");

    private static void WaitForResult(ChildWorker w, Func<string, bool> ok, string what)
    {
        string last = "";
        if (!Poll.Until(() => ok(last = Result(w)), Patience, 10))
            Assert.Fail($"timed out waiting for {what}; the worker's thread reports \"{last}\"");
    }

    /// <summary>Starts ci-wait <paramref name="kind"/> in a worker and waits until its thread reports "waiting".</summary>
    private ChildWorker StartWaiter(string kind, out int procno)
    {
        ChildWorker w = StartWorker();
        procno = Int(w.Send($"ci-wait {kind}"));
        WaitForResult(w, r => r == "waiting", $"the {kind} waiter to start");
        return w;
    }

    [Test]
    public void CancelEndsALatchWaitAndTheParticipantGoesOn()
    {
        ChildWorker w = StartWaiter("latch", out int procno);
        Assert.That(Cluster.Procs.CancelParticipant(w.Pid), Is.True);
        string canceled = $"canceled-by {Environment.ProcessId}";
        WaitForResult(w, r => r.StartsWith(canceled, StringComparison.Ordinal) && r.EndsWith(" working", StringComparison.Ordinal), "the cancel to end the latch wait");
        Assert.That(Volatile.Read(ref Cluster.Counter(5)), Is.EqualTo(1), "it took an LWLock and worked after the cancel");
        Volatile.Write(ref Cluster.Counter(4), 1);
        PgIpc.Latch.Latches.SetLatch(Cluster.Procs, procno);
        WaitForResult(w, r => r == canceled + " done", "the participant's next latch wait to finish normally");
    }

    [Test]
    public void CancelEndsAConditionVariableSleepOffTheWaitList()
    {
        ChildWorker w = StartWaiter("cv", out int procno);
        Poll.WaitFor(() => ConditionVariable.Waiters(Cluster.Procs, ref Cluster.Cv(1)).Contains(procno), "the sleeper on the wait list");
        Assert.That(Cluster.Procs.CancelParticipant(w.Pid), Is.True);
        string canceled = $"canceled-by {Environment.ProcessId} unlisted";
        WaitForResult(w, r => r.StartsWith(canceled, StringComparison.Ordinal), "the cancel to end the sleep");
        using Participant me = Cluster.Procs.Join();
        Volatile.Write(ref Cluster.Counter(4), 1);
        ConditionVariable.Broadcast(me, ref Cluster.Cv(1));
        WaitForResult(w, r => r == canceled + " done", "the participant's next sleep to end on the broadcast");
    }

    [Test]
    public void CancelEndsAShmMqReceiveAndTheNextReceiveGetsTheMessage()
    {
        ChildWorker w = StartWaiter("mq", out _);
        Assert.That(Cluster.Procs.CancelParticipant(w.Pid), Is.True);
        string canceled = $"canceled-by {Environment.ProcessId}";
        WaitForResult(w, r => r == canceled + " working", "the cancel to end the receive");
        using Participant me = Cluster.Procs.Join();
        Assert.That(Cluster.Segment.TryFindStruct(InterruptWorkerCommands.MqRegion, out ShmemRegion region), Is.True);
        ShmMq mq = ShmMq.Open(region);
        mq.SetSender(me);
        using ShmMqHandle outbox = mq.AttachAsSender(me);
        Assert.That(outbox.Send(Encoding.UTF8.GetBytes("after-the-cancel")), Is.EqualTo(ShmMqResult.Success));
        WaitForResult(w, r => r == canceled + " done after-the-cancel", "the message on the receive after the cancel");
    }

    [Test]
    public void CancelReachesAnLWLockWaiterOnlyAfterTheLockIsGranted()
    {
        using Participant me = Cluster.Procs.Join();
        ref LWLock l = ref Cluster.Locks[1];
        l.Acquire(me, LWLockMode.Exclusive);
        ChildWorker w;
        int procno;
        try
        {
            w = StartWorker();
            procno = Int(w.Send("ci-wait lwlock"));
            ProcArray procs = Cluster.Procs;
            Poll.WaitFor(() => Cluster.Locks[1].WaitQueue(procs).Contains(procno), "the worker queued on the LWLock");
            Assert.That(Cluster.Procs.CancelParticipant(w.Pid), Is.True);
            // The sleep is on the semaphore: the cancel does not take it off the queue (that would corrupt it).
            Thread.Sleep(200);
            Assert.That(Cluster.Locks[1].WaitQueue(procs), Does.Contain(procno), "still queued: an LWLock sleep is not interrupted");
            Assert.That(Result(w), Is.EqualTo("waiting"));
        }
        finally
        {
            l.Release(me);
        }
        WaitForResult(w, r => r != "waiting", "the waiter to get the lock");
        Assert.That(Result(w), Is.EqualTo($"canceled-by {Environment.ProcessId} after-acquire"));
        Assert.That(Cluster.Locks[1].ConditionalAcquire(me, LWLockMode.Exclusive), Is.True, "the lock is free and consistent");
        Cluster.Locks[1].Release(me);
    }

    [Test]
    public void CancelOfAPidThatIsNoParticipantFindsNothing()
    {
        ChildWorker w = Workers.Start(backend, _workers); // a live process that never joined
        Assert.That(Cluster.Procs.CancelParticipant(w.Pid), Is.False);
        Assert.That(Cluster.Procs.TerminateParticipant(w.Pid), Is.False);
        Assert.That(Cluster.Procs.CancelParticipant(0), Is.False);
        Assert.That(w.HasExited, Is.False);
    }

    [Test]
    public void TerminateOfASupervisedChildHoldingAnLWLockIsAnOrderlyExit()
    {
        var log = new StringWriter();
        Supervisor c = _supervisor = new ClusterBuilder(TestEnvironment.UniqueKey("ci-term"))
            .WithPlatform(PgIpcPlatform.Get(backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
            .WithMaxChildren(4)
            .WithLog(log)
            .RequestShmem(PostmasterWorkerCommands.CountersName, PostmasterWorkerCommands.NumCounters * 8)
            .OnShmemStartup(cl => cl.InitStruct(PostmasterWorkerCommands.CountersName, PostmasterWorkerCommands.NumCounters * 8, null, out _))
            .Build();
        c.Start();
        string handle = c.Handle;
        BackgroundWorkerHandle h = c.StartChild(PostmasterWorkerCommands.Spec("victim", backend, "hold-lwlock-wait"));
        int pid = h.WaitForStartup(Patience);
        _pids.Add(pid);
        Assert.That(c.Cluster.Segment.TryFindStruct(PostmasterWorkerCommands.CountersName, out ShmemRegion counters), Is.True);
        Poll.WaitFor(() => Volatile.Read(ref counters.AsSpan<long>()[PostmasterWorkerCommands.HeldFlagCounter]) == pid, "the child to hold its LWLock");
        Assert.That(c.Cluster.Procs.GetProcs().Any(p => p.Pid == pid), Is.True);

        Assert.That(c.Cluster.Procs.TerminateParticipant(pid), Is.True);
        Poll.WaitFor(() => SupervisorDeathTests.IsGone(pid), "the terminated child to exit");
        Poll.WaitFor(() => log.ToString().Contains($"(PID {pid}) exited after it was terminated on request", StringComparison.Ordinal), "the supervisor to reap it");
        Assert.That(c.CrashRestarts, Is.Zero, "a terminated child is not a crash");
        Assert.That(c.Handle, Is.EqualTo(handle), "shared memory was not rebuilt");
        Assert.That(log.ToString(), Does.Not.Contain("terminating any other"));
        Assert.That(c.Cluster.Procs.GetProcs().Any(p => p.Pid == pid), Is.False, "its slot was given back");
        Assert.That(c.Cluster.Segment.TryFindStruct(PostmasterWorkerCommands.HeldLockName, out ShmemRegion lockRegion), Is.True);
        using Participant me = c.Cluster.Procs.Join();
        Assert.That(lockRegion.As<LWLock>().ConditionalAcquire(me, LWLockMode.Exclusive), Is.True, "its LWLock was released");
        lockRegion.As<LWLock>().Release(me);
    }

    [Test]
    public void TerminateInTheSupervisorsProcessDisposesTheParticipantWithoutExiting()
    {
        ProcArray procs = Cluster.Procs; // this process created the cluster: it is the supervisor's
        Exception? seen = null;
        int held = -1;
        bool disposed = false;
        using var joined = new ManualResetEventSlim();
        var t = new Thread(() =>
        {
            Participant p = procs.Join();
            Cluster.Locks[3].Acquire(p, LWLockMode.Exclusive);
            joined.Set();
            // Well inside the test's join (30 s): the thread always leaves before the cluster is disposed.
            long deadline = Environment.TickCount64 + 10_000;
            try
            {
                while (Environment.TickCount64 < deadline)
                {
                    p.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 1000);
                    p.ResetLatch();
                }
            }
            catch (Exception ex)
            {
                // Any exception is recorded, never left to end the test host.
                seen = ex;
                held = p.HeldLockCount;
                disposed = p.IsDisposed;
            }
            if (!p.IsDisposed)
            {
                p.ReleaseAllLWLocks();
                p.Dispose();
            }
        });
        t.Start();
        Assert.That(joined.Wait(Patience), Is.True);
        Assert.That(procs.TerminateParticipant(Environment.ProcessId), Is.True);
        Assert.That(t.Join(Patience), Is.True);
        Assert.That(seen, Is.InstanceOf<ParticipantTerminatedException>());
        Assert.That(disposed, Is.True, "the participant was disposed");
        Assert.That(held, Is.Zero, "its LWLock was released");
        using Participant me = procs.Join();
        Assert.That(Cluster.Locks[3].ConditionalAcquire(me, LWLockMode.Exclusive), Is.True);
        Cluster.Locks[3].Release(me);
    }

    /// <summary>
    /// A worker that created a cluster (the supervisor of it), this process attached to it (its slot array opened
    /// too: the Destroy in the test's finally then removes the latch objects as well), and another worker attached.
    /// </summary>
    private (ChildWorker Supervisor, ShmemSegment Segment, ProcArray Procs, ChildWorker Other) ClusterOfAWorker()
    {
        ChildWorker supervisor = Workers.Start(backend, _workers);
        string handle = supervisor.Send($"cl-create {TestEnvironment.UniqueKey("ci")}");
        ShmemSegment seg = ShmemSegment.Attach(ShmemHandle.Parse(handle), PgIpcPlatform.Get(backend));
        ProcArray procs = LockCluster.Attach(seg).Procs;
        ChildWorker other = Workers.StartAttached(backend, _workers, seg.Handle, "cl-attach");
        return (supervisor, seg, procs, other);
    }

    [Test]
    public void ExitOnSupervisorDeathEndsTheWaitersProcessInOrder()
    {
        (ChildWorker supervisor, ShmemSegment seg, ProcArray procs, ChildWorker other) = ClusterOfAWorker();
        try
        {
            other.Send("ci-exit-on-death");
            WaitForResult(other, r => r == "waiting", "the waiter to hold LWLock 2 and wait");
            Assert.That(procs.GetProcs().Any(p => p.Pid == other.Pid), Is.True);
            supervisor.Kill();
            Assert.That(other.WaitForExitCode(Patience), Is.EqualTo(ParticipantExitCodes.SupervisorDied), "the process exits with its documented code");
            Assert.That(procs.GetProcs().Any(p => p.Pid == other.Pid), Is.False, "its slot was given back before the exit");
            using Participant me = procs.Join();
            ref LWLock l = ref LWLockTranches.GetNamedLWLockTranche(seg, LockCluster.TrancheName)[2];
            Assert.That(l.ConditionalAcquire(me, LWLockMode.Exclusive), Is.True, "its LWLock was released before the exit");
            l.Release(me);
        }
        finally
        {
            Participant.CurrentOrNull?.Dispose();
            if (seg.IsAttached)
                seg.Destroy();
        }
    }

    [Test]
    public void ConditionVariableSleepEndsWithSupervisorDiedException()
    {
        (ChildWorker supervisor, ShmemSegment seg, ProcArray procs, ChildWorker other) = ClusterOfAWorker();
        _ = procs;
        try
        {
            other.Send("ci-cv-death");
            WaitForResult(other, r => r == "waiting", "the sleeper");
            supervisor.Kill();
            WaitForResult(other, r => r.StartsWith("error ", StringComparison.Ordinal), "the sleep to end");
            Assert.That(Result(other), Does.StartWith("error SupervisorDiedException:"));
            Assert.That(other.HasExited, Is.False, "the caller decides what to do (no exit asked)");
            other.Close(); // detaches before the Destroy below
        }
        finally
        {
            if (seg.IsAttached)
                seg.Destroy();
        }
    }
}
