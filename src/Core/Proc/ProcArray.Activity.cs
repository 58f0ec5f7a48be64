/*-------------------------------------------------------------------------
 * ProcArray.Activity.cs
 *   pg_log_backend_memory_contexts: asking the participants of a process
 *   to log their memory-context trees.
 *
 * NOTES
 *   The request is a ProcSignal (PROCSIG_LOG_MEMORY_CONTEXT): the reason's
 *   bit in each target slot, then the process's interrupt. Each target logs
 *   at its next ProcessInterrupts through its own logger
 *   (Participant.Activity.cs); the caller learns only how many slots were
 *   signalled, as the SQL function returns only whether the signal went.
 *   A process may host several participants (threads): every slot owned by
 *   the pid is asked.
 *
 *   Mirrors pg_log_backend_memory_contexts in
 *   src/backend/utils/adt/mcxtfuncs.c.
 *-------------------------------------------------------------------------
 */
using PgIpc.Signals;

namespace PgIpc.Proc;

public sealed unsafe partial class ProcArray
{
    /// <summary>
    /// Asks every participant of process <paramref name="pid"/> to log its memory-context tree at its next
    /// <see cref="Participant.ProcessInterrupts"/> (pg_log_backend_memory_contexts), through its
    /// <see cref="Participant.Logger"/>. Returns how many participants were signalled (0: no participant of that pid).
    /// Any process attached to the cluster may call it; it allocates nothing and does not wait.
    /// </summary>
    public int RequestMemoryContextLog(int pid)
    {
        ThrowIfClosed();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(pid);
        int n = 0;
        for (int i = 0; i < MaxProcs; i++)
            if (Volatile.Read(ref _procs[i].Pid) == pid && ProcSignal.SendProcSignal(this, i, ProcSignalReason.LogMemoryContext, pid))
                n++;
        return n;
    }
}
