// <fcntl.h>, <sys/mman.h> open flags, open, and shm_open / shm_unlink. Flag values differ between
// Linux and the BSDs / macOS, so they are read from properties chosen once per process.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_RDWR = 2;
    /// <summary>Also EFD_NONBLOCK for eventfd on Linux.</summary>
    public static int O_NONBLOCK => OperatingSystem.IsLinux() ? 0x800 : 0x4;
    public static int O_CREAT => OperatingSystem.IsLinux() ? 0x40 : 0x200;
    public static int O_EXCL => OperatingSystem.IsLinux() ? 0x80 : 0x800;
    public static int O_CLOEXEC => OperatingSystem.IsLinux() ? 0x80000 : OperatingSystem.IsMacOS() ? 0x1000000 : 0x100000;

    /// <summary>
    /// O_NOFOLLOW: open fails with ELOOP when the last component is a symbolic link. Linux's value depends on the
    /// architecture (the generic one, also x86-64's, is 0x20000; arm and arm64 use 0x8000); 0x100 on macOS and the BSDs.
    /// </summary>
    public static int O_NOFOLLOW => OperatingSystem.IsLinux()
        ? (System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture is Architecture.Arm64 or Architecture.Arm ? 0x8000 : 0x20000)
        : 0x100;

    /// <summary>
    /// int open(const char *pathname, int flags, ...): declared without the variadic mode, which only O_CREAT
    /// reads (never passed here). pathname is a NUL-terminated byte string so callers can keep it preallocated.
    /// Returns the fd, or -1 with errno. On a FIFO: O_RDONLY | O_NONBLOCK always succeeds; O_WRONLY | O_NONBLOCK
    /// fails with ENXIO while nobody has it open for reading.
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "open", SetLastError = true)]
    public static partial int open(byte* pathname, int flags);

    /// <summary>int shm_open(const char *name, int oflag, mode_t mode); returns -1 and sets errno on failure.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "shm_open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int shm_open(string name, int oflag, uint mode);

    /// <summary>flock operations; the same values on Linux, macOS and the BSDs.</summary>
    public const int LOCK_SH = 1;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;

    /// <summary>
    /// int flock(int fd, int operation): an advisory lock on the open file description (not the process, unlike
    /// fcntl locks: closing another descriptor of the same file does not drop it), released when the last
    /// descriptor of that description closes, so also when the process dies. EWOULDBLOCK (= EAGAIN) with LOCK_NB
    /// when a conflicting lock is held; some systems refuse it on shm descriptors (EOPNOTSUPP, EINVAL).
    /// </summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "flock", SetLastError = true)]
    public static partial int flock(int fd, int operation);

    /// <summary>int shm_unlink(const char *name).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "shm_unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int shm_unlink(string name);
}
