// <securitybaseapi.h>, <processthreadsapi.h>, <winbase.h>, <psapi.h>: token privileges and large pages.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Windows.Interop;

internal static unsafe partial class Windows
{
    public const uint SEC_COMMIT = 0x08000000;
    public const uint SEC_LARGE_PAGES = 0x80000000;
    public const uint TOKEN_ADJUST_PRIVILEGES = 0x0020;
    public const uint TOKEN_QUERY = 0x0008;
    public const uint SE_PRIVILEGE_ENABLED = 0x00000002;
    public const string SE_LOCK_MEMORY_NAME = "SeLockMemoryPrivilege";

    [StructLayout(LayoutKind.Sequential)]
    public struct LUID
    {
        public uint LowPart;
        public int HighPart;
    }

    /// <summary>TOKEN_PRIVILEGES with room for exactly one LUID_AND_ATTRIBUTES.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct TOKEN_PRIVILEGES_1
    {
        public uint PrivilegeCount;
        public LUID Luid;
        public uint Attributes;
    }

    /// <summary>PSAPI_WORKING_SET_EX_INFORMATION: one page's working-set attributes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct PSAPI_WORKING_SET_EX_INFORMATION
    {
        public void* VirtualAddress;
        /// <summary>Bit 0 Valid, bit 22 Locked, bit 23 LargePage (PSAPI_WORKING_SET_EX_BLOCK).</summary>
        public nuint VirtualAttributes;
    }

    /// <summary>The smallest large page (0 when the processor has none): sizes of large-page mappings are multiples of it.</summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "GetLargePageMinimum")]
    public static partial nuint GetLargePageMinimum();

    [LibraryImport(Libraries.Advapi32, EntryPoint = "OpenProcessToken", SetLastError = true)]
    public static partial int OpenProcessToken(nint ProcessHandle, uint DesiredAccess, nint* TokenHandle);

    [LibraryImport(Libraries.Advapi32, EntryPoint = "LookupPrivilegeValueW", SetLastError = true, StringMarshalling = StringMarshalling.Utf16)]
    public static partial int LookupPrivilegeValueW(string? lpSystemName, string lpName, LUID* lpLuid);

    /// <summary>Succeeds even when the token lacks the privilege: GetLastError is then ERROR_NOT_ALL_ASSIGNED.</summary>
    [LibraryImport(Libraries.Advapi32, EntryPoint = "AdjustTokenPrivileges", SetLastError = true)]
    public static partial int AdjustTokenPrivileges(nint TokenHandle, int DisableAllPrivileges, TOKEN_PRIVILEGES_1* NewState,
        uint BufferLength, void* PreviousState, uint* ReturnLength);

    [LibraryImport(Libraries.Kernel32, EntryPoint = "K32QueryWorkingSetEx", SetLastError = true)]
    public static partial int QueryWorkingSetEx(nint hProcess, PSAPI_WORKING_SET_EX_INFORMATION* pv, uint cb);
}
