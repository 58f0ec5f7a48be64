/*-------------------------------------------------------------------------
 * LatchArgs.cs
 *   Argument checks shared by every backend's ILatchProvider, ILatchWakers
 *   and IPlatformWaitSet, so the three reject bad input with the same
 *   exceptions and messages.
 *
 * NOTES
 *   Compiled into Platform.Posix (Linux uses that copy) and meant to be
 *   linked into Platform.Windows the same way as ProcSemaphoreArgs.cs.
 *   Names follow ILatchProvider.Create's rule: 1..24 ASCII letters, digits,
 *   '.' or '_' (they become file, FIFO or kernel object names).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace PgIpc.Platform;

/// <summary>Validation of <see cref="ILatchProvider"/> arguments, slot indexes and wait-set positions.</summary>
internal static class LatchArgs
{
    /// <summary>Longest latch set, lifeline or interrupt name.</summary>
    public const int MaxNameLength = 24;

    /// <summary>Throws <see cref="ArgumentException"/> unless <paramref name="name"/> is 1..24 ASCII letters, digits, '.' or '_'.</summary>
    public static void ValidateName(string name, [CallerArgumentExpression(nameof(name))] string? paramName = null)
    {
        ArgumentNullException.ThrowIfNull(name, paramName);
        if (name.Length == 0 || name.Length > MaxNameLength)
            throw new ArgumentException($"latch name \"{name}\" must be 1 to {MaxNameLength} characters long (it has {name.Length})", paramName);
        foreach (char c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c == '.' || c == '_'))
                throw new ArgumentException($"latch name \"{name}\" may hold only ASCII letters, digits, '.' and '_' (found U+{(int)c:X4})", paramName);
        }
    }

    /// <summary>The rule of <see cref="ValidateName"/> as a test, for calls that never throw (Interrupt).</summary>
    public static bool IsValidName(string? name)
    {
        if (name is null || name.Length == 0 || name.Length > MaxNameLength)
            return false;
        foreach (char c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c == '.' || c == '_'))
                return false;
        }
        return true;
    }

    /// <summary>
    /// Checks a Create/Attach call: a valid name; count positive; and, when the backend keeps state in shared
    /// storage (<paramref name="storageSize"/> &gt; 0), a non-null storage address and stride aligned to
    /// <paramref name="alignment"/>, with the stride at least the storage size.
    /// </summary>
    public static void Validate(string name, nint storage, int stride, int count, int storageSize, int alignment)
    {
        ValidateName(name);
        if (count <= 0)
            throw new ArgumentOutOfRangeException(nameof(count), count, "a latch set needs at least one slot");
        if (storageSize == 0)
            return;
        if (storage == 0)
            throw new ArgumentException($"latch storage address is null; this backend keeps {storageSize} bytes per slot in shared memory", nameof(storage));
        if (stride < storageSize)
            throw new ArgumentOutOfRangeException(nameof(stride), stride, $"the stride must be at least the backend's latch storage size ({storageSize} bytes)");
        if (storage % alignment != 0 || stride % alignment != 0)
            throw new ArgumentException($"latch storage 0x{storage:x} with stride {stride} is not {alignment}-byte aligned", nameof(storage));
        if ((long)stride * count > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"{count} latch slots of stride {stride} exceed 2 GiB of storage");
    }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> unless 0 &lt;= index &lt; count.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void CheckIndex(int index, int count)
    {
        if ((uint)index >= (uint)count)
            ThrowIndex(index, count);
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowIndex(int index, int count)
        => throw new ArgumentOutOfRangeException(nameof(index), index, $"latch slot index must be in [0, {count})");

    /// <summary>Throws <see cref="ObjectDisposedException"/> when the latch set was disposed or destroyed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void CheckOpen(bool closed, string name)
    {
        if (closed)
            ThrowClosed(name);
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowClosed(string name)
        => throw new ObjectDisposedException($"latch set \"{name}\"", $"latch set \"{name}\" was disposed or destroyed");

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> unless a wait set's capacity is positive.</summary>
    public static void CheckCapacity(int capacity)
    {
        if (capacity <= 0)
            throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "a wait set needs room for at least one event");
    }

    /// <summary>Throws <see cref="InvalidOperationException"/> when a wait set is full (PostgreSQL: "too many events").</summary>
    public static void CheckRoom(int count, int capacity)
    {
        if (count >= capacity)
            throw new InvalidOperationException($"wait set is full: it has room for {capacity} events");
    }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> unless 0 &lt;= position &lt; count.</summary>
    public static void CheckPosition(int position, int count)
    {
        if ((uint)position >= (uint)count)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"wait set position must be in [0, {count})");
    }

    /// <summary>The events a socket may ask for.</summary>
    public const WaitEvents SocketEvents = WaitEvents.SocketReadable | WaitEvents.SocketWriteable | WaitEvents.SocketConnected | WaitEvents.SocketClosed;

    /// <summary>Throws <see cref="ArgumentException"/> when <paramref name="events"/> holds anything but socket events.</summary>
    public static void CheckSocketEvents(WaitEvents events)
    {
        if ((events & ~SocketEvents) != 0)
            throw new ArgumentException($"a socket can wait only for socket events, not {events & ~SocketEvents}", nameof(events));
    }
}
