/*-------------------------------------------------------------------------
 * Checkpointer.Diagnostics.cs
 *   What the checkpointer reports of each checkpoint it ran: a log event
 *   (PgIpcLogEvents.CheckpointCompleted / CheckpointFailed) and the
 *   "pgipc.checkpoints" and "pgipc.checkpoint.buffers_written" counters.
 *
 * NOTES
 *   The checkpointer runs in a child that was given no logger: it logs
 *   through PgIpcLogging.LoggerFactory (category "PgIpc.Checkpointer"),
 *   which the child's program sets if it wants the events. Called once per
 *   checkpoint, after the done counter is published and the waiters woken,
 *   so a slow logger never delays a RequestCheckpoint(Wait).
 *
 *   Mirrors the log_checkpoints report of LogCheckpointEnd in
 *   src/backend/access/transam/xlog.c.
 *-------------------------------------------------------------------------
 */
using Microsoft.Extensions.Logging;
using PgIpc.Diagnostics;

namespace PgIpc.Buffers;

unsafe partial class Checkpointer
{
    private ILogger? _logger;

    /// <summary>Logs and counts the end of one checkpoint.</summary>
    private void LogCheckpoint(bool failed, string? error, CheckpointStats stats)
    {
        PgIpcMetrics.RecordCheckpoint(failed, failed ? 0 : stats.BuffersWritten);
        ILogger log = _logger ??= PgIpcLogging.LoggerFactory.CreateLogger(PgIpcLogging.CheckpointerCategory);
        if (failed)
            log.CheckpointFailed(error);
        else
            log.CheckpointCompleted(stats.BuffersWritten, stats.FilesSynced);
    }
}
