/*-------------------------------------------------------------------------
 * ShmTocTests.cs
 *   shm_toc over a region of the main segment, per backend: create, attach,
 *   insert, lookup, the estimator's sums, a wrong magic, a full toc.
 *-------------------------------------------------------------------------
 */
using NUnit.Framework;
using PgIpc.Mq;
using PgIpc.Platform;
using PgIpc.Shmem;

namespace PgIpc.Tests.Mq;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class ShmTocTests(string backend)
{
    private MqCluster? _c;

    [TearDown]
    public void TearDown()
    {
        _c?.Dispose();
        _c = null;
    }

    private MqCluster Cluster => _c ??= MqCluster.Create(PgIpcPlatform.Get(backend));

    [Test]
    public void CreateInsertLookupAndAttach()
    {
        ShmemRegion region = Cluster.Region;
        ShmToc toc = ShmToc.Create(0xABCDEF, region);
        Assert.That(toc.Count, Is.Zero);
        Assert.That(toc.TotalBytes, Is.EqualTo(region.Size & ~63L));

        ShmTocChunk a = toc.Allocate(100);
        ShmTocChunk b = toc.Allocate(1);
        ShmTocChunk c = toc.Allocate(0);
        Assert.That(a.Offset % ShmToc.Alignment, Is.Zero);
        Assert.That(b.Offset % ShmToc.Alignment, Is.Zero);
        Assert.That(a.Offset, Is.EqualTo(toc.TotalBytes - 128), "chunks come from the back, rounded up to the alignment");
        Assert.That(b.Offset, Is.EqualTo(a.Offset - 64));
        Assert.That(c.Offset, Is.EqualTo(b.Offset));
        a.AsSpan().Fill(0x11);
        b.AsSpan().Fill(0x22);
        toc.Insert(1, a);
        toc.Insert(2, b);
        toc.Insert(0xFFFF_FFFF_FFFF_FFFF, a.Offset + 8);
        Assert.That(toc.Count, Is.EqualTo(3));

        // Another view (as another process would make) finds the same offsets and bytes.
        ShmToc other = ShmToc.Attach(0xABCDEF, Cluster.Region);
        Assert.That(other.Lookup(1), Is.EqualTo(a.Offset));
        Assert.That(other.Lookup(2), Is.EqualTo(b.Offset));
        Assert.That(other.Lookup(0xFFFF_FFFF_FFFF_FFFF), Is.EqualTo(a.Offset + 8));
        Assert.That(other.LookupChunk(1, 100).AsSpan().ToArray(), Is.All.EqualTo(0x11));
        Assert.That(other.LookupChunk(2, 1).AsSpan()[0], Is.EqualTo(0x22));
        Assert.That(other.Lookup(3, noError: true), Is.Zero);
        Assert.That(other.TryLookup(3, out _), Is.False);
        Assert.Throws<KeyNotFoundException>(() => other.Lookup(3));
        Assert.Throws<ArgumentOutOfRangeException>(() => toc.Insert(4, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => toc.Insert(4, toc.TotalBytes));
        Assert.Throws<ArgumentOutOfRangeException>(() => other.ChunkAt(a.Offset, 1_000_000_000));
    }

    [Test]
    public void WrongMagicIsRefused()
    {
        ShmToc.Create(0x1111, Cluster.Region);
        var ex = Assert.Throws<InvalidShmTocException>(() => ShmToc.Attach(0x2222, Cluster.Region));
        Assert.That(ex!.Message, Does.Contain("0x0000000000002222").And.Contain("0x0000000000001111"));
        Assert.That(ex.Expected, Is.EqualTo(0x2222UL));
        Assert.That(ex.Found, Is.EqualTo(0x1111UL));
    }

    [Test]
    public void EstimatorSumsChunksKeysAndHeader()
    {
        var e = ShmTocEstimator.InitializeEstimator();
        Assert.That(e.Estimate(), Is.EqualTo(64), "an empty toc: the header, rounded up");
        e.EstimateChunk(100);   // 128
        e.EstimateChunk(64);    // 64
        e.EstimateChunk(1);     // 64
        e.EstimateKeys(3);
        Assert.That(e.SpaceForChunks, Is.EqualTo(256));
        Assert.That(e.NumberOfKeys, Is.EqualTo(3));
        long expected = (ShmToc.HeaderSize + 3 * ShmToc.EntrySize + 256 + 63) & ~63L;
        Assert.That(e.Estimate(), Is.EqualTo(expected));

        // A toc of exactly the estimated size holds exactly what was estimated.
        ShmemRegion r = Cluster.Segment.Alloc(e.Estimate());
        ShmToc toc = ShmToc.Create(7, r);
        toc.Insert(1, toc.Allocate(100));
        toc.Insert(2, toc.Allocate(64));
        toc.Insert(3, toc.Allocate(1));
        Assert.Throws<ShmTocOutOfSpaceException>(() => toc.Allocate(64));

        var big = ShmTocEstimator.InitializeEstimator();
        big.EstimateChunk(long.MaxValue - 1000);
        Assert.Throws<PgIpcException>(() => big.EstimateChunk(long.MaxValue - 1000));
    }

    [Test]
    public void FullTocSaysWhereEntriesAndChunksMeet()
    {
        ShmemRegion r = Cluster.Segment.Alloc(1024);
        ShmToc toc = ShmToc.Create(9, r);
        ShmTocChunk big = toc.Allocate(1024 - ShmToc.HeaderSize - 2 * ShmToc.EntrySize - 64); // 896 bytes
        toc.Insert(1, big);
        toc.Insert(2, big);
        var ex = Assert.Throws<ShmTocOutOfSpaceException>(() => toc.Allocate(65)); // 128 bytes, 64 left
        Assert.That(ex!.Message, Does.Contain("out of shared memory in toc: entries and chunks would meet"));
        Assert.That(ex.TotalBytes, Is.EqualTo(1024));
        Assert.That(ex.Entries, Is.EqualTo(2));
        // The last free bytes take entries until they too run out.
        long free = toc.FreeBytes;
        int fit = (int)(free / ShmToc.EntrySize);
        for (int i = 0; i < fit; i++)
            toc.Insert((ulong)(10 + i), big);
        var ex2 = Assert.Throws<ShmTocOutOfSpaceException>(() => toc.Insert(99, big));
        Assert.That(ex2!.Message, Does.Contain("entry of 16 bytes"));
        Assert.That(toc.Count, Is.EqualTo(2 + fit));
        Assert.That(toc.Lookup(10 + (ulong)fit - 1), Is.EqualTo(big.Offset));
    }

    [Test]
    public void ReadersSeeCompleteEntriesWhileAWriterInserts()
    {
        ShmToc toc = ShmToc.Create(0x77, Cluster.Region);
        const int N = 2000;
        ShmTocChunk target = toc.Allocate(64);
        int bad = 0;
        TestThreads.Run(3, t =>
        {
            if (t == 0)
            {
                for (int i = 1; i <= N; i++)
                    toc.Insert((ulong)i, target.Offset);
                return;
            }
            ShmToc view = ShmToc.Attach(0x77, Cluster.Region);
            while (view.Count < N)
            {
                int n = view.Count;
                if (n > 0 && view.Lookup((ulong)n, noError: true) != target.Offset)
                    Interlocked.Increment(ref bad);
            }
        });
        Assert.That(bad, Is.Zero, "a reader saw a counted entry that was not complete");
        Assert.That(toc.Count, Is.EqualTo(N));
    }
}
