/*-------------------------------------------------------------------------
 * ClusterTests.cs
 *   The supervisor with real child processes: static and dynamic workers,
 *   clean exits, crash restart after SIGKILL (TerminateProcess on Windows)
 *   and SIGQUIT with the cluster working afterwards (013_crash_restart's
 *   idea), restart-after-crash off, smart / fast / immediate shutdown, the
 *   buffer pool shared with children and rebuilt at a restart, nothing
 *   left behind. The supervisor's own death: SupervisorDeathTests.cs.
 *
 * NOTES
 *   Children are this test executable in "--run-child" mode (see
 *   PostmasterWorkerCommands.cs). Each test runs at most three children,
 *   each of which exits by itself within 60 s; the cluster's Dispose (in
 *   finally) kills what is left, and the test then checks every pid it saw
 *   is gone (and kills any survivor so none outlives the test).
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Postmaster;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class ClusterTests(string backend)
{
    private static readonly TimeSpan Patience = Poll.Patience;
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<int> _pids = [];
    private readonly List<string> _copies = []; // program copies a test made; deleted once its cluster is gone
    private StringWriter _log = new();
    private Supervisor? _cluster;
    private string? _dataDir;

    [SetUp]
    public void SetUp()
    {
        _pids.Clear();
        _log = new StringWriter();
    }

    [TearDown]
    public void TearDown()
    {
        _cluster?.Dispose();
        _cluster = null;
        foreach (int pid in _pids)
            KillQuietly(pid);
        foreach (string f in _copies)
            File.Delete(f);
        _copies.Clear();
        if (_dataDir is not null && Directory.Exists(_dataDir))
            Directory.Delete(_dataDir, recursive: true);
        _dataDir = null;
    }

    private ClusterBuilder Builder(string what) => PostmasterWorkerCommands.TestBuilder(what, _platform, _log, TimeSpan.FromSeconds(2));

    private ChildSpec Spec(string name, string mode, int ms = 0, int restartIntervalMs = -1, ProcKind kind = ProcKind.BackgroundWorker)
        => PostmasterWorkerCommands.Spec(name, backend, mode, ms, kind, restartIntervalMs);

    private Supervisor Start(ClusterBuilder b)
    {
        _cluster = b.Build();
        _cluster.Start();
        return _cluster;
    }

    private static long Starts(Supervisor c)
        => c.Cluster.Segment.IsAttached && c.Cluster.Segment.TryFindStruct(PostmasterWorkerCommands.CountersName, out ShmemRegion r) ? Volatile.Read(ref r.AsSpan<long>()[0]) : -1;

    /// <summary>Poll.WaitFor, failing with the supervisor's log and children (what a timeout under Wine needs to be understood).</summary>
    private void WaitUntil(Func<bool> condition, string what)
    {
        if (Poll.Until(condition, Patience, pollMs: 20))
            return;
        string children = _cluster is null ? "(no cluster)"
            : string.Join(", ", _cluster.GetChildren().Select(ch => $"{ch.Name} pid {ch.Pid}"));
        string starts = _cluster is null ? "-" : Starts(_cluster).ToString(System.Globalization.CultureInfo.InvariantCulture);
        Assert.Fail($"timed out after {Patience.TotalSeconds} s waiting for {what} (starts counter {starts}; children: {children})\nsupervisor log:\n{LogText()}");
    }

    private List<int> RunningPids(Supervisor c)
    {
        List<int> pids = [.. c.GetChildren().Where(ch => ch.Pid != 0).Select(ch => ch.Pid)];
        foreach (int p in pids)
            if (!_pids.Contains(p))
                _pids.Add(p);
        return pids;
    }

    private string LogText()
    {
        lock (_log)
            return _log.ToString();
    }

    // Zombie-aware (an unreaped child that has let go of its mappings is gone); shared with SupervisorDeathTests.
    private static bool IsGone(int pid) => SupervisorDeathTests.IsGone(pid);

    private static void KillQuietly(int pid)
    {
        SupervisorDeathTests.KillHard(pid);
        long deadline = Environment.TickCount64 + 5000;
        while (!IsGone(pid) && Environment.TickCount64 < deadline)
            Thread.Sleep(5);
    }

    private void AssertAllGone()
    {
        foreach (int pid in _pids)
            WaitUntil(() => IsGone(pid), $"child {pid} to be gone");
    }

    [Test]
    public void StaticWorkersStartAttachAndDisposeLeavesNothing()
    {
        Supervisor c = Start(Builder("pm-static")
            .AddBackgroundWorker(Spec("w1", "sleep"))
            .AddBackgroundWorker(Spec("w2", "sleep", kind: ProcKind.Auxiliary)));
        WaitUntil(() => Starts(c) == 2, "both static workers to attach");
        WaitUntil(() => c.Cluster.Procs.GetProcs().Count == 2, "both workers to join");
        Assert.That(RunningPids(c), Has.Count.EqualTo(2));
        ShmemHandle handle = c.Cluster.Segment.Handle;
        Assert.That(c.Cluster.Procs.GetProcs().Select(p => p.Kind), Is.EquivalentTo(new[] { ProcKind.BackgroundWorker, ProcKind.Auxiliary }));

        c.Dispose();
        Assert.That(c.State, Is.EqualTo(ClusterState.Stopped));
        Assert.That(c.Cluster.Segment.IsAttached, Is.False);
        AssertAllGone();
        // Global counts (OsObjects) race with other test runs on the machine; look for this cluster's own objects.
        Assert.That(_platform.SharedMemory.QueryStatus(handle.Id).Exists, Is.False, $"segment {handle.Id}");
        if (OsObjects.CanCount && Directory.Exists("/dev/shm"))
        {
            string cookie = handle.Cookie.ToString("x16");
            Assert.That(Directory.GetFiles("/dev/shm").Where(f => f.Contains(cookie, StringComparison.Ordinal) || f.EndsWith(handle.Id, StringComparison.Ordinal)), Is.Empty, "/dev/shm");
        }
        Assert.That(LogText(), Does.Not.Contain("terminating any other"));
    }

    [Test]
    public void ChildExitingZeroIsNotACrash()
    {
        Supervisor c = Start(Builder("pm-clean").AddBackgroundWorker(Spec("stay", "sleep", restartIntervalMs: 0)));
        WaitUntil(() => Starts(c) == 1, "the static worker to attach");
        int stayPid = RunningPids(c).Single();

        BackgroundWorkerHandle h = c.StartChild(Spec("short", "exit0", 300));
        int pid = h.WaitForStartup(Patience);
        _pids.Add(pid);
        Assert.That(pid, Is.GreaterThan(0));
        h.WaitForShutdown(Patience);
        Assert.That(h.GetStatus(), Is.EqualTo(BgwHandleStatus.Stopped));

        Assert.That(c.CrashRestarts, Is.Zero);
        Assert.That(RunningPids(c), Is.EqualTo(new[] { stayPid }));
        Assert.That(c.GetChildren().Select(ch => ch.Name), Is.EqualTo(new[] { "stay" }));
        Assert.That(LogText(), Does.Not.Contain("terminating any other"));
    }

    [Test]
    public void WorkerExitingOneIsRestartedOrUnregisteredNotACrash()
    {
        // bgworker.c: exit(1) is an error exit. A permanent worker is started again after its interval, in its slot
        // (its handle sees it again); a worker that is never restarted is unregistered. No crash restart either way.
        Supervisor c = Start(Builder("pm-exit1").AddBackgroundWorker(Spec("stay", "sleep", restartIntervalMs: 0)));
        WaitUntil(() => Starts(c) == 1, "the static worker to attach");
        string handle = c.Handle;

        BackgroundWorkerHandle once = c.StartChild(Spec("once", "exit1", 50));
        _pids.Add(once.WaitForStartup(Patience));
        once.WaitForShutdown(Patience);
        Assert.That(once.GetStatus(), Is.EqualTo(BgwHandleStatus.Stopped));

        BackgroundWorkerHandle again = c.StartChild(Spec("again", "exit1", 50, restartIntervalMs: 100));
        int first = again.WaitForStartup(Patience);
        _pids.Add(first);
        WaitUntil(() => again.GetStatus(out int pid) == BgwHandleStatus.Started && pid != first, "the worker to be started again");
        again.GetStatus(out int second);
        _pids.Add(second);
        WaitUntil(() => Starts(c) >= 4, "the restarted worker to attach (stay, once, again twice)");
        Assert.That(c.CrashRestarts, Is.Zero);
        Assert.That(c.Handle, Is.EqualTo(handle), "shared memory was not rebuilt");
        string log = LogText();
        Assert.That(log, Does.Contain($"\"again\" (PID {first}) exited with exit code 1; restarting it in 100 ms"));
        Assert.That(log, Does.Not.Contain("terminating any other"));
    }

    [Test]
    public void ChildExitingZeroWhileHoldingAnLWLockIsACrash()
    {
        // An exit code of 0 is not enough: a child whose process ended while it held an LWLock may have left what the
        // lock protects half-changed, so the supervisor restarts as for a kill (postmaster: exit in a critical section).
        Supervisor c = Start(Builder("pm-heldexit").AddBackgroundWorker(Spec("stay", "sleep", restartIntervalMs: 0)));
        WaitUntil(() => Starts(c) == 1, "the static worker to attach");
        string oldHandle = c.Handle;

        BackgroundWorkerHandle h = c.StartChild(Spec("holder", "exit0-holding-lwlock", 100));
        int pid = h.WaitForStartup(Patience);
        _pids.Add(pid);
        WaitUntil(() => c.CrashRestarts == 1, "the crash restart after the clean exit with a lock held");
        Assert.That(c.Handle, Is.Not.EqualTo(oldHandle), "shared memory was rebuilt");
        string log = LogText();
        Assert.That(log, Does.Contain($"\"holder\" (PID {pid}) exited with exit code 0 while holding 1 LWLock(s)"));
        Assert.That(log, Does.Contain("reinitializing shared memory"));
        WaitUntil(() => Starts(c) == 1, "the permanent worker to attach to the new segment");
        AssertWorksAfterRestart(c, 1);
    }

    [Test]
    public void CrashStopAsksTheOthersToLeaveAtOnceAndFastShutdownDoesNot()
    {
        // After a crash the others must not do shutdown work (a dead process may hold what it needs): they are asked
        // for an immediate stop; a fast shutdown asks them to leave when convenient.
        Supervisor c = Start(Builder("pm-stopkind")
            .AddBackgroundWorker(Spec("victim", "sleep", restartIntervalMs: 0))
            .AddBackgroundWorker(Spec("witness", "sleep-report", restartIntervalMs: 0)));
        WaitUntil(() => Starts(c) == 2, "both workers to attach");
        int victim = c.GetChildren().Single(ch => ch.Name == "victim").Pid;
        int witness = c.GetChildren().Single(ch => ch.Name == "witness").Pid;
        string crashFile = PostmasterWorkerCommands.StopKindFile(witness);
        try
        {
            SupervisorDeathTests.KillHard(victim);
            WaitUntil(() => c.CrashRestarts == 1, "the crash restart");
            WaitUntil(() => IsGone(witness), "the witness to leave");
            Assert.That(File.Exists(crashFile) ? File.ReadAllText(crashFile) : "(no report)", Is.EqualTo("immediate"));

            WaitUntil(() => Starts(c) == 2, "both workers to attach to the new segment");
            int witness2 = c.GetChildren().Single(ch => ch.Name == "witness").Pid;
            string fastFile = PostmasterWorkerCommands.StopKindFile(witness2);
            try
            {
                Assert.That(c.Shutdown(ShutdownMode.Fast, Patience), Is.True);
                Assert.That(File.Exists(fastFile) ? File.ReadAllText(fastFile) : "(no report)", Is.EqualTo("fast"));
            }
            finally
            {
                File.Delete(fastFile);
            }
        }
        finally
        {
            File.Delete(crashFile);
        }
    }

    /// <summary>
    /// A permanent worker whose start fails (here: its program is missing) is tried again after its restart interval,
    /// as the postmaster retries a worker whose fork failed, and runs once the start can succeed; the cluster is not
    /// left without it.
    /// </summary>
    [Test]
    public void APermanentWorkerWhoseStartFailsIsTriedAgainUntilItRuns()
    {
        ChildSpec real = Spec("perm", "sleep", restartIntervalMs: 100);
        string dir = Path.GetDirectoryName(real.FileName)!;
        string copy = Path.Combine(dir, $"{Path.GetFileNameWithoutExtension(real.FileName)}.retry-{Guid.NewGuid():N}{Path.GetExtension(real.FileName)}");
        _copies.Add(copy);
        Supervisor c = Start(Builder("pm-retry").AddBackgroundWorker(real with { FileName = copy }));
        WaitUntil(() => CountOf(LogText(), "trying again in") >= 2, "the failed start to be tried again twice");
        Assert.That(c.State, Is.EqualTo(ClusterState.Running));
        Assert.That(c.GetChildren().Select(ch => ch.Name), Is.EquivalentTo(new[] { "perm" }), "the worker was forgotten");
        string log = LogText();
        Assert.That(CountOf(log, "could not start"), Is.EqualTo(CountOf(log, "trying again in")), "a failed start was not retried");
        Assert.That(log, Does.Not.Contain("terminating any other"));
        if (ThisProgram.RunsOnDotnetHost)
        {
            // Copying the dotnet host elsewhere would not run: the retry is shown, the eventual start is not.
            TestContext.Out.WriteLine("runs on the dotnet host: the start after the program appears is not tried");
            return;
        }
        File.Copy(real.FileName, copy); // the apphost runs the application next to it, whatever its own name
        WaitUntil(() => Starts(c) == 1, "the worker to start once its program exists");
        RunningPids(c);
        Assert.That(c.CrashRestarts, Is.Zero);
    }

    private static int CountOf(string text, string what)
    {
        int n = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal))
            n++;
        return n;
    }

    [Test]
    public void KilledChildCausesCrashRestartWithNewSegment()
    {
        Supervisor c = Start(Builder("pm-crash")
            .AddBackgroundWorker(Spec("perm1", "sleep", restartIntervalMs: 0))
            .AddBackgroundWorker(Spec("perm2", "sleep", restartIntervalMs: 0))
            .AddBackgroundWorker(Spec("once", "sleep")));
        WaitUntil(() => Starts(c) == 3, "three workers to attach");
        string oldHandle = c.Handle;
        List<int> before = RunningPids(c);
        int victim = c.GetChildren().Single(ch => ch.Name == "perm1").Pid;

        using (Process p = Process.GetProcessById(victim))
            p.Kill(); // SIGKILL on Unix, TerminateProcess on Windows

        var sw = Stopwatch.StartNew();
        WaitUntil(() => c.CrashRestarts == 1, "the crash restart");
        double restartedMs = sw.Elapsed.TotalMilliseconds;
        WaitUntil(() => Starts(c) == 2, "the permanent workers to attach to the new segment");
        double workingMs = sw.Elapsed.TotalMilliseconds;
        TestContext.Out.WriteLine($"[{backend}] child killed (SIGKILL; TerminateProcess on Windows) -> shared memory rebuilt: {restartedMs:F0} ms; -> permanent workers attached to it: {workingMs:F0} ms");
        Assert.That(c.Handle, Is.Not.EqualTo(oldHandle));
        Assert.That(c.Incarnation, Is.EqualTo(2));
        foreach (int pid in before)
            WaitUntil(() => IsGone(pid), $"old child {pid} to be stopped");
        List<int> after = RunningPids(c);
        Assert.That(after, Has.Count.EqualTo(2));
        Assert.That(after.Intersect(before), Is.Empty);
        Assert.That(c.GetChildren().Select(ch => ch.Name), Is.EquivalentTo(new[] { "perm1", "perm2" }));
        Assert.That(c.State, Is.EqualTo(ClusterState.Running));
        string log = LogText();
        Assert.That(log, Does.Contain($"\"perm1\" (PID {victim})"));
        Assert.That(log, Does.Contain("terminating any other active processes"));
        Assert.That(log, Does.Contain("reinitializing shared memory"));
        AssertWorksAfterRestart(c, 2);
    }

    /// <summary>After a crash restart: a new child attaches to the new segment, bumps its counter and exits cleanly.</summary>
    private void AssertWorksAfterRestart(Supervisor c, long startsBefore)
    {
        int restarts = c.CrashRestarts;
        BackgroundWorkerHandle h = c.StartChild(Spec("after", "exit0", 50));
        _pids.Add(h.WaitForStartup(Patience));
        h.WaitForShutdown(Patience);
        Assert.That(h.GetStatus(), Is.EqualTo(BgwHandleStatus.Stopped));
        Assert.That(Starts(c), Is.EqualTo(startsBefore + 1), "the new child used the new shared memory");
        Assert.That(c.CrashRestarts, Is.EqualTo(restarts), "its clean exit was no crash");
        Assert.That(c.State, Is.EqualTo(ClusterState.Running));
    }

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SysKill(int pid, int sig);

    private const int SIGQUIT = 3;

    [Test, OnlyOn(Os.Unix, "no signals on Windows; TerminateProcess is covered by KilledChildCausesCrashRestartWithNewSegment")]
    public void ChildKilledWithSigquitCausesCrashRestart()
    {
        Supervisor c = Start(Builder("pm-sigquit")
            .AddBackgroundWorker(Spec("perm1", "sleep", restartIntervalMs: 0))
            .AddBackgroundWorker(Spec("perm2", "sleep", restartIntervalMs: 0)));
        WaitUntil(() => Starts(c) == 2 && c.Cluster.Procs.GetProcs().Count == 2, "both workers to join");
        List<int> before = RunningPids(c);
        int victim = c.GetChildren().Single(ch => ch.Name == "perm2").Pid;

        // PostgreSQL's immediate-stop signal: the .NET runtime's default for SIGQUIT ends the process by it.
        Assert.That(SysKill(victim, SIGQUIT), Is.Zero);

        WaitUntil(() => c.CrashRestarts == 1, "the crash restart");
        WaitUntil(() => Starts(c) == 2, "the permanent workers to attach to the new segment");
        foreach (int pid in before)
            WaitUntil(() => IsGone(pid), $"old child {pid} to be stopped");
        Assert.That(RunningPids(c).Intersect(before), Is.Empty);
        Assert.That(LogText(), Does.Contain($"\"perm2\" (PID {victim}) exited with exit code {128 + SIGQUIT} (on Unix: terminated by signal {SIGQUIT})"));
        AssertWorksAfterRestart(c, 2);
    }

    [Test]
    public void RestartAfterCrashOffShutsDownWhenAChildIsKilled()
    {
        Supervisor c = Start(Builder("pm-norestart-kill")
            .WithRestartAfterCrash(false)
            .AddBackgroundWorker(Spec("stay", "sleep", restartIntervalMs: 0))
            .AddBackgroundWorker(Spec("victim", "sleep", restartIntervalMs: 0)));
        WaitUntil(() => Starts(c) == 2, "both workers to attach");
        RunningPids(c);
        ShmemHandle handle = c.Cluster.Segment.Handle;
        using (Process p = Process.GetProcessById(c.GetChildren().Single(ch => ch.Name == "victim").Pid))
            p.Kill(); // SIGKILL on Unix, TerminateProcess on Windows
        Assert.That(c.WaitForStopped(Patience), Is.True, "the cluster stops after the crash");
        Assert.That(c.CrashRestarts, Is.Zero);
        AssertAllGone();
        Assert.That(_platform.SharedMemory.QueryStatus(handle.Id).Exists, Is.False, "shared memory destroyed");
        Assert.That(LogText(), Does.Contain("restart-after-crash is off"));
        Assert.Throws<InvalidOperationException>(() => c.StartChild(Spec("late", "exit0")));
    }

    [Test]
    public void RestartAfterCrashOffShutsDown()
    {
        Supervisor c = Start(Builder("pm-norestart")
            .WithRestartAfterCrash(false)
            .AddBackgroundWorker(Spec("stay", "sleep", restartIntervalMs: 0))
            .AddBackgroundWorker(Spec("crasher", "crash", 500)));
        WaitUntil(() => c.GetChildren().Count(ch => ch.Pid != 0) == 2 || c.State == ClusterState.Stopped, "both workers to run");
        RunningPids(c);
        Assert.That(c.WaitForStopped(Patience), Is.True, "the cluster stops after the crash");
        Assert.That(c.State, Is.EqualTo(ClusterState.Stopped));
        Assert.That(c.CrashRestarts, Is.Zero);
        Assert.That(c.Cluster.Segment.IsAttached, Is.False);
        AssertAllGone();
        Assert.That(LogText(), Does.Contain("exited with exit code 3"));
        Assert.That(LogText(), Does.Contain("restart-after-crash is off"));
    }

    [Test]
    public void DynamicWorkerRegisteredFromAnotherProcess()
    {
        Supervisor c = Start(Builder("pm-dynamic"));
        using ChildWorker other = ChildWorker.Start(backend);
        other.Send($"pm-attach {c.Handle}");
        string[] reg = other.Send("pm-register dyn -1 exit0 1500").Split(' ');
        int slot = int.Parse(reg[0]);

        int pid = 0;
        WaitUntil(() =>
        {
            string[] st = other.Send("pm-status").Split(' ');
            pid = int.Parse(st[1]);
            return st[0] == nameof(BgwHandleStatus.Started);
        }, "the dynamic worker to start");
        _pids.Add(pid);
        Assert.That(c.GetChildren().Single().Slot, Is.EqualTo(slot));
        Assert.That(c.GetChildren().Single().Pid, Is.EqualTo(pid));
        WaitUntil(() => Starts(c) == 1, "the dynamic worker to attach");
        WaitUntil(() => other.Send("pm-status").StartsWith(nameof(BgwHandleStatus.Stopped), StringComparison.Ordinal), "the dynamic worker to stop");
        Assert.That(c.GetChildren(), Is.Empty);
        Assert.That(c.CrashRestarts, Is.Zero);
        other.Send("pm-detach");
        other.Close();
    }

    [Test]
    public void SmartShutdownWaitsForChildren()
    {
        Supervisor c = Start(Builder("pm-smart")
            .AddBackgroundWorker(Spec("a", "exit0", 1000))
            .AddBackgroundWorker(Spec("b", "exit0", 1000)));
        WaitUntil(() => Starts(c) == 2, "both workers to attach");
        RunningPids(c);
        Assert.That(c.Shutdown(ShutdownMode.Smart, Patience), Is.True, "children exited on their own (before the deadline: nothing was killed)");
        Assert.That(c.State, Is.EqualTo(ClusterState.Stopped));
        AssertAllGone();
        Assert.That(LogText(), Does.Not.Contain("exit code"));
    }

    [Test]
    public void FastShutdownAsksChildrenToStop()
    {
        Supervisor c = Start(Builder("pm-fast")
            .AddBackgroundWorker(Spec("a", "sleep", restartIntervalMs: 0))
            .AddBackgroundWorker(Spec("b", "sleep")));
        WaitUntil(() => Starts(c) == 2 && c.Cluster.Procs.GetProcs().Count == 2, "both workers to join");
        RunningPids(c);
        Assert.That(c.Shutdown(ShutdownMode.Fast, Patience), Is.True, "children stopped when asked");
        Assert.That(c.State, Is.EqualTo(ClusterState.Stopped));
        AssertAllGone();
        Assert.That(LogText(), Does.Not.Contain("exit code"), "they exited with 0");
    }

    [Test]
    public void ImmediateShutdownKillsChildren()
    {
        Supervisor c = Start(Builder("pm-immediate")
            .AddBackgroundWorker(Spec("a", "sleep", restartIntervalMs: 0))
            .AddBackgroundWorker(Spec("b", "sleep")));
        WaitUntil(() => Starts(c) == 2, "both workers to attach");
        RunningPids(c);
        Assert.That(c.Shutdown(ShutdownMode.Immediate, Patience), Is.True);
        Assert.That(c.State, Is.EqualTo(ClusterState.Stopped));
        Assert.That(c.Cluster.Segment.IsAttached, Is.False);
        AssertAllGone();
        Assert.That(c.Shutdown(ShutdownMode.Fast, Patience), Is.True, "idempotent");
    }

    /// <summary>Reads block <paramref name="block"/> of the "pages" relation through the supervisor's pool.</summary>
    private static long ReadPage(Supervisor c, long block)
    {
        long value = 0;
        TestThreads.Run(1, _ =>
        {
            BufferPool pool = c.Cluster.Buffers!;
            using Participant me = c.Cluster.Procs.Join(ProcKind.Backend);
            int b = pool.ReadBuffer(me, PostmasterWorkerCommands.PagesRelation, ForkNumber.Main, block);
            pool.LockBuffer(me, b, BufferLockMode.Shared);
            value = BinaryPrimitives.ReadInt64LittleEndian(pool.GetPage(me, b)[PostmasterWorkerCommands.PageOffset..]);
            pool.LockBuffer(me, b, BufferLockMode.Unlock);
            pool.ReleaseBuffer(me, b);
        });
        return value;
    }

    [Test]
    public void BufferPoolIsSharedWithChildrenAndRebuiltAtACrashRestart()
    {
        _dataDir = Directory.CreateTempSubdirectory("pgipc-pmbuf").FullName;
        Supervisor c = Start(Builder("pm-buffers").WithDataDirectory(_dataDir).WithBufferPool(32));
        BufferPool first = c.Cluster.Buffers!;
        Assert.That(first, Is.Not.Null);
        Assert.That(first.NumBuffers, Is.EqualTo(32));

        // A child writes three pages through the pool; the supervisor reads them from shared memory.
        BackgroundWorkerHandle h = c.StartChild(Spec("writer", "pages", 3));
        _pids.Add(h.WaitForStartup(Patience));
        h.WaitForShutdown(Patience);
        Assert.That(c.CrashRestarts, Is.Zero, "the writer exited cleanly");
        for (long b = 0; b < 3; b++)
            Assert.That(ReadPage(c, b), Is.EqualTo(PostmasterWorkerCommands.PageValue(b)), $"block {b} as the child wrote it");

        // A crash throws the pool away with the segment; the new one works for the next child.
        BackgroundWorkerHandle crasher = c.StartChild(Spec("crasher", "crash", 0));
        _pids.Add(crasher.WaitForStartup(Patience));
        WaitUntil(() => c.CrashRestarts == 1, "the crash restart");
        Assert.That(c.Cluster.Buffers, Is.Not.Null.And.Not.SameAs(first), "a new pool in the new segment");
        h = c.StartChild(Spec("writer2", "pages", 2));
        _pids.Add(h.WaitForStartup(Patience));
        h.WaitForShutdown(Patience);
        Assert.That(c.CrashRestarts, Is.EqualTo(1));
        // The first writer's blocks were never written out (no checkpoint before the crash): blocks 3 and 4 are new.
        Assert.That(ReadPage(c, 3), Is.EqualTo(PostmasterWorkerCommands.PageValue(3)));
        Assert.That(ReadPage(c, 4), Is.EqualTo(PostmasterWorkerCommands.PageValue(4)));

        // A clean shutdown writes the dirty buffers out.
        Assert.That(c.Shutdown(ShutdownMode.Fast, Patience), Is.True);
        Assert.That(c.Cluster.IsAttached, Is.False, "the shutdown destroyed the segment and detached its modules");
        byte[] page = new byte[BufferPool.BlockSize];
        using (var f = new FileStream(Path.Combine(_dataDir, PostmasterWorkerCommands.PagesRelation.ToString()), FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
        {
            Assert.That(f.Length, Is.EqualTo(5L * BufferPool.BlockSize));
            f.Seek(4L * BufferPool.BlockSize, SeekOrigin.Begin);
            f.ReadExactly(page);
        }
        Assert.That(BinaryPrimitives.ReadInt64LittleEndian(page.AsSpan(PostmasterWorkerCommands.PageOffset)), Is.EqualTo(PostmasterWorkerCommands.PageValue(4)), "written at shutdown");
        Assert.That(LogText(), Does.Contain("shutdown: wrote"));
    }

    [Test]
    public void BufferPoolNeedsADataDirectory()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => Builder("pm-nodatadir").WithBufferPool(32).Build());
        Assert.That(ex!.Message, Does.Contain("WithDataDirectory"));
        Assert.Throws<ArgumentOutOfRangeException>(() => Builder("pm-fewbuffers").WithBufferPool(8));
        using Supervisor plain = Builder("pm-nobuffers").Build();
        Assert.That(plain.Cluster.Buffers, Is.Null);
    }

    [Test]
    public void ChildAttachRequiresAHandle()
    {
        string? saved = Environment.GetEnvironmentVariable(Cluster.HandleVariable);
        Assert.That(saved, Is.Null.Or.Empty, "the test host is not a cluster child");
        Assert.Throws<InvalidShmemHandleException>(() => Cluster.Attach());
        Assert.Throws<ArgumentException>(() => new ClusterBuilder(TestEnvironment.UniqueKey("pm-spec")).AddBackgroundWorker(new ChildSpec("", "x", [])));
    }
}
