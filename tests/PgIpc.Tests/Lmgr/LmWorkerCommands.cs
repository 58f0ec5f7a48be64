/*-------------------------------------------------------------------------
 * LmWorkerCommands.cs
 *   The worker process's commands for the lock manager tests. The worker
 *   has one participant, on a thread of its own (LmParticipant).
 *
 * NOTES
 *   Commands (one line each, see TestWorker for the protocol):
 *     lm-attach                     -> ok <procno> <pid>  (attach the cluster, join a participant)
 *     lm <op...>                    -> ok <result>        (run op on the participant, wait for it)
 *     lm-async <op...>              -> ok                 (start op; collect it with lm-result)
 *     lm-result <ms>                -> ok done <result> | ok pending | error <type>: <message>
 *     lm-leave                      -> ok                 (the participant leaves: its locks go)
 *   Ops: acquire <tag> <mode> [session] [nowait] -> granted | alreadyheld | notavailable
 *        release <tag> <mode> [session]; releaseall [session] -> <count>
 *        adv-lock <key> [shared]; adv-try <key> [shared] -> true|false; adv-unlock <key> [shared] -> true|false
 *        timeouts <deadlockMs> <lockMs>
 *   Tags as LmCluster.Tag parses them; modes by name (AccessShare ... AccessExclusive) or number.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using PgIpc.Lmgr;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Lmgr;

internal static class LmWorkerCommands
{
    private static LmCluster? s_cluster;
    private static LmParticipant? s_part;
    private static Task<string>? s_pending;

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        switch (a[0])
        {
            case "lm-attach":
                s_cluster = LmCluster.Attach(seg ?? throw new InvalidOperationException("worker is not attached"));
                s_part = new LmParticipant(s_cluster.Procs, "lm worker participant");
                reply = $"ok {s_part.ProcNumber} {Environment.ProcessId}";
                return true;
            case "lm":
                reply = "ok " + Part.Run(me => Op(me, a[1..]));
                return true;
            case "lm-async":
                string[] op = a[1..];
                s_pending = Part.Start(me => Op(me, op));
                reply = "ok";
                return true;
            case "lm-result":
            {
                Task<string> t = s_pending ?? throw new InvalidOperationException("no async op");
                if (!((IAsyncResult)t).AsyncWaitHandle.WaitOne(int.Parse(a[1], CultureInfo.InvariantCulture)))
                {
                    reply = "ok pending";
                    return true;
                }
                s_pending = null;
                reply = "ok done " + t.GetAwaiter().GetResult(); // an exception becomes the error reply
                return true;
            }
            case "lm-leave":
                s_part?.Dispose();
                s_part = null;
                reply = "ok";
                return true;
            default:
                return false;
        }
    }

    /// <summary>The option that makes the test executable a supervised lock-holding child (see <see cref="TryRunChild"/>).</summary>
    public const string RunChildOption = "--run-lm-child";

    /// <summary>The tag the "hold" child takes AccessExclusive (and the advisory key it takes).</summary>
    public static readonly LockTag HeldByChild = LockTag.Object(1, 7, 500);
    public const long ChildAdvisoryKey = 4242;

    /// <summary>
    /// A supervised child (started by the supervisor with <see cref="RunChildOption"/>): attaches, joins, takes
    /// <see cref="HeldByChild"/> AccessExclusive and an advisory lock, then sleeps until shut down (60 s at most).
    /// Returns its exit code, or -1 when <paramref name="args"/> is not for it.
    /// </summary>
    public static int TryRunChild(string[] args)
    {
        int i = Array.IndexOf(args, RunChildOption);
        if (i < 0)
            return -1;
        using Cluster cluster = Cluster.Attach();
        using Participant me = cluster.JoinAsChild();
        LockManager lm = cluster.Get<LockManager>();
        lm.Acquire(me, HeldByChild, LockMode.AccessExclusive);
        lm.AdvisoryLock(me, ChildAdvisoryKey);
        long deadline = Environment.TickCount64 + 60_000;
        while (!cluster.ShutdownRequested && Environment.TickCount64 < deadline)
        {
            PgIpc.Platform.WaitEvents got = me.WaitLatch(PgIpc.Platform.WaitEvents.LatchSet | PgIpc.Platform.WaitEvents.SupervisorDeath | PgIpc.Platform.WaitEvents.Timeout, 200);
            if ((got & PgIpc.Platform.WaitEvents.SupervisorDeath) != 0)
                return 1;
            me.ResetLatch();
        }
        return 0;
    }

    private static LmParticipant Part => s_part ?? throw new InvalidOperationException("lm-attach first");

    private static LockManager Lm => s_cluster!.Locks;

    public static LockMode Mode(string s)
        => int.TryParse(s, out int n) ? (LockMode)n : Enum.Parse<LockMode>(s, ignoreCase: true);

    private static string Op(Participant me, string[] a)
    {
        bool Has(string w) => Array.IndexOf(a, w) > 0;
        LockScope scope = Has("session") ? LockScope.Session : LockScope.Transaction;
        switch (a[0])
        {
            case "acquire":
                return Lm.Acquire(me, LmCluster.Tag(a[1]), Mode(a[2]), scope, Has("nowait")).ToString().ToLowerInvariant();
            case "release":
                Lm.Release(me, LmCluster.Tag(a[1]), Mode(a[2]), scope);
                return "released";
            case "releaseall":
                return Lm.ReleaseAll(me, scope).ToString(CultureInfo.InvariantCulture);
            case "adv-lock":
                Lm.AdvisoryLock(me, long.Parse(a[1], CultureInfo.InvariantCulture), exclusive: !Has("shared"));
                return "locked";
            case "adv-try":
                return Lm.TryAdvisoryLock(me, long.Parse(a[1], CultureInfo.InvariantCulture), exclusive: !Has("shared")) ? "true" : "false";
            case "adv-unlock":
                return Lm.AdvisoryUnlock(me, long.Parse(a[1], CultureInfo.InvariantCulture), exclusive: !Has("shared")) ? "true" : "false";
            case "timeouts":
                Lm.DeadlockTimeoutMs = int.Parse(a[1], CultureInfo.InvariantCulture);
                Lm.LockTimeoutMs = int.Parse(a[2], CultureInfo.InvariantCulture);
                return "set";
            default:
                throw new ArgumentException($"unknown lm op \"{a[0]}\"");
        }
    }
}
