/*-------------------------------------------------------------------------
 * InspectCommand.cs
 *   pgipc inspect <handle> [--procs] [--allocations] [--buffers] [--locks]
 *   [--dsm] [--activity] [--stats] [--json]: the options and the view selection (Inspect.cs
 *   prints the text, InspectJson.cs builds the JSON).
 *
 * NOTES
 *   Without a view option the report is the whole summary, as before: the
 *   header, the allocations, the participants, the buffer pool's and the
 *   lock manager's summaries. With view options: the header and the views
 *   asked for, each in full (every row). --json writes the same selection
 *   as one JSON object (every view in full when none is named).
 *-------------------------------------------------------------------------
 */
using System.CommandLine;
using System.Text.Json;
using PgIpc.Shmem;

namespace PgIpc.Cli;

/// <summary>The views `pgipc inspect` was asked for (none: the whole summary).</summary>
internal sealed record InspectViews(bool Procs, bool Allocations, bool Buffers, bool Locks, bool Dsm, bool Activity = false, bool Stats = false)
{
    public bool Any => Procs || Allocations || Buffers || Locks || Dsm || Activity || Stats;

    /// <summary>Every view (the JSON of an inspect without view options).</summary>
    public static InspectViews All { get; } = new(true, true, true, true, true, true, true);
}

internal static class InspectCommand
{
    public static Command Create()
    {
        Argument<string> handle = new("handle") { Description = "The segment's handle (pgipc1;backend;size;cookie;id), as ShmemHandle.ToString() writes it." };
        handle.Validators.Add(r =>
        {
            if (!ShmemHandle.TryParse(r.GetValueOrDefault<string>(), out _, out string? error))
                r.AddError(error!);
        });
        Option<bool> procs = new("--procs") { Description = "Participants, as pg_stat_activity: pid, kind, role, wait event by name, held LWLocks." };
        Option<bool> allocations = new("--allocations") { Description = "The segment's allocations (pg_shmem_allocations)." };
        Option<bool> buffers = new("--buffers") { Description = "The shared buffer pool: summary and one row per buffer holding a page (pg_buffercache)." };
        Option<bool> locks = new("--locks") { Description = "The heavyweight lock manager: counts and pg_locks' rows." };
        Option<bool> dsm = new("--dsm") { Description = "Dynamic shared memory segments of the cluster's control table." };
        Option<bool> activity = new("--activity") { Description = "What each participant reports (pg_stat_activity): state, since when, detail, backend type, wait event." };
        Option<bool> stats = new("--stats") { Description = "The background writer's and checkpointer's counters (pg_stat_bgwriter, pg_stat_checkpointer)." };
        Option<bool> json = new("--json") { Description = "Write the report as JSON (every view when none is named)." };
        var c = new Command("inspect", "Show a live segment's header and what is in it, read without locks and without joining the cluster.")
        {
            handle, procs, allocations, buffers, locks, dsm, activity, stats, json,
        };
        c.SetAction(r =>
        {
            var views = new InspectViews(r.GetValue(procs), r.GetValue(allocations), r.GetValue(buffers), r.GetValue(locks), r.GetValue(dsm),
                r.GetValue(activity), r.GetValue(stats));
            TextWriter w = r.InvocationConfiguration.Output;
            using ShmemSegment seg = ShmemSegment.Attach(r.GetValue(handle)!);
            if (r.GetValue(json))
            {
                InspectReport report = InspectJson.Build(seg, views.Any ? views : InspectViews.All);
                w.WriteLine(JsonSerializer.Serialize(report, InspectJsonContext.Default.InspectReport));
            }
            else if (views.Any)
                Inspect.PrintViews(seg, w, views);
            else
                Inspect.Print(seg, w);
            return 0;
        });
        return c;
    }
}
