/*-------------------------------------------------------------------------
 * LockCluster.cs
 *   A segment with participant slots, a named LWLock tranche and a block of
 *   counters, as the lock tests (and their worker processes) use it.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Sync;

namespace PgIpc.Tests.Sync;

internal sealed class LockCluster : IDisposable
{
    public const string TrancheName = "test.locks";
    public const int NumLocks = 8;
    public const string CountersName = "test.counters";
    public const int NumCounters = 16;
    public const string CvName = "test.cvs";
    public const int NumCvs = 4;

    public ShmemSegment Segment { get; }
    public ProcArray Procs { get; }

    private LockCluster(ShmemSegment segment, ProcArray procs)
    {
        Segment = segment;
        Procs = procs;
    }

    public static LockCluster Create(IPgIpcPlatform platform, ProcArrayOptions? options = null, string? key = null)
    {
        options ??= new ProcArrayOptions(MaxBackends: 24, MaxAuxiliary: 2, MaxBackgroundWorkers: 2);
        var tranches = new LWLockTrancheRequests().RequestNamedLWLockTranche(TrancheName, NumLocks);
        var sizes = new ShmemSizeBuilder()
            .RequestAddinShmemSpace(ProcArray.ShmemName, ProcArray.ShmemSize(options))
            .RequestAddinShmemSpace(LWLockTranches.ShmemName, LWLockTranches.ShmemSize(tranches))
            .RequestAddinShmemSpace(CountersName, NumCounters * 8)
            .RequestAddinShmemSpace(PgIpc.Signals.ProcSignal.ShmemName, PgIpc.Signals.ProcSignal.ShmemSize(options.TotalProcs))
            .RequestAddinShmemSpace(PgIpc.Signals.PMSignal.ShmemName, PgIpc.Signals.PMSignal.ShmemSize())
            .RequestAddinShmemSpace(CvName, NumCvs * 16)
            .RequestAddinShmemSpace("test.extra", 64 * 1024);
        ShmemSegment seg = ShmemSegment.Create(key ?? TestEnvironment.UniqueKey("lw"), sizes, platform);
        try
        {
            ProcArray procs = ProcArray.Init(seg, options, out _);
            LWLockTranches.Init(seg, tranches, out _);
            seg.InitStruct(CountersName, NumCounters * 8, out _);
            PgIpc.Signals.ProcSignal.Init(seg, procs, out _);
            PgIpc.Signals.PMSignal.Init(seg, procs, out _);
            seg.InitStruct(CvName, NumCvs * 16, r =>
            {
                foreach (ref ConditionVariable cv in r.AsSpan<ConditionVariable>())
                    cv.Initialize();
            }, out _);
            return new LockCluster(seg, procs);
        }
        catch
        {
            seg.Destroy();
            throw;
        }
    }

    /// <summary>The worker side: the structures another process made.</summary>
    public static LockCluster Attach(ShmemSegment seg) => new(seg, ProcArray.Attach(seg));

    public LWLockArray Locks => LWLockTranches.GetNamedLWLockTranche(Segment, TrancheName);

    public unsafe ref long Counter(int i)
    {
        if (!Segment.TryFindStruct(CountersName, out ShmemRegion r))
            throw new InvalidOperationException("no counters");
        return ref r.AsSpan<long>()[i];
    }

    public ref ConditionVariable Cv(int i)
    {
        if (!Segment.TryFindStruct(CvName, out ShmemRegion r))
            throw new InvalidOperationException("no condition variables");
        return ref r.AsSpan<ConditionVariable>()[i];
    }

    public void Dispose()
    {
        if (Segment.IsAttached)
        {
            if (Segment.IsCreator)
                Segment.Destroy();
            else
                Segment.Dispose();
        }
    }
}
