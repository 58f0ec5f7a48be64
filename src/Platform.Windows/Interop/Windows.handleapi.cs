// <handleapi.h>, <processthreadsapi.h>: CloseHandle, DuplicateHandle, OpenProcess, GetExitCodeProcess.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Windows.Interop;

internal static unsafe partial class Windows
{
    public const uint PROCESS_QUERY_LIMITED_INFORMATION = 0x1000;
    public const uint STILL_ACTIVE = 259;
    public const uint PROCESS_DUP_HANDLE = 0x0040;
    public const uint DUPLICATE_CLOSE_SOURCE = 0x1;
    public const uint DUPLICATE_SAME_ACCESS = 0x2;

    /// <summary>GetCurrentProcess()'s pseudo-handle.</summary>
    public static readonly nint CurrentProcess = -1;

    [LibraryImport(Libraries.Kernel32, EntryPoint = "CloseHandle", SetLastError = true)]
    public static partial int CloseHandle(nint hObject);

    [LibraryImport(Libraries.Kernel32, EntryPoint = "OpenProcess", SetLastError = true)]
    public static partial nint OpenProcess(uint dwDesiredAccess, int bInheritHandle, uint dwProcessId);

    [LibraryImport(Libraries.Kernel32, EntryPoint = "DuplicateHandle", SetLastError = true)]
    public static partial int DuplicateHandle(nint hSourceProcessHandle, nint hSourceHandle, nint hTargetProcessHandle,
        nint* lpTargetHandle, uint dwDesiredAccess, int bInheritHandle, uint dwOptions);

    [LibraryImport(Libraries.Kernel32, EntryPoint = "GetExitCodeProcess", SetLastError = true)]
    public static partial int GetExitCodeProcess(nint hProcess, uint* lpExitCode);
}
