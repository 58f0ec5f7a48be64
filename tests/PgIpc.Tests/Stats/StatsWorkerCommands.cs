/*-------------------------------------------------------------------------
 * StatsWorkerCommands.cs
 *   The worker process's commands for the shared statistics tests.
 *
 * NOTES
 *   Commands (one line each, see TestWorker for the protocol):
 *     st-join                       -> ok <procno>  (Cluster.AttachTo on the attached segment; this thread joins)
 *     st-activity <state> [detail]  -> ok           (SetActivity on that participant; detail = the rest of the line)
 *     st-type <name>                -> ok           (SetBackendType)
 *     st-waiter-start <logfile>     -> ok <procno>  (a thread joins, makes a memory context "StatsTestContext" with
 *                                                    an allocation, reports Idle, then waits on its latch naming
 *                                                    Checkpointer.WaitEventCheckpointStart and runs
 *                                                    ProcessInterrupts after each wake-up; its Logger appends
 *                                                    every message to <logfile>)
 *     st-waiter-stop                -> ok
 *     st-leave                      -> ok           (stops the waiter, leaves, detaches the cluster)
 *-------------------------------------------------------------------------
 */
using System.Globalization;
using Microsoft.Extensions.Logging;
using PgIpc.Buffers;
using PgIpc.Latch;
using PgIpc.Memory;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Shmem;
using PgIpc.Stats;

namespace PgIpc.Tests.Stats;

internal static class StatsWorkerCommands
{
    private static Cluster? s_cluster;
    private static Participant? s_me;
    private static Thread? s_waiter;
    private static volatile bool s_stop;
    private static Participant? s_waiterMe;

    public static bool TryExecute(string[] a, ShmemSegment? seg, out string reply)
    {
        reply = "";
        switch (a[0])
        {
            case "st-join":
                s_cluster = Cluster.AttachTo(seg ?? throw new InvalidOperationException("worker is not attached"));
                s_me = s_cluster.Procs.Join();
                reply = $"ok {s_me.ProcNumber}";
                return true;
            case "st-activity":
                Me.SetActivity(Enum.Parse<ActivityState>(a[1]), a.Length > 2 ? string.Join(' ', a[2..]) : null);
                reply = "ok";
                return true;
            case "st-type":
                Me.SetBackendType(a[1]);
                reply = "ok";
                return true;
            case "st-waiter-start":
                reply = $"ok {StartWaiter(a[1]).ToString(CultureInfo.InvariantCulture)}";
                return true;
            case "st-waiter-stop":
                StopWaiter();
                reply = "ok";
                return true;
            case "st-leave":
                StopWaiter();
                s_me?.Dispose();
                s_me = null;
                s_cluster?.Dispose();
                s_cluster = null;
                reply = "ok";
                return true;
            default:
                return false;
        }
    }

    private static Participant Me => s_me ?? throw new InvalidOperationException("st-join first");

    private static int StartWaiter(string logFile)
    {
        Cluster c = s_cluster ?? throw new InvalidOperationException("st-join first");
        s_stop = false;
        using var ready = new ManualResetEventSlim();
        Exception? error = null;
        s_waiter = new Thread(() =>
        {
            try
            {
                using Participant me = c.Procs.Join();
                me.Logger = new FileLogger(logFile);
                MemoryContext ctx = AllocSetContext.Create(MemoryContext.TopMemoryContext, "StatsTestContext", 8192, 8192);
                unsafe { ctx.Alloc(1000); }
                me.SetActivity(ActivityState.Idle, "waiting for work");
                s_waiterMe = me;
                ready.Set();
                while (!s_stop)
                {
                    me.WaitLatch(WaitEvents.LatchSet, -1, Checkpointer.WaitEventCheckpointStart);
                    me.ResetLatch();
                    me.ProcessInterrupts();
                }
                ctx.Delete();
            }
            catch (Exception ex)
            {
                error = ex;
                ready.Set();
            }
        }) { IsBackground = true, Name = "stats waiter" };
        s_waiter.Start();
        if (!ready.Wait(TimeSpan.FromSeconds(30)) || error is not null)
            throw new InvalidOperationException($"the waiter did not start: {error?.Message}", error);
        return s_waiterMe!.ProcNumber;
    }

    private static void StopWaiter()
    {
        if (s_waiter is null)
            return;
        s_stop = true;
        s_waiterMe?.SetLatch();
        if (!s_waiter.Join(TimeSpan.FromSeconds(30)))
            throw new TimeoutException("the waiter did not stop within 30 s");
        s_waiter = null;
        s_waiterMe = null;
    }

    /// <summary>Appends each message to a file, flushed at once (the parent reads it).</summary>
    private sealed class FileLogger(string path) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            // Shared for reading: the parent reads the file while this process writes it (Windows refuses otherwise).
            byte[] line = System.Text.Encoding.UTF8.GetBytes($"{eventId.Id} {formatter(state, exception)}{Environment.NewLine}");
            lock (this)
            {
                using var f = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete);
                f.Write(line);
            }
        }
    }
}
