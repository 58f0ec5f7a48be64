// <fcntl.h>, <sys/mman.h> open flags and shm_open / shm_unlink. Flag values differ between
// Linux and the BSDs / macOS, so they are read from properties chosen once per process.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const int O_RDONLY = 0;
    public const int O_RDWR = 2;
    public static int O_CREAT => OperatingSystem.IsLinux() ? 0x40 : 0x200;
    public static int O_EXCL => OperatingSystem.IsLinux() ? 0x80 : 0x800;
    public static int O_CLOEXEC => OperatingSystem.IsLinux() ? 0x80000 : OperatingSystem.IsMacOS() ? 0x1000000 : 0x100000;

    /// <summary>int shm_open(const char *name, int oflag, mode_t mode); returns -1 and sets errno on failure.</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "shm_open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int shm_open(string name, int oflag, uint mode);

    /// <summary>int shm_unlink(const char *name).</summary>
    [LibraryImport(Libraries.Libc, EntryPoint = "shm_unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int shm_unlink(string name);
}
