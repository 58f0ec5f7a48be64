/*-------------------------------------------------------------------------
 * DetachWorkerCommands.cs
 *   The worker process's commands for DetachWithThreadsInsideTests: a
 *   cluster is shut down (its segment detached and destroyed) by one thread
 *   of the worker while other threads of the same process are still inside
 *   it. Run in a worker because, before detach waited for them, the
 *   process died of an access violation: the tests see that as the worker
 *   exiting mid-command.
 *
 * NOTES
 *   Commands (one line each, see TestWorker for the protocol):
 *     detach-cooperative  -> ok sleeper=<...> lockwaiter=<...> holder=<left|...> mapped=<..> log=<clean|straggler>
 *                            a thread holds LWLock 0 and a heavyweight lock in a work loop that checks
 *                            LeaveRequested; one thread sleeps waiting for the LWLock, another for the
 *                            heavyweight lock; the main thread shuts the cluster down
 *     detach-mq-after-shutdown -> ok disposed
 *                            shm_mq handles (sender and receiver) disposed after their cluster was shut down
 *     detach-straggler    -> ok error=<type> held=<True|False> ran=<True|False> released=<True|False>
 *                            a thread keeps writing a counter in the segment without calling PgIpc; the
 *                            main thread shuts the cluster down with a short grace; then the thread stops
 *                            and disposes its participant
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Lmgr;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Proc;

internal static unsafe class DetachWorkerCommands
{
    public static bool TryExecute(string[] a, IPgIpcPlatform platform, out string reply)
    {
        switch (a[0])
        {
            case "detach-cooperative":
                reply = "ok " + Cooperative(platform);
                return true;
            case "detach-straggler":
                reply = "ok " + Straggler(platform);
                return true;
            case "detach-mq-after-shutdown":
                reply = "ok " + QueueAfterShutdown(platform);
                return true;
            default:
                reply = "";
                return false;
        }
    }

    private static Supervisor Build(IPgIpcPlatform platform, StringWriter log)
        => new ClusterBuilder(TestEnvironment.UniqueKey("dt"))
            .WithPlatform(platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 8, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithLog(log)
            .RequestNamedLWLockTranche("test.detach", 2)
            .AddModule(ShmemModule.Struct("test.detach.counter", 64))
            .Build();

    private static string Cooperative(IPgIpcPlatform platform)
    {
        var log = new StringWriter();
        Supervisor s = Build(platform, log);
        Cluster c = s.Cluster;
        ShmemSegment seg = c.Segment;
        LWLockArray locks = LWLockTranches.GetNamedLWLockTranche(seg, "test.detach");
        LockManager lmgr = c.Get<LockManager>();
        LockTag tag = LockTag.Object(1, 2, 3);
        string sleeperEnd = "none", holderEnd = "none", lockWaiterEnd = "none";
        using var lockWaiterJoined = new ManualResetEventSlim();
        using var waitersDone = new CountdownEvent(2);
        using var holding = new ManualResetEventSlim();
        using var sleeperJoined = new ManualResetEventSlim();
        var holder = new Thread(() =>
        {
            try
            {
                using Participant me = c.Procs.Join();
                lmgr.Acquire(me, tag, LockMode.AccessExclusive, LockScope.Session);
                locks[0].Acquire(me, LWLockMode.Exclusive);
                holding.Set();
                // Work under the lock, checking at each step whether the cluster is going away.
                while (!me.LeaveRequested)
                    Thread.Sleep(5);
                // Both sleepers must have left their queues on their own (not been granted by this release).
                waitersDone.Wait(TimeSpan.FromSeconds(20));
                locks[0].Release(me);
                lmgr.Release(me, tag, LockMode.AccessExclusive, LockScope.Session);
                holderEnd = "left";
            }
            catch (Exception ex)
            {
                holderEnd = ex.GetType().Name;
            }
        }) { IsBackground = true, Name = "detach holder" };
        var sleeper = new Thread(() =>
        {
            try
            {
                using Participant me = c.Procs.Join();
                sleeperJoined.Set();
                locks[0].Acquire(me, LWLockMode.Exclusive);
                sleeperEnd = "acquired";
                locks[0].Release(me);
            }
            catch (Exception ex)
            {
                sleeperEnd = ex.GetType().Name;
            }
            finally
            {
                waitersDone.Signal();
            }
        }) { IsBackground = true, Name = "detach sleeper" };
        var lockWaiter = new Thread(() =>
        {
            try
            {
                using Participant me = c.Procs.Join();
                lockWaiterJoined.Set();
                lmgr.Acquire(me, tag, LockMode.Share, LockScope.Session);
                lockWaiterEnd = "acquired";
            }
            catch (Exception ex)
            {
                lockWaiterEnd = ex.GetType().Name;
            }
            finally
            {
                waitersDone.Signal();
            }
        }) { IsBackground = true, Name = "detach heavyweight-lock waiter" };
        holder.Start();
        if (!holding.Wait(TimeSpan.FromSeconds(20)))
            throw new TimeoutException("the holder did not get the lock");
        lockWaiter.Start();
        if (!lockWaiterJoined.Wait(TimeSpan.FromSeconds(20)))
            throw new TimeoutException("the heavyweight-lock waiter did not join");
        sleeper.Start();
        if (!sleeperJoined.Wait(TimeSpan.FromSeconds(20)))
            throw new TimeoutException("the sleeper did not join");
        long until = Environment.TickCount64 + 20_000;
        while ((locks[0].WaitQueue(c.Procs).Length == 0 || !lmgr.GetLockStatus().Any(r => !r.Granted)) && Environment.TickCount64 < until)
            Thread.Sleep(5);
        if (locks[0].WaitQueue(c.Procs).Length == 0)
            throw new TimeoutException("the sleeper did not queue");

        s.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
        if (!holder.Join(TimeSpan.FromSeconds(20)) || !sleeper.Join(TimeSpan.FromSeconds(20)) || !lockWaiter.Join(TimeSpan.FromSeconds(20)))
            throw new TimeoutException("a participant thread did not end after the detach");
        return $"sleeper={sleeperEnd} lockwaiter={lockWaiterEnd} holder={holderEnd} mapped={seg.IsMappingHeldAfterDetach} log={(log.ToString().Contains("still inside", StringComparison.Ordinal) ? "straggler" : "clean")}";
    }

    private static string QueueAfterShutdown(IPgIpcPlatform platform)
    {
        var queue = ShmemModule.Struct("test.detach.mq", ShmMq.SizeFor(4096), region => ShmMq.Create(region));
        Supervisor s = new ClusterBuilder(TestEnvironment.UniqueKey("dtq"))
            .WithPlatform(platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 8, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithLog(new StringWriter())
            .AddModule(queue)
            .Build();
        Participant me = s.Cluster.Procs.Join();
        ShmMq mq = ShmMq.Open(s.Cluster.Get(queue));
        mq.SetSender(me);
        mq.SetReceiver(me);
        ShmMqHandle outbox = mq.AttachAsSender(me);
        ShmMqHandle inbox = mq.AttachAsReceiver(me);
        outbox.Send("pending"u8, nowait: true, forceFlush: false); // held back: Detach would publish it
        s.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
        // In the wrong order: the memory is gone. Each only forgets its side.
        outbox.Dispose();
        inbox.Dispose();
        me.Dispose();
        return "disposed";
    }

    private static string Straggler(IPgIpcPlatform platform)
    {
        int grace = ProcArray.DetachGraceMs;
        ProcArray.DetachGraceMs = 300;
        try
        {
            var log = new StringWriter();
            Supervisor s = Build(platform, log);
            Cluster c = s.Cluster;
            ShmemSegment seg = c.Segment;
            if (!seg.TryFindStruct("test.detach.counter", out ShmemRegion r))
                throw new InvalidOperationException("no counter");
            long* counter = (long*)r.Pointer;
            bool stop = false;
            long afterDetach = 0;
            using var running = new ManualResetEventSlim();
            var straggler = new Thread(() =>
            {
                using Participant me = c.Procs.Join();
                running.Set();
                // Shared-memory work that never calls into PgIpc, so it cannot notice a leave request.
                while (!Volatile.Read(ref stop))
                {
                    (*counter)++;
                    if (!seg.IsAttached)
                        afterDetach++;
                    Thread.SpinWait(100);
                }
            }) { IsBackground = true, Name = "detach straggler" };
            straggler.Start();
            if (!running.Wait(TimeSpan.FromSeconds(20)))
                throw new TimeoutException("the straggler did not join");

            s.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
            string error = log.ToString().Contains("still inside it", StringComparison.Ordinal) ? "reported" : "none";
            bool held = seg.IsMappingHeldAfterDetach;
            long seen = Volatile.Read(ref afterDetach);
            long until = Environment.TickCount64 + 20_000;
            while (Volatile.Read(ref afterDetach) < seen + 1000 && Environment.TickCount64 < until)
                Thread.Sleep(1);
            bool ran = Volatile.Read(ref afterDetach) >= seen + 1000;
            Volatile.Write(ref stop, true);
            if (!straggler.Join(TimeSpan.FromSeconds(20)))
                throw new TimeoutException("the straggler did not end");
            return $"error={error} held={held} ran={ran} released={!seg.IsMappingHeldAfterDetach}";
        }
        finally
        {
            ProcArray.DetachGraceMs = grace;
        }
    }
}
