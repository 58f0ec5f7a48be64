/*-------------------------------------------------------------------------
 * PerfLockCluster.cs
 *   A segment holding a participant slot array (ProcArray), one named
 *   LWLock tranche and a cache line of counters: what the LWLock
 *   benchmarks and the two-process contention harness lock on.
 *
 * NOTES
 *   The creator calls Create (ProcArray.Init + LWLockTranches.Init, as a
 *   postmaster would at start-up); a second process calls Attach with the
 *   segment's handle. The locks are LWLockPadded, one per cache line, and
 *   the counters sit in their own cache line so that the counter and the
 *   lock word do not share a line (as in the limits tool's lockarea_t,
 *   where they are separate fields of one struct: compare with care).
 *-------------------------------------------------------------------------
 */
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Perf;

internal sealed unsafe class PerfLockCluster
{
    public const string TrancheName = "perf.locks";
    public const int NumLocks = 4;
    public const string CountersName = "perf.counters";
    public const int CountersBytes = 128;

    private static readonly ProcArrayOptions s_options = new(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);

    public ShmemSegment Segment { get; }
    public ProcArray Procs { get; }
    public LWLockArray Locks { get; }

    /// <summary>Start of the counters block (16 longs, cache-line aligned by the allocator).</summary>
    public long* Counters { get; }

    private PerfLockCluster(ShmemSegment segment, ProcArray procs)
    {
        Segment = segment;
        Procs = procs;
        Locks = LWLockTranches.GetNamedLWLockTranche(segment, TrancheName);
        if (!segment.TryFindStruct(CountersName, out ShmemRegion r))
            throw new InvalidOperationException($"segment {segment.Handle} has no {CountersName}");
        Counters = (long*)r.Pointer;
    }

    /// <summary>Creates the segment on <paramref name="backend"/> and everything in it.</summary>
    public static PerfLockCluster Create(string tag, string backend)
    {
        var tranches = new LWLockTrancheRequests().RequestNamedLWLockTranche(TrancheName, NumLocks);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(s_options))
            .RequestAddinShmemSpace(LWLockTranches.ShmemName, LWLockTranches.ShmemSize(tranches))
            .RequestAddinShmemSpace(CountersName, CountersBytes);
        ShmemSegment? segment = PerfSegments.Create(tag, backend, sizes);
        try
        {
            ProcArray procs = ProcArray.Init(segment, s_options, out _);
            LWLockTranches.Init(segment, tranches, out _);
            segment.InitStruct(CountersName, CountersBytes, out _);
            return new PerfLockCluster(segment, procs);
        }
        catch
        {
            PerfSegments.Destroy(ref segment);
            throw;
        }
    }

    /// <summary>The second process's view of a cluster another process created.</summary>
    public static PerfLockCluster Attach(string handle)
    {
        ShmemSegment segment = ShmemSegment.Attach(handle);
        try
        {
            return new PerfLockCluster(segment, ProcArray.Attach(segment));
        }
        catch
        {
            segment.Dispose();
            throw;
        }
    }

    /// <summary>Destroys (creator) or detaches from the segment; also gives back every participant slot of this process.</summary>
    public void Close()
    {
        if (!Segment.IsAttached)
            return;
        if (Segment.IsCreator)
            Segment.Destroy();
        else
            Segment.Dispose();
    }
}
