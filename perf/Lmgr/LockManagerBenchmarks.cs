/*-------------------------------------------------------------------------
 * LockManagerBenchmarks.cs
 *   Micro-benchmarks of the heavyweight lock manager, uncontended: a weak
 *   relation lock through the fast path, a strong relation lock and an
 *   object lock through the main table, a lock already held, against the
 *   LWLock exclusive pair measured in the same run (the baseline).
 *
 * NOTES
 *   Each method runs PairsPerInvoke acquire + release pairs back to back
 *   (OperationsPerInvoke); figures are per pair. One participant, joined
 *   in GlobalSetup, is passed explicitly (see LWLockBenchmarks).
 *
 *   What each path does:
 *     FastPath       local table lookup (Dictionary), the participant's
 *                    fpInfoLock, the strong-lock counter read, a scan of 16
 *                    slots; the same in reverse to release;
 *     MainObject     local lookup, the partition LWLock, LOCK and PROCLOCK
 *                    found or made (two SharedHash inserts), grant; release
 *                    ungrants and removes both entries;
 *     MainStrongRel  as MainObject, plus the strong-lock counter (a
 *                    spinlock, twice) and the fast-path transfer: every
 *                    slot's fpInfoLock taken once (10 slots here), as
 *                    FastPathTransferRelationLocks does;
 *     AlreadyHeld    a second acquire of a held lock: the local table only.
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Lmgr;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Perf.Lmgr;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public unsafe class LockManagerBenchmarks
{
    private const int PairsPerInvoke = 1024;

    private PerfLmgrCluster? _cluster;
    private Participant? _me;
    private LockManager _lm = null!;
    private LWLock* _lwlock;
    private static readonly LockTag s_rel = LockTag.Relation(1, 1000);
    private static readonly LockTag s_rel2 = LockTag.Relation(1, 1001);
    private static readonly LockTag s_obj = LockTag.Object(1, 2, 3);
    private static readonly LockTag s_held = LockTag.Object(1, 2, 4);

    [Params("linux")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        _cluster = PerfLmgrCluster.Create("lmgr", Backend);
        _me = _cluster.Procs.Join();
        _lm = _cluster.Locks;
        fixed (LWLock* l = &_cluster.LWLocks[0])
            _lwlock = l;
        _lm.Acquire(_me, s_held, LockMode.Exclusive); // for AlreadyHeld; also makes the local table
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_me is not null)
        {
            _lm.ReleaseAll(_me, LockScope.Session);
            _me.Dispose();
        }
        _me = null;
        _cluster?.Close();
        _cluster = null;
    }

    /// <summary>The LWLock exclusive pair (lock.Acquire + lock.Release), measured in the same run.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = PairsPerInvoke)]
    public void LWLockExclusivePairLoop()
    {
        LWLock* l = _lwlock;
        Participant me = _me!;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            l->Acquire(me, LWLockMode.Exclusive);
            l->Release(me);
        }
    }

    /// <summary>AccessShare on a relation, acquire + release: the fast path.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void FastPathAccessSharePairLoop()
    {
        LockManager lm = _lm;
        Participant me = _me!;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            lm.Acquire(me, s_rel, LockMode.AccessShare);
            lm.Release(me, s_rel, LockMode.AccessShare);
        }
    }

    /// <summary>Exclusive on an object, acquire + release: the main table (no fast-path transfer).</summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void MainTableObjectExclusivePairLoop()
    {
        LockManager lm = _lm;
        Participant me = _me!;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            lm.Acquire(me, s_obj, LockMode.Exclusive);
            lm.Release(me, s_obj, LockMode.Exclusive);
        }
    }

    /// <summary>AccessExclusive on a relation, acquire + release: strong-lock counter, fast-path transfer, main table.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void MainTableStrongRelationPairLoop()
    {
        LockManager lm = _lm;
        Participant me = _me!;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            lm.Acquire(me, s_rel2, LockMode.AccessExclusive);
            lm.Release(me, s_rel2, LockMode.AccessExclusive);
        }
    }

    /// <summary>A lock already held, acquired and released again: the local table only.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void AlreadyHeldPairLoop()
    {
        LockManager lm = _lm;
        Participant me = _me!;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            lm.Acquire(me, s_held, LockMode.Exclusive);
            lm.Release(me, s_held, LockMode.Exclusive);
        }
    }
}
