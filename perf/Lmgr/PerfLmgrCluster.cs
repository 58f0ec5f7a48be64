/*-------------------------------------------------------------------------
 * PerfLmgrCluster.cs
 *   A segment with a participant slot array, a named LWLock tranche (the
 *   LWLock pair measured in the same run) and the heavyweight lock
 *   manager: what the lock manager benchmarks and the two-process harness
 *   lock on. The creator calls Create; the harness's child calls Attach
 *   with the segment's handle.
 *-------------------------------------------------------------------------
 */
using PgIpc.Lmgr;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Perf.Lmgr;

internal sealed class PerfLmgrCluster
{
    public const string TrancheName = "perf.lmgr.locks";
    private static readonly ProcArrayOptions s_options = new(MaxBackends: 8, MaxAuxiliary: 1, MaxBackgroundWorkers: 1);
    private static readonly LockManagerOptions s_lmOptions = new();

    public ShmemSegment Segment { get; }
    public ProcArray Procs { get; }
    public LockManager Locks { get; }
    public LWLockArray LWLocks => LWLockTranches.GetNamedLWLockTranche(Segment, TrancheName);

    private PerfLmgrCluster(ShmemSegment segment, ProcArray procs, LockManager locks)
    {
        Segment = segment;
        Procs = procs;
        Locks = locks;
    }

    public static PerfLmgrCluster Create(string tag, string backend)
    {
        var tranches = new LWLockTrancheRequests().RequestNamedLWLockTranche(TrancheName, 2);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(s_options))
            .RequestAddinShmemSpace(LWLockTranches.ShmemName, LWLockTranches.ShmemSize(tranches))
            .RequestAddinShmemSpace(LockManager.ShmemName, LockManager.ShmemSize(s_options.TotalProcs, s_lmOptions));
        ShmemSegment segment = PerfSegments.Create(tag, backend, sizes);
        try
        {
            ProcArray procs = ProcArray.Init(segment, s_options, out _);
            LWLockTranches.Init(segment, tranches, out _);
            return new PerfLmgrCluster(segment, procs, LockManager.Init(segment, procs, s_lmOptions, out _));
        }
        catch
        {
            segment.Destroy();
            throw;
        }
    }

    public static PerfLmgrCluster Attach(ShmemSegment segment)
    {
        ProcArray procs = ProcArray.Attach(segment);
        return new PerfLmgrCluster(segment, procs, LockManager.Attach(segment, procs));
    }

    public void Close()
    {
        ShmemSegment? s = Segment;
        PerfSegments.Destroy(ref s);
    }
}
