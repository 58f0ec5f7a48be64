/*-------------------------------------------------------------------------
 * DsmRegistry.Leftovers.cs
 *   Dynamic shared memory at the end of a cluster and after a crash: what
 *   this process detaches when it leaves the main segment, what is removed
 *   when the main segment is destroyed, and the removal of segments a
 *   crashed cluster left behind (through the stale main segment's table or
 *   the data directory's control file).
 *
 * NOTES
 *   Process exit and detach. Every DsmSegment this process still has is
 *   detached when the process detaches from the main segment (an on-detach
 *   callback), including those whose mapping is pinned. When the main
 *   segment is destroyed, every segment still in the table is removed, as
 *   dsm_postmaster_shutdown does: this also reclaims the references of
 *   processes killed with SIGKILL while attached.
 *
 *   Crash leftovers. PostgreSQL finds the old control segment through
 *   postmaster.pid. Ours is in the main segment: when ShmemSegment.Create
 *   finds a dead run's stale segment it removes every segment that table
 *   lists before removing the stale segment (RemoveLeftoversOf, called
 *   through Postmaster/ClusterLeftovers.cs). As a second record, for a
 *   stale segment someone else already removed, when the cluster has a
 *   data directory the table's live handles are mirrored in
 *   "<dataDir>/pg_dynshmem/control" (one "<kind> <handle>" per line,
 *   replaced atomically by rename) after every change of the set of live
 *   handles. The I/O runs under no lock (ItemsLock is a spinlock): the
 *   writer copies the table under ItemsLock, writes and renames, then
 *   checks the table's change count and writes again if it moved, so the
 *   last rename always carries the last state. A Create whose write fails
 *   gives its segment back and throws. The file is rewritten whole, not
 *   patched or appended to: it holds at most MaxSegments short lines (1.5
 *   KiB at the default 64), a rename replaces it atomically (an append or
 *   in-place edit could be torn by a crash, and would need a parser for
 *   half-written lines and a compaction), and one small write and rename
 *   cost about what the segment's own creation costs (shm_open, ftruncate,
 *   fallocate, mmap). Only changes of the set of live handles (create,
 *   destroy) write it, never attach or detach. Coalescing writers would
 *   not remove a write from a Create: its handle must be on disk before it
 *   returns, so a Create can only wait for another writer's rename, not
 *   skip its own; the retry loop above already folds in every change made
 *   during a write. Files are created private (pg_dynshmem 0700, the file
 *   0600, each mode given to the create call). The
 *   next Init that creates the table reads it and removes every object it
 *   names, and removes stray "mmap.*" files as dsm_cleanup_for_mmap does.
 *   Without a data directory CleanupLeftovers does the same for handles the
 *   caller recorded. A stale segment's data directory is another process's
 *   word: used only when it and its pg_dynshmem are this user's and not
 *   symbolic links (TrustedDataDirectory).
 *
 *   Mirrors src/backend/storage/ipc/dsm.c (dsm_postmaster_shutdown,
 *   dsm_cleanup_using_control_segment, dsm_backend_shutdown) and
 *   dsm_impl.c's dsm_cleanup_for_mmap.
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using System.Text;
using Microsoft.Win32.SafeHandles;
using PgIpc.Platform;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Dsm;

unsafe partial class DsmRegistry
{
    // ------------------------------------------------------------------
    // Cluster detach and destroy
    // ------------------------------------------------------------------

    private void OnClusterDetach(bool destroying)
    {
        lock (s_registryLock)
            s_bySegment.Remove(_segment);
        DsmSegment[] mine;
        lock (_attached)
            mine = [.. _attached];
        List<Exception>? errors = null;
        for (int i = mine.Length - 1; i >= 0; i--)
        {
            try { mine[i].Detach(); }
            catch (Exception ex) { (errors ??= []).Add(ex); }
        }
        if (destroying)
        {
            // dsm_postmaster_shutdown: whatever is left (pinned, or held by processes that died) goes now.
            // The entries are emptied under the locks and their OS objects removed after: an OS call (which can
            // fail, and take long) does not run under the ItemsLock spinlock.
            var doomed = new (DsmImplementation Kind, uint Handle, int Pinned)[_maxItems]; // allocated before the locks
            int nDoomed = 0;
            using (LockControl())
            {
                int used = UsedItems();
                for (int i = 0; i < used; i++)
                {
                    DsmControlItem* it = &_items[i];
                    if (it->RefCnt == 0)
                        continue;
                    if (it->Implementation != (int)DsmImplementation.MainRegion) // no OS object: goes with the main segment
                        doomed[nDoomed++] = ((DsmImplementation)it->Implementation, it->Handle, it->PinnedOsHandle);
                    it->RefCnt = 0;
                    it->Pinned = 0;
                    it->PinnedOsHandle = 0;
                    _header->DestroyedCount++;
                }
                _header->NItems = 0;
            }
            for (int i = 0; i < nDoomed; i++)
            {
                try
                {
                    // A pin's handle in the supervisor (Windows) is closed, or a destroy in a supervisor that goes on
                    // living (a test, a crash restart) would keep the section.
                    if (doomed[i].Pinned != 0)
                        _provider.UnpinSegment(doomed[i].Kind, doomed[i].Handle, _procs.SupervisorPid, doomed[i].Pinned);
                    _provider.Remove(doomed[i].Kind, doomed[i].Handle, DataDirectory);
                }
                catch (Exception ex) { (errors ??= []).Add(ex); }
            }
            if (DataDirectory is not null)
            {
                // After the locks: no file I/O under the ItemsLock spinlock.
                try { File.Delete(ControlFilePath(DataDirectory)); }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { (errors ??= []).Add(ex); }
            }
        }
        if (errors is not null)
            throw new AggregateException("detaching this process's dynamic shared memory segments failed", errors);
    }

    // ------------------------------------------------------------------
    // Crash leftovers
    // ------------------------------------------------------------------

    /// <summary>
    /// Removes the OS objects of <paramref name="handles"/> (segments a crashed cluster left behind). Returns how
    /// many existed. Segments of a live cluster must not be passed: their users would lose them.
    /// </summary>
    internal static int CleanupLeftovers(IPgIpcPlatform platform, DsmImplementation kind, string? dataDirectory, IEnumerable<uint> handles)
    {
        ArgumentNullException.ThrowIfNull(platform);
        ArgumentNullException.ThrowIfNull(handles);
        int n = 0;
        foreach (uint h in handles)
            if (h != 0 && platform.Dsm.Remove(kind, h, dataDirectory))
                n++;
        return n;
    }

    /// <summary>
    /// A stale main segment's leftovers (its cluster is dead: ShmemSegment.Create found it so): removes every
    /// segment its control table lists, then the data directory's DSM files (the control file's segments, "mmap.*",
    /// the control file itself). Reads the table without its locks: whoever held them is dead. Returns how many
    /// objects existed.
    /// </summary>
    internal static int RemoveLeftoversOf(ShmemSegment stale)
    {
        if (!stale.TryFindReadyStruct(ShmemName, out ShmemRegion region))
            return 0;
        var h = (DsmControlHeader*)region.Pointer;
        if (region.Size >= sizeof(DsmControlHeader) && h->Magic == 0)
            return 0; // never initialised: its creator died first
        // Checked as an attach checks it: a corrupt table throws ShmemCorruptException (reported by the segment layer).
        ControlLayout layout = ValidateControl(h, region, stale.Handle.Id);
        var items = (DsmControlItem*)((byte*)h + sizeof(DsmControlHeader));
        string? dataDirectory = layout.DataDirectory;
        IPgIpcPlatform platform = stale.Platform;
        if (dataDirectory is not null && !TrustedDataDirectory(platform, dataDirectory))
            dataDirectory = null; // its mmap segments and files are left alone
        int n = 0;
        int used = layout.NItems;
        for (int i = 0; i < used; i++)
        {
            // Moribund (1) included: its remover died before finishing.
            DsmControlItem it = items[i];
            var kind = (DsmImplementation)it.Implementation;
            if (it.RefCnt != 0 && it.Handle != 0 && platform.Dsm.Implementations.Contains(kind) &&
                (kind != DsmImplementation.Mmap || dataDirectory is not null) && platform.Dsm.Remove(kind, it.Handle, dataDirectory))
                n++;
        }
        if (dataDirectory is not null)
        {
            n += CleanupUsingControlFile(platform, dataDirectory);
            string dir = Path.Combine(dataDirectory, DynShmemDirectory);
            if (Directory.Exists(dir))
            {
                // The control file and a rewrite a killed process left half-done ("control.<pid>.tmp").
                foreach (string f in Directory.EnumerateFiles(dir, ControlFileName + "*"))
                    File.Delete(f);
            }
        }
        return n;
    }

    /// <summary>
    /// Whether a data directory a stale segment records may drive deletions: an absolute, normalised path to a
    /// directory owned by this user and not a symbolic link, whose pg_dynshmem (where it exists) is the same. Only
    /// the "mmap.*" and "control*" entries of that pg_dynshmem are ever deleted, and a link among them is deleted
    /// itself, never its target.
    /// </summary>
    private static bool TrustedDataDirectory(IPgIpcPlatform platform, string dataDirectory)
    {
        if (!Path.IsPathFullyQualified(dataDirectory) || dataDirectory.Contains('\0') ||
            Path.TrimEndingDirectorySeparator(Path.GetFullPath(dataDirectory)) != Path.TrimEndingDirectorySeparator(dataDirectory))
            return false; // relative, or with "." / ".." segments
        if (!Directory.Exists(dataDirectory) || !platform.Processes.IsOwnedByCurrentUser(dataDirectory))
            return false;
        string dir = Path.Combine(dataDirectory, DynShmemDirectory);
        var info = new DirectoryInfo(dir);
        if (info.LinkTarget is not null)
            return false;
        return !info.Exists || platform.Processes.IsOwnedByCurrentUser(dir);
    }

    /// <summary>The handles a cluster with data directory <paramref name="dataDirectory"/> last recorded as live.</summary>
    internal static IReadOnlyList<(DsmImplementation Kind, uint Handle)> ReadControlFile(string dataDirectory)
    {
        string path = ControlFilePath(dataDirectory);
        var list = new List<(DsmImplementation, uint)>();
        if (!File.Exists(path))
            return list;
        // Another process's file: at most one line per possible table slot is read, and a malformed line is skipped.
        foreach (string line in File.ReadLines(path).Take(1 << 20))
        {
            string[] f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length == 2 && Enum.TryParse(f[0], out DsmImplementation k) &&
                uint.TryParse(f[1], NumberStyles.None, CultureInfo.InvariantCulture, out uint h) && h != 0)
                list.Add((k, h));
        }
        return list;
    }

    /// <summary>dsm_cleanup_using_control_segment + dsm_cleanup_for_mmap, from the control file (see file notes).</summary>
    private static int CleanupUsingControlFile(IPgIpcPlatform platform, string dataDirectory)
    {
        int n = 0;
        foreach ((DsmImplementation kind, uint handle) in ReadControlFile(dataDirectory))
        {
            if (platform.Dsm.Implementations.Contains(kind) && platform.Dsm.Remove(kind, handle, dataDirectory))
                n++;
        }
        string dir = Path.Combine(dataDirectory, DynShmemDirectory);
        if (Directory.Exists(dir))
        {
            foreach (string f in Directory.EnumerateFiles(dir, "mmap.*"))
            {
                File.Delete(f);
                n++;
            }
        }
        return n;
    }

    private static string ControlFilePath(string dataDirectory) => Path.Combine(dataDirectory, DynShmemDirectory, ControlFileName);

    private static long s_tmpSequence;

    /// <summary>
    /// Rewrites the control file from the table (see file notes), holding no lock during the file I/O: the live
    /// handles are copied under ItemsLock, written to a private temporary file and renamed over the control file;
    /// then, if the table changed meanwhile (another writer's rename may have come before this one's), again, so
    /// that the last rename always carries the table's last state. Throws <see cref="PgIpcException"/> (naming
    /// the file) when the file cannot be written.
    /// </summary>
    private void SyncControlFile()
    {
        if (DataDirectory is null)
            return;
        string path = ControlFilePath(DataDirectory);
        int max = _maxItems;
        var items = new DsmControlItem[max]; // allocated before the spinlock
        long seq = SnapshotItems(items, out int n);
        while (true)
        {
            var sb = new StringBuilder();
            for (int i = 0; i < n; i++)
                if (items[i].RefCnt != 0 && items[i].Implementation != (int)DsmImplementation.MainRegion)
                    sb.Append(((DsmImplementation)items[i].Implementation).ToString()).Append(' ')
                      .Append(items[i].Handle.ToString(CultureInfo.InvariantCulture)).Append('\n');
            string tmp = path + "." + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "."
                + Interlocked.Increment(ref s_tmpSequence).ToString(CultureInfo.InvariantCulture) + ".tmp";
            try
            {
                // pg_dynshmem 0700 and the file 0600, each made with its mode (no wider window); renamed over the old one.
                IFileSync files = _segment.Platform.Files;
                files.CreatePrivateDirectory(Path.GetDirectoryName(path)!);
                using (SafeFileHandle h = files.OpenPrivateFile(tmp, FileMode.CreateNew, FileShare.ReadWrite | FileShare.Delete, FileOptions.None))
                    RandomAccess.Write(h, Encoding.UTF8.GetBytes(sb.ToString()), 0);
                RenameOver(tmp, path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                try { File.Delete(tmp); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* best effort: the error below is the one to report */ }
                throw new PgIpcException($"could not write the dynamic shared memory control file {path}: {ex.Message}", ex);
            }
            long now = SnapshotItems(items, out n);
            if (now == seq)
                return;
            seq = now;
        }
    }

    /// <summary>
    /// Renames <paramref name="tmp"/> over <paramref name="path"/>. On Windows a replace fails with access denied or a
    /// sharing violation while another process or thread is replacing or reading the same file; those are retried
    /// for up to 2 s, as PostgreSQL's pgrename does on Windows. Other errors (and the last retry's) propagate.
    /// </summary>
    private static void RenameOver(string tmp, string path)
    {
        const int SharingViolation = unchecked((int)0x80070020), LockViolation = unchecked((int)0x80070021);
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                File.Move(tmp, path, overwrite: true);
                return;
            }
            catch (Exception ex) when (attempt < 200 && (ex is UnauthorizedAccessException
                || (ex is IOException && ex.HResult is SharingViolation or LockViolation)))
            {
                Thread.Sleep(10);
            }
        }
    }

    /// <summary>
    /// Copies the used items into <paramref name="items"/> under ItemsLock (a copy: cannot throw) and returns the
    /// table's change count (created + destroyed: every change of the set of live handles bumps one of them).
    /// </summary>
    private long SnapshotItems(DsmControlItem[] items, out int n)
    {
        fixed (DsmControlItem* dst = items)
        {
            SLock.Acquire(ref _header->ItemsLock, "DSM control items");
            n = Math.Clamp(_header->NItems, 0, items.Length);
            Buffer.MemoryCopy(_items, dst, (long)items.Length * sizeof(DsmControlItem), (long)n * sizeof(DsmControlItem));
            long seq = _header->CreatedCount + _header->DestroyedCount;
            SLock.Release(ref _header->ItemsLock);
            return seq;
        }
    }
}
