/*-------------------------------------------------------------------------
 * ProcArray.Interrupts.cs
 *   Cancelling or terminating one participant from any process
 *   (pg_cancel_backend / pg_terminate_backend).
 *
 * NOTES
 *   The request is a ProcSignal reason (Cancel or Terminate) sent to every
 *   slot the process owns, with the asker's pid recorded in the slot first
 *   (PgProc.InterruptRequesterPid), so that the error the target raises can
 *   name who asked. The target acts on it at its next interrupt check
 *   (Participant.Interrupts.cs): a latch wait, a condition-variable sleep
 *   or a shm_mq wait ends at once; an LWLock sleep does not (see there).
 *
 *   Auxiliary slots (checkpointer, background writer, WAL writer) are not
 *   signalled, as pg_signal_backend refuses processes that are not backends:
 *   they have their own stop protocol. A pid that owns no backend or
 *   background-worker slot is "not found" (false), as is one whose process
 *   is gone.
 *
 *   Ordering: the requester pid is a volatile store before SendProcSignal's
 *   Interlocked.Or on ProcSignalFlags (a full barrier); the target reads it
 *   after the Exchange / And that took the reason.
 *-------------------------------------------------------------------------
 */
using PgIpc.Signals;

namespace PgIpc.Proc;

public sealed unsafe partial class ProcArray
{
    /// <summary>
    /// Asks every participant of process <paramref name="pid"/> to cancel what it waits for (pg_cancel_backend): its
    /// next interrupt check (a latch wait, a condition-variable sleep, a shm_mq send or receive,
    /// <see cref="Participant.CheckForInterrupts"/>) throws <see cref="ParticipantCanceledException"/> naming this
    /// process, and the participant stays usable. Returns false when the pid owns no backend or background-worker
    /// slot (auxiliary processes are not signalled) or its process is gone.
    /// </summary>
    public bool CancelParticipant(int pid) => SignalParticipants(pid, ProcSignalReason.Cancel);

    /// <summary>
    /// Asks every participant of process <paramref name="pid"/> to exit in order (pg_terminate_backend): at its next
    /// interrupt check it releases its LWLocks, gives its slot back and the process exits with
    /// <see cref="ParticipantExitCodes.Terminated"/>, which a supervisor treats as a normal exit (no crash restart).
    /// In the supervisor's own process the participant is disposed and <see cref="ParticipantTerminatedException"/>
    /// thrown instead (the supervisor never exits for it). Returns false as <see cref="CancelParticipant"/> does.
    /// </summary>
    public bool TerminateParticipant(int pid) => SignalParticipants(pid, ProcSignalReason.Terminate);

    private bool SignalParticipants(int pid, ProcSignalReason reason)
    {
        if (pid <= 0)
            return false;
        ThrowIfClosed();
        int requester = Segment.Platform.Processes.CurrentProcessId;
        bool any = false;
        for (int i = 0; i < MaxProcs; i++)
        {
            PgProc* p = Procs + i;
            // Acquire load; pairs with the release store of Pid when the slot is handed out.
            if (Volatile.Read(ref p->Pid) != pid || p->Kind == (int)ProcKind.Auxiliary)
                continue;
            // Before the reason's Or (SendProcSignal's full barrier); read by the target after it takes the reason.
            Volatile.Write(ref p->InterruptRequesterPid, requester);
            if (ProcSignal.SendProcSignal(this, i, reason, expectedPid: pid))
                any = true;
        }
        return any;
    }
}
