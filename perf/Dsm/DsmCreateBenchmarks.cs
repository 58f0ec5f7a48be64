/*-------------------------------------------------------------------------
 * DsmCreateBenchmarks.cs
 *   Create + attach + detach + detach of a 1 MiB dynamic segment: carved
 *   from the main segment's reserved region (min_dynamic_shared_memory)
 *   against an OS segment of the backend's default implementation, in one
 *   run.
 *
 * NOTES
 *   The region path takes the control locks twice and zeroes the pages; the
 *   OS path adds shm_open/ftruncate/fallocate/mmap (or shmget/shmat) on
 *   create, a second map on attach and munmap + unlink on the detaches.
 *   The zeroing is the same work on both sides (the kernel zero-fills a new
 *   OS segment's pages on first touch; the benchmark touches every page of
 *   both, so each pays for its zeroes).
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Dsm;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;

namespace PgIpc.Perf.Dsm;

/// <summary>A 1 MiB segment's whole life, from the main region and from the OS.</summary>
[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 10)]
public class DsmCreateBenchmarks
{
    private const long Size = 1 << 20;
    private Supervisor? _cluster;
    private Participant? _me;

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    /// <summary>Where the segment comes from: "region" (a 4 MiB main region) or "os" (no region).</summary>
    [Params("region", "os")]
    public string Source { get; set; } = "region";

    [GlobalSetup]
    public void Setup()
    {
        _cluster = new ClusterBuilder($"perf-dsm-{Source}-{Environment.ProcessId}")
            .WithPlatform(PgIpcPlatform.Get(Backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 1, MaxBackgroundWorkers: 1))
            .WithDsmOptions(new DsmOptions(MaxSegments: 16, MainRegionSize: Source == "region" ? 4 * Size : 0))
            .WithLog(TextWriter.Null)
            .Build();
        // The control lock needs a participant: joined once here (BenchmarkDotNet runs setup and workload on one thread).
        _me = _cluster.Cluster.Procs.Join(ProcKind.Backend);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _me?.Dispose();
        _cluster?.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
    }

    private static long Cycle(DsmRegistry registry)
    {
        DsmSegment a = DsmSegment.Create(registry, Size)!;
        Span<byte> s = a.AsSpan();
        for (int i = 0; i < s.Length; i += 4096)
            s[i] = 1; // touch every page
        DsmSegment b = DsmSegment.Attach(registry, a.Handle);
        long sum = b.AsSpan()[4096] + (long)a.Implementation;
        b.Detach();
        a.Detach();
        return sum;
    }

    /// <summary>Create, touch every page, attach, detach both; the segment comes from <see cref="Source"/>.</summary>
    [Benchmark]
    public long CreateAttachDetach()
    {
        long r = Cycle(_cluster!.Cluster.Dsm);
        if ((Source == "region") != (r >= (long)DsmImplementation.MainRegion + 1))
            throw new InvalidOperationException($"the segment did not come from the {Source}");
        return r;
    }
}
