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

    /// <summary>
    /// Field 22 of /proc/&lt;pid&gt;/stat (starttime, clock ticks since boot): a pid reused later has a later one.
    /// 0 without a procfs (other Unix: the interrupt then goes to the recorded pid unchecked, as before).
    /// </summary>
    public long GetIdentity(int pid)
    {
        if (pid <= 0 || !_procStat)
            return 0;
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // After "pid (comm) ", fields from 3 (state) on are space separated; starttime is field 22.
            int close = stat.LastIndexOf(')');
            if (close < 0)
                return 0;
            string[] fields = stat[(close + 2)..].Split(' ');
            const int StartTimeIndex = 22 - 3;
            return fields.Length > StartTimeIndex && long.TryParse(fields[StartTimeIndex], out long t) ? t + 1 : 0; // +1: never 0 for a process
        }
        catch (IOException)
        {
            return 0;
        }
        catch (UnauthorizedAccessException)
        {
            return 0;
        }
    }

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
