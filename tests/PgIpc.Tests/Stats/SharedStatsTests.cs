/*-------------------------------------------------------------------------
 * SharedStatsTests.cs
 *   Shared statistics across real processes, on every backend: a child's
 *   checkpointer and background writer move pg_stat_checkpointer's and
 *   pg_stat_bgwriter's counters, which the parent reads (and resets); a
 *   child reports its activity and the parent reads state, detail,
 *   backend type and when the state began; a child blocked in a latch wait
 *   shows its wait event by name; a memory-context log request makes the
 *   child log its tree through its logger.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Stats;
using PgIpc.Tests.Buffers;

namespace PgIpc.Tests.Stats;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class SharedStatsTests(string backend)
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private BufferCluster? _buffers;
    private Supervisor? _supervisor;
    private ChildWorker? _worker;
    private string? _logFile;

    [TearDown]
    public void TearDown()
    {
        _worker?.Dispose();
        _worker = null;
        _buffers?.Dispose();
        _buffers = null;
        _supervisor?.Dispose();
        _supervisor = null;
        if (_logFile is not null && File.Exists(_logFile))
            File.Delete(_logFile);
        _logFile = null;
    }

    private Cluster NewCluster()
    {
        _supervisor = new ClusterBuilder(TestEnvironment.UniqueKey("stats"))
            .WithPlatform(PgIpcPlatform.Get(backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 8, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithLog(TextWriter.Null)
            .Build();
        return _supervisor.Cluster;
    }

    private ChildWorker StartJoinedChild(Cluster c, out int procNumber)
    {
        ChildWorker w = _worker = ChildWorker.Start(backend);
        w.Send($"attach {c.Segment.Handle}");
        procNumber = int.Parse(w.Send("st-join"), CultureInfo.InvariantCulture);
        return w;
    }

    /// <summary>Polls <paramref name="read"/> until <paramref name="done"/> holds (or the patience runs out); the last value.</summary>
    private static T Poll<T>(Func<T> read, Func<T, bool> done)
    {
        var sw = Stopwatch.StartNew();
        T v = read();
        while (!done(v) && sw.Elapsed < Patience)
        {
            Thread.Sleep(10);
            v = read();
        }
        return v;
    }

    /// <summary>The file's text so far, read while the child may be writing it (shared, as the child opens it).</summary>
    private static string ReadShared(string path)
    {
        if (!File.Exists(path))
            return "";
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var r = new StreamReader(f);
        return r.ReadToEnd();
    }

    [Test]
    public void CheckpointAndBackgroundWriterCountersAreWrittenByTheChildAndReadByTheParent()
    {
        BufferCluster c = _buffers = BufferCluster.Create(PgIpcPlatform.Get(backend), 32);
        Assert.That(SharedStats.TryOpen(c.Segment, out SharedStats? stats), Is.True, "every cluster has shared statistics");
        PgStatCheckpointer before = stats!.Checkpointer();
        Assert.That(before.NumRequested + before.NumTimed + before.BuffersWritten, Is.Zero, "nothing has run yet");

        ChildWorker w = _worker = ChildWorker.Start(backend);
        w.Send($"attach {c.Segment.Handle}");
        w.Send($"buf-attach {c.Options.NumBuffers} {c.Options.DataDirectory}");
        w.Send("buf-ckpt-start 3600000 0");
        w.Send("buf-bgw-start 10 100");

        // The parent dirties pages (each a buffer allocation the background writer's rounds count).
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            for (int i = 0; i < 5; i++)
            {
                int b = c.Pool.ReadBuffer(me, 21, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                c.Pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                BinaryPrimitives.WriteInt64LittleEndian(c.Pool.GetPage(me, b)[256..], 100 + i);
                c.Pool.MarkBufferDirty(me, b);
                c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
                c.Pool.ReleaseBuffer(me, b);
            }
        });
        w.Send("buf-ckpt-request Immediate,Force,Wait");

        PgStatCheckpointer ck = stats.Checkpointer();
        Assert.That(ck.NumRequested, Is.EqualTo(1), ck.ToString());
        Assert.That(ck.NumTimed, Is.Zero, ck.ToString());
        Assert.That(ck.NumDone, Is.EqualTo(1), ck.ToString());
        Assert.That(ck.BuffersWritten + stats.BgWriter().BuffersClean, Is.GreaterThanOrEqualTo(5),
            "the five dirty pages were written by the checkpoint or, before it, by the background writer");
        Assert.That(ck.WriteTimeMs, Is.GreaterThanOrEqualTo(0));
        Assert.That(ck.SyncTimeMs, Is.GreaterThanOrEqualTo(0));

        PgStatBgWriter bg = Poll(stats.BgWriter, s => s.Rounds > 0 && s.BuffersAlloc >= 5);
        Assert.That(bg.Rounds, Is.GreaterThan(0), bg.ToString());
        Assert.That(bg.BuffersAlloc, Is.GreaterThanOrEqualTo(5), "the parent's five allocations, seen by the child's rounds: " + bg);

        // A reset from this process (not the counters' writer): counting starts again from zero.
        stats.ResetCheckpointer();
        PgStatCheckpointer reset = stats.Checkpointer();
        Assert.That(reset.NumRequested + reset.NumDone + reset.BuffersWritten, Is.Zero, reset.ToString());
        Assert.That(reset.StatsReset, Is.GreaterThanOrEqualTo(ck.StatsReset));
        w.Send("buf-ckpt-request Immediate,Force,Wait");
        Assert.That(stats.Checkpointer().NumRequested, Is.EqualTo(1), "counted again after the reset");
        w.Send("buf-leave");
    }

    [Test]
    public void AChildReportsItsActivityAndTheParentReadsIt()
    {
        Cluster c = NewCluster();
        ChildWorker w = StartJoinedChild(c, out int procno);
        w.Send("st-type stats-test-role");
        w.Send("st-activity Active SELECT 1 -- from the child");

        PgStatActivity row = c.Stats.Activity().Single(a => a.ProcNumber == procno);
        Assert.That(row.Pid, Is.EqualTo(w.Pid));
        Assert.That(row.Kind, Is.EqualTo(ProcKind.Backend));
        Assert.That(row.BackendType, Is.EqualTo("stats-test-role"));
        Assert.That(row.State, Is.EqualTo(ActivityState.Active));
        Assert.That(row.StateName, Is.EqualTo("active"));
        Assert.That(row.Detail, Is.EqualTo("SELECT 1 -- from the child"));
        Assert.That(row.BackendStart, Is.GreaterThan(DateTimeOffset.UnixEpoch));
        Assert.That(row.StateChange, Is.GreaterThanOrEqualTo(row.BackendStart), "the state began after the child joined");

        Thread.Sleep(20); // the clock moves on before the next state
        w.Send("st-activity Idle");
        PgStatActivity idle = c.Stats.Activity().Single(a => a.ProcNumber == procno);
        Assert.That(idle.State, Is.EqualTo(ActivityState.Idle));
        Assert.That(idle.Detail, Is.Null, "no detail given: cleared");
        Assert.That(idle.StateChange, Is.GreaterThan(row.StateChange), "a new state has a new start time");

        w.Send("st-leave");
        Assert.That(c.Stats.Activity().Any(a => a.ProcNumber == procno), Is.False, "a participant that left is not shown");
    }

    [Test]
    public void AChildBlockedInALatchWaitShowsTheWaitEventByName()
    {
        Cluster c = NewCluster();
        ChildWorker w = StartJoinedChild(c, out _);
        _logFile = Path.Combine(Path.GetTempPath(), $"pgipc-stats-{Environment.ProcessId}-{Guid.NewGuid():N}.log");
        int waiter = int.Parse(w.Send($"st-waiter-start {_logFile}"), CultureInfo.InvariantCulture);

        PgStatActivity? row = Poll(() => c.Stats.Activity().SingleOrDefault(a => a.ProcNumber == waiter), a => a is { IsWaiting: true });
        Assert.That(row, Is.Not.Null, "the waiter's row");
        Assert.That(row!.Pid, Is.EqualTo(w.Pid));
        Assert.That(row.WaitEventType, Is.EqualTo("IPC"));
        Assert.That(row.WaitEventName, Is.EqualTo("CheckpointStart"));
        Assert.That(row.WaitEvent, Is.EqualTo(Checkpointer.WaitEventCheckpointStart));
        Assert.That(row.State, Is.EqualTo(ActivityState.Idle));
        Assert.That(row.Detail, Is.EqualTo("waiting for work"));
        w.Send("st-leave");
    }

    [Test]
    public void AMemoryContextLogRequestMakesTheChildLogItsContexts()
    {
        Cluster c = NewCluster();
        ChildWorker w = StartJoinedChild(c, out _);
        _logFile = Path.Combine(Path.GetTempPath(), $"pgipc-stats-{Environment.ProcessId}-{Guid.NewGuid():N}.log");
        w.Send($"st-waiter-start {_logFile}");

        int signalled = c.Procs.RequestMemoryContextLog(w.Pid);
        Assert.That(signalled, Is.EqualTo(2), "both participants of the child (its main thread and the waiter)");
        string text = Poll(() => ReadShared(_logFile), t => t.Contains("Grand total", StringComparison.Ordinal));
        Assert.That(text, Does.Contain($"{PgIpc.Diagnostics.PgIpcLogEvents.MemoryContextLogStart} logging memory contexts of participant"));
        Assert.That(text, Does.Contain("TopMemoryContext: "));
        Assert.That(text, Does.Contain("  StatsTestContext: 8192 total in 1 blocks"), text);
        Assert.That(text, Does.Contain($"{PgIpc.Diagnostics.PgIpcLogEvents.MemoryContextLogLine} Grand total: "));
        Assert.That(c.Procs.RequestMemoryContextLog(int.MaxValue - 1), Is.Zero, "no participant of that pid");
        w.Send("st-leave");
    }
}
