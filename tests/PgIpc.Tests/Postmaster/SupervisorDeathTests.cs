/*-------------------------------------------------------------------------
 * SupervisorDeathTests.cs
 *   The supervisor itself killed (SIGKILL; TerminateProcess on Windows):
 *   every child notices and exits, the next Create on the same cluster key
 *   removes the stale segment and every other OS object the dead cluster
 *   made and starts; an orphaned child still attached makes Create refuse
 *   (PostgreSQL's 017_shm).
 *
 * NOTES
 *   The supervisor is a test worker process ("pm-supervise", see
 *   PostmasterWorkerCommands.cs) that builds a cluster and starts its
 *   children (this executable in --run-child mode), so the children are the
 *   test's grandchildren. Only the supervisor's pid is killed, not its tree.
 *   Where PID 1 does not reap (containers) the orphaned children stay
 *   zombies after they exit; a zombie counts as gone here, as it does for
 *   ShmemSegment's in-use check. Each test runs one supervisor and at most
 *   three children, each of which exits by itself within 60 s; TearDown
 *   kills any survivor.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Postmaster;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class SupervisorDeathTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    /// <summary>How long the children of a killed supervisor get to exit (generous: the figure measured is printed).</summary>
    private static readonly TimeSpan ChildExitBound = TimeSpan.FromSeconds(10);

    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<int> _pids = [];
    private readonly List<Supervisor> _clusters = [];
    private ChildWorker? _supervisor;
    private string? _dataDir;

    [SetUp]
    public void SetUp()
    {
        _pids.Clear();
        _clusters.Clear();
        _dataDir = null;
    }

    [TearDown]
    public void TearDown()
    {
        foreach (Supervisor c in _clusters)
            c.Dispose();
        _supervisor?.Dispose();
        _supervisor = null;
        foreach (int pid in _pids)
            KillHard(pid);
        if (_dataDir is not null && Directory.Exists(_dataDir))
            Directory.Delete(_dataDir, recursive: true);
    }

    private ClusterBuilder Builder(string key)
        => new ClusterBuilder(key)
            .WithPlatform(_platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
            .WithMaxChildren(4)
            .WithLog(TextWriter.Null)
            .RequestShmem(PostmasterWorkerCommands.CountersName, PostmasterWorkerCommands.NumCounters * 8)
            .OnShmemStartup(c => c.InitStruct(PostmasterWorkerCommands.CountersName, PostmasterWorkerCommands.NumCounters * 8, null, out _));

    private sealed record Supervised(ShmemHandle Handle, uint DsmHandle, string DsmName, int[] Pids);

    /// <summary>Starts a supervisor process with <paramref name="k"/> children in <paramref name="mode"/>.</summary>
    private Supervised StartSupervisor(string key, int k, string mode, int ms, string? dataDir)
    {
        _supervisor = ChildWorker.Start(backend);
        _pids.Add(_supervisor.Pid);
        string[] r = _supervisor.Send($"pm-supervise {backend} {key} {k} {mode} {ms} {dataDir ?? "-"}", TimeSpan.FromSeconds(60)).Split(' ');
        int[] pids = [.. r[3..].Select(int.Parse)];
        _pids.AddRange(pids);
        Assert.That(pids, Has.Length.EqualTo(k));
        Assert.That(pids, Has.All.GreaterThan(0));
        return new Supervised(ShmemHandle.Parse(r[0]), uint.Parse(r[1]), r[2], pids);
    }

    /// <summary>
    /// Gone: no such process, or (where the backend can tell) a zombie with no thread left, which holds no memory or
    /// descriptor any more (the backends' one liveness query, IProcessServices.GetLiveness).
    /// </summary>
    internal static bool IsGone(int pid) => PgIpcPlatform.Current.Processes.GetLiveness(pid) != ProcessLiveness.Alive;

    /// <summary>Kills that one process (SIGKILL on Unix, TerminateProcess on Windows), not its children.</summary>
    internal static void KillHard(int pid)
    {
        try
        {
            using Process p = Process.GetProcessById(pid);
            p.Kill(entireProcessTree: false);
        }
        catch (ArgumentException) { }
        catch (InvalidOperationException) { }
        catch (System.ComponentModel.Win32Exception) { }
    }

    /// <summary>
    /// Paths of the cluster's objects besides its main segment (whose name the next cluster of the same key reuses
    /// on Posix), which the tests look for after it is gone: the latch directory (Posix), the DSM segment.
    /// </summary>
    private List<string> ObjectNames(ShmemHandle h, string? dsmName)
    {
        List<string> names = [];
        if (OperatingSystem.IsWindows())
            return names;
        if (backend == "posix")
            names.Add(Path.Combine(Path.GetTempPath(), "pgipc.l" + h.Cookie.ToString("x16")));
        if (dsmName is not null && dsmName.StartsWith('/'))
            names.Add(dsmName.StartsWith("/pgipc.", StringComparison.Ordinal) ? "/dev/shm" + dsmName : dsmName);
        return names;
    }

    /// <summary>The test process's descriptors whose target is one of <paramref name="names"/> (or lies under one).</summary>
    private static List<string> OpenDescriptorsOn(IEnumerable<string> names)
    {
        List<string> hits = [];
        if (!OperatingSystem.IsLinux())
            return hits;
        string[] wanted = [.. names];
        foreach (string fd in Directory.GetFileSystemEntries("/proc/self/fd"))
        {
            string? target;
            try { target = new FileInfo(fd).LinkTarget; }
            catch (IOException) { continue; }
            if (target is not null && wanted.Any(w => target.StartsWith(w, StringComparison.Ordinal)))
                hits.Add($"{fd} -> {target}");
        }
        return hits;
    }

    private static bool Exists(string path) => File.Exists(path) || Directory.Exists(path);

    [Test]
    public void KilledSupervisorsChildrenExitAndNextCreateRemovesItsLeftovers()
    {
        string key = TestEnvironment.UniqueKey("pm-svkill");
        _dataDir = Directory.CreateTempSubdirectory("pgipc-svkill").FullName;
        Supervised s = StartSupervisor(key, 3, "sleep", 0, _dataDir);
        foreach (int pid in s.Pids)
            Assert.That(IsGone(pid), Is.False, $"child {pid} runs");
        List<string> oldNames = ObjectNames(s.Handle, s.DsmName);
        foreach (string n in oldNames)
            Assert.That(Exists(n), Is.True, $"{n} exists while the cluster runs");

        var sw = Stopwatch.StartNew();
        KillHard(_supervisor!.Pid);
        double lastExitMs = 0;
        foreach (int pid in s.Pids)
        {
            Poll.WaitFor(() => IsGone(pid), $"child {pid} to exit after its supervisor was killed", ChildExitBound);
            lastExitMs = sw.Elapsed.TotalMilliseconds;
        }
        TestContext.Out.WriteLine($"[{backend}] supervisor killed (SIGKILL; TerminateProcess on Windows) -> last of {s.Pids.Length} children gone: {lastExitMs:F0} ms");
        Poll.WaitFor(() => IsGone(_supervisor.Pid), "the supervisor to be gone", Patience);

        if (!OperatingSystem.IsWindows())
        {
            // Nobody removed anything: the stale segment and the cluster's other objects are all still there.
            Assert.That(_platform.SharedMemory.QueryStatus(s.Handle.Id).Exists, Is.True, "the stale segment is left behind");
            foreach (string n in oldNames)
                Assert.That(Exists(n), Is.True, $"{n} is left behind");
        }
        Assert.That(File.ReadAllText(Path.Combine(_dataDir, "pg_dynshmem", "control")), Does.Contain(s.DsmHandle.ToString()), "the data directory records the DSM segment");

        // The next start on the same key: stale segment and every leftover removed, a working cluster.
        Supervisor c = Builder(key).WithDataDirectory(_dataDir).Build();
        _clusters.Add(c);
        Assert.That(c.Cluster.Segment.Handle.Cookie, Is.Not.EqualTo(s.Handle.Cookie), "a new segment");
        if (!OperatingSystem.IsWindows())
        {
            Assert.That(c.Cluster.Segment.ReplacedStaleSegment, Is.True);
            Assert.That(c.Cluster.Segment.LeftoversRemoved, Is.GreaterThanOrEqualTo(1), "at least the DSM segment");
        }
        foreach (string n in oldNames)
            Assert.That(Exists(n), Is.False, $"{n} was removed");
        Assert.That(_platform.Dsm.Remove(c.Cluster.Dsm.Implementation, s.DsmHandle, _dataDir), Is.False, "the old DSM segment was removed");
        string control = Path.Combine(_dataDir, "pg_dynshmem", "control");
        Assert.That(File.Exists(control) ? File.ReadAllText(control) : "", Does.Not.Contain(s.DsmHandle.ToString()));
        Assert.That(Directory.EnumerateFiles(Path.Combine(_dataDir, "pg_dynshmem"), "mmap.*"), Is.Empty);

        c.Start();
        BackgroundWorkerHandle h = c.StartChild(PostmasterWorkerCommands.Spec("after", backend, "exit0", 100));
        _pids.Add(h.WaitForStartup(Patience));
        h.WaitForShutdown(Patience);
        Assert.That(c.CrashRestarts, Is.Zero);
        Assert.That(c.Cluster.Segment.TryFindStruct(PostmasterWorkerCommands.CountersName, out ShmemRegion r), Is.True);
        Assert.That(Volatile.Read(ref r.AsSpan<long>()[0]), Is.EqualTo(1), "the new cluster's child attached and wrote shared memory");

        ShmemHandle newHandle = c.Cluster.Segment.Handle;
        c.Dispose();
        _clusters.Remove(c);
        Assert.That(_platform.SharedMemory.QueryStatus(newHandle.Id).Exists, Is.False, "ipcs -m / /dev/shm: the new segment is gone");
        List<string> all = [.. oldNames, .. ObjectNames(newHandle, null)];
        if (newHandle.Id.StartsWith('/') && !OperatingSystem.IsWindows())
            all.Add("/dev/shm" + newHandle.Id);
        foreach (string n in all)
            Assert.That(Exists(n), Is.False, $"{n} is gone");
        Assert.That(OpenDescriptorsOn(all), Is.Empty, "descriptors of this process on the clusters' objects");
    }

    [Test]
    public void OrphanedLiveChildBlocksCreateUntilItExits()
    {
        string key = TestEnvironment.UniqueKey("pm-orphan");
        // The child sleeps 30 s without watching for its supervisor's death: an orphan that stays attached.
        Supervised s = StartSupervisor(key, 1, "exit0", 30_000, null);
        int orphan = s.Pids[0];
        KillHard(_supervisor!.Pid);
        Poll.WaitFor(() => IsGone(_supervisor.Pid), "the supervisor to be gone", Patience);
        Assert.That(IsGone(orphan), Is.False, "the orphan still runs");

        var ex = Assert.Throws<SharedMemoryInUseException>(() => Builder(key).Build());
        Assert.That(ex!.Message, Does.Contain($"pre-existing shared memory block is still in use by pid {orphan}"));
        Assert.That(ex.Pid, Is.EqualTo(orphan));

        KillHard(orphan);
        Poll.WaitFor(() => IsGone(orphan), "the orphan to be gone", Patience);
        Supervisor c = Builder(key).Build();
        _clusters.Add(c);
        Assert.That(c.Cluster.Segment.Handle.Cookie, Is.Not.EqualTo(s.Handle.Cookie));
        foreach (string n in ObjectNames(s.Handle, s.DsmName))
            Assert.That(Exists(n), Is.False, $"{n} was removed");
        ShmemHandle newHandle = c.Cluster.Segment.Handle;
        c.Dispose();
        _clusters.Remove(c);
        Assert.That(_platform.SharedMemory.QueryStatus(newHandle.Id).Exists, Is.False);
    }
}
