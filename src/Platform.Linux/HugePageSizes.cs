/*-------------------------------------------------------------------------
 * HugePageSizes.cs
 *   What the Linux kernel offers in huge pages: the default size, the
 *   supported sizes, and the page size backing a mapping.
 *
 * NOTES
 *   The default is Hugepagesize in /proc/meminfo (PostgreSQL's
 *   GetHugePageSize reads the same line); the supported sizes are the
 *   hugepages-<n>kB directories of /sys/kernel/mm/hugepages. A mapping's
 *   page size is KernelPageSize of its entry in /proc/self/smaps: an
 *   attacher cannot learn it from the SysV segment itself (shm_perm.mode
 *   does not keep SHM_HUGETLB).
 *-------------------------------------------------------------------------
 */
using System.Globalization;

namespace PgIpc.Platform.Linux;

/// <summary>The kernel's huge page sizes.</summary>
internal static class HugePageSizes
{
    /// <summary>Hugepagesize from /proc/meminfo in bytes, or 0 when the kernel has no huge pages.</summary>
    public static long Default()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("Hugepagesize:", StringComparison.Ordinal))
                    return ParseKb(line.AsSpan("Hugepagesize:".Length));
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return 0;
    }

    /// <summary>Whether <paramref name="bytes"/> is one of the kernel's huge page sizes.</summary>
    public static bool IsSupported(long bytes)
        => bytes > 0 && bytes % 1024 == 0 && Directory.Exists($"/sys/kernel/mm/hugepages/hugepages-{(bytes / 1024).ToString(CultureInfo.InvariantCulture)}kB");

    /// <summary>The supported sizes, for messages ("2 MiB, 1 GiB").</summary>
    public static string List()
    {
        try
        {
            IEnumerable<long> sizes = Directory.EnumerateDirectories("/sys/kernel/mm/hugepages", "hugepages-*kB")
                .Select(d => Path.GetFileName(d)!)
                .Select(n => long.TryParse(n.AsSpan(10, n.Length - 12), NumberStyles.None, CultureInfo.InvariantCulture, out long kb) ? kb * 1024 : 0)
                .Where(b => b > 0).Order();
            string list = string.Join(", ", sizes.Select(SharedMemoryOptions.FormatSize));
            return list.Length > 0 ? list : "none";
        }
        catch (IOException) { return "none"; }
        catch (UnauthorizedAccessException) { return "none"; }
    }

    /// <summary>KernelPageSize of the mapping that starts at <paramref name="address"/>, or the system page size when unknown.</summary>
    public static long OfMapping(nint address)
    {
        string start = ((ulong)address).ToString("x", CultureInfo.InvariantCulture) + "-";
        try
        {
            bool inEntry = false;
            foreach (string line in File.ReadLines("/proc/self/smaps"))
            {
                if (!inEntry)
                {
                    inEntry = line.StartsWith(start, StringComparison.Ordinal);
                    continue;
                }
                if (line.StartsWith("KernelPageSize:", StringComparison.Ordinal))
                    return ParseKb(line.AsSpan("KernelPageSize:".Length));
                if (line.Length > 0 && char.IsAsciiHexDigit(line[0]) && line.Contains('-') && !line.Contains(':'))
                    break; // the next entry: no page size line
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return Environment.SystemPageSize;
    }

    private static long ParseKb(ReadOnlySpan<char> rest)
    {
        rest = rest.Trim();
        if (rest.EndsWith("kB", StringComparison.Ordinal))
            rest = rest[..^2].Trim();
        return long.TryParse(rest, NumberStyles.None, CultureInfo.InvariantCulture, out long kb) ? kb * 1024 : 0;
    }
}
