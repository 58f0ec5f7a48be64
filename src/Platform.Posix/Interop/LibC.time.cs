// <time.h>: struct timespec and clock_gettime.
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    /// <summary>CLOCK_REALTIME is 0 on Linux, macOS and FreeBSD.</summary>
    public const int CLOCK_REALTIME = 0;

    /// <summary>struct timespec on LP64 systems: 16 bytes, tv_sec at 0, tv_nsec at 8.</summary>
#pragma warning disable CS8981 // the native name, kept exactly (a lower-case type name)
    [StructLayout(LayoutKind.Sequential)]
    public struct timespec
    {
        public long tv_sec;
        public long tv_nsec;
    }
#pragma warning restore CS8981

    [LibraryImport(Libraries.Libc, EntryPoint = "clock_gettime", SetLastError = true)]
    public static partial int clock_gettime(int clockid, timespec* tp);
}
