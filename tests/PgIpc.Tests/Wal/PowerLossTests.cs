/*-------------------------------------------------------------------------
 * PowerLossTests.cs
 *   Simulated power loss under the WAL and the buffer pool: a workload of
 *   logged increments (participant threads of this process, so the
 *   PowerLossFileLayer sees every write and fsync), checkpoints among them;
 *   the power is cut at a random moment, the layer drops or tears every
 *   write no fsync covered, and a fresh cluster start recovers. Every
 *   acknowledged increment (its record flushed) must be there and no value
 *   beyond the increments made; data pages torn by the crash must come back
 *   from their full-page images (and fail without them); a torn WAL tail
 *   is the end of WAL.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Postmaster;
using PgIpc.Proc;
using PgIpc.Wal;

namespace PgIpc.Tests.Wal;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class PowerLossTests(string backend)
{
    private const uint Rel = 7;
    private const int Blocks = 48; // through 32 buffers: evictions write pages between checkpoints
    private const int Workers = 2;
    private const int SegmentSize = 64 * 1024;
    private const int Rounds = 20;

    private string _dir = "";
    private Supervisor? _s;
    private PowerLossFileLayer? _layer;

    /// <summary>
    /// The increments' resource manager: block 0's data is (offset, value); redo writes the value at the offset and
    /// again at the offset plus <see cref="Mirror"/>, near the page's end, so a page torn at any sector boundary
    /// between them (the first sector new, the last old) fails its checksum.
    /// </summary>
    private const byte PowerRmId = 201;
    private const int Mirror = 7680;

    static PowerLossTests()
        => WalResourceManagers.Register(new WalResourceManager(PowerRmId, "test.powerloss", (ctx, rec) =>
        {
            if (ctx.ReadBufferForRedo(0, out int buffer) == RedoAction.NeedsRedo)
            {
                ReadOnlySpan<byte> d = rec.BlockData(0);
                SetBoth(ctx.GetPage(buffer), BinaryPrimitives.ReadInt32LittleEndian(d), BinaryPrimitives.ReadInt64LittleEndian(d[4..]));
            }
        }, (sb, rec) => sb.Append("INCR")));

    private static void SetBoth(Span<byte> page, int offset, long value)
    {
        BinaryPrimitives.WriteInt64LittleEndian(page[offset..], value);
        BinaryPrimitives.WriteInt64LittleEndian(page[(offset + Mirror)..], value);
    }

    [SetUp]
    public void SetUp() => _dir = Path.Combine(Path.GetTempPath(), $"pgipc-powerloss-{Environment.ProcessId}-{Guid.NewGuid():N}");

    [TearDown]
    public void TearDown()
    {
        _layer?.Dispose();
        _layer = null;
        _s?.Shutdown(ShutdownMode.Immediate, TimeSpan.FromSeconds(5));
        _s?.Dispose();
        _s = null;
        try { Directory.Delete(_dir, recursive: true); } catch (DirectoryNotFoundException) { }
    }

    private void Start(bool fullPageWrites)
    {
        _s = new ClusterBuilder(TestEnvironment.UniqueKey("pwr"))
            .WithPlatform(PgIpcPlatform.Get(backend))
            .WithMaxParticipants(new ProcArrayOptions(MaxBackends: 16, MaxAuxiliary: 2, MaxBackgroundWorkers: 2))
            .WithDataDirectory(_dir)
            .WithLog(TextWriter.Null)
            .WithBufferPool(32)
            .WithWal(new WalOptions { SegmentSize = SegmentSize, BufferBytes = 64 * 1024, MaxWalSize = 8L * SegmentSize, FullPageWrites = fullPageWrites })
            .Build();
    }

    private void StopImmediate()
    {
        _s!.Shutdown(ShutdownMode.Immediate, TimeSpan.FromSeconds(5)); // no shutdown checkpoint, no buffer writes
        _s.Dispose();
        _s = null;
    }

    private static int OffsetOf(int worker) => 100 + 8 * worker;

    private void AsParticipant(Action<Participant> body)
        => TestThreads.Run(1, _ =>
        {
            using Participant me = _s!.Cluster.Procs.Join();
            body(me);
        });

    /// <summary>Adds one to the worker's counter in <paramref name="block"/>, logged; returns the value and the record's end.</summary>
    private static (long Value, ulong End) Increment(BufferPool pool, XLog wal, Participant me, uint block, int worker, long[,] attempted)
    {
        int off = OffsetOf(worker);
        int b = pool.ReadBuffer(me, Rel, ForkNumber.Main, block);
        pool.LockBuffer(me, b, BufferLockMode.Exclusive);
        try
        {
            Span<byte> page = pool.GetPage(me, b);
            long v = BinaryPrimitives.ReadInt64LittleEndian(page[off..]) + 1;
            attempted[worker, block] = v; // before the page changes: the upper bound of what recovery may find
            SetBoth(page, off, v);
            pool.MarkBufferDirty(me, b);
            Span<byte> d = stackalloc byte[12];
            BinaryPrimitives.WriteInt32LittleEndian(d, off);
            BinaryPrimitives.WriteInt64LittleEndian(d[4..], v);
            WalRecordBuilder rb = wal.BeginInsert();
            rb.RegisterBuffer(0, pool, me, b);
            rb.RegisterBufData(0, d);
            return (v, rb.Insert(me, PowerRmId, 0));
        }
        finally
        {
            pool.LockBuffer(me, b, BufferLockMode.Unlock);
            pool.ReleaseBuffer(me, b);
        }
    }

    /// <summary>The counters as recovery left them, read through the pool (every page's checksum verified on its way in).</summary>
    private long[,] ReadCounters()
    {
        var v = new long[Workers, Blocks];
        AsParticipant(me =>
        {
            BufferPool pool = _s!.Cluster.Get<BufferPool>();
            for (uint blk = 0; blk < Blocks; blk++)
            {
                int b = pool.ReadBuffer(me, Rel, ForkNumber.Main, blk);
                for (int w = 0; w < Workers; w++)
                {
                    ReadOnlySpan<byte> page = pool.GetPage(me, b);
                    v[w, blk] = BinaryPrimitives.ReadInt64LittleEndian(page[OffsetOf(w)..]);
                    long mirror = BinaryPrimitives.ReadInt64LittleEndian(page[(OffsetOf(w) + Mirror)..]);
                    if (mirror != v[w, blk])
                        throw new InvalidOperationException($"block {blk}: worker {w}'s counter is {v[w, blk]} at the start of the page and {mirror} at its end");
                }
                pool.ReleaseBuffer(me, b);
            }
        });
        return v;
    }

    /// <summary>Pages of <paramref name="torn"/> whose on-disk checksum fails (raw reads, no pool).</summary>
    private int BrokenOnDisk(IEnumerable<(string File, long Offset)> torn)
    {
        int broken = 0;
        byte[] page = new byte[BufferPool.BlockSize];
        foreach ((string file, long offset) in torn)
        {
            string path = Path.Combine(_dir, file);
            if (!File.Exists(path))
                continue;
            using FileStream f = new(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            if (f.Length < offset + page.Length)
                continue;
            f.Position = offset;
            f.ReadExactly(page);
            if (!PageChecksum.Verify(page, (uint)(offset / BufferPool.BlockSize), out _, out _))
                broken++;
        }
        return broken;
    }

    private sealed class Totals
    {
        public int Rounds, Dropped, TornWal, TornData, TornDataBroken, DirOpsUndone, WalTailTornPastDurable;
        public long Acked;
        public override string ToString()
            => $"{Rounds} rounds, {Acked} acknowledged increments: dropped {Dropped} writes, tore {TornWal} WAL writes ({WalTailTornPastDurable} ended the WAL past the acknowledged records) and {TornData} data pages ({TornDataBroken} failing their checksum on disk), undid {DirOpsUndone} entry changes";
    }

    /// <summary>
    /// The rounds: workload, power cut, crash, recovery, check. Returns the totals; <paramref name="failure"/> is the
    /// first recovery or check that failed (the rounds stop there), null when all passed.
    /// </summary>
    private Totals RunRounds(int baseSeed, int rounds, bool fullPageWrites, PowerLossPolicy policy, out string? failure)
    {
        failure = null;
        var totals = new Totals();
        _layer = new PowerLossFileLayer(_dir);
        Start(fullPageWrites);
        AsParticipant(me =>
        {
            BufferPool pool = _s!.Cluster.Get<BufferPool>();
            for (int i = 0; i < Blocks; i++)
            {
                int b = pool.ReadBuffer(me, Rel, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                pool.MarkBufferDirty(me, b);
                pool.LockBuffer(me, b, BufferLockMode.Unlock);
                pool.ReleaseBuffer(me, b);
            }
            _s.Cluster.Get<XLog>().Checkpoint(me); // the blocks exist on disk (extension is not logged)
        });
        var acked = new long[Workers, Blocks];
        var attempted = new long[Workers, Blocks];
        for (int round = 0; round < rounds; round++)
        {
            int seed = baseSeed + round;
            var rnd = new Random(seed);
            int cutAfterMs = 20 + rnd.Next(200);
            long[,] roundStart = (long[,])acked.Clone();
            ulong ackedEnd = 0; // the end of the last acknowledged record
            XLog wal = _s!.Cluster.Get<XLog>();
            BufferPool pool = _s.Cluster.Get<BufferPool>();
            TestThreads.Run(Workers + 1, t =>
            {
                if (t == Workers)
                {
                    Thread.Sleep(cutAfterMs);
                    _layer.PowerLoss();
                    return;
                }
                using Participant me = _s.Cluster.Procs.Join();
                var r = new Random(seed * 31 + t);
                try
                {
                    for (int n = 1; !_layer.Lost; n++)
                    {
                        uint blk = (uint)r.Next(Blocks);
                        (long v, ulong end) = Increment(pool, wal, me, blk, t, attempted);
                        wal.Flush(me, end);
                        acked[t, blk] = v; // durable: its record is flushed
                        ulong seen = Volatile.Read(ref ackedEnd);
                        while (seen < end && Interlocked.CompareExchange(ref ackedEnd, end, seen) is var was && was != seen)
                            seen = was;
                        if (t == 0 && n % 97 == 0)
                            wal.Checkpoint(me);
                    }
                }
                catch (Exception) when (_layer.Lost)
                {
                    // The machine is off: an fsync failed (WalFsyncFailedException, DataSyncFailedException, ...).
                }
            });
            ulong durableEnd = Volatile.Read(ref ackedEnd);
            ulong flushed = wal.FlushLsn; // XLogFlush reported the WAL durable up to here
            StopImmediate();
            PowerLossReport rep = _layer.Crash(seed, policy);
            var geometry = new WalGeometry(SegmentSize);
            string lastFlushedSegment = Path.Combine(_dir, "pg_wal", geometry.FileName(1, geometry.SegmentOf(flushed - 1)));
            int broken = BrokenOnDisk(rep.TornDataPages);
            totals.Rounds++;
            totals.Dropped += rep.Dropped;
            totals.TornWal += rep.TornWal;
            totals.TornData += rep.TornData;
            totals.TornDataBroken += broken;
            totals.DirOpsUndone += rep.DirOpsUndone;
            ulong tearLsn = ulong.MaxValue;
            if (policy == PowerLossPolicy.TearWalTail)
            {
                // The last torn write to a segment (not to a new segment's temp file): the tail the layer tore.
                foreach ((string file, long offset, int kept, _) in rep.TornWalWrites)
                    if (geometry.TryParseFileName(file, out _, out ulong segno))
                        tearLsn = segno * SegmentSize + (ulong)offset + (ulong)kept;
            }
            string what = $"round {round} (seed {seed}, power cut after {cutAfterMs} ms, last acknowledged record ends at {WalFormat.FormatLsn(durableEnd)}): {rep}";
            TestContext.Out.WriteLine(what);
            if (!File.Exists(lastFlushedSegment))
            {
                // Its content was fsynced, but not its name: a recycled segment written before its rename was durable.
                failure = $"{what}: the WAL was flushed to {WalFormat.FormatLsn(flushed)}, but its segment {Path.GetFileName(lastFlushedSegment)} is gone";
                return totals;
            }
            try
            {
                Start(fullPageWrites);
            }
            catch (Exception e)
            {
                failure = $"{what}: recovery failed: {e.GetType().Name}: {e.Message}";
                return totals;
            }
            WalStartupReport startup = _s!.Cluster.Get<XLog>().LastStartup!;
            TestContext.Out.WriteLine($"  recovery: {startup.Records} records from {WalFormat.FormatLsn(startup.RedoStart)} to {WalFormat.FormatLsn(startup.EndOfWal)} ({startup.EndReason})");
            if (startup.EndOfWal < durableEnd)
            {
                failure = $"{what}: the WAL ends at {WalFormat.FormatLsn(startup.EndOfWal)}, before the last acknowledged record's end ({startup.EndReason})";
                return totals;
            }
            // A tear past the acknowledged WAL ends it there, unless the bytes after the tear were already durable with
            // the same content (a page rewritten whole, or WAL written out ahead and covered by another fsync).
            if (tearLsn != ulong.MaxValue && tearLsn > durableEnd && startup.EndOfWal <= tearLsn)
                totals.WalTailTornPastDurable++;
            long[,] found;
            try
            {
                found = ReadCounters();
            }
            catch (Exception e)
            {
                failure = $"{what}: reading the pages after recovery failed: {e.GetType().Name}: {e.Message}";
                return totals;
            }
            for (int w = 0; w < Workers; w++)
                for (int blk = 0; blk < Blocks; blk++)
                {
                    if (found[w, blk] < acked[w, blk])
                        failure ??= $"{what}: worker {w}'s acknowledged increment of block {blk} is lost: {found[w, blk]} < {acked[w, blk]}";
                    if (found[w, blk] > attempted[w, blk])
                        failure ??= $"{what}: worker {w}'s counter in block {blk} is {found[w, blk]}, beyond the {attempted[w, blk]} increments made (never logged)";
                    totals.Acked += acked[w, blk] - roundStart[w, blk];
                    acked[w, blk] = attempted[w, blk] = found[w, blk];
                }
            if (failure is not null)
                return totals;
            if (broken > 0)
            {
                // The repaired pages are in the buffers; a checkpoint writes them out: on disk they verify again.
                AsParticipant(me => _s.Cluster.Get<XLog>().Checkpoint(me));
                int still = BrokenOnDisk(rep.TornDataPages);
                if (still > 0)
                {
                    failure = $"{what}: {still} torn data pages still fail their checksum after recovery and a checkpoint";
                    return totals;
                }
            }
        }
        return totals;
    }

    [Test]
    public void PowerLossKeepsEveryAcknowledgedUpdateAndRepairsTornPages()
    {
        Totals t = RunRounds(baseSeed: 1000, Rounds, fullPageWrites: true, PowerLossPolicy.Random, out string? failure);
        TestContext.Out.WriteLine(t);
        Assert.That(failure, Is.Null);
        Assert.That(t.Acked, Is.GreaterThan(0), "no increment was acknowledged: nothing was tested");
        Assert.That(t.Dropped, Is.GreaterThan(0), "no write was dropped: the crash simulated nothing");
        Assert.That(t.TornWal, Is.GreaterThan(0), "no WAL write was torn");
        Assert.That(t.TornDataBroken, Is.GreaterThan(0), "no data page was torn so that its checksum failed: full-page images were not tested");
    }

    [Test]
    public void ATornWalTailIsTheEndOfWalAndEverythingBeforeItSurvives()
    {
        Totals t = RunRounds(baseSeed: 5000, Rounds / 2, fullPageWrites: true, PowerLossPolicy.TearWalTail, out string? failure);
        TestContext.Out.WriteLine(t);
        Assert.That(failure, Is.Null);
        Assert.That(t.WalTailTornPastDurable, Is.GreaterThan(0), "no round's WAL ended at a tear past the acknowledged records");
    }

    /// <summary>
    /// The same crashes without full-page images: a torn data page cannot be repaired, and replay reads it (its
    /// checksum fails) or the counters come out wrong. Shows that the test above detects what it claims to.
    /// </summary>
    [Test]
    public void WithoutFullPageWritesATornPageIsCaught()
    {
        Totals t = RunRounds(baseSeed: 9000, Rounds, fullPageWrites: false, PowerLossPolicy.Random, out string? failure);
        TestContext.Out.WriteLine(t);
        TestContext.Out.WriteLine(failure ?? "no failure");
        Assert.That(t.TornDataBroken, Is.GreaterThan(0), "no data page was torn");
        Assert.That(failure, Is.Not.Null, "torn data pages went unnoticed without full-page images");
    }

    /// <summary>With the layer keeping every write (no power-loss effect), the same rounds must pass: the checks themselves are sound.</summary>
    [Test]
    public void KeepingEveryWriteIsACrashThatLosesNothing()
    {
        Totals t = RunRounds(baseSeed: 7000, 3, fullPageWrites: false, PowerLossPolicy.KeepAll, out string? failure);
        Assert.That(failure, Is.Null);
        Assert.That(t.Dropped + t.TornWal + t.TornData, Is.Zero);
    }
}
