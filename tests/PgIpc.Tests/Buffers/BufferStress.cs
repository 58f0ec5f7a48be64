/*-------------------------------------------------------------------------
 * BufferStress.cs
 *   Random read-modify-write of per-page counters on a pool much smaller
 *   than the relation, in threads and in worker processes: the sum of the
 *   counters must equal the number of increments.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;

namespace PgIpc.Tests.Buffers;

internal static class BufferStress
{
    public const int CounterOffset = 128;

    /// <summary>Adds 1 to the counter of <paramref name="iterations"/> random pages of <paramref name="rel"/>.</summary>
    public static void Increment(BufferPool pool, Participant me, uint rel, int pages, int iterations, int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < iterations; i++)
        {
            int b = pool.ReadBuffer(me, rel, ForkNumber.Main, rng.Next(pages));
            pool.LockBuffer(me, b, BufferLockMode.Exclusive);
            Span<byte> page = pool.GetPage(me, b);
            BinaryPrimitives.WriteInt64LittleEndian(page[CounterOffset..], BinaryPrimitives.ReadInt64LittleEndian(page[CounterOffset..]) + 1);
            pool.MarkBufferDirty(me, b);
            pool.LockBuffer(me, b, BufferLockMode.Unlock);
            pool.ReleaseBuffer(me, b);
        }
    }

    public static void Create(BufferPool pool, Participant me, uint rel, int pages)
    {
        for (int i = 0; i < pages; i++)
            pool.ReleaseBuffer(me, pool.ReadBuffer(me, rel, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend));
    }

    public static long Sum(BufferPool pool, Participant me, uint rel, int pages)
    {
        long sum = 0;
        for (int i = 0; i < pages; i++)
        {
            int b = pool.ReadBuffer(me, rel, ForkNumber.Main, i);
            pool.LockBuffer(me, b, BufferLockMode.Shared);
            sum += BinaryPrimitives.ReadInt64LittleEndian(pool.GetPage(me, b)[CounterOffset..]);
            pool.LockBuffer(me, b, BufferLockMode.Unlock);
            pool.ReleaseBuffer(me, b);
        }
        return sum;
    }
}

/// <summary>Counters stay exact under eviction, with participants as threads and as processes.</summary>
[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class BufferStressTests(string backend)
{
    private const int Pages = 400;
    private BufferCluster? _c;
    private readonly List<ChildWorker> _workers = [];

    [TearDown]
    public void TearDown()
    {
        foreach (ChildWorker w in _workers)
            w.Dispose();
        _workers.Clear();
        _c?.Dispose();
        _c = null;
    }

    [Test]
    public void ThreadsKeepCountersExactUnderEviction()
    {
        BufferCluster c = _c = BufferCluster.Create(PgIpcPlatform.Get(backend), 16);
        const int threads = 4, iterations = 3000;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            BufferStress.Create(c.Pool, me, 1, Pages);
        });
        TestThreads.Run(threads, i =>
        {
            using Participant me = c.Procs.Join();
            BufferStress.Increment(c.Pool, me, 1, Pages, iterations, 17 + i);
        });
        long sum = 0;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            sum = BufferStress.Sum(c.Pool, me, 1, Pages);
        });
        Assert.That(sum, Is.EqualTo((long)threads * iterations));
        Assert.That(c.Pool.Smgr.Writes, Is.GreaterThan(Pages), "dirty victims were written back");
    }

    [Test]
    public void CountersSurviveACheckpointAndAColdRestart()
    {
        string dir = BufferCluster.NewDataDirectory();
        try
        {
            const int threads = 3, iterations = 2000;
            int written = 0;
            using (BufferCluster c = BufferCluster.Create(PgIpcPlatform.Get(backend), 32, dataDirectory: dir))
            {
                TestThreads.Run(1, _ =>
                {
                    using Participant me = c.Procs.Join();
                    BufferStress.Create(c.Pool, me, 1, Pages);
                });
                TestThreads.Run(threads, i =>
                {
                    using Participant me = c.Procs.Join();
                    BufferStress.Increment(c.Pool, me, 1, Pages, iterations, 7 + i);
                });
                TestThreads.Run(1, _ =>
                {
                    using Participant me = c.Procs.Join();
                    written = c.Pool.FlushAllBuffers(me);
                });
            }
            long sum = 0;
            long reads = 0;
            using (BufferCluster c = BufferCluster.Create(PgIpcPlatform.Get(backend), 32, dataDirectory: dir))
            {
                TestThreads.Run(1, _ =>
                {
                    using Participant me = c.Procs.Join();
                    sum = BufferStress.Sum(c.Pool, me, 1, Pages);
                });
                reads = c.Pool.Smgr.Reads;
            }
            Assert.Multiple(() =>
            {
                Assert.That(written, Is.InRange(1, 32), "the checkpoint wrote the dirty buffers");
                Assert.That(reads, Is.EqualTo(Pages), "the restarted pool read every page from disk");
                Assert.That(sum, Is.EqualTo((long)threads * iterations));
            });
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    [Category(TestEnvironment.BusyAcrossProcesses)]
    public void ProcessesKeepCountersExactUnderEviction()
    {
        BufferCluster c = _c = BufferCluster.Create(PgIpcPlatform.Get(backend), 32);
        const int processes = 3, iterations = 2000;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            BufferStress.Create(c.Pool, me, 1, Pages);
        });
        for (int i = 0; i < processes; i++)
        {
            Workers.StartAttached(backend, _workers, c.Segment.Handle, $"buf-attach {c.Options.NumBuffers} {c.Options.DataDirectory}");
        }
        for (int i = 0; i < processes; i++)
            _workers[i].Begin($"buf-incr 1 {Pages} {iterations} {100 + i}");
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            BufferStress.Increment(c.Pool, me, 1, Pages, iterations, 99);
        });
        foreach (ChildWorker w in _workers)
            w.End("buf-incr", TimeSpan.FromSeconds(120));
        foreach (ChildWorker w in _workers)
            w.Send("buf-leave");
        long sum = 0;
        TestThreads.Run(1, _ =>
        {
            using Participant me = c.Procs.Join();
            sum = BufferStress.Sum(c.Pool, me, 1, Pages);
        });
        Assert.That(sum, Is.EqualTo((long)(processes + 1) * iterations));
    }
}
