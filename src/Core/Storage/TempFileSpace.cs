/*-------------------------------------------------------------------------
 * TempFileSpace.cs
 *   Where a process's temporary files live and how much of the disk they
 *   may take: the temp directory of a data directory (base/pgsql_tmp),
 *   file naming, the temp_file_limit accounting, the deletion of what a
 *   process leaves behind at its exit, and RemovePgTempFiles for the
 *   supervisor's start and crash restart.
 *
 * NOTES
 *   Mirrors the temporary-file part of src/backend/storage/file/fd.c:
 *     - Names. A temporary file is "pgsql_tmp<pid>.<n>" in the temp
 *       directory (PG_TEMP_FILES_DIR, PG_TEMP_FILE_PREFIX), n a counter
 *       of this process (tempFileCounter), so two processes never collide
 *       and a name alone says which process made the file. A shared file
 *       set is a directory "pgsql_tmp<pid>.<n>.sharedfileset" (fileset.c).
 *     - The directory is made on first use, 0700, as the data directory
 *       (PostgreSQL mkdirs pgsql_tmp when the first create fails); files
 *       are created 0600 in the open call itself and never through a
 *       symbolic link (IFileSync.OpenPrivateFile), as relation files.
 *     - temp_file_limit. A per-process limit in KiB, -1 for none. Every
 *       byte by which a write extends a temporary file this process
 *       created is added to the process's temporary_files_size before the
 *       write, and refused (TempFileLimitExceededException) when the sum
 *       would pass the limit; closing the file gives its bytes back. One
 *       space per process is the intended use; the counters are atomic,
 *       so the participant threads of a process may share it.
 *     - Cleanup. A file is deleted when its BufFile is closed (or
 *       finalised); what is still open at the process's orderly exit is
 *       deleted then (AtProcExit_Files), and what a killed process left is
 *       deleted by RemoveTempFiles, which the supervisor runs when it
 *       creates shared memory, at start and at each crash restart
 *       (RemovePgTempFiles with remove_temp_files_after_crash = on): no
 *       process of the cluster is alive then, so nothing there is in use.
 *       RemoveTempFiles does not follow a symbolic link inside the temp
 *       directory: a link is removed, not what it points to.
 *
 *   Windows: a file cannot be deleted while a handle without
 *   FILE_SHARE_DELETE is open on it; every temporary file is opened with
 *   FileShare.Delete, and closed before it is deleted anyway.
 *-------------------------------------------------------------------------
 */
using System.Collections.Concurrent;
using PgIpc.Platform;

namespace PgIpc.Storage;

/// <summary>A process's temporary-file directory, naming and temp_file_limit (see the file notes).</summary>
public sealed class TempFileSpace
{
    /// <summary>PG_TEMP_FILES_DIR: the temp directory's name, under the data directory's "base".</summary>
    public const string TempDirectoryName = "pgsql_tmp";

    /// <summary>PG_TEMP_FILE_PREFIX: every temporary file and file-set directory starts with it.</summary>
    public const string TempFilePrefix = "pgsql_tmp";

    /// <summary>MAX_PHYSICAL_FILESIZE: the size of a BufFile's segment files (1 GiB).</summary>
    public const long DefaultSegmentSize = 1L << 30;

    // Process-wide: the name counter (tempFileCounter) and every temporary file not yet deleted, for the exit hook.
    private static long s_counter;
    private static readonly ConcurrentDictionary<string, byte> s_live = new();
    private static int s_exitHookInstalled;

    private long _bytes; // temporary_files_size: atomic (Interlocked); no ordering partner, a counter
    private int _directoryMade; // 1 once the directory was created by this space (a hint: creating again is harmless)

    /// <summary>
    /// A space over <paramref name="directory"/> (created 0700 on first use). <paramref name="tempFileLimitKiB"/>:
    /// temp_file_limit in KiB, -1 for none. <paramref name="segmentSize"/>: the size of a BufFile's segment files
    /// (1 GiB; smaller for tests), a multiple of <see cref="BufFile.BlockSize"/>.
    /// </summary>
    public TempFileSpace(string directory, long tempFileLimitKiB = -1, long segmentSize = DefaultSegmentSize, IPgIpcPlatform? platform = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentOutOfRangeException.ThrowIfLessThan(tempFileLimitKiB, -1);
        if (segmentSize < BufFile.BlockSize || segmentSize % BufFile.BlockSize != 0)
            throw new ArgumentOutOfRangeException(nameof(segmentSize), segmentSize, $"a positive multiple of {BufFile.BlockSize}");
        Directory = Path.GetFullPath(directory);
        TempFileLimitKiB = tempFileLimitKiB;
        SegmentSize = segmentSize;
        Files = (platform ?? PgIpcPlatform.Current).Files;
        if (Interlocked.Exchange(ref s_exitHookInstalled, 1) == 0)
            AppDomain.CurrentDomain.ProcessExit += (_, _) => DeleteLiveFiles();
    }

    /// <summary>The temp directory of <paramref name="dataDirectory"/>: base/pgsql_tmp.</summary>
    public static string TempDirectoryOf(string dataDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(dataDirectory);
        return Path.Combine(dataDirectory, "base", TempDirectoryName);
    }

    /// <summary>A space in the temp directory of <paramref name="dataDirectory"/> (see the constructor for the rest).</summary>
    public static TempFileSpace ForDataDirectory(string dataDirectory, long tempFileLimitKiB = -1, long segmentSize = DefaultSegmentSize, IPgIpcPlatform? platform = null)
        => new(TempDirectoryOf(dataDirectory), tempFileLimitKiB, segmentSize, platform);

    /// <summary>The directory the files are made in.</summary>
    public string Directory { get; }

    /// <summary>temp_file_limit in KiB; -1: no limit.</summary>
    public long TempFileLimitKiB { get; }

    /// <summary>The size of each segment file of a BufFile made here.</summary>
    public long SegmentSize { get; }

    /// <summary>temporary_files_size: bytes of the temporary files this space's files hold now (created, not yet closed).</summary>
    public long TemporaryFilesSize => Interlocked.Read(ref _bytes);

    /// <summary>Temporary files of this process not yet deleted (every space's).</summary>
    public static int LiveFileCount => s_live.Count;

    internal IFileSync Files { get; }

    /// <summary>Makes the directory (0700, parents too) unless this space already did.</summary>
    internal void EnsureDirectory()
    {
        if (Volatile.Read(ref _directoryMade) != 0 && System.IO.Directory.Exists(Directory))
            return;
        Files.CreatePrivateDirectory(Directory);
        Volatile.Write(ref _directoryMade, 1);
    }

    /// <summary>The next "pgsql_tmp&lt;pid&gt;.&lt;n&gt;" of this process.</summary>
    internal static string NextName() => $"{TempFilePrefix}{Environment.ProcessId}.{Interlocked.Increment(ref s_counter)}";

    /// <summary>The next counter value (a file set's number).</summary>
    internal static uint NextNumber() => (uint)Interlocked.Increment(ref s_counter);

    /// <summary>Counts <paramref name="bytes"/> more against temp_file_limit, or throws without counting them.</summary>
    internal void Reserve(long bytes, string path)
    {
        if (bytes <= 0)
            return;
        long after = Interlocked.Add(ref _bytes, bytes);
        if (TempFileLimitKiB >= 0 && after > TempFileLimitKiB * 1024)
        {
            Interlocked.Add(ref _bytes, -bytes);
            throw new TempFileLimitExceededException(path, TempFileLimitKiB, after - bytes, bytes);
        }
    }

    /// <summary>Gives back bytes counted by <see cref="Reserve"/>.</summary>
    internal void Release(long bytes)
    {
        if (bytes > 0)
            Interlocked.Add(ref _bytes, -bytes);
    }

    /// <summary>Remembers a file to delete at the process's exit if nothing deletes it before.</summary>
    internal static void Track(string path) => s_live[path] = 0;

    /// <summary>Forgets a file <see cref="Track"/>ed (it was deleted, or handed to a file set).</summary>
    internal static void Untrack(string path) => s_live.TryRemove(path, out _);

    private static void DeleteLiveFiles()
    {
        foreach (string path in s_live.Keys)
        {
            try
            {
                File.Delete(path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Left for RemoveTempFiles at the next start.
            }
        }
        s_live.Clear();
    }

    /// <summary>
    /// RemovePgTempFiles: deletes every temporary file and file-set directory (names starting with pgsql_tmp) in
    /// the temp directory of <paramref name="dataDirectory"/>, without following symbolic links. Only when no
    /// process of the cluster runs (the supervisor calls it as it creates shared memory). Returns how many entries
    /// were removed; entries that cannot be removed are left (a warning's worth, not an error).
    /// </summary>
    public static int RemoveTempFiles(string dataDirectory)
    {
        string dir = TempDirectoryOf(dataDirectory);
        if (!System.IO.Directory.Exists(dir))
            return 0;
        int removed = 0;
        IEnumerable<string> entries;
        try
        {
            entries = [.. System.IO.Directory.EnumerateFileSystemEntries(dir, TempFilePrefix + "*")];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return 0;
        }
        foreach (string entry in entries)
        {
            try
            {
                var info = new FileInfo(entry);
                if ((info.Attributes & FileAttributes.Directory) != 0 && (info.Attributes & FileAttributes.ReparsePoint) == 0)
                    System.IO.Directory.Delete(entry, recursive: true); // a file set; links inside are removed, not followed
                else
                    File.Delete(entry); // a file, or a link (the link itself)
                removed++;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // In use (Windows) or not ours: leave it.
            }
        }
        return removed;
    }
}
