/*-------------------------------------------------------------------------
 * Participant.Activity.cs
 *   What a participant tells the others about itself: its activity slot
 *   in the shared statistics (pg_stat_activity's state, detail, backend
 *   type), and its answer to PROCSIG_LOG_MEMORY_CONTEXT (its memory-context
 *   tree, logged through its ILogger).
 *
 * NOTES
 *   The slot is found when the participant joins (pgstat_bestart) and
 *   written only by the participant's own thread, under the slot's
 *   changecount (Stats/PgStatShmem.cs); leaving clears it. A cluster
 *   without "PgIpc.Stats" (a bare segment with participant slots) has no
 *   slot, and reporting activity does nothing.
 *
 *   The memory-context log follows ProcessLogMemoryContextInterrupt: the
 *   request only sets the reason's bit (ProcArray.RequestMemoryContextLog);
 *   the participant logs at its next ProcessInterrupts (CHECK_FOR_INTERRUPTS),
 *   on its own thread, which is the only thread that may walk its
 *   contexts (they are not thread-safe). An application that registered its
 *   own handler for the reason replaces this default.
 *-------------------------------------------------------------------------
 */
using Microsoft.Extensions.Logging;
using PgIpc.Diagnostics;
using PgIpc.Memory;
using PgIpc.Stats;

namespace PgIpc.Proc;

public sealed unsafe partial class Participant
{
    // This participant's activity slot in "PgIpc.Stats", or null (no shared statistics); written by its thread only.
    private PgBackendStatus* _status;

    /// <summary>Longest detail <see cref="SetActivity(ActivityState, string?)"/> keeps, in UTF-8 bytes (track_activity_query_size); longer is cut between characters.</summary>
    public const int MaxActivityDetailBytes = PgBackendStatus.DetailBytes;

    /// <summary>Longest backend type <see cref="SetBackendType"/> keeps, in UTF-8 bytes.</summary>
    public const int MaxBackendTypeBytes = PgBackendStatus.BackendTypeBytes;

    /// <summary>
    /// Where this participant logs what others ask of it (its memory-context tree); null: PgIpcLogging.LoggerFactory's
    /// "PgIpc.MemoryContext" logger.
    /// </summary>
    public ILogger? Logger { get; set; }

    /// <summary>
    /// Reports what this participant is doing (pgstat_report_activity): <paramref name="state"/>, whose start time is
    /// recorded when it changes, and <paramref name="detail"/> (a query, a job name; at most
    /// <see cref="MaxActivityDetailBytes"/> bytes of UTF-8 are kept, null clears it). Any process reads it through
    /// <see cref="Postmaster.Cluster.Stats"/> or <c>pgipc inspect --activity</c>. Call on this participant's thread;
    /// allocates nothing. Does nothing when the cluster has no shared statistics.
    /// </summary>
    public void SetActivity(ActivityState state, string? detail = null) => SetActivity(state, detail.AsSpan());

    /// <summary>
    /// <see cref="SetActivity(ActivityState, string?)"/> with the detail as characters (empty clears it).
    /// </summary>
    public void SetActivity(ActivityState state, ReadOnlySpan<char> detail)
    {
        if (!Enum.IsDefined(state))
            throw new ArgumentOutOfRangeException(nameof(state), state, "unknown activity state");
        ThrowIfNotItsThread();
        if (_status != null)
            SharedStats.WriteActivity(_status, state, detail);
    }

    /// <summary>
    /// Names what this participant is (pg_stat_activity.backend_type: "checkpointer", "walwriter", an application's
    /// role); at most <see cref="MaxBackendTypeBytes"/> bytes of UTF-8 are kept. Until set, the slot's kind is
    /// shown. Call on this participant's thread.
    /// </summary>
    public void SetBackendType(string backendType)
    {
        ArgumentException.ThrowIfNullOrEmpty(backendType);
        ThrowIfNotItsThread();
        if (_status != null)
            SharedStats.WriteBackendType(_status, backendType);
    }

    /// <summary>Names the backend type when called on this participant's thread (the library's own loops); else nothing.</summary>
    internal void SetBackendTypeIfOnItsThread(string backendType)
    {
        if (_status != null && Environment.CurrentManagedThreadId == ThreadId && !IsDisposed)
            SharedStats.WriteBackendType(_status, backendType);
    }

    private void ThrowIfNotItsThread()
    {
        ThrowIfClosed();
        if (Environment.CurrentManagedThreadId != ThreadId)
            throw new InvalidOperationException($"participant {ProcNumber} reports its own activity on its thread ({ThreadId}), not on thread {Environment.CurrentManagedThreadId}");
    }

    /// <summary>pgstat_beshutdown_hook: the slot shows nobody (before the PGPROC slot is given back).</summary>
    private void EndActivity()
    {
        PgBackendStatus* s = _status;
        _status = null;
        if (s != null && Array.Segment.IsAttached)
            SharedStats.EndParticipant(s);
    }

    /// <summary>
    /// ProcessLogMemoryContextInterrupt: logs this thread's memory-context tree (TopMemoryContext down, as
    /// MemoryContextStats prints it, to depth 100) through <see cref="Logger"/>, one event per line after a first
    /// naming this participant. The default handler of <see cref="Signals.ProcSignalReason.LogMemoryContext"/>.
    /// </summary>
    internal void LogMemoryContexts()
    {
        ILogger log = Logger ?? PgIpcLogging.LoggerFactory.CreateLogger(PgIpcLogging.MemoryContextCategory);
        if (!log.IsEnabled(LogLevel.Information))
            return;
        log.MemoryContextLogStart(ProcNumber, Volatile.Read(ref Proc->Pid));
        MemoryContext? top = MemoryContext.TopMemoryContextIfMade;
        if (top is null)
        {
            log.MemoryContextLogLine("no memory contexts (this participant's thread made none)");
            return;
        }
        var text = new StringWriter();
        MemoryContextStats.Write(text, top, maxDepth: 100);
        foreach (string line in text.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries))
            log.MemoryContextLogLine(line.TrimEnd('\r'));
    }
}
