/*-------------------------------------------------------------------------
 * WindowsFileSync.cs
 *   Directory fsync on Windows: nothing to do.
 *
 * NOTES
 *   NTFS journals its metadata, so a file's directory entry is durable
 *   with the file system's own log; FlushFileBuffers on a directory needs
 *   a handle opened with FILE_FLAG_BACKUP_SEMANTICS and buys nothing more.
 *   PostgreSQL's fsync_fname ignores the error Windows gives when a
 *   directory is opened as a file, to the same effect.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform.Windows;

/// <summary>A no-op directory fsync (see the banner).</summary>
internal sealed class WindowsFileSync : IFileSync
{
    public void FsyncDirectory(string path) => ArgumentException.ThrowIfNullOrEmpty(path);
}
