/*-------------------------------------------------------------------------
 * ForeignObject.cs
 *   Another user's object at one of our names: the typed error naming it
 *   and its owner, instead of a raw EACCES.
 *
 * NOTES
 *   A POSIX shm name has no next candidate (one name per cluster key), so
 *   Create cannot skip it the way SysV skips a key: the error says whose
 *   it is. The owner is read with statx on /dev/shm/<name> (Linux; -1
 *   elsewhere): the directory is world-readable even when the object is not.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

internal static unsafe class ForeignObject
{
    /// <summary>The owner uid of <paramref name="path"/> (not following a symlink), or -1 when it cannot be read.</summary>
    public static int OwnerUid(string path)
    {
        if (!OperatingSystem.IsLinux())
            return -1;
        byte* buf = stackalloc byte[LibC.StatxSize];
        if (LibC.statx(LibC.AT_FDCWD, path, LibC.AT_SYMLINK_NOFOLLOW, LibC.STATX_UID, buf) != 0)
            return -1;
        return *(int*)(buf + LibC.StatxUidOffset);
    }

    /// <summary>
    /// <paramref name="path"/> exists, is not a symlink and is owned by this process's effective uid (statx, not
    /// following links). Elsewhere than Linux only the link test is made.
    /// </summary>
    public static bool IsOwnedByCurrentUser(string path)
    {
        if (!OperatingSystem.IsLinux())
        {
            FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
            return info.Exists && info.LinkTarget is null;
        }
        byte* buf = stackalloc byte[LibC.StatxSize];
        if (LibC.statx(LibC.AT_FDCWD, path, LibC.AT_SYMLINK_NOFOLLOW, LibC.STATX_UID | LibC.STATX_TYPE, buf) != 0)
            return false;
        const int S_IFMT = 0xF000, S_IFLNK = 0xA000;
        ushort mode = *(ushort*)(buf + LibC.StatxModeOffset);
        return (mode & S_IFMT) != S_IFLNK && *(uint*)(buf + LibC.StatxUidOffset) == LibC.geteuid();
    }

    /// <summary>The error for a POSIX shm name another user owns (EACCES from shm_open).</summary>
    public static SharedMemoryNotAccessibleException ShmName(string id, string call)
        => new(id, OwnerUid("/dev/shm" + id), call + ": EACCES");
}
