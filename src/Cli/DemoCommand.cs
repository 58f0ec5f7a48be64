/*-------------------------------------------------------------------------
 * DemoCommand.cs
 *   pgipc demo [--crash] [--no-wal] and pgipc demo --parallel: the options, their
 *   checks, and the options records handed to Demo.Run / ParallelDemo.Run.
 *
 * NOTES
 *   Every value is checked while parsing (a number that is not one, out of
 *   range, an option that does not apply to the variant asked for): a bad
 *   command line is refused with exit code 2 before any cluster exists.
 *-------------------------------------------------------------------------
 */
using System.CommandLine;
using PgIpc.Platform;

namespace PgIpc.Cli;

/// <summary>What `pgipc demo` runs with (all checked by the parser).</summary>
internal sealed record DemoOptions(IPgIpcPlatform Platform, int Workers, double Seconds, int Buffers, int Pages, bool Crash, bool Wal = true);

/// <summary>What `pgipc demo --parallel` runs with (all checked by the parser).</summary>
internal sealed record ParallelDemoOptions(IPgIpcPlatform Platform, int Workers, long Rows);

internal static class DemoCommand
{
    public static Command Create()
    {
        Option<string?> backend = Program.BackendOption("The backend to run on (default: this machine's; see 'pgipc backends').");
        // 0: the variant's own default (3, or 2 with --parallel); 1..16 typed, 1..8 with --parallel (checked below).
        Option<int> workers = Program.Number("--workers", "Worker processes: 1..16 (default 3); with --parallel 1..8 (default 2).", 1, 16, 0);
        Option<double> seconds = Program.Number("--seconds", "How long the workers run, 1..600 (default 6).", 1.0, 600.0, 6.0);
        Option<int> buffers = Program.Number("--buffers", "Shared buffers, 16..1048576 (default 64).", 16, 1 << 20, 64);
        Option<int> pages = Program.Number("--pages", "Pages of the relation the workers update, 1..16777216 (default 2000).", 1, 1 << 24, 2000);
        Option<bool> crash = new("--crash") { Description = "Kill one worker midway (SIGKILL / TerminateProcess) and show the crash restart." };
        Option<bool> noWal = new("--no-wal") { Description = "Run without the write-ahead log (increments not logged; a crash loses those only in shared memory): the cost of durability, by comparison." };
        Option<bool> parallel = new("--parallel") { Description = "Instead: a parallel sum through dynamic background workers and shm_mq tuple queues." };
        Option<long> rows = Program.Number("--rows", "With --parallel: rows to sum, 1..67108864 (default 1000000).", 1L, 64L * 1024 * 1024, 1_000_000L);

        var c = new Command("demo", "Run a live cluster: a supervisor, a checkpointer, a background writer and worker processes updating pages through the shared buffer pool; then check the data on disk and that nothing is left behind.")
        {
            backend, workers, seconds, buffers, pages, crash, noWal, parallel, rows,
        };
        c.Validators.Add(r =>
        {
            bool isParallel = r.GetValue(parallel);
            int n;
            try
            {
                n = r.GetValue(workers);
            }
            catch (InvalidOperationException)
            {
                return; // not a number: the option's own error says so
            }
            int max = isParallel ? 8 : 16;
            if (n > max)
                r.AddError($"--workers must be 1..{max}{(isParallel ? " with --parallel" : "")} (got {n})");
            Option[] onlySerial = [seconds, buffers, pages, crash, noWal];
            foreach (Option o in isParallel ? onlySerial : [rows])
                if (r.GetResult(o) is { Implicit: false })
                    r.AddError(isParallel ? $"{o.Name} does not apply to demo --parallel" : $"{o.Name} applies only to demo --parallel");
        });
        c.SetAction(r =>
        {
            IPgIpcPlatform platform = Program.Platform(r.GetValue(backend));
            if (r.GetValue(parallel))
                return ParallelDemo.Run(new ParallelDemoOptions(platform, r.GetValue(workers) is > 0 and var pw ? pw : 2, r.GetValue(rows)));
            return Demo.Run(new DemoOptions(platform, r.GetValue(workers) is > 0 and var sw ? sw : 3, r.GetValue(seconds), r.GetValue(buffers), r.GetValue(pages), r.GetValue(crash), !r.GetValue(noWal)));
        });
        return c;
    }
}
