/*-------------------------------------------------------------------------
 * LWLockBenchmarks.cs
 *   Micro-benchmarks of LWLock: uncontended exclusive and shared
 *   acquire + release pairs on a padded lock of a named tranche in a shared
 *   memory segment, against .NET's System.Threading.Lock and
 *   ReaderWriterLockSlim in the same run.
 *
 * NOTES
 *   The uncontended exclusive path is a CAS on the state word (acquire)
 *   and a locked add (release), plus a push and a pop on the participant's
 *   private held-lock list: the shape of the limits tool's
 *   07_cas_acq_lock_sub_rel_pair (lock cmpxchg + lock sub). Run
 *   /work/shared/tools/limits in the same time window and compare as a
 *   ratio; the VM's absolute figures move with host load.
 *
 *   Every method runs PairsPerInvoke pairs back to back (OperationsPerInvoke),
 *   which is what the C tool times; one pair per call would be dominated by
 *   BenchmarkDotNet's empty-call subtraction (see SLockBenchmarks).
 *
 *   The thread that calls LWLock must be a participant. GlobalSetup joins
 *   (ProcArray.Join), and the *PairLoop methods pass that participant
 *   explicitly, which is allowed from any thread as long as no two threads
 *   use it at once: BenchmarkDotNet runs setup and benchmark one after the
 *   other, usually on the same thread. The Implicit* method takes the
 *   Participant.Current path (a [ThreadStatic] read per call); it joins the
 *   benchmark thread itself on first use if that thread is not the setup
 *   thread, once per call outside the loop.
 *-------------------------------------------------------------------------
 */
using BenchmarkDotNet.Attributes;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Perf.Sync;

[MemoryDiagnoser]
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public unsafe class LWLockBenchmarks
{
    private const int PairsPerInvoke = 1024;

    private PerfLockCluster? _cluster;
    private Participant? _me;
    private Participant? _lateJoined;
    private LWLock* _lock;
    private readonly Lock _netLock = new();
    private readonly ReaderWriterLockSlim _rwLock = new(LockRecursionPolicy.NoRecursion);

    [Params("linux", "posix")]
    public string Backend { get; set; } = "linux";

    [GlobalSetup]
    public void Setup()
    {
        _cluster = PerfLockCluster.Create("lwlock", Backend);
        try
        {
            _me = _cluster.Procs.Join();
            fixed (LWLock* l = &_cluster.Locks[0])
                _lock = l; // the lock lives in shared memory: the pointer stays valid while the segment is mapped
        }
        catch
        {
            _cluster.Close();
            _cluster = null;
            throw;
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _lock = null;
        // Dispose checks the participant is not waiting (it never is here); Close then gives back any slot left.
        _lateJoined?.Dispose();
        _me?.Dispose();
        _lateJoined = _me = null;
        _cluster?.Close();
        _cluster = null;
    }

    /// <summary>.NET's System.Threading.Lock: Enter + Exit, PairsPerInvoke times; figure per pair.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = PairsPerInvoke)]
    public void NetLockPairLoop()
    {
        Lock l = _netLock;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            l.Enter();
            l.Exit();
        }
    }

    /// <summary>.NET's ReaderWriterLockSlim read lock: EnterReadLock + ExitReadLock; the process-local peer of a shared LWLock.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void NetRwLockReadPairLoop()
    {
        ReaderWriterLockSlim l = _rwLock;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            l.EnterReadLock();
            l.ExitReadLock();
        }
    }

    /// <summary>lock.Acquire(me, Exclusive) + lock.Release(me); figure per pair. <b>The one to compare with 07_cas_acq_lock_sub_rel_pair.</b></summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void ExclusivePairLoop()
    {
        LWLock* l = _lock;
        Participant me = _me!;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            l->Acquire(me, LWLockMode.Exclusive);
            l->Release(me);
        }
    }

    /// <summary>lock.Acquire(me, Shared) + lock.Release(me); figure per pair.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void SharedPairLoop()
    {
        LWLock* l = _lock;
        Participant me = _me!;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            l->Acquire(me, LWLockMode.Shared);
            l->Release(me);
        }
    }

    /// <summary>lock.ConditionalAcquire(me, Exclusive) + lock.Release(me); figure per pair.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void ConditionalExclusivePairLoop()
    {
        LWLock* l = _lock;
        Participant me = _me!;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            if (!l->ConditionalAcquire(me, LWLockMode.Exclusive))
                ThrowNotAcquired();
            l->Release(me);
        }
    }

    /// <summary>lock.Acquire(Exclusive) + lock.Release() through Participant.Current; figure per pair.</summary>
    [Benchmark(OperationsPerInvoke = PairsPerInvoke)]
    public void ImplicitExclusivePairLoop()
    {
        if (Participant.CurrentOrNull is null)
            JoinThisThread();
        LWLock* l = _lock;
        for (int i = 0; i < PairsPerInvoke; i++)
        {
            l->Acquire(LWLockMode.Exclusive);
            l->Release();
        }
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private void JoinThisThread()
    {
        if (_lateJoined is not null)
            throw new InvalidOperationException("the benchmark ran on a third thread; Participant.Current is per thread");
        _lateJoined = _cluster!.Procs.Join();
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static void ThrowNotAcquired() => throw new InvalidOperationException("uncontended ConditionalAcquire failed");
}
