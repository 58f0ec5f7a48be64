/*-------------------------------------------------------------------------
 * IFileSync.cs
 *   The one file-system durability call .NET does not offer: fsync of a
 *   directory.
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
 *   Mirrors fsync_fname(path, isdir = true) in src/backend/storage/file/fd.c.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform;

/// <summary>File-system durability calls the runtime lacks.</summary>
public interface IFileSync
{
    /// <summary>
    /// Flushes the directory at <paramref name="path"/> (its entries: files created, renamed or removed in it) to
    /// stable storage. Throws <see cref="PgIpcOsException"/> naming the failing call.
    /// </summary>
    void FsyncDirectory(string path);
}
