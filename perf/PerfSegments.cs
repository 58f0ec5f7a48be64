/*-------------------------------------------------------------------------
 * PerfSegments.cs
 *   Creating and removing the shared memory segments the benchmarks use.
 *
 * NOTES
 *   Every benchmark class creates its own segment in [GlobalSetup] (or
 *   [IterationSetup]) and destroys it in the matching cleanup, so a run
 *   leaves no SysV segment (ipcs -m) and no /dev/shm/pgipc.* object behind.
 *   Keys carry the pid, the class and the backend so that two benchmark
 *   processes, or a test run beside them, never meet in one cluster; a
 *   crashed run's leftovers are removed by ShmemSegment.Create's stale-
 *   segment check the next time the same key is used, and otherwise by
 *   `ipcrm` / `rm /dev/shm/pgipc.*` by hand.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Perf;

internal static class PerfSegments
{
    /// <summary>Creates a segment of <paramref name="size"/> bytes on <paramref name="backend"/> under a key unique to this process.</summary>
    public static ShmemSegment Create(string tag, string backend, long size)
    {
        IPgIpcPlatform platform = PgIpcPlatform.Get(backend);
        string key = $"pgipc-perf-{Environment.ProcessId}-{tag}-{backend}";
        return ShmemSegment.Create(key, size, platform);
    }

    /// <summary>As <see cref="Create(string, string, long)"/>, sized by the requests in <paramref name="sizes"/>.</summary>
    public static ShmemSegment Create(string tag, string backend, ShmemSizeBuilder sizes)
    {
        IPgIpcPlatform platform = PgIpcPlatform.Get(backend);
        string key = $"pgipc-perf-{Environment.ProcessId}-{tag}-{backend}";
        return ShmemSegment.Create(key, sizes, platform);
    }

    /// <summary>Destroys the segment if this object still holds it; null-safe so cleanup after a failed setup works.</summary>
    public static void Destroy(ref ShmemSegment? segment)
    {
        if (segment is { IsAttached: true })
            segment.Destroy();
        segment = null;
    }
}
