/*-------------------------------------------------------------------------
 * BufFile.cs
 *   A buffered temporary file: one logical byte stream made of segment
 *   files, read, written and positioned through an 8 KiB buffer, and
 *   deleted when it is closed.
 *
 * NOTES
 *   Mirrors src/backend/storage/file/buffile.c.
 *     - Segments. The logical file is a list of physical files of
 *       SegmentSize bytes each (1 GiB, MAX_PHYSICAL_FILESIZE), the last one
 *       possibly shorter; logical offset o is segment o / SegmentSize at
 *       o % SegmentSize. A private file's segments are separate temporary
 *       files (pgsql_tmp<pid>.<n>); a file-set file's are "<name>.<segno>"
 *       in the set's directory, so a reader in another process finds them
 *       by name (SharedFileSet.cs).
 *     - The buffer. One BLCKSZ buffer holds bytes [curOffset, curOffset +
 *       nbytes) of segment curFile; pos is the logical position within it.
 *       A read refills it when pos reaches nbytes; a write fills it and
 *       dumps it (BufFileDumpBuffer) when pos reaches BLCKSZ, crossing into
 *       the next segment (made on demand) at a segment boundary. A dump
 *       leaves curOffset at the logical position, which a small backwards
 *       seek inside a dirty buffer may have put before the buffer's end.
 *     - Seek. A target inside the current buffer moves pos only; any other
 *       flushes the buffer and empties it. Seeking past the end is allowed
 *       up to the end of the last segment (a later write extends from
 *       there, leaving a hole as PostgreSQL's does).
 *     - Errors. A failed read or write is a TempFileIOException naming the
 *       segment file (DiskFull for ENOSPC); a write that would pass
 *       temp_file_limit is a TempFileLimitExceededException, raised before
 *       anything is written. Either drops the bytes still in the buffer
 *       (at most BLCKSZ; the exception told the caller the write failed)
 *       and leaves the position at the buffer's start, so the BufFile stays
 *       usable for seeking, reading what was written before, and closing.
 *     - Lifetime. Dispose (BufFileClose) closes every segment, gives its
 *       bytes back to temp_file_limit and deletes a private file's
 *       segments; a file-set file stays until its set is deleted. A
 *       private BufFile that is never disposed is deleted by its finaliser
 *       or at the process's orderly exit (TempFileSpace), and after a crash
 *       by RemoveTempFiles at the restart.
 *   Single-threaded, as in PostgreSQL: one thread uses a BufFile at a
 *   time. Read and Write allocate nothing managed.
 *-------------------------------------------------------------------------
 */
using Microsoft.Win32.SafeHandles;

namespace PgIpc.Storage;

/// <summary>buffile.c: a buffered, segmented temporary file (see the file notes).</summary>
public sealed class BufFile : IDisposable
{
    /// <summary>BLCKSZ: the buffer's size.</summary>
    public const int BlockSize = 8192;

    private sealed class Segment(string path, SafeFileHandle handle, long size, bool counted)
    {
        public readonly string Path = path;
        public SafeFileHandle? Handle = handle;
        public long Size = size;         // bytes in the file as this BufFile knows them
        public readonly bool Counted = counted; // made by this BufFile: its bytes count against temp_file_limit
    }

    private readonly TempFileSpace _space;
    private readonly SharedFileSet? _fileSet;
    private readonly List<Segment> _segments = [];
    private readonly byte[] _buffer = new byte[BlockSize];
    private readonly long _segmentSize;
    private int _curFile;     // segment holding the buffer
    private long _curOffset;  // offset of the buffer's first byte in that segment
    private int _pos;         // next byte to read or write in the buffer
    private int _nbytes;      // valid bytes in the buffer
    private bool _dirty;      // the buffer holds bytes not yet written
    private bool _closed;

    private BufFile(TempFileSpace space, SharedFileSet? fileSet, string? name, bool readOnly, long segmentSize)
    {
        _space = space;
        _fileSet = fileSet;
        Name = name;
        IsReadOnly = readOnly;
        _segmentSize = segmentSize;
    }

    /// <summary>BufFileCreateTemp: a new, empty private temporary file in <paramref name="space"/>.</summary>
    public static BufFile CreateTemp(TempFileSpace space)
    {
        ArgumentNullException.ThrowIfNull(space);
        var f = new BufFile(space, null, null, readOnly: false, space.SegmentSize);
        f.AddSegment();
        return f;
    }

    /// <summary>A new file <paramref name="name"/> of a file set (BufFileCreateFileSet).</summary>
    internal static BufFile CreateInSet(SharedFileSet set, TempFileSpace space, string name)
    {
        var f = new BufFile(space, set, name, readOnly: false, set.SegmentSize);
        f.AddSegment();
        return f;
    }

    /// <summary>Opens the existing file <paramref name="name"/> of a file set, read-only (BufFileOpenFileSet).</summary>
    internal static BufFile OpenInSet(SharedFileSet set, TempFileSpace space, string name)
    {
        var f = new BufFile(space, set, name, readOnly: true, set.SegmentSize);
        try
        {
            for (int segno = 0; ; segno++)
            {
                string path = set.SegmentPath(name, segno);
                SafeFileHandle h;
                try
                {
                    h = space.Files.OpenPrivateFile(path, FileMode.Open, FileShare.ReadWrite | FileShare.Delete, FileOptions.None);
                }
                catch (FileNotFoundException) when (segno > 0)
                {
                    break;
                }
                catch (FileNotFoundException e)
                {
                    throw new FileNotFoundException($"could not open file \"{path}\" of file set \"{set.Directory}\": there is no file \"{name}\"", path, e);
                }
                catch (IOException e)
                {
                    throw new TempFileIOException("open", path, e);
                }
                f._segments.Add(new Segment(path, h, RandomAccess.GetLength(h), counted: false));
            }
        }
        catch
        {
            f.CloseSegments();
            GC.SuppressFinalize(f);
            throw;
        }
        return f;
    }

    /// <summary>The file's name in its file set; null for a private file.</summary>
    public string? Name { get; }

    /// <summary>True for a file-set file opened by <see cref="SharedFileSet.OpenFile"/>.</summary>
    public bool IsReadOnly { get; }

    /// <summary>The segment files (physical files) the logical file has now.</summary>
    public int SegmentCount => _segments.Count;

    /// <summary>The segment files' paths, first segment first.</summary>
    public IReadOnlyList<string> SegmentPaths => [.. _segments.Select(s => s.Path)];

    /// <summary>The size of each segment file.</summary>
    public long SegmentSize => _segmentSize;

    private void AddSegment()
    {
        string path;
        if (_fileSet is null)
        {
            _space.EnsureDirectory();
            path = Path.Combine(_space.Directory, TempFileSpace.NextName());
        }
        else
            path = _fileSet.SegmentPath(Name!, _segments.Count);
        SafeFileHandle h;
        try
        {
            h = _space.Files.OpenPrivateFile(path, FileMode.CreateNew, FileShare.ReadWrite | FileShare.Delete, FileOptions.None);
        }
        catch (DirectoryNotFoundException) when (_fileSet is null)
        {
            // RemoveTempFiles or a user removed the directory since: make it again (fd.c mkdirs and retries too).
            _space.Files.CreatePrivateDirectory(_space.Directory);
            h = OpenNew(path);
        }
        catch (IOException e)
        {
            throw new TempFileIOException("create", path, e);
        }
        if (_fileSet is null)
            TempFileSpace.Track(path);
        _segments.Add(new Segment(path, h, 0, counted: true));
    }

    private SafeFileHandle OpenNew(string path)
    {
        try
        {
            return _space.Files.OpenPrivateFile(path, FileMode.CreateNew, FileShare.ReadWrite | FileShare.Delete, FileOptions.None);
        }
        catch (IOException e)
        {
            throw new TempFileIOException("create", path, e);
        }
    }

    /// <summary>BufFileRead: up to <paramref name="destination"/>.Length bytes from the position; fewer only at the end.</summary>
    public int Read(Span<byte> destination)
    {
        ThrowIfClosed();
        int done = 0;
        while (done < destination.Length)
        {
            if (_pos >= _nbytes)
            {
                if (_dirty)
                    DumpBuffer();
                _curOffset += _pos;
                _pos = 0;
                _nbytes = 0;
                LoadBuffer();
                if (_nbytes <= 0)
                    break;
            }
            int n = Math.Min(_nbytes - _pos, destination.Length - done);
            _buffer.AsSpan(_pos, n).CopyTo(destination[done..]);
            _pos += n;
            done += n;
        }
        return done;
    }

    /// <summary>BufFileReadExact: exactly <paramref name="destination"/>.Length bytes, or <see cref="EndOfStreamException"/>.</summary>
    public void ReadExactly(Span<byte> destination)
    {
        int n = Read(destination);
        if (n != destination.Length)
            throw new EndOfStreamException($"could not read from temporary file: read only {n} of {destination.Length} bytes");
    }

    /// <summary>BufFileWrite: all of <paramref name="source"/> at the position.</summary>
    public void Write(ReadOnlySpan<byte> source)
    {
        ThrowIfClosed();
        if (IsReadOnly)
            throw new InvalidOperationException($"file \"{Name}\" of a file set was opened read-only");
        while (source.Length > 0)
        {
            if (_pos >= BlockSize)
            {
                if (_dirty)
                    DumpBuffer();
                else
                {
                    _curOffset += _pos;
                    _pos = 0;
                    _nbytes = 0;
                }
            }
            int n = Math.Min(BlockSize - _pos, source.Length);
            source[..n].CopyTo(_buffer.AsSpan(_pos));
            _dirty = true;
            _pos += n;
            if (_nbytes < _pos)
                _nbytes = _pos;
            source = source[n..];
        }
    }

    /// <summary>Writes the buffer's dirty bytes to the segment files (BufFileFlush).</summary>
    public void Flush()
    {
        ThrowIfClosed();
        if (_dirty)
            DumpBuffer();
    }

    /// <summary>BufFileLoadBuffer: fills the buffer from curOffset of curFile, moving to the next segment at a boundary.</summary>
    private void LoadBuffer()
    {
        if (_curOffset >= _segmentSize && _curFile + 1 < _segments.Count)
        {
            _curFile++;
            _curOffset = 0;
        }
        Segment s = _segments[_curFile];
        int want = (int)Math.Min(BlockSize, Math.Max(0, s.Size - _curOffset));
        int got = 0;
        try
        {
            while (got < want)
            {
                int n = RandomAccess.Read(s.Handle!, _buffer.AsSpan(got, want - got), _curOffset + got);
                if (n == 0)
                    break;
                got += n;
            }
        }
        catch (IOException e)
        {
            throw new TempFileIOException("read from", s.Path, e);
        }
        _nbytes = got;
    }

    /// <summary>BufFileDumpBuffer: writes the buffer out, crossing segment boundaries, then empties it at the logical position.</summary>
    private void DumpBuffer()
    {
        int startFile = _curFile;
        long startOffset = _curOffset;
        int wpos = 0;
        try
        {
            while (wpos < _nbytes)
            {
                if (_curOffset >= _segmentSize)
                {
                    if (_curFile + 1 >= _segments.Count)
                        AddSegment();
                    _curFile++;
                    _curOffset = 0;
                }
                Segment s = _segments[_curFile];
                int n = (int)Math.Min(_nbytes - wpos, _segmentSize - _curOffset);
                long end = _curOffset + n;
                long growth = end - s.Size;
                if (growth > 0 && s.Counted)
                    _space.Reserve(growth, s.Path); // temp_file_limit: throws before anything is written
                try
                {
                    RandomAccess.Write(s.Handle!, _buffer.AsSpan(wpos, n), _curOffset);
                }
                catch (IOException e)
                {
                    if (growth > 0 && s.Counted)
                        _space.Release(growth);
                    throw new TempFileIOException("write to", s.Path, e);
                }
                if (growth > 0)
                    s.Size = end;
                _curOffset += n;
                wpos += n;
            }
        }
        catch
        {
            // The buffer's bytes are dropped (the caller learns it from the exception) and the position goes back
            // to the buffer's start, so the file stays usable for seeking, reading what was written, and closing.
            _curFile = startFile;
            _curOffset = startOffset;
            _dirty = false;
            _pos = 0;
            _nbytes = 0;
            throw;
        }
        _dirty = false;
        // curOffset is the buffer's start + nbytes: step back to the logical position (start + pos).
        _curOffset -= _nbytes - _pos;
        if (_curOffset < 0)
        {
            _curFile--;
            _curOffset += _segmentSize;
        }
        _pos = 0;
        _nbytes = 0;
    }

    /// <summary>BufFileTell: the logical position.</summary>
    public long Position
    {
        get
        {
            ThrowIfClosed();
            return _curFile * _segmentSize + _curOffset + _pos;
        }
    }

    /// <summary>BufFileSeek to logical offset <paramref name="offset"/> (0 to the end of the last segment).</summary>
    public void Seek(long offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        Seek((int)Math.Min(int.MaxValue, offset / _segmentSize), offset % _segmentSize);
    }

    /// <summary>BufFileSeek(file, fileno, offset, SEEK_SET): segment <paramref name="fileno"/> at <paramref name="offset"/>.</summary>
    public void Seek(int fileno, long offset)
    {
        ThrowIfClosed();
        // The end of a full last segment is named (count, 0) by the division: it is (count - 1, segmentSize).
        if (fileno == _segments.Count && offset == 0 && fileno > 0)
        {
            fileno--;
            offset = _segmentSize;
        }
        if (fileno < 0 || fileno >= _segments.Count || offset < 0 || offset > _segmentSize)
            throw new ArgumentOutOfRangeException(nameof(offset), $"could not seek to segment {fileno} offset {offset} of a temporary file of {_segments.Count} segment(s) of {_segmentSize} bytes");
        if (fileno == _curFile && offset >= _curOffset && offset <= _curOffset + _nbytes)
        {
            _pos = (int)(offset - _curOffset); // inside the buffer: nothing to do but move
            return;
        }
        if (_dirty)
            DumpBuffer();
        _curFile = fileno;
        _curOffset = offset;
        _pos = 0;
        _nbytes = 0;
    }

    /// <summary>BufFileSeekBlock: to the start of block <paramref name="block"/> (BLCKSZ units).</summary>
    public void SeekBlock(long block) => Seek(checked(block * BlockSize));

    /// <summary>BufFileSize: the logical size (the buffer flushed first).</summary>
    public long Length
    {
        get
        {
            Flush();
            return (_segments.Count - 1) * _segmentSize + _segments[^1].Size;
        }
    }

    /// <summary>BufFileClose: flushes a file-set file, closes every segment, deletes a private file's (see the notes).</summary>
    public void Dispose()
    {
        if (_closed)
            return;
        try
        {
            if (_fileSet is not null && _dirty)
                DumpBuffer(); // another process may read it: what was written must reach the file
        }
        finally
        {
            _closed = true;
            CloseSegments();
            GC.SuppressFinalize(this);
        }
    }

    /// <summary>Deletes a private file left undisposed (the handles are closed first, for Windows).</summary>
    ~BufFile()
    {
        if (!_closed)
            CloseSegments();
    }

    private void CloseSegments()
    {
        foreach (Segment s in _segments)
        {
            s.Handle?.Dispose();
            s.Handle = null;
            if (s.Counted)
                _space.Release(s.Size);
            if (_fileSet is null)
            {
                try
                {
                    File.Delete(s.Path);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Left for the exit hook or the next start's RemoveTempFiles.
                    continue;
                }
                TempFileSpace.Untrack(s.Path);
            }
        }
    }

    private void ThrowIfClosed()
    {
        if (_closed)
            throw new ObjectDisposedException(nameof(BufFile), "the temporary file is closed");
    }
}
