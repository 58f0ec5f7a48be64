/*-------------------------------------------------------------------------
 * HugePages.cs
 *   The huge_pages / huge_page_size setting of a cluster's main segment.
 *
 * NOTES
 *   As PostgreSQL's huge_pages: Off never asks the OS for huge pages, Try
 *   asks and quietly takes normal pages when none can be had, On fails the
 *   start with an error that says why. The page size 0 means the system's
 *   default (Linux: Hugepagesize in /proc/meminfo; Windows: the one large
 *   page size, GetLargePageMinimum). What each backend does with it is in
 *   its shared-memory provider (SysVSharedMemory.cs, PosixSharedMemory.cs,
 *   WindowsSharedMemory.cs) and README's "Huge pages".
 *
 *   Default Try: the Linux backend always did so for segments of 2 MiB and
 *   more.
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Platform;

/// <summary>Whether the main segment uses huge (large) pages: PostgreSQL's huge_pages.</summary>
public enum HugePages
{
    /// <summary>Ask for huge pages and fall back to normal pages quietly when the OS has none to give (the default).</summary>
    Try = 0,
    /// <summary>Never ask for huge pages.</summary>
    Off = 1,
    /// <summary>Huge pages or a clear error: the segment is never created with normal pages.</summary>
    On = 2,
}

/// <summary>How a new main segment is to be created (PostgreSQL's huge_pages and huge_page_size).</summary>
/// <param name="Mode">Whether to use huge pages.</param>
/// <param name="HugePageSize">The huge page size in bytes, or 0 for the system's default.</param>
public readonly record struct SharedMemoryOptions(HugePages Mode, long HugePageSize = 0)
{
    /// <summary>
    /// Throws <see cref="ArgumentException"/> for a page size that cannot be a huge page size on any system
    /// (negative, not a power of two, below 64 KiB); whether this machine supports it is the backend's check.
    /// </summary>
    public void Validate()
    {
        if (!Enum.IsDefined(Mode))
            throw new ArgumentException($"huge pages mode {(int)Mode} is not Off, Try or On", nameof(Mode));
        if (HugePageSize != 0 && (HugePageSize < 64 * 1024 || (HugePageSize & (HugePageSize - 1)) != 0))
            throw new ArgumentException($"huge page size {HugePageSize} is not a supported huge page size: it must be 0 (the system default) or a power of two of 64 KiB or more", "pageSize");
    }

    /// <summary>"2 MiB"-style text of a page size, for messages.</summary>
    public static string FormatSize(long bytes)
        => bytes >= 1 << 30 && bytes % (1 << 30) == 0 ? $"{bytes >> 30} GiB"
            : bytes >= 1 << 20 && bytes % (1 << 20) == 0 ? $"{bytes >> 20} MiB"
            : bytes % 1024 == 0 ? $"{bytes >> 10} KiB" : $"{bytes} bytes";
}
