/*-------------------------------------------------------------------------
 * ParticipantSignal.cs
 *   What `pgipc cancel` and `pgipc terminate` share (CancelCommand.cs,
 *   TerminateCommand.cs): the <handle> <pid> arguments, their checks, and
 *   the request sent through the cluster's slot array
 *   (ProcArray.CancelParticipant / TerminateParticipant).
 *
 * NOTES
 *   A handle that does not parse or a pid that is not a positive whole
 *   number is a refused command line (exit code 2, nothing done). A pid that
 *   owns no backend or background-worker slot of the cluster is a failed
 *   command (exit code 1, a message on stderr), as pg_cancel_backend warns
 *   and returns false; a request sent is exit code 0.
 *-------------------------------------------------------------------------
 */
using System.CommandLine;
using System.Globalization;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Cli;

internal static class ParticipantSignal
{
    /// <summary>A command "<paramref name="name"/> &lt;handle&gt; &lt;pid&gt;" that sends the request <paramref name="send"/> makes.</summary>
    public static Command Create(string name, string description, string verb, Func<ProcArray, int, bool> send)
    {
        Argument<string> handle = new("handle") { Description = "The cluster's segment handle (pgipc1;backend;size;cookie;id), as ShmemHandle.ToString() writes it." };
        handle.Validators.Add(r =>
        {
            if (!ShmemHandle.TryParse(r.GetValueOrDefault<string>(), out _, out string? error))
                r.AddError(error!);
        });
        Argument<int> pid = new("pid")
        {
            Description = "The process id of the participant's process (as `pgipc inspect <handle> --procs` lists them).",
            // A parser, not a validator: a validator's read of a value that did not convert throws instead of refusing.
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) || v <= 0)
                    r.AddError($"pid must be a positive process id (got '{text}')");
                return v;
            },
        };
        var c = new Command(name, description) { handle, pid };
        c.SetAction(r =>
        {
            int target = r.GetValue(pid);
            using Cluster cluster = Cluster.Attach(r.GetValue(handle)!);
            if (!send(cluster.Procs, target))
            {
                r.InvocationConfiguration.Error.WriteLine($"pgipc: pid {target} is not a participant of this cluster (no backend or background-worker slot of it, or its process is gone)");
                return 1;
            }
            r.InvocationConfiguration.Output.WriteLine($"asked pid {target} to {verb}");
            return 0;
        });
        return c;
    }
}
