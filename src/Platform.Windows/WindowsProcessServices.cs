/*-------------------------------------------------------------------------
 * WindowsProcessServices.cs
 *   Process liveness on Windows: OpenProcess + GetExitCodeProcess.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using Win = PgIpc.Platform.Windows.Interop.Windows;

namespace PgIpc.Platform.Windows;

/// <summary>A pid is alive when it can be opened and has not exited (exit code STILL_ACTIVE).</summary>
internal sealed unsafe class WindowsProcessServices : IProcessServices
{
    public int CurrentProcessId { get; } = Environment.ProcessId;

    /// <summary>
    /// 0 (not checked): an interrupt here sets the named event of the pid's PgIpc listener, so a reused pid either has
    /// no such event (nothing happens) or is another PgIpc process, which re-checks its PGPROC flags and finds none.
    /// </summary>
    public long GetIdentity(int pid) => 0;

    /// <summary>Alive or Gone: an exited process whose object is still open somewhere has an exit code, so it is Gone.</summary>
    public ProcessLiveness GetLiveness(int pid)
    {
        if (pid <= 0)
            return ProcessLiveness.Gone;
        nint h = Win.OpenProcess(Win.PROCESS_QUERY_LIMITED_INFORMATION, 0, (uint)pid);
        if (h == 0)
            return Marshal.GetLastPInvokeError() == Win.ERROR_ACCESS_DENIED ? ProcessLiveness.Alive : ProcessLiveness.Gone; // exists, not ours to open
        try
        {
            uint code;
            return Win.GetExitCodeProcess(h, &code) != 0 && code == Win.STILL_ACTIVE ? ProcessLiveness.Alive : ProcessLiveness.Gone;
        }
        finally
        {
            Win.CloseHandle(h);
        }
    }
}
