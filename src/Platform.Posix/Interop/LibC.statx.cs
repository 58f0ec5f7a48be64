// <sys/stat.h>: statx (Linux, glibc 2.28+). Used only for an object's owner uid, whose offset in struct statx is the
// same on every architecture (unlike struct stat's).
using System.Runtime.InteropServices;

namespace PgIpc.Platform.Posix.Interop;

internal static unsafe partial class LibC
{
    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const uint STATX_TYPE = 0x1;
    public const uint STATX_MODE = 0x2;
    public const uint STATX_UID = 0x8;
    /// <summary>Offsets in struct statx (256 bytes): stx_uid at 20, stx_mode (u16) at 28.</summary>
    public const int StatxSize = 256, StatxUidOffset = 20, StatxModeOffset = 28;

    [LibraryImport(Libraries.Libc, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statx(int dirfd, string pathname, int flags, uint mask, byte* statxbuf);

    [LibraryImport(Libraries.Libc, EntryPoint = "geteuid")]
    public static partial uint geteuid();
}
