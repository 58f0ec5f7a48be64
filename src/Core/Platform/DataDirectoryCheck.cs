/*-------------------------------------------------------------------------
 * DataDirectoryCheck.cs
 *   The data directory's owner and mode, checked before the cluster uses
 *   it (PostgreSQL's checkDataDir).
 *
 * NOTES
 *   A missing data directory is created 0700 (IFileSync.CreatePrivateDirectory,
 *   the mode given to mkdir itself). An existing one must be owned by this
 *   process's effective user, and open to nobody else beyond what PostgreSQL
 *   allows: 0700, or 0750 (group read and search: a backup user). Group
 *   write, or any bit for others, is refused. A wrong owner says whose it is
 *   and how to fix it; a wrong mode, the chmod. The check follows a final
 *   symbolic link as PostgreSQL's stat does: a data directory may be a link
 *   to the real one, and it is the real one that must be private.
 *   Where the OS has no Unix modes (Windows) nothing is checked.
 *
 *   Called at cluster start (Supervisor.Create, before shared memory is
 *   made), by every Smgr (each process that opens relation files), and by
 *   the DSM registry when it creates its table with a data directory.
 *
 *   Mirrors checkDataDir in src/backend/utils/init/miscinit.c.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform;

/// <summary>checkDataDir: the data directory exists, is ours and is private (see the banner).</summary>
internal static class DataDirectoryCheck
{
    /// <summary>Bits a data directory must not have: group write and everything for others (PG_MODE_MASK_GROUP).</summary>
    private const UnixFileMode Forbidden = UnixFileMode.GroupWrite
        | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>
    /// Creates <paramref name="path"/> (0700) when missing, then checks its owner and mode; throws
    /// <see cref="DataDirectoryPermissionException"/> when it is another user's or open to others.
    /// </summary>
    public static void CreateOrCheck(IFileSync files, string path)
    {
        ArgumentNullException.ThrowIfNull(files);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!Directory.Exists(path))
            files.CreatePrivateDirectory(path);
        Check(files, path);
    }

    /// <summary>Checks an existing directory's owner and mode (see <see cref="CreateOrCheck"/>).</summary>
    public static void Check(IFileSync files, string path)
    {
        if (files.GetOwnership(path) is not { } o)
            return; // no Unix owners or modes here
        if ((o.OwnerUid >= 0 && o.OwnerUid != o.CurrentUid) || (o.Mode & Forbidden) != 0)
            throw new DataDirectoryPermissionException(path, o.OwnerUid, o.CurrentUid, o.Mode);
    }
}
