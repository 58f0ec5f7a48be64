/*-------------------------------------------------------------------------
 * SinvalWorkerCommands.cs
 *   The worker process's commands for the shared invalidation queue tests.
 *
 * NOTES
 *   Commands (one line each, see TestWorker for the protocol); they all run
 *   on the worker's command thread, which is the worker's one participant:
 *     si-attach                        -> ok            (ProcArray.Attach + SinvalQueue.Init, found)
 *     si-join [sendonly]               -> ok <procno>   (join and RegisterBackend)
 *     si-send <sender> <start> <count> -> ok            (one SendMessages call with messages
 *                                                       start .. start+count-1 of <sender>)
 *     si-receive <sender>              -> ok <count> <resets> <first> <last> ok|bad
 *                                                      (ReceiveAll; counts <sender>'s messages, checks
 *                                                       they are intact and consecutive; -1 when none)
 *     si-pending                       -> ok true|false (CatchupPending)
 *     si-leave                         -> ok            (UnregisterBackend and leave)
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sinval;

namespace PgIpc.Tests.Sinval;

internal static class SinvalWorkerCommands
{
    private static SinvalCluster? s_cluster;
    private static Participant? s_me;

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        switch (a[0])
        {
            case "si-attach":
                s_cluster = SinvalCluster.Attach(seg ?? throw new InvalidOperationException("worker is not attached"));
                reply = "ok";
                return true;
            case "si-join":
                s_me = Cluster.Procs.Join();
                Cluster.Queue.RegisterBackend(s_me, sendOnly: a.Length > 1 && a[1] == "sendonly");
                reply = $"ok {s_me.ProcNumber}";
                return true;
            case "si-send":
            {
                uint sender = UInt(a[1]), start = UInt(a[2]), count = UInt(a[3]);
                var msgs = new SharedInvalidationMessage[count];
                for (uint i = 0; i < count; i++)
                    msgs[i] = SinvalCluster.Message(sender, start + i);
                Cluster.Queue.SendMessages(Me, msgs);
                reply = "ok";
                return true;
            }
            case "si-receive":
                reply = "ok " + Receive(UInt(a[1]));
                return true;
            case "si-pending":
                reply = Cluster.Queue.CatchupPending(Me) ? "ok true" : "ok false";
                return true;
            case "si-leave":
                Cluster.Queue.UnregisterBackend(Me);
                s_me!.Dispose();
                s_me = null;
                reply = "ok";
                return true;
            default:
                return false;
        }
    }

    private static string Receive(uint sender)
    {
        long count = 0, resets = 0, first = -1, last = -1;
        bool good = true;
        Cluster.Queue.ReceiveAll(Me, (in SharedInvalidationMessage m) =>
        {
            if (!SinvalCluster.IsIntact(m))
                good = false;
            if (m.DatabaseId != sender)
                return;
            if (last >= 0 && m.ObjectId != last + 1)
                good = false;
            if (first < 0)
                first = m.ObjectId;
            last = m.ObjectId;
            count++;
        }, () => resets++);
        return string.Create(CultureInfo.InvariantCulture, $"{count} {resets} {first} {last} {(good ? "ok" : "bad")}");
    }

    private static SinvalCluster Cluster => s_cluster ?? throw new InvalidOperationException("si-attach first");

    private static Participant Me => s_me ?? throw new InvalidOperationException("si-join first");

    private static uint UInt(string s) => uint.Parse(s, CultureInfo.InvariantCulture);
}
