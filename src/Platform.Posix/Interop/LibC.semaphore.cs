// <semaphore.h>: POSIX semaphores, unnamed (sem_init / sem_destroy) and named (sem_open / sem_close /
// sem_unlink). All return -1 and set errno on failure, except sem_open (SEM_FAILED).
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    /// <summary>sizeof(sem_t): 32 on 64-bit glibc, 16 on FreeBSD, 4 on macOS (which cannot share unnamed ones).</summary>
    public const int SIZEOF_sem_t = 32;

    /// <summary>sem_open's failure value: (sem_t*)0 on glibc and FreeBSD, (sem_t*)-1 on macOS.</summary>
    public static bool IsSemFailed(void* sem) => sem == null || sem == (void*)-1;

    /// <summary>int sem_init(sem_t *sem, int pshared, unsigned int value); macOS: always ENOSYS.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "sem_init", SetLastError = true)]
    public static partial int sem_init(void* sem, int pshared, uint value);

    [LibraryImport(Libraries.Libc, EntryPoint = "sem_destroy", SetLastError = true)]
    public static partial int sem_destroy(void* sem);

    /// <summary>EINTR when a signal handler ran (never restarted, whatever SA_RESTART says).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "sem_wait", SetLastError = true)]
    public static partial int sem_wait(void* sem);

    /// <summary>abs_timeout is an absolute CLOCK_REALTIME time; ETIMEDOUT when it passes. Not on macOS.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "sem_timedwait", SetLastError = true)]
    public static partial int sem_timedwait(void* sem, timespec* abs_timeout);

    /// <summary>EAGAIN when the count is zero.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "sem_trywait", SetLastError = true)]
    public static partial int sem_trywait(void* sem);

    [LibraryImport(Libraries.Libc, EntryPoint = "sem_post", SetLastError = true)]
    public static partial int sem_post(void* sem);

    /// <summary>
    /// sem_t *sem_open(const char *name, int oflag, ...): declared in its four-argument form (mode_t mode,
    /// unsigned int value), which is how the variadic arguments arrive on x86_64, the generic aarch64 ABI
    /// and FreeBSD. Without O_CREAT the last two are ignored. On Apple arm64 use <see cref="sem_open_apple_arm64"/>.
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "sem_open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial void* sem_open(string name, int oflag, uint mode, uint value);

    /// <summary>
    /// sem_open on Apple arm64, where variadic arguments go on the stack in 8-byte slots, not in registers:
    /// six dummies fill x2..x7 so mode and value land in the first two stack slots, as 64-bit values.
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "sem_open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial void* sem_open_apple_arm64(string name, int oflag, nint x2, nint x3, nint x4, nint x5, nint x6, nint x7, ulong mode, ulong value);

    /// <summary>sem_open with the variadic convention of this platform, chosen once.</summary>
    public static void* sem_open_variadic(string name, int oflag, uint mode, uint value)
        => s_appleArm64
            ? sem_open_apple_arm64(name, oflag, 0, 0, 0, 0, 0, 0, mode, value)
            : sem_open(name, oflag, mode, value);

    private static readonly bool s_appleArm64 = OperatingSystem.IsMacOS() && RuntimeInformation.ProcessArchitecture == Architecture.Arm64;

    [LibraryImport(Libraries.Libc, EntryPoint = "sem_close", SetLastError = true)]
    public static partial int sem_close(void* sem);

    [LibraryImport(Libraries.Libc, EntryPoint = "sem_unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int sem_unlink(string name);
}
