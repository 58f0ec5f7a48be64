/*-------------------------------------------------------------------------
 * DurableFileIO.cs
 *   The seam through which the files that must survive a crash are
 *   written, fsynced, created, renamed and removed: WAL segments, the
 *   control file and the relation files (Smgr).
 *
 * NOTES
 *   Durability is claimed at the fsync calls: a WAL flush returns once its
 *   segment is fsynced, a checkpoint once every data file it wrote and the
 *   directories whose entries changed are. To test those claims against a
 *   power loss, a test installs a layer (Hook) that sees every write,
 *   fsync, creation, rename and removal of those files, remembers which
 *   writes no fsync covered yet, and at a simulated crash drops or tears
 *   them (tests/PgIpc.Tests/Wal/PowerLossFileLayer.cs). Only the calls that
 *   decide durability go through here; reads do not (the layer's writes
 *   reach the real file, so reads see what the process wrote).
 *
 *   Cost when no layer is installed (always, outside tests): one load of a
 *   static field and a branch that is never taken, then the direct call
 *   (RandomAccess.Write, RandomAccess.FlushToDisk, File.Move, ...). No
 *   interface call in the common path. The Opened / Created notices are on
 *   the open path only (a file opened once per process).
 *
 *   The hook is process-wide: a layer must pass through the files it does
 *   not track (other tests of the same process use the seam too).
 *
 *   PostgreSQL has no such seam; its fd.c is the one place every file
 *   call goes through, which is the role this plays for the durable files.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using Microsoft.Win32.SafeHandles;

namespace PgIpc.Platform;

/// <summary>A test layer over the durable files' I/O (see the banner). Implementations do the I/O themselves.</summary>
internal interface IDurableFileIO
{
    /// <summary>A file was opened at <paramref name="path"/>; <paramref name="created"/>: this call made it (a new directory entry).</summary>
    void Opened(SafeFileHandle handle, string path, bool created);

    /// <summary>Writes <paramref name="data"/> at <paramref name="offset"/> (pwrite).</summary>
    void Write(SafeFileHandle handle, ReadOnlySpan<byte> data, long offset);

    /// <summary>fsync of the file: every write to it before the call is durable after it.</summary>
    void Flush(SafeFileHandle handle);

    /// <summary>Renames <paramref name="from"/> to <paramref name="to"/> (durable after its directory's fsync).</summary>
    void Move(string from, string to, bool overwrite);

    /// <summary>Removes <paramref name="path"/> (durable after its directory's fsync).</summary>
    void Delete(string path);

    /// <summary>fsync of a directory through <paramref name="files"/>: its entries' changes before the call are durable after it.</summary>
    void FsyncDirectory(IFileSync files, string directory);
}

/// <summary>The durable files' write, fsync and directory calls: direct unless a test layer is installed.</summary>
internal static class DurableFileIO
{
    /// <summary>The test layer; null (always, outside tests): the direct calls.</summary>
    internal static IDurableFileIO? Hook;

    /// <summary>A file was opened (<paramref name="created"/>: by this call) at <paramref name="path"/>; returns <paramref name="handle"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static SafeFileHandle Opened(SafeFileHandle handle, string path, bool created)
    {
        Hook?.Opened(handle, path, created);
        return handle;
    }

    /// <summary>RandomAccess.Write.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Write(SafeFileHandle handle, ReadOnlySpan<byte> data, long offset)
    {
        if (Hook is { } hook)
            hook.Write(handle, data, offset);
        else
            RandomAccess.Write(handle, data, offset);
    }

    /// <summary>RandomAccess.FlushToDisk (fsync, FlushFileBuffers).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Flush(SafeFileHandle handle)
    {
        if (Hook is { } hook)
            hook.Flush(handle);
        else
            RandomAccess.FlushToDisk(handle);
    }

    /// <summary>
    /// IFileSync.FlushFileData (fdatasync on Linux) of a file whose size does not change (a pre-allocated WAL
    /// segment); a test's layer sees it as a flush.
    /// </summary>
    internal static void FlushData(IFileSync files, SafeFileHandle handle)
    {
        if (Hook is { } hook)
            hook.Flush(handle);
        else
            files.FlushFileData(handle);
    }

    /// <summary>File.Move.</summary>
    internal static void Move(string from, string to, bool overwrite)
    {
        if (Hook is { } hook)
            hook.Move(from, to, overwrite);
        else
            File.Move(from, to, overwrite);
    }

    /// <summary>File.Delete.</summary>
    internal static void Delete(string path)
    {
        if (Hook is { } hook)
            hook.Delete(path);
        else
            File.Delete(path);
    }

    /// <summary><see cref="IFileSync.FsyncDirectory"/>.</summary>
    internal static void FsyncDirectory(IFileSync files, string directory)
    {
        if (Hook is { } hook)
            hook.FsyncDirectory(files, directory);
        else
            files.FsyncDirectory(directory);
    }
}
