/*-------------------------------------------------------------------------
 * ParallelContextTests.cs
 *   ParallelContext with real worker processes started by the supervisor:
 *   a parallel sum over data in the segment, a worker's error rethrown in
 *   the leader, test_shm_mq's ring (leader -> w1 -> w2 -> leader) for
 *   sizes from 1 byte to three times the ring, and a worker killed with
 *   SIGKILL (TerminateProcess on Windows) mid-stream.
 *
 * NOTES
 *   The test process is the supervisor and the leader; the workers are
 *   this test executable (ParallelWorkerMain.cs). Every worker exits by
 *   itself (60 s at most); the cluster's Dispose in TearDown kills what is
 *   left, and every pid seen is killed again if it survived.
 *
 *   The kill test. A killed worker exits non-zero, so the supervisor does
 *   its crash handling (here with restart-after-crash off): it stops every
 *   child, waiting up to the stop grace, then destroys shared memory, which
 *   the leader, in this same process, is using. A second child that
 *   ignores the stop request for 20 s ("exit0 20000") keeps shared memory
 *   alive while the leader notices the death (at once: the crash handling
 *   sets its latch) and disposes its context; the test then kills that
 *   child itself so the cluster stops.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Dsm;
using PgIpc.Mq;
using PgIpc.Parallel;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Tests.Dsm;
using PgIpc.Tests.Postmaster;

namespace PgIpc.Tests.Parallel;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class ParallelContextTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<int> _pids = [];
    private StringWriter _log = new();
    private Supervisor? _cluster;
    private Participant? _leader;
    private ParallelContext? _ctx;

    [SetUp]
    public void SetUp()
    {
        _pids.Clear();
        _log = new StringWriter();
    }

    [TearDown]
    public void TearDown()
    {
        try
        {
            if (_cluster is { Cluster.IsAttached: true })
                _ctx?.Dispose();
        }
        finally
        {
            _ctx = null;
            if (_cluster is { Cluster.IsAttached: true })
                _leader?.Dispose();
            _leader = null;
            _cluster?.Dispose();
            _cluster = null;
            foreach (int pid in _pids)
                KillQuietly(pid);
        }
    }

    private Supervisor Start(string what, bool restartAfterCrash = true, TimeSpan? stopGrace = null, int maxChildren = 6, int maxDsmSegments = 64)
    {
        _cluster = new ClusterBuilder(TestEnvironment.UniqueKey(what))
            .WithPlatform(_platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 6))
            .WithMaxChildren(maxChildren)
            .WithDsmOptions(new DsmOptions(MaxSegments: maxDsmSegments))
            .WithLog(_log)
            .WithRestartAfterCrash(restartAfterCrash)
            .WithStopGrace(stopGrace ?? TimeSpan.FromSeconds(2))
            .Build();
        _cluster.Start();
        _leader = _cluster.Cluster.Procs.Join(ProcKind.Backend);
        return _cluster;
    }

    private ChildSpec WorkerSpec(string mode) => PostmasterWorkerCommands.Spec("parallel " + mode, backend, mode);

    private void RecordPids(ParallelContext ctx)
    {
        foreach (BackgroundWorkerHandle? h in ctx.Workers)
            if (h is not null && h.GetStatus(out int pid) == BgwHandleStatus.Started && !_pids.Contains(pid))
                _pids.Add(pid);
    }

    /// <summary>True while the OS object of the context's segment exists.</summary>
    private bool SegmentExists((DsmImplementation Kind, uint Handle, string? Dir) s)
        => DsmCluster.OsObjectExists(_platform, s.Kind, s.Handle, s.Dir);

    private static (DsmImplementation Kind, uint Handle, string? Dir) SegmentOf(Supervisor c, ParallelContext ctx)
        => (ctx.Segment.Implementation, ctx.Segment.Handle, c.Cluster.Dsm.DataDirectory);

    /// <summary>Disposes the context and checks nothing is left: no segment in the registry, no OS object.</summary>
    private void DisposeAndCheckClean(Supervisor c)
    {
        var seg = SegmentOf(c, _ctx!);
        Assert.That(SegmentExists(seg), Is.True, "the check below would prove nothing");
        _ctx!.Dispose();
        _ctx = null;
        Assert.That(c.Cluster.Dsm.LiveSegments(), Is.EqualTo(0), "a dynamic segment outlived its parallel context");
        _leader!.Dispose();
        _leader = null;
        Assert.That(SegmentExists(seg), Is.False, $"the parallel segment {seg.Handle} ({seg.Kind}) outlived its context");
        c.Dispose();
        _cluster = null;
        Assert.That(c.CrashRestarts, Is.EqualTo(0), _log.ToString());
    }

    [Test]
    public void ParallelSumReturnsPartialSumsThroughTheTupleQueues()
    {
        Supervisor c = Start("psum");
        const int n = 200_000;
        _ctx = ParallelContext.Create(c.Cluster, WorkerSpec("parallel-sum"), 2);
        _ctx.Estimator.EstimateChunk(8 + n * 8L);
        _ctx.Estimator.EstimateKeys(1);
        _ctx.InitializeDsm();
        long expected = FillSumInput(_ctx, n);

        Assert.That(_ctx.LaunchParallelWorkers(), Is.EqualTo(2));
        Assert.That(_ctx.NumLaunched, Is.EqualTo(2));
        _ctx.WaitForParallelWorkersToAttach(Patience);
        RecordPids(_ctx);
        long total = 0;
        int partials = 0;
        for (int w = 0; w < 2; w++)
        {
            while (_ctx.ReceiveTuple(w, out ReadOnlySpan<byte> msg))
            {
                Assert.That(msg.Length, Is.EqualTo(8));
                total += MemoryMarshal.Read<long>(msg);
                partials++;
            }
        }
        _ctx.WaitForParallelWorkersToFinish(Patience);
        Assert.That(partials, Is.EqualTo(2));
        Assert.That(total, Is.EqualTo(expected));
        DisposeAndCheckClean(c);
    }

    /// <summary>Fills the context's sum input: n words 3i+1 under <see cref="ParallelWorkerMain.KeyData"/>; returns their sum.</summary>
    private static long FillSumInput(ParallelContext ctx, int n)
    {
        ShmTocChunk chunk = ctx.Toc.Allocate(8 + n * 8L);
        Span<long> words = MemoryMarshal.Cast<byte, long>(chunk.AsSpan());
        words[0] = n;
        long expected = 0;
        for (int i = 0; i < n; i++)
        {
            words[1 + i] = 3L * i + 1;
            expected += 3L * i + 1;
        }
        ctx.Toc.Insert(ParallelWorkerMain.KeyData, chunk);
        return expected;
    }

    [Test]
    public void WithFewerFreeSlotsThanAskedTheContextRunsWithTheWorkersItGotAndNoShareIsLost()
    {
        // Two background-worker slots, four workers asked for: parallel.c launches what it can and the plan runs
        // with nworkers_launched. Each worker splits the input by the count it sees, so that count must be the
        // number launched, not the number asked for, or half of the rows would never be summed.
        Supervisor c = Start("pfewer", maxChildren: 2);
        const int n = 100_000;
        _ctx = ParallelContext.Create(c.Cluster, WorkerSpec("parallel-sum"), 4);
        _ctx.Estimator.EstimateChunk(8 + n * 8L);
        _ctx.Estimator.EstimateKeys(1);
        _ctx.InitializeDsm();
        long expected = FillSumInput(_ctx, n);
        Assert.That(_ctx.LaunchParallelWorkers(), Is.EqualTo(2), "the supervisor has two free slots");
        Assert.That(_ctx.NumWorkers, Is.EqualTo(4));
        Assert.That(_ctx.Workers.Count(w => w is not null), Is.EqualTo(2));
        _ctx.WaitForParallelWorkersToAttach(Patience);
        RecordPids(_ctx);
        long total = 0;
        for (int w = 0; w < _ctx.NumLaunched; w++)
            while (_ctx.ReceiveTuple(w, out ReadOnlySpan<byte> msg))
                total += MemoryMarshal.Read<long>(msg);
        _ctx.WaitForParallelWorkersToFinish(Patience);
        Assert.That(total, Is.EqualTo(expected));
        DisposeAndCheckClean(c);
    }

    [Test]
    public void WithNoFreeSlotTheLeaderDoesTheWorkItself()
    {
        Supervisor c = Start("pnone", maxChildren: 1);
        // Take the only slot with a long-running worker, so the context gets none.
        BackgroundWorkerHandle busy = c.Cluster.RegisterDynamicBackgroundWorker(PostmasterWorkerCommands.Spec("busy", backend, "sleep", 60_000));
        _ctx = ParallelContext.Create(c.Cluster, WorkerSpec("parallel-sum"), 2);
        _ctx.Estimator.EstimateChunk(8 + 1000 * 8L);
        _ctx.Estimator.EstimateKeys(1);
        _ctx.InitializeDsm();
        long expected = FillSumInput(_ctx, 1000);
        Assert.That(_ctx.LaunchParallelWorkers(), Is.EqualTo(0));
        Assert.That(_ctx.Workers.All(w => w is null), Is.True);
        // The leader's own pass over the shared input, as a plan with no workers runs in the leader.
        ReadOnlySpan<long> words = MemoryMarshal.Cast<byte, long>(_ctx.Toc.LookupChunk(ParallelWorkerMain.KeyData, 8 + 1000 * 8L).AsSpan());
        long total = 0;
        for (int i = 0; i < 1000; i++)
            total += words[1 + i];
        Assert.That(total, Is.EqualTo(expected));
        _ctx.WaitForParallelWorkersToAttach(Patience);
        _ctx.WaitForParallelWorkersToFinish(Patience);
        if (busy.GetStatus(out int pid) == BgwHandleStatus.Started)
            _pids.Add(pid);
        DisposeAndCheckClean(c); // the supervisor's shutdown stops the busy worker
    }

    [Test]
    public void AContextForZeroWorkersLivesInPrivateMemoryWithNoOsObject()
    {
        Supervisor c = Start("pzero");
        _ctx = ParallelContext.Create(c.Cluster, WorkerSpec("parallel-sum"), 0);
        _ctx.Estimator.EstimateChunk(8 + 10 * 8L);
        _ctx.Estimator.EstimateKeys(1);
        _ctx.InitializeDsm();
        Assert.That(_ctx.IsInPrivateMemory, Is.True);
        Assert.That(c.Cluster.Dsm.LiveSegments(), Is.EqualTo(0), "a context without workers needs no dynamic segment");
        Assert.Throws<InvalidOperationException>(() => _ = _ctx.Segment);
        long expected = FillSumInput(_ctx, 10);
        Assert.That(expected, Is.EqualTo(145));
        Assert.That(MemoryMarshal.Read<long>(_ctx.Toc.LookupChunk(ParallelWorkerMain.KeyData, 16).AsSpan()[8..]), Is.EqualTo(1));
        Assert.That(_ctx.LaunchParallelWorkers(), Is.EqualTo(0));
        _ctx.WaitForParallelWorkersToFinish(Patience);
        _ctx.Dispose();
        _ctx = null;
        Assert.That(c.CrashRestarts, Is.EqualTo(0), _log.ToString());
    }

    [Test]
    public void WhenNoSegmentCanBeCreatedTheContextFallsBackToPrivateMemoryWithNoWorkers()
    {
        Supervisor c = Start("pnodsm", maxDsmSegments: 1);
        // Take the control table's only slot (dsm_create with DSM_CREATE_NULL_IF_MAXSEGMENTS then fails).
        DsmSegment held = DsmSegment.Create(c.Cluster.Dsm, 4096)!;
        try
        {
            _ctx = ParallelContext.Create(c.Cluster, WorkerSpec("parallel-sum"), 2);
            _ctx.InitializeDsm();
            Assert.That(_ctx.IsInPrivateMemory, Is.True);
            Assert.That(_ctx.NumWorkers, Is.EqualTo(0), "parallel.c sets nworkers to 0 when the segment cannot be made");
            Assert.That(_ctx.LaunchParallelWorkers(), Is.EqualTo(0));
            _ctx.Dispose();
            _ctx = null;
        }
        finally
        {
            held.Detach();
        }
        Assert.That(c.Cluster.Dsm.LiveSegments(), Is.EqualTo(0));
    }

    [Test]
    public void AWorkerThatFailsToStartIsAnErrorInTheLeaderNotAHang()
    {
        Supervisor c = Start("pnostart");
        _ctx = ParallelContext.Create(c.Cluster, WorkerSpec("parallel-noattach"), 1);
        _ctx.InitializeDsm();
        Assert.That(_ctx.LaunchParallelWorkers(), Is.EqualTo(1));
        ParallelWorkerException ex = Assert.Throws<ParallelWorkerException>(() => _ctx.WaitForParallelWorkersToAttach(Patience))!;
        Assert.That(ex.Message, Does.Contain("before attaching"));
        Assert.Catch<ParallelWorkerException>(() => _ctx.WaitForParallelWorkersToFinish(Patience));
        DisposeAndCheckClean(c);
    }

    [Test]
    public void AWorkersErrorIsRethrownInTheLeaderWithItsMessage()
    {
        Supervisor c = Start("perr");
        _ctx = ParallelContext.Create(c.Cluster, WorkerSpec("parallel-error"), 2);
        _ctx.InitializeDsm();
        _ctx.LaunchParallelWorkers();
        RecordPids(_ctx);
        ParallelContext ctx = _ctx;
        ParallelWorkerException ex = Assert.Throws<ParallelWorkerException>(() => ctx.WaitForParallelWorkersToFinish(Patience))!;
        Assert.That(ex.WorkerNumber, Is.EqualTo(0));
        Assert.That(ex.Reported, Is.True);
        Assert.That(ex.WorkerMessage, Is.EqualTo(ParallelWorkerMain.ErrorMessage(0)));
        Assert.That(ex.Message, Does.Contain(ParallelWorkerMain.ErrorMessage(0)));
        // The failed worker exited 0 after reporting: no crash restart.
        Assert.That(c.CrashRestarts, Is.EqualTo(0), _log.ToString());
        DisposeAndCheckClean(c);
    }

    [Test]
    public void MessagesPassRoundARingOfTwoWorkersIntact()
    {
        const int k = 2;
        Supervisor c = Start("pring");
        _ctx = ParallelContext.Create(c.Cluster, WorkerSpec("parallel-ring"), k);
        long qbytes = ParallelWorkerMain.RingQueueBytes;
        for (int i = 0; i <= k; i++)
            _ctx.Estimator.EstimateChunk(qbytes);
        _ctx.Estimator.EstimateKeys(k + 1);
        _ctx.InitializeDsm();
        var queues = new ShmMq[k + 1];
        for (int i = 0; i <= k; i++)
        {
            ShmTocChunk q = _ctx.Toc.Allocate(qbytes);
            queues[i] = ShmMq.Create(q);
            _ctx.Toc.Insert(ParallelWorkerMain.KeyRing + (ulong)i, q);
        }
        queues[0].SetSender(_leader!);
        queues[k].SetReceiver(_leader!);
        _ctx.LaunchParallelWorkers();
        _ctx.WaitForParallelWorkersToAttach(Patience);
        RecordPids(_ctx);

        int received = 0;
        using (ShmMqHandle tx = queues[0].AttachAsSender(_leader!, new HandlePeer(_ctx.Workers[0]!)))
        using (ShmMqHandle rx = queues[k].AttachAsReceiver(_leader!, new HandlePeer(_ctx.Workers[k - 1]!)))
        {
            int[] sizes = [1, 100, 64 * 1024, 3 * (int)ParallelWorkerMain.RingSize];
            const int perSize = 3;
            foreach (int size in sizes)
            {
                for (int rep = 0; rep < perSize; rep++)
                {
                    byte[] msg = Pattern(size, rep);
                    Assert.That(tx.Send(msg), Is.EqualTo(ShmMqResult.Success), $"send of {size} bytes");
                    Assert.That(rx.Receive(out ReadOnlySpan<byte> back), Is.EqualTo(ShmMqResult.Success), $"receive of {size} bytes");
                    Assert.That(back.Length, Is.EqualTo(size));
                    Assert.That(back.SequenceEqual(msg), Is.True, $"message of {size} bytes (repetition {rep}) came back changed");
                    received++;
                }
            }
            Assert.That(received, Is.EqualTo(sizes.Length * perSize));
            tx.Detach();
            // The detach travels round the ring: each worker sees its input end and detaches its output.
            Assert.That(rx.Receive(out _), Is.EqualTo(ShmMqResult.Detached));
        }
        _ctx.WaitForParallelWorkersToFinish(Patience);
        DisposeAndCheckClean(c);
    }

    [Test]
    public void AWorkerKilledMidStreamEndsTheLeadersReceiveWithAClearError()
    {
        Supervisor c = Start("pkill", restartAfterCrash: false, stopGrace: TimeSpan.FromSeconds(60));
        // Keeps shared memory alive through the crash handling until the test kills it (see the banner).
        BackgroundWorkerHandle lingerer = c.StartChild(PostmasterWorkerCommands.Spec("lingerer", backend, "exit0", 20_000));
        int lingererPid = lingerer.WaitForStartup(Patience);
        _pids.Add(lingererPid);

        _ctx = ParallelContext.Create(c.Cluster, WorkerSpec("parallel-stream"), 1);
        _ctx.InitializeDsm();
        _ctx.LaunchParallelWorkers();
        _ctx.WaitForParallelWorkersToAttach(Patience);
        var seg = SegmentOf(c, _ctx);
        int workerPid = _ctx.Workers[0]!.WaitForStartup(Patience);
        _pids.Add(workerPid);
        for (int i = 0; i < 20; i++)
            Assert.That(_ctx.ReceiveTuple(0, out ReadOnlySpan<byte> m) && m.Length == 1024, Is.True);

        using (Process victim = Process.GetProcessById(workerPid))
            victim.Kill(); // SIGKILL on Unix, TerminateProcess on Windows: no detach, no report
        ParallelContext ctx = _ctx;
        ParallelWorkerException ex = Assert.Throws<ParallelWorkerException>(() =>
        {
            while (ctx.ReceiveTuple(0, out _))
            {
            }
        })!;
        ctx.Dispose();
        _ctx = null;
        _leader!.Dispose();
        _leader = null;
        Assert.That(ex.WorkerNumber, Is.EqualTo(0));
        Assert.That(ex.Reported, Is.False);
        Assert.That(ex.Message, Does.Contain("terminated without reporting"));

        KillQuietly(lingererPid);
        Assert.That(c.WaitForStopped(Patience), Is.True, "the cluster did not stop after the crash (restart-after-crash off)");
        Assert.That(_log.ToString(), Does.Contain("restart-after-crash is off"));
        c.Dispose();
        _cluster = null;
        // The killed worker never dropped its reference; destroying the cluster removes the segment anyway.
        Assert.That(SegmentExists(seg), Is.False, $"the parallel segment {seg.Handle} ({seg.Kind}) outlived the cluster");
    }

    private static byte[] Pattern(int size, int rep)
    {
        byte[] b = new byte[size];
        for (int i = 0; i < size; i++)
            b[i] = (byte)(i * 31 + rep * 7 + size);
        return b;
    }

    private static void KillQuietly(int pid)
    {
        try
        {
            using Process p = Process.GetProcessById(pid);
            p.Kill();
            p.WaitForExit(10_000);
        }
        catch (ArgumentException)
        {
            // Already gone.
        }
        catch (InvalidOperationException)
        {
            // Exited between the lookup and the kill.
        }
    }

    private sealed class HandlePeer(BackgroundWorkerHandle handle) : IShmMqPeer
    {
        public bool IsAlive => handle.GetStatus() != BgwHandleStatus.Stopped;
    }
}
