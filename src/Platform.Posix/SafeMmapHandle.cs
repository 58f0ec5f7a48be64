/*-------------------------------------------------------------------------
 * SafeMmapHandle.cs
 *   A mapping made by mmap, released with munmap.
 *-------------------------------------------------------------------------
 */
using System.Runtime.InteropServices;
using PgIpc.Platform.Posix.Interop;

namespace PgIpc.Platform.Posix;

/// <summary>Owns one mmap'd range; munmap on release.</summary>
internal sealed unsafe class SafeMmapHandle : SafeHandle
{
    public nuint Length { get; }

    public SafeMmapHandle(void* address, nuint length) : base((nint)(-1), ownsHandle: true)
    {
        SetHandle((nint)address);
        Length = length;
    }

    public override bool IsInvalid => handle == (nint)(-1) || handle == 0;

    protected override bool ReleaseHandle() => LibC.munmap((void*)handle, Length) == 0;
}

/// <summary>A segment mapped with mmap (POSIX shm or a file).</summary>
internal sealed class MmapSegment : IMappedSegment
{
    private readonly SafeMmapHandle _map;
    private SafeFdHandle? _creationLock;

    /// <param name="id">The segment's name or path.</param>
    /// <param name="map">The mapping.</param>
    /// <param name="size">The mapping's size in bytes.</param>
    /// <param name="creationLock">The creator's descriptor holding flock(LOCK_EX) until <see cref="CreationComplete"/> (PosixSharedMemory.cs notes).</param>
    public MmapSegment(string id, SafeMmapHandle map, long size, SafeFdHandle? creationLock = null)
    {
        Id = id;
        _map = map;
        Size = size;
        _creationLock = creationLock;
    }

    public string Id { get; }
    public nint BaseAddress => _map.DangerousGetHandle();
    public long Size { get; }
    public bool HugePages => false;
    /// <summary>
    /// Unlocks explicitly: the mapping made from the descriptor refers to the same open file description, so closing
    /// the descriptor alone would keep the lock until munmap.
    /// </summary>
    public void CreationComplete()
    {
        SafeFdHandle? fd = Interlocked.Exchange(ref _creationLock, null);
        if (fd is null)
            return;
        LibC.flock(fd.Fd, LibC.LOCK_UN);
        fd.Dispose();
    }

    public void Dispose()
    {
        _map.Dispose();
        CreationComplete();
    }
}
