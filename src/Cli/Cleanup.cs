/*-------------------------------------------------------------------------
 * Cleanup.cs
 *   pgipc cleanup [--backend name] [--dry-run]: find and remove segments
 *   left by crashed runs, and the other OS objects their clusters made
 *   (Postmaster/ClusterLeftovers.cs). With --dry-run the same scan runs
 *   and lists every segment that would go, removing nothing.
 *
 * NOTES
 *   The command line is parsed before anything is scanned: an unknown
 *   option (--dryrun for --dry-run) is refused with exit code 2, so a typo
 *   can never turn a dry run into a real one.
 *-------------------------------------------------------------------------
 */
using System.CommandLine;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Shmem;

namespace PgIpc.Cli;

internal static class CleanupCommand
{
    public static Command Create()
    {
        Option<string?> backend = Program.BackendOption("Only this backend's segments (default: every backend this machine has).");
        Option<bool> dryRun = new("--dry-run") { Description = "List what would be removed; remove nothing." };
        var c = new Command("cleanup", "Remove the shared memory segments of clusters whose processes all died (creator dead, nobody attached), with the semaphores and dynamic segments they recorded. Live segments are kept.")
        {
            backend, dryRun,
        };
        c.SetAction(r => Cleanup.Run(r.GetValue(backend), r.GetValue(dryRun), r.InvocationConfiguration.Output));
        return c;
    }
}

internal static class Cleanup
{
    public static int Run(string? backend, bool dryRun, TextWriter w)
    {
        IEnumerable<IPgIpcPlatform> platforms = backend is null ? PgIpcPlatform.Available() : [Program.Platform(backend)];
        int stale = 0, inUse = 0;
        foreach (IPgIpcPlatform p in platforms)
        {
            foreach (StaleSegmentReport r in ClusterLeftovers.CleanupStale(p, dryRun))
            {
                switch (r.Verdict)
                {
                    case StaleVerdict.Stale:
                        stale++;
                        string what = r.Removed ? Term.Green("removed") : dryRun ? Term.Yellow("would remove") : "already gone";
                        w.WriteLine($"{r.Backend,-8} {r.Id,-28} stale: creator dead, nobody attached -> {what}");
                        break;
                    case StaleVerdict.InUse:
                        inUse++;
                        w.WriteLine($"{r.Backend,-8} {r.Id,-28} in use by pid {r.Pid} ({r.Attached} attached), kept");
                        break;
                    case StaleVerdict.NotPgIpc:
                        break;
                    case StaleVerdict.Unreadable:
                        w.WriteLine($"{r.Backend,-8} {r.Id,-28} not examined, kept: {r.Reason}");
                        break;
                    case StaleVerdict.UnknownLayout:
                        w.WriteLine($"{r.Backend,-8} {r.Id,-28} {Term.Red("unknown layout")}, kept: {r.Reason}");
                        break;
                }
            }
        }
        w.WriteLine($"{stale} stale segment(s) {(dryRun ? "found, nothing removed (dry run)" : "removed")}, {inUse} in use");
        return 0;
    }
}

/// <summary>Colour where a terminal is attached (standard output not redirected, NO_COLOR unset); plain text otherwise.</summary>
internal static class Term
{
    public static bool Colour { get; } = !Console.IsOutputRedirected && Environment.GetEnvironmentVariable("NO_COLOR") is null or "";

    public static string Green(string s) => Paint(s, "32");

    public static string Yellow(string s) => Paint(s, "33");

    public static string Red(string s) => Paint(s, "31");

    private static string Paint(string s, string code) => Colour ? $"\x1b[{code}m{s}\x1b[0m" : s;
}
