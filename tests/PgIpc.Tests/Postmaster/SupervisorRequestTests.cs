/*-------------------------------------------------------------------------
 * SupervisorRequestTests.cs
 *   Children's requests to the supervisor with real processes, on every
 *   backend: a launcher child gets a worker started with an assignment and
 *   reads back its result (seed 001's autovacuum launcher -> postmaster ->
 *   worker flow), a child has its sibling restarted, a child's service
 *   requests reach the application's hook (one that throws does not stop
 *   the supervisor), and a full request area is a clear error.
 *
 * NOTES
 *   Children are this test executable in "--run-child" mode (see
 *   PostmasterWorkerCommands.cs); each exits by itself within 60 s, the
 *   cluster's Dispose kills what is left, and every pid seen is checked
 *   gone (and killed if not) in teardown.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Collections.Concurrent;
using NUnit.Framework;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;

namespace PgIpc.Tests.Postmaster;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class SupervisorRequestTests(string backend)
{
    private static readonly TimeSpan Patience = Poll.Patience;
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<int> _pids = [];
    private StringWriter _log = new();
    private Supervisor? _cluster;

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
        {
            SupervisorDeathTests.KillHard(pid);
            Poll.WaitFor(() => SupervisorDeathTests.IsGone(pid), $"child {pid} to be gone", Patience, pollMs: 20);
        }
    }

    private ClusterBuilder Builder(string what) => PostmasterWorkerCommands.TestBuilder(what, _platform, _log, TimeSpan.FromSeconds(5));

    private ChildSpec Spec(string name, string mode, int ms = 0) => PostmasterWorkerCommands.Spec(name, backend, mode, ms);

    private Supervisor Start(ClusterBuilder b)
    {
        _cluster = b.Build();
        _cluster.Start();
        return _cluster;
    }

    private static long Counter(Supervisor c, int i)
        => c.Cluster.Segment.IsAttached && c.Cluster.Segment.TryFindStruct(PostmasterWorkerCommands.CountersName, out ShmemRegion r)
            ? Volatile.Read(ref r.AsSpan<long>()[i]) : -1;

    private static void WaitUntil(Func<bool> condition, string what) => Poll.WaitFor(condition, what, Patience, pollMs: 20);

    private string LogText()
    {
        lock (_log)
            return _log.ToString();
    }

    private void Track(long pid)
    {
        if (pid > 0 && !_pids.Contains((int)pid))
            _pids.Add((int)pid);
    }

    [Test]
    public void LauncherGetsAWorkerStartedThatReadsItsAssignmentAndReportsAResult()
    {
        // The launcher (a child) cannot start processes: it writes the assignment into the request area and signals
        // the supervisor, which starts the registered on-request worker; the worker reads the assignment and reports.
        const int assignment = 41;
        Supervisor c = Start(Builder("pm-launch")
            .AddOnRequestWorker(Spec(PostmasterWorkerCommands.AssignedEntry, "assigned"))
            .AddBackgroundWorker(Spec("launcher", "launcher", assignment)));
        WaitUntil(() => Counter(c, PostmasterWorkerCommands.LauncherFinalState) > 0, "the launcher to see its worker's outcome");
        long workerPid = Counter(c, PostmasterWorkerCommands.LauncherWorkerPid);
        Track(workerPid);
        Track(Counter(c, 1)); // the launcher's own pid (slot 0)
        Assert.Multiple(() =>
        {
            Assert.That((WorkerRequestState)Counter(c, PostmasterWorkerCommands.LauncherUnknownState), Is.EqualTo(WorkerRequestState.Failed),
                "a request for an entry the builder does not know");
            Assert.That((WorkerRequestState)Counter(c, PostmasterWorkerCommands.LauncherFinalState), Is.EqualTo(WorkerRequestState.Finished));
            Assert.That(Counter(c, PostmasterWorkerCommands.LauncherResult), Is.EqualTo(PostmasterWorkerCommands.AssignedResult(assignment)));
            Assert.That(workerPid, Is.GreaterThan(0));
            Assert.That(Counter(c, PostmasterWorkerCommands.AssignedPid), Is.EqualTo(workerPid), "the pid the launcher saw is the worker's");
            Assert.That(c.CrashRestarts, Is.Zero);
            Assert.That(LogText(), Does.Contain("could not start worker \"no-such-entry\""));
        });
    }

    [Test]
    public void RestartRequestRestartsTheSiblingAndIgnoresAnUnknownName()
    {
        Supervisor c = Start(Builder("pm-restart").AddBackgroundWorker(Spec(PostmasterWorkerCommands.RestartTarget, "sleep")));
        WaitUntil(() => c.GetChildren().Any(ch => ch.Name == PostmasterWorkerCommands.RestartTarget && ch.Pid != 0)
            && c.Cluster.Procs.GetProcs().Count == 1, "the victim to join");
        int oldPid = c.GetChildren().Single(ch => ch.Name == PostmasterWorkerCommands.RestartTarget).Pid;
        Track(oldPid);

        BackgroundWorkerHandle restarter = c.StartChild(Spec("restarter", "restart-sibling"));
        WaitUntil(() => c.GetChildren().Any(ch => ch.Name == PostmasterWorkerCommands.RestartTarget && ch.Pid != 0 && ch.Pid != oldPid),
            "the victim to be started again");
        ChildInfo victim = c.GetChildren().Single(ch => ch.Name == PostmasterWorkerCommands.RestartTarget);
        Track(victim.Pid);
        Track(Counter(c, 1 + restarter.Slot));
        WaitUntil(() => SupervisorDeathTests.IsGone(oldPid), "the old victim to be gone");
        Assert.Multiple(() =>
        {
            Assert.That(victim.Starts, Is.EqualTo(2));
            Assert.That(c.CrashRestarts, Is.Zero, "an orderly stop, not a crash");
            Assert.That(c.State, Is.EqualTo(ClusterState.Running));
            string log = LogText();
            Assert.That(log, Does.Contain("to restart \"ghost\": no child of this supervisor has that name"));
            Assert.That(log, Does.Not.Contain("terminating any other"));
        });
        // The new victim runs normally: a fast shutdown stops it in time.
        WaitUntil(() => c.Cluster.Procs.GetProcs().Any(p => p.Pid == victim.Pid), "the new victim to join");
        Assert.That(c.Shutdown(ShutdownMode.Fast, Patience), Is.True);
    }

    [Test]
    public void ServiceHookRunsWithThePayloadAndAThrowingHookDoesNotStopTheSupervisor()
    {
        const int argument = 77;
        var seen = new ConcurrentQueue<(int Code, byte[] Argument, int Pid)>();
        Supervisor c = Start(Builder("pm-service").OnServiceRequest(ctx =>
        {
            if (ctx.Code == PostmasterWorkerCommands.ThrowingServiceCode)
                throw new InvalidOperationException("the hook's own failure");
            seen.Enqueue((ctx.Code, ctx.Argument.ToArray(), ctx.RequesterPid));
        }));
        BackgroundWorkerHandle poster = c.StartChild(Spec("poster", "service", argument));
        WaitUntil(() => !seen.IsEmpty, "the service request to reach the hook");
        long posterPid = Counter(c, 1 + poster.Slot);
        Track(posterPid);
        (int code, byte[] arg, int pid) = seen.Single();
        Assert.Multiple(() =>
        {
            Assert.That(code, Is.EqualTo(PostmasterWorkerCommands.ServiceCode));
            Assert.That(arg.Length == 8 ? BinaryPrimitives.ReadInt64LittleEndian(arg) : -1, Is.EqualTo(argument));
            Assert.That(pid, Is.EqualTo(posterPid));
            Assert.That(LogText(), Does.Contain($"service request hook failed on request {PostmasterWorkerCommands.ThrowingServiceCode} from PID {posterPid}"));
            Assert.That(c.State, Is.EqualTo(ClusterState.Running));
            Assert.That(c.CrashRestarts, Is.Zero);
        });
        // The loop goes on after the throw: a later request is served too.
        c.Cluster.SupervisorRequests.PostServiceRequest(3, [9]);
        WaitUntil(() => seen.Count == 2, "a later service request to reach the hook");
        Assert.That(seen.Last().Code, Is.EqualTo(3));
    }

    [Test]
    public void AFullRequestAreaIsAClearErrorAndSlotsComeBack()
    {
        var seen = new ConcurrentQueue<int>();
        _cluster = Builder("pm-reqfull").WithMaxSupervisorRequests(2).OnServiceRequest(ctx => seen.Enqueue(ctx.Code)).Build();
        SupervisorRequests area = _cluster.Cluster.SupervisorRequests;
        // Not started yet: nothing takes the requests.
        area.PostServiceRequest(1, []);
        using WorkerRequestHandle pending = area.RequestWorker("nobody", []);
        NoFreeSupervisorRequestSlotException ex = Assert.Throws<NoFreeSupervisorRequestSlotException>(() => area.PostServiceRequest(2, []))!;
        Assert.That(ex.Capacity, Is.EqualTo(2));
        Assert.That(ex.Message, Does.Contain("all 2 are in use"));
        Assert.Throws<ArgumentException>(() => area.PostServiceRequest(3, new byte[SupervisorRequests.MaxArgumentBytes + 1]));

        _cluster.Start();
        Assert.That(pending.WaitForOutcome(Patience), Is.EqualTo(WorkerRequestState.Failed));
        Assert.That(pending.FailureReason, Does.Contain("no on-request worker is named \"nobody\""));
        WaitUntil(() => seen.Count == 1, "the service request to be served");
        // The service slot was freed when taken; the worker request's when its handle is released.
        area.PostServiceRequest(4, []);
        pending.Dispose();
        area.PostServiceRequest(5, []);
        WaitUntil(() => seen.Count == 3, "the later requests to be served");
        Assert.That(seen, Is.EqualTo(new[] { 1, 4, 5 }));
    }
}
