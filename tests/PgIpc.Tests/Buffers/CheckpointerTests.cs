/*-------------------------------------------------------------------------
 * CheckpointerTests.cs
 *   Checkpoints and the checkpointer protocol: sorted writes and fsyncs,
 *   RequestCheckpoint with and without a checkpointer, concurrent requests
 *   from several processes, a failing checkpoint reported to its waiter,
 *   fsync requests forwarded across processes, timed checkpoints, and the
 *   multi-process consistency test with a background writer, a checkpoint
 *   and a cold restart from the files.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Globalization;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using S = PgIpc.Buffers.BufferDesc.State;

namespace PgIpc.Tests.Buffers;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class CheckpointerTests(string backend)
{
    private BufferCluster? _c;
    private Daemon? _daemon;
    private readonly List<ChildWorker> _workers = [];
    private string? _dir;

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        try
        {
            _daemon?.Stop();
        }
        finally
        {
            _daemon = null;
            _c?.Dispose();
            _c = null;
            if (_dir is not null && Directory.Exists(_dir))
                Directory.Delete(_dir, recursive: true);
            _dir = null;
        }
    }

    private BufferCluster Cluster(int numBuffers, string? dir = null)
        => _c = BufferCluster.Create(PgIpcPlatform.Get(backend), numBuffers, dataDirectory: dir);

    private void AsParticipant(Action<Participant> body)
        => TestThreads.Run(1, _ =>
        {
            using Participant me = _c!.Procs.Join();
            body(me);
        });

    private Daemon StartCheckpointer(BufferCluster c, CheckpointerOptions? options = null)
    {
        Checkpointer ckpt = options is null ? c.Checkpointer : Checkpointer.Init(c.Segment, c.Procs, c.Pool, options, out _);
        Daemon d = _daemon = Daemon.Start("checkpointer", c, ckpt.Run);
        Assert.That(Poll.Until(() => c.Checkpointer.Status.ProcNumber == d.ProcNumber, pollMs: 5), Is.True, "the checkpointer registered");
        return d;
    }

    private ChildWorker Worker(BufferCluster c)
        => Workers.StartAttached(backend, _workers, c.Segment.Handle, $"buf-attach {c.Options.NumBuffers} {c.Options.DataDirectory}");

    private static void Dirty(BufferPool pool, Participant me, uint rel, int block, long value)
    {
        int b = pool.ReadBuffer(me, rel, ForkNumber.Main, block);
        pool.LockBuffer(me, b, BufferLockMode.Exclusive);
        BinaryPrimitives.WriteInt64LittleEndian(pool.GetPage(me, b)[BufferStress.CounterOffset..], value);
        pool.MarkBufferDirty(me, b);
        pool.LockBuffer(me, b, BufferLockMode.Unlock);
        pool.ReleaseBuffer(me, b);
    }

    /// <summary>Creates relation 1 with <paramref name="pages"/> pages and dirties each, page i holding i.</summary>
    private void CreateDirtyPages(BufferCluster c, int pages) => AsParticipant(me =>
    {
        BufferStress.Create(c.Pool, me, 1, pages);
        for (int i = 0; i < pages; i++)
            Dirty(c.Pool, me, 1, i, i);
    });

    private static int DirtyBuffers(BufferPool pool)
    {
        int n = 0;
        for (int b = 1; b <= pool.NumBuffers; b++)
            if ((pool.ReadState(b) & S.Dirty) != 0)
                n++;
        return n;
    }

    [Test]
    public void CheckpointWritesSortedByFileAndBlockThenFsyncsTheFiles()
    {
        BufferCluster c = Cluster(64);
        AsParticipant(me =>
        {
            BufferStress.Create(c.Pool, me, 3, 20);
            BufferStress.Create(c.Pool, me, 2, 20);
        });
        StartCheckpointer(c);
        AsParticipant(me => c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Immediate | CheckpointFlags.Wait)); // syncs the extensions
        var order = new List<BufferTag>();
        c.Pool.Smgr.BeforeWrite = tag =>
        {
            lock (order)
                order.Add(tag);
        };
        var rng = new Random(11);
        var blocks = Enumerable.Range(0, 40).Select(i => (Rel: i < 20 ? 3u : 2u, Block: i % 20)).OrderBy(_ => rng.Next()).ToList();
        int dirty = 0;
        AsParticipant(me =>
        {
            foreach ((uint rel, int block) in blocks)
                Dirty(c.Pool, me, rel, block, 100 + block);
            dirty = DirtyBuffers(c.Pool);
            c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Immediate | CheckpointFlags.Wait);
        });
        c.Pool.Smgr.BeforeWrite = null;
        CheckpointStats? stats = c.Checkpointer.LastCheckpoint;
        CheckpointerStatus status = c.Checkpointer.Status;
        List<BufferTag> sorted = [.. order.OrderBy(t => t.RelNumber).ThenBy(t => t.Fork).ThenBy(t => t.BlockNumber)];
        Assert.Multiple(() =>
        {
            Assert.That(dirty, Is.EqualTo(40));
            Assert.That(order, Has.Count.EqualTo(40), "every dirty buffer written once");
            Assert.That(order, Is.EqualTo(sorted), "written in relation, fork, block order");
            Assert.That(order[0], Is.EqualTo(new BufferTag(2, ForkNumber.Main, 0)));
            Assert.That(stats, Is.EqualTo(new CheckpointStats(40, 40, 2)), "40 buffers, two files fsynced");
            Assert.That(DirtyBuffers(c.Pool), Is.Zero);
            Assert.That(status.Failed, Is.Zero);
            Assert.That(status.NumRequested, Is.EqualTo(2));
            Assert.That(status.Done, Is.EqualTo(status.Started));
        });
    }

    [Test]
    public void RequestWithoutACheckpointerStaysPendingAndAWaiterGetsAClearError()
    {
        BufferCluster c = Cluster(16);
        AsParticipant(me =>
        {
            BufferStress.Create(c.Pool, me, 1, 4);
            Dirty(c.Pool, me, 1, 2, 7);
        });
        Exception? waitError = null;
        AsParticipant(me =>
        {
            c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Force); // no checkpointer: left pending
            try
            {
                c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Wait);
            }
            catch (Exception e)
            {
                waitError = e;
            }
        });
        CheckpointerStatus before = c.Checkpointer.Status;
        Assert.That(waitError, Is.InstanceOf<CheckpointerNotRunningException>());
        Assert.That(waitError!.Message, Does.Contain("no checkpointer started"));
        Assert.That(before.PendingFlags & (CheckpointFlags.Requested | CheckpointFlags.Force), Is.EqualTo(CheckpointFlags.Requested | CheckpointFlags.Force));
        Assert.That(before.Started, Is.Zero);

        // A checkpointer that starts serves the pending request without being asked again.
        StartCheckpointer(c);
        Assert.That(Poll.Until(() => c.Checkpointer.Status.Done == 1, pollMs: 5), Is.True, "the pending request was served");
        Assert.That(DirtyBuffers(c.Pool), Is.Zero);
        Assert.Throws<ArgumentOutOfRangeException>(() => AsParticipantRethrow(me => c.Checkpointer.RequestCheckpoint(me, (CheckpointFlags)(1 << 20))));
        // A second checkpointer is refused while the first runs.
        Exception? second = null;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join(ProcKind.Auxiliary);
            try
            {
                c.Checkpointer.Run(me, CancellationToken.None);
            }
            catch (Exception e)
            {
                second = e;
            }
        });
        Assert.That(second, Is.InstanceOf<PgIpcException>());
        Assert.That(second!.Message, Does.Contain("a checkpointer is already running"));
    }

    private void AsParticipantRethrow(Action<Participant> body)
    {
        try
        {
            AsParticipant(body);
        }
        catch (AggregateException e) when (e.InnerExceptions.Count == 1)
        {
            throw e.InnerExceptions[0];
        }
    }

    [Test]
    public void TimedCheckpointsRunWithoutRequests()
    {
        BufferCluster c = Cluster(16);
        CreateDirtyPages(c, 8);
        StartCheckpointer(c, BufferCluster.CheckpointerOptions with { TimeoutMs = 100 });
        Assert.That(Poll.Until(() => c.Checkpointer.Status.NumTimed >= 2, pollMs: 5), Is.True, "checkpoint_timeout started checkpoints");
        Assert.That(DirtyBuffers(c.Pool), Is.Zero, "a spread (non-immediate) checkpoint wrote them");
        Assert.That(c.Checkpointer.Status.NumRequested, Is.Zero);
    }

    [Test]
    public void ConcurrentRequestsFromTwoProcessesBothCompleteAndForwardedFsyncsAreDone()
    {
        BufferCluster c = Cluster(32);
        AsParticipant(me => BufferStress.Create(c.Pool, me, 9, 4));
        ChildWorker ckpt = Worker(c), a = Worker(c), b = Worker(c);
        ckpt.Send("buf-ckpt-start 300000 0");
        AsParticipant(me => c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Immediate | CheckpointFlags.Wait));
        CheckpointerStatus s0 = c.Checkpointer.Status;
        // Worker a writes (and flushes) a block: nothing is dirty, but the checkpointer must fsync the file a wrote.
        a.Send("buf-write 9 1 128 4242");
        for (int round = 0; round < 3; round++)
        {
            a.Begin("buf-ckpt-request wait,immediate");
            b.Begin("buf-ckpt-request wait,force");
            a.End("buf-ckpt-request", TimeSpan.FromSeconds(60));
            b.End("buf-ckpt-request", TimeSpan.FromSeconds(60));
        }
        string[] st = b.Send("buf-ckpt-status").Split(' ');
        CheckpointerStatus s1 = c.Checkpointer.Status;
        ckpt.Send("buf-ckpt-stop");
        Assert.Multiple(() =>
        {
            Assert.That(s0.Failed, Is.Zero);
            Assert.That(s1.Failed, Is.Zero);
            Assert.That(s1.Done, Is.EqualTo(s1.Started), "no checkpoint left running");
            Assert.That(s1.Started - s0.Started, Is.InRange(3, 6), "each round's two requests took one or two checkpoints");
            Assert.That(s1.FilesSynced - s0.FilesSynced, Is.GreaterThanOrEqualTo(1), "the file worker a wrote was fsynced by the checkpointer");
            Assert.That(s1.BuffersWritten - s0.BuffersWritten, Is.Zero, "nothing was dirty");
            Assert.That(int.Parse(st[1], CultureInfo.InvariantCulture), Is.EqualTo(s1.Done), "the workers see the same counters");
        });
    }

    [Test]
    public void AFailingCheckpointReportsCheckpointRequestFailedToTheWaiter()
    {
        BufferCluster c = Cluster(16);
        AsParticipant(me =>
        {
            BufferStress.Create(c.Pool, me, 5, 2);
            Dirty(c.Pool, me, 5, 1, 99);
        });
        // Block 1 can no longer be written: the file lost it.
        using (var f = new FileStream(Path.Combine(c.Options.DataDirectory, "5"), FileMode.Open, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete))
            f.SetLength(BufferPool.BlockSize);
        ChildWorker ckpt = Worker(c), w = Worker(c);
        ckpt.Send("buf-ckpt-start 300000 0");
        string reply = w.SendRaw("buf-ckpt-request wait,immediate", TimeSpan.FromSeconds(60));
        CheckpointerStatus s = c.Checkpointer.Status;
        // The checkpointer survives the failure and serves the next request (which fails again: the block is still dirty).
        string again = w.SendRaw("buf-ckpt-request wait,immediate", TimeSpan.FromSeconds(60));
        ckpt.Send("buf-ckpt-stop");
        Assert.Multiple(() =>
        {
            Assert.That(reply, Does.StartWith("error CheckpointRequestFailedException: checkpoint request failed"));
            Assert.That(reply, Does.Contain("block 1"), "the waiter learns why");
            Assert.That(s.Failed, Is.EqualTo(1));
            Assert.That(s.Done, Is.EqualTo(s.Started));
            Assert.That(s.LastError, Does.Contain("beyond the end of the file"));
            Assert.That(again, Does.Contain("checkpoint request failed"));
            Assert.That(c.Checkpointer.Status.Failed, Is.EqualTo(2));
        });
    }

    [Test]
    public void AWaiterWhoseCheckpointerDiesGetsAClearError()
    {
        BufferCluster c = Cluster(256);
        CreateDirtyPages(c, 200);
        ChildWorker ckpt = Worker(c);
        ckpt.Send("buf-ckpt-start 300000 0");
        // A spread checkpoint of 200 buffers sleeps 100 ms per write: it is still running when its process dies.
        Exception? error = null;
        var waiter = new Thread(() =>
        {
            try
            {
                using Participant me = c.Procs.Join();
                c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Wait);
            }
            catch (Exception e)
            {
                error = e;
            }
        }) { IsBackground = true };
        waiter.Start();
        Assert.That(Poll.Until(() => c.Checkpointer.Status.Started == 1, pollMs: 5), Is.True, "the checkpoint began");
        ckpt.Kill();
        Assert.That(waiter.Join(TimeSpan.FromSeconds(30)), Is.True, "the waiter was released");
        Assert.That(error, Is.InstanceOf<CheckpointerNotRunningException>());
        Assert.That(error!.Message, Does.Contain($"pid {ckpt.Pid}"));
        Assert.That(c.Checkpointer.Status.Done, Is.Zero, "the checkpoint did not finish");
    }

    [Test]
    [Category(TestEnvironment.BusyAcrossProcesses)]
    public void ProcessesWithBgWriterAndCheckpointKeepCountersExactAcrossAColdRestart()
    {
        const int pages = 10_000, processes = 3, iterations = 3000;
        string dir = _dir = BufferCluster.NewDataDirectory();
        BufferCluster c = Cluster(64, dir);
        AsParticipant(me => BufferStress.Create(c.Pool, me, 1, pages));
        ChildWorker ckpt = Worker(c), bgw = Worker(c);
        ckpt.Send("buf-ckpt-start 300000 0");
        bgw.Send("buf-bgw-start 10 100");
        var incr = new List<ChildWorker>();
        for (int i = 0; i < processes; i++)
            incr.Add(Worker(c));
        for (int i = 0; i < processes; i++)
            incr[i].Begin($"buf-incr 1 {pages} {iterations} {300 + i}");
        foreach (ChildWorker w in incr)
            w.End("buf-incr", TimeSpan.FromSeconds(240));
        int dirtyBefore = DirtyBuffers(c.Pool);
        incr[0].Send("buf-ckpt-request wait,immediate", TimeSpan.FromSeconds(120));
        int dirtyAfter = DirtyBuffers(c.Pool);
        string[] bg = bgw.Send("buf-bgw-stop").Split(' ');
        CheckpointerStatus status = c.Checkpointer.Status;
        ckpt.Send("buf-ckpt-stop");
        foreach (ChildWorker w in _workers)
            w.Send("buf-leave");
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        c.Dispose(); // the segment goes; the files stay
        _c = null;

        // Cold restart: a new pool over the same files.
        long sum = 0, reads = 0;
        BufferCluster again = Cluster(64, dir);
        AsParticipant(me => sum = BufferStress.Sum(again.Pool, me, 1, pages));
        reads = again.Pool.Smgr.Reads;
        Assert.Multiple(() =>
        {
            Assert.That(sum, Is.EqualTo((long)processes * iterations), "every increment survived the checkpoint and the restart");
            Assert.That(reads, Is.EqualTo(pages), "the restarted pool read every page from disk");
            Assert.That(dirtyAfter, Is.Zero, "the checkpoint left nothing dirty");
            Assert.That(status.Failed, Is.Zero);
            Assert.That(status.Done, Is.GreaterThanOrEqualTo(1));
            Assert.That(status.FilesSynced, Is.GreaterThanOrEqualTo(1));
            Assert.That(long.Parse(bg[1], CultureInfo.InvariantCulture), Is.GreaterThan(0), "the background writer ran");
            TestContext.Out.WriteLine($"dirty before the checkpoint {dirtyBefore}; bgwriter wrote {bg[0]} in {bg[1]} rounds; " +
                $"checkpoints wrote {status.BuffersWritten}, fsynced {status.FilesSynced}");
        });
    }

    [Test]
    public void ASupervisorHostsThePoolAndTheCheckpointerAsModules()
    {
        string dir = _dir = BufferCluster.NewDataDirectory();
        var poolOptions = new BufferPoolOptions(32, dir);
        CheckpointerOptions ckptOptions = BufferCluster.CheckpointerOptions;
        using Supervisor supervisor = new ClusterBuilder(TestEnvironment.UniqueKey("buf-ckpt"))
            .WithPlatform(PgIpcPlatform.Get(backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithDataDirectory(dir)
            .WithLog(TextWriter.Null)
            .WithBufferPool(poolOptions.NumBuffers)
            .WithCheckpointer(ckptOptions)
            .Build();
        Cluster cluster = supervisor.Cluster;
        bool poolFound = cluster.Segment.TryFindStruct(BufferPool.DescriptorsName, out _);
        bool ckptFound = cluster.Segment.TryFindStruct(Checkpointer.ShmemName, out _);
        BufferPool pool = cluster.Get<BufferPool>();
        Checkpointer ckpt = cluster.Get<Checkpointer>();
        Exception? runError = null;
        using var stop = new CancellationTokenSource();
        var runner = new Thread(() =>
        {
            try
            {
                using Participant me = cluster.Procs.Join(ProcKind.Auxiliary);
                ckpt.Run(me, stop.Token);
            }
            catch (Exception e)
            {
                runError = e;
            }
        }) { IsBackground = true };
        runner.Start();
        Exception? requestError = null;
        int dirtyBefore = 0;
        TestThreads.Run(1, _ =>
        {
            using Participant me = cluster.Procs.Join();
            BufferStress.Create(pool, me, 4, 6);
            for (int i = 0; i < 6; i++)
                Dirty(pool, me, 4, i, i);
            dirtyBefore = DirtyBuffers(pool);
            try
            {
                ckpt.RequestCheckpoint(me, CheckpointFlags.Immediate | CheckpointFlags.Force | CheckpointFlags.Wait);
            }
            catch (Exception e)
            {
                requestError = e;
            }
        });
        stop.Cancel();
        Assert.That(runner.Join(TimeSpan.FromSeconds(30)), Is.True);
        Assert.Multiple(() =>
        {
            Assert.That(poolFound && ckptFound, Is.True, "the supervisor created both modules");
            Assert.That(runError, Is.Null);
            Assert.That(requestError, Is.Null);
            Assert.That(dirtyBefore, Is.EqualTo(6));
            Assert.That(ckpt.Status.BuffersWritten, Is.GreaterThanOrEqualTo(6));
            Assert.That(ckpt.Status.Pid, Is.Zero, "the stopped checkpointer unregistered");
        });
    }

    /// <summary>EIO from fsync(2), as the fault hook reports it.</summary>
    private static IOException Eio(string path) => new($"Input/output error : '{path}'", 5);

    [Test]
    public void AFailedFsyncFailsTheCheckpointEndsTheCheckpointerAndItsPagesAreWrittenAgain()
    {
        BufferCluster c = Cluster(16);
        CreateDirtyPages(c, 4);
        string victim = c.Pool.Smgr.PathOf(1, ForkNumber.Main, 0);
        int faults = 0;
        // As Linux does: the fsync reports the error once; the kernel has dropped the dirty pages and marked them
        // clean, so a retried fsync succeeds without having written them.
        c.Pool.Smgr.FsyncFault = path => path == victim && Interlocked.Increment(ref faults) == 1 ? Eio(path) : null;
        Daemon d = StartCheckpointer(c);
        Exception? first = null, second = null;
        int dirtyAfterFailure = 0;
        AsParticipant(me =>
        {
            first = Assert.Catch(() => c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Immediate | CheckpointFlags.Force | CheckpointFlags.Wait));
            Poll.Until(() => c.Checkpointer.Status.Pid == 0, TimeSpan.FromSeconds(5));
            dirtyAfterFailure = DirtyBuffers(c.Pool);
            try
            {
                c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Immediate | CheckpointFlags.Force | CheckpointFlags.Wait);
            }
            catch (Exception e)
            {
                second = e;
            }
        });
        // data_sync_retry=off: nothing after the failed fsync may report success for the data it covered.
        Assert.That(second, Is.Not.Null, "a checkpoint requested after a failed fsync must not succeed");
        Exception? runError = Assert.Catch(d.Stop);
        _daemon = null;
        CheckpointerStatus s = c.Checkpointer.Status;
        Assert.Multiple(() =>
        {
            Assert.That(first, Is.InstanceOf<CheckpointRequestFailedException>());
            Assert.That(first!.Message, Does.StartWith("checkpoint request failed: ").And.Contain("fsync").And.Contain(victim));
            Assert.That(second, Is.InstanceOf<CheckpointerNotRunningException>(), "the checkpointer ended instead of carrying on");
            Assert.That(runError!.InnerException, Is.InstanceOf<DataSyncFailedException>(), "Run surfaces the fault to its host");
            Assert.That(s.Failed, Is.EqualTo(1));
            Assert.That(s.Done, Is.EqualTo(s.Started));
            Assert.That(s.Pid, Is.Zero, "the checkpointer unregistered");
            Assert.That(dirtyAfterFailure, Is.EqualTo(4), "the pages the failed checkpoint wrote are dirty again");
        });

        // The host's restart of the checkpointer (it also serves the request left pending by the second one): the
        // next successful checkpoint writes those pages again and fsyncs the file. Only successful ones are counted.
        c.Pool.Smgr.FsyncFault = null;
        StartCheckpointer(c);
        AsParticipant(me => c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Immediate | CheckpointFlags.Wait));
        CheckpointerStatus after = c.Checkpointer.Status;
        Assert.Multiple(() =>
        {
            Assert.That(after.BuffersWritten - s.BuffersWritten, Is.EqualTo(4), "written again");
            Assert.That(after.FilesSynced - s.FilesSynced, Is.GreaterThanOrEqualTo(1), "and fsynced");
            Assert.That(DirtyBuffers(c.Pool), Is.Zero);
            Assert.That(after.Failed, Is.EqualTo(1));
            Assert.That(after.Done, Is.EqualTo(after.Started));
        });
    }

    [Test]
    public void CreatingARelationAndExtendingIntoANewSegmentFsyncTheDirectoryBeforeTheCheckpointEnds()
    {
        BufferCluster c = _c = BufferCluster.Create(PgIpcPlatform.Get(backend), 16, blocksPerSegment: 4);
        var dirSyncs = new List<string>();
        c.Pool.Smgr.AfterDirectoryFsync = dir =>
        {
            lock (dirSyncs)
                dirSyncs.Add(dir);
        };
        StartCheckpointer(c);
        int afterFirstSegment = 0, atCheckpointEnd = 0;
        AsParticipant(me =>
        {
            BufferStress.Create(c.Pool, me, 7, 4); // blocks 0..3: file "7"
            lock (dirSyncs)
                afterFirstSegment = dirSyncs.Count;
            BufferStress.Create(c.Pool, me, 7, 2); // blocks 4..5: file "7.1"
            c.Checkpointer.RequestCheckpoint(me, CheckpointFlags.Immediate | CheckpointFlags.Force | CheckpointFlags.Wait);
            lock (dirSyncs)
                atCheckpointEnd = dirSyncs.Count;
        });
        string dataDir = Path.GetFullPath(c.Options.DataDirectory);
        Assert.Multiple(() =>
        {
            Assert.That(File.Exists(c.Pool.Smgr.PathOf(7, ForkNumber.Main, 1)), Is.True, "the relation has a second segment");
            Assert.That(afterFirstSegment, Is.EqualTo(1), "creating the relation's file fsynced the directory");
            Assert.That(atCheckpointEnd, Is.EqualTo(2), "so did the new segment file, before the checkpoint covering it ended");
            Assert.That(dirSyncs.Select(Path.GetFullPath), Is.All.EqualTo(dataDir));
            Assert.That(c.Pool.Smgr.NBlocks(7, ForkNumber.Main), Is.EqualTo(6));
        });
    }

    /// <summary>The platform's directory fsync, failing with EIO while <see cref="Fail"/> is set.</summary>
    private sealed class FailingFileSync(IFileSync inner) : IFileSync
    {
        public volatile bool Fail = true;

        public void FsyncDirectory(string path)
        {
            if (Fail)
                throw Eio(path);
            inner.FsyncDirectory(path);
        }
    }

    [Test]
    public void AFailedDirectoryFsyncFailsTheExtensionAndTheNextExtensionRetriesIt()
    {
        BufferCluster c = Cluster(16);
        var files = new FailingFileSync(PgIpcPlatform.Get(backend).Files);
        c.Pool.Smgr.Files = files;
        int dirSyncs = 0;
        c.Pool.Smgr.AfterDirectoryFsync = _ => Interlocked.Increment(ref dirSyncs);
        Exception? error = null;
        AsParticipant(me =>
        {
            try
            {
                BufferStress.Create(c.Pool, me, 8, 1);
            }
            catch (Exception e)
            {
                error = e;
            }
            files.Fail = false;
            BufferStress.Create(c.Pool, me, 8, 2);
        });
        Assert.Multiple(() =>
        {
            Assert.That(error, Is.InstanceOf<DataSyncFailedException>());
            Assert.That(((DataSyncFailedException)error!).Path, Is.EqualTo(c.Options.DataDirectory));
            Assert.That(error.Message, Does.Contain("fsync"));
            Assert.That(dirSyncs, Is.EqualTo(1), "the file's creation was fsynced into its directory by the next extension");
            Assert.That(c.Pool.Smgr.NBlocks(8, ForkNumber.Main), Is.EqualTo(2), "the failed extension added no block");
        });
    }
}
