// <synchapi.h>, <winbase.h>, <winnt.h>: semaphore and event objects, and waits. Names as TerraFX.Interop.Windows spells them.
using System.Runtime.InteropServices;
using SafeSemaphoreHandle = PgIpc.Platform.Windows.SafeSemaphoreHandle;
using SafeWaitObjectHandle = PgIpc.Platform.Windows.SafeWaitObjectHandle;

namespace PgIpc.Platform.Windows.Interop;

internal static unsafe partial class Windows
{
    public const uint SYNCHRONIZE = 0x00100000;
    public const uint SEMAPHORE_MODIFY_STATE = 0x0002;
    public const uint EVENT_MODIFY_STATE = 0x0002;

    /// <summary>winnt.h: the most handles one WaitForMultipleObjects call takes.</summary>
    public const int MAXIMUM_WAIT_OBJECTS = 64;

    public const uint INFINITE = 0xFFFFFFFF;
    public const uint WAIT_OBJECT_0 = 0x00000000;
    public const uint WAIT_ABANDONED = 0x00000080;
    public const uint WAIT_ABANDONED_0 = 0x00000080;
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

    /// <summary>Same call on an event or process handle: WAIT_OBJECT_0, WAIT_TIMEOUT, or WAIT_FAILED with GetLastError.</summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "WaitForSingleObject", SetLastError = true)]
    public static partial uint WaitForSingleObject(SafeWaitObjectHandle hHandle, uint dwMilliseconds);

    /// <summary>
    /// Same call on a raw HANDLE the caller keeps alive. WAIT_ABANDONED when the handle is a mutex whose owner
    /// exited holding it (the wait still acquired it).
    /// </summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "WaitForSingleObject", SetLastError = true)]
    public static partial uint WaitForSingleObject(nint hHandle, uint dwMilliseconds);

    /// <summary>
    /// With bWaitAll FALSE: WAIT_OBJECT_0 + i for the lowest index i signalled (only that object's state is changed,
    /// e.g. only that auto-reset event is reset), WAIT_ABANDONED_0 + i for an abandoned mutex, WAIT_TIMEOUT, or
    /// WAIT_FAILED with GetLastError (ERROR_INVALID_PARAMETER for nCount 0 or above MAXIMUM_WAIT_OBJECTS,
    /// ERROR_INVALID_HANDLE for a closed handle).
    /// </summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "WaitForMultipleObjects", SetLastError = true)]
    public static partial uint WaitForMultipleObjects(uint nCount, nint* lpHandles, int bWaitAll, uint dwMilliseconds);

    /// <summary>
    /// Returns NULL on failure. On success GetLastError is ERROR_ALREADY_EXISTS when the name existed (the existing
    /// object is returned, and bManualReset / bInitialState are ignored). lpName NULL: an unnamed event.
    /// </summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "CreateEventW", SetLastError = true)]
    public static partial nint CreateEventW(void* lpEventAttributes, int bManualReset, int bInitialState, char* lpName);

    /// <summary>Returns NULL on failure (ERROR_FILE_NOT_FOUND when no such event). lpName is NUL-terminated.</summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "OpenEventW", SetLastError = true)]
    public static partial nint OpenEventW(uint dwDesiredAccess, int bInheritHandle, char* lpName);

    /// <summary>Nonzero on success. Raw HANDLE: callers hold a reference on the SafeHandle around the call.</summary>
    [LibraryImport(Libraries.Kernel32, EntryPoint = "SetEvent", SetLastError = true)]
    public static partial int SetEvent(nint hEvent);
}
