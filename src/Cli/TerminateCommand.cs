/*-------------------------------------------------------------------------
 * TerminateCommand.cs
 *   pgipc terminate <handle> <pid>: asks the participants of process <pid>
 *   to exit in order (pg_terminate_backend): LWLocks released, slots given
 *   back, exit code 81, not a crash for the supervisor. The arguments and
 *   the exit codes are ParticipantSignal.cs's.
 *-------------------------------------------------------------------------
 */
using System.CommandLine;

namespace PgIpc.Cli;

internal static class TerminateCommand
{
    public static Command Create() => ParticipantSignal.Create("terminate",
        "Ask a participant's process to exit in order (pg_terminate_backend): its LWLocks released, its slot given back, exit code 81, which the supervisor does not treat as a crash.",
        "terminate", static (procs, pid) => procs.TerminateParticipant(pid));
}
