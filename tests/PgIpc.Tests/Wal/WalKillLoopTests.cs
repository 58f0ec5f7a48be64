/*-------------------------------------------------------------------------
 * WalKillLoopTests.cs
 *   The WAL's promise under SIGKILL, in a loop: a supervisor in its own
 *   process runs three children that increment logged counters and
 *   acknowledge each increment after its WAL flush; the test kills a
 *   child, the supervisor alone, or the supervisor and every child at
 *   once, at random moments, round after round. After every restart (the
 *   supervisor's crash restart, or a new supervisor over the same data
 *   directory) recovery must have kept every acknowledged increment, and
 *   an update never logged must never reach the disk.
 *
 * NOTES
 *   Each child checks its own counter when it starts (after recovery,
 *   which runs before any child): a page behind the child's last
 *   acknowledgement leaves a "lost" file, which the test looks for every
 *   round. The end of the loop kills everything once more and reads the
 *   pages back in a cluster of this process (a recovery of its own).
 *   A killed supervisor leaves its children running until they see it
 *   gone; a new supervisor over the same key refuses while one is still
 *   attached, so starting one is retried (bounded).
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using System.Globalization;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Wal;

namespace PgIpc.Tests.Wal;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class WalKillLoopTests(string backend)
{
    private const int Children = 3;
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private string _dir = "";
    private string _key = "";
    private ChildWorker? _host;

    [SetUp]
    public void SetUp()
    {
        WalTests.RegisterTestRmgr();
        _dir = Path.Combine(Path.GetTempPath(), $"pgipc-walkill-{Environment.ProcessId}-{Guid.NewGuid():N}");
        _key = TestEnvironment.UniqueKey("walkill");
    }

    [TearDown]
    public void TearDown()
    {
        KillEverything();
        ChildWorker.KillAll();
        // A cluster over the same key removes what the killed one left (its stale segment), then goes away cleanly.
        try
        {
            using Supervisor s = Build();
            s.Shutdown(ShutdownMode.Immediate, TimeSpan.FromSeconds(5));
        }
        catch (PgIpcException e)
        {
            TestContext.Out.WriteLine($"teardown: {e.Message}");
        }
        try { Directory.Delete(_dir, recursive: true); } catch (DirectoryNotFoundException) { }
    }

    private Supervisor Build()
        => new ClusterBuilder(_key)
            .WithPlatform(PgIpcPlatform.Get(backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
            .WithDataDirectory(_dir)
            .WithLog(TextWriter.Null)
            .WithBufferPool(32)
            .WithWal(new WalOptions { SegmentSize = 1 << 20, MaxWalSize = 1L << 30 })
            .Build();

    [Test]
    public void KillingAChildTheSupervisorOrEverythingLosesNoAcknowledgedUpdate()
    {
        int rounds = backend == "windows" ? 3 : 9;
        int seed = Environment.TickCount;
        TestContext.Out.WriteLine($"seed {seed}");
        var rnd = new Random(seed);
        // The relation: blocks 0..Children-1 are logged, KillLoopUnlogged.. never; all exist on disk, zero.
        using (Supervisor s = Build())
        {
            TestThreads.Run(1, _ =>
            {
                using Participant me = s.Cluster.Procs.Join();
                BufferPool pool = s.Cluster.Get<BufferPool>();
                for (uint i = 0; i < WalWorkerCommands.KillLoopUnlogged + Children; i++)
                {
                    int b = pool.ReadBuffer(me, 7, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                    pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                    pool.MarkBufferDirty(me, b);
                    pool.LockBuffer(me, b, BufferLockMode.Unlock);
                    pool.ReleaseBuffer(me, b);
                }
                s.Cluster.Get<XLog>().Checkpoint(me);
            });
            Assert.That(s.Shutdown(ShutdownMode.Fast, TimeSpan.FromSeconds(20)), Is.True);
        }
        Directory.CreateDirectory(WalWorkerCommands.KillLoopDir(_dir));

        StartHost();
        string[] kinds = ["a child", "the supervisor", "everything"];
        for (int round = 0; round < rounds; round++)
        {
            Dictionary<int, long> before = WaitForProgress(round);
            Thread.Sleep(rnd.Next(50, 400));
            string kind = kinds[round % kinds.Length];
            switch (kind)
            {
                case "a child":
                    KillPid(ChildPids()[rnd.Next(Children)]); // the supervisor crash-restarts and replays
                    break;
                case "the supervisor":
                    KillPid(_host!.Pid); // its children see it gone and leave; a new one replays
                    StartHost();
                    break;
                default:
                    KillEverything();
                    StartHost();
                    break;
            }
            TestContext.Out.WriteLine($"round {round}: killed {kind}; acknowledged before: {string.Join(", ", before.Values)}");
        }
        WaitForProgress(rounds);
        KillEverything();

        // A recovery of our own, then the pages against the last acknowledgements.
        using (Supervisor s = Build())
        {
            Assert.That(s.Cluster.Get<XLog>().LastStartup!.Replayed, Is.True, "a cluster killed with everything in it must replay");
            TestThreads.Run(1, _ =>
            {
                using Participant me = s.Cluster.Procs.Join();
                BufferPool pool = s.Cluster.Get<BufferPool>();
                for (int i = 0; i < Children; i++)
                {
                    long acked = Acked(i);
                    long v = WalWorkerCommands.Read(pool, me, (uint)i);
                    Assert.That(v, Is.GreaterThanOrEqualTo(acked), $"block {i}: an acknowledged update was lost");
                    Assert.That(v, Is.LessThanOrEqualTo(acked + 1), $"block {i}: more updates than were made");
                    Assert.That(WalWorkerCommands.Read(pool, me, WalWorkerCommands.KillLoopUnlogged + (uint)i), Is.Zero,
                        $"block {WalWorkerCommands.KillLoopUnlogged + i}: an update never logged reached the disk");
                    TestContext.Out.WriteLine($"block {i}: acknowledged {acked}, recovered {v}");
                }
            });
            s.Shutdown(ShutdownMode.Immediate, TimeSpan.FromSeconds(5));
        }
        Assert.That(LostReports(), Is.Empty);
    }

    /// <summary>Starts a supervisor process over the data directory; retried while the last one's orphans are attached.</summary>
    private void StartHost()
    {
        DateTime deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            _host?.Dispose();
            _host = ChildWorker.Start(backend);
            string reply = _host.SendRaw($"wal-supervise {backend} {_key} {_dir} {Children}");
            if (reply.StartsWith("ok", StringComparison.Ordinal))
                return;
            if (DateTime.UtcNow > deadline)
                Assert.Fail($"no supervisor could start over the data directory within {Bound.TotalSeconds} s: {reply}");
            Thread.Sleep(100);
        }
    }

    /// <summary>Waits until every child is alive and acknowledging; fails on a lost update. Returns the acknowledgements seen first.</summary>
    private Dictionary<int, long> WaitForProgress(int round)
    {
        DateTime deadline = DateTime.UtcNow + Bound;
        Dictionary<int, long>? first = null;
        while (true)
        {
            Assert.That(LostReports(), Is.Empty, $"round {round}: a child found an acknowledged update missing after recovery");
            int[] pids = ChildPids();
            bool alive = pids.All(p => p != 0 && IsAlive(p));
            if (alive)
            {
                Dictionary<int, long> now = Enumerable.Range(0, Children).ToDictionary(i => i, Acked);
                if (first is null)
                    first = now;
                else if (now.All(kv => kv.Value > first[kv.Key]))
                    return first;
            }
            else
            {
                first = null;
            }
            if (DateTime.UtcNow > deadline)
                Assert.Fail($"round {round}: the children were not all running and acknowledging within {Bound.TotalSeconds} s (pids {string.Join(", ", pids)})");
            Thread.Sleep(20);
        }
    }

    private int[] ChildPids()
        => [.. Enumerable.Range(0, Children).Select(i => (int)ReadNumber(Path.Combine(WalWorkerCommands.KillLoopDir(_dir), $"pid.{i}")))];

    private long Acked(int i) => ReadNumber(Path.Combine(WalWorkerCommands.KillLoopDir(_dir), $"ack.{i}"));

    private string[] LostReports()
        => Directory.Exists(WalWorkerCommands.KillLoopDir(_dir))
            ? [.. Directory.EnumerateFiles(WalWorkerCommands.KillLoopDir(_dir), "lost.*").Select(File.ReadAllText)]
            : [];

    /// <summary>
    /// The number in <paramref name="path"/> (0 when missing). Opened with every sharing flag and retried: on Windows
    /// a child renaming a new file over it makes the open fail for a moment.
    /// </summary>
    private static long ReadNumber(string path)
    {
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                using var r = new StreamReader(f);
                return long.Parse(r.ReadToEnd(), CultureInfo.InvariantCulture);
            }
            catch (FileNotFoundException)
            {
                return 0;
            }
            catch (IOException) when (attempt < 200)
            {
                Thread.Sleep(5);
            }
        }
    }

    private static bool IsAlive(int pid)
    {
        try
        {
            using Process p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    private static void KillPid(int pid)
    {
        try
        {
            using Process p = Process.GetProcessById(pid);
            p.Kill(); // SIGKILL on Unix, TerminateProcess on Windows; this process only
            p.WaitForExit(10_000);
        }
        catch (ArgumentException)
        {
        }
        catch (InvalidOperationException)
        {
        }
    }

    /// <summary>SIGKILL to the supervisor process and every child it recorded.</summary>
    private void KillEverything()
    {
        _host?.Kill(); // the whole process tree
        if (Directory.Exists(WalWorkerCommands.KillLoopDir(_dir)))
            foreach (int pid in ChildPids())
                if (pid != 0)
                    KillPid(pid);
        _host?.Dispose();
        _host = null;
    }
}
