/*-------------------------------------------------------------------------
 * Cleanup.cs
 *   pgipc cleanup: find and remove segments left by crashed runs, and the
 *   other OS objects their clusters made (Postmaster/ClusterLeftovers.cs).
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Shmem;

namespace PgIpc.Cli;

internal static class Cleanup
{
    public static int Run(string[] args)
    {
        bool dryRun = args.Contains("--dry-run");
        IEnumerable<IPgIpcPlatform> platforms = Program.Option(args, "--backend") is null
            ? PgIpcPlatform.Available()
            : [Program.Platform(args)];
        int stale = 0, inUse = 0;
        foreach (IPgIpcPlatform p in platforms)
        {
            foreach (StaleSegmentReport r in ClusterLeftovers.CleanupStale(p, dryRun))
            {
                switch (r.Verdict)
                {
                    case StaleVerdict.Stale:
                        stale++;
                        Console.WriteLine($"{r.Backend,-8} {r.Id,-28} stale: creator dead, nobody attached -> {(r.Removed ? "removed" : dryRun ? "would remove" : "already gone")}");
                        break;
                    case StaleVerdict.InUse:
                        inUse++;
                        Console.WriteLine($"{r.Backend,-8} {r.Id,-28} in use by pid {r.Pid} ({r.Attached} attached), kept");
                        break;
                    case StaleVerdict.NotPgIpc:
                        break;
                    case StaleVerdict.Unreadable:
                        Console.WriteLine($"{r.Backend,-8} {r.Id,-28} not examined, kept: {r.Reason}");
                        break;
                }
            }
        }
        Console.WriteLine($"{stale} stale segment(s) {(dryRun ? "found" : "removed")}, {inUse} in use");
        return 0;
    }
}
