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

    public MmapSegment(string id, SafeMmapHandle map, long size)
    {
        Id = id;
        _map = map;
        Size = size;
    }

    public string Id { get; }
    public nint BaseAddress => _map.DangerousGetHandle();
    public long Size { get; }
    public bool HugePages => false;
    public void Dispose() => _map.Dispose();
}
