/*-------------------------------------------------------------------------
 * CancelCommand.cs
 *   pgipc cancel <handle> <pid>: asks the participants of process <pid> to
 *   cancel what they wait for (pg_cancel_backend). The arguments and the
 *   exit codes are ParticipantSignal.cs's.
 *-------------------------------------------------------------------------
 */
using System.CommandLine;

namespace PgIpc.Cli;

internal static class CancelCommand
{
    public static Command Create() => ParticipantSignal.Create("cancel",
        "Ask a participant's process to cancel what it waits for (pg_cancel_backend): its wait ends with ParticipantCanceledException and it goes on.",
        "cancel its wait", static (procs, pid) => procs.CancelParticipant(pid));
}
