// <sys/mman.h>: mmap / munmap.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const int PROT_READ = 1;
    public const int PROT_WRITE = 2;
    public const int MAP_SHARED = 1;

    /// <summary>mmap returns MAP_FAILED ((void*)-1), not NULL, on failure.</summary>
    public static readonly void* MAP_FAILED = (void*)-1;

    [LibraryImport(Libraries.Libc, EntryPoint = "mmap", SetLastError = true)]
    public static partial void* mmap(void* addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(Libraries.Libc, EntryPoint = "munmap", SetLastError = true)]
    public static partial int munmap(void* addr, nuint length);
}
