/*-------------------------------------------------------------------------
 * InterruptWorkerCommands.cs
 *   The worker process's commands for the cancel / terminate and
 *   exit-on-supervisor-death tests (CancelTerminateTests.cs), over the
 *   LockCluster that cl-create / cl-attach set up
 *   (Latch/CoreLatchWorkerCommands.cs; cl-result reads what the thread
 *   reports, cl-stop ends it).
 *
 * NOTES
 *   ci-wait <kind>  -> ok <procno>: a thread joins and waits in <kind> until
 *       it is canceled, reporting "waiting", then "canceled-by <pid> ..."
 *       and, once it has shown it still works, "... done":
 *         latch   WaitLatch loops (no interrupt check of its own); after
 *                 the cancel: LWLock 0 taken, counter 5 bumped, then a
 *                 latch wait until counter 4 is non-zero ("done")
 *         cv      condition variable 1 sleeps; after the cancel: whether
 *                 it is still on the wait list ("listed" / "unlisted"),
 *                 then sleeps again until counter 4 is non-zero
 *         mq      receives on the shm_mq this thread creates ("ci.mq");
 *                 after the cancel: receives again, "done <message>"
 *         lwlock  acquires LWLock 1 (held by the test), then
 *                 CheckForInterrupts; "canceled-by <pid> after-acquire"
 *                 once the lock was granted, the lock released
 *       Each waits 60 s at most; then it reports "timeout".
 *   ci-exit-on-death -> ok <procno>: a thread joins, takes LWLock 2 and
 *       waits on its latch with ExitOnSupervisorDeath (no timeout), so the
 *       process exits (82) when the supervisor dies
 *   ci-cv-death      -> ok <procno>: a thread sleeps on condition variable 2
 *       without a timeout; the supervisor's death ends it with
 *       SupervisorDiedException (reported by cl-result as "error ...")
 *-------------------------------------------------------------------------
 */
using System.Text;
using PgIpc.Latch;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;
using PgIpc.Tests.Sync;
using W = PgIpc.Tests.Latch.CoreLatchWorkerCommands;

namespace PgIpc.Tests.Signals;

internal static class InterruptWorkerCommands
{
    /// <summary>The structure the mq kind's queue lives in (made in LockCluster's spare room).</summary>
    public const string MqRegion = "ci.mq";

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        _ = seg;
        reply = "";
        switch (a[0])
        {
            case "ci-wait":
            {
                string kind = a[1];
                Action<Participant> body = kind switch
                {
                    "latch" => Latch,
                    "cv" => Cv,
                    "mq" => Mq,
                    "lwlock" => LWLockWait,
                    _ => throw new ArgumentException($"unknown wait kind \"{kind}\""),
                };
                W.Result = "pending";
                reply = $"ok {W.StartThread(body)}";
                return true;
            }
            case "ci-exit-on-death":
                W.Result = "pending";
                reply = $"ok {W.StartThread(me =>
                {
                    W.Cluster.Locks[2].Acquire(me, LWLockMode.Exclusive);
                    W.Result = "waiting";
                    while (true)
                    {
                        me.WaitLatch(WaitEvents.LatchSet | WaitEvents.ExitOnSupervisorDeath, -1);
                        me.ResetLatch();
                    }
                })}";
                return true;
            case "ci-cv-death":
                W.Result = "pending";
                reply = $"ok {W.StartThread(me =>
                {
                    ref ConditionVariable cv = ref W.Cluster.Cv(2);
                    ConditionVariable.PrepareToSleep(me, ref cv);
                    W.Result = "waiting";
                    while (!W.Stopping)
                        ConditionVariable.Sleep(me, ref cv);
                    ConditionVariable.CancelSleep(me);
                })}";
                return true;
            default:
                return false;
        }
    }

    private static long Deadline => Environment.TickCount64 + 60_000;

    private static bool TimedOut(long deadline)
    {
        if (Environment.TickCount64 < deadline && !W.Stopping)
            return false;
        W.Result = "timeout";
        return true;
    }

    private static void Latch(Participant me)
    {
        LockCluster c = W.Cluster;
        string canceled;
        long deadline = Deadline;
        W.Result = "waiting";
        try
        {
            while (true)
            {
                // No interrupt check of its own: the wait is what must end.
                me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 1000);
                me.ResetLatch();
                if (TimedOut(deadline))
                    return;
            }
        }
        catch (ParticipantCanceledException e)
        {
            canceled = $"canceled-by {e.RequesterPid}";
        }
        using (c.Locks[0].Hold(me, LWLockMode.Exclusive))
            c.Counter(5)++;
        W.Result = canceled + " working";
        while (Volatile.Read(ref c.Counter(4)) == 0)
        {
            me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 1000);
            me.ResetLatch();
            if (TimedOut(deadline))
                return;
        }
        W.Result = canceled + " done";
    }

    private static void Cv(Participant me)
    {
        LockCluster c = W.Cluster;
        string canceled;
        long deadline = Deadline;
        ConditionVariable.PrepareToSleep(me, ref c.Cv(1));
        W.Result = "waiting";
        try
        {
            while (true)
            {
                ConditionVariable.Sleep(me, ref c.Cv(1), 1000);
                if (TimedOut(deadline))
                    return;
            }
        }
        catch (ParticipantCanceledException e)
        {
            bool listed = ConditionVariable.Waiters(c.Procs, ref c.Cv(1)).Contains(me.ProcNumber);
            canceled = $"canceled-by {e.RequesterPid} {(listed ? "listed" : "unlisted")}";
        }
        W.Result = canceled + " working";
        ConditionVariable.PrepareToSleep(me, ref c.Cv(1));
        while (Volatile.Read(ref c.Counter(4)) == 0)
        {
            ConditionVariable.Sleep(me, ref c.Cv(1), 1000);
            if (TimedOut(deadline))
                return;
        }
        ConditionVariable.CancelSleep(me);
        W.Result = canceled + " done";
    }

    private static void Mq(Participant me)
    {
        LockCluster c = W.Cluster;
        // Carved from the room LockCluster requested for such late structures.
        ShmemRegion region = c.Segment.InitStruct(MqRegion, ShmMq.SizeFor(4096), r => ShmMq.Create(r), out _);
        ShmMq mq = ShmMq.Open(region);
        mq.SetReceiver(me);
        using ShmMqHandle inbox = mq.AttachAsReceiver(me);
        string canceled;
        W.Result = "waiting";
        try
        {
            // No sender yet: the receive sleeps until one attaches and sends, or the cancel.
            ShmMqResult r = inbox.Receive(out _);
            W.Result = "received before the cancel: " + r;
            return;
        }
        catch (ParticipantCanceledException e)
        {
            canceled = $"canceled-by {e.RequesterPid}";
        }
        W.Result = canceled + " working";
        ShmMqResult again = inbox.Receive(out ReadOnlySpan<byte> message);
        W.Result = again == ShmMqResult.Success ? $"{canceled} done {Encoding.UTF8.GetString(message)}" : $"{canceled} {again}";
    }

    private static void LWLockWait(Participant me)
    {
        LockCluster c = W.Cluster;
        W.Result = "waiting";
        c.Locks[1].Acquire(me, LWLockMode.Exclusive);
        string result;
        try
        {
            me.CheckForInterrupts();
            result = "not canceled";
        }
        catch (ParticipantCanceledException e)
        {
            result = $"canceled-by {e.RequesterPid} after-acquire";
        }
        finally
        {
            c.Locks[1].Release(me);
        }
        W.Result = result; // after the release: the test checks the lock is free once it reads this

    }
}
