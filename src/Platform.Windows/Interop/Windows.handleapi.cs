// <handleapi.h>, <processthreadsapi.h>: CloseHandle, OpenProcess, GetExitCodeProcess.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Windows.Interop;

internal static unsafe partial class Windows
{
    public const uint PROCESS_QUERY_LIMITED_INFORMATION = 0x1000;
    public const uint STILL_ACTIVE = 259;

    [LibraryImport(Libraries.Kernel32, EntryPoint = "CloseHandle", SetLastError = true)]
    public static partial int CloseHandle(nint hObject);

    [LibraryImport(Libraries.Kernel32, EntryPoint = "OpenProcess", SetLastError = true)]
    public static partial nint OpenProcess(uint dwDesiredAccess, int bInheritHandle, uint dwProcessId);

    [LibraryImport(Libraries.Kernel32, EntryPoint = "GetExitCodeProcess", SetLastError = true)]
    public static partial int GetExitCodeProcess(nint hProcess, uint* lpExitCode);
}
