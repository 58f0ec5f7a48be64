/*-------------------------------------------------------------------------
 * ClusterTempFiles.cs
 *   A cluster's temporary-file space, for any process attached to it:
 *   the temp directory (base/pgsql_tmp) of the data directory the cluster
 *   was built with.
 *
 * NOTES
 *   Storage (BufFile, SharedFileSet, TempFileSpace) sits below the
 *   cluster layer, which calls its RemoveTempFiles when it creates shared
 *   memory (Supervisor.InitShmem); this lookup is therefore here, not in
 *   Storage. A child finds the data directory through the DSM registry's
 *   record of it (the cluster's data directory, written by the supervisor).
 *-------------------------------------------------------------------------
 */
using PgIpc.Storage;

namespace PgIpc.Postmaster;

/// <summary>The temporary-file space of a cluster (see the file notes).</summary>
public static class ClusterTempFiles
{
    /// <summary>
    /// A <see cref="Storage.TempFileSpace"/> in the temp directory of <paramref name="cluster"/>'s data directory, with
    /// temp_file_limit <paramref name="tempFileLimitKiB"/> (KiB, -1 for none) and segment files of
    /// <paramref name="segmentSize"/> bytes; <see cref="InvalidOperationException"/> when the cluster has no data
    /// directory (ClusterBuilder.WithDataDirectory).
    /// </summary>
    public static TempFileSpace TempFileSpace(this Cluster cluster, long tempFileLimitKiB = -1, long segmentSize = Storage.TempFileSpace.DefaultSegmentSize)
    {
        ArgumentNullException.ThrowIfNull(cluster);
        string dataDirectory = cluster.Dsm.DataDirectory
            ?? throw new InvalidOperationException("the cluster has no data directory for its temporary files (ClusterBuilder.WithDataDirectory)");
        return Storage.TempFileSpace.ForDataDirectory(dataDirectory, tempFileLimitKiB, segmentSize, cluster.Platform);
    }
}
