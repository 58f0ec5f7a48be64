/*-------------------------------------------------------------------------
 * LiveMappings.cs
 *   The address ranges of the shared memory this process maps right now
 *   (main segments and DSM segments), so that code holding a raw pointer
 *   into one can ask, off the hot path, whether it is still mapped before
 *   it touches it: a shm_mq handle detached after its cluster was shut
 *   down only forgets its side instead of writing to unmapped memory.
 *
 * NOTES
 *   Process-local; under its own lock. A range is added when a segment is
 *   mapped and removed just before it is unmapped. A thread that checks and
 *   then touches the memory while another thread unmaps it is not covered:
 *   that is the detach rule (ProcArray waits for the participants inside).
 *-------------------------------------------------------------------------
 */
namespace PgIpc.Shmem;

internal static unsafe class LiveMappings
{
    private static readonly Lock s_lock = new();
    private static readonly List<(nuint Start, nuint End)> s_ranges = [];

    public static void Add(void* start, long size)
    {
        if (start == null || size <= 0)
            return;
        lock (s_lock)
            s_ranges.Add(((nuint)start, (nuint)start + (nuint)size));
    }

    public static void Remove(void* start)
    {
        lock (s_lock)
        {
            int i = s_ranges.FindIndex(r => r.Start == (nuint)start);
            if (i >= 0)
                s_ranges.RemoveAt(i);
        }
    }

    /// <summary>True when [<paramref name="p"/>, <paramref name="p"/> + <paramref name="length"/>) lies in one mapped range.</summary>
    public static bool Contains(void* p, long length)
    {
        nuint a = (nuint)p, e = a + (nuint)Math.Max(length, 0);
        lock (s_lock)
        {
            foreach ((nuint start, nuint end) in s_ranges)
                if (a >= start && e <= end)
                    return true;
        }
        return false;
    }
}
