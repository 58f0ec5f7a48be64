/*-------------------------------------------------------------------------
 * PgIpcMetrics.cs
 *   The "PgIpc" Meter: what a user graphs (children, crash restarts, LWLock
 *   sleeps, shm_mq bytes, buffer hits / reads / writes / evictions,
 *   checkpoints, background writer writes, latch waits by wait event).
 *
 * NOTES
 *   Cost when nobody listens. Two kinds of instrument, chosen by the path:
 *
 *   - Hot paths (a buffer hit, a shm_mq send or receive) count in plain
 *     fields of the participant's own ActivityCounters, incremented by the
 *     participant's thread only (a participant is used by one thread at a
 *     time), so an increment is one non-atomic add to a line the thread
 *     already owns: no interlocked operation, no shared cache line, no
 *     allocation, no check of a listener. ObservableCounter callbacks sum
 *     the live participants' counters and what closed ones left (folded in
 *     at Close) when a listener collects, which is PostgreSQL's way too
 *     (backend-local pgstat counters, flushed to shared stats now and then).
 *     A reader on another thread may see a count one behind: fine for a
 *     monotonic counter; an aligned long is never torn on a 64-bit runtime.
 *
 *   - Paths that sleep or are rare (an LWLock acquisition that slept on
 *     its semaphore, a latch wait naming a wait event, a checkpoint, a background
 *     writer round, a crash restart) record through Counter<T>.Add behind
 *     an Instrument.Enabled check: one field load when nobody listens, and
 *     the tags (the wait event's name from WaitEventRegistry, the tranche's
 *     name, the cluster key) are only computed when someone does.
 *
 *   Per process. Every process of a cluster has its own Meter: the
 *   checkpointer's counts are in the checkpointer process, a backend's
 *   buffer hits in that backend. A cluster-wide view sums what each
 *   process exports (OpenTelemetry's usual shape for multi-process
 *   servers); the shared-memory statistics (Stats/SharedStats.cs:
 *   pg_stat_bgwriter, pg_stat_checkpointer, pg_stat_activity) are the
 *   place for cluster-wide totals read from any process.
 *
 *   Mirrors nothing in PostgreSQL directly: the counters are those of
 *   pg_stat_io / pg_stat_bgwriter / pg_stat_checkpointer and wait events.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics.Metrics;
using PgIpc.Latch;

namespace PgIpc.Diagnostics;

/// <summary>
/// The library's <see cref="System.Diagnostics.Metrics.Meter"/>, named <see cref="MeterName"/>, and the names of its
/// instruments. Listen with a MeterListener, <c>dotnet-counters monitor --counters PgIpc</c> or OpenTelemetry's
/// <c>AddMeter("PgIpc")</c>. Counts are per process (each process of a cluster exports its own).
/// </summary>
public static class PgIpcMetrics
{
    /// <summary>The meter's name: "PgIpc".</summary>
    public const string MeterName = "PgIpc";

    /// <summary>Observable gauge: children the supervisor runs now (tag <see cref="ClusterTag"/>).</summary>
    public const string Children = "pgipc.supervisor.children";
    /// <summary>Counter: crash restarts (shared memory rebuilt after a child crashed; tag <see cref="ClusterTag"/>).</summary>
    public const string CrashRestarts = "pgipc.supervisor.crash_restarts";
    /// <summary>Counter: LWLock acquisitions that slept on the semaphore (tag <see cref="WaitEventTag"/>: the tranche).</summary>
    public const string LWLockSleeps = "pgipc.lwlock.sleeps";
    /// <summary>Counter: latch waits (WaitLatch calls naming a wait event), by wait event (tags <see cref="WaitEventTypeTag"/>, <see cref="WaitEventTag"/>).</summary>
    public const string LatchWaits = "pgipc.latch.waits";
    /// <summary>Observable counter: message payload bytes sent through shm_mq queues (unit By).</summary>
    public const string MqBytesSent = "pgipc.shm_mq.bytes_sent";
    /// <summary>Observable counter: message payload bytes received from shm_mq queues (unit By).</summary>
    public const string MqBytesReceived = "pgipc.shm_mq.bytes_received";
    /// <summary>Observable counter: shared buffer reads that found the page resident (shared_blks_hit).</summary>
    public const string BufferHits = "pgipc.buffers.hits";
    /// <summary>Observable counter: pages read from disk into shared buffers (shared_blks_read).</summary>
    public const string BufferReads = "pgipc.buffers.reads";
    /// <summary>Observable counter: shared buffers written to disk, by anyone (backend, checkpoint, bgwriter).</summary>
    public const string BufferWrites = "pgipc.buffers.writes";
    /// <summary>Observable counter: valid pages evicted from shared buffers to make room for another.</summary>
    public const string BufferEvictions = "pgipc.buffers.evictions";
    /// <summary>Counter: checkpoints finished (tag <see cref="OutcomeTag"/>: "done" or "failed").</summary>
    public const string Checkpoints = "pgipc.checkpoints";
    /// <summary>Counter: buffers written by checkpoints.</summary>
    public const string CheckpointBuffersWritten = "pgipc.checkpoint.buffers_written";
    /// <summary>Counter: buffers written by the background writer.</summary>
    public const string BgWriterWrites = "pgipc.bgwriter.writes";

    /// <summary>Tag: the cluster key.</summary>
    public const string ClusterTag = "pgipc.cluster";
    /// <summary>Tag: a wait event's name (pg_stat_activity.wait_event), from <see cref="WaitEventRegistry"/>; an LWLock's is its tranche name.</summary>
    public const string WaitEventTag = "pgipc.wait_event";
    /// <summary>Tag: a wait event's class name (pg_stat_activity.wait_event_type).</summary>
    public const string WaitEventTypeTag = "pgipc.wait_event_type";
    /// <summary>Tag: how a checkpoint ended, "done" or "failed".</summary>
    public const string OutcomeTag = "pgipc.outcome";

    internal static readonly Meter Meter = new(MeterName, typeof(PgIpcMetrics).Assembly.GetName().Version?.ToString());

    internal static readonly Counter<long> CrashRestartCounter = Meter.CreateCounter<long>(CrashRestarts, "{restart}", "Shared memory rebuilt after a child crashed");
    internal static readonly Counter<long> LWLockSleepCounter = Meter.CreateCounter<long>(LWLockSleeps, "{acquisition}", "LWLock acquisitions that slept");
    internal static readonly Counter<long> LatchWaitCounter = Meter.CreateCounter<long>(LatchWaits, "{wait}", "Latch waits, by wait event");
    internal static readonly Counter<long> CheckpointCounter = Meter.CreateCounter<long>(Checkpoints, "{checkpoint}", "Checkpoints finished");
    internal static readonly Counter<long> CheckpointWriteCounter = Meter.CreateCounter<long>(CheckpointBuffersWritten, "{buffer}", "Buffers written by checkpoints");
    internal static readonly Counter<long> BgWriterWriteCounter = Meter.CreateCounter<long>(BgWriterWrites, "{buffer}", "Buffers written by the background writer");

    // Live participants' counters, and the sum of the closed ones'. Join and Close are not hot paths.
    private static readonly Lock s_lock = new();
    private static readonly HashSet<ActivityCounters> s_live = [];
    private static readonly ActivityCounters s_retired = new();

    // Supervisors of this process, for the children gauge (added by Create, removed when stopped): the owner, its
    // cluster key and how to read its running children. A delegate, so that Diagnostics, which the kernel layers
    // use, does not depend on Postmaster.
    private static readonly List<(object Owner, string Key, Func<int> Running)> s_supervisors = [];

    static PgIpcMetrics()
    {
        Meter.CreateObservableGauge(Children, ObserveChildren, "{process}", "Children the supervisor runs");
        Meter.CreateObservableCounter(MqBytesSent, static () => Sum(static c => c.MqBytesSent), "By", "shm_mq payload bytes sent");
        Meter.CreateObservableCounter(MqBytesReceived, static () => Sum(static c => c.MqBytesReceived), "By", "shm_mq payload bytes received");
        Meter.CreateObservableCounter(BufferHits, static () => Sum(static c => c.BufferHits), "{buffer}", "Shared buffer hits");
        Meter.CreateObservableCounter(BufferReads, static () => Sum(static c => c.BufferReads), "{buffer}", "Pages read into shared buffers");
        Meter.CreateObservableCounter(BufferWrites, static () => Sum(static c => c.BufferWrites), "{buffer}", "Shared buffers written");
        Meter.CreateObservableCounter(BufferEvictions, static () => Sum(static c => c.BufferEvictions), "{buffer}", "Shared buffers evicted");
    }

    /// <summary>A new participant's counters, summed by the observable counters until <see cref="Retire"/>.</summary>
    internal static ActivityCounters Track()
    {
        var c = new ActivityCounters();
        lock (s_lock)
            s_live.Add(c);
        return c;
    }

    /// <summary>A closed participant's counters: folded into the totals (idempotent).</summary>
    internal static void Retire(ActivityCounters c)
    {
        lock (s_lock)
        {
            if (!s_live.Remove(c))
                return;
            s_retired.MqBytesSent += Volatile.Read(ref c.MqBytesSent);
            s_retired.MqBytesReceived += Volatile.Read(ref c.MqBytesReceived);
            s_retired.BufferHits += Volatile.Read(ref c.BufferHits);
            s_retired.BufferReads += Volatile.Read(ref c.BufferReads);
            s_retired.BufferWrites += Volatile.Read(ref c.BufferWrites);
            s_retired.BufferEvictions += Volatile.Read(ref c.BufferEvictions);
        }
    }

    private static long Sum(Func<ActivityCounters, long> field)
    {
        lock (s_lock)
        {
            long total = field(s_retired);
            foreach (ActivityCounters c in s_live)
                total += field(c);
            return total;
        }
    }

    /// <summary>A supervisor's children, observed by the gauge until <see cref="RemoveSupervisor"/>.</summary>
    internal static void AddSupervisor(object owner, string key, Func<int> running)
    {
        lock (s_lock)
            s_supervisors.Add((owner, key, running));
    }

    internal static void RemoveSupervisor(object owner)
    {
        lock (s_lock)
            s_supervisors.RemoveAll(s => s.Owner == owner);
    }

    private static IEnumerable<Measurement<int>> ObserveChildren()
    {
        (object Owner, string Key, Func<int> Running)[] all;
        lock (s_lock)
            all = [.. s_supervisors];
        foreach ((_, string key, Func<int> running) in all)
            yield return new Measurement<int>(running(), new KeyValuePair<string, object?>(ClusterTag, key));
    }

    /// <summary>Records a latch wait, tagged with its wait event's names (only when someone listens).</summary>
    internal static void RecordLatchWait(WaitEventId waitEvent)
    {
        if (!LatchWaitCounter.Enabled)
            return;
        LatchWaitCounter.Add(1,
            new KeyValuePair<string, object?>(WaitEventTypeTag, WaitEventRegistry.ClassNameOf(waitEvent)),
            new KeyValuePair<string, object?>(WaitEventTag, WaitEventRegistry.NameOf(waitEvent)));
    }

    /// <summary>Records a checkpoint's end (only when someone listens).</summary>
    internal static void RecordCheckpoint(bool failed, int buffersWritten)
    {
        if (CheckpointCounter.Enabled)
            CheckpointCounter.Add(1, new KeyValuePair<string, object?>(OutcomeTag, failed ? "failed" : "done"));
        if (CheckpointWriteCounter.Enabled && buffersWritten > 0)
            CheckpointWriteCounter.Add(buffersWritten);
    }
}

/// <summary>
/// One participant's activity counts (see PgIpcMetrics.cs): written by the participant's thread only, with plain
/// adds; read by the meter's callbacks on any thread.
/// </summary>
internal sealed class ActivityCounters
{
    public long MqBytesSent;
    public long MqBytesReceived;
    public long BufferHits;
    public long BufferReads;
    public long BufferWrites;
    public long BufferEvictions;
}
