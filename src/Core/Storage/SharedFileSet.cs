/*-------------------------------------------------------------------------
 * SharedFileSet.cs
 *   A set of named temporary files shared by the processes attached to a
 *   dynamic shared memory segment: the workers of a parallel context
 *   create files in it, the leader opens them read-only, and the files go
 *   when the last process detaches from the segment.
 *
 * NOTES
 *   Mirrors src/backend/storage/file/sharedfileset.c and fileset.c.
 *     - The set is a directory "pgsql_tmp<pid>.<n>.sharedfileset" in the
 *       temp directory (base/pgsql_tmp), named after the creating process
 *       and a number of its counter, so RemoveTempFiles finds it after a
 *       crash by its prefix. A file "name" of the set is the segment files
 *       "name.0", "name.1", ... in it (BufFile.cs). Every process computes
 *       the directory from its own temp directory and the two numbers in
 *       shared memory: no path is read from shared memory.
 *     - Lifetime. The set's shared part holds a reference count: 1 at
 *       Initialize (the creator), +1 per Attach; each process registers an
 *       on-detach callback on the segment that drops its reference, and
 *       the process that drops the last one deletes the directory with
 *       every file (SharedFileSetOnDetach). Attaching to a set whose count
 *       already reached 0 is an error ("could not attach to a SharedFileSet
 *       that is already destroyed"). PostgreSQL guards the count with a
 *       spinlock; it is one word here, changed by compare-and-swap so that
 *       0 stays 0.
 *     - A file is written by one process (the one that created it) and
 *       read by others only after the writer closed it (BufFile.Dispose
 *       flushes): the parallel context's "worker finished" message is the
 *       ordering, as in PostgreSQL; the set itself does not lock files.
 *     - Names are given by the caller and must be plain file names (no
 *       separator, not "." or ".."), checked on every use.
 *
 *   Layout of the shared part (SharedFileSetData, 24 bytes, in the DSM
 *   segment; Size gives the bytes to reserve):
 *
 *     0        4          8           12        16                24
 *     +--------+----------+-----------+---------+------------------+
 *     | Magic  | RefCount | CreatorPid| Number  | SegmentSize      |
 *     +--------+----------+-----------+---------+------------------+
 *
 *   Magic, CreatorPid, Number, SegmentSize: written by Initialize before
 *   the segment's handle is given to anyone, immutable after. RefCount:
 *   compare-and-swap only (Interlocked, full fences): Attach's increment
 *   pairs with the last detach's decrement to 0, so a process that
 *   attached always sees the directory still there.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Dsm;
using PgIpc.Mq;
using PgIpc.Shmem;

namespace PgIpc.Storage;

/// <summary>The shared part of a <see cref="SharedFileSet"/>: see the layout in the file notes.</summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential)]
internal struct SharedFileSetData
{
    /// <summary>SharedFileSet.MagicValue once initialised. Immutable after Initialize.</summary>
    public uint Magic;
    /// <summary>Processes attached; 0: destroyed. Interlocked CAS (see the notes).</summary>
    public int RefCount;
    /// <summary>The creating process's pid (the directory's name). Immutable.</summary>
    public int CreatorPid;
    /// <summary>The creator's counter value (the directory's name). Immutable.</summary>
    public uint Number;
    /// <summary>The size of each segment file of the set's files. Immutable.</summary>
    public long SegmentSize;
}

/// <summary>sharedfileset.c: named temporary files shared through a DSM segment (see the file notes).</summary>
public sealed unsafe class SharedFileSet
{
    internal const uint MagicValue = 0x5346_5331; // "SFS1"
    private const string SetSuffix = ".sharedfileset";

    private readonly SharedFileSetData* _data;
    private readonly TempFileSpace _space;
    private readonly Action<DsmSegment> _onDetach;

    /// <summary>Bytes of shared memory a set needs (shm_toc_allocate this much).</summary>
    public static int Size => sizeof(SharedFileSetData);

    private SharedFileSet(SharedFileSetData* data, TempFileSpace space)
    {
        _data = data;
        _space = space;
        SegmentSize = data->SegmentSize;
        Directory = Path.Combine(space.Directory, $"{TempFileSpace.TempFilePrefix}{data->CreatorPid}.{data->Number}{SetSuffix}");
        _onDetach = OnDetach;
    }

    /// <summary>
    /// SharedFileSetInit: initialises a set in <paramref name="chunk"/> (at least <see cref="Size"/> bytes of
    /// <paramref name="segment"/>), with this process attached; its files live in <paramref name="space"/>'s
    /// directory, in segment files of <paramref name="space"/>'s segment size. The set is deleted when the last
    /// process attached detaches from <paramref name="segment"/>.
    /// </summary>
    public static SharedFileSet Initialize(ShmTocChunk chunk, DsmSegment segment, TempFileSpace space)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(space);
        SharedFileSetData* d = DataOf(chunk);
        d->CreatorPid = Environment.ProcessId;
        d->Number = TempFileSpace.NextNumber();
        d->SegmentSize = space.SegmentSize;
        d->Magic = MagicValue;
        Volatile.Write(ref d->RefCount, 1); // published to others with the segment's handle
        var set = new SharedFileSet(d, space);
        space.EnsureDirectory();
        space.Files.CreatePrivateDirectory(set.Directory);
        segment.OnDetach(set._onDetach);
        return set;
    }

    /// <summary>
    /// SharedFileSetAttach: attaches to the set another process initialised in <paramref name="chunk"/> of
    /// <paramref name="segment"/>. <paramref name="space"/> names this process's temp directory (the same data
    /// directory's) and its temp_file_limit. Throws <see cref="InvalidOperationException"/> when the set was already
    /// destroyed, <see cref="ShmemCorruptException"/> when the chunk holds no set.
    /// </summary>
    public static SharedFileSet Attach(ShmTocChunk chunk, DsmSegment segment, TempFileSpace space)
    {
        ArgumentNullException.ThrowIfNull(segment);
        ArgumentNullException.ThrowIfNull(space);
        SharedFileSetData* d = DataOf(chunk);
        if (Volatile.Read(ref d->Magic) != MagicValue)
            throw new ShmemCorruptException("SharedFileSet", "Magic", $"0x{d->Magic:x8} is not 0x{MagicValue:x8}: no file set was initialised in this chunk");
        if (d->SegmentSize < BufFile.BlockSize || d->SegmentSize % BufFile.BlockSize != 0)
            throw new ShmemCorruptException("SharedFileSet", "SegmentSize", $"{d->SegmentSize} is not a positive multiple of {BufFile.BlockSize}");
        // Pairs with the decrement to 0 in OnDetach: a count seen above 0 and raised cannot be deleted under us.
        int seen = Volatile.Read(ref d->RefCount);
        while (true)
        {
            if (seen <= 0)
                throw new InvalidOperationException("could not attach to a SharedFileSet that is already destroyed");
            int was = Interlocked.CompareExchange(ref d->RefCount, seen + 1, seen);
            if (was == seen)
                break;
            seen = was;
        }
        var set = new SharedFileSet(d, space);
        segment.OnDetach(set._onDetach);
        return set;
    }

    private static SharedFileSetData* DataOf(ShmTocChunk chunk)
    {
        if (chunk.Size < sizeof(SharedFileSetData) || chunk.Pointer == null)
            throw new ArgumentException($"a file set needs {sizeof(SharedFileSetData)} bytes; the chunk has {chunk.Size}", nameof(chunk));
        if (((nint)chunk.Pointer & 7) != 0)
            throw new ArgumentException("the chunk is not 8-byte aligned", nameof(chunk));
        return (SharedFileSetData*)chunk.Pointer;
    }

    /// <summary>The set's directory (in this process's temp directory).</summary>
    public string Directory { get; }

    /// <summary>The size of each segment file of the set's files (the creator's choice).</summary>
    public long SegmentSize { get; }

    /// <summary>Processes attached now (a snapshot).</summary>
    public int RefCount => Volatile.Read(ref _data->RefCount);

    /// <summary>BufFileCreateFileSet: a new file <paramref name="name"/> in the set, written by this process only.</summary>
    public BufFile CreateFile(string name)
    {
        CheckName(name);
        return BufFile.CreateInSet(this, _space, name);
    }

    /// <summary>BufFileOpenFileSet: the existing file <paramref name="name"/>, read-only (<see cref="FileNotFoundException"/> when absent).</summary>
    public BufFile OpenFile(string name)
    {
        CheckName(name);
        return BufFile.OpenInSet(this, _space, name);
    }

    /// <summary>BufFileDeleteFileSet: deletes every segment of file <paramref name="name"/>; false when there was none.</summary>
    public bool DeleteFile(string name)
    {
        CheckName(name);
        bool any = false;
        for (int segno = 0; File.Exists(SegmentPath(name, segno)); segno++)
        {
            File.Delete(SegmentPath(name, segno));
            any = true;
        }
        return any;
    }

    /// <summary>FileSetDeleteAll: deletes the set's directory and every file in it (the last detach does this).</summary>
    public void DeleteAll()
    {
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
            // Already gone.
        }
    }

    /// <summary>The path of segment <paramref name="segno"/> of file <paramref name="name"/>.</summary>
    internal string SegmentPath(string name, int segno) => Path.Combine(Directory, $"{name}.{segno}");

    private static void CheckName(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name is "." or ".." || name.IndexOfAny(['/', '\\', ':', '\0']) >= 0)
            throw new ArgumentException($"\"{name}\" is not a plain file name", nameof(name));
    }

    /// <summary>SharedFileSetOnDetach: drops this process's reference; the last one deletes the set.</summary>
    private void OnDetach(DsmSegment segment)
    {
        // Full fence (Interlocked): pairs with Attach's CAS; 0 is final.
        if (Interlocked.Decrement(ref _data->RefCount) == 0)
        {
            try
            {
                DeleteAll();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // A file still open elsewhere (Windows): RemoveTempFiles at the next start takes it.
            }
        }
    }
}
