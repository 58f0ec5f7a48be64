// <synchapi.h>, <winbase.h>: semaphore objects and waits. Names as TerraFX.Interop.Windows spells them.
using System.Runtime.InteropServices;
using SafeSemaphoreHandle = PgIpc.Platform.Windows.SafeSemaphoreHandle;

namespace PgIpc.Platform.Windows.Interop;

internal static unsafe partial class Windows
{
    public const uint SYNCHRONIZE = 0x00100000;
    public const uint SEMAPHORE_MODIFY_STATE = 0x0002;

    public const uint INFINITE = 0xFFFFFFFF;
    public const uint WAIT_OBJECT_0 = 0x00000000;
    public const uint WAIT_ABANDONED = 0x00000080;
    public const uint WAIT_TIMEOUT = 0x00000102;
    public const uint WAIT_FAILED = 0xFFFFFFFF;

    /// <summary>
    /// Returns NULL on failure. On success GetLastError is ERROR_ALREADY_EXISTS when the name existed (the
    /// existing object is returned, and the counts given are ignored).
    /// </summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "CreateSemaphoreW", SetLastError = true, StringMarshalling = StringMarshalling.Utf16)]
    public static partial nint CreateSemaphoreW(void* lpSemaphoreAttributes, int lInitialCount, int lMaximumCount, string lpName);

    /// <summary>Returns NULL on failure (ERROR_FILE_NOT_FOUND when no such semaphore).</summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "OpenSemaphoreW", SetLastError = true, StringMarshalling = StringMarshalling.Utf16)]
    public static partial nint OpenSemaphoreW(uint dwDesiredAccess, int bInheritHandle, string lpName);

    /// <summary>Nonzero on success; ERROR_TOO_MANY_POSTS when the count would pass the maximum.</summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "ReleaseSemaphore", SetLastError = true)]
    public static partial int ReleaseSemaphore(SafeSemaphoreHandle hSemaphore, int lReleaseCount, int* lpPreviousCount);

    /// <summary>WAIT_OBJECT_0, WAIT_TIMEOUT, or WAIT_FAILED with GetLastError (WAIT_ABANDONED is for mutexes).</summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "WaitForSingleObject", SetLastError = true)]
    public static partial uint WaitForSingleObject(SafeSemaphoreHandle hHandle, uint dwMilliseconds);
}
