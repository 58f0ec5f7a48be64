/*-------------------------------------------------------------------------
 * ProcSemaphoreArgs.cs
 *   Argument checks shared by every backend's IProcSemaphoreProvider and
 *   IProcSemaphoreSet, so the three reject bad input with the same
 *   exceptions and messages.
 *
 * NOTES
 *   Core may not hold this (it would be the only place the backends' storage
 *   rules live), and the backends do not reference each other except Linux
 *   -> Posix, so this one file is compiled into Platform.Posix (Linux uses
 *   that copy) and linked into Platform.Windows (see the .csproj files).
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform;

/// <summary>Validation of <see cref="IProcSemaphoreProvider"/> arguments and set indexes.</summary>
internal static class ProcSemaphoreArgs
{
    /// <summary>
    /// Checks a Create/Attach call: a name of 1..<see cref="ProcSemaphoreStorage.MaxNameLength"/> ASCII letters,
    /// digits, '.' or '_'; count positive; and, when the backend keeps the semaphore in shared storage
    /// (<paramref name="storageSize"/> &gt; 0), a non-null storage address and stride aligned to
    /// <paramref name="alignment"/>, with the stride at least the storage size.
    /// </summary>
    public static void Validate(string name, nint storage, int stride, int count, int storageSize, int alignment)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (name.Length == 0 || name.Length > ProcSemaphoreStorage.MaxNameLength)
            throw new ArgumentException(
                $"semaphore set name \"{name}\" must be 1 to {ProcSemaphoreStorage.MaxNameLength} characters long (it has {name.Length})", nameof(name));
        foreach (char c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c == '.' || c == '_'))
                throw new ArgumentException(
                    $"semaphore set name \"{name}\" may hold only ASCII letters, digits, '.' and '_' (found U+{(int)c:X4})", nameof(name));
        }
        if (count <= 0)
            throw new ArgumentOutOfRangeException(nameof(count), count, "a semaphore set needs at least one semaphore");
        if (storageSize == 0)
            return;
        if (storage == 0)
            throw new ArgumentException($"semaphore storage address is null; this backend keeps {storageSize} bytes per semaphore in shared memory", nameof(storage));
        if (stride < storageSize)
            throw new ArgumentOutOfRangeException(nameof(stride), stride, $"the stride must be at least the backend's storage size ({storageSize} bytes)");
        if (storage % alignment != 0 || stride % alignment != 0)
            throw new ArgumentException(
                $"semaphore storage 0x{storage:x} with stride {stride} is not {alignment}-byte aligned", nameof(storage));
        if ((long)stride * count > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"{count} semaphores of stride {stride} exceed 2 GiB of storage");
    }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> unless 0 &lt;= index &lt; count.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public static void CheckIndex(int index, int count)
    {
        if ((uint)index >= (uint)count)
            ThrowIndex(index, count);
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void ThrowIndex(int index, int count)
        => throw new ArgumentOutOfRangeException(nameof(index), index, $"semaphore index must be in [0, {count})");

    /// <summary>Throws <see cref="ObjectDisposedException"/> when the set was disposed or destroyed.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public static void CheckOpen(bool closed, string name)
    {
        if (closed)
            ThrowClosed(name);
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void ThrowClosed(string name)
        => throw new ObjectDisposedException($"semaphore set \"{name}\"", $"semaphore set \"{name}\" was disposed or destroyed");
}
