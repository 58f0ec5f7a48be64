/*-------------------------------------------------------------------------
 * HostingTests.cs
 *   PgIpc.Hosting with a real generic host: the hosted supervisor starts
 *   with the host (its static worker runs) and stops with it (children
 *   gone, shared memory destroyed); the child-side helper stops the host
 *   when the supervisor asks its children to stop.
 *-------------------------------------------------------------------------
 */
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using NUnit.Framework;
using PgIpc.Hosting;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Tests.Postmaster;

namespace PgIpc.Tests.Hosting;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class HostingTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private readonly List<int> _pids = [];

    [TearDown]
    public void TearDown()
    {
        foreach (int pid in _pids)
            SupervisorDeathTests.KillHard(pid);
        _pids.Clear();
    }

    [Test]
    public void TheHostedSupervisorStartsAndStopsWithTheHost()
    {
        string key = TestEnvironment.UniqueKey("host");
        using IHost host = new HostBuilder()
            .ConfigureServices(services => services
                .AddPgIpcSupervisor(key, b => b
                    .WithPlatform(_platform)
                    .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
                    .RequestShmem(PostmasterWorkerCommands.CountersName, PostmasterWorkerCommands.NumCounters * 8)
                    .OnShmemStartup(c => c.InitStruct(PostmasterWorkerCommands.CountersName, PostmasterWorkerCommands.NumCounters * 8, null, out _))
                    .AddBackgroundWorker(PostmasterWorkerCommands.Spec("hosted", backend, "sleep", restartIntervalMs: 0)))
                .Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(20)))
            .Build();
        var service = host.Services.GetRequiredService<PgIpcSupervisorService>();
        Assert.Catch<InvalidOperationException>(() => _ = service.Supervisor, "no supervisor before the host starts");

        host.StartAsync().GetAwaiter().GetResult();
        Supervisor s = service.Supervisor;
        Assert.That(s.State, Is.EqualTo(ClusterState.Running));
        Assert.That(Poll.Until(() => s.GetChildren() is [{ Pid: not 0 }]), Is.True, "the static worker to run");
        int pid = s.GetChildren()[0].Pid;
        _pids.Add(pid);
        string segment = s.Cluster.Segment.Handle.Id;

        host.StopAsync().GetAwaiter().GetResult();
        Assert.Multiple(() =>
        {
            Assert.That(s.State, Is.EqualTo(ClusterState.Stopped));
            Assert.That(Poll.Until(() => SupervisorDeathTests.IsGone(pid)), Is.True, "the worker is gone");
            Assert.That(_platform.SharedMemory.QueryStatus(segment).Exists, Is.False, "shared memory destroyed");
        });
    }

    [Test]
    public void TheHostedSupervisorNeedsAKey()
    {
        using IHost host = new HostBuilder()
            .ConfigureServices(services => services.AddPgIpcSupervisor(o => o.ShutdownMode = ShutdownMode.Immediate))
            .Build();
        Assert.Catch<Microsoft.Extensions.Options.OptionsValidationException>(() => host.StartAsync().GetAwaiter().GetResult());
    }

    [Test]
    public void TheChildHelperStopsTheHostWhenTheSupervisorAsks()
    {
        Supervisor s = new ClusterBuilder(TestEnvironment.UniqueKey("host-child")).WithPlatform(_platform).WithLog(TextWriter.Null).Build();
        try
        {
            using IHost host = new HostBuilder()
                .ConfigureServices(services => services
                    .AddSingleton(s.Cluster) // the cluster the child is attached to (here: the supervisor's own view)
                    .AddPgIpcChild(o => o.PollInterval = TimeSpan.FromMilliseconds(10)))
                .Build();
            host.StartAsync().GetAwaiter().GetResult();
            var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
            var helper = host.Services.GetRequiredService<PgIpcChildLifetime>();
            Assert.That(lifetime.ApplicationStopping.IsCancellationRequested, Is.False, "nothing asked yet");
            Assert.That(helper.StopReason, Is.EqualTo(PgIpcChildStopReason.None));

            s.Cluster.BackgroundWorkers.RequestShutdown(); // what a fast shutdown and a crash stop tell the children

            Assert.That(lifetime.ApplicationStopping.WaitHandle.WaitOne(Poll.Patience), Is.True, "the host is stopping");
            Assert.That(helper.StopReason, Is.EqualTo(PgIpcChildStopReason.StopRequested));
            host.StopAsync().GetAwaiter().GetResult();
        }
        finally
        {
            s.Dispose();
        }
    }
}
