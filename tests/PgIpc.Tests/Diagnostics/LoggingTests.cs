/*-------------------------------------------------------------------------
 * LoggingTests.cs
 *   The supervisor's log through ILogger: a cluster with a child that
 *   crashes logs, with their stable event ids, the start, the children's
 *   starts, the crash, the crash restart and the shutdown; the meter counts
 *   the restart and the running children, tagged with the cluster key.
 *-------------------------------------------------------------------------
 */
using Microsoft.Extensions.Logging;
using NUnit.Framework;
using PgIpc.Diagnostics;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Tests.Postmaster;

namespace PgIpc.Tests.Diagnostics;

/// <summary>An ILogger that keeps every event (all levels).</summary>
internal sealed class CapturingLogger : ILogger
{
    private readonly List<(LogLevel Level, EventId Id, string Message)> _events = [];

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_events)
            _events.Add((logLevel, eventId, formatter(state, exception)));
    }

    public List<(LogLevel Level, EventId Id, string Message)> Events
    {
        get
        {
            lock (_events)
                return [.. _events];
        }
    }

    public List<int> Ids => [.. Events.Select(e => e.Id.Id)];
}

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class LoggingTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);
    private Supervisor? _supervisor;
    private readonly List<int> _pids = [];

    [TearDown]
    public void TearDown()
    {
        _supervisor?.Dispose();
        _supervisor = null;
        foreach (int pid in _pids)
            SupervisorDeathTests.KillHard(pid);
        _pids.Clear();
    }

    [Test]
    public void ASupervisorWithACrashingChildLogsStartCrashRestartAndShutdownWithTheirEventIds()
    {
        var log = new CapturingLogger();
        using var capture = new MeterCapture();
        string key = TestEnvironment.UniqueKey("log");
        _supervisor = new ClusterBuilder(key)
            .WithPlatform(_platform)
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 4, MaxAuxiliary: 2, MaxBackgroundWorkers: 4))
            .WithMaxChildren(4)
            .WithLogger(log)
            .RequestShmem(PostmasterWorkerCommands.CountersName, PostmasterWorkerCommands.NumCounters * 8)
            .OnShmemStartup(c => c.InitStruct(PostmasterWorkerCommands.CountersName, PostmasterWorkerCommands.NumCounters * 8, null, out _))
            .AddBackgroundWorker(PostmasterWorkerCommands.Spec("stay", backend, "sleep", restartIntervalMs: 0))
            .AddBackgroundWorker(PostmasterWorkerCommands.Spec("boom", backend, "crash", 300))
            .Build();
        Supervisor s = _supervisor;
        s.Start();
        Assert.That(Poll.Until(() => s.CrashRestarts == 1), Is.True, "the crash restart");
        // The permanent worker runs again in the new shared memory; "boom" (not permanent) is forgotten.
        Assert.That(Poll.Until(() => s.GetChildren() is [{ Name: "stay", Pid: not 0 }]), Is.True, "\"stay\" to run again");
        _pids.AddRange(s.GetChildren().Select(c => c.Pid));
        long? running = capture.ObserveTagged(PgIpcMetrics.Children, PgIpcMetrics.ClusterTag, key);
        Assert.That(s.Shutdown(ShutdownMode.Fast, Poll.Patience), Is.True, "the children stop when asked");

        List<int> ids = log.Ids;
        string boomCrash = log.Events.Where(e => e.Id.Id == PgIpcLogEvents.ChildCrashed).Select(e => e.Message).FirstOrDefault() ?? "";
        Assert.Multiple(() =>
        {
            Assert.That(ids, Does.Contain(PgIpcLogEvents.SupervisorStarted));
            Assert.That(ids.Count(i => i == PgIpcLogEvents.ChildStarted), Is.EqualTo(3), "stay, boom, and stay again");
            Assert.That(ids.Count(i => i == PgIpcLogEvents.ChildCrashed), Is.EqualTo(1));
            Assert.That(boomCrash, Does.Contain("\"boom\"").And.Contain("exit code 3"));
            Assert.That(ids.Count(i => i == PgIpcLogEvents.CrashRestart), Is.EqualTo(1));
            Assert.That(ids.IndexOf(PgIpcLogEvents.ChildCrashed), Is.LessThan(ids.IndexOf(PgIpcLogEvents.CrashRestart)));
            Assert.That(ids.Count(i => i == PgIpcLogEvents.ShutdownStarted), Is.EqualTo(1));
            Assert.That(ids[^1], Is.EqualTo(PgIpcLogEvents.ShutdownCompleted), "the last event: shut down");
            Assert.That(log.Events.Single(e => e.Id.Id == PgIpcLogEvents.ChildCrashed).Level, Is.EqualTo(LogLevel.Error));
            Assert.That(capture.Tagged(PgIpcMetrics.CrashRestarts, PgIpcMetrics.ClusterTag, key), Is.EqualTo(1));
            Assert.That(running, Is.EqualTo(1), "the children gauge: \"stay\" runs");
            Assert.That(capture.ObserveTagged(PgIpcMetrics.Children, PgIpcMetrics.ClusterTag, key), Is.Null, "a stopped supervisor is no longer observed");
        });
    }

    [Test]
    public void WithLogKeepsItsOneLinePerEventText()
    {
        var text = new StringWriter();
        string key = TestEnvironment.UniqueKey("logtext");
        Supervisor s = new ClusterBuilder(key).WithPlatform(_platform).WithLog(text).Build();
        _supervisor = s;
        s.Start();
        s.Shutdown(ShutdownMode.Fast, Poll.Patience);
        string[] lines = text.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        string prefix = $"pgipc supervisor {Environment.ProcessId}: ";
        Assert.Multiple(() =>
        {
            Assert.That(lines, Is.Not.Empty);
            Assert.That(lines.All(l => l.StartsWith(prefix, StringComparison.Ordinal)), Is.True, string.Join("\n", lines));
            Assert.That(lines[^1].TrimEnd(), Is.EqualTo(prefix + "cluster is shut down"));
        });
    }
}
