/*-------------------------------------------------------------------------
 * BackgroundWriter.cs
 *   The background writer: cleans the buffers the clock sweep is about to
 *   reach, so that backends find clean victims instead of writing dirty
 *   ones themselves; sleeps on its latch, hibernating when idle.
 *
 * NOTES
 *   BgBufferSync (one round) follows bufmgr.c. It asks the strategy where
 *   the clock hand is and how many buffers were allocated since the last
 *   round (StrategySyncStart), and keeps, between rounds, its own position
 *   (next_to_clean, with its pass count) ahead of the hand. From these:
 *
 *   - how far ahead it is: bufs_to_lap, the buffers between its position
 *     and the hand's next lap; if the hand overtook it, it restarts at the
 *     hand with a whole pool to scan;
 *   - the smoothed allocation rate (jumps up at once, decays over 16
 *     rounds), times lru_multiplier, is the number of clean reusable
 *     buffers the next round's allocations will want;
 *   - the smoothed density of reusable buffers (buffers the hand passes per
 *     allocation, learnt from both the hand's moves and its own scans)
 *     estimates how many reusable buffers already lie between the hand and
 *     its position;
 *   - a minimum progress of the whole pool every two minutes keeps it
 *     moving when nothing is allocated.
 *
 *   It then scans forward from its position, counting reusable buffers
 *   (unpinned, usage count 0) and writing those that are dirty, until it
 *   has enough, laps the hand, or wrote lru_maxpages (the per-round budget).
 *   Pinned or recently used buffers are skipped: the hand will age them
 *   first. The round may hibernate when the hand did not move and nothing
 *   is left to scan.
 *
 *   BackgroundWriter.Run is BackgroundWriterMain's loop: a round, then
 *   WaitLatch for bgwriter_delay. After two idle rounds in a row it leaves
 *   its procno in the strategy control (StrategyNotifyBgWriter) and sleeps
 *   HibernateFactor times longer; the next buffer allocation clears the
 *   procno and sets its latch.
 *
 *   The writer's state between rounds is process-local (bufmgr.c keeps it in
 *   statics), so one BackgroundWriter object is one background writer; it
 *   must be used by one participant at a time.
 *
 *   Mirrors src/backend/storage/buffer/bufmgr.c (BgBufferSync,
 *   SyncOneBuffer) and src/backend/postmaster/bgwriter.c.
 *-------------------------------------------------------------------------
 */
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using PgIpc.Latch;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sync;

namespace PgIpc.Buffers;

/// <summary>Background writer settings.</summary>
/// <param name="DelayMs">bgwriter_delay: the sleep between rounds.</param>
/// <param name="LruMaxPages">bgwriter_lru_maxpages: most buffers written per round; 0 disables writing.</param>
/// <param name="LruMultiplier">bgwriter_lru_multiplier: clean buffers to prepare per expected allocation.</param>
/// <param name="HibernateFactor">How many times longer it sleeps when hibernating (HIBERNATE_FACTOR).</param>
public sealed record BgWriterOptions(int DelayMs = 200, int LruMaxPages = 100, double LruMultiplier = 2.0, int HibernateFactor = 50)
{
    internal void Validate()
    {
        if (DelayMs < 1 || DelayMs > 10_000)
            throw new ArgumentOutOfRangeException(nameof(DelayMs), DelayMs, "bgwriter delay must be 1..10000 ms");
        if (LruMaxPages < 0 || LruMaxPages > 1 << 30)
            throw new ArgumentOutOfRangeException(nameof(LruMaxPages), LruMaxPages, "bgwriter lru maxpages must be 0..2^30");
        if (!(LruMultiplier >= 0 && LruMultiplier <= 10))
            throw new ArgumentOutOfRangeException(nameof(LruMultiplier), LruMultiplier, "bgwriter lru multiplier must be 0..10");
        if (HibernateFactor < 1 || (long)HibernateFactor * DelayMs > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(HibernateFactor), HibernateFactor, "hibernate factor must be at least 1, and the hibernation fit in an int of ms");
    }
}

/// <summary>What one <see cref="BackgroundWriter.BgBufferSync"/> round saw and did.</summary>
/// <param name="RecentAllocs">Buffer allocations since the previous round.</param>
/// <param name="Scanned">Buffers it looked at.</param>
/// <param name="Written">Buffers it wrote.</param>
/// <param name="UpcomingAllocEstimate">Reusable buffers it aimed to have ahead of the clock hand.</param>
/// <param name="ReusableEstimate">Reusable buffers it estimated were already there.</param>
/// <param name="HitMaxPages">It stopped at the per-round budget (maxwritten_clean).</param>
/// <param name="CanHibernate">Nothing to do: the hand did not move and nothing is left to scan.</param>
public readonly record struct BgWriterRound(int RecentAllocs, int Scanned, int Written, int UpcomingAllocEstimate, int ReusableEstimate,
    bool HitMaxPages, bool CanHibernate);

/// <summary>A background writer: its state between rounds, BgBufferSync and the main loop.</summary>
public sealed class BackgroundWriter
{
    /// <summary>The background writer between two rounds (Activity).</summary>
    public static readonly WaitEventId WaitEventBgWriterMain = new(WaitEventClass.Activity, 2);
    /// <summary>The background writer hibernating, nothing to do (Activity).</summary>
    public static readonly WaitEventId WaitEventBgWriterHibernate = new(WaitEventClass.Activity, 1);

    /// <summary>Names this module's wait events when Core is loaded (see WaitEventRegistry.cs).</summary>
    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255", Justification = "fills the wait-event name table only: no I/O, no other module touched (WaitEventRegistry.cs)")]
    internal static void RegisterWaitEvents()
    {
        WaitEventRegistry.RegisterBuiltin(WaitEventBgWriterMain, "BgWriterMain");
        WaitEventRegistry.RegisterBuiltin(WaitEventBgWriterHibernate, "BgWriterHibernate");
    }

    // Rounds over which the allocation rate and density estimates are smoothed (smoothing_samples).
    private const int SmoothingSamples = 16;
    // A full lap of the pool at least this often, even with no allocations (scan_whole_pool_milliseconds).
    private const double ScanWholePoolMs = 120_000;

    private readonly BufferPool _pool;

    // State between rounds (process-local, as bufmgr.c's statics).
    private bool _savedInfoValid;
    private int _prevStrategyBufId;
    private uint _prevStrategyPasses;
    private int _nextToClean;
    private uint _nextPasses;
    private float _smoothedAlloc;
    private float _smoothedDensity = 10.0f;

    // pg_stat_bgwriter's writer is this background writer (Stats/SharedStats.cs): found at its first round.
    private Stats.SharedStats? _stats;
    private bool _statsFound;

    private long _rounds;
    private long _buffersWritten;
    private long _maxWrittenClean;
    private long _buffersAllocated;
    private int _hibernating;

    internal BackgroundWriter(BufferPool pool, BgWriterOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(pool);
        options ??= new BgWriterOptions();
        options.Validate();
        _pool = pool;
        Options = options;
    }

    /// <summary>The options this background writer runs with.</summary>
    public BgWriterOptions Options { get; }

    /// <summary>Rounds done so far (any thread may read).</summary>
    public long Rounds => Interlocked.Read(ref _rounds);

    /// <summary>Buffers this writer wrote (pg_stat_bgwriter.buffers_clean).</summary>
    public long BuffersWritten => Interlocked.Read(ref _buffersWritten);

    /// <summary>Rounds that stopped at the per-round budget (maxwritten_clean).</summary>
    public long MaxWrittenClean => Interlocked.Read(ref _maxWrittenClean);

    /// <summary>Buffer allocations the rounds saw (buffers_alloc).</summary>
    public long BuffersAllocated => Interlocked.Read(ref _buffersAllocated);

    /// <summary>True while <see cref="Run"/> is in a hibernation sleep.</summary>
    public bool IsHibernating => Volatile.Read(ref _hibernating) != 0;

    /// <summary>The last round's figures.</summary>
    public BgWriterRound LastRound { get; private set; }

    /// <summary>The last error a round of <see cref="Run"/> hit and survived, if any.</summary>
    public Exception? LastError { get; private set; }

    /// <summary>
    /// One round (BgBufferSync): writes dirty reusable buffers ahead of the clock hand, as many as the estimated
    /// upcoming allocations need, within <see cref="BgWriterOptions.LruMaxPages"/>. Returns true when the writer
    /// may hibernate (no allocations and nothing left to scan).
    /// </summary>
    internal bool BgBufferSync(Participant me)
    {
        ArgumentNullException.ThrowIfNull(me);
        int n = _pool.NumBuffers;
        int strategyBufId = _pool.StrategySyncStart(out uint strategyPasses, out uint recentAllocU);
        int recentAlloc = (int)Math.Min(recentAllocU, int.MaxValue);
        Interlocked.Add(ref _buffersAllocated, recentAlloc);
        Interlocked.Increment(ref _rounds);

        if (Options.LruMaxPages <= 0)
        {
            // Writing disabled: forget the position, it is stale by the time writing is enabled again.
            ReportRound(me, 0, false, recentAlloc);
            _savedInfoValid = false;
            LastRound = new BgWriterRound(recentAlloc, 0, 0, 0, 0, false, true);
            return true;
        }

        // How far did the hand move since last time, and how far ahead of it are we?
        long strategyDelta;
        int bufsToLap;
        if (_savedInfoValid)
        {
            int passesDelta = (int)(strategyPasses - _prevStrategyPasses);
            strategyDelta = strategyBufId - _prevStrategyBufId + (long)passesDelta * n;
            if ((int)(_nextPasses - strategyPasses) > 0)
            {
                // We are a pass ahead: scan up to the hand's position.
                bufsToLap = strategyBufId - _nextToClean;
            }
            else if (_nextPasses == strategyPasses && _nextToClean >= strategyBufId)
            {
                // Same pass, ahead of the hand: scan until the hand's next lap.
                bufsToLap = n - (_nextToClean - strategyBufId);
            }
            else
            {
                // The hand overtook us: start again at the hand, with a whole pool to scan.
                _nextToClean = strategyBufId;
                _nextPasses = strategyPasses;
                bufsToLap = n;
            }
        }
        else
        {
            strategyDelta = 0;
            _nextToClean = strategyBufId;
            _nextPasses = strategyPasses;
            bufsToLap = n;
        }
        _prevStrategyBufId = strategyBufId;
        _prevStrategyPasses = strategyPasses;
        _savedInfoValid = true;

        // Buffers the hand passes per allocation: the density of reusable buffers, smoothed.
        if (strategyDelta > 0 && recentAlloc > 0)
        {
            float scansPerAlloc = (float)strategyDelta / recentAlloc;
            _smoothedDensity += (scansPerAlloc - _smoothedDensity) / SmoothingSamples;
        }
        int bufsAhead = n - bufsToLap;
        float reusableEst = bufsAhead / _smoothedDensity;

        // The allocation rate: a spike counts at once, a lull only gradually.
        if (_smoothedAlloc <= recentAlloc)
            _smoothedAlloc = recentAlloc;
        else
            _smoothedAlloc += (recentAlloc - _smoothedAlloc) / SmoothingSamples;
        int upcomingAllocEst = (int)(_smoothedAlloc * Options.LruMultiplier);
        if (upcomingAllocEst == 0)
            _smoothedAlloc = 0; // let the rate reach zero so that the writer can hibernate

        // Keep moving even when idle: the whole pool every ScanWholePoolMs.
        int minScanBuffers = (int)(n / (ScanWholePoolMs / Options.DelayMs));
        if (upcomingAllocEst < minScanBuffers + reusableEst)
            upcomingAllocEst = (int)(minScanBuffers + reusableEst);

        // Scan ahead of the hand, writing dirty reusable buffers, until enough are reusable.
        int numToScan = bufsToLap;
        int written = 0;
        int reusable = (int)reusableEst;
        bool hitMax = false;
        while (numToScan > 0 && reusable < upcomingAllocEst)
        {
            BufferPool.SyncResult r = _pool.SyncOneBuffer(me, _nextToClean, skipRecentlyUsed: true);
            if (++_nextToClean >= n)
            {
                _nextToClean = 0;
                _nextPasses++;
            }
            numToScan--;
            if ((r & BufferPool.SyncResult.Written) != 0)
            {
                reusable++;
                if (++written >= Options.LruMaxPages)
                {
                    hitMax = true;
                    Interlocked.Increment(ref _maxWrittenClean);
                    break;
                }
            }
            else if ((r & BufferPool.SyncResult.Reusable) != 0)
            {
                reusable++;
            }
        }
        Interlocked.Add(ref _buffersWritten, written);
        ReportRound(me, written, hitMax, recentAlloc);
        if (written > 0 && Diagnostics.PgIpcMetrics.BgWriterWriteCounter.Enabled)
            Diagnostics.PgIpcMetrics.BgWriterWriteCounter.Add(written);

        // Our own scan is a density sample too.
        int newStrategyDelta = bufsToLap - numToScan;
        int newRecentAlloc = reusable - (int)reusableEst;
        if (newStrategyDelta > 0 && newRecentAlloc > 0)
        {
            float scansPerAlloc = (float)newStrategyDelta / newRecentAlloc;
            _smoothedDensity += (scansPerAlloc - _smoothedDensity) / SmoothingSamples;
        }

        bool canHibernate = bufsToLap == 0 && recentAlloc == 0;
        LastRound = new BgWriterRound(recentAlloc, bufsToLap - numToScan, written, upcomingAllocEst, (int)reusableEst, hitMax, canHibernate);
        return canHibernate;
    }

    /// <summary>pgstat_report_bgwriter: the round's counts into the shared statistics (allocates nothing after the first round).</summary>
    private void ReportRound(Participant me, int written, bool hitMax, int allocations)
    {
        if (!_statsFound)
        {
            _stats = Stats.SharedStats.Find(me.ProcArray.Segment);
            _statsFound = true;
        }
        _stats?.ReportBgWriterRound(written, hitMax, allocations);
    }

    /// <summary>
    /// The background writer process's main loop (BackgroundWriterMain), on <paramref name="me"/>'s thread until
    /// <paramref name="stop"/> is cancelled: a round, then a latch sleep of <see cref="BgWriterOptions.DelayMs"/>,
    /// hibernating (HibernateFactor times longer, woken by the next buffer allocation) after two idle rounds. A
    /// round that fails (a write error) is recorded in <see cref="LastError"/>, and the loop goes on after a second,
    /// as bgwriter.c's error path does. Throws <see cref="SupervisorDiedException"/> when the supervisor dies.
    /// </summary>
    public void Run(Participant me, CancellationToken stop)
    {
        ArgumentNullException.ThrowIfNull(me);
        using CancellationTokenRegistration reg = stop.Register(static p => ((Participant)p!).SetLatch(), me);
        me.SetBackendTypeIfOnItsThread("background writer");
        bool prevHibernate = false;
        const WaitEvents events = WaitEvents.LatchSet | WaitEvents.Timeout | WaitEvents.SupervisorDeath;
        while (!stop.IsCancellationRequested)
        {
            me.ResetLatch();
            me.ProcessInterrupts();
            bool canHibernate;
            int delay = Options.DelayMs;
            try
            {
                canHibernate = BgBufferSync(me);
            }
            catch (Exception e) when (e is PgIpcException or IOException or UnauthorizedAccessException)
            {
                me.ReleaseAllLWLocks();
                _pool.ReleaseAllBuffers(me);
                LastError = e;
                canHibernate = false;
                delay = Math.Max(delay, 1000);
            }
            WaitEvents got = me.WaitLatch(events, delay, WaitEventBgWriterMain);
            if ((got & WaitEvents.SupervisorDeath) != 0)
                throw new SupervisorDiedException();
            // Idle twice in a row and the short sleep ran out: hibernate until an allocation wakes us.
            if ((got & WaitEvents.Timeout) != 0 && canHibernate && prevHibernate && !stop.IsCancellationRequested)
            {
                _pool.StrategyNotifyBgWriter(me.ProcNumber);
                Volatile.Write(ref _hibernating, 1);
                got = me.WaitLatch(events, Options.DelayMs * Options.HibernateFactor, WaitEventBgWriterHibernate);
                Volatile.Write(ref _hibernating, 0);
                _pool.StrategyNotifyBgWriter(PgProc.InvalidProcNumber);
                if ((got & WaitEvents.SupervisorDeath) != 0)
                    throw new SupervisorDiedException();
            }
            prevHibernate = canHibernate;
        }
    }
}
