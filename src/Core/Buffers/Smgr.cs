/*-------------------------------------------------------------------------
 * Smgr.cs
 *   The storage manager: relation forks as files under a data directory.
 *
 * NOTES
 *   As md.c: each relation fork is a chain of segment files of at most
 *   BlocksPerSegment blocks (1 GiB of 8 KiB blocks): "<rel>", "<rel>.1",
 *   "<rel>.2", ... with "_fsm", "_vm" or "_init" after the relation number
 *   for the other forks. Reads and writes are positional (RandomAccess, no
 *   shared file position), so participant threads share one handle.
 *   Writes, fsyncs and creations go through DurableFileIO (a test's
 *   power-loss layer sees them; direct calls otherwise).
 *
 *   A block that is not on disk is an error naming the relation, fork and
 *   block, never a silent zero page: a missing segment file, or a read that
 *   returns fewer than 8192 bytes. Blocks are added only by Extend (the
 *   buffer manager zero-extends under the relation's extension lock).
 *
 *   Files written since the last Sync are remembered; Sync flushes them to
 *   disk. With a checkpointer attached (Checkpointer.Init sets
 *   SyncRequests), every write also forwards a request for its segment file
 *   to the checkpointer's shared queue (register_dirty_segment /
 *   ForwardSyncRequest), once per file per absorb cycle: the checkpointer
 *   absorbs the queue into its own Smgr (RememberSyncRequest) and its Sync
 *   fsyncs the files every process wrote. When the queue is full the writer
 *   fsyncs the file itself, as md.c does.
 *
 *   Durability (data_sync_retry = off, after PostgreSQL's 2018 fsync
 *   incident): a failed fsync of a data file is a DataSyncFailedException,
 *   never retried as if nothing happened. Linux reports a write-back error
 *   to one fsync only and may have dropped the pages, so a second fsync
 *   would "succeed" over lost data. The file stays pending (a later Sync
 *   fsyncs it again once its pages are rewritten; see Checkpointer.Loop.cs
 *   for what the checkpointer does), and the caller must treat the error as
 *   fatal. Directory entries: a file this process creates (a relation's
 *   first segment, or a new segment when a fork grows past one) has its
 *   directory fsynced before the creating call returns (fsync_fname of the
 *   parent, through the platform's IFileSync, since .NET cannot open a
 *   directory on Unix), so a checkpoint that fsyncs the file's data can
 *   never outlive the file's name after a power loss, and NBlocks never
 *   stops at a vanished middle segment. Creation is rare (once per 1 GiB),
 *   so the fsync is done there, under the handle-table lock, rather than
 *   queued for the checkpoint: a new segment is made by Extend under the
 *   buffer manager's extension lock, which keeps every other writer off the
 *   file until its name is durable (Create, smgrcreate, is called before a
 *   relation is used, by the process that makes it). A failed directory
 *   fsync is thrown as a DataSyncFailedException (as fatal as a file's);
 *   for a host that carries on regardless, it stays pending and the next
 *   extension or Sync of this process fsyncs the directory again.
 *
 *   Open files (fd.c's virtual file descriptors, max_files_per_process).
 *   A process may touch more segment files than it may hold descriptors
 *   for, so at most MaxOpenFiles are kept open: a table of open files and
 *   an LRU list (most recently used first), both under the handle-table
 *   lock. Using a file moves it to the front; opening one more than the
 *   limit closes the one at the back; a closed file is opened again, by
 *   name, at its next use. The pending-fsync set (_dirty) is kept by key,
 *   not by descriptor, so closing a file never loses its sync: Sync reopens
 *   every file it must fsync (as md.c's mdsyncfiletag opens by path). On
 *   Linux since 4.13 a write-back error is recorded on the file and
 *   reported to the next fsync of any descriptor opened before it was seen,
 *   a new one included (4.16), so the reopened descriptor's fsync still
 *   fails after an error, as PostgreSQL relies on too. I/O runs outside the
 *   lock: the handle is taken with DangerousAddRef under the lock and
 *   released after the call, so an LRU close while another thread reads
 *   only marks the handle, and the descriptor closes when that I/O ends
 *   (threads in flight may hold a few more than the limit, briefly).
 *
 *   Files are private: the data directory is created 0700 and checked at
 *   open (owner and mode, DataDirectoryCheck), a new segment file is created
 *   0600 in the open call itself, and an existing one is opened without
 *   following a symbolic link (IFileSync.OpenPrivateFile: O_NOFOLLOW), so a
 *   link planted among the relation files is refused, not followed.
 *
 *   One Smgr per process (it belongs to the process's BufferPool view); the
 *   handle table is guarded by a monitor, I/O itself is lock-free.
 *
 *   Mirrors src/backend/storage/smgr/smgr.c and md.c.
 *-------------------------------------------------------------------------
 */
using Microsoft.Win32.SafeHandles;
using PgIpc.Platform;

namespace PgIpc.Buffers;

/// <summary>
/// A shared queue of fsync requests (the checkpointer's). Implementations are safe to call from any thread of any
/// process attached to the cluster.
/// </summary>
public interface ISyncRequestQueue
{
    /// <summary>Bumped each time the queue is absorbed (an atomic read).</summary>
    uint AbsorbCycle { get; }

    /// <summary>Queues a request for one segment file; false when the queue is full. <paramref name="cycle"/>: the cycle it was queued in.</summary>
    bool TryForward(uint rel, ForkNumber fork, uint segno, out uint cycle);
}

/// <summary>md.c: relation forks as segment files under a data directory.</summary>
public sealed class Smgr : IDisposable
{
    /// <summary>Blocks per segment file (RELSEG_SIZE: 1 GiB of 8 KiB blocks).</summary>
    public const int DefaultBlocksPerSegment = 131072;

    /// <summary>The default <see cref="MaxOpenFiles"/>: well under the usual soft limit of 1024 descriptors.</summary>
    public const int DefaultMaxOpenFiles = 64;

    // The open files (_lock): the table by key, and the LRU list they are also on, most recently used first.
    private readonly Dictionary<(uint Rel, ForkNumber Fork, uint Seg), LinkedListNode<OpenFile>> _files = [];
    private readonly LinkedList<OpenFile> _lru = new();
    private readonly IFileSync _fileSystem;
    private readonly HashSet<(uint Rel, ForkNumber Fork, uint Seg)> _dirty = [];
    // Files whose sync request this process forwarded, with the queue's absorb cycle at the time (_lock).
    private readonly Dictionary<(uint Rel, ForkNumber Fork, uint Seg), uint> _forwarded = [];
    private readonly object _lock = new();
    private bool _directorySyncPending; // _lock: a file was created and its directory not yet fsynced
    private long _reads;
    private long _writes;
    private bool _disposed;

    /// <summary>
    /// Opens the storage manager over <paramref name="dataDirectory"/>, created 0700 when missing; an existing one
    /// must be this user's and private (<see cref="DataDirectoryPermissionException"/> otherwise). At most
    /// <paramref name="maxOpenFiles"/> segment files are kept open at once (see the banner).
    /// </summary>
    public Smgr(string dataDirectory, int blocksPerSegment = DefaultBlocksPerSegment, int maxOpenFiles = DefaultMaxOpenFiles)
        : this(dataDirectory, blocksPerSegment, maxOpenFiles, PgIpcPlatform.Current.Files)
    {
    }

    /// <param name="dataDirectory">The directory of the relation files.</param>
    /// <param name="blocksPerSegment">Blocks in one segment file.</param>
    /// <param name="maxOpenFiles">Segment files kept open at once.</param>
    /// <param name="fileSystem">How files are created, opened and checked (the segment's platform).</param>
    internal Smgr(string dataDirectory, int blocksPerSegment, int maxOpenFiles, IFileSync fileSystem)
    {
        ArgumentException.ThrowIfNullOrEmpty(dataDirectory);
        ArgumentOutOfRangeException.ThrowIfLessThan(blocksPerSegment, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxOpenFiles, 1);
        ArgumentNullException.ThrowIfNull(fileSystem);
        DataDirectory = dataDirectory;
        BlocksPerSegment = blocksPerSegment;
        MaxOpenFiles = maxOpenFiles;
        _fileSystem = fileSystem;
        DataDirectoryCheck.CreateOrCheck(fileSystem, dataDirectory);
    }

    /// <summary>The directory that holds the relation files.</summary>
    public string DataDirectory { get; }

    /// <summary>The number of blocks in one segment file (RELSEG_SIZE).</summary>
    public int BlocksPerSegment { get; }

    /// <summary>Most segment files this Smgr keeps open (max_files_per_process); the least recently used is closed first.</summary>
    public int MaxOpenFiles { get; }

    /// <summary>Segment files open now (at most <see cref="MaxOpenFiles"/>).</summary>
    public int OpenFiles
    {
        get
        {
            lock (_lock)
                return _files.Count;
        }
    }

    /// <summary>An open segment file on the LRU list.</summary>
    private sealed class OpenFile((uint Rel, ForkNumber Fork, uint Seg) key, SafeFileHandle handle)
    {
        public readonly (uint Rel, ForkNumber Fork, uint Seg) Key = key;
        public readonly SafeFileHandle Handle = handle;
    }

    /// <summary>Blocks read from disk by this process (pg_stat_io reads).</summary>
    public long Reads => Interlocked.Read(ref _reads);

    /// <summary>Blocks written to disk by this process.</summary>
    public long Writes => Interlocked.Read(ref _writes);

    /// <summary>Called before each block read (tests widen races with it).</summary>
    internal Action<BufferTag>? BeforeRead;

    /// <summary>Called before each block write or extension (tests record the write order with it).</summary>
    internal Action<BufferTag>? BeforeWrite;

    /// <summary>
    /// Fault injection for the fsync path only (tests): called with the file's path before each file fsync; a
    /// non-null result is thrown instead of fsyncing (an IOException as EIO from fsync(2)). Null: no cost.
    /// </summary>
    internal Func<string, Exception?>? FsyncFault;

    /// <summary>Called after each directory fsync with the directory's path (tests observe the directory fsyncs with it).</summary>
    internal Action<string>? AfterDirectoryFsync;

    /// <summary>
    /// How this Smgr fsyncs the data directory after creating a file (the segment's platform; BufferPool sets it).
    /// Null: no directory fsync (a standalone Smgr, local buffers: files that need not survive a crash).
    /// </summary>
    internal IFileSync? Files { get; set; }

    /// <summary>Where writes forward their fsync requests (the checkpointer's queue); null: only this process's Sync fsyncs.</summary>
    internal ISyncRequestQueue? SyncRequests { get; set; }

    /// <summary>The path of a fork's segment file (relpath + segment suffix).</summary>
    public string PathOf(uint rel, ForkNumber fork, uint segno)
    {
        string name = fork switch
        {
            ForkNumber.Main => rel.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ForkNumber.FreeSpaceMap => $"{rel}_fsm",
            ForkNumber.VisibilityMap => $"{rel}_vm",
            ForkNumber.Init => $"{rel}_init",
            _ => throw new ArgumentOutOfRangeException(nameof(fork), fork, $"unknown fork {(int)fork} of relation {rel}"),
        };
        return Path.Combine(DataDirectory, segno == 0 ? name : $"{name}.{segno}");
    }

    /// <summary>True when the fork's first segment exists (smgrexists).</summary>
    public bool Exists(uint rel, ForkNumber fork) => File.Exists(PathOf(rel, fork, 0));

    /// <summary>Creates the fork's first segment, empty, if missing (smgrcreate).</summary>
    public void Create(uint rel, ForkNumber fork)
    {
        lock (_lock)
            _ = OpenLocked(rel, fork, 0, create: true);
    }

    /// <summary>Reads one block into <paramref name="page"/>; throws naming the block when it is not on disk (mdreadv).</summary>
    public void Read(BufferTag tag, Span<byte> page)
    {
        CheckPage(page);
        BeforeRead?.Invoke(tag);
        uint segno = tag.BlockNumber / (uint)BlocksPerSegment;
        // The path is built only for an error message: a read allocates nothing.
        SafeFileHandle? h = Acquire(tag.RelNumber, tag.Fork, segno, create: false);
        if (h is null)
            throw new SmgrException(tag, $"could not read block {tag.BlockNumber}: file \"{PathOf(tag.RelNumber, tag.Fork, segno)}\" does not exist");
        long offset = (long)(tag.BlockNumber % (uint)BlocksPerSegment) * BufferPool.BlockSize;
        int total = 0;
        try
        {
            while (total < page.Length)
            {
                int n = RandomAccess.Read(h, page[total..], offset + total);
                if (n == 0)
                    break;
                total += n;
            }
        }
        catch (IOException e)
        {
            throw new SmgrException(tag, $"could not read block {tag.BlockNumber} in file \"{PathOf(tag.RelNumber, tag.Fork, segno)}\": {e.Message}", e);
        }
        finally
        {
            h.DangerousRelease();
        }
        if (total < page.Length)
            throw new SmgrException(tag, $"could not read block {tag.BlockNumber} in file \"{PathOf(tag.RelNumber, tag.Fork, segno)}\": read only {total} of {page.Length} bytes");
        Interlocked.Increment(ref _reads);
    }

    /// <summary>
    /// Reads one block and verifies its checksum (mdreadv, then PageIsVerified): a mismatch is a
    /// <see cref="PageChecksumException"/> naming the block and its file; an all-zero page passes.
    /// </summary>
    public void ReadVerified(BufferTag tag, Span<byte> page)
    {
        Read(tag, page);
        if (!PageChecksum.Verify(page, tag.BlockNumber, out ushort stored, out ushort computed))
            throw new PageChecksumException(tag, stored, computed, PathOf(tag.RelNumber, tag.Fork, tag.BlockNumber / (uint)BlocksPerSegment));
    }

    /// <summary>Writes one existing block (mdwritev).</summary>
    public void Write(BufferTag tag, ReadOnlySpan<byte> page) => WriteBlock(tag, page, extend: false);

    /// <summary>Adds a block at the end of the fork (mdextend); <paramref name="tag"/>'s block must be the current size.</summary>
    public void Extend(BufferTag tag, ReadOnlySpan<byte> page) => WriteBlock(tag, page, extend: true);

    private void WriteBlock(BufferTag tag, ReadOnlySpan<byte> page, bool extend)
    {
        CheckPage(page);
        BeforeWrite?.Invoke(tag);
        uint segno = tag.BlockNumber / (uint)BlocksPerSegment;
        // The path is built only for an error message: a write allocates nothing.
        SafeFileHandle? h;
        lock (_lock)
        {
            h = AcquireLocked(tag.RelNumber, tag.Fork, segno, create: extend);
            if (h is not null)
                _dirty.Add((tag.RelNumber, tag.Fork, segno));
        }
        if (h is null)
            throw new SmgrException(tag, $"could not write block {tag.BlockNumber}: file \"{PathOf(tag.RelNumber, tag.Fork, segno)}\" does not exist");
        try
        {
            long offset = (long)(tag.BlockNumber % (uint)BlocksPerSegment) * BufferPool.BlockSize;
            try
            {
                if (!extend && RandomAccess.GetLength(h) < offset + page.Length)
                    throw new SmgrException(tag, $"could not write block {tag.BlockNumber} in file \"{PathOf(tag.RelNumber, tag.Fork, segno)}\": the block is beyond the end of the file");
                DurableFileIO.Write(h, page, offset);
            }
            catch (IOException e)
            {
                throw new SmgrException(tag, $"could not write block {tag.BlockNumber} in file \"{PathOf(tag.RelNumber, tag.Fork, segno)}\": {e.Message}", e);
            }
            Interlocked.Increment(ref _writes);
            if (SyncRequests is { } queue)
                RegisterDirtySegment(queue, tag, (tag.RelNumber, tag.Fork, segno), h);
        }
        finally
        {
            h.DangerousRelease();
        }
    }

    /// <summary>
    /// register_dirty_segment: tells the checkpointer this file needs an fsync, unless this process already did
    /// in the current absorb cycle (the request is then still queued: absorbing bumps the cycle, and the
    /// write we just made happened before we read the cycle, so that absorb's checkpoint fsyncs it).
    /// </summary>
    private void RegisterDirtySegment(ISyncRequestQueue queue, BufferTag tag, (uint Rel, ForkNumber Fork, uint Seg) key,
        SafeFileHandle h)
    {
        uint cycle = queue.AbsorbCycle;
        lock (_lock)
        {
            if (_forwarded.TryGetValue(key, out uint c) && c == cycle)
                return;
        }
        if (queue.TryForward(key.Rel, key.Fork, key.Seg, out uint enqueuedIn))
        {
            lock (_lock)
                _forwarded[key] = enqueuedIn;
            return;
        }
        // The queue is full: fsync here (md.c does the same when ForwardSyncRequest fails).
        try
        {
            FlushToDisk(h, key.Rel, key.Fork, key.Seg);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The write is done but maybe not durable, and a retried fsync would not tell: fatal (data_sync_retry = off).
            throw new DataSyncFailedException(PathOf(key.Rel, key.Fork, key.Seg), e);
        }
    }

    /// <summary>Remembers that a file needs an fsync at the next <see cref="Sync"/> (RememberSyncRequest; the checkpointer's absorb).</summary>
    internal void RememberSyncRequest(uint rel, ForkNumber fork, uint segno)
    {
        if ((uint)fork > (uint)BufferTag.MaxFork)
            throw new ArgumentOutOfRangeException(nameof(fork), fork, $"unknown fork {(int)fork} of relation {rel}");
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _dirty.Add((rel, fork, segno));
        }
    }

    /// <summary>Files waiting for the next <see cref="Sync"/>.</summary>
    public int PendingSyncs
    {
        get
        {
            lock (_lock)
                return _dirty.Count;
        }
    }

    /// <summary>The fork's size in blocks (mdnblocks): full segments plus the last one's blocks; 0 when absent.</summary>
    public uint NBlocks(uint rel, ForkNumber fork)
    {
        uint blocks = 0;
        for (uint segno = 0; ; segno++)
        {
            SafeFileHandle? h = Acquire(rel, fork, segno, create: false);
            if (h is null)
                return blocks;
            long n;
            try
            {
                n = RandomAccess.GetLength(h) / BufferPool.BlockSize;
            }
            finally
            {
                h.DangerousRelease();
            }
            blocks += (uint)n;
            if (n < BlocksPerSegment)
                return blocks;
        }
    }

    /// <summary>
    /// Flushes every file written since the last call, or remembered with <see cref="RememberSyncRequest"/>, to disk
    /// (the fsync a checkpoint does); returns how many. A file that no longer exists is skipped (dropped). On an
    /// fsync error the failed file and those not yet synced stay pending and a <see cref="DataSyncFailedException"/>
    /// is thrown: the pages written to that file since its last successful fsync may be lost, and a later fsync that
    /// succeeds does not prove otherwise (the caller treats it as fatal; see the banner).
    /// </summary>
    public int Sync()
    {
        lock (_lock)
        {
            if (_directorySyncPending)
                FsyncDataDirectoryLocked();
        }
        List<(uint Rel, ForkNumber Fork, uint Seg)> keys;
        lock (_lock)
        {
            keys = [.. _dirty];
            _dirty.Clear();
        }
        keys.Sort();
        int synced = 0;
        for (int i = 0; i < keys.Count; i++)
        {
            (uint rel, ForkNumber fork, uint seg) = keys[i];
            try
            {
                // A file the LRU closed since it was written is opened again here: its sync is never dropped.
                SafeFileHandle? h = Acquire(rel, fork, seg, create: false);
                if (h is null)
                    continue;
                try
                {
                    FlushToDisk(h, rel, fork, seg);
                }
                finally
                {
                    h.DangerousRelease();
                }
                synced++;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                lock (_lock)
                    for (int j = i; j < keys.Count; j++)
                        _dirty.Add(keys[j]);
                throw new DataSyncFailedException(PathOf(rel, fork, seg), e);
            }
        }
        return synced;
    }

    /// <summary>fsync(2) of one segment file (FileSync), through the fault-injection hook when a test set one.</summary>
    private void FlushToDisk(SafeFileHandle h, uint rel, ForkNumber fork, uint seg)
    {
        if (FsyncFault is { } fault && fault(PathOf(rel, fork, seg)) is { } e)
            throw e;
        DurableFileIO.Flush(h);
    }

    /// <summary>
    /// The file's handle with a reference taken (DangerousAddRef: the caller releases it after its I/O), opening
    /// the file if it is not open; null when it does not exist and <paramref name="create"/> is false.
    /// </summary>
    private SafeFileHandle? Acquire(uint rel, ForkNumber fork, uint segno, bool create)
    {
        lock (_lock)
            return AcquireLocked(rel, fork, segno, create);
    }

    private SafeFileHandle? AcquireLocked(uint rel, ForkNumber fork, uint segno, bool create)
    {
        SafeFileHandle? h = OpenLocked(rel, fork, segno, create);
        if (h is null)
            return null;
        bool added = false;
        h.DangerousAddRef(ref added); // cannot fail: the handle is open and only closed under _lock
        return h;
    }

    /// <summary>
    /// The file's handle, opened (and made most recently used) if need be, closing the least recently used file when
    /// <see cref="MaxOpenFiles"/> are open; null when it does not exist and <paramref name="create"/> is false. Under _lock.
    /// </summary>
    private SafeFileHandle? OpenLocked(uint rel, ForkNumber fork, uint segno, bool create)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_files.TryGetValue((rel, fork, segno), out LinkedListNode<OpenFile>? node))
        {
            if (node != _lru.First)
            {
                _lru.Remove(node); // reuses the node: the hit path allocates nothing
                _lru.AddFirst(node);
            }
            if (create && _directorySyncPending)
                FsyncDataDirectoryLocked(); // a creation whose directory fsync failed: retried by the next extension
            return node.Value.Handle;
        }
        string path = PathOf(rel, fork, segno);
        bool exists = File.Exists(path);
        if (!create && !exists)
            return null;
        // FileShare.ReadWrite | Delete: every process of the cluster opens the same files. CreateNew tells this
        // process it made the file (and owes its directory an fsync); losing a creation race opens the winner's.
        // CreateNew makes it 0600 from the start; Open refuses a symbolic link (IFileSync.OpenPrivateFile).
        bool created = false;
        SafeFileHandle? h = null;
        if (!exists)
        {
            try
            {
                h = DurableFileIO.Opened(_fileSystem.OpenPrivateFile(path, FileMode.CreateNew, FileShare.ReadWrite | FileShare.Delete, FileOptions.RandomAccess), path, created: true);
                created = true;
            }
            catch (IOException) when (File.Exists(path))
            {
            }
        }
        h ??= DurableFileIO.Opened(_fileSystem.OpenPrivateFile(path, FileMode.Open, FileShare.ReadWrite | FileShare.Delete, FileOptions.RandomAccess), path, created: false);
        while (_files.Count >= MaxOpenFiles && _lru.Last is { } victim)
        {
            // FileClose of the least recently used: its pending fsync stays in _dirty, by key (see the banner).
            _lru.RemoveLast();
            _files.Remove(victim.Value.Key);
            victim.Value.Handle.Dispose(); // closes now, or when an I/O in flight releases its reference
        }
        _files.Add((rel, fork, segno), _lru.AddFirst(new OpenFile((rel, fork, segno), h)));
        if (created)
            _directorySyncPending = true;
        if (create && _directorySyncPending)
            FsyncDataDirectoryLocked();
        return h;
    }

    /// <summary>
    /// fsync_fname(DataDirectory, isdir): makes the names of the files created so far durable. Under _lock (creation
    /// is rare); a failure leaves the fsync pending and throws <see cref="DataSyncFailedException"/>.
    /// </summary>
    private void FsyncDataDirectoryLocked()
    {
        if (Files is not { } files)
        {
            _directorySyncPending = false;
            return;
        }
        try
        {
            DurableFileIO.FsyncDirectory(files, DataDirectory);
        }
        catch (Exception e) when (e is PgIpcOsException or IOException or UnauthorizedAccessException)
        {
            throw new DataSyncFailedException(DataDirectory, e);
        }
        _directorySyncPending = false;
        AfterDirectoryFsync?.Invoke(DataDirectory);
    }

    private static void CheckPage(ReadOnlySpan<byte> page)
    {
        if (page.Length != BufferPool.BlockSize)
            throw new ArgumentException($"a block is {BufferPool.BlockSize} bytes, not {page.Length}", nameof(page));
    }

    /// <summary>Closes every file (smgrcloseall).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
                return;
            _disposed = true;
            foreach (OpenFile f in _lru)
                f.Handle.Dispose();
            _lru.Clear();
            _files.Clear();
        }
    }
}
