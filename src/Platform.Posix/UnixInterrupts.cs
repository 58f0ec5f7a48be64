/*-------------------------------------------------------------------------
 * UnixInterrupts.cs
 *   Process interrupts on Unix (the signal behind ProcSignal): SIGUSR1,
 *   received through PosixSignalRegistration, sent with kill. Shared by the
 *   Posix and Linux backends.
 *
 * NOTES
 *   PosixSignalRegistration runs handlers on a thread-pool thread, never in
 *   signal context, so the callback may do anything; signals arriving
 *   together are coalesced by the kernel (one pending SIGUSR1), which
 *   ILatchProvider.ListenForInterrupts allows. The handler cancels the
 *   default action (SIGUSR1's is to terminate). Several registrations in one
 *   process all run. The name identifies nothing on Unix (the pid does); it
 *   is checked so bad names fail on every backend alike.
 *
 *   A process that has not registered dies of SIGUSR1, as a PostgreSQL
 *   backend that had not installed its handler would; Core listens before it
 *   publishes its pid as interruptible. Once a process has listened, it keeps
 *   a do-nothing SIGUSR1 handler for the rest of its life: a signal sent just
 *   after it detached (its pid still in a slot another process read) must
 *   not kill it, as the default action would. Senders check the receiver's
 *   identity first (ProcSignal: PgProc.PidIdentity), so a pid reused by an
 *   unrelated process is not signalled at all.
 *
 *   Mirrors PostgreSQL's procsignal.c (SendProcSignal / procsignal_sigusr1_handler).
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>SIGUSR1 listeners and senders.</summary>
internal static class UnixInterrupts
{
    // Never disposed: once this process has been interruptible, SIGUSR1 stays harmless to it for its whole life.
    private static PosixSignalRegistration? s_keepAlive;
    private static readonly Lock s_keepAliveLock = new();

    public static IDisposable Listen(string name, Action onInterrupt)
    {
        LatchArgs.ValidateName(name);
        ArgumentNullException.ThrowIfNull(onInterrupt);
        lock (s_keepAliveLock)
            s_keepAlive ??= PosixSignalRegistration.Create((PosixSignal)LibC.SIGUSR1, static ctx => ctx.Cancel = true);
        return PosixSignalRegistration.Create((PosixSignal)LibC.SIGUSR1, ctx =>
        {
            ctx.Cancel = true; // not SIGUSR1's default action (terminate)
            onInterrupt();
        });
    }

    /// <summary>kill(pid, SIGUSR1): false when the process is gone (ESRCH), not ours to signal (EPERM), pid &lt;= 0 or the name invalid. Never throws.</summary>
    public static bool Interrupt(string name, int pid)
    {
        if (pid <= 0 || !LatchArgs.IsValidName(name))
            return false; // kill(0, ...) and kill(-1, ...) signal groups, never one process
        return LibC.kill(pid, LibC.SIGUSR1) == 0;
    }
}
