/*-------------------------------------------------------------------------
 * ShmemHandle.cs
 *   What a process needs to attach to a segment another process created.
 *
 * NOTES
 *   A handle names the backend, the backend's id for the segment (SysV
 *   shmid, POSIX shm name, Windows mapping name), the size and the random
 *   cookie stored in the segment header. It travels as text (command line or
 *   environment variable), so it has a strict format and a strict parser:
 *
 *       pgipc1;<backend>;<size>;<cookie: 16 hex digits>;<id>
 *
 *   The id comes last so it may contain any character but a newline.
 *-------------------------------------------------------------------------
 */
using System.Globalization;

namespace PgIpc.Shmem;

/// <summary>Identifies one segment across processes. Immutable; text form via ToString / Parse.</summary>
public readonly record struct ShmemHandle(string Backend, string Id, long Size, ulong Cookie)
{
    private const string Prefix = "pgipc1";

    /// <inheritdoc/>
    public override string ToString()
        => $"{Prefix};{Backend};{Size.ToString(CultureInfo.InvariantCulture)};{Cookie:x16};{Id}";

    /// <summary>Parses the text form; throws <see cref="InvalidShmemHandleException"/> saying what is wrong.</summary>
    public static ShmemHandle Parse(string text)
    {
        if (!TryParse(text, out ShmemHandle h, out string? error))
            throw new InvalidShmemHandleException(error!);
        return h;
    }

    /// <summary>Parses the text form of a handle; on failure <paramref name="error"/> says why.</summary>
    public static bool TryParse(string? text, out ShmemHandle handle, out string? error)
    {
        handle = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            error = "shared memory handle is empty";
            return false;
        }
        string[] parts = text.Split(';', 5);
        if (parts.Length != 5 || parts[0] != Prefix)
        {
            error = $"malformed shared memory handle \"{text}\": expected {Prefix};<backend>;<size>;<cookie>;<id>";
            return false;
        }
        if (parts[1].Length == 0 || parts[4].Length == 0 || parts[4].Contains('\n'))
        {
            error = $"malformed shared memory handle \"{text}\": empty backend or id";
            return false;
        }
        if (!long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out long size) || size <= 0)
        {
            error = $"malformed shared memory handle \"{text}\": size \"{parts[2]}\" is not a positive integer";
            return false;
        }
        if (parts[3].Length != 16 || !ulong.TryParse(parts[3], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong cookie))
        {
            error = $"malformed shared memory handle \"{text}\": cookie \"{parts[3]}\" is not 16 hex digits";
            return false;
        }
        handle = new ShmemHandle(parts[1], parts[4], size, cookie);
        error = null;
        return true;
    }
}
