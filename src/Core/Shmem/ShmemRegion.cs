/*-------------------------------------------------------------------------
 * ShmemRegion.cs
 *   A view of one allocation in a mapped segment.
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;

namespace PgIpc.Shmem;

/// <summary>
/// One allocation: its offset from the segment base, its size, and its address in this
/// process's mapping. Valid while the segment stays attached in this process.
/// </summary>
public readonly unsafe struct ShmemRegion
{
    private readonly byte* _pointer;

    internal ShmemRegion(byte* pointer, long offset, long size)
    {
        _pointer = pointer;
        Offset = offset;
        Size = size;
    }

    /// <summary>Bytes from the segment base (what to store in shared memory to find this region again).</summary>
    public long Offset { get; }

    /// <summary>Size requested for the region.</summary>
    public long Size { get; }

    internal byte* Pointer => _pointer;

    /// <summary>The region's bytes. Throws when the region is larger than a span can address.</summary>
    public Span<byte> AsSpan()
    {
        if (Size > int.MaxValue)
            throw new InvalidOperationException($"shared memory region of {Size} bytes is too large for a Span; use AsSpan<T> with a larger element type");
        return new Span<byte>(_pointer, (int)Size);
    }

    /// <summary>The region as an array of <typeparamref name="T"/> (Size / sizeof(T) elements).</summary>
    public Span<T> AsSpan<T>() where T : unmanaged
    {
        long count = Size / sizeof(T);
        if (count > int.MaxValue)
            throw new InvalidOperationException($"shared memory region holds {count} elements of {typeof(T).Name}, more than a Span can address");
        return new Span<T>(_pointer, (int)count);
    }

    /// <summary>The region's start as a <typeparamref name="T"/>; the region must be at least sizeof(T) bytes.</summary>
    public ref T As<T>() where T : unmanaged
    {
        if (Size < sizeof(T))
            throw new InvalidOperationException($"shared memory region of {Size} bytes is smaller than {typeof(T).Name} ({sizeof(T)} bytes)");
        return ref Unsafe.AsRef<T>(_pointer);
    }
}
