/*-------------------------------------------------------------------------
 * LockCluster.cs
 *   A segment with participant slots, a named LWLock tranche and a block of
 *   counters, as the lock tests (and their worker processes) use it.
 *-------------------------------------------------------------------------
 */
using PgIpc.Platform;
using PgIpc.Postmaster;
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

    private readonly Supervisor? _supervisor;
    private readonly Cluster _cluster;

    public ShmemSegment Segment => _cluster.Segment;
    public ProcArray Procs => _cluster.Procs;

    private LockCluster(Supervisor? supervisor, Cluster cluster)
    {
        _supervisor = supervisor;
        _cluster = cluster;
    }

    /// <summary>The test's modules: a named tranche, counters, condition variables and spare room, over the kernel.</summary>
    public static LockCluster Create(IPgIpcPlatform platform, ProcArrayOptions? options = null, string? key = null)
    {
        options ??= new ProcArrayOptions(MaxBackends: 24, MaxAuxiliary: 2, MaxBackgroundWorkers: 2);
        Supervisor s = new ClusterBuilder(key ?? TestEnvironment.UniqueKey("lw"))
            .WithPlatform(platform)
            .WithMaxParticipants(options)
            .WithLog(TextWriter.Null)
            .RequestNamedLWLockTranche(TrancheName, NumLocks)
            .AddModule(ShmemModule.Struct(CountersName, NumCounters * 8))
            .AddModule(ShmemModule.Struct(CvName, NumCvs * 16, r =>
            {
                foreach (ref ConditionVariable cv in r.AsSpan<ConditionVariable>())
                    cv.Initialize();
            }))
            .RequestShmem("test.extra", 64 * 1024)
            .Build();
        return new LockCluster(s, s.Cluster);
    }

    /// <summary>The worker side: the structures another process made.</summary>
    public static LockCluster Attach(ShmemSegment seg) => new(null, Cluster.AttachTo(seg));

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
        if (_supervisor is not null)
            _supervisor.Shutdown(ShutdownMode.Immediate, TimeSpan.Zero);
        else if (Segment.IsAttached)
        {
            _cluster.Dispose();
            Segment.Dispose();
        }
    }
}
