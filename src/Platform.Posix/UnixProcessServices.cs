/*-------------------------------------------------------------------------
 * UnixProcessServices.cs
 *   Process liveness on Unix: kill(pid, 0).
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>kill(pid, 0): 0 or EPERM means the process exists; ESRCH means it does not.</summary>
internal sealed class UnixProcessServices : IProcessServices
{
    public int CurrentProcessId { get; } = Environment.ProcessId;

    public bool IsAlive(int pid)
    {
        if (pid <= 0)
            return false;
        if (LibC.kill(pid, 0) == 0)
            return true;
        return Errno.Last == Errno.EPERM;
    }
}
