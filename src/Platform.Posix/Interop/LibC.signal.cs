// <signal.h>: kill and the signal numbers PgIpc sends. Numbers differ between Linux and the BSDs / macOS,
// so they are read from properties chosen once per process.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const int SIGKILL = 9;

    /// <summary>Process interrupts (ProcSignal): 10 on Linux, 30 on macOS and the BSDs.</summary>
    public static int SIGUSR1 => OperatingSystem.IsLinux() ? 10 : 30;

    /// <summary>Latch wake-up fallback on Linux (default action: ignore): 23 on Linux, 16 on macOS and the BSDs.</summary>
    public static int SIGURG => OperatingSystem.IsLinux() ? 23 : 16;

    /// <summary>
    /// int kill(pid_t pid, int sig); sig 0 only checks that the process exists. Never call it with pid &lt;= 0:
    /// 0 signals the caller's process group and -1 every process the caller may signal.
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "kill", SetLastError = true)]
    public static partial int kill(int pid, int sig);
}
