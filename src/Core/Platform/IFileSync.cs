/*-------------------------------------------------------------------------
 * IFileSync.cs
 *   The file-system calls .NET does not offer in the form PgIpc needs:
 *   fsync of a directory, fdatasync of a file, files and directories created private to their
 *   user from the start, an open that refuses a symbolic link, and a
 *   file's owner and mode.
 *
 * NOTES
 *   A new file's directory entry is durable only once its directory is
 *   flushed; fsync of the file itself does not cover it on ext4, XFS or
 *   APFS. .NET cannot open a directory as a file on Unix (File.OpenHandle
 *   refuses one), so each backend implements this: open(O_RDONLY |
 *   O_DIRECTORY) + fsync(2) on Linux and the other Unixes; a no-op on
 *   Windows, where NTFS journals metadata and FlushFileBuffers on a
 *   directory needs a backup-semantics handle for no gain.
 *
 *   Private files. The data directory, pg_dynshmem and everything in
 *   them hold the cluster's data: as PostgreSQL (pg_dir_create_mode 0700,
 *   pg_file_create_mode 0600) they are created with those modes in the
 *   create call itself, never created with the umask's 0755/0644 and
 *   narrowed after (a window in which another user could open them). The
 *   owner and mode of an existing data directory are checked by Core
 *   (DataDirectoryCheck.cs, checkDataDir) through GetOwnership. Windows has
 *   no Unix modes: the defaults below (the runtime's own calls, null for
 *   GetOwnership) are its implementation, and the check is skipped there.
 *
 *   Mirrors fsync_fname(path, isdir = true) in src/backend/storage/file/fd.c,
 *   and the create modes of src/common/file_perm.c.
 *-------------------------------------------------------------------------
 */
using Microsoft.Win32.SafeHandles;

namespace PgIpc.Platform;

/// <summary>
/// The owner and permission bits of a file-system entry as stat(2) reports them (a final symbolic link followed).
/// </summary>
/// <param name="OwnerUid">The owner's uid, or -1 when the OS cannot say.</param>
/// <param name="CurrentUid">This process's effective uid.</param>
/// <param name="Mode">The permission bits (with set-id and sticky bits).</param>
public readonly record struct FileOwnership(long OwnerUid, long CurrentUid, UnixFileMode Mode);

/// <summary>File-system calls the runtime lacks (see the banner).</summary>
public interface IFileSync
{
    /// <summary>
    /// Flushes the directory at <paramref name="path"/> (its entries: files created, renamed or removed in it) to
    /// stable storage. Throws <see cref="PgIpcOsException"/> naming the failing call.
    /// </summary>
    void FsyncDirectory(string path);

    /// <summary>
    /// Flushes <paramref name="file"/>'s data, and the metadata needed to read it back (its size, block map), to
    /// stable storage: fdatasync(2) where the OS has it (Linux), else what <see cref="RandomAccess.FlushToDisk"/> does
    /// (fsync(2); FlushFileBuffers on Windows). Cheaper than a full fsync for a file overwritten in place (the WAL's
    /// pre-allocated segments): a change of the modification time alone is not written. Throws
    /// <see cref="IOException"/> when the flush fails.
    /// </summary>
    void FlushFileData(SafeFileHandle file) => RandomAccess.FlushToDisk(file);

    /// <summary>
    /// The owner and mode of <paramref name="path"/>, or null where the OS has no Unix owners and modes (Windows).
    /// Throws <see cref="IOException"/> (<see cref="FileNotFoundException"/> when it does not exist).
    /// </summary>
    FileOwnership? GetOwnership(string path) => null;

    /// <summary>
    /// Creates the directory <paramref name="path"/>, and any missing parent, with mode 0700 where modes exist
    /// (given to mkdir(2) itself); an existing directory is left as it is.
    /// </summary>
    void CreatePrivateDirectory(string path) => Directory.CreateDirectory(path);

    /// <summary>
    /// Opens <paramref name="path"/> for reading and writing. <see cref="FileMode.CreateNew"/> creates it with mode
    /// 0600 where modes exist (given to open(2) itself; fails with <see cref="IOException"/> when anything, a
    /// symbolic link included, is already at the path). <see cref="FileMode.Open"/> opens an existing file and
    /// refuses a symbolic link as the last component where the OS can (O_NOFOLLOW: an <see cref="IOException"/>), so
    /// a link planted in the directory is never followed to another file.
    /// </summary>
    SafeFileHandle OpenPrivateFile(string path, FileMode mode, FileShare share, FileOptions options)
    {
        if (mode is not (FileMode.CreateNew or FileMode.Open))
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "only CreateNew and Open");
        return File.OpenHandle(path, mode, FileAccess.ReadWrite, share, options);
    }
}
