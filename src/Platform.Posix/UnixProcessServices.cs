/*-------------------------------------------------------------------------
 * UnixProcessServices.cs
 *   Process liveness on Unix: kill(pid, 0), and /proc/<pid>/stat for
 *   zombies where the system has it (Linux).
 *
 * NOTES
 *   kill(pid, 0) succeeds (or fails with EPERM) for any process that holds
 *   its pid, a zombie included: portably a zombie cannot be told from a
 *   running process. Where /proc/<pid>/stat exists (Linux, always; the
 *   check is made once, at construction) its state field says 'Z' for a
 *   zombie. A zombie leader whose other threads are still exiting may still
 *   hold the mappings (the last thread out drops them), so it is reported
 *   a zombie only once it is the only task left in /proc/<pid>/task.
 *   Without /proc (macOS, the BSDs) every existing pid is Alive.
 *   Shared by the Linux and Posix backends.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>kill(pid, 0): 0 or EPERM means the process exists; ESRCH means it does not.</summary>
internal sealed class UnixProcessServices : IProcessServices
{
    // Decided once: the per-pid stat files are there (Linux, or a Linux-compatible procfs).
    private readonly bool _procStat = File.Exists("/proc/self/stat");

    public int CurrentProcessId { get; } = Environment.ProcessId;

    public bool IsOwnedByCurrentUser(string path) => ForeignObject.IsOwnedByCurrentUser(path);

    public ProcessLiveness GetLiveness(int pid)
    {
        if (pid <= 0)
            return ProcessLiveness.Gone;
        if (LibC.kill(pid, 0) != 0 && Errno.Last != Errno.EPERM)
            return ProcessLiveness.Gone;
        if (!_procStat)
            return ProcessLiveness.Alive; // zombies are not distinguishable portably
        try
        {
            // "pid (comm) S ...": comm may contain ')' so the state follows the last one.
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            if (close < 0 || close + 2 >= stat.Length || stat[close + 2] != 'Z')
                return ProcessLiveness.Alive;
            return Directory.GetDirectories($"/proc/{pid}/task").Length > 1 ? ProcessLiveness.Alive : ProcessLiveness.Zombie;
        }
        catch (IOException)
        {
            return ProcessLiveness.Gone; // reaped between the two checks
        }
        catch (UnauthorizedAccessException)
        {
            return ProcessLiveness.Alive; // exists; its state is not ours to read
        }
    }
}
