/*-------------------------------------------------------------------------
 * MetricsTests.cs
 *   The "PgIpc" Meter, heard through a MeterListener, against workloads
 *   whose counts are known: buffer misses, hits, evictions and writes;
 *   LWLock acquisitions that slept under contention between two threads;
 *   bytes through a shm_mq; latch waits named by the wait-event registry.
 *
 * NOTES
 *   The observable counters are process-wide sums, read before and after
 *   the workload: tests run one at a time, so the difference is the
 *   workload's. Misses are counted against the storage manager's own read
 *   counter (which blocks the clock sweep keeps is its business).
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Diagnostics;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Proc;
using PgIpc.Sync;
using PgIpc.Tests.Buffers;
using PgIpc.Tests.Mq;
using PgIpc.Tests.Sync;

namespace PgIpc.Tests.Diagnostics;

/// <summary>Collects the PgIpc meter's measurements: totals per instrument, and per instrument and tag value.</summary>
internal sealed class MeterCapture : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<string, long> _totals = new();
    private readonly ConcurrentDictionary<(string, string), long> _byTag = new();
    private readonly ConcurrentDictionary<string, long> _observed = new();

    public MeterCapture()
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == PgIpcMetrics.MeterName)
                listener.EnableMeasurementEvents(instrument);
        };
        _listener.SetMeasurementEventCallback<long>((i, value, tags, _) => Record(i, value, tags));
        _listener.SetMeasurementEventCallback<int>((i, value, tags, _) => Record(i, value, tags));
        _listener.Start();
    }

    private void Record(Instrument i, long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (i.IsObservable)
        {
            // Observable instruments report their current value per tag set: keep the last, summed over tag sets.
            string key = i.Name;
            foreach (KeyValuePair<string, object?> t in tags)
                key += "|" + t.Key + "=" + t.Value;
            _observed[key] = value;
            return;
        }
        _totals.AddOrUpdate(i.Name, value, (_, v) => v + value);
        foreach (KeyValuePair<string, object?> t in tags)
            _byTag.AddOrUpdate((i.Name, $"{t.Key}={t.Value}"), value, (_, v) => v + value);
    }

    /// <summary>What a counter recorded since the capture started.</summary>
    public long Total(string instrument) => _totals.GetValueOrDefault(instrument);

    /// <summary>What a counter recorded with tag <paramref name="tag"/> equal to <paramref name="value"/>.</summary>
    public long Tagged(string instrument, string tag, string value) => _byTag.GetValueOrDefault((instrument, $"{tag}={value}"));

    /// <summary>The observable instruments' current values (summed over their tag sets), collected now.</summary>
    public Dictionary<string, long> Observe()
    {
        _observed.Clear();
        _listener.RecordObservableInstruments();
        var sums = new Dictionary<string, long>();
        foreach ((string key, long v) in _observed)
        {
            string name = key.Split('|')[0];
            sums[name] = sums.GetValueOrDefault(name) + v;
        }
        return sums;
    }

    /// <summary>The observable value of <paramref name="instrument"/> for the series tagged <paramref name="tag"/>=<paramref name="value"/>, collected now.</summary>
    public long? ObserveTagged(string instrument, string tag, string value)
    {
        Observe();
        return _observed.TryGetValue($"{instrument}|{tag}={value}", out long v) ? v : null;
    }

    public void Dispose() => _listener.Dispose();
}

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class MetricsTests(string backend)
{
    private readonly IPgIpcPlatform _platform = PgIpcPlatform.Get(backend);

    private static long Delta(Dictionary<string, long> before, Dictionary<string, long> after, string name)
        => after.GetValueOrDefault(name) - before.GetValueOrDefault(name);

    [Test]
    public void BufferMissesHitsEvictionsAndWritesAreCounted()
    {
        const int Blocks = 48, Hits = 25, Writes = 5;
        using BufferCluster c = BufferCluster.Create(_platform, numBuffers: 16);
        using var capture = new MeterCapture();
        long smgrReads = 0;
        Dictionary<string, long> before = [], afterReads = [], afterWrites = [];
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            BufferPool pool = c.Pool;
            for (int i = 0; i < Blocks; i++)
            {
                int b = pool.ReadBuffer(me, 1, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend);
                pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                BinaryPrimitives.WriteInt64LittleEndian(pool.GetPage(me, b)[512..], i);
                pool.MarkBufferDirty(me, b);
                pool.FlushBuffer(me, b);
                pool.LockBuffer(me, b, BufferLockMode.Unlock);
                pool.ReleaseBuffer(me, b);
            }
            // Every buffer now holds a valid, clean page: each miss below evicts one and writes nothing.
            before = capture.Observe();
            long readsBefore = pool.Smgr.Reads;
            for (int i = 0; i < Blocks; i++)
                pool.ReleaseBuffer(me, pool.ReadBuffer(me, 1, ForkNumber.Main, i));
            for (int i = 0; i < Hits; i++)
                pool.ReleaseBuffer(me, pool.ReadBuffer(me, 1, ForkNumber.Main, Blocks - 1)); // just read: resident
            smgrReads = pool.Smgr.Reads - readsBefore;
            afterReads = capture.Observe();
            int last = pool.ReadBuffer(me, 1, ForkNumber.Main, Blocks - 1);
            for (int i = 0; i < Writes; i++)
            {
                pool.LockBuffer(me, last, BufferLockMode.Exclusive);
                pool.MarkBufferDirty(me, last);
                Assert.That(pool.FlushBuffer(me, last), Is.True);
                pool.LockBuffer(me, last, BufferLockMode.Unlock);
            }
            pool.ReleaseBuffer(me, last);
            afterWrites = capture.Observe();
        });
        Assert.Multiple(() =>
        {
            Assert.That(smgrReads, Is.GreaterThanOrEqualTo(Blocks - 16), "the workload missed (at least the blocks that cannot fit)");
            Assert.That(Delta(before, afterReads, PgIpcMetrics.BufferReads), Is.EqualTo(smgrReads), "reads = the storage manager's reads");
            Assert.That(Delta(before, afterReads, PgIpcMetrics.BufferHits), Is.EqualTo(Blocks + Hits - smgrReads), "every other ReadBuffer was a hit");
            Assert.That(Delta(before, afterReads, PgIpcMetrics.BufferEvictions), Is.EqualTo(smgrReads), "each miss evicted a valid page");
            Assert.That(Delta(before, afterReads, PgIpcMetrics.BufferWrites), Is.Zero, "clean victims are not written");
            Assert.That(Delta(afterReads, afterWrites, PgIpcMetrics.BufferWrites), Is.EqualTo(Writes));
            Assert.That(Delta(afterReads, afterWrites, PgIpcMetrics.BufferHits), Is.EqualTo(1));
        });
    }

    [Test]
    public void LWLockAcquisitionsThatSleptAreCountedWithTheirTrancheName()
    {
        const int Rounds = 20;
        using LockCluster c = LockCluster.Create(_platform);
        using var capture = new MeterCapture();
        int slept = 0;
        var holderHolds = new SemaphoreSlim(0);
        var waiterDone = new SemaphoreSlim(0);
        TestThreads.Run(2, t =>
        {
            using Participant me = c.Procs.Join();
            ref LWLock l = ref c.Locks[5];
            for (int r = 0; r < Rounds; r++)
            {
                if (t == 0)
                {
                    l.Acquire(me, LWLockMode.Exclusive);
                    holderHolds.Release();
                    // Release only once the other thread is queued, and give it time to go to sleep on its semaphore.
                    Assert.That(Poll.Until(() => c.Locks[5].HasWaiters), Is.True, "the waiter to queue");
                    Thread.Sleep(5);
                    l.Release(me);
                    Assert.That(waiterDone.Wait(Poll.Patience), Is.True);
                }
                else
                {
                    Assert.That(holderHolds.Wait(Poll.Patience), Is.True);
                    if (!l.Acquire(me, LWLockMode.Exclusive))
                        Interlocked.Increment(ref slept);
                    l.Release(me);
                    waiterDone.Release();
                }
            }
        });
        Assert.Multiple(() =>
        {
            Assert.That(slept, Is.GreaterThan(0), "the contention made the waiter sleep");
            Assert.That(capture.Total(PgIpcMetrics.LWLockSleeps), Is.EqualTo(slept), "one count per acquisition that slept");
            Assert.That(capture.Tagged(PgIpcMetrics.LWLockSleeps, PgIpcMetrics.WaitEventTag, LockCluster.TrancheName), Is.EqualTo(slept),
                "tagged with the tranche's name (its wait event)");
        });
    }

    [Test]
    public void ShmMqBytesAndLatchWaitsAreCounted()
    {
        const int Messages = 10, Size = 100;
        using MqCluster c = MqCluster.Create(_platform);
        c.CreateQueues(1, 4096);
        using var capture = new MeterCapture();
        Dictionary<string, long> before = [], after = [];
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            ShmMq mq = c.Queue(1, 4096);
            mq.SetSender(me);
            mq.SetReceiver(me);
            using ShmMqHandle tx = mq.AttachAsSender(me);
            using ShmMqHandle rx = mq.AttachAsReceiver(me);
            before = capture.Observe();
            byte[] m = new byte[Size];
            for (int i = 0; i < Messages; i++)
                Assert.That(tx.Send(m, nowait: true), Is.EqualTo(ShmMqResult.Success));
            for (int i = 0; i < Messages; i++)
            {
                Assert.That(rx.Receive(out ReadOnlySpan<byte> got, nowait: true), Is.EqualTo(ShmMqResult.Success));
                Assert.That(got.Length, Is.EqualTo(Size));
            }
            after = capture.Observe();
            me.ResetLatch();
            me.WaitLatch(WaitEvents.LatchSet | WaitEvents.Timeout, 1, Checkpointer.WaitEventCheckpointerMain);
        });
        Assert.Multiple(() =>
        {
            Assert.That(Delta(before, after, PgIpcMetrics.MqBytesSent), Is.EqualTo(Messages * Size));
            Assert.That(Delta(before, after, PgIpcMetrics.MqBytesReceived), Is.EqualTo(Messages * Size));
            Assert.That(capture.Tagged(PgIpcMetrics.LatchWaits, PgIpcMetrics.WaitEventTag, "CheckpointerMain"), Is.EqualTo(1),
                "the wait's name comes from the wait-event registry");
            Assert.That(capture.Tagged(PgIpcMetrics.LatchWaits, PgIpcMetrics.WaitEventTypeTag, "Activity"), Is.EqualTo(1));
        });
    }
}
