/*-------------------------------------------------------------------------
 * CoreLatchWorkerCommands.cs
 *   The worker process's commands for the latch, ProcSignal, barrier,
 *   PMSignal and condition-variable tests (Core level, over LockCluster).
 *
 * NOTES
 *   cl-create <key>              -> ok <handle>   (this worker creates the cluster: it is the supervisor)
 *   cl-attach                    -> ok            (after "attach <handle>")
 *   cl-join                      -> ok <procno>   (the command thread joins)
 *   cl-pingpong <n> <peer>       -> ok            (n times: wait for the latch, reset it, set the peer's)
 *   cl-wait-death                -> ok <procno>   (a thread joins and waits for SupervisorDeath, up to 60 s)
 *   cl-result                    -> ok <what the waiting thread saw, or "pending">
 *   cl-signal <procno> <reason> <count> -> ok <delivered> (counter 2 incremented before each send)
 *   cl-serve                     -> ok <procno>   (a thread joins and runs ProcessInterrupts on every latch
 *                                                 wake-up; barrier kind 0 increments counter 3)
 *   cl-cv-wait <cv> <threads>    -> ok            (threads join and sleep on the CV until counter 4 is
 *                                                 non-zero, showing CvWaitEvent; each then increments counter 5)
 *   cl-pmsignal <reason>         -> ok <sent>
 *   cl-stop                      -> ok            (stops the background threads)
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Signals;
using PgIpc.Sync;
using PgIpc.Tests.Sync;

namespace PgIpc.Tests.Latch;

internal static class CoreLatchWorkerCommands
{
    /// <summary>The wait event cl-cv-wait's threads show while they sleep on the condition variable.</summary>
    public static readonly WaitEventId CvWaitEvent = new(0x7E57_C001);

    private static LockCluster? s_cluster;
    private static Participant? s_main;
    private static readonly List<Thread> s_threads = [];
    private static volatile bool s_stop;
    private static string s_result = "pending";

    /// <summary>What the last background thread reported (cl-result; the ci-* commands write it too).</summary>
    internal static string Result { get => Volatile.Read(ref s_result); set => Volatile.Write(ref s_result, value); }

    /// <summary>True once cl-stop was sent: background threads leave their loops.</summary>
    internal static bool Stopping => s_stop;

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        switch (a[0])
        {
            case "cl-create":
            {
                string backend = BackendArg();
                s_cluster = LockCluster.Create(PgIpcPlatform.Get(backend), key: a[1]);
                reply = $"ok {s_cluster.Segment.Handle}";
                return true;
            }
            case "cl-attach":
                s_cluster = LockCluster.Attach(seg ?? throw new InvalidOperationException("worker is not attached"));
                reply = "ok";
                return true;
            case "cl-join":
                s_main ??= Cluster.Procs.Join();
                reply = $"ok {s_main.ProcNumber}";
                return true;
            case "cl-pingpong":
            {
                Participant me = s_main ?? throw new InvalidOperationException("cl-join first");
                int n = Int(a[1]), peer = Int(a[2]);
                for (int i = 0; i < n; i++)
                {
                    if ((me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 20_000) & WaitEvents.LatchSet) == 0)
                        throw new TimeoutException($"round {i}: the latch was never set (a lost wake-up)");
                    me.ResetLatch();
                    PgIpc.Latch.Latches.SetLatch(Cluster.Procs, peer);
                }
                reply = "ok";
                return true;
            }
            case "cl-wait-death":
                reply = $"ok {StartThread(me =>
                {
                    WaitEvents got = me.WaitLatch(WaitEvents.SupervisorDeath | WaitEvents.Timeout, 60_000);
                    Volatile.Write(ref s_result, got.ToString());
                })}";
                return true;
            case "cl-result":
                reply = "ok " + Volatile.Read(ref s_result);
                return true;
            case "cl-signal":
            {
                ProcArray procs = Cluster.Procs;
                int procno = Int(a[1]), count = Int(a[3]);
                var reason = (ProcSignalReason)Int(a[2]);
                int delivered = 0;
                for (int i = 0; i < count; i++)
                {
                    Interlocked.Increment(ref Cluster.Counter(2));
                    if (ProcSignal.SendProcSignal(procs, procno, reason))
                        delivered++;
                }
                reply = $"ok {delivered}";
                return true;
            }
            case "cl-serve":
                reply = $"ok {StartThread(me =>
                {
                    LockCluster c = Cluster;
                    me.SetBarrierHandler(0, (_, _) => Interlocked.Increment(ref c.Counter(3)));
                    while (!s_stop)
                    {
                        me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 1000);
                        me.ResetLatch();
                        me.ProcessInterrupts();
                    }
                })}";
                return true;
            case "cl-cv-wait":
            {
                int cv = Int(a[1]), threads = Int(a[2]);
                for (int t = 0; t < threads; t++)
                {
                    StartThread(me =>
                    {
                        LockCluster c = Cluster;
                        ConditionVariable.PrepareToSleep(me, ref c.Cv(cv));
                        while (Volatile.Read(ref c.Counter(4)) == 0 && !s_stop)
                            ConditionVariable.Sleep(me, ref c.Cv(cv), 30_000, CvWaitEvent);
                        ConditionVariable.CancelSleep(me);
                        Interlocked.Increment(ref c.Counter(5));
                    });
                }
                reply = "ok";
                return true;
            }
            case "cl-pmsignal":
                reply = $"ok {PMSignal.SendPostmasterSignal(Cluster.Procs, (PMSignalReason)Int(a[1]))}";
                return true;
            case "cl-stop":
                s_stop = true;
                foreach (Thread t in s_threads)
                    t.Join(TimeSpan.FromSeconds(20));
                s_threads.Clear();
                reply = "ok";
                return true;
            default:
                return false;
        }
    }

    internal static LockCluster Cluster => s_cluster ?? throw new InvalidOperationException("cl-create or cl-attach first");

    /// <summary>Starts a background thread that joins and runs <paramref name="body"/>; returns its procno once joined.</summary>
    internal static int StartThread(Action<Participant> body)
    {
        LockCluster c = Cluster;
        int procno = -1;
        Exception? failure = null;
        using var joined = new ManualResetEventSlim();
        var t = new Thread(() =>
        {
            Participant me;
            try
            {
                me = c.Procs.Join();
                procno = me.ProcNumber;
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
                    body(me);
                }
                catch (Exception ex)
                {
                    Volatile.Write(ref s_result, "error " + ex.GetType().Name + ": " + ex.Message);
                }
            }
        }) { IsBackground = true, Name = "cl worker thread" };
        s_threads.Add(t);
        t.Start();
        if (!joined.Wait(TimeSpan.FromSeconds(20)))
            throw new TimeoutException("the thread did not join");
        if (failure is not null)
            throw failure;
        return procno;
    }

    private static string BackendArg()
    {
        string[] args = Environment.GetCommandLineArgs();
        for (int i = 0; i + 1 < args.Length; i++)
            if (args[i] == "--backend")
                return args[i + 1];
        return PgIpcPlatform.Current.Name;
    }

    private static int Int(string s) => int.Parse(s, CultureInfo.InvariantCulture);
}
