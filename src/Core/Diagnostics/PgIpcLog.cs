/*-------------------------------------------------------------------------
 * PgIpcLog.cs
 *   The library's log events: stable event ids (PgIpcLogEvents), the
 *   source-generated [LoggerMessage] methods that write them, the process
 *   default logger factory (PgIpcLogging), and the TextWriter logger behind
 *   ClusterBuilder.WithLog.
 *
 * NOTES
 *   Microsoft.Extensions.Logging.Abstractions is Core's one dependency. The
 *   messages are generated at build time ([LoggerMessage]): no boxing, no
 *   format parsing at run time, and nothing computed when the level is off.
 *   Every event has a fixed id (the table is in README: Observability), so
 *   a user filters on the id rather than on the text.
 *
 *   Which logger. A supervisor logs to the logger its builder was given
 *   (WithLogger), else to a TextWriterLogger over WithLog's writer, else to
 *   PgIpcLogging.LoggerFactory, which is NullLoggerFactory unless the
 *   application sets it. Code that runs in children (the checkpointer, the
 *   background writer) has no builder: it logs through PgIpcLogging too.
 *
 *   WithLog(TextWriter) keeps the supervisor's old text for the CLI demo:
 *   "pgipc supervisor <pid>: <message>" per line, Information and above.
 *   The events that did not exist before (a child started, a clean exit,
 *   a checkpoint done) are Debug, so that text is what it was, plus the two
 *   shutdown lines.
 *-------------------------------------------------------------------------
 */
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace PgIpc.Diagnostics;

/// <summary>The library's log event ids (stable: filter on these, not on the text).</summary>
public static class PgIpcLogEvents
{
    /// <summary>The supervisor started its loop (Information).</summary>
    public const int SupervisorStarted = 1000;
    /// <summary>A child process was started (Debug).</summary>
    public const int ChildStarted = 1001;
    /// <summary>A child exited cleanly, exit code 0 (Debug).</summary>
    public const int ChildExited = 1002;
    /// <summary>A background worker exited with code 1 and will be restarted after its interval (Warning).</summary>
    public const int ChildErrorExit = 1003;
    /// <summary>A child crashed; every other child is stopped (Error).</summary>
    public const int ChildCrashed = 1004;
    /// <summary>Shared memory is rebuilt after a crash (Warning).</summary>
    public const int CrashRestart = 1005;
    /// <summary>A crash with restart-after-crash off: the cluster shuts down (Error).</summary>
    public const int CrashShutdown = 1006;
    /// <summary>A child could not be started (Error).</summary>
    public const int ChildStartFailed = 1007;
    /// <summary>A child exited non-zero during shutdown (Warning).</summary>
    public const int ChildExitedDuringShutdown = 1008;
    /// <summary>A killed child did not exit (Error).</summary>
    public const int ChildKillTimedOut = 1009;
    /// <summary>A worker slot registered by another process could not be read (Warning).</summary>
    public const int WorkerSlotCorrupt = 1010;
    /// <summary>The supervisor's loop caught an exception (Error).</summary>
    public const int SupervisorLoopError = 1011;
    /// <summary>Shared memory could not be made again after a crash (WAL recovery failed, the disk is gone); the cluster stops (Critical).</summary>
    public const int CrashReinitFailed = 1012;
    /// <summary>A permanent worker could not be started; it is tried again after its restart interval (Warning).</summary>
    public const int ChildStartRetry = 1013;
    /// <summary>A child exited after it was terminated on request (ParticipantExitCodes.Terminated); not a crash (Information).</summary>
    public const int ChildTerminated = 1019;
    /// <summary>A shutdown began (Information).</summary>
    public const int ShutdownStarted = 1020;
    /// <summary>The cluster has shut down: no child runs, shared memory is gone (Information).</summary>
    public const int ShutdownCompleted = 1021;
    /// <summary>Children were still running at the shutdown deadline and were killed (Warning).</summary>
    public const int ShutdownKilledChildren = 1022;
    /// <summary>The shutdown wrote the dirty shared buffers (Information).</summary>
    public const int ShutdownBuffersWritten = 1023;
    /// <summary>The shutdown could not write the dirty buffers (Error).</summary>
    public const int ShutdownFlushFailed = 1024;
    /// <summary>Detaching or destroying shared memory reported errors (Warning).</summary>
    public const int ShmemDestroyFailed = 1025;
    /// <summary>A stale segment of a crashed run was found on the cluster's key (Warning).</summary>
    public const int StaleSegmentFound = 1030;
    /// <summary>The stale segment and its other OS objects were removed (Information).</summary>
    public const int StaleSegmentsRemoved = 1031;
    /// <summary>Temporary files of a crashed or stopped run were removed at start or at a crash restart (RemovePgTempFiles).</summary>
    public const int TempFilesRemoved = 1032;
    /// <summary>A checkpoint finished (Debug).</summary>
    public const int CheckpointCompleted = 1040;
    /// <summary>A checkpoint failed (Error).</summary>
    public const int CheckpointFailed = 1041;
    /// <summary>A participant logs its memory-context tree, asked through ProcSignal (Information; one event, then one per line).</summary>
    public const int MemoryContextLogStart = 1050;
    /// <summary>One line of a participant's memory-context tree, or its grand total (Information).</summary>
    public const int MemoryContextLogLine = 1051;
    /// <summary>The worker a child requested could not be started: unknown entry, no free child slot, shutting down (Warning).</summary>
    public const int WorkerRequestFailed = 1060;
    /// <summary>A child is stopped to be restarted at another child's request (Information).</summary>
    public const int ChildRestartRequested = 1061;
    /// <summary>A restart request named no running child of the supervisor and was ignored (Warning).</summary>
    public const int RestartRequestIgnored = 1062;
    /// <summary>A service request hook threw; the supervisor goes on (Error).</summary>
    public const int ServiceRequestFailed = 1063;
    /// <summary>A service request arrived and no hook is registered (Warning).</summary>
    public const int ServiceRequestUnhandled = 1064;
    /// <summary>A supervisor request slot written by another process could not be read (Warning).</summary>
    public const int SupervisorRequestCorrupt = 1065;
}

/// <summary>The process-wide logging defaults of the library.</summary>
public static class PgIpcLogging
{
    private static ILoggerFactory s_factory = NullLoggerFactory.Instance;

    /// <summary>
    /// The factory the library logs through where it was given no logger: supervisors built without
    /// <see cref="Postmaster.ClusterBuilder.WithLogger(ILoggerFactory)"/> or WithLog, and the code that runs in children
    /// (checkpointer, background writer). Default <see cref="NullLoggerFactory.Instance"/> (nothing is logged).
    /// </summary>
    public static ILoggerFactory LoggerFactory
    {
        get => Volatile.Read(ref s_factory);
        set => Volatile.Write(ref s_factory, value ?? throw new ArgumentNullException(nameof(value)));
    }

    /// <summary>The category names the library logs under.</summary>
    internal const string SupervisorCategory = "PgIpc.Supervisor", CheckpointerCategory = "PgIpc.Checkpointer",
        MemoryContextCategory = "PgIpc.MemoryContext";
}

/// <summary>The source-generated log methods (one per event of <see cref="PgIpcLogEvents"/>).</summary>
internal static partial class PgIpcLog
{
    [LoggerMessage(PgIpcLogEvents.SupervisorStarted, LogLevel.Information, "cluster \"{Key}\" started (shared memory {Handle})")]
    public static partial void SupervisorStarted(this ILogger logger, string key, string handle);

    [LoggerMessage(PgIpcLogEvents.ChildStarted, LogLevel.Debug, "started {Child}")]
    public static partial void ChildStarted(this ILogger logger, string child);

    [LoggerMessage(PgIpcLogEvents.ChildExited, LogLevel.Debug, "{Child} exited with exit code 0")]
    public static partial void ChildExited(this ILogger logger, string child);

    [LoggerMessage(PgIpcLogEvents.ChildTerminated, LogLevel.Information, "{Child} exited after it was terminated on request (exit code 81); restart in {RestartIntervalMs} ms (-1: not restarted)")]
    public static partial void ChildTerminated(this ILogger logger, string child, int restartIntervalMs);

    [LoggerMessage(PgIpcLogEvents.ChildErrorExit, LogLevel.Warning, "{Child} exited with exit code 1; restarting it in {RestartIntervalMs} ms")]
    public static partial void ChildErrorExit(this ILogger logger, string child, int restartIntervalMs);

    [LoggerMessage(PgIpcLogEvents.ChildCrashed, LogLevel.Error, "{Reason}; terminating any other active processes")]
    public static partial void ChildCrashed(this ILogger logger, string reason);

    [LoggerMessage(PgIpcLogEvents.CrashRestart, LogLevel.Warning, "all server processes terminated; reinitializing shared memory")]
    public static partial void CrashRestart(this ILogger logger);

    [LoggerMessage(PgIpcLogEvents.CrashShutdown, LogLevel.Error, "shutting down because restart-after-crash is off")]
    public static partial void CrashShutdown(this ILogger logger);

    [LoggerMessage(PgIpcLogEvents.ChildStartFailed, LogLevel.Error, "could not start {Child}: {Error}")]
    public static partial void ChildStartFailed(this ILogger logger, string child, string error);

    [LoggerMessage(PgIpcLogEvents.ChildStartRetry, LogLevel.Warning, "could not start {Child}: {Error}; trying again in {RetryMs} ms")]
    public static partial void ChildStartRetry(this ILogger logger, string child, string error, long retryMs);

    [LoggerMessage(PgIpcLogEvents.ChildExitedDuringShutdown, LogLevel.Warning, "{Child} exited with exit code {ExitCode} during shutdown")]
    public static partial void ChildExitedDuringShutdown(this ILogger logger, string child, int exitCode);

    [LoggerMessage(PgIpcLogEvents.ChildKillTimedOut, LogLevel.Error, "{Child} did not exit within 10 s of being killed")]
    public static partial void ChildKillTimedOut(this ILogger logger, string child);

    [LoggerMessage(PgIpcLogEvents.WorkerSlotCorrupt, LogLevel.Warning, "not starting the worker registered in slot {Slot}: {Error}")]
    public static partial void WorkerSlotCorrupt(this ILogger logger, int slot, string error);

    [LoggerMessage(PgIpcLogEvents.SupervisorLoopError, LogLevel.Error, "supervisor loop error")]
    public static partial void SupervisorLoopError(this ILogger logger, Exception exception);

    [LoggerMessage(PgIpcLogEvents.ShutdownStarted, LogLevel.Information, "{Mode} shutdown requested")]
    public static partial void ShutdownStarted(this ILogger logger, string mode);

    [LoggerMessage(PgIpcLogEvents.ShutdownCompleted, LogLevel.Information, "cluster is shut down")]
    public static partial void ShutdownCompleted(this ILogger logger);

    [LoggerMessage(PgIpcLogEvents.ShutdownKilledChildren, LogLevel.Warning, "shutdown: children still running after {TimeoutMs} ms; killing them")]
    public static partial void ShutdownKilledChildren(this ILogger logger, double timeoutMs);

    [LoggerMessage(PgIpcLogEvents.ShutdownBuffersWritten, LogLevel.Information, "shutdown: wrote {Written} dirty buffers")]
    public static partial void ShutdownBuffersWritten(this ILogger logger, int written);

    [LoggerMessage(PgIpcLogEvents.ShutdownFlushFailed, LogLevel.Error, "shutdown: could not write the dirty buffers: {Error}")]
    public static partial void ShutdownFlushFailed(this ILogger logger, string error);

    [LoggerMessage(PgIpcLogEvents.ShmemDestroyFailed, LogLevel.Warning, "{Step} shared memory segment {SegmentId}: {Error}")]
    public static partial void ShmemDestroyFailed(this ILogger logger, string step, string segmentId, string error);

    [LoggerMessage(PgIpcLogEvents.StaleSegmentFound, LogLevel.Warning, "found the shared memory of a crashed run of \"{Key}\"")]
    public static partial void StaleSegmentFound(this ILogger logger, string key);

    [LoggerMessage(PgIpcLogEvents.StaleSegmentsRemoved, LogLevel.Information, "removed the shared memory of a crashed run of \"{Key}\" and {Leftovers} other leftover OS object set(s)")]
    public static partial void StaleSegmentsRemoved(this ILogger logger, string key, int leftovers);

    [LoggerMessage(PgIpcLogEvents.TempFilesRemoved, LogLevel.Information, "removed {Removed} temporary file(s) left in {Directory}")]
    public static partial void TempFilesRemoved(this ILogger logger, int removed, string directory);

    [LoggerMessage(PgIpcLogEvents.CrashReinitFailed, LogLevel.Critical, "could not reinitialize shared memory after the crash; shutting down: {Error}")]
    public static partial void CrashReinitFailed(this ILogger logger, string error);

    [LoggerMessage(PgIpcLogEvents.CheckpointCompleted, LogLevel.Debug, "checkpoint complete: wrote {Written} buffers, synced {Files} files")]
    public static partial void CheckpointCompleted(this ILogger logger, int written, int files);

    [LoggerMessage(PgIpcLogEvents.CheckpointFailed, LogLevel.Error, "checkpoint failed: {Error}")]
    public static partial void CheckpointFailed(this ILogger logger, string? error);

    [LoggerMessage(PgIpcLogEvents.MemoryContextLogStart, LogLevel.Information, "logging memory contexts of participant {ProcNumber} (pid {Pid})")]
    public static partial void MemoryContextLogStart(this ILogger logger, int procNumber, int pid);

    [LoggerMessage(PgIpcLogEvents.MemoryContextLogLine, LogLevel.Information, "{Line}")]
    public static partial void MemoryContextLogLine(this ILogger logger, string line);
    [LoggerMessage(PgIpcLogEvents.WorkerRequestFailed, LogLevel.Warning, "could not start worker \"{Entry}\" requested by PID {RequesterPid}: {Error}")]
    public static partial void WorkerRequestFailed(this ILogger logger, string entry, int requesterPid, string error);

    [LoggerMessage(PgIpcLogEvents.ChildRestartRequested, LogLevel.Information, "restarting {Child} at the request of PID {RequesterPid}")]
    public static partial void ChildRestartRequested(this ILogger logger, string child, int requesterPid);

    [LoggerMessage(PgIpcLogEvents.RestartRequestIgnored, LogLevel.Warning, "ignoring the request of PID {RequesterPid} to restart \"{Name}\": {Reason}")]
    public static partial void RestartRequestIgnored(this ILogger logger, string name, int requesterPid, string reason);

    [LoggerMessage(PgIpcLogEvents.ServiceRequestFailed, LogLevel.Error, "service request hook failed on request {Code} from PID {RequesterPid}")]
    public static partial void ServiceRequestFailed(this ILogger logger, Exception exception, int code, int requesterPid);

    [LoggerMessage(PgIpcLogEvents.ServiceRequestUnhandled, LogLevel.Warning, "service request {Code} from PID {RequesterPid} ignored: no OnServiceRequest hook")]
    public static partial void ServiceRequestUnhandled(this ILogger logger, int code, int requesterPid);

    [LoggerMessage(PgIpcLogEvents.SupervisorRequestCorrupt, LogLevel.Warning, "ignoring supervisor request slot {Slot}: {Error}")]
    public static partial void SupervisorRequestCorrupt(this ILogger logger, int slot, string error);
}

/// <summary>
/// The logger behind <see cref="Postmaster.ClusterBuilder.WithLog"/>: one line per event, "<c>prefix</c><c>message</c>",
/// Information and above, flushed at once; an exception follows its message.
/// </summary>
internal sealed class TextWriterLogger(TextWriter writer, string prefix) : ILogger
{
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information && logLevel != LogLevel.None;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (!IsEnabled(logLevel))
            return;
        string message = formatter(state, exception);
        lock (writer)
        {
            writer.WriteLine(exception is null ? $"{prefix}{message}" : $"{prefix}{message}: {exception}");
            writer.Flush();
        }
    }
}
