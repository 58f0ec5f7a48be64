/*-------------------------------------------------------------------------
 * LockWorkerCommands.cs
 *   The worker process's commands for the participant and LWLock tests.
 *
 * NOTES
 *   Commands (one line each, see TestWorker for the protocol):
 *     lw-attach                          -> ok               (ProcArray.Attach + tranche lookup)
 *     lw-join                            -> ok <procno>      (the worker's command thread joins)
 *     lw-leave                           -> ok
 *     lw-count <lock> <threads> <iters>  -> ok <mismatches>  (threads join, increment counters 0 and 1
 *                                                            under the lock exclusive; every 8th turn
 *                                                            they check both are equal in shared mode)
 *     lw-hold <lock> <mode>              -> ok <procno>      (a holder thread joins, then acquires;
 *                                                            it may block; it keeps the lock)
 *     lw-state                           -> ok waiting|acquired|done|died <pid> <lock name>
 *                                                            (died: the holder's Acquire threw
 *                                                            LockHolderDiedException; the thread has left)
 *     lw-unhold                          -> ok               (the holder releases and leaves)
 *     lw-spin-hold <counter>             -> ok <pid>         (takes the spinlock in counter <counter>'s
 *                                                            first 4 bytes and never releases it)
 *     lw-release-stalling <stage>        -> ok               (the holder releases, and stalls for good in
 *                                                            its wake-up of a sleeper: stage 0 after
 *                                                            unlinking it, 1 after marking it woken, both
 *                                                            before the post; for a kill at that step)
 *     lw-stalled                         -> ok 0|1           (whether the holder reached the stall)
 *   The holder thread is a background thread: SIGKILL takes it with the process.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Sync;

internal static class LockWorkerCommands
{
    private static LockCluster? s_cluster;
    private static Participant? s_main;
    private static Thread? s_holder;
    private static int s_holderState; // 0 none, 1 waiting, 2 acquired, 3 done, 4 died (s_holderDied says how)
    private static string? s_holderDied;
    private static int s_holderProcno = -1;
    private static int s_stalled;
    private static readonly ManualResetEventSlim s_unhold = new();

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        switch (a[0])
        {
            case "lw-attach":
                s_cluster = LockCluster.Attach(seg ?? throw new InvalidOperationException("worker is not attached"));
                _ = s_cluster.Locks.Length;
                reply = "ok";
                return true;
            case "lw-join":
                s_main = Cluster.Procs.Join();
                reply = $"ok {s_main.ProcNumber}";
                return true;
            case "lw-leave":
                s_main?.Dispose();
                s_main = null;
                reply = "ok";
                return true;
            case "lw-count":
                reply = $"ok {Count(Int(a[1]), Int(a[2]), Int(a[3]))}";
                return true;
            case "lw-hold":
                reply = $"ok {Hold(Int(a[1]), Enum.Parse<LWLockMode>(a[2], ignoreCase: true))}";
                return true;
            case "lw-release-stalling":
            {
                int stage = Int(a[1]);
                LWLock.s_wakeStallForTests = at =>
                {
                    if (at != stage)
                        return;
                    Volatile.Write(ref s_stalled, 1);
                    Thread.Sleep(Timeout.Infinite);
                };
                s_unhold.Set();
                reply = "ok";
                return true;
            }
            case "lw-stalled":
                reply = "ok " + Volatile.Read(ref s_stalled).ToString(CultureInfo.InvariantCulture);
                return true;
            case "lw-state":
                reply = "ok " + (Volatile.Read(ref s_holderState) switch { 1 => "waiting", 2 => "acquired", 3 => "done", 4 => "died " + s_holderDied, _ => "none" });
                return true;
            case "lw-spin-hold":
                SLock.Acquire(ref System.Runtime.CompilerServices.Unsafe.As<long, int>(ref Cluster.Counter(Int(a[1]))), "test spin-hold");
                reply = $"ok {Environment.ProcessId}";
                return true;
            case "lw-unhold":
                s_unhold.Set();
                if (s_holder is not null && !s_holder.Join(TimeSpan.FromSeconds(20)))
                    throw new TimeoutException("the holder thread did not finish");
                s_holder = null;
                reply = "ok";
                return true;
            default:
                return false;
        }
    }

    private static LockCluster Cluster => s_cluster ?? throw new InvalidOperationException("lw-attach first");

    private static long Count(int lockIndex, int threads, int iterations)
    {
        LockCluster c = Cluster;
        long mismatches = 0;
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        var all = new Thread[threads];
        using var start = new ManualResetEventSlim();
        for (int t = 0; t < threads; t++)
        {
            all[t] = new Thread(() =>
            {
                try
                {
                    using Participant me = c.Procs.Join();
                    LWLockArray locks = c.Locks;
                    ref long c0 = ref c.Counter(0);
                    ref long c1 = ref c.Counter(1);
                    start.Wait();
                    for (int k = 0; k < iterations; k++)
                    {
                        if ((k & 7) == 7)
                        {
                            locks[lockIndex].Acquire(me, LWLockMode.Shared);
                            if (c0 != c1)
                                Interlocked.Increment(ref mismatches);
                            locks[lockIndex].Release(me);
                        }
                        else
                        {
                            locks[lockIndex].Acquire(me, LWLockMode.Exclusive);
                            c0++;
                            c1++;
                            locks[lockIndex].Release(me);
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex);
                }
            }) { IsBackground = true, Name = $"lw-count {t}" };
            all[t].Start();
        }
        start.Set();
        foreach (Thread t in all)
            if (!t.Join(TimeSpan.FromSeconds(120)))
                throw new TimeoutException("a counting thread hung");
        if (!errors.IsEmpty)
            throw new AggregateException(errors);
        return mismatches;
    }

    private static int Hold(int lockIndex, LWLockMode mode)
    {
        if (s_holder is not null)
            throw new InvalidOperationException("a holder thread is already running");
        LockCluster c = Cluster;
        s_unhold.Reset();
        Volatile.Write(ref s_holderProcno, -1);
        Volatile.Write(ref s_holderState, 0);
        using var joined = new ManualResetEventSlim();
        Exception? failure = null;
        s_holder = new Thread(() =>
        {
            Participant me;
            try
            {
                me = c.Procs.Join();
                Volatile.Write(ref s_holderProcno, me.ProcNumber);
                Volatile.Write(ref s_holderState, 1);
            }
            catch (Exception ex)
            {
                failure = ex;
                return;
            }
            finally
            {
                joined.Set();
            }
            using (me)
            {
                try
                {
                    c.Locks[lockIndex].Acquire(me, mode);
                }
                catch (LockHolderDiedException ex)
                {
                    s_holderDied = $"{ex.DeadPid} {ex.LockName}";
                    Volatile.Write(ref s_holderState, 4);
                    return;
                }
                Volatile.Write(ref s_holderState, 2);
                s_unhold.Wait();
                c.Locks[lockIndex].Release(me);
            }
            Volatile.Write(ref s_holderState, 3);
        }) { IsBackground = true, Name = "lw-hold" };
        s_holder.Start();
        if (!joined.Wait(TimeSpan.FromSeconds(20)))
            throw new TimeoutException("the holder thread did not join");
        if (failure is not null)
            throw failure;
        return Volatile.Read(ref s_holderProcno);
    }

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);
}
