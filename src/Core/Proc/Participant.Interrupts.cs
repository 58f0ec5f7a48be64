/*-------------------------------------------------------------------------
 * Participant.Interrupts.cs
 *   What a participant does when it is asked to cancel or to terminate
 *   (QueryCancelPending / ProcDiePending, serviced by ProcessInterrupts in
 *   postgres.c), and when the supervisor dies under a WaitLatch that asked
 *   for WL_EXIT_ON_PM_DEATH.
 *
 * NOTES
 *   Where it is seen. The Cancel and Terminate reasons are bits of the
 *   slot's ProcSignalFlags like any other (ProcArray.Interrupts.cs sends
 *   them); the sender's interrupt sets the target's latch. They are acted
 *   on at an interrupt check: CheckForInterrupts / ProcessInterrupts (with
 *   every other reason), and inside every WaitLatch, before it sleeps and
 *   after it wakes (only these two reasons there: one load when none is
 *   pending). So a latch wait, a condition-variable sleep (which also runs
 *   ProcessInterrupts) and a shm_mq send or receive end at once.
 *
 *   LWLock sleeps are not interrupted: the sleep is on the slot's
 *   semaphore, which a signal does not post, and a waiter taken off the
 *   queue by anything but the releaser would break the queue protocol. As
 *   PostgreSQL holds interrupts in LWLockAcquire, the request waits for the
 *   next interrupt check after the lock is granted; an LWLock is held for
 *   short sections, so that check comes soon. Heavyweight lock waits
 *   (PgIpc.Lmgr) are not interrupted either.
 *
 *   Cancel: ParticipantCanceledException (an OperationCanceledException)
 *   naming the slot and the pid that asked. Nothing is released: the
 *   caller's own using / finally blocks undo what it holds, and the
 *   participant stays usable. A condition-variable sleep leaves the
 *   variable's wait list before the error goes up.
 *
 *   Terminate: an orderly exit, what proc_exit does after a FATAL: the
 *   prepared condition-variable sleep is left, every LWLock released, the
 *   participant disposed (its heavyweight locks released by the leave hooks,
 *   its slot given back), then Environment.Exit(ParticipantExitCodes.
 *   Terminated), which a supervisor treats as a normal exit, not a crash.
 *   Other participants of the same process leave through the process-exit
 *   hook (one holding LWLocks then makes the exit a crash, as it should).
 *   In the supervisor's own process the process does not exit: the
 *   participant is disposed and ParticipantTerminatedException thrown.
 *
 *   Supervisor death with ExitOnSupervisorDeath: the same orderly exit,
 *   with ParticipantExitCodes.SupervisorDied.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using PgIpc.Signals;

namespace PgIpc.Proc;

/// <summary>Exit codes of a participant's process that the library itself ends.</summary>
public static class ParticipantExitCodes
{
    /// <summary>
    /// The process exited because a participant of it was terminated on request
    /// (<see cref="ProcArray.TerminateParticipant"/>) after releasing its LWLocks and giving its slot back. A supervisor
    /// treats it as a normal exit: a permanent worker is started again after its restart interval, others are
    /// unregistered; never a crash restart.
    /// </summary>
    public const int Terminated = 81;

    /// <summary>
    /// The process exited because the supervisor died while a participant waited with
    /// <see cref="Platform.WaitEvents.ExitOnSupervisorDeath"/> (WL_EXIT_ON_PM_DEATH), after releasing its LWLocks and
    /// giving its slot back.
    /// </summary>
    public const int SupervisorDied = 82;
}

public sealed unsafe partial class Participant
{
    private const long CancelBit = 1L << (int)ProcSignalReason.Cancel;
    private const long TerminateBit = 1L << (int)ProcSignalReason.Terminate;
    internal const long CancelOrDieMask = CancelBit | TerminateBit;

    /// <summary>Reasons the library handles itself; a handler registered for one of them is never run.</summary>
    private const long LibraryReasonsMask = CancelOrDieMask;

    /// <summary>
    /// CHECK_FOR_INTERRUPTS, for a participant's own loops: runs what <see cref="ProcessInterrupts"/> runs, and acts on
    /// a cancel (throws <see cref="ParticipantCanceledException"/>) or a terminate request (an orderly exit of the
    /// process with <see cref="ParticipantExitCodes.Terminated"/>). Two loads when nothing is pending.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void CheckForInterrupts() => ProcessInterrupts();

    /// <summary>The interrupt check inside a wait: only Cancel and Terminate (one load when neither is pending).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void CheckForCancelOrDie()
    {
        // Pairs with the sender's Interlocked.Or.
        if ((Volatile.Read(ref Proc->ProcSignalFlags) & CancelOrDieMask) != 0)
            TakeCancelOrDie();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TakeCancelOrDie()
    {
        ThrowIfClosed();
        // Take only these two; the other reasons stay for ProcessInterrupts.
        long flags = Interlocked.And(ref Proc->ProcSignalFlags, ~CancelOrDieMask);
        ServiceCancelOrDie(flags);
    }

    private void ServiceCancelOrDie(long flags)
    {
        // After the Exchange / And that took the reason; pairs with the sender's store before its Or.
        int requester = Volatile.Read(ref Proc->InterruptRequesterPid);
        if ((flags & TerminateBit) != 0)
            Die(requester);
        if ((flags & CancelBit) != 0)
            throw new ParticipantCanceledException(ProcNumber, requester);
    }

    /// <summary>Terminate: the orderly exit (see the banner). Returns only by throwing, in the supervisor's process.</summary>
    private void Die(int requester)
    {
        var error = new ParticipantTerminatedException(ProcNumber, requester);
        bool inSupervisor = Array.SupervisorPid == Array.Segment.Platform.Processes.CurrentProcessId;
        LeaveInOrder();
        if (inSupervisor)
            throw error;
        Console.Error.WriteLine($"pgipc: {error.Message}; exiting with code {ParticipantExitCodes.Terminated}");
        Environment.Exit(ParticipantExitCodes.Terminated);
    }

    /// <summary>WL_EXIT_ON_PM_DEATH: the supervisor died under a wait that asked to exit. Never returns.</summary>
    internal void ExitForSupervisorDeath()
    {
        LeaveInOrder();
        Environment.Exit(ParticipantExitCodes.SupervisorDied);
    }

    /// <summary>What proc_exit undoes: a prepared CV sleep, every LWLock, then the slot (and what the leave hooks hold).</summary>
    private void LeaveInOrder()
    {
        try
        {
            AbortCleanup();
        }
        finally
        {
            Dispose();
        }
    }
}
