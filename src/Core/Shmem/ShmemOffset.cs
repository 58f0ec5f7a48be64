/*-------------------------------------------------------------------------
 * ShmemOffset.cs
 *   A typed, segment-relative pointer for use inside shared memory.
 *
 * NOTES
 *   Processes map a segment at different addresses (children are exec'd, not
 *   forked), so shared memory never holds an absolute address. A field that
 *   points at another shared object stores its offset from the segment base;
 *   this wrapper keeps the pointee's type so the compiler catches mix-ups.
 *   Offset 0 is the segment header, never a valid target, so it means null.
 *
 *   Mirrors PostgreSQL's relptr.h (relptr_store / relptr_access).
 *-------------------------------------------------------------------------
 */
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PgIpc.Shmem;

/// <summary>Offset of a <typeparamref name="T"/> from the segment base; 0 is null. Layout: one 64-bit offset.</summary>
[SharedStruct]
[StructLayout(LayoutKind.Sequential)]
public readonly struct ShmemOffset<T> : IEquatable<ShmemOffset<T>> where T : unmanaged
{
    /// <summary>Bytes from the segment base.</summary>
    public readonly long Value;

    /// <summary>Creates the offset <paramref name="value"/> from the segment's start (0 is null).</summary>
    public ShmemOffset(long value)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(value);
        Value = value;
    }

    /// <summary>The null offset.</summary>
    public static ShmemOffset<T> Null => default;

    /// <summary>True for the null offset.</summary>
    public bool IsNull => Value == 0;

    /// <summary>The address in this process's mapping whose base is <paramref name="segmentBase"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal unsafe T* ToPointer(byte* segmentBase) => Value == 0 ? null : (T*)(segmentBase + Value);

    /// <summary>The offset of <paramref name="p"/> in the mapping whose base is <paramref name="segmentBase"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static unsafe ShmemOffset<T> FromPointer(byte* segmentBase, T* p)
        => p == null ? default : new ShmemOffset<T>((long)((byte*)p - segmentBase));

    /// <summary>True when both offsets are equal.</summary>
    public bool Equals(ShmemOffset<T> other) => Value == other.Value;
    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is ShmemOffset<T> o && Equals(o);
    /// <inheritdoc/>
    public override int GetHashCode() => Value.GetHashCode();
    /// <summary>True when both offsets are equal.</summary>
    public static bool operator ==(ShmemOffset<T> a, ShmemOffset<T> b) => a.Value == b.Value;
    /// <summary>True when the offsets differ.</summary>
    public static bool operator !=(ShmemOffset<T> a, ShmemOffset<T> b) => a.Value != b.Value;
    /// <inheritdoc/>
    public override string ToString() => IsNull ? "null" : $"+0x{Value:x}";
}
