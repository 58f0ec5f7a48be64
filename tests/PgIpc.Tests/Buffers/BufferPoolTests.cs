/*-------------------------------------------------------------------------
 * BufferPoolTests.cs
 *   The shared buffer pool in one process, per backend: state-word
 *   packing, read / modify / flush / evict / re-read round trips, clock
 *   sweep choices, the all-pinned error, ring strategies, storage errors
 *   (short file, missing file, bad checksum, bad tags), the
 *   I/O-in-progress handshake. Participants run on dedicated threads; the
 *   test thread asserts on what they report.
 *-------------------------------------------------------------------------
 */
using System.Buffers.Binary;
using NUnit.Framework;
using PgIpc.Buffers;
using PgIpc.Platform;
using PgIpc.Proc;
using S = PgIpc.Buffers.BufferDesc.State;

namespace PgIpc.Tests.Buffers;

[TestFixtureSource(typeof(TestEnvironment), nameof(TestEnvironment.Backends))]
public sealed class BufferPoolTests(string backend)
{
    private const int ValueOffset = 128;
    private BufferCluster? _c;

    [TearDown]
    public void TearDown()
    {
        _c?.Dispose();
        _c = null;
    }

    private BufferCluster Cluster(int numBuffers) => _c = BufferCluster.Create(PgIpcPlatform.Get(backend), numBuffers);

    /// <summary>Runs <paramref name="body"/> as a participant on a dedicated thread.</summary>
    private void AsParticipant(Action<Participant> body)
        => TestThreads.Run(1, _ =>
        {
            using Participant me = _c!.Procs.Join();
            body(me);
        });

    private static Exception? Capture(Action a) => Outcome.Capture(a);

    private static long ValueOf(BufferPool pool, Participant me, int buffer)
        => BinaryPrimitives.ReadInt64LittleEndian(pool.GetPage(me, buffer)[ValueOffset..]);

    /// <summary>Extends <paramref name="rel"/> by <paramref name="count"/> blocks, each holding value = 1000 * rel + block, flushed.</summary>
    private static void Populate(BufferPool pool, Participant me, uint rel, int count, BufferAccessStrategy? strategy = null)
    {
        for (int i = 0; i < count; i++)
        {
            int b = pool.ReadBuffer(me, rel, ForkNumber.Main, BufferPool.NewBlock, ReadBufferMode.Extend, strategy);
            pool.LockBuffer(me, b, BufferLockMode.Exclusive);
            uint block = pool.GetTag(me, b).BlockNumber;
            BinaryPrimitives.WriteInt64LittleEndian(pool.GetPage(me, b)[ValueOffset..], 1000L * rel + block);
            pool.MarkBufferDirty(me, b);
            pool.FlushBuffer(me, b);
            pool.LockBuffer(me, b, BufferLockMode.Unlock);
            pool.ReleaseBuffer(me, b);
        }
    }

    [Test]
    public void StateWordPacking()
    {
        Assert.Multiple(() =>
        {
            Assert.That(S.RefCountMask, Is.EqualTo(0x3FFFFu));
            Assert.That(S.UsageCountMask, Is.EqualTo(0xFu << 18));
            Assert.That(S.RefCountMask, Is.GreaterThan((uint)ProcArray.MaxProcsLimit));
            Assert.That(S.MaxUsageCount, Is.LessThanOrEqualTo((int)(S.UsageCountMask >> S.UsageCountShift)));
            uint[] flags = [S.Locked, S.Dirty, S.Valid, S.TagValid, S.IoInProgress, S.IoError, S.JustDirtied, S.PinCountWaiter,
                S.CheckpointNeeded, S.Permanent];
            uint all = 0;
            foreach (uint f in flags)
            {
                Assert.That(System.Numerics.BitOperations.PopCount(f), Is.EqualTo(1));
                Assert.That(all & f, Is.Zero, "flags overlap");
                all |= f;
            }
            Assert.That(all, Is.EqualTo(S.FlagMask));
            uint st = 3 * S.RefCountOne + 4 * S.UsageCountOne + S.Dirty;
            Assert.That(S.RefCount(st), Is.EqualTo(3));
            Assert.That(S.UsageCount(st), Is.EqualTo(4));
        });
    }

    [Test]
    public void ChecksumDependsOnContentsAndBlock()
    {
        byte[] page = new byte[BufferPool.BlockSize];
        Assert.That(PageChecksum.Verify(page, 7, out _, out _), Is.True, "an all-zero page is valid");
        page[500] = 42;
        PageChecksum.Set(page, 7);
        Assert.Multiple(() =>
        {
            Assert.That(PageChecksum.Verify(page, 7, out _, out _), Is.True);
            Assert.That(PageChecksum.Verify(page, 8, out _, out _), Is.False, "the block number is mixed in");
            Assert.That(PageChecksum.Stored(page), Is.Not.Zero);
        });
        page[501] = 1;
        Assert.That(PageChecksum.Verify(page, 7, out _, out _), Is.False);
    }

    [Test]
    public void VectorChecksumEqualsTheScalarLoop()
    {
        // The vector form runs wherever Vector256 is accelerated; it must give the scalar loop's result bit for bit,
        // including the masking of pd_checksum (random bytes there must not change the result).
        byte[] page = new byte[BufferPool.BlockSize];
        var rng = new Random(20261122);
        for (uint i = 0; i < 200; i++)
        {
            rng.NextBytes(page);
            uint block = (uint)rng.Next() ^ (i << 20);
            ushort scalar = PageChecksum.ComputeScalar(page, block);
            Assert.That(PageChecksum.ComputeVector256(page, block), Is.EqualTo(scalar), $"page {i}, block {block}");
            Assert.That(PageChecksum.Compute(page, block), Is.EqualTo(scalar));
            page[PageChecksum.ChecksumOffset] ^= 0x5A;
            page[PageChecksum.ChecksumOffset + 1] ^= 0xA5;
            Assert.That(PageChecksum.ComputeScalar(page, block), Is.EqualTo(scalar), "pd_checksum counts as zero");
            Assert.That(PageChecksum.ComputeVector256(page, block), Is.EqualTo(scalar), "pd_checksum counts as zero");
        }
    }

    [Test]
    public void ReadModifyFlushEvictReread()
    {
        BufferCluster c = Cluster(16);
        const int blocks = 48;
        var seen = new long[blocks];
        long readsBefore = 0, readsAfter = 0;
        uint nblocks = 0;
        AsParticipant(me =>
        {
            Populate(c.Pool, me, 1, blocks);
            nblocks = c.Pool.Smgr.NBlocks(1, ForkNumber.Main);
            // Modify every page (dirty, not flushed): evictions must write them.
            for (int i = 0; i < blocks; i++)
            {
                int b = c.Pool.ReadBuffer(me, 1, ForkNumber.Main, i);
                c.Pool.LockBuffer(me, b, BufferLockMode.Exclusive);
                BinaryPrimitives.WriteInt64LittleEndian(c.Pool.GetPage(me, b)[ValueOffset..], ValueOf(c.Pool, me, b) + 1);
                c.Pool.MarkBufferDirty(me, b);
                c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
                c.Pool.ReleaseBuffer(me, b);
            }
            readsBefore = c.Pool.Smgr.Reads;
            for (int i = 0; i < blocks; i++)
            {
                int b = c.Pool.ReadBuffer(me, 1, ForkNumber.Main, i);
                c.Pool.LockBuffer(me, b, BufferLockMode.Shared);
                seen[i] = ValueOf(c.Pool, me, b);
                c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
                c.Pool.ReleaseBuffer(me, b);
            }
            readsAfter = c.Pool.Smgr.Reads;
        });
        Assert.Multiple(() =>
        {
            Assert.That(nblocks, Is.EqualTo(blocks));
            Assert.That(seen, Is.EqualTo(Enumerable.Range(0, blocks).Select(i => 1000L + i + 1).ToArray()));
            Assert.That(readsAfter - readsBefore, Is.GreaterThanOrEqualTo(blocks - 16), "evicted pages came back from disk");
        });
    }

    [Test]
    public void ClockSweepPrefersUnpinnedLowUsageBuffers()
    {
        BufferCluster c = Cluster(16);
        var hotResident = new List<bool>();
        var pinnedResident = new List<bool>();
        var coldResident = new List<bool>();
        AsParticipant(me =>
        {
            Populate(c.Pool, me, 1, 20);
            var pins = new List<int>();
            // Fill the pool with blocks 0..15 again: 0..7 hot, 8..11 pinned, 12..15 cold.
            for (int i = 0; i < 16; i++)
            {
                int b = c.Pool.ReadBuffer(me, 1, ForkNumber.Main, i);
                if (i is >= 8 and < 12)
                    pins.Add(b);
                else
                    c.Pool.ReleaseBuffer(me, b);
            }
            for (int round = 0; round < 6; round++)
                for (int i = 0; i < 8; i++)
                    c.Pool.ReleaseBuffer(me, c.Pool.ReadBuffer(me, 1, ForkNumber.Main, i));
            // Four new pages need four victims.
            for (int i = 16; i < 20; i++)
                c.Pool.ReleaseBuffer(me, c.Pool.ReadBuffer(me, 1, ForkNumber.Main, i));
            for (int i = 0; i < 16; i++)
            {
                bool resident = c.Pool.Lookup(me, new BufferTag(1, ForkNumber.Main, (uint)i)) != BufferPool.InvalidBuffer;
                (i < 8 ? hotResident : i < 12 ? pinnedResident : coldResident).Add(resident);
            }
            foreach (int b in pins)
                c.Pool.ReleaseBuffer(me, b);
        });
        Assert.Multiple(() =>
        {
            Assert.That(hotResident, Has.All.True, "hot pages stay");
            Assert.That(pinnedResident, Has.All.True, "pinned pages stay");
            Assert.That(coldResident, Has.All.False, "cold pages were the victims");
        });
    }

    [Test]
    public void EveryBufferPinnedIsAClearError()
    {
        BufferCluster c = Cluster(16);
        Exception? error = null;
        AsParticipant(me =>
        {
            Populate(c.Pool, me, 1, 17);
            var pins = Enumerable.Range(0, 16).Select(i => c.Pool.ReadBuffer(me, 1, ForkNumber.Main, i)).ToList();
            error = Capture(() => c.Pool.ReadBuffer(me, 1, ForkNumber.Main, 16));
            foreach (int b in pins)
                c.Pool.ReleaseBuffer(me, b);
            // With the pins gone the same read works.
            c.Pool.ReleaseBuffer(me, c.Pool.ReadBuffer(me, 1, ForkNumber.Main, 16));
        });
        Assert.That(error, Is.InstanceOf<NoUnpinnedBuffersException>());
        Assert.That(error!.Message, Does.Contain("no unpinned buffers available"));
    }

    [Test]
    public void BulkReadRingKeepsAScanInsideItsRing()
    {
        BufferCluster c = Cluster(64);
        int ringSize = 0, distinct = 0;
        long hotReads = -1, scanReads = 0;
        AsParticipant(me =>
        {
            Populate(c.Pool, me, 2, 200, new BufferAccessStrategy(c.Pool, BufferAccessStrategyType.BulkWrite));
            Populate(c.Pool, me, 1, 40);
            for (int i = 0; i < 40; i++)
                c.Pool.ReleaseBuffer(me, c.Pool.ReadBuffer(me, 1, ForkNumber.Main, i));
            var ring = new BufferAccessStrategy(c.Pool, BufferAccessStrategyType.BulkRead);
            ringSize = ring.RingSize;
            var used = new HashSet<int>();
            long r0 = c.Pool.Smgr.Reads;
            for (int i = 0; i < 200; i++)
            {
                int b = c.Pool.ReadBuffer(me, 2, ForkNumber.Main, i, ReadBufferMode.Normal, ring);
                if (ValueOf(c.Pool, me, b) != 2000 + i)
                    throw new InvalidOperationException($"block {i} holds {ValueOf(c.Pool, me, b)}");
                used.Add(b);
                c.Pool.ReleaseBuffer(me, b);
            }
            scanReads = c.Pool.Smgr.Reads - r0;
            distinct = used.Count;
            long r1 = c.Pool.Smgr.Reads;
            for (int i = 0; i < 40; i++)
                c.Pool.ReleaseBuffer(me, c.Pool.ReadBuffer(me, 1, ForkNumber.Main, i));
            hotReads = c.Pool.Smgr.Reads - r1;
        });
        Assert.Multiple(() =>
        {
            Assert.That(ringSize, Is.EqualTo(8), "256 KiB capped at an eighth of 64 buffers");
            Assert.That(scanReads, Is.GreaterThanOrEqualTo(200 - 2 * ringSize));
            Assert.That(distinct, Is.LessThanOrEqualTo(2 * ringSize), "the scan recycled its ring");
            Assert.That(hotReads, Is.Zero, "the other pages stayed resident");
        });
    }

    [Test]
    public void StrategySyncStartReportsAllocations()
    {
        BufferCluster c = Cluster(16);
        uint allocs1 = 0, allocs2 = 0, passes = 0;
        AsParticipant(me =>
        {
            c.Pool.StrategySyncStart(out _, out _);
            Populate(c.Pool, me, 1, 40);
            c.Pool.StrategySyncStart(out passes, out allocs1);
            c.Pool.StrategySyncStart(out _, out allocs2);
        });
        Assert.Multiple(() =>
        {
            Assert.That(allocs1, Is.EqualTo(40u));
            Assert.That(allocs2, Is.Zero);
            Assert.That(passes, Is.GreaterThanOrEqualTo(1u), "24 sweeps past the free list wrap a 16-buffer clock");
        });
    }

    [Test]
    public void ShortAndMissingFilesAreClearErrors()
    {
        BufferCluster c = Cluster(16);
        Directory.CreateDirectory(c.Options.DataDirectory);
        File.WriteAllBytes(Path.Combine(c.Options.DataDirectory, "7"), new byte[BufferPool.BlockSize + 100]);
        Exception? shortRead = null, missing = null;
        long block0 = -1;
        AsParticipant(me =>
        {
            int b = c.Pool.ReadBuffer(me, 7, ForkNumber.Main, 0);
            block0 = ValueOf(c.Pool, me, b);
            c.Pool.ReleaseBuffer(me, b);
            shortRead = Capture(() => c.Pool.ReadBuffer(me, 7, ForkNumber.Main, 1));
            missing = Capture(() => c.Pool.ReadBuffer(me, 8, ForkNumber.VisibilityMap, 3));
            // The failed read left nothing pinned: a retry fails the same way.
            Exception? again = Capture(() => c.Pool.ReadBuffer(me, 7, ForkNumber.Main, 1));
            if (again is not SmgrException)
                throw new InvalidOperationException($"retry gave {again}");
        });
        Assert.Multiple(() =>
        {
            Assert.That(block0, Is.Zero);
            Assert.That(shortRead, Is.InstanceOf<SmgrException>());
            Assert.That(shortRead!.Message, Does.Contain("block 1").And.Contain("read only 100 of 8192").And.Contain("relation 7"));
            Assert.That(missing, Is.InstanceOf<SmgrException>());
            Assert.That(missing!.Message, Does.Contain("does not exist").And.Contain("block 3").And.Contain("VisibilityMap"));
        });
    }

    [Test]
    public void CorruptedPageFailsItsChecksum()
    {
        BufferCluster c = Cluster(16);
        Directory.CreateDirectory(c.Options.DataDirectory);
        byte[] file = new byte[2 * BufferPool.BlockSize];
        for (int blk = 0; blk < 2; blk++)
        {
            Span<byte> page = file.AsSpan(blk * BufferPool.BlockSize, BufferPool.BlockSize);
            BinaryPrimitives.WriteInt64LittleEndian(page[ValueOffset..], 5000 + blk);
            PageChecksum.Set(page, (uint)blk);
        }
        file[BufferPool.BlockSize + 4000] ^= 0x10; // flip a bit in block 1
        File.WriteAllBytes(Path.Combine(c.Options.DataDirectory, "5"), file);
        Exception? error = null;
        long good = -1;
        AsParticipant(me =>
        {
            int b = c.Pool.ReadBuffer(me, 5, ForkNumber.Main, 0);
            good = ValueOf(c.Pool, me, b);
            c.Pool.ReleaseBuffer(me, b);
            error = Capture(() => c.Pool.ReadBuffer(me, 5, ForkNumber.Main, 1));
        });
        Assert.Multiple(() =>
        {
            Assert.That(good, Is.EqualTo(5000));
            Assert.That(error, Is.InstanceOf<PageChecksumException>());
            Assert.That(error!.Message, Does.Contain("invalid page in block 1 of relation 5"));
        });
    }

    [Test]
    public void BadTagsAndMisuseAreClearErrors()
    {
        BufferCluster c = Cluster(16);
        Exception? negative = null, fork = null, dirtyUnlocked = null, notPinned = null;
        AsParticipant(me =>
        {
            negative = Capture(() => c.Pool.ReadBuffer(me, 1, ForkNumber.Main, -5));
            fork = Capture(() => c.Pool.ReadBuffer(me, 1, (ForkNumber)9, 0));
            Populate(c.Pool, me, 1, 1);
            int b = c.Pool.ReadBuffer(me, 1, ForkNumber.Main, 0);
            dirtyUnlocked = Capture(() => c.Pool.MarkBufferDirty(me, b));
            c.Pool.ReleaseBuffer(me, b);
            notPinned = Capture(() => c.Pool.ReleaseBuffer(me, b));
        });
        Assert.Multiple(() =>
        {
            Assert.That(negative, Is.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(negative!.Message, Does.Contain("block -5"));
            Assert.That(fork, Is.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(fork!.Message, Does.Contain("unknown fork 9"));
            Assert.That(dirtyUnlocked, Is.InstanceOf<BufferUsageException>());
            Assert.That(notPinned, Is.InstanceOf<BufferUsageException>());
        });
    }

    [Test]
    public void PinsAreCountedPerParticipant()
    {
        BufferCluster c = Cluster(16);
        var refCounts = new List<int>();
        int myPins = 0;
        AsParticipant(me =>
        {
            Populate(c.Pool, me, 1, 12);
            var bufs = Enumerable.Range(0, 12).Select(i => c.Pool.ReadBuffer(me, 1, ForkNumber.Main, i)).ToList(); // > 8: overflow map
            int again = c.Pool.ReadBuffer(me, 1, ForkNumber.Main, 3);
            myPins = c.Pool.PinCount(me, again);
            refCounts.Add(S.RefCount(c.Pool.ReadState(again)));
            c.Pool.ReleaseBuffer(me, again);
            foreach (int b in bufs)
                c.Pool.ReleaseBuffer(me, b);
            refCounts.Add(S.RefCount(c.Pool.ReadState(again)));
        });
        Assert.That(myPins, Is.EqualTo(2));
        Assert.That(refCounts, Is.EqualTo(new[] { 1, 0 }), "the shared refcount counts participants, not pins");
    }

    [Test]
    public void LockBufferForCleanupWaitsForTheOtherPins()
    {
        BufferCluster c = Cluster(16);
        AsParticipant(me => Populate(c.Pool, me, 1, 1));
        using var otherPinned = new ManualResetEventSlim();
        using var cleanupWaiting = new ManualResetEventSlim();
        long releasedAt = 0, lockedAt = 0;
        bool conditionalWhilePinned = true, conditionalAlone = false;
        TestThreads.Run(2, i =>
        {
            using Participant me = c.Procs.Join();
            int b = c.Pool.ReadBuffer(me, 1, ForkNumber.Main, 0);
            if (i == 0)
            {
                otherPinned.Set();
                if (!cleanupWaiting.Wait(TimeSpan.FromSeconds(20)))
                    throw new TimeoutException("the cleanup locker never waited");
                Thread.Sleep(200);
                Interlocked.Exchange(ref releasedAt, System.Diagnostics.Stopwatch.GetTimestamp());
                c.Pool.ReleaseBuffer(me, b);
            }
            else
            {
                if (!otherPinned.Wait(TimeSpan.FromSeconds(20)))
                    throw new TimeoutException("the other participant never pinned");
                conditionalWhilePinned = c.Pool.ConditionalLockBufferForCleanup(me, b);
                cleanupWaiting.Set();
                c.Pool.LockBufferForCleanup(me, b);
                Interlocked.Exchange(ref lockedAt, System.Diagnostics.Stopwatch.GetTimestamp());
                c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
                conditionalAlone = c.Pool.ConditionalLockBufferForCleanup(me, b);
                if (conditionalAlone)
                    c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
                c.Pool.ReleaseBuffer(me, b);
            }
        });
        Assert.Multiple(() =>
        {
            Assert.That(conditionalWhilePinned, Is.False);
            Assert.That(conditionalAlone, Is.True);
            Assert.That(lockedAt, Is.GreaterThan(releasedAt), "the cleanup lock came after the other pin went");
            Assert.That(c.Pool.ReadState(1) & S.PinCountWaiter, Is.Zero);
        });
    }

    [Test]
    public void ConcurrentMissesOnOneBlockReadItOnce()
    {
        BufferCluster c = Cluster(16);
        // A relation file written behind the pool's back: its block is on disk and not resident.
        Directory.CreateDirectory(c.Options.DataDirectory);
        byte[] page = new byte[BufferPool.BlockSize];
        BinaryPrimitives.WriteInt64LittleEndian(page.AsSpan(ValueOffset), 4242);
        PageChecksum.Set(page, 0);
        File.WriteAllBytes(Path.Combine(c.Options.DataDirectory, "9"), page);
        c.Pool.Smgr.BeforeRead = _ => Thread.Sleep(100);
        long before = c.Pool.Smgr.Reads;
        var values = new long[6];
        TestThreads.Run(values.Length, i =>
        {
            using Participant me = c.Procs.Join();
            int b = c.Pool.ReadBuffer(me, 9, ForkNumber.Main, 0);
            c.Pool.LockBuffer(me, b, BufferLockMode.Shared);
            values[i] = ValueOf(c.Pool, me, b);
            c.Pool.LockBuffer(me, b, BufferLockMode.Unlock);
            c.Pool.ReleaseBuffer(me, b);
        });
        c.Pool.Smgr.BeforeRead = null;
        Assert.That(values, Has.All.EqualTo(4242));
        Assert.That(c.Pool.Smgr.Reads - before, Is.EqualTo(1), "one read from disk for all the participants");
    }

    [Test]
    public void SegmentFilesSplitAtTheSegmentSize()
    {
        _c = BufferCluster.Create(PgIpcPlatform.Get(backend), 16, blocksPerSegment: 4);
        BufferCluster c = _c;
        var values = new long[10];
        AsParticipant(me =>
        {
            Populate(c.Pool, me, 4, 10);
            for (int i = 0; i < 10; i++)
            {
                int b = c.Pool.ReadBuffer(me, 4, ForkNumber.Main, i);
                values[i] = ValueOf(c.Pool, me, b);
                c.Pool.ReleaseBuffer(me, b);
            }
        });
        Assert.Multiple(() =>
        {
            Assert.That(values, Is.EqualTo(Enumerable.Range(0, 10).Select(i => 4000L + i).ToArray()));
            Assert.That(new FileInfo(Path.Combine(c.Options.DataDirectory, "4")).Length, Is.EqualTo(4 * BufferPool.BlockSize));
            Assert.That(new FileInfo(Path.Combine(c.Options.DataDirectory, "4.2")).Length, Is.EqualTo(2 * BufferPool.BlockSize));
            Assert.That(c.Pool.Smgr.NBlocks(4, ForkNumber.Main), Is.EqualTo(10u));
        });
    }
}
